"""A task's saved files: the settings they were made with, and the per-epoch resume point."""
import hashlib
from dataclasses import dataclass, field
from pathlib import Path

import torch

from dataset.atomic import atomic_path
from dataset.sources import manifest_text
from dataset.task import TaskSample
from network import load_task_state, task_state
from training.context import Context, RunError


@dataclass
class Progress:
    """Where a task's training stands; saved after every epoch so a killed run resumes exactly."""

    epoch: int = 0
    best_correct: int = -1
    best_epoch: int = 0
    best_state: dict[str, torch.Tensor] | None = None
    history: list[dict] = field(default_factory=list)


def run_config(ctx: Context, sample: TaskSample) -> dict:
    """What a saved task was trained with; a resumed or skipped task must match it."""
    a = ctx.args
    return {"method": a.method, "arch": a.arch, "backbone": ctx.backbone_id, "num_classes": sample.num_classes,
            "image_size": a.image_size, "epochs": a.epochs, "batch_size": a.batch_size, "lr": a.lr,
            "norm_penalty": a.norm_penalty, "patience": a.patience, "seed": a.seed,
            "manifest_sha256": hashlib.sha256(manifest_text(sample).encode()).hexdigest()[:16]}


def load_checkpoint(path: Path) -> dict:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises many types for a damaged file
        raise RunError(f"cannot read {path} ({type(error).__name__}); delete it or pass --fresh") from None


def require_same_config(path: Path, saved: dict, expected: dict) -> None:
    differing = [f"{key} {saved.get(key)!r} (now {value!r})" for key, value in expected.items()
                 if saved.get(key) != value]
    if differing:
        raise RunError(f"{path} was made with other settings or data: {', '.join(differing)}; "
                       "pass --fresh to replace it, or use another --weight folder")


def save_resume_point(ctx: Context, sample: TaskSample, model, optimizer, scheduler, batches, progress,
                      config: dict | None = None) -> None:
    """The task's state after an epoch; ``config`` (default: run_config) is what a resume must match."""
    checkpoint = {
        "config": config or run_config(ctx, sample),
        "state": task_state(model), "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
        "epoch": progress.epoch, "best_correct": progress.best_correct, "best_epoch": progress.best_epoch,
        "best_state": progress.best_state, "history": progress.history,
        "torch_rng": torch.get_rng_state(), "shuffle_rng": batches.generator.get_state(),
        "cuda_rng": torch.cuda.get_rng_state() if ctx.on_cuda else None,
    }
    with atomic_path(ctx.resume_path(sample.task)) as tmp:
        torch.save(checkpoint, tmp)


def restore_resume_point(ctx: Context, sample: TaskSample, model, optimizer, scheduler, batches,
                         config: dict | None = None) -> Progress:
    path = ctx.resume_path(sample.task)
    checkpoint = load_checkpoint(path)
    require_same_config(path, checkpoint["config"], config or run_config(ctx, sample))
    load_task_state(model, checkpoint["state"])
    optimizer.load_state_dict(checkpoint["optimizer"])
    scheduler.load_state_dict(checkpoint["scheduler"])
    torch.set_rng_state(checkpoint["torch_rng"])
    batches.generator.set_state(checkpoint["shuffle_rng"])
    if ctx.on_cuda and checkpoint["cuda_rng"] is not None:
        torch.cuda.set_rng_state(checkpoint["cuda_rng"])
    return Progress(checkpoint["epoch"], checkpoint["best_correct"], checkpoint["best_epoch"],
                    checkpoint["best_state"], checkpoint["history"])


