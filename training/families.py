"""Each family of methods (``network.methods.Family``) as one object that owns what follows from the family: how a
method's tasks become units of work (with the label and cost that the log, torchrun's claiming and
benchmarks/balance.py use), how --fresh forgets them, what the leader does once every process is done, the model each
trained task computes with (--predict), how the report re-evaluates the saved tasks, whether the family has the task
mapper and which accuracy its per-task values are. main.py, inference/, report/ and benchmarks/ ask ``family_of``;
none of them branches on a family.

A shared method's code is found through the registry (``MethodSpec.implementation``): the shared-backbone methods
register as ``continual`` is imported, which the callers above this package do."""
import functools
import math
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence

import torch

from common.console import TransientBar
from dataset.task import TaskInfo, TaskSample
from network import Family, method_spec, methods_of
from training.context import Context
from training.final_model import load_final_model
from training.isolated import (TaskDone, forget_tasks, learn_isolated_task, record_finished, task_model,
                               verify_task)
from training.record import TaskRecord
from training.sequence import evaluate_task, forget_sequence, learn_sequence
from training.tuning import forget_tuning
from training.verification import Recorded, Verification, skip_reason
from training.work import WorkUnit, task_cost

BEST_VALIDATION = "best validation"
AFTER_LAST_TASK = "after the last task"

PlannedUnit = tuple[str, list[int]]
"""A unit of work as planned: its label, and the positions of its tasks in the run's task list."""
SampleOf = Callable[[TaskInfo], TaskSample]
"""A task's sample from the run's data (the report draws each one once, whatever the method)."""


class FamilyBehaviour(ABC):
    """What a family does with a method's tasks. A subclass plans the units and does their work; the units' labels
    and costs follow from the plan alone, so a run and balance.py's plan of it cannot differ."""

    family: Family
    task_mapper: bool  # each task gets a task-mapper anchor, and the run ends with task-agnostic accuracy
    accuracy_kind: str  # which accuracy a task's value in <method>.csv is

    @property
    def methods(self) -> tuple[str, ...]:
        """The family's methods, in the registry's order."""
        return methods_of(self.family)

    @abstractmethod
    def plan(self, method: str, seed: int, tasks: Sequence[TaskInfo]) -> list[PlannedUnit]:
        """``method``'s units for one seed over ``tasks``, in run order."""

    @abstractmethod
    def work(self, ctx: Context, samples: list[TaskSample], tasks: list[int], task_done: TaskDone | None
             ) -> Callable[[], None]:
        """The call that does one planned unit (its ``tasks``, positions in ``samples``)."""

    def units(self, ctx: Context, samples: list[TaskSample], task_done: TaskDone | None = None) -> list[WorkUnit]:
        """The context's work, in units one process does alone, each costing its tasks' ``task_cost``.
        ``task_done`` is called after each task's record is saved, while its images are at hand, where the family
        has the task mapper (main.py fits the task's anchor)."""
        return [WorkUnit(label, sum(task_cost(len(samples[i].train), len(samples[i].val), ctx.recipe.epochs)
                                    for i in tasks), self.work(ctx, samples, tasks, task_done))
                for label, tasks in self.plan(ctx.method, ctx.recipe.seed, [sample.task for sample in samples])]

    def costed(self, method: str, seed: int, tasks: Sequence[TaskInfo], epochs: int) -> list[tuple[str, int]]:
        """The units ``units`` makes, as (label, cost), from the tasks' counts alone (the stat file's, without
        sampling): what benchmarks/balance.py plans a run with."""
        return [(label, sum(task_cost(tasks[i].train_num, tasks[i].val_num, epochs) for i in positions))
                for label, positions in self.plan(method, seed, tasks)]

    @abstractmethod
    def forget(self, ctx: Context, samples: list[TaskSample]) -> None:
        """--fresh: every file the context's method keeps of the selected tasks."""

    def finish(self, ctx: Context, samples: list[TaskSample]) -> None:
        """The leader's step once every process has done its units (by default none)."""

    @abstractmethod
    def task_models(self, ctx: Context, method: str, records: list[TaskRecord]) -> Callable[[int], torch.nn.Module]:
        """The model each of ``method``'s trained tasks (``records``, finished tasks of ``ctx``'s weight folder)
        computes with, by its index, exactly as its evaluation computed."""

    @abstractmethod
    def verify(self, ctx: Context, recorded: Recorded, sample_of: SampleOf) -> Verification:
        """Re-evaluate the method's saved tasks and compare each with what its result folder says."""


class IsolatedFamily(FamilyBehaviour):
    """A model per task: each task trains its own state on a fresh copy of the frozen backbone (training.isolated), so
    each task is a unit of work, finished tasks never change, and the task mapper can tell the tasks apart."""

    family = Family.ISOLATED
    task_mapper = True
    accuracy_kind = BEST_VALIDATION

    def plan(self, method: str, seed: int, tasks: Sequence[TaskInfo]) -> list[PlannedUnit]:
        return [(f"{method} seed {seed} {task.name}", [position]) for position, task in enumerate(tasks)]

    def work(self, ctx: Context, samples: list[TaskSample], tasks: list[int], task_done: TaskDone | None
             ) -> Callable[[], None]:
        [position] = tasks
        return functools.partial(learn_isolated_task, ctx, samples[position], position + 1, len(samples),
                                 task_done or (lambda sample, record: None))

    def forget(self, ctx: Context, samples: list[TaskSample]) -> None:
        forget_tasks(ctx, samples)

    def finish(self, ctx: Context, samples: list[TaskSample]) -> None:
        record_finished(ctx, samples)

    def task_models(self, ctx: Context, method: str, records: list[TaskRecord]) -> Callable[[int], torch.nn.Module]:
        return lambda index: task_model(ctx, records[index])

    def verify(self, ctx: Context, recorded: Recorded, sample_of: SampleOf) -> Verification:
        """Each saved task whose settings and data match this run's, re-loaded onto a freshly built backbone: its
        count must equal its record's (zero forgetting)."""
        found = Verification()
        for task in TransientBar(recorded.finished, desc=f"verifying {recorded.method}"):
            if task.task_id not in recorded.configs:
                found.skipped["no weights file"] += 1
                continue
            sample = sample_of(task)
            reason = skip_reason(ctx.task_config(sample), recorded.configs[task.task_id])
            if reason:
                found.skipped[reason] += 1
                continue
            record = TaskRecord.load(ctx.layout.weights(task.name, recorded.method))
            correct = verify_task(ctx, sample, record)
            if correct == record.best_correct:
                found.equal += 1
            else:
                found.mismatches.append(f"{task.name}: recorded {record.best_correct} correct, re-evaluated {correct}")
        return found


class SharedFamily(FamilyBehaviour):
    """One backbone carried across tasks (training.sequence): a method's whole sequence for a seed is one unit of work
    (its tasks depend on each other, so one process learns them in order), and its tasks compute on the final model."""

    family = Family.SHARED
    task_mapper = False
    accuracy_kind = AFTER_LAST_TASK

    def plan(self, method: str, seed: int, tasks: Sequence[TaskInfo]) -> list[PlannedUnit]:
        return [(f"{method} seed {seed}", list(range(len(tasks))))]

    def work(self, ctx: Context, samples: list[TaskSample], tasks: list[int], task_done: TaskDone | None
             ) -> Callable[[], None]:
        """The sequence, resuming where a previous run stopped, with the method's own hyper-parameters as the
        context holds them (and every file records them); prints the accuracy matrix's summary."""
        sequence = [samples[position] for position in tasks]

        def learn() -> None:  # under torchrun, training.work logs which process takes it
            print(learn_sequence(ctx, sequence, method_spec(ctx.method).implementation(ctx)))
        return learn

    def forget(self, ctx: Context, samples: list[TaskSample]) -> None:
        """The selected tasks' files, the sequence's own state and matrix, and the method's tuning."""
        forget_sequence(ctx, samples)
        forget_tuning(ctx)

    def task_models(self, ctx: Context, method: str, records: list[TaskRecord]) -> Callable[[int], torch.nn.Module]:
        final = load_final_model(ctx, method)
        return lambda index: final.use_task(records[index].task_name)

    def verify(self, ctx: Context, recorded: Recorded, sample_of: SampleOf) -> Verification:
        """The final model rebuilt from the after-task file alone, each finished task re-evaluated on it (its head and
        per-task state). The matrix's last row was computed on the same model by the same evaluation, so each count
        must equal it exactly (on the device it was trained on)."""
        path = ctx.layout.after_task(recorded.method)
        found = Verification(checked_as=f"re-evaluated on the final model rebuilt from {path.name} (the backbone "
                             "after the last task, with each task's head and per-task state)",
                             compared_with="the accuracy matrix's last row")
        if not path.exists() or recorded.last_row is None:
            found.skipped[f"no {path.name}" if not path.exists() else "no accuracy matrix"] = len(recorded.finished)
            return found
        final = load_final_model(ctx, recorded.method)
        for task in TransientBar(recorded.finished, desc=f"verifying {recorded.method}"):
            accuracy = recorded.last_row.get(task.name)
            if task.name not in final.task_names or accuracy is None or math.isnan(accuracy):
                found.skipped[f"not among the tasks of {path.name} and the matrix's last row"] += 1
                continue
            sample = sample_of(task)
            position = final.position(task.name)
            reason = skip_reason(final.ctx.task_config(sample), final.records[position].config)
            if reason:
                found.skipped[reason] += 1
                continue
            correct = evaluate_task(final.ctx, final.model, final.method, position, sample)
            expected = round(accuracy * len(sample.val))
            if correct == expected:
                found.equal += 1
            else:
                found.mismatches.append(f"{task.name}: the matrix's last row has {expected} correct, re-evaluated "
                                        f"{correct}")
        return found


ISOLATED_FAMILY, SHARED_FAMILY = IsolatedFamily(), SharedFamily()
FAMILIES: dict[Family, FamilyBehaviour] = {family.family: family for family in (ISOLATED_FAMILY, SHARED_FAMILY)}


def family_of(method: str) -> FamilyBehaviour:
    """The object of ``method``'s family; an unknown method is refused in one line (``method_spec``)."""
    return FAMILIES[method_spec(method).family]
