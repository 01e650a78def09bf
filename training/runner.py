"""The sequence of tasks: skip the finished, resume the interrupted, train the rest, one log file per task."""
import contextlib
import logging
from pathlib import Path

import torch

from dataset.atomic import atomic_path
from dataset.task import TaskSample
from inference.mapper import task_anchor
from training import distributed
from training.checkpoints import load_checkpoint, require_same_config, run_config
from training.context import Context
from training.results import read_results, record_result, record_results, write_results
from training.task import train_task

log = logging.getLogger("clr")


def finished_weights(ctx: Context, sample: TaskSample) -> dict | None:
    """The saved weights of a task this method already finished, or None if it still has to run. The weights
    file is the record; one made with other settings or data is never silently replaced."""
    path = ctx.weight_path(sample.task)
    if not path.exists():
        return None
    saved = load_checkpoint(path)
    require_same_config(path, saved["config"], run_config(ctx, sample))
    return saved


def forget_tasks(ctx: Context, samples: list[TaskSample]) -> None:
    """--fresh: remove the selected tasks' rows, weights, resume points and logs for this method."""
    rows = read_results(ctx.csv_path)
    for sample in samples:
        rows.pop(sample.task.task_id, None)
        for path in (ctx.weight_path(sample.task), ctx.resume_path(sample.task), ctx.log_path(sample.task)):
            path.unlink(missing_ok=True)
    if ctx.csv_path.exists():
        write_results(ctx.csv_path, rows)


@contextlib.contextmanager
def task_log(path: Path):
    """Send the log to the task's own file as well as the console while the task runs."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(path)
    handler.setFormatter(logging.Formatter("%(asctime)s %(message)s", "%Y-%m-%d %H:%M:%S"))
    log.addHandler(handler)
    try:
        yield
    finally:
        log.removeHandler(handler)
        handler.close()


def learn_task(ctx: Context, sample: TaskSample, number: int, total: int) -> None:
    """Learn one task unless its weights exist. A plain run adds the task's row to <method>.csv at once; under
    torchrun that file is the leader's alone, written when every process is done."""
    task, own_csv = sample.task, not distributed.is_torchrun()
    saved = finished_weights(ctx, sample)
    if saved is not None:
        log.info("[%d/%d] %s: already done (%s), skipping", number, total, task.name, ctx.weight_path(task))
        if own_csv and task.task_id not in read_results(ctx.csv_path):  # finished into another --result folder
            record_result(ctx.csv_path, task.task_id, task.name, saved["best_acc"])
        return
    log.info("[%d/%d] %s (id %d): %d classes", number, total, task.name, task.task_id, sample.num_classes)
    with task_log(ctx.log_path(sample.task)):
        if distributed.is_torchrun():
            log.info("learnt by %s", distributed.describe())
        saved = train_task(ctx, sample)
    with atomic_path(ctx.weight_path(sample.task)) as tmp:
        torch.save(saved, tmp)
    task_anchor(ctx, task, saved["config"])  # the task mapper's anchor, while the task's images are at hand
    if own_csv:
        record_result(ctx.csv_path, task.task_id, task.name, saved["best_acc"])
    ctx.resume_path(sample.task).unlink(missing_ok=True)


def record_finished(ctx: Context, samples: list[TaskSample]) -> None:
    """Write the rows of every selected task that has weights into <method>.csv, once, from the weights files."""
    finished = [(sample.task, finished_weights(ctx, sample)) for sample in samples]
    record_results(ctx.csv_path, [(task.task_id, task.name, saved["best_acc"])
                                  for task, saved in finished if saved is not None])


def learn_tasks(ctx: Context, samples: list[TaskSample]) -> None:
    """Learn the tasks, skipping those already done and resuming one that was interrupted. A plain run learns them
    in order. Under torchrun each process learns the tasks it claims, largest first; this returns when every
    process is done, after the leader has written <method>.csv from the weights files, which are the record."""
    costs = [len(sample.train) + len(sample.val) for sample in samples]
    for index in distributed.my_tasks(costs):
        learn_task(ctx, samples[index], index + 1, len(samples))
    if distributed.is_torchrun():
        distributed.barrier()
        if distributed.is_leader():
            record_finished(ctx, samples)
