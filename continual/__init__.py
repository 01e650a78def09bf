"""Shared-backbone continual-learning baselines: one backbone trained from task to task, one head per task
(task-incremental: the task id picks the head at test time), and the accuracy matrix that shows forgetting.

Each method is one module here that declares its spec and its code (``@implements(SPEC)`` on its
``training.shared_method.Method`` subclass). Importing this package imports every module in it, so the registry then
holds every method: a new method is one new file here; no list names it. The machinery every method shares (the
sequence driver, the hooks and phases, the accuracy matrix, the final model, --tune) is in training/, and the shared
family's object (training.families) finds a method's code through the registry."""
from network.methods import discover

discover(__name__, __path__)
