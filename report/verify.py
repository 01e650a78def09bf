"""The numbers, checked against what is on disk: each method's saved tasks re-evaluated as its family rebuilds them
(training.families: an isolated method's tasks re-loaded onto a freshly built backbone and re-evaluated on their
validation split, zero forgetting; a shared-backbone method's final model rebuilt from its after-task file and every
task re-evaluated on it, the accuracy matrix's last row), compared with what the result folder says."""
from collections import Counter

import pandas as pd

from dataset.task import TaskInfo, TaskSample
from report.inputs import MethodResults
from training.context import Context
from training.families import family_of
from training.verification import Recorded, Verification


def last_row(matrix: pd.DataFrame | None) -> dict[str, float] | None:
    """The accuracy matrix's last row (the accuracy after the last task) by task name; a blank cell is NaN."""
    if matrix is None:
        return None
    return {name: float(value) for name, value in matrix.iloc[-1].drop("task_name").items()}


def verify_method(ctx: Context | None, results: MethodResults, tasks: list[TaskInfo],
                  samples: dict[int, TaskSample]) -> Verification:
    """Re-evaluate every saved task of a method (None: --no-verify). ``samples`` caches each task's sample across
    methods."""
    finished = [task for task in tasks if task.task_id in results.accuracy.index]
    if ctx is None:
        return Verification(skipped=Counter({"--no-verify": len(finished)}))
    recorded = Recorded(results.name, finished, {task_id: record.config for task_id, record in results.records.items()},
                        last_row(results.matrix))
    return family_of(results.name).verify(ctx, recorded, lambda task: sample_of(ctx, task, samples))


def sample_of(ctx: Context, task: TaskInfo, samples: dict[int, TaskSample]) -> TaskSample:
    """The task's sample from ``ctx``'s data, drawn once per report."""
    if task.task_id not in samples:
        samples[task.task_id] = ctx.source.sample(task)
    return samples[task.task_id]
