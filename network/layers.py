"""The layers the isolated methods add to a frozen backbone (CLR's depthwise kernels, Ghost_a's gated kernels, the
residual adapters), what every such layer says about the tensors it gives its task (``TaskLayer``), the one way a
method puts a layer in place of a conv or runs a conv with other weights, and what counts as a norm layer."""
from collections.abc import Callable
from typing import ClassVar

import torch
from torch import nn
from torch.func import functional_call

# The norm layers whose affine parameters (and running statistics, where they keep any) a task owns: BatchNorm of
# any dimension and its subclasses (timm's BatchNormAct2d), LayerNorm (ConvNeXt's channels-first LayerNorm2d
# subclasses it), GroupNorm, RMSNorm.
NORM_LAYERS: tuple[type[nn.Module], ...] = (nn.modules.batchnorm._BatchNorm, nn.LayerNorm, nn.GroupNorm, nn.RMSNorm)
NORM_STATISTICS = ("running_mean", "running_var")
NORM_TENSORS = ("weight", "bias", *NORM_STATISTICS)  # num_batches_tracked is never used


def norm_tensors(module: nn.Module) -> dict[str, torch.Tensor]:
    """A norm layer's own tensors, live, in NORM_TENSORS' order: those it has (no affine pair when it was built
    without one, no running statistics for LayerNorm or GroupNorm)."""
    return {name: tensor for name in NORM_TENSORS if isinstance(tensor := getattr(module, name, None), torch.Tensor)}


def freeze_norm_statistics(model: nn.Module) -> None:
    """Every BatchNorm layer of ``model`` in eval mode: it normalises with its running statistics and keeps them as
    they are, while its affine pair may still train."""
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.eval()


def conv_with_weight(conv: nn.Conv2d, weight: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """``conv``'s own forward with ``weight`` in place of its weight: a conv subclass with its own padding rule
    (timm's TF "same" convs) keeps it, since the module is called, not re-implemented."""
    return functional_call(conv, {"weight": weight}, (x,))


class TaskLayer(nn.Module):
    """A layer that a method puts into the frozen backbone for one task, and that says what of it is the task's.
    TaskModel and network.state ask it, and name no kind of layer: a new kind is one new subclass.

    Names are relative to the layer (``gate``, ``dw.weight``); the frozen conv a layer wraps is never the task's.
    ``trained``: the tensors the task trains, saves and restores. ``unpenalised``: those of them the norm penalty
    leaves out. ``own_rates``: those that train at their own Adam rate, not the run's. ``stored_as``: those that a
    finished task's record keeps in another form, under another name (``stored_form`` gives it, ``decode_stored``
    and ``load_decoded`` take it back); the others it keeps as they are.
    """

    trained: ClassVar[tuple[str, ...]] = ()
    unpenalised: ClassVar[tuple[str, ...]] = ()
    stored_as: ClassVar[dict[str, str]] = {}

    def task_parameters(self) -> dict[str, nn.Parameter]:
        """The trained tensors by name, in the layer's parameter order: the order of the optimizer, the norm penalty
        and the task's state."""
        found = {name: parameter for name, parameter in self.named_parameters() if name in self.trained}
        if len(found) != len(self.trained):
            raise ValueError(f"{type(self).__name__} declares trained tensors it does not have: "
                             f"{', '.join(sorted(set(self.trained) - set(found)))}")
        return found

    def own_rates(self) -> dict[str, float]:
        """Trained tensors that take their own Adam learning rate: name -> rate (none by default)."""
        return {}

    def stored_form(self, name: str) -> torch.Tensor:
        """Trained tensor ``name`` (one of ``stored_as``) as a finished task's record keeps it."""
        raise NotImplementedError(f"{type(self).__name__} stores {name} as it is")

    def decode_stored(self, name: str, stored: torch.Tensor) -> torch.Tensor:
        """What ``load_decoded`` takes to give trained tensor ``name`` back from its ``stored`` form, changing nothing
        yet; a ValueError where ``stored`` does not fit the layer."""
        raise NotImplementedError(f"{type(self).__name__} stores {name} as it is")

    def load_decoded(self, name: str, decoded: torch.Tensor) -> None:
        """Make the layer compute what trained tensor ``name`` computed when it was stored."""
        raise NotImplementedError(f"{type(self).__name__} stores {name} as it is")


def owned_parameters(module: nn.Module) -> dict[str, nn.Parameter]:
    """By name relative to ``module``, the parameters it gives the task that owns it: a task layer's trained
    tensors, any other module's (a norm layer, the head, any module of a fully trained model) own parameters."""
    if isinstance(module, TaskLayer):
        return module.task_parameters()
    return dict(module.named_parameters(recurse=False))


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


class ReprogrammedConv(TaskLayer):
    """A frozen conv followed by its CLR layer: ``clr(conv(x))``; the conv's BN then follows as before."""

    trained = ("clr.weight",)

    def __init__(self, conv: nn.Conv2d, kernel_size: int) -> None:
        super().__init__()
        self.conv = conv
        self.clr = ChannelwiseKernel(conv.out_channels, kernel_size, device=conv.weight.device,
                                     dtype=conv.weight.dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.clr(self.conv(x))


class GatedConv(TaskLayer):
    """Ghost_a, gated CLR: ``x1 + gate * dw(x1)`` with ``x1 = conv(x)``.

    The depthwise 3x3 kernel keeps PyTorch's default init; the per-channel gate starts at 0, so a fresh model
    still computes exactly what the backbone computes. The norm penalty leaves the gates out, as the release keeps
    them in a separate, unregularised list.
    """

    trained = ("gate", "dw.weight")
    unpenalised = ("gate",)

    def __init__(self, conv: nn.Conv2d) -> None:
        super().__init__()
        channels, device, dtype = conv.out_channels, conv.weight.device, conv.weight.dtype
        self.conv = conv
        self.dw = nn.Conv2d(channels, channels, 3, padding=1, groups=channels, bias=False, device=device,
                            dtype=dtype)
        self.gate = nn.Parameter(torch.zeros(1, channels, 1, 1, device=device, dtype=dtype))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x1 = self.conv(x)
        return x1 + self.gate * self.dw(x1)


class AdaptedConv(TaskLayer):
    """li18/li50, a residual adapter: ``conv(x) + adapter(x)``, the adapter a 1x1 conv with the conv's stride.

    It keeps PyTorch's default init, as in the release, so a fresh model is not the backbone.
    """

    trained = ("adapter.weight",)

    def __init__(self, conv: nn.Conv2d) -> None:
        super().__init__()
        self.conv = conv
        self.adapter = nn.Conv2d(conv.in_channels, conv.out_channels, 1, stride=conv.stride, bias=False,
                                 device=conv.weight.device, dtype=conv.weight.dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x) + self.adapter(x)


def replace_convs(network: nn.Module, reprogram: Callable[[nn.Conv2d], nn.Module | None]) -> None:
    """Put ``reprogram(conv)`` in place of every conv of the network (None: keep that conv), keeping the network's
    module names; the convs are listed first, so a replacement that holds its conv is not visited again."""
    convs = [(parent, name, child) for parent in network.modules()
             for name, child in parent.named_children() if isinstance(child, nn.Conv2d)]
    for parent, name, conv in convs:
        replacement = reprogram(conv)
        if replacement is not None:
            setattr(parent, name, replacement)
