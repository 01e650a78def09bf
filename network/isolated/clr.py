"""CLR (Ge et al., ICCV 2023): a task reprograms the frozen backbone with a depthwise kernel after its convs, trains
those kernels, every norm layer and its own head. CLR-Full and the release's Ghost_reduced_v2 differ only in which
convs get a kernel, and of which size."""
from torch import nn

from network.layers import ReprogrammedConv
from network.methods import ISOLATED, MethodSpec, Reprogram, TaskLayers, register

CLR_PAPER = "Ge et al., CLR: Channel-wise Lightweight Reprogramming for Continual Learning, ICCV 2023"
RELEASE = "the CLR authors' release (docs/release.md §1b)"


def _clr(after_spatial: int | None, after_pointwise: int | None) -> Reprogram:
    """CLR's placement: a depthwise kernel of the first size after each conv with a spatial kernel (stem, 3x3, 5x5,
    7x7, depthwise included; --clr-placement skip-depthwise then leaves the depthwise convs out, see
    ``LayerPolicy.skips_kernel_after``), of the second size after each 1x1 conv; None: no CLR layer there."""
    def reprogram(conv: nn.Conv2d, options: dict) -> nn.Module | None:
        kernel_size = after_pointwise if conv.kernel_size == (1, 1) else after_spatial
        return None if kernel_size is None else ReprogrammedConv(conv, kernel_size)
    return reprogram


register(MethodSpec("Ghost_reduced_v1", ISOLATED, "a depthwise 3x3 after the stem and every conv with a spatial "
                    "kernel, every norm layer, a head", CLR_PAPER, order=10, paper_column=1, paper_name="CLR",
                    layers=TaskLayers(_clr(3, None), clr_kernels=True)))
register(MethodSpec("Ghost", ISOLATED, "a depthwise 3x3 after every conv, every norm layer, a head", CLR_PAPER,
                    order=20, paper_column=2, paper_name="CLR-Full",
                    layers=TaskLayers(_clr(3, 3), clr_kernels=True)))
register(MethodSpec("Ghost_reduced_v2", ISOLATED, "CLR, plus one scale per channel after every 1x1 conv", RELEASE,
                    order=30, layers=TaskLayers(_clr(3, 1), clr_kernels=True)))
