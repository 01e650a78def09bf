"""The record of a finished task (its weights file), the settings it was trained with, and the one check of
whether a saved file can serve a purpose with the current settings."""
import hashlib
from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from common.errors import RunError
from common.files import save_torch
from dataset.sources import manifest_text
from dataset.task import TaskSample
from network import METHODS, LayerPolicy, method_spec, state_bytes

if TYPE_CHECKING:
    from training.checkpoints import Progress

DATA_KEYS = ("manifest_sha256", "manifests_sha256", "num_classes")  # what the data decide, not an option
# What must match for each use of a saved file. Resuming a task, or skipping it as done, needs every setting;
# using a finished task needs only what changes what it computes (and, where its own images are used, the data).
COMPUTES = ("method", "arch", "backbone", "image_size")
PIXELS = ("arch", "backbone", "image_size")
DATA = ("manifest_sha256",)
PURPOSES: dict[str, tuple[str, ...] | None] = {
    "resume": None, "done": None,  # None: every recorded setting
    "predict": COMPUTES, "agnostic": COMPUTES + DATA, "verify": PIXELS + DATA, "anchor": PIXELS + DATA,
}


def option_of(key: str) -> str:
    """The command-line option that sets a recorded setting."""
    return "--weights" if key == "backbone" else "--" + key.replace("_", "-")


def manifest_sha256(sample: TaskSample) -> str:
    """The fingerprint of exactly which images a task uses, with which labels."""
    return hashlib.sha256(manifest_text(sample).encode()).hexdigest()[:16]


def with_policy(config: dict) -> dict:
    """An isolated method's task config with its norm policy and CLR placement. A file written before they were
    recorded has the method's own: the only ones there were."""
    layers = method_spec(config["method"]).layers if config.get("method") in METHODS else None
    return config if layers is None else layers.policy().as_config() | config


def recorded_policy(config: dict) -> LayerPolicy:
    """The norm policy and CLR placement a task was trained with, to rebuild its model with."""
    recorded = with_policy(config)
    return LayerPolicy(**{key: recorded[key] for key in LayerPolicy().as_config()})


def differing_settings(saved: dict, current: dict, purpose: str) -> list[str]:
    """The settings of ``current`` that ``saved`` (a file's config) differs in, for ``purpose`` (a key of
    PURPOSES), as "--option saved (now value)", or "the data" for the images and labels."""
    saved = with_policy(saved)
    keys = [key for key in PURPOSES[purpose] or current if saved.get(key) != current[key]]
    described = [f"{option_of(key)} {saved.get(key)} (now {current[key]})" for key in keys if key not in DATA_KEYS]
    data = ["the data (its images or labels are not the ones trained on)"] if set(keys) & set(DATA_KEYS) else []
    return described + data


def require_same_settings(path: Path, saved: dict, current: dict, purpose: str) -> None:
    """Refuse a file made with other settings or data: it is never silently replaced or mixed with new work."""
    differing = differing_settings(saved, current, purpose)
    if differing:
        raise RunError(f"{path} was made with other settings or data: {', '.join(differing)}; "
                       "pass --fresh to replace it, or use another --weight folder")


def read_saved(path: Path) -> dict:
    """One of this project's .pt files (a record, a resume point, a sequence's state) as plain data."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises many types for a damaged file
        raise RunError(f"cannot read {path} ({type(error).__name__}); delete it or pass --fresh") from None


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
                progress: "Progress", correct: int, trainable: int, backbone_parameters: int, extra_bytes: int = 0,
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
