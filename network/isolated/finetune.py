"""Finetune: a full copy of the pretrained backbone per task, every weight trained, as in the CLR release: the
ceiling of what a model per task can learn, at a whole network's cost per task."""
from network.methods import ISOLATED, MethodSpec, TaskLayers, register

register(MethodSpec("Finetune", ISOLATED, "every weight: one full model per task",
                    "fine-tuning, as in the CLR release", order=50, layers=TaskLayers(trains_all=True)))
