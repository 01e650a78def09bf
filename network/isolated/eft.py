"""EFT (Verma et al., CVPR 2021): a task transforms the output F of every frozen conv with two small convs of its
own, F' = spatial(F) + depth(F): a 3x3 group-wise conv whose groups hold ``a`` channels each, and a 1x1 group-wise
("depth") conv whose groups hold ``b``. It trains those, every norm layer and its own head; the backbone's convs stay
frozen. docs/methods.md says where this follows the authors' code and where it departs from it."""
import torch
from torch import nn
from torch.nn.utils import skip_init

from common.cli import Option
from network.layers import TaskLayer
from network.methods import ISOLATED, MethodSpec, TaskLayers, register

OPTIONS = {
    "eft_group_size": Option(8, "EFT: channels in each group of the 3x3 group-wise conv (the paper's a; default "
                             "%(default)s, the paper's on ResNets); where a conv's channels are not a multiple of "
                             "it, their largest divisor below it", low=1),
    "eft_depth_group_size": Option(16, "EFT: channels in each group of the 1x1 group-wise conv (the paper's b; "
                                   "default %(default)s, the paper's on ResNets); fitted to a conv's channels as "
                                   "--eft-group-size is", low=1),
}


def group_size(channels: int, asked: int) -> int:
    """The group size a layer over ``channels`` uses: ``asked`` where it divides them, else their largest divisor
    below it (24 channels asked for groups of 16 get 12, fewer channels than asked one group, a prime count above
    it groups of one: a depthwise conv)."""
    return next(size for size in range(min(asked, channels), 0, -1) if channels % size == 0)


class FeatureTransform(TaskLayer):
    """``spatial(F) + depth(F)`` with ``F = conv(x)``: EFT's transformation of a frozen conv's output.

    Both convs map the conv's C output channels to C, each with a bias, as in the authors' code. They start as the
    identity (the spatial conv's centre tap 1 on each channel's own input, the depth conv and both biases 0), so a
    fresh task computes exactly what the backbone computes, as a CLR task does; building them draws nothing from
    the global random state.
    """

    trained = ("spatial.weight", "spatial.bias", "depth.weight", "depth.bias")

    def __init__(self, conv: nn.Conv2d, spatial_group: int, depth_group: int) -> None:
        super().__init__()
        channels, device, dtype = conv.out_channels, conv.weight.device, conv.weight.dtype
        spatial_group, depth_group = group_size(channels, spatial_group), group_size(channels, depth_group)
        self.conv = conv
        self.spatial = skip_init(nn.Conv2d, channels, channels, 3, padding=1, groups=channels // spatial_group,
                                 device=device, dtype=dtype)
        self.depth = skip_init(nn.Conv2d, channels, channels, 1, groups=channels // depth_group, device=device,
                               dtype=dtype)
        with torch.no_grad():
            for tensor in (self.spatial.weight, self.spatial.bias, self.depth.weight, self.depth.bias):
                tensor.zero_()
            own_input = torch.arange(channels, device=device) % spatial_group  # each channel's place in its group
            self.spatial.weight[torch.arange(channels, device=device), own_input, 1, 1] = 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = self.conv(x)
        return self.spatial(features) + self.depth(features)


def transform(conv: nn.Conv2d, options: dict) -> FeatureTransform:
    """Every conv gets its transformation: the stem, the 3x3s, the 1x1s and the downsample convs alike."""
    return FeatureTransform(conv, options["eft_group_size"], options["eft_depth_group_size"])


register(MethodSpec(
    "EFT", ISOLATED, "a 3x3 and a 1x1 group-wise conv on the output of every conv, summed; every norm layer, a head",
    "Verma et al., Efficient Feature Transformations for Discriminative and Generative Continual Learning, CVPR 2021",
    order=65, options=OPTIONS, layers=TaskLayers(transform)))
