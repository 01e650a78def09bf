"""The DCT / SKILL data: its sqlite database and the release's exact per-task sampling (docs/release.md §3, §4).

The sampling decides which images a run sees, so it is transcribed step by step: a paper number can only be
compared with ours if both used the same images with the same labels.
"""
import random
import sqlite3
from collections.abc import Callable, Mapping, Sequence
from contextlib import closing
from pathlib import Path
from typing import TypeVar

from common.errors import DatasetError, warn
from dataset.task import Item, TaskInfo, TaskSample, require_classes

DATABASE = Path("rolling_releases") / "database_2.sqlite"
IMAGES = "original_images"

TRAIN_SET, VAL_SET = 0, 1  # the `set` column; 2 (test) is never used
TRAIN_AMOUNTS = (5120, 2560)  # images per split: (with >= MANY_CLASSES classes, with fewer)
VAL_AMOUNTS = (512, 256)
MANY_CLASSES = 60
MAX_CLASSES = 300
SEED = 27
SHOWN_CLASSES = 5  # how many offending class ids an error message names

ROWS_QUERY = 'SELECT hash, path, filename, class_id FROM files WHERE dataset_id=? AND problem=0 AND "set"=?'

Row = tuple  # (hash, path, filename, class_id) as the database stores them
ClassId = object  # whatever type the database stores in `class_id`; str() of it is the class key
Result = TypeVar("Result")


def is_dct_root(root: Path) -> bool:
    """The DCT download is recognised by either of its two top-level folders."""
    return (root / DATABASE.parent).is_dir() or (root / IMAGES).is_dir()


def group_by_class(rows: Sequence[Row]) -> dict[ClassId, list[Row]]:
    """§3 step 2: classes in order of first appearance, rows in their stored order within a class."""
    groups: dict[ClassId, list[Row]] = {}
    for row in rows:
        groups.setdefault(row[3], []).append(row)
    return groups


def first_appearance_labels(groups: Mapping[ClassId, list[Row]]) -> dict[ClassId, int]:
    """§3 step 3: the train split's class ids, in order, map to 0, 1, 2, ..."""
    return {class_id: label for label, class_id in enumerate(groups)}


def is_capped(groups: Mapping[ClassId, list[Row]]) -> bool:
    """Whether the 300-class cap drops classes from this split."""
    return len(groups) > MAX_CLASSES


def class_quota(amount: int, num_classes: int) -> int:
    """§3 step 6: images per class, with Python's ``round`` (ties to even) as the release uses it."""
    return round(amount / num_classes)


def sample_split(groups: Mapping[ClassId, list[Row]], label_map: Mapping[ClassId, int],
                 amounts: tuple[int, int]) -> list[tuple[Row, int]]:
    """§3 steps 4-8 for one split: each class's rows shuffled by a generator seeded with 27, first quota kept.

    ``random.Random(SEED)`` draws exactly what ``random.seed(SEED)`` followed by ``random.shuffle`` draws,
    without touching the global generator. Every class of the split must have a label unless the cap
    skips it.
    """
    num_classes = min(len(groups), MAX_CLASSES)
    amount = amounts[0] if len(groups) >= MANY_CLASSES else amounts[1]
    quota = class_quota(amount, num_classes)
    allowed = set(list(label_map)[:num_classes]) if is_capped(groups) else None
    rng = random.Random(SEED)
    picked: list[tuple[Row, int]] = []
    taken = 0
    for class_id, class_rows in groups.items():
        if taken == num_classes:
            break
        if allowed is not None and class_id not in allowed:
            continue
        shuffled = list(class_rows)
        rng.shuffle(shuffled)
        picked += [(row, label_map[class_id]) for row in shuffled[:quota]]
        taken += 1
    return picked


def connect_read_only(database: Path) -> sqlite3.Connection:
    """Open the database read-only, so nothing we do can change the user's download."""
    try:
        return sqlite3.connect(f"{database.resolve().as_uri()}?mode=ro", uri=True)
    except sqlite3.Error as error:
        raise DatasetError(f"cannot open the DCT database {database}: {error}") from None


class DctSource:
    """Tasks of the DCT download, sampled exactly as the release samples them."""

    kind = "dct"

    def __init__(self, root: Path, tasks: list[TaskInfo]) -> None:
        self.root = root
        self.tasks = tasks
        self.database = root / DATABASE
        if not self.database.is_file():
            raise DatasetError(f"DCT database not found: expected {self.database}")
        self._query(self._check_tables)

    def sample(self, task: TaskInfo) -> TaskSample:
        """Rebuild the task's train and validation samples from the database."""
        return self._query(lambda connection: self._sample(connection, task))

    def _query(self, work: Callable[[sqlite3.Connection], Result]) -> Result:
        """Run ``work(connection)``, turning database failures into one-line errors."""
        try:
            with closing(connect_read_only(self.database)) as connection:
                return work(connection)
        except sqlite3.Error as error:
            raise DatasetError(f"cannot read the DCT database {self.database}: {error}") from None

    def _check_tables(self, connection: sqlite3.Connection) -> None:
        found = {name for (name,) in connection.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        missing = sorted({"datasets", "files"} - found)
        if missing:
            raise DatasetError(f"{self.database} is not a DCT database: no table {', '.join(missing)}")

    def _sample(self, connection: sqlite3.Connection, task: TaskInfo) -> TaskSample:
        folder = f"{IMAGES}/{self._dataset_name(connection, task)}"
        train_groups = self._groups(connection, task, TRAIN_SET)
        require_classes(f"task {task.task_id} ({task.name})", [str(class_id) for class_id in train_groups])
        label_map = first_appearance_labels(train_groups)
        num_classes = min(len(train_groups), MAX_CLASSES)
        val_groups = self._groups(connection, task, VAL_SET)
        self._check_val_classes(task, val_groups, label_map, num_classes)
        return TaskSample(
            task=task,
            classes=tuple(str(class_id) for class_id in list(label_map)[:num_classes]),
            train=_items(folder, sample_split(train_groups, label_map, TRAIN_AMOUNTS)),
            val=_items(folder, sample_split(val_groups, label_map, VAL_AMOUNTS)),
        )

    def _dataset_name(self, connection: sqlite3.Connection, task: TaskInfo) -> str:
        found = connection.execute("SELECT dataset_name FROM datasets WHERE dataset_id=?", (task.task_id,)).fetchone()
        if found is None:
            raise DatasetError(f"task {task.task_id} ({task.name}) is not in the datasets table of {self.database}")
        if found[0] != task.name:  # the id selects the rows and the database's name the folder, as in the release
            warn(f"task {task.task_id} is named {task.name!r} in the stat file but {found[0]!r} in {self.database}; "
                 f"using the database's images of {found[0]!r}")
        return found[0]

    def _groups(self, connection: sqlite3.Connection, task: TaskInfo, split_set: int) -> dict[ClassId, list[Row]]:
        rows = connection.execute(ROWS_QUERY, (task.task_id, split_set)).fetchall()
        if not rows:
            split = "train" if split_set == TRAIN_SET else "validation"
            raise DatasetError(f"task {task.task_id} ({task.name}) has no {split} rows in {self.database}")
        return group_by_class(rows)

    @staticmethod
    def _check_val_classes(task: TaskInfo, val_groups: Mapping[ClassId, list[Row]],
                           label_map: Mapping[ClassId, int], num_classes: int) -> None:
        """Every validation class the sampling uses needs a label the task's head was trained on."""
        if is_capped(val_groups):
            return  # the cap skips every class outside the train label map's first keys
        untrained = [class_id for class_id in val_groups if label_map.get(class_id, num_classes) >= num_classes]
        if untrained:
            shown = ", ".join(str(class_id) for class_id in untrained[:SHOWN_CLASSES])
            raise DatasetError(f"task {task.task_id} ({task.name}): {len(untrained)} validation class(es) "
                               f"absent from the train split's {num_classes} classes: {shown}")


def _items(folder: str, picked: list[tuple[Row, int]]) -> tuple[Item, ...]:
    """Image paths as the release builds them: plain concatenation (`path` carries its own slashes)."""
    return tuple((f"{folder}{path}{filename}", label) for (_hash, path, filename, _class_id), label in picked)
