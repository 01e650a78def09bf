"""Ghost_a, a variant of the CLR release: every conv computes conv + gate x (depthwise 3x3 of the conv's output), the
gate and the kernel the task's."""
from network.isolated.clr import RELEASE
from network.layers import GatedConv
from network.methods import ISOLATED, MethodSpec, TaskLayers, every_conv, register

register(MethodSpec("Ghost_a", ISOLATED, "gated CLR after every conv: conv + gate x depthwise 3x3, every norm "
                    "layer, a head", RELEASE, order=60, layers=TaskLayers(every_conv(GatedConv))))
