"""Linear: the linear probe of the CLR release. A task trains its head alone on the frozen backbone's features, its
norm layers frozen too: the floor any reprogramming has to beat."""
from network.methods import ISOLATED, MethodSpec, TaskLayers, register

register(MethodSpec("Linear", ISOLATED, "the head only (the backbone and its norm layers frozen)",
                    "the linear probe of the CLR release", order=40, layers=TaskLayers(norm="frozen")))
