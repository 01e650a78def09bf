"""Learning one task with the release's recipe: the epoch loop, best-state tracking and early stopping."""
import logging
import math
import time

import torch

from dataset.loader import DeviceBatches
from dataset.task import TaskSample
from network import parameter_cost, task_state
from training.checkpoints import Progress, restore_resume_point, run_config, save_resume_point
from training.context import Context, RunError
from training.loop import build_optimizer, build_task_model, evaluate, train_one_epoch

log = logging.getLogger("clr")


def broken_loss_message(ctx: Context, sample: TaskSample, loss: float, epoch: int) -> str:
    """Why a task stopped with a NaN or infinite loss: what is kept, what is not, and what to try."""
    kept = (f"its resume point after epoch {epoch - 1} is kept in {ctx.resume_path(sample.task)}" if epoch > 1
            else "it had no resume point yet")
    return (f"task {sample.task.name}: the training loss became {loss} in epoch {epoch}, so the task stopped and "
            f"saved no weights; {kept}. Rerun to retry, or try --precision fp32 or a lower --lr "
            "(with --fresh or another --weight folder)")


def train_task(ctx: Context, sample: TaskSample) -> dict:
    """Learn one task with the release's recipe and return what its weights file records."""
    args, task = ctx.args, sample.task
    seed = args.seed + task.order
    torch.manual_seed(seed)
    tensors = ctx.tensors(sample)
    train_batches = DeviceBatches(tensors.train_images, tensors.train_labels, args.batch_size, ctx.device,
                                  shuffle=True, seed=seed, min_last_batch=ctx.min_last_train_batch)
    val_batches = DeviceBatches(tensors.val_images, tensors.val_labels, ctx.eval_batch_size, ctx.device,
                                shuffle=False)
    model = build_task_model(ctx, sample.num_classes)
    optimizer = build_optimizer(ctx, model)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=max(1, args.epochs // 3), gamma=0.1)
    cost = parameter_cost(model)
    step = torch.compile(model) if args.compile else model

    progress = Progress()
    if ctx.resume_path(sample.task).exists():
        progress = restore_resume_point(ctx, sample, model, optimizer, scheduler, train_batches)
        log.info("resuming %s after epoch %d (best %.2f%% at epoch %d)", task.name, progress.epoch,
                 100 * progress.best_correct / val_batches.num_images, progress.best_epoch)
    else:
        log.info("hyper-parameters: %s", " ".join(f"{k}={v}" for k, v in sorted(vars(args).items())))
        log.info("resolved: device %s, %s, eval batch %d, StepLR step %d", ctx.device,
                 "bf16 autocast" if ctx.on_cuda and args.precision == "bf16" else "fp32", ctx.eval_batch_size,
                 scheduler.step_size)
        log.info("label map (class -> label): %s", {key: label for label, key in enumerate(sample.classes)})
        log.info("task-specific parameters: %d (%.3f%% of the backbone's %d), head %d",
                 cost.trainable, cost.percent, cost.backbone, cost.head)
        log.info("images: %d train, %d val; %d classes", len(sample.train), len(sample.val), sample.num_classes)

    while progress.epoch < args.epochs and progress.epoch - progress.best_epoch <= args.patience:
        progress.epoch += 1
        started = time.perf_counter()
        desc = f"{task.name} {progress.epoch}/{args.epochs}"
        loss, train_acc = train_one_epoch(step, optimizer, train_batches, ctx, desc)
        if not math.isfinite(loss):
            raise RunError(broken_loss_message(ctx, sample, loss, progress.epoch))
        scheduler.step()
        correct = evaluate(model, val_batches, ctx)  # uncompiled: what the report re-evaluates
        if correct > progress.best_correct:
            progress.best_correct, progress.best_epoch = correct, progress.epoch
            progress.best_state = task_state(model)
        val_acc = correct / val_batches.num_images
        progress.history.append({"epoch": progress.epoch, "loss": loss, "train_acc": train_acc, "val_acc": val_acc})
        log.info("epoch %d/%d: train loss %.4f, train acc %.4f, val acc %.4f, best %.4f at epoch %d (%.1fs)",
                 progress.epoch, args.epochs, loss, train_acc, val_acc,
                 progress.best_correct / val_batches.num_images, progress.best_epoch,
                 time.perf_counter() - started)
        save_resume_point(ctx, sample, model, optimizer, scheduler, train_batches, progress)
    if progress.epoch < args.epochs:
        log.info("early stop after epoch %d: no new best for %d epochs", progress.epoch,
                 progress.epoch - progress.best_epoch)
    best_acc = progress.best_correct / val_batches.num_images
    log.info("best epoch %d: val acc %.4f", progress.best_epoch, best_acc)
    return {
        "state": progress.best_state, "config": run_config(ctx, sample),
        "task_id": task.task_id, "task_name": task.name, "label_map": {k: i for i, k in enumerate(sample.classes)},
        "best_epoch": progress.best_epoch, "best_correct": progress.best_correct, "best_acc": best_acc,
        "epochs_run": progress.epoch, "train_images": len(sample.train), "val_images": len(sample.val),
        "trainable_params": cost.trainable, "percent_of_backbone": cost.percent, "history": progress.history,
    }


