"""One task's model for an isolated method: a copy of the frozen backbone, reprogrammed as the method's spec says,
with the task's own head; and the interface the fit loop relies on, which the shared-backbone model offers too."""
import copy
from collections.abc import Iterator
from typing import Protocol

import torch
from torch import nn

from network.backbone import arch_of
from network.layers import GatedConv, TaskConv, replace_convs
from network.masks import MaskedConv
from network.methods import method_options, method_spec, implied
from common.errors import NetworkError


class TrainableModel(Protocol):
    """What the fit loop needs of a model: a forward, train/eval modes, the tensors its norm penalty covers and its
    optimizer's parameter groups (a task model and the shared-backbone model both offer them)."""

    def __call__(self, x: torch.Tensor) -> torch.Tensor: ...

    def train(self, mode: bool = True) -> nn.Module: ...

    def eval(self) -> nn.Module: ...

    def parameters(self, recurse: bool = True) -> Iterator[nn.Parameter]: ...

    def penalised_parameters(self) -> list[nn.Parameter]: ...

    def optimizer_groups(self, lr: float) -> list[dict]: ...


def resnet_features(resnet: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The pooled features a ResNet's head sees (torchvision's ResNet forward, minus ``fc``)."""
    x = resnet.maxpool(resnet.relu(resnet.bn1(resnet.conv1(x))))
    x = resnet.layer4(resnet.layer3(resnet.layer2(resnet.layer1(x))))
    return torch.flatten(resnet.avgpool(x), 1)


class TaskModel(nn.Module):
    """One task's model: the backbone's layers (reprogrammed per method) and the task's own head.

    It keeps torchvision's module names, so a CLR kernel is e.g. ``layer1.0.conv1.clr.weight``, an adapter
    ``layer1.0.conv1.adapter.weight`` and a Ghost_a gate ``layer1.0.conv1.gate``.
    """

    def __init__(self, resnet: nn.Module, method: str, arch: str, num_classes: int,
                 backbone_parameters: int, mask_lr: float | None = None) -> None:
        super().__init__()
        self.method = method
        self.arch = arch
        self.num_classes = num_classes
        self.backbone_parameters = backbone_parameters  # of the plain torchvision model, for parameter_cost
        self.mask_lr = mask_lr  # the masks' scores' own learning rate (None: the run's)
        for name, child in resnet.named_children():
            self.add_module(name, child)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return resnet_features(self, x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.features(x))

    def train(self, mode: bool = True) -> "TaskModel":
        """BN uses batch statistics while training, except where the method freezes it (Linear, li18, li50),
        as the release does by training those in eval mode."""
        super().train(mode)
        if not method_spec(self.method).layers.trains_norm:
            for module in self.modules():
                if isinstance(module, nn.BatchNorm2d):
                    module.eval()
        return self

    def task_modules(self) -> Iterator[tuple[str, nn.Module]]:
        """(name, module) of each module whose own parameters, and BN running statistics, belong to this task."""
        layers = method_spec(self.method).layers
        for name, module in self.named_modules():
            if (module is self.fc or layers.trains_all or isinstance(module, (TaskConv, GatedConv, MaskedConv))
                    or (layers.trains_norm and isinstance(module, nn.BatchNorm2d))):
                yield name, module

    def penalised_parameters(self) -> list[nn.Parameter]:
        """The tensors of the norm penalty, in the optimizer's order: everything the task trains except Ghost_a's
        gates, which the release keeps in a separate, unregularised list, and the masks' scores, which a penalty
        would pull toward zero, across Piggyback's threshold (neither mask paper regularises them)."""
        excluded = {id(module.gate) for module in self.modules() if isinstance(module, GatedConv)}
        excluded |= {id(module.scores) for module in self.modules() if isinstance(module, MaskedConv)}
        return [p for p in self.parameters() if p.requires_grad and id(p) not in excluded]

    def optimizer_groups(self, lr: float) -> list[dict]:
        """Adam's parameter groups: everything the task trains at ``lr``; the masks' scores at their own rate where
        the method sets one (Piggyback)."""
        trained = [p for p in self.parameters() if p.requires_grad]
        if self.mask_lr is None:
            return [{"params": trained, "lr": lr}]
        scores = {id(module.scores) for module in self.modules() if isinstance(module, MaskedConv)}
        return [{"params": [p for p in trained if id(p) not in scores], "lr": lr},
                {"params": [p for p in trained if id(p) in scores], "lr": self.mask_lr}]


def build_model(backbone: nn.Module, method: str, num_classes: int,
                options: dict[str, int | float] | None = None) -> TaskModel:
    """A new model for one task, in eval mode; ``backbone`` itself is never modified.

    It starts from a copy of the backbone (its BN parameters and statistics included), the method's fresh task
    layers and a fresh head, and exactly the task-specific tensors require gradients. Layers with PyTorch's
    default init (Ghost_a, li18, li50, SupSup's scores) and the head draw on the global random state: seed it
    first. ``options`` are the method's hyper-parameters, checked against the registry (default: its defaults);
    training needs them, a saved task does not (its state holds what they decided).
    """
    spec = method_spec(method)
    if spec.layers is None:
        raise NetworkError(f"--method {method} trains one backbone across the tasks: it has no per-task model")
    if num_classes < 1:
        raise NetworkError(f"a task needs at least one class, got {num_classes}")
    values = method_options(method, options)
    arch = arch_of(backbone)
    implied(spec, "--arch", arch, spec.arch, arch)  # li18 / li50 refuse any other architecture
    resnet = copy.deepcopy(backbone)
    if spec.layers.reprogram is not None:
        replace_convs(resnet, lambda conv: spec.layers.reprogram(conv, values))
    if not spec.layers.affine_norm:
        _drop_bn_affine(resnet)
    old_head = resnet.fc
    resnet.fc = nn.Linear(old_head.in_features, num_classes, device=old_head.weight.device,
                          dtype=old_head.weight.dtype)
    model = TaskModel(resnet, method, arch, num_classes,
                      backbone_parameters=sum(parameter.numel() for parameter in backbone.parameters()),
                      mask_lr=values[spec.mask_lr_option] if spec.mask_lr_option else None)
    model.requires_grad_(False)
    for _, module in model.task_modules():
        for parameter in module.parameters(recurse=False):
            parameter.requires_grad_(True)
    return model.eval()


def _drop_bn_affine(resnet: nn.Module) -> None:
    """Non-affine BN, as SupSup's models have it: a random init's BN scales are 1 and shifts 0, so dropping them
    changes nothing computed, and the task keeps only BN's running statistics."""
    for module in resnet.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.affine = False
            module.register_parameter("weight", None)
            module.register_parameter("bias", None)
