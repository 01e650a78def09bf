"""What the report reads from disk: the task list, each method's CSV, weights-file records, accuracy matrices
and task-agnostic counts. Everything becomes pandas; nothing here needs the data or a device."""
import argparse
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from dataset.sources import DEFAULT_STAT, open_data, read_stat, select_tasks
from dataset.task import TaskInfo
from training.checkpoints import load_checkpoint
from training.context import RunError

MATRIX_KEYS = ["task_id", "task_name"]
AGNOSTIC_COLUMNS = ["task_id", "task_name", "val_images", "mapper_correct", "end_to_end_correct"]


@dataclass
class MethodResults:
    """One method's results for the report's tasks."""

    name: str
    accuracy: pd.Series  # best_acc fraction by task id, from <method>.csv
    records: dict[int, dict] = field(default_factory=dict)  # weights-file contents but the state, by task id
    matrix: pd.DataFrame | None = None  # R[t][i], rows = tasks learnt, columns = task names in run order
    task_agnostic: pd.DataFrame | None = None

    @property
    def shared_backbone(self) -> bool:
        """Learnt on one backbone that every task moves on (weights files say so, or an accuracy matrix exists)."""
        return self.matrix is not None or any(r.get("shared_backbone") for r in self.records.values())


def weight_path(weight: Path, task_name: str, method: str) -> Path:
    return weight / f"{task_name}_{method}.pt"


def read_results_csv(path: Path) -> pd.DataFrame:
    frame = pd.read_csv(path, dtype={"task_name": str})
    return frame.dropna(subset=["task_id", "best_acc"]).astype({"task_id": int, "best_acc": float})


def read_record(path: Path) -> dict | None:
    """A weights file's metadata (everything but the tensors), or None where the task has no weights file."""
    if not path.exists():
        return None
    return {key: value for key, value in load_checkpoint(path).items() if key != "state"}


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


def read_method(result: Path, weight: Path, method: str, tasks: list[TaskInfo]) -> MethodResults:
    """A method's CSV rows, weights-file records, matrix and task-agnostic counts for the given tasks."""
    ids = [task.task_id for task in tasks]
    frame = read_results_csv(result / f"{method}.csv")
    accuracy = frame[frame.task_id.isin(ids)].set_index("task_id")["best_acc"]
    records = {task.task_id: record for task in tasks if task.task_id in accuracy.index
               and (record := read_record(weight_path(weight, task.name, method))) is not None}
    return MethodResults(method, accuracy, records, read_matrix(result / f"{method}_matrix.csv"),
                         read_task_agnostic(result / f"task_agnostic_{method}.csv"))


def tasks_from_results(args: argparse.Namespace, methods: list[str]) -> list[TaskInfo]:
    """The task list without the data: every task in the CSVs, in the stat file's order where it lists them
    (with its counts), then in the CSVs' order."""
    seen: dict[int, str] = {}
    for method in methods:
        frame = read_results_csv(args.result / f"{method}.csv")
        seen.update((task_id, name) for task_id, name in zip(frame.task_id, frame.task_name) if task_id not in seen)
    stat = args.stat or DEFAULT_STAT
    listed = [task for task in (read_stat(stat) if args.stat or stat.exists() else []) if task.task_id in seen]
    known = {task.task_id for task in listed}
    first_free = max((task.order for task in listed), default=-1) + 1
    extra = [(task_id, name) for task_id, name in seen.items() if task_id not in known]
    tasks = listed + [TaskInfo(order=first_free + k, task_id=task_id, name=name)
                      for k, (task_id, name) in enumerate(extra)]
    return select_tasks(tasks, args.tasks)


def report_tasks(args: argparse.Namespace, methods: list[str]) -> list[TaskInfo]:
    """The tasks --report covers: the data's task list with --data, else the results' own."""
    if args.data is not None:
        return select_tasks(open_data(args.data, args.stat).tasks, args.tasks)
    return tasks_from_results(args, methods)
