"""The preflight check: every selected task samples, matches its stat counts, and every image decodes.

It finds in minutes what would otherwise stop a run hours in: a missing or corrupt image, a database
that samples differently from the stat file, a task that cannot be sampled at all.
"""
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from tqdm import tqdm

from common.errors import DatasetError
from dataset.preprocess import Failure, describe_failures, unreadable_images
from dataset.sources import DataSource, write_manifest
from dataset.task import TaskInfo, TaskSample

TABLE_COLUMNS = ("order", "id", "name", "classes", "train", "val", "status")


@dataclass
class TaskCheck:
    """What the check found for one task: its sample (None if sampling failed) and every problem."""

    task: TaskInfo
    sample: TaskSample | None = None
    problems: list[str] = field(default_factory=list)  # full messages, each naming the task
    notes: list[str] = field(default_factory=list)  # the same problems, short, for the table


def check_tasks(source: DataSource, tasks: Sequence[TaskInfo], manifest_of: Callable[[TaskInfo], Path],
                workers: int) -> list[str]:
    """Sample each task, compare with its stat counts, write its manifest (where ``manifest_of`` says), decode
    all images in one pass.

    Prints one table row per task and returns every mismatch (an empty list means all is well).
    """
    checks = [_sample_task(source, task, manifest_of(task))
              for task in tqdm(tasks, desc="check: sampling", unit="task")]
    sampled = [check for check in checks if check.sample is not None]
    paths = list(dict.fromkeys(path for check in sampled for path in check.sample.paths))
    failed = dict(unreadable_images(source.root, paths, workers, desc="check: decoding"))
    for check in sampled:
        _note_failures(check, source.root, failed)
    print(_table(checks))
    return [problem for check in checks for problem in check.problems]


def _sample_task(source: DataSource, task: TaskInfo, manifest: Path) -> TaskCheck:
    """Rebuild the sample, compare its counts with the stat file's, and write its manifest."""
    check = TaskCheck(task)
    try:
        check.sample = source.sample(task)
    except DatasetError as error:
        check.problems.append(f"{task.name}: {error}")
        check.notes.append("cannot sample")
        return check
    write_manifest(check.sample, manifest)
    for what, found, expected in _counts(check.sample):
        if expected is not None and found != expected:
            check.problems.append(f"{task.name}: {found} {what}, the stat file says {expected}")
            check.notes.append(f"{what} {found}, stat {expected}")
    return check


def _counts(sample: TaskSample) -> list[tuple[str, int, int | None]]:
    """(what, found in the sample, recorded in the stat file) for classes, train and val images."""
    task = sample.task
    return [("classes", sample.num_classes, task.class_num), ("train images", len(sample.train), task.train_num),
            ("val images", len(sample.val), task.val_num)]


def _note_failures(check: TaskCheck, root: Path, failed: dict[str, str]) -> None:
    paths = check.sample.paths
    failures: list[Failure] = [(path, failed[path]) for path in paths if path in failed]
    if failures:
        check.problems.append(f"{check.task.name}: {describe_failures(root, failures, len(paths))}")
        check.notes.append(f"{len(failures)} unreadable images")


def _table(checks: Sequence[TaskCheck]) -> str:
    """One aligned row per task: its identity, the counts found, and OK or what differs."""
    rows = [TABLE_COLUMNS] + [_row(check) for check in checks]
    widths = [max(len(row[column]) for row in rows) for column in range(len(TABLE_COLUMNS) - 1)]
    return "\n".join("  ".join([cell.ljust(width) for cell, width in zip(row, widths)] + [row[-1]]).rstrip()
                     for row in rows)


def _row(check: TaskCheck) -> tuple[str, ...]:
    task, sample = check.task, check.sample
    counts = ("-", "-", "-") if sample is None else (sample.num_classes, len(sample.train), len(sample.val))
    status = "; ".join(check.notes) or "OK"
    return tuple(str(cell) for cell in (task.order, task.task_id, task.name, *counts, status))
