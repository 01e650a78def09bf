"""The sequence of tasks for a shared-backbone method: learn each task with the release's recipe, evaluate every
task learnt so far, and save after each task, in one file, everything the next task needs."""
import logging
import time

import torch

from continual.learner import Learner, TaskData, task_data
from continual.matrix import summary, write_matrix
from continual.method import Method
from dataset.atomic import atomic_path
from dataset.task import TaskSample
from network import load_task_state, task_state
from training.checkpoints import (Progress, load_checkpoint, require_same_config, restore_resume_point, run_config,
                                  save_resume_point)
from training.context import Context
from training.loop import build_optimizer, evaluate, train_one_epoch
from training.results import write_results
from training.runner import forget_tasks, task_log

log = logging.getLogger("clr")


def after_task_path(ctx: Context):
    """The one file that carries the sequence from task to task (one backbone, for the last finished task)."""
    return ctx.args.weight / f"{ctx.args.method}_after_task.pt"


def matrix_path(ctx: Context):
    return ctx.args.result / f"{ctx.args.method}_matrix.csv"


def sequence_config(ctx: Context, samples: list[TaskSample], method: Method) -> dict:
    """What the sequence's files depend on: the recipe, the method's options, the tasks in order and their data."""
    return {**{k: v for k, v in run_config(ctx, samples[0]).items() if k not in ("num_classes", "manifest_sha256")},
            **method.options(), "tasks": [sample.task.name for sample in samples],
            "manifests_sha256": [run_config(ctx, sample)["manifest_sha256"] for sample in samples]}


def forget_sequence(ctx: Context, samples: list[TaskSample]) -> None:
    """--fresh: the selected tasks' files, and the sequence's own state and matrix."""
    forget_tasks(ctx, samples)
    after_task_path(ctx).unlink(missing_ok=True)
    matrix_path(ctx).unlink(missing_ok=True)


def learn_sequence(ctx: Context, samples: list[TaskSample], method: Method) -> str:
    """Learn the tasks in order, continuing after the last finished task; returns the matrix summary."""
    config = sequence_config(ctx, samples, method)
    learner, finished = Learner(ctx), {"records": [], "correct": []}
    if after_task_path(ctx).exists():
        finished = restore_sequence(ctx, learner, method, config)
        write_outputs(ctx, samples, finished)  # the files that follow from it, in case a crash came between
    for position, sample in enumerate(samples):
        if position < len(finished["records"]):
            log.info("[%d/%d] %s: already done (%s), skipping", position + 1, len(samples), sample.task.name,
                     after_task_path(ctx))
            continue
        log.info("[%d/%d] %s (id %d): %d classes", position + 1, len(samples), sample.task.name,
                 sample.task.task_id, sample.num_classes)
        torch.manual_seed(ctx.args.seed + sample.task.order)
        learner.add_head(sample.num_classes)
        data = task_data(ctx, sample, position)
        task_config = {**config, **run_config(ctx, sample)}
        with task_log(ctx.log_path(sample.task)):
            method.before_task(learner, data)
            record = learn_task(ctx, learner, method, data, task_config)
            method.after_task(learner, data)
            row = learner.evaluate_learnt(samples)
            log.info("after %s: accuracy %s", sample.task.name,
                     ", ".join(f"{s.task.name} {c / len(s.val):.4f}" for s, c in zip(samples, row)))
        finished["records"].append(record | {"state": learner.head_state(position)})
        finished["correct"].append(row)
        save_sequence(ctx, learner, method, config, finished)
        write_outputs(ctx, samples, finished)
        ctx.resume_path(sample.task).unlink(missing_ok=True)
    return summary(ctx.args.method, samples, accuracy_matrix(samples, finished))


def learn_task(ctx: Context, learner: Learner, method: Method, data: TaskData, config: dict) -> dict:
    """The release's recipe on the shared model; leaves the model at its best epoch and returns the task's
    record (its weights file's keys, bar the head and the accuracies the matrix gives)."""
    args, sample, model = ctx.args, data.sample, learner.model
    optimizer = build_optimizer(ctx, model)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=max(1, args.epochs // 3), gamma=0.1)
    progress = Progress()
    if ctx.resume_path(sample.task).exists():
        progress = restore_resume_point(ctx, sample, model, optimizer, scheduler, data.train, config)
        log.info("resuming %s after epoch %d", sample.task.name, progress.epoch)
    else:
        log.info("hyper-parameters: %s", " ".join(f"{k}={v}" for k, v in sorted(config.items())
                                                  if k not in ("tasks", "manifests_sha256")))

    def batch_loss(images: torch.Tensor, index: torch.Tensor):
        labels = data.labels[index]
        return *method.batch_loss(learner, data, images, labels, index), labels

    while progress.epoch < args.epochs and progress.epoch - progress.best_epoch <= args.patience:
        progress.epoch += 1
        started = time.perf_counter()
        loss, train_acc = train_one_epoch(model, optimizer, data.train, ctx,
                                          f"{sample.task.name} {progress.epoch}/{args.epochs}", batch_loss)
        scheduler.step()
        correct = evaluate(model, data.val, ctx)
        if correct > progress.best_correct:
            progress.best_correct, progress.best_epoch, progress.best_state = correct, progress.epoch, task_state(model)
        val_acc = correct / data.val.num_images
        progress.history.append({"epoch": progress.epoch, "loss": loss, "train_acc": train_acc, "val_acc": val_acc})
        log.info("epoch %d/%d: train loss %.4f, train acc %.4f, val acc %.4f, best at epoch %d (%.1fs)",
                 progress.epoch, args.epochs, loss, train_acc, val_acc, progress.best_epoch,
                 time.perf_counter() - started)
        save_resume_point(ctx, sample, model, optimizer, scheduler, data.train, progress, config)
    load_task_state(model, progress.best_state)  # backbone and head as they were at the best epoch
    head = sum(p.numel() for p in model.fc.parameters())
    return {"config": config, "task_id": sample.task.task_id, "task_name": sample.task.name,
            "label_map": {key: label for label, key in enumerate(sample.classes)}, "shared_backbone": True,
            "best_epoch": progress.best_epoch, "epochs_run": progress.epoch, "train_images": len(sample.train),
            "val_images": len(sample.val), "trainable_params": head,
            "percent_of_backbone": 100 * head / model.backbone_parameters, "history": progress.history}


def save_sequence(ctx: Context, learner: Learner, method: Method, config: dict, finished: dict) -> None:
    """Everything the next task needs, atomically in one file, so a crash never leaves a mixed state."""
    state = {"config": config, "backbone": learner.backbone_state(), "method": method.state_dict(), **finished}
    with atomic_path(after_task_path(ctx)) as tmp:
        torch.save(state, tmp)


def restore_sequence(ctx: Context, learner: Learner, method: Method, config: dict) -> dict:
    path = after_task_path(ctx)
    saved = load_checkpoint(path)
    require_same_config(path, saved["config"], config)
    learner.restore(saved["backbone"], [record["state"] for record in saved["records"]])
    method.load_state_dict(saved["method"])
    return {"records": saved["records"], "correct": saved["correct"]}


def accuracy_matrix(samples: list[TaskSample], finished: dict) -> list[list[float]]:
    return [[correct / len(sample.val) for correct, sample in zip(row, samples)] for row in finished["correct"]]


def write_outputs(ctx: Context, samples: list[TaskSample], finished: dict) -> None:
    """The files that follow from the sequence's state: each finished task's weights file (its head, and its
    accuracy just after it was learnt), <method>.csv (the accuracy after the last task) and the matrix."""
    matrix = accuracy_matrix(samples, finished)
    for position, record in enumerate(finished["records"]):
        correct = finished["correct"][position][position]
        with atomic_path(ctx.weight_path(samples[position].task)) as tmp:
            torch.save(record | {"best_correct": correct, "best_acc": matrix[position][position]}, tmp)
    write_results(ctx.csv_path, {sample.task.task_id: {"task_id": sample.task.task_id, "task_name": sample.task.name,
                                                       "best_acc": accuracy}
                                 for sample, accuracy in zip(samples, matrix[-1])})
    write_matrix(matrix_path(ctx), samples, matrix)
