"""A task's per-epoch resume point: everything needed to continue exactly where a killed run stopped."""
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch

from common.files import save_torch
from dataset.loader import DeviceBatches
from network import load_task_state, task_state
from training.saved import read_saved, require_same_settings


@dataclass
class Progress:
    """Where a task's training stands; saved after every epoch so a killed run resumes exactly."""

    epoch: int = 0
    best_correct: int = -1
    best_epoch: int = 0
    best_state: dict[str, torch.Tensor] | None = None
    history: list[dict] = field(default_factory=list)
    best_method_state: dict | None = None  # MethodHooks.save() at the best epoch (None: no hooks)


@dataclass(frozen=True)
class MethodHooks:
    """What a method adds to a task's fit loop besides its loss: a call after every optimizer step, and the state it
    builds while the task trains (SI's running path integral). ``save`` returns that state as CPU copies: the resume
    point keeps it, so a killed task resumes exactly, and it is taken again at each new best epoch, so the task can
    end with its best epoch's state. ``load`` puts it back, after the model's weights are restored."""

    after_step: Callable[[], None]
    save: Callable[[], dict]
    load: Callable[[dict], None]


def save_resume_point(path: Path, config: dict, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                      scheduler, batches: DeviceBatches, progress: Progress, hooks: MethodHooks | None = None) -> None:
    """The task's state after an epoch; ``config`` is what a resume must match. A method's mid-task state is added
    only where it has ``hooks``, so every other method's resume point stays as it was."""
    on_cuda = batches.device.type == "cuda"
    checkpoint = {
        "config": config,
        "state": task_state(model), "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
        "epoch": progress.epoch, "best_correct": progress.best_correct, "best_epoch": progress.best_epoch,
        "best_state": progress.best_state, "history": progress.history,
        "torch_rng": torch.get_rng_state(), "shuffle_rng": batches.generator.get_state(),
        "cuda_rng": torch.cuda.get_rng_state() if on_cuda else None,
    }
    if hooks is not None:
        checkpoint |= {"method_state": hooks.save(), "best_method_state": progress.best_method_state}
    save_torch(checkpoint, path)


def restore_resume_point(path: Path, config: dict, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                         scheduler, batches: DeviceBatches, hooks: MethodHooks | None = None) -> Progress:
    """Put the model, optimizer, scheduler and random states back as they were after the saved epoch."""
    checkpoint = read_saved(path)
    require_same_settings(path, checkpoint["config"], config, "resume")
    load_task_state(model, checkpoint["state"])
    optimizer.load_state_dict(checkpoint["optimizer"])
    scheduler.load_state_dict(checkpoint["scheduler"])
    torch.set_rng_state(checkpoint["torch_rng"])
    batches.generator.set_state(checkpoint["shuffle_rng"])
    if batches.device.type == "cuda" and checkpoint["cuda_rng"] is not None:
        torch.cuda.set_rng_state(checkpoint["cuda_rng"])
    if hooks is not None:
        hooks.load(checkpoint["method_state"])
    return Progress(checkpoint["epoch"], checkpoint["best_correct"], checkpoint["best_epoch"],
                    checkpoint["best_state"], checkpoint["history"], checkpoint.get("best_method_state"))
