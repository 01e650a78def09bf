"""Shared-backbone continual-learning baselines: one backbone trained from task to task, one head per task
(task-incremental: the task id picks the head at test time), and the accuracy matrix that shows forgetting.

Each method is one module here that declares its spec and its code (``@implements(SPEC)`` on its ``Method``
subclass). Importing this package imports every module in it, so the registry then holds every method: a new method
is one new file here; no list names it."""
from continual.sequence import forget_sequence, learn_sequence
from continual.tuning import DEFAULT_TUNING_TASKS, forget_tuning, tune
from dataset.task import TaskSample
from network import method_spec
from network.methods import discover
from training.context import Context
from training.work import WorkUnit, task_cost

discover(__name__, __path__)
__all__ = ["DEFAULT_TUNING_TASKS", "sequence_unit", "forget", "tune"]


def sequence_unit(ctx: Context, samples: list[TaskSample]) -> WorkUnit:
    """The method's whole task sequence as one unit of work: one process learns the tasks in order with one shared
    backbone, resuming where a previous run stopped, with the method's own hyper-parameters as the context holds
    them (and every file records them)."""
    def learn() -> None:  # under torchrun, training.work logs which process takes it
        print(learn_sequence(ctx, samples, method_spec(ctx.method).implementation(ctx)))

    return WorkUnit(f"{ctx.method} seed {ctx.recipe.seed}",
                    sum(task_cost(len(sample.train), len(sample.val), ctx.recipe.epochs) for sample in samples), learn)


def forget(ctx: Context, samples: list[TaskSample]) -> None:
    """--fresh: the selected tasks' files, the sequence's own state and matrix, and the method's tuning."""
    forget_sequence(ctx, samples)
    forget_tuning(ctx)
