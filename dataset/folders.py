"""Your own tasks in the ImageFolder convention: ``DATA/<task>/train/<class>/<image>`` and ``.../val/...``.

Labels come from the sorted class folder names of ``train/``; every image is used (no sampling, no cap).

Names must be valid UTF-8. On Linux a name that is not (``café`` saved in Latin-1, say) reaches Python with
surrogate escapes, which UTF-8 text (manifests, cache keys, result CSVs, reports) cannot hold. Such a name is
refused as the task's folders are listed, before any training, in one line that shows its bad bytes: a file
is easily renamed, and every output then names exactly the files that were used. (The DCT layout takes its
names from its database, whose text sqlite refuses in one line unless it is UTF-8.)
"""
import os
from collections.abc import Iterable
from pathlib import Path

from common.errors import DatasetError
from dataset.task import Item, TaskInfo, TaskSample, require_classes

TRAIN, VAL = "train", "val"
IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp", ".gif"})
LAYOUT = "<task>/train/<class>/<image> and <task>/val/<class>/<image>"


def task_folder_names(root: Path) -> list[str]:
    """Sorted names of the visible folders under ``root`` that hold a ``train/`` folder."""
    return sorted(entry.name for entry in root.iterdir()
                  if not entry.name.startswith(".") and (entry / TRAIN).is_dir())


def discover_tasks(root: Path) -> list[TaskInfo]:
    """Tasks in sorted folder order when no stat file names them; nothing recorded their counts."""
    names = task_folder_names(root)
    require_utf8_names(root, names)
    return [TaskInfo(order=order, task_id=order + 1, name=name) for order, name in enumerate(names)]


def require_utf8_names(folder: Path, relative_paths: Iterable[str]) -> None:
    """Refuse the first path below ``folder`` that is not valid UTF-8, its undecodable bytes shown as \\xNN."""
    for relative in relative_paths:
        try:
            relative.encode("utf-8")
        except UnicodeEncodeError:
            shown = os.fsencode(folder / relative).decode("utf-8", "backslashreplace")
            raise DatasetError(f"{shown} is not a valid UTF-8 name (bytes shown as \\xNN): rename it, since "
                               "manifests and results store names as UTF-8 text") from None


def is_image_file(name: str) -> bool:
    """Images are recognised by extension (any case); hidden files are never images."""
    return not name.startswith(".") and Path(name).suffix.lower() in IMAGE_EXTENSIONS


def images_below(folder: Path) -> list[str]:
    """Image files at any depth below ``folder`` (as ImageFolder finds them), as sorted relative paths."""
    found = []
    for current, subfolders, files in os.walk(folder, followlinks=True):
        subfolders[:] = [name for name in subfolders if not name.startswith(".")]
        found += [Path(current, name).relative_to(folder).as_posix() for name in files if is_image_file(name)]
    return sorted(found)


def class_images(split_folder: Path) -> dict[str, list[str]]:
    """Each visible class folder of a split, in sorted name order, with its sorted image paths (UTF-8 names)."""
    if not split_folder.is_dir():
        return {}
    names = sorted(entry.name for entry in split_folder.iterdir() if entry.is_dir() and not entry.name.startswith("."))
    classes = {name: images_below(split_folder / name) for name in names}
    require_utf8_names(split_folder, names + [f"{name}/{image}" for name, images in classes.items()
                                              for image in images])
    return classes


class FolderSource:
    """Tasks laid out as ImageFolder trees, one folder per task."""

    kind = "folders"

    def __init__(self, root: Path, tasks: list[TaskInfo]) -> None:
        self.root = root
        self.tasks = tasks
        missing = [task.name for task in tasks if not (root / task.name / TRAIN).is_dir()]
        if missing:
            raise DatasetError(f"no train/ folder for task(s) {', '.join(missing)} under {root} (expected {LAYOUT})")

    def sample(self, task: TaskInfo) -> TaskSample:
        """Every image of the task, labelled by the sorted class names of its train split."""
        folder = self.root / task.name
        train, val = class_images(folder / TRAIN), class_images(folder / VAL)
        empty = [str(folder / split / name) for split, classes in ((TRAIN, train), (VAL, val))
                 for name, images in classes.items() if not images]
        if empty:
            raise DatasetError(f"task {task.name}: class folder(s) without images: {', '.join(empty)} "
                               "(add images or remove the folder)")
        for split, classes in ((TRAIN, train), (VAL, val)):
            if not classes:
                raise DatasetError(f"task {task.name} has no {split} images "
                                   f"(expected {folder / split / '<class>' / '<image>'})")
        require_classes(f"task {task.name}", list(train))
        label_map = {name: label for label, name in enumerate(train)}
        unknown = [name for name in val if name not in label_map]
        if unknown:
            raise DatasetError(f"task {task.name}: validation class(es) absent from train/: {', '.join(unknown)}")
        return TaskSample(task=task, classes=tuple(train), train=self._items(task, TRAIN, train, label_map),
                          val=self._items(task, VAL, val, label_map))

    @staticmethod
    def _items(task: TaskInfo, split: str, classes: dict[str, list[str]],
               label_map: dict[str, int]) -> tuple[Item, ...]:
        return tuple((f"{task.name}/{split}/{name}/{image}", label_map[name])
                     for name, images in classes.items() for image in images)
