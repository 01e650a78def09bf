"""The types every part of the data pipeline shares: a task and its sample, and the rule every task obeys."""
from collections.abc import Sequence
from dataclasses import dataclass

from common.errors import DatasetError

MIN_CLASSES = 2

Item = tuple[str, int]
"""One image: its path relative to the data root (e.g. ``original_images/scenes/...``) and its label."""


@dataclass(frozen=True)
class TaskInfo:
    """One task as a stat file lists it. Counts are ``None`` where nothing recorded them."""

    order: int  # 0-based run order (the stat file's ``oldid``)
    task_id: int  # the dataset id (the stat file's ``newid``)
    name: str
    class_num: int | None = None
    train_num: int | None = None
    val_num: int | None = None


@dataclass(frozen=True)
class TaskSample:
    """Exactly which images a task trains and validates on, and with which labels."""

    task: TaskInfo
    classes: tuple[str, ...]  # the class key (DCT class_id or folder name) of each label, in label order
    train: tuple[Item, ...]
    val: tuple[Item, ...]

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def label_map(self) -> dict[str, int]:
        """Class key -> label, as every record of the task stores it."""
        return {key: label for label, key in enumerate(self.classes)}

    @property
    def paths(self) -> list[str]:
        """Every image path, train then val: the order manifests, decoding and caching use."""
        return [path for path, _ in self.train + self.val]


def require_classes(task_label: str, classes: Sequence[str]) -> None:
    """Refuse a one-class task before training: its head could only learn to give every image that class."""
    if len(classes) < MIN_CLASSES:
        raise DatasetError(f"{task_label} has only {len(classes)} class ({', '.join(classes)}); "
                           f"a task needs at least {MIN_CLASSES} classes")
