"""Where a run's data comes from: the data folder's layout, the stat file, task selection and manifests.

Everything here runs before training, so a wrong path, task name or missing image stops a run at once
instead of hours into it.
"""
import csv
import io
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

from tqdm import tqdm

from common.errors import DatasetError
from common.files import atomic_write_text, csv_text
from dataset.dct import DATABASE, IMAGES, DctSource, is_dct_root
from dataset.folders import LAYOUT, FolderSource, discover_tasks, task_folder_names
from dataset.task import TaskInfo, TaskSample

DEFAULT_STAT = Path(__file__).resolve().parent.parent / "stat.csv"
STAT_COLUMNS = ("oldid", "newid", "name", "class_num", "train_num", "test_num")
COUNT_COLUMNS = ("class_num", "train_num", "test_num")  # may be left blank where nothing recorded them
MANIFEST_COLUMNS = ("split", "path", "label")
SHOWN_PATHS = 5  # how many missing files an error message names


class DataSource(Protocol):
    """A data folder's tasks, in run order, and the exact images and labels of each."""

    root: Path
    kind: str  # "dct" or "folders"
    tasks: list[TaskInfo]

    def sample(self, task: TaskInfo) -> TaskSample:
        ...


def read_stat(path: str | os.PathLike) -> list[TaskInfo]:
    """Tasks of a stat file (columns as the release's ``stat.csv``), in the file's row order."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise DatasetError(f"stat file not found: {path}") from None
    except (OSError, UnicodeDecodeError) as error:
        raise DatasetError(f"cannot read stat file {path}: {error}") from None
    reader = csv.DictReader(io.StringIO(text))
    missing = [column for column in STAT_COLUMNS if column not in (reader.fieldnames or ())]
    if missing:
        raise DatasetError(f"stat file {path} lacks column(s) {', '.join(missing)} "
                           f"(expected {','.join(STAT_COLUMNS)})")
    tasks = [_stat_task(path, reader.line_num, row) for row in reader]
    if not tasks:
        raise DatasetError(f"stat file {path} lists no tasks")
    for field in ("task_id", "name"):
        values = [getattr(task, field) for task in tasks]
        repeated = sorted({str(value) for value in values if values.count(value) > 1})
        if repeated:
            raise DatasetError(f"stat file {path} lists the same {field} more than once: {', '.join(repeated)}")
    return tasks


def _stat_task(path: Path, line: int, row: dict[str, str | None]) -> TaskInfo:
    def integer(column: str) -> int | None:
        value = (row[column] or "").strip()
        if not value and column in COUNT_COLUMNS:
            return None
        if not value.isdigit():
            raise DatasetError(f"stat file {path} line {line}: {column} must be a whole number, got {value!r}")
        return int(value)

    name = (row["name"] or "").strip()
    if not name:
        raise DatasetError(f"stat file {path} line {line}: empty name")
    return TaskInfo(order=integer("oldid"), task_id=integer("newid"), name=name, class_num=integer("class_num"),
                    train_num=integer("train_num"), val_num=integer("test_num"))


def open_data(root: str | os.PathLike, stat: Path | None = None) -> DataSource:
    """Recognise the data folder's layout (DCT download or task folders) and list its tasks."""
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"data folder not found: {root}" if not root.exists() else f"not a folder: {root}")
    if is_dct_root(root):
        return DctSource(root, read_stat(DEFAULT_STAT if stat is None else stat))
    if task_folder_names(root):
        return FolderSource(root, discover_tasks(root) if stat is None else read_stat(stat))
    raise DatasetError(f"{root} holds neither the DCT download ({root / DATABASE} with {IMAGES}/) "
                       f"nor task folders ({LAYOUT})")


def select_tasks(tasks: list[TaskInfo], wanted: Sequence[str] | None) -> list[TaskInfo]:
    """The tasks named by id or name, in run order; ``None`` selects all of them."""
    if wanted is None:
        return list(tasks)

    def matches(task: TaskInfo, token: str) -> bool:
        return token == task.name or (token.isdigit() and int(token) == task.task_id)

    unknown = [token for token in wanted if not any(matches(task, token) for task in tasks)]
    ambiguous = [token for token in wanted if sum(matches(task, token) for task in tasks) > 1]
    if ambiguous:
        raise DatasetError(f"ambiguous task(s): {', '.join(ambiguous)} is both one task's id and another's name; "
                           "give the other task's name or id instead")
    if unknown:
        available = ", ".join(f"{task.task_id} {task.name}" for task in tasks)
        raise DatasetError(f"unknown task(s): {', '.join(unknown)}; available: {available}")
    return [task for task in tasks if any(matches(task, token) for token in wanted)]


def manifest_text(sample: TaskSample) -> str:
    """The exact sample as CSV, so two runs can be diffed and a number traced back to its images."""
    rows = [(split, path, label) for split, items in (("train", sample.train), ("val", sample.val))
            for path, label in items]
    return csv_text(MANIFEST_COLUMNS, rows)


def write_manifest(sample: TaskSample, path: str | os.PathLike) -> None:
    """Write the task's manifest (creating its folder), atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, manifest_text(sample))


def check_files_exist(root: str | os.PathLike, samples: Sequence[TaskSample]) -> None:
    """Fail before any training if an image of any selected task is missing, naming the first few."""
    paths = [path for sample in samples for items in (sample.train, sample.val) for path, _label in items]
    missing = [path for path in tqdm(paths, desc="checking files", unit="file")
               if not os.path.isfile(os.path.join(root, path))]
    if missing:
        shown = ", ".join(missing[:SHOWN_PATHS]) + (", ..." if len(missing) > SHOWN_PATHS else "")
        raise DatasetError(f"{len(missing)} of {len(paths)} image files missing under {root}: {shown}")
