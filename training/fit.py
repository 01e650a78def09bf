"""The one epoch loop that every method trains a task through: the scheduler, best-state tracking, early stopping,
the history, the epoch log line and metrics record, the stop on a non-finite loss or weight, and the per-epoch
resume point."""
import logging
import math
import time
from pathlib import Path

import torch

from common.errors import RunError
from dataset.loader import DeviceBatches
from dataset.task import TaskSample
from network import task_state
from training import distributed
from training.checkpoints import MethodHooks, Progress, restore_resume_point, save_resume_point
from training.context import Context
from training.loop import (BatchLoss, NonFiniteLoss, build_optimizer, evaluate, train_one_epoch,
                           trained_parameters)
from training.metrics import read_epochs, write_epochs

log = logging.getLogger("clr")


def fit(ctx: Context, sample: TaskSample, model: torch.nn.Module, train: DeviceBatches, val: DeviceBatches,
        config: dict, batch_loss: BatchLoss | None = None, *, resume: Path | None = None,
        metrics: Path | None = None, hooks: MethodHooks | None = None) -> Progress:
    """Train ``model``'s trainable tensors on one task with the run's recipe, continuing from the task's resume
    point if there is one, and return where it ended: the best epoch's state, the history. ``config`` is what
    the resume point records and must match; ``batch_loss`` is a method's own loss (default: cross-entropy);
    ``resume`` and ``metrics`` are the resume point's and the metrics file's paths (default: the task's; a second
    phase of a task needs its own); ``hooks`` a method's per-step call and mid-task state."""
    recipe, runtime, task = ctx.recipe, ctx.runtime, sample.task
    optimizer = build_optimizer(model, recipe.lr, runtime)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=recipe.lr_step, gamma=0.1)
    stepped = torch.compile(model) if runtime.compile else model
    resume, metrics = resume or ctx.resume_path(task), metrics or ctx.metrics_path(task)
    if resume.exists():
        progress = restore_resume_point(resume, config, model, optimizer, scheduler, train, hooks)
        # an epoch's record is written before its resume point, so a kill between them leaves one record too many
        epochs = [epoch for epoch in read_epochs(metrics) if epoch["epoch"] <= progress.epoch]
        log.info("resuming %s after epoch %d (best %.2f%% at epoch %d)", task.name, progress.epoch,
                 100 * progress.best_correct / val.num_images, progress.best_epoch)
    else:
        progress, epochs = Progress(), []
        log.info("settings: %s", " ".join(f"{key}={value}" for key, value in sorted(config.items())
                                          if key not in ("tasks", "manifests_sha256")))
        log.info("runtime: device %s, %s, eval batch %d, StepLR step %d%s", runtime.device, runtime.precision,
                 runtime.eval_batch_size, recipe.lr_step, ", compiled" if runtime.compile else "")
    write_epochs(metrics, epochs)

    while progress.epoch < recipe.epochs and progress.epoch - progress.best_epoch <= recipe.patience:
        progress.epoch += 1
        lr = optimizer.param_groups[0]["lr"]  # what this epoch trains with; the scheduler steps after it
        if runtime.on_cuda:
            torch.cuda.reset_peak_memory_stats(runtime.device)
        started = time.perf_counter()
        try:
            loss, train_acc = train_one_epoch(stepped, optimizer, train, runtime, recipe.norm_penalty,
                                              f"{task.name} {progress.epoch}/{recipe.epochs}", batch_loss,
                                              after_step=hooks.after_step if hooks else None)
        except NonFiniteLoss as error:
            raise RunError(stopped_message(sample, str(error), progress.epoch, resume)) from None
        train_seconds = time.perf_counter() - started  # the epoch's mean loss was read from the device: it is done
        broken = broken_training(loss, model)
        if broken:
            raise RunError(stopped_message(sample, broken, progress.epoch, resume))
        scheduler.step()
        correct = evaluate(model, val, runtime)  # uncompiled: what the report re-evaluates
        if correct > progress.best_correct:
            progress.best_correct, progress.best_epoch = correct, progress.epoch
            progress.best_state = task_state(model)
            if hooks is not None:
                progress.best_method_state = hooks.save()
        val_acc = correct / val.num_images
        progress.history.append({"epoch": progress.epoch, "loss": loss, "train_acc": train_acc, "val_acc": val_acc})
        seconds = time.perf_counter() - started
        log.info("epoch %d/%d: train loss %.4f, train acc %.4f, val acc %.4f, best %.4f at epoch %d (%.1fs)",
                 progress.epoch, recipe.epochs, loss, train_acc, val_acc,
                 progress.best_correct / val.num_images, progress.best_epoch, seconds)
        epochs.append({"epoch": progress.epoch, "loss": loss, "train_acc": train_acc, "val_acc": val_acc, "lr": lr,
                       "images_per_s": train.num_images / train_seconds,
                       "peak_gpu_mib": torch.cuda.max_memory_allocated(runtime.device) / 2**20
                       if runtime.on_cuda else None,
                       "wall_s": seconds, "best_epoch": progress.best_epoch, "process": distributed.rank(),
                       "world_size": distributed.world_size()})
        write_epochs(metrics, epochs)
        save_resume_point(resume, config, model, optimizer, scheduler, train, progress, hooks)
    if progress.epoch < recipe.epochs:
        log.info("early stop after epoch %d: no new best for %d epochs", progress.epoch,
                 progress.epoch - progress.best_epoch)
    log.info("best epoch %d: val acc %.4f", progress.best_epoch, progress.best_correct / val.num_images)
    peaks = [epoch["peak_gpu_mib"] for epoch in epochs if epoch["peak_gpu_mib"] is not None]
    if runtime.on_cuda and peaks:
        log.info("peak GPU memory %d MiB", max(peaks))
    return progress


def broken_training(loss: float, model: torch.nn.Module) -> str | None:
    """What went non-finite in an epoch (its mean loss, or a trained tensor), or None: one host sync an epoch."""
    if not math.isfinite(loss):
        return f"the training loss became {loss}"
    if not bool(torch.stack([p.isfinite().all() for p in trained_parameters(model)]).all()):
        return "a trained weight became non-finite"
    return None


def stopped_message(sample: TaskSample, what: str, epoch: int, resume: Path) -> str:
    """Why a task stopped with a non-finite loss or weight: what is kept, what is not, and what to try."""
    kept = (f"its resume point after epoch {epoch - 1} is kept in {resume}" if epoch > 1
            else "it had no resume point yet")
    return (f"task {sample.task.name}: {what} in epoch {epoch}, so the task stopped and saved no weights; {kept}. "
            "Rerun to retry, or try --precision fp32 or a lower --lr (with --fresh or another --weight folder)")
