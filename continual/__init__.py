"""Shared-backbone continual-learning baselines: one backbone trained from task to task, one head per task
(task-incremental: the task id picks the head at test time), and the accuracy matrix that shows forgetting."""
from continual.er import ER
from continual.ewc import EWC
from continual.lwf import LwF
from continual.method import Method
from continual.packnet import PackNet
from continual.psp import PSP
from continual.sequence import forget_sequence, learn_sequence
from continual.sgd import SGD
from continual.si import SI
from continual.tuning import DEFAULT_TUNING_TASKS, forget_tuning
from continual.tuning import tune as tune_with
from dataset.task import TaskSample
from network import Family, methods_of
from training.context import Context
from training.work import WorkUnit, task_cost

# the code of each shared-backbone method of network.methods' registry, which holds everything else about it
IMPLEMENTATIONS: dict[str, type[Method]] = {"SGD": SGD, "EWC": EWC, "LwF": LwF, "ER": ER, "SI": SI, "PSP": PSP,
                                            "PackNet": PackNet}
if set(IMPLEMENTATIONS) != set(methods_of(Family.SHARED)):
    raise ImportError("continual.IMPLEMENTATIONS and network.methods' shared-backbone methods differ")
__all__ = ["DEFAULT_TUNING_TASKS", "IMPLEMENTATIONS", "sequence_unit", "forget", "tune"]


def sequence_unit(ctx: Context, samples: list[TaskSample]) -> WorkUnit:
    """The method's whole task sequence as one unit of work: one process learns the tasks in order with one shared
    backbone, resuming where a previous run stopped, with the method's own hyper-parameters as the context holds
    them (and every file records them)."""
    def learn() -> None:  # under torchrun, training.work logs which process takes it
        print(learn_sequence(ctx, samples, IMPLEMENTATIONS[ctx.method](ctx)))

    return WorkUnit(f"{ctx.method} seed {ctx.recipe.seed}",
                    sum(task_cost(len(sample.train), len(sample.val), ctx.recipe.epochs) for sample in samples), learn)


def tune(contexts: list[Context], samples: list[TaskSample], tasks: int) -> list[Context]:
    """--tune: the contexts the run learns with, each shared-backbone method's learning rate and own option chosen
    on the first ``tasks`` tasks by continual.tuning's protocol; the isolated methods' contexts as they were."""
    return tune_with(contexts, samples, tasks, IMPLEMENTATIONS)


def forget(ctx: Context, samples: list[TaskSample]) -> None:
    """--fresh: the selected tasks' files, the sequence's own state and matrix, and the method's tuning."""
    forget_sequence(ctx, samples)
    forget_tuning(ctx)
