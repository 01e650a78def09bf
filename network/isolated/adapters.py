"""Residual adapters (Rebuffi et al., NeurIPS 2017) as the CLR release runs them: a 1x1 conv beside every conv of
the frozen backbone, on ResNet-18 (li18) or ResNet-50 (li50), the norm layers frozen."""
from network.layers import AdaptedConv
from network.methods import ISOLATED, MethodSpec, TaskLayers, every_conv, register

_CITATION = "residual adapters (Rebuffi et al., NeurIPS 2017), as in the CLR release"

register(MethodSpec("li18", ISOLATED, "a residual 1x1 adapter beside every conv, a head (norm layers frozen)",
                    _CITATION, order=70, arch="resnet18",
                    layers=TaskLayers(every_conv(AdaptedConv), norm="frozen")))
register(MethodSpec("li50", ISOLATED, "li18's adapters on ResNet-50", _CITATION, order=80, arch="resnet50",
                    layers=TaskLayers(every_conv(AdaptedConv), norm="frozen")))
