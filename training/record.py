"""The record of a finished task (its weights file), and how a task just learnt becomes one."""
from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path

import torch

from common.errors import RunError
from common.files import save_torch
from dataset.task import TaskSample
from network import state_bytes
from training.checkpoints import Progress
from training.saved import read_saved


@dataclass
class TaskRecord:
    """What a finished task's weights file holds. Saved as a plain dict of plain data and tensors, so it loads
    with ``weights_only=True``; the file is the record that every table, check and prediction reads."""

    config: dict  # the settings it was trained with (see training.context.Context.task_config)
    task_id: int
    task_name: str
    label_map: dict[str, int]  # class key -> label
    state: dict[str, torch.Tensor]  # the task's own tensors (for a shared-backbone method: its head)
    best_correct: int  # correct validation images at the best epoch (shared backbone: just after learning it)
    best_acc: float
    best_epoch: int = 0
    epochs_run: int = 0
    train_images: int | None = None
    val_images: int | None = None
    trainable_params: int | None = None
    percent_of_backbone: float | None = None  # None where an older file does not say
    stored_bytes: int | None = None  # what the task keeps of its own (network.state_bytes; None: an older file)
    history: list[dict] = field(default_factory=list)  # per epoch: epoch, loss, train_acc, val_acc
    shared_backbone: bool = False  # learnt on a backbone that later tasks moved on
    preprocess: dict | None = None  # the input normalisation it was trained with (network.InputConfig; None: older)
    # the task after which ``state`` was written: its own, or a later one where the method trains earlier heads (LwF,
    # ER); None: a file from before 2026-12-04, written after its own task
    state_after: str | None = None

    @property
    def num_classes(self) -> int:
        return self.config["num_classes"]

    def save(self, path: Path) -> None:
        save_torch({f.name: getattr(self, f.name) for f in fields(self)}, path)

    @classmethod
    def load(cls, path: Path) -> "TaskRecord":
        saved = read_saved(path)
        names = {f.name for f in fields(cls)}
        required = {f.name for f in fields(cls) if f.default is MISSING and f.default_factory is MISSING}
        if not isinstance(saved, dict) or not required <= saved.keys():
            raise RunError(f"{path} is not a task's weights file of this project; delete it or pass --fresh")
        return cls(**{key: value for key, value in saved.items() if key in names})


def task_record(sample: TaskSample, config: dict, preprocess: dict, state: dict[str, torch.Tensor],
                progress: Progress, correct: int, trainable: int, backbone_parameters: int, extra_bytes: int = 0,
                shared_backbone: bool = False) -> TaskRecord:
    """The record of a task just learnt, as both sequence drivers make it: ``correct`` is its validation count as
    recorded (the best epoch's; for a shared backbone, just after the task), ``trainable`` the parameter elements it
    keeps as its own, ``extra_bytes`` what it stores outside ``state`` (ER's images)."""
    task = sample.task
    return TaskRecord(config=config, task_id=task.task_id, task_name=task.name, label_map=sample.label_map,
                      state=state, best_correct=correct, best_acc=correct / len(sample.val),
                      best_epoch=progress.best_epoch, epochs_run=progress.epoch, train_images=len(sample.train),
                      val_images=len(sample.val), trainable_params=trainable,
                      percent_of_backbone=100 * trainable / backbone_parameters,
                      stored_bytes=state_bytes(state) + extra_bytes, history=progress.history,
                      shared_backbone=shared_backbone, preprocess=preprocess, state_after=task.name)
