"""The shared-backbone model of the continual-learning baselines: one ResNet that every task trains in turn, and one
linear head per task (task-incremental: the task picks the head)."""
import copy

import torch
from torch import nn

from network.backbone import arch_of
from network.task_model import resnet_features
from network.state import load_task_state, task_state

HEAD_PREFIX = "heads."


class MultiHeadModel(nn.Module):
    """Every backbone weight trains (BN in train mode while training, as the release's ``Finetune``); each task
    adds its own head. Earlier heads are frozen: a task's head is final once the task is learnt."""

    def __init__(self, backbone: nn.Module) -> None:
        super().__init__()
        resnet = copy.deepcopy(backbone)
        self.arch = arch_of(backbone)
        self.backbone_parameters = sum(parameter.numel() for parameter in backbone.parameters())
        self.feature_size = resnet.fc.in_features
        for name, child in resnet.named_children():
            if name != "fc":
                self.add_module(name, child)
        self.heads = nn.ModuleList()
        self.current = 0  # the head forward() uses when no task is named
        self.requires_grad_(True)

    @property
    def fc(self) -> nn.Linear:
        """The head in use."""
        return self.heads[self.current]

    @property
    def num_classes(self) -> int:
        return self.fc.out_features

    def add_head(self, num_classes: int) -> None:
        """A fresh head for the next task (drawn from the global random state), made the one in use; the earlier
        heads freeze."""
        self.heads.requires_grad_(False)
        device = next(self.parameters()).device
        self.heads.append(nn.Linear(self.feature_size, num_classes, device=device))
        self.current = len(self.heads) - 1

    def use_head(self, task: int) -> None:
        self.current = task

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return resnet_features(self, x)

    def forward(self, x: torch.Tensor, task: int | None = None) -> torch.Tensor:
        return self.heads[self.current if task is None else task](self.features(x))

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
        """The backbone's weights and BN statistics (detached CPU copies), without any head."""
        return {name: t for name, t in task_state(self).items() if not name.startswith(HEAD_PREFIX)}

    def head_state(self, task: int) -> dict[str, torch.Tensor]:
        """A task's head, under the names a task model's head has (``fc.weight``, ``fc.bias``)."""
        head = self.heads[task]
        return {"fc.weight": head.weight.detach().cpu().clone(), "fc.bias": head.bias.detach().cpu().clone()}

    def restore(self, backbone: dict[str, torch.Tensor], heads: list[dict[str, torch.Tensor]]) -> None:
        """The state saved after a task: its backbone and every head learnt so far (all frozen)."""
        self.heads = nn.ModuleList()
        for state in heads:
            self.add_head(state["fc.weight"].shape[0])
        load_task_state(self, backbone | {f"{HEAD_PREFIX}{i}.{key.removeprefix('fc.')}": t
                                          for i, state in enumerate(heads) for key, t in state.items()})
        self.heads.requires_grad_(False)


BATCH_NORM_TENSORS = ("weight", "bias", "running_mean", "running_var")


def batch_norm_tensors(model: nn.Module) -> dict[str, torch.Tensor]:
    """Every BN's affine parameters and running statistics, live, by state-dict name: what a method that keeps BN per
    task (PSP, PackNet) saves and switches."""
    return {f"{name}.{key}": getattr(module, key) for name, module in model.named_modules()
            if isinstance(module, nn.BatchNorm2d) for key in BATCH_NORM_TENSORS}


def batch_norm_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """``batch_norm_tensors`` as CPU copies."""
    return {name: tensor.detach().to("cpu", copy=True) for name, tensor in batch_norm_tensors(model).items()}


@torch.no_grad()
def load_batch_norm_state(model: nn.Module, state: dict[str, torch.Tensor]) -> None:
    for name, tensor in batch_norm_tensors(model).items():
        tensor.copy_(state[name])
