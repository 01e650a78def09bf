"""Resnet_Scratch: a full model per task trained from a random init, as in the CLR release: what the pretrained
weights are worth."""
from network.methods import ISOLATED, MethodSpec, TaskLayers, register

register(MethodSpec("Resnet_Scratch", ISOLATED, "every weight, from a random init",
                    "training from scratch, as in the CLR release", order=90, weights="none",
                    layers=TaskLayers(trains_all=True)))
