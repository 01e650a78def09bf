"""The shared-backbone model of the continual-learning baselines: one network that every task trains in turn, and
one linear head per task (task-incremental: the task picks the head)."""
import copy

import torch
from torch import nn

from network.backbone import arch_of, classifier_name, parameter_count
from network.layers import NORM_LAYERS, freeze_norm_statistics, norm_tensors
from network.state import load_task_state, task_state
from network.task_model import mix_into

HEAD_PREFIX = "heads."


class MultiHeadModel(nn.Module):
    """Every backbone weight trains (BN in train mode while training, as the release's ``Finetune``, unless its
    statistics are frozen); each task adds its own head. Earlier heads are frozen unless the method trains them.

    Like a task model it is the backbone's own class with this one mixed in, its classifier an identity, so the
    network's own forward gives the features and ``forward`` applies a task's head to them."""

    arch: str
    head_name: str  # the backbone's classifier: a task's head is saved under its name, as a task model's is
    backbone_parameters: int
    feature_size: int
    heads: nn.ModuleList
    current: int  # the head forward() uses when no task is named
    statistics_frozen: bool  # BN stays in eval mode while training (--shared-bn freeze, from the second task on)

    @classmethod
    def of(cls, backbone: nn.Module) -> "MultiHeadModel":
        """A trainable copy of ``backbone`` without any head yet (``backbone`` itself is never modified)."""
        head_name = classifier_name(backbone)
        network = copy.deepcopy(backbone)
        feature_size = network.get_submodule(head_name).in_features
        network.set_submodule(head_name, nn.Identity())
        mix_into(network, cls, ("arch", "head_name", "feature_size", "backbone_parameters", "heads", "current",
                                "statistics_frozen"))
        model: MultiHeadModel = network
        model.arch, model.head_name, model.feature_size = arch_of(backbone), head_name, feature_size
        model.backbone_parameters = parameter_count(backbone)
        model.heads = nn.ModuleList()
        model.current = 0
        model.statistics_frozen = False
        model.requires_grad_(True)
        return model

    @property
    def num_classes(self) -> int:
        return self.heads[self.current].out_features

    def add_head(self, num_classes: int) -> None:
        """A fresh head for the next task (drawn from the global random state), made the one in use; the earlier
        heads freeze (a method that trains them unfreezes them)."""
        self.heads.requires_grad_(False)
        device = next(self.parameters()).device
        self.heads.append(nn.Linear(self.feature_size, num_classes, device=device))
        self.current = len(self.heads) - 1

    def train(self, mode: bool = True) -> "MultiHeadModel":
        """Train mode, BN in eval mode where its statistics are frozen: the one place every fit loop's
        ``model.train()`` goes through."""
        super().train(mode)
        if mode and self.statistics_frozen:
            freeze_norm_statistics(self)
        return self

    def use_head(self, task: int) -> None:
        self.current = task

    def pooled_features(self, x: torch.Tensor) -> torch.Tensor:
        """The pooled features every head sees: the network's own forward, its classifier an identity."""
        return super().forward(x)

    def forward(self, x: torch.Tensor, task: int | None = None) -> torch.Tensor:
        return self.heads[self.current if task is None else task](self.pooled_features(x))

    def task_modules(self):
        """Every module's own tensors are the model's state (see network.state)."""
        return self.named_modules()

    def penalised_parameters(self) -> list[nn.Parameter]:
        return [parameter for parameter in self.parameters() if parameter.requires_grad]

    def optimizer_groups(self, lr: float) -> list[dict]:
        """One group: the backbone and the current head, every tensor that requires a gradient."""
        return [{"params": self.penalised_parameters(), "lr": lr}]

    def backbone_named_parameters(self) -> list[tuple[str, nn.Parameter]]:
        return [(name, p) for name, p in self.named_parameters() if not name.startswith(HEAD_PREFIX)]

    def backbone_state(self) -> dict[str, torch.Tensor]:
        """The backbone's weights and norm statistics (detached CPU copies), without any head."""
        return {name: t for name, t in task_state(self).items() if not name.startswith(HEAD_PREFIX)}

    def head_state(self, task: int) -> dict[str, torch.Tensor]:
        """A task's head, under the names a task model's head has (``fc.weight``, ``fc.bias`` on a ResNet)."""
        head = self.heads[task]
        return {f"{self.head_name}.weight": head.weight.detach().cpu().clone(),
                f"{self.head_name}.bias": head.bias.detach().cpu().clone()}

    def restore(self, backbone: dict[str, torch.Tensor], heads: list[dict[str, torch.Tensor]]) -> None:
        """The state saved after a task: its backbone and every head learnt so far (all frozen)."""
        self.heads = nn.ModuleList()
        for state in heads:
            self.add_head(state[f"{self.head_name}.weight"].shape[0])
        load_task_state(self, backbone | {f"{HEAD_PREFIX}{i}.{key.removeprefix(self.head_name + '.')}": t
                                          for i, state in enumerate(heads) for key, t in state.items()})
        self.heads.requires_grad_(False)

    def head_of(self, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The head's tensors in a task's saved state (which may hold its norm layers, masks or contexts too)."""
        return {key: tensor for key, tensor in state.items() if key.startswith(self.head_name + ".")}


def norm_layer_tensors(model: nn.Module) -> dict[str, torch.Tensor]:
    """Every norm layer's affine parameters and running statistics, live, by state-dict name: what a method that keeps
    the norm layers per task (PSP, PackNet) saves and switches."""
    return {f"{name}.{key}": tensor for name, module in model.named_modules() if isinstance(module, NORM_LAYERS)
            for key, tensor in norm_tensors(module).items()}


def norm_affine_count(model: nn.Module) -> int:
    """Parameter elements of every norm layer's affine pair: what a task that keeps its own norm layers trains."""
    return sum(tensor.numel() for name, tensor in norm_layer_tensors(model).items()
               if name.endswith((".weight", ".bias")))


def norm_layer_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """``norm_layer_tensors`` as CPU copies."""
    return {name: tensor.detach().to("cpu", copy=True) for name, tensor in norm_layer_tensors(model).items()}


@torch.no_grad()
def load_norm_layer_state(model: nn.Module, state: dict[str, torch.Tensor]) -> None:
    for name, tensor in norm_layer_tensors(model).items():
        tensor.copy_(state[name])
