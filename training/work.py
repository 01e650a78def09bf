"""A run's units of work, each done by one process alone: a task of an isolated method for one seed, or the whole
task sequence of a shared-backbone method for one seed (its tasks depend on each other, so one process learns them
in order). A plain run does the units in run order; under torchrun every process claims the largest unit nobody
has claimed yet whenever it is free, so shared-backbone sequences start first and isolated tasks fill the gaps."""
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from training import distributed

log = logging.getLogger("clr")


@dataclass(frozen=True)
class WorkUnit:
    """One unit: what it is (for the log), what it costs, and the call that does it."""

    label: str
    cost: int  # image-epochs: see task_cost
    run: Callable[[], None]


def task_cost(train_images: int, val_images: int, epochs: int) -> int:
    """A task's work in image-epochs, that of a task that never stops early: each epoch trains on the training
    images and evaluates the validation images. A sequence costs the sum of its tasks'."""
    return (train_images + val_images) * epochs


def do_units(units: Sequence[WorkUnit]) -> None:
    """Do this process's share of ``units`` and wait for the job's other processes to finish theirs."""
    for index in distributed.my_tasks([unit.cost for unit in units]):
        if distributed.is_torchrun():
            log.info("%s takes %s", distributed.describe(), units[index].label)
        units[index].run()
    distributed.barrier()
