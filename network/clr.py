"""Reprogramming a frozen ResNet per task: CLR and the release's other methods, their layers and the task model."""
import copy
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import torch
from torch import nn

from common.cli import Option
from common.errors import NetworkError
from network.backbone import ARCHS, DEFAULT_WEIGHTS, arch_of
from network.masks import MaskedConv, piggyback_conv, supsup_conv


class TaskConv(nn.Conv2d):
    """A conv that belongs to one task (trained and saved with it), told apart by its type from the backbone's
    frozen convs."""


class ChannelwiseKernel(TaskConv):
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


class GatedConv(nn.Module):
    """Ghost_a, gated CLR: ``x1 + gate * dw(x1)`` with ``x1 = conv(x)``.

    The depthwise 3x3 kernel keeps PyTorch's default init; the per-channel gate starts at 0, so a fresh model
    still computes exactly what the backbone computes.
    """

    def __init__(self, conv: nn.Conv2d) -> None:
        super().__init__()
        channels, device, dtype = conv.out_channels, conv.weight.device, conv.weight.dtype
        self.conv = conv
        self.dw = TaskConv(channels, channels, 3, padding=1, groups=channels, bias=False, device=device, dtype=dtype)
        self.gate = nn.Parameter(torch.zeros(1, channels, 1, 1, device=device, dtype=dtype))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x1 = self.conv(x)
        return x1 + self.gate * self.dw(x1)


class AdaptedConv(nn.Module):
    """li18/li50, a residual adapter: ``conv(x) + adapter(x)``, the adapter a 1x1 conv with the conv's stride.

    It keeps PyTorch's default init, as in the release, so a fresh model is not the backbone.
    """

    def __init__(self, conv: nn.Conv2d) -> None:
        super().__init__()
        self.conv = conv
        self.adapter = TaskConv(conv.in_channels, conv.out_channels, 1, stride=conv.stride, bias=False,
                                device=conv.weight.device, dtype=conv.weight.dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x) + self.adapter(x)


def _clr(after_spatial: int | None, after_pointwise: int | None) -> Callable[[nn.Conv2d], nn.Module | None]:
    """CLR placement: a kernel of this size after each non-1x1 / 1x1 conv; None: no CLR layer there."""
    def reprogram(conv: nn.Conv2d) -> nn.Module | None:
        kernel_size = after_pointwise if conv.kernel_size == (1, 1) else after_spatial
        return None if kernel_size is None else ReprogrammedConv(conv, kernel_size)
    return reprogram


def _unchanged(conv: nn.Conv2d) -> None:
    return None


@dataclass(frozen=True)
class _Method:
    """What a method does to the backbone and what its tasks train."""

    reprogram: Callable[..., nn.Module | None] = _unchanged  # what each frozen conv becomes (None: stays), called
    # with the conv and the method's options as keywords, less the method's prefix and mask_lr
    trains_bn: bool = True  # BN affine and running statistics are the task's, BN in train mode while training
    trains_all: bool = False  # every weight is the task's: one full model per task
    arch: str | None = None  # the one architecture the method is defined on
    weights: str | None = None  # the one kind of backbone weights it is defined on
    affine_bn: bool = True  # False: BN loses its affine pair (SupSup's non-affine BN); the statistics stay the task's
    options: dict[str, Option] = field(default_factory=dict)  # "<method>_<name>", offered as --<method>-<name>;
    # a <method>_mask_lr is the masks' own Adam learning rate (without one: --lr)


_PIGGYBACK_OPTIONS = {
    "piggyback_threshold": Option(5e-3, "Piggyback: a weight is kept where its score exceeds this, in [0, 1) "
                                  "(default %(default)s, the paper's)"),
    "piggyback_score_init": Option(1e-2, "Piggyback: the constant every score starts at; above the threshold, so "
                                   "a fresh task computes the backbone (default %(default)s, the paper's)"),
    "piggyback_mask_lr": Option(1e-4, "Piggyback: Adam learning rate of the scores; BN and the head take --lr "
                                "(default %(default)s, the paper's and its code's LR_MASK)", positive=True),
}
_SUPSUP_OPTIONS = {
    "supsup_sparsity": Option(0.5, "SupSup: fraction of each conv's weights its supermask keeps, in (0, 1] "
                              "(default %(default)s: edge-popup's best k for ResNets, the cap of SupSup's "
                              "per-layer budget)", positive=True),
}


_METHODS: dict[str, _Method] = {
    "Ghost_reduced_v1": _Method(_clr(3, None)),  # "CLR", the paper's method: the 7x7 stem and every 3x3 conv
    "Ghost": _Method(_clr(3, 3)),  # "CLR-Full": every conv, 1x1 and downsample included
    "Ghost_reduced_v2": _Method(_clr(3, 1)),  # 1x1 convs get a 1x1 layer: one scale per channel
    "Linear": _Method(trains_bn=False),  # the release's baseline: frozen backbone and BN, only the head trains
    "Finetune": _Method(trains_all=True),  # the release's baseline: every weight trains, one full model per task
    "Ghost_a": _Method(GatedConv),  # gated CLR after every conv
    "li18": _Method(AdaptedConv, trains_bn=False, arch="resnet18"),  # residual adapters on every conv
    "li50": _Method(AdaptedConv, trains_bn=False, arch="resnet50"),
    "Resnet_Scratch": _Method(trains_all=True, weights="none"),  # Finetune from a random init
    # a binary mask per task over every conv (downsample included) of the pretrained backbone, BN as CLR's
    "Piggyback": _Method(piggyback_conv, options=_PIGGYBACK_OPTIONS),
    # a supermask per task over a signed-constant random backbone, non-affine BN with the task's statistics
    "SupSup": _Method(supsup_conv, weights="none", affine_bn=False, options=_SUPSUP_OPTIONS),
}
METHODS = tuple(_METHODS)  # the first is the default
METHOD_OPTIONS = [spec.options for spec in _METHODS.values() if spec.options]  # main.py's isolated-methods group


def method_options(method: str) -> dict[str, Option]:
    """The hyper-parameters of an isolated method (none for a method defined outside this package)."""
    return _METHODS[method].options if method in _METHODS else {}


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
        if not _METHODS[self.method].trains_bn:
            for module in self.modules():
                if isinstance(module, nn.BatchNorm2d):
                    module.eval()
        return self

    def task_modules(self) -> Iterator[tuple[str, nn.Module]]:
        """(name, module) of each module whose own parameters, and BN running statistics, belong to this task."""
        spec = _METHODS[self.method]
        for name, module in self.named_modules():
            if (module is self.fc or spec.trains_all or isinstance(module, (TaskConv, GatedConv, MaskedConv))
                    or (spec.trains_bn and isinstance(module, nn.BatchNorm2d))):
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


def backbone_choice(method: str, arch: str | None, weights: str | None) -> tuple[str, str]:
    """The architecture and backbone weights of a run: those given, else what the method implies (li18 means
    resnet18, Resnet_Scratch a random init), else the defaults. A choice the method contradicts is refused."""
    spec = _METHODS.get(method, _Method())  # a method defined outside this package implies nothing
    return (_implied(method, "--arch", arch, spec.arch, ARCHS[0]),
            _implied(method, "--weights", weights, spec.weights, DEFAULT_WEIGHTS))


def _implied(method: str, option: str, given: str | None, implied: str | None, default: str) -> str:
    if given is None:
        return implied or default
    if implied is not None and given != implied:
        raise NetworkError(f"--method {method} means {option} {implied}, not {given}: "
                           f"leave {option} out or pass {option} {implied}")
    return given


def build_model(backbone: nn.Module, method: str, num_classes: int,
                options: dict[str, int | float] | None = None) -> TaskModel:
    """A new model for one task, in eval mode; ``backbone`` itself is never modified.

    It starts from a copy of the backbone (its BN parameters and statistics included), the method's fresh task
    layers and a fresh head, and exactly the task-specific tensors require gradients. Layers with PyTorch's
    default init (Ghost_a, li18, li50, SupSup's scores) and the head draw on the global random state: seed it
    first. ``options`` are the method's hyper-parameters (default: its defaults); training needs them, a saved
    task does not (its state holds what they decided).
    """
    if method not in METHODS:
        raise NetworkError(f"unknown method {method!r}; choose one of: {', '.join(METHODS)}")
    if num_classes < 1:
        raise NetworkError(f"a task needs at least one class, got {num_classes}")
    spec = _METHODS[method]
    given = {name: option.default for name, option in spec.options.items()} | (options or {})
    values = {name.removeprefix(method.lower() + "_"): value for name, value in given.items()}
    arch = arch_of(backbone)
    _implied(method, "--arch", arch, spec.arch, ARCHS[0])  # li18 / li50 refuse the other one
    resnet = copy.deepcopy(backbone)
    mask_lr = values.pop("mask_lr", None)
    replace_convs(resnet, lambda conv: spec.reprogram(conv, **values))
    if not spec.affine_bn:
        _drop_bn_affine(resnet)
    old_head = resnet.fc
    resnet.fc = nn.Linear(old_head.in_features, num_classes, device=old_head.weight.device,
                          dtype=old_head.weight.dtype)
    model = TaskModel(resnet, method, arch, num_classes,
                      backbone_parameters=sum(parameter.numel() for parameter in backbone.parameters()),
                      mask_lr=mask_lr)
    model.requires_grad_(False)
    for _, module in model.task_modules():
        for parameter in module.parameters(recurse=False):
            parameter.requires_grad_(True)
    return model.eval()


def replace_convs(resnet: nn.Module, reprogram: Callable[[nn.Conv2d], nn.Module | None]) -> None:
    """Put ``reprogram(conv)`` in place of every conv of the network (None: keep that conv), keeping torchvision's
    module names; the convs are listed first, so a replacement that holds its conv is not visited again."""
    convs = [(parent, name, child) for parent in resnet.modules()
             for name, child in parent.named_children() if isinstance(child, nn.Conv2d)]
    for parent, name, conv in convs:
        replacement = reprogram(conv)
        if replacement is not None:
            setattr(parent, name, replacement)


def _drop_bn_affine(resnet: nn.Module) -> None:
    """Non-affine BN, as SupSup's models have it: a random init's BN scales are 1 and shifts 0, so dropping them
    changes nothing computed, and the task keeps only BN's running statistics."""
    for module in resnet.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.affine = False
            module.register_parameter("weight", None)
            module.register_parameter("bias", None)
