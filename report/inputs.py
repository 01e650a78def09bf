"""What the report reads from disk: the task list, each method's CSV, weights-file records, per-epoch metrics,
accuracy matrices and task-agnostic counts. Everything becomes pandas; nothing here needs the data or a device."""
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from common.errors import RunError
from dataset.sources import DEFAULT_STAT, read_stat, select_tasks
from dataset.task import TaskInfo
from network import state_bytes
from training.metrics import read_epochs
from training.record import TaskRecord
from training.settings import Layout

MATRIX_KEYS = ["task_id", "task_name"]
AGNOSTIC_COLUMNS = ["task_id", "task_name", "val_images", "mapper_correct", "end_to_end_correct"]


@dataclass
class MethodResults:
    """One method's results for the report's tasks."""

    name: str
    accuracy: pd.Series  # best_acc fraction by task id, from <method>.csv
    records: dict[int, TaskRecord] = field(default_factory=dict)  # by task id
    curves: dict[int, list[dict]] = field(default_factory=dict)  # by task id: each epoch's record, with its val_acc
    matrix: pd.DataFrame | None = None  # R[t][i], rows = tasks learnt, columns = task names in run order
    task_agnostic: pd.DataFrame | None = None

    @property
    def shared_backbone(self) -> bool:
        """Learnt on one backbone that every task moves on (weights files say so, or an accuracy matrix exists)."""
        return self.matrix is not None or any(r.shared_backbone for r in self.records.values())


def read_results_csv(path: Path) -> pd.DataFrame:
    frame = pd.read_csv(path, dtype={"task_name": str})
    return frame.dropna(subset=["task_id", "best_acc"]).astype({"task_id": int, "best_acc": float})


def read_record(path: Path) -> TaskRecord | None:
    """A task's record without its tensors, or None where the task has no weights file."""
    if not path.exists():
        return None
    record = TaskRecord.load(path)
    if record.stored_bytes is None:  # a file from before records said so: an isolated task stores just its state
        record.stored_bytes = state_bytes(record.state)
    record.state = {}  # the report reads only what the record says; verification loads the file itself
    return record


def read_matrix(path: Path) -> pd.DataFrame | None:
    """<method>_matrix.csv: R[t][i] as fractions, one row per task learnt (by its id), a column per task."""
    if not path.exists():
        return None
    frame = pd.read_csv(path, dtype={"task_name": str})
    if list(frame.columns[:2]) != MATRIX_KEYS:
        raise RunError(f"{path} does not start with the columns {','.join(MATRIX_KEYS)}")
    return frame.set_index("task_id")


def read_task_agnostic(path: Path) -> pd.DataFrame | None:
    if not path.exists():
        return None
    frame = pd.read_csv(path, dtype={"task_name": str})
    if list(frame.columns) != AGNOSTIC_COLUMNS:
        raise RunError(f"{path} does not have the columns {','.join(AGNOSTIC_COLUMNS)}")
    return frame.set_index("task_id")


def read_method(layout: Layout, method: str, tasks: list[TaskInfo]) -> MethodResults:
    """A method's CSV rows, weights-file records, training curves, matrix and task-agnostic counts for the given
    tasks."""
    ids = [task.task_id for task in tasks]
    frame = read_results_csv(layout.results_csv(method))
    accuracy = frame[frame.task_id.isin(ids)].set_index("task_id")["best_acc"]
    records = {task.task_id: record for task in tasks if task.task_id in accuracy.index
               and (record := read_record(layout.weights(task.name, method))) is not None}
    return MethodResults(method, accuracy, records, training_curves(layout, method, tasks, records),
                         read_matrix(layout.matrix_csv(method)), read_task_agnostic(layout.task_agnostic_csv(method)))


def training_curves(layout: Layout, method: str, tasks: list[TaskInfo], records: dict[int, TaskRecord]
                    ) -> dict[int, list[dict]]:
    """Each finished task's epochs from its metrics file, or from its weights file's history where it has none (a
    task of a run from before the metrics files)."""
    curves = {task.task_id: read_epochs(layout.metrics(task.name, method)) or records[task.task_id].history
              for task in tasks if task.task_id in records}
    return {task_id: epochs for task_id, epochs in curves.items() if epochs}


def tasks_from_results(layout: Layout, methods: list[str], stat: Path | None,
                       wanted: list[str] | None) -> list[TaskInfo]:
    """The task list without the data: every task in the CSVs, in the stat file's order where it lists them
    (with its counts), then in the CSVs' order."""
    seen: dict[int, str] = {}
    for method in methods:
        frame = read_results_csv(layout.results_csv(method))
        seen.update((task_id, name) for task_id, name in zip(frame.task_id, frame.task_name) if task_id not in seen)
    listed = [task for task in (read_stat(stat or DEFAULT_STAT) if stat or DEFAULT_STAT.exists() else [])
              if task.task_id in seen]
    known = {task.task_id for task in listed}
    first_free = max((task.order for task in listed), default=-1) + 1
    extra = [(task_id, name) for task_id, name in seen.items() if task_id not in known]
    tasks = listed + [TaskInfo(order=first_free + k, task_id=task_id, name=name)
                      for k, (task_id, name) in enumerate(extra)]
    return select_tasks(tasks, wanted)
