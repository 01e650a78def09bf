"""Channel-wise lightweight reprogramming (CLR) of a frozen ResNet: the layer, its placement, the task model."""
import copy
from collections.abc import Iterator

import torch
from torch import nn

from network.backbone import arch_of
from network.errors import NetworkError

# method -> (kernel of the CLR layer after a non-1x1 conv, after a 1x1 conv); None: no CLR layer there.
_PLACEMENT: dict[str, tuple[int | None, int | None]] = {
    "Ghost_reduced_v1": (3, None),  # "CLR", the paper's method: the 7x7 stem and every 3x3 conv
    "Ghost": (3, 3),  # "CLR-Full": every conv, 1x1 and downsample included
    "Ghost_reduced_v2": (3, 1),  # 1x1 convs get a 1x1 layer: one scale per channel
    "Linear": (None, None),  # the release's baseline: frozen backbone and BN, only the head trains
    "Finetune": (None, None),  # the release's baseline: every weight trains, one full model per task
}
METHODS = tuple(_PLACEMENT)  # the first is the default


class ChannelwiseKernel(nn.Conv2d):
    """The task-specific depthwise conv that reprograms a frozen conv's output channel by channel.

    Identity-initialised (Dirac), so a fresh model computes exactly what the backbone computes.
    """

    def __init__(self, channels: int, kernel_size: int, *, device: torch.device | None = None,
                 dtype: torch.dtype | None = None) -> None:
        super().__init__(channels, channels, kernel_size, padding=kernel_size // 2, groups=channels, bias=False,
                         device=device, dtype=dtype)

    def reset_parameters(self) -> None:
        """Dirac init; also keeps construction from drawing on the global random state."""
        centre = self.kernel_size[0] // 2
        with torch.no_grad():
            self.weight.zero_()
            self.weight[:, :, centre, centre] = 1


class ReprogrammedConv(nn.Module):
    """A frozen conv followed by its CLR layer: ``clr(conv(x))``; the conv's BN then follows as before."""

    def __init__(self, conv: nn.Conv2d, kernel_size: int) -> None:
        super().__init__()
        self.conv = conv
        self.clr = ChannelwiseKernel(conv.out_channels, kernel_size, device=conv.weight.device,
                                     dtype=conv.weight.dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.clr(self.conv(x))


class TaskModel(nn.Module):
    """One task's model: the backbone's layers (with CLR layers per method) and the task's own head.

    It keeps torchvision's module names, so a CLR kernel is e.g. ``layer1.0.conv1.clr.weight``.
    """

    def __init__(self, resnet: nn.Module, method: str, arch: str, num_classes: int,
                 backbone_parameters: int) -> None:
        super().__init__()
        self.method = method
        self.arch = arch
        self.num_classes = num_classes
        self.backbone_parameters = backbone_parameters  # of the plain torchvision model, for parameter_cost
        for name, child in resnet.named_children():
            self.add_module(name, child)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The pooled features the head sees (torchvision's ResNet forward, minus ``fc``)."""
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return torch.flatten(self.avgpool(x), 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.features(x))

    def train(self, mode: bool = True) -> "TaskModel":
        """BN uses batch statistics while training, except under Linear, whose BN is frozen as in the release."""
        super().train(mode)
        if self.method == "Linear":
            for module in self.modules():
                if isinstance(module, nn.BatchNorm2d):
                    module.eval()
        return self

    def task_modules(self) -> Iterator[tuple[str, nn.Module]]:
        """(name, module) of each module whose own parameters, and BN running statistics, belong to this task."""
        for name, module in self.named_modules():
            if (module is self.fc or self.method == "Finetune"
                    or (self.method != "Linear" and isinstance(module, (nn.BatchNorm2d, ChannelwiseKernel)))):
                yield name, module


def build_model(backbone: nn.Module, method: str, num_classes: int) -> TaskModel:
    """A new model for one task, in eval mode; ``backbone`` itself is never modified.

    It starts from a copy of the backbone (its BN parameters and statistics included), fresh identity CLR
    layers and a fresh head, and exactly the task-specific tensors require gradients.
    """
    if method not in METHODS:
        raise NetworkError(f"unknown method {method!r}; choose one of: {', '.join(METHODS)}")
    if num_classes < 1:
        raise NetworkError(f"a task needs at least one class, got {num_classes}")
    arch = arch_of(backbone)
    resnet = copy.deepcopy(backbone)
    _insert_clr_layers(resnet, method)
    old_head = resnet.fc
    resnet.fc = nn.Linear(old_head.in_features, num_classes, device=old_head.weight.device,
                          dtype=old_head.weight.dtype)
    model = TaskModel(resnet, method, arch, num_classes,
                      backbone_parameters=sum(parameter.numel() for parameter in backbone.parameters()))
    model.requires_grad_(False)
    for _, module in model.task_modules():
        for parameter in module.parameters(recurse=False):
            parameter.requires_grad_(True)
    return model.eval()


def _insert_clr_layers(resnet: nn.Module, method: str) -> None:
    after_spatial, after_pointwise = _PLACEMENT[method]
    convs = [(parent, name, child) for parent in resnet.modules()
             for name, child in parent.named_children() if isinstance(child, nn.Conv2d)]
    for parent, name, conv in convs:
        kernel_size = after_pointwise if conv.kernel_size == (1, 1) else after_spatial
        if kernel_size is not None:
            setattr(parent, name, ReprogrammedConv(conv, kernel_size))
