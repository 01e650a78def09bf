"""The isolated methods' task sequence (CLR and the release's other methods): every task trains its own state on
a fresh copy of the frozen backbone, so tasks never interact. Finished tasks are skipped, an interrupted one
resumes, and each task's log goes to its own file."""
import contextlib
import logging
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import torch

from common.errors import ClrError, Terminated, WriteError, stop_line
from dataset.task import TaskSample
from network import TaskModel, load_task_state, parameter_cost, stored_state
from training import distributed
from training.context import Context
from training.fit import fit
from training.loop import build_task_model, evaluate
from training.record import TaskRecord, task_record
from training.results import read_results, record_result, record_results, write_results
from training.saved import recorded_options, recorded_policy, require_same_settings

log = logging.getLogger("clr")

TaskDone = Callable[[TaskSample, TaskRecord], None]
"""Called after a task's record is saved, while its images are at hand (main.py fits the task mapper's anchor)."""


def train_isolated_task(ctx: Context, sample: TaskSample) -> TaskRecord:
    """Learn one task with the run's recipe on a fresh copy of the backbone; return its record."""
    task, recipe = sample.task, ctx.recipe
    seed = recipe.task_seed(task.order)
    torch.manual_seed(seed)
    tensors = ctx.tensors(sample)
    train = ctx.batches(tensors.train_images, tensors.train_labels, recipe.batch_size, shuffle=True, seed=seed,
                        min_last_batch=ctx.min_last_train_batch)
    val = ctx.batches(tensors.val_images, tensors.val_labels, ctx.runtime.eval_batch_size, shuffle=False)
    model = build_task_model(ctx.backbone, ctx.method, sample.num_classes, ctx.runtime, ctx.options, ctx.policy)
    cost = parameter_cost(model)
    log.info("label map (class -> label): %s", sample.label_map)
    log.info("task-specific parameters: %d (%.3f%% of the backbone's %d), head %d",
             cost.trainable, cost.percent, cost.backbone, cost.head)
    log.info("images: %d train, %d val; %d classes", len(sample.train), len(sample.val), sample.num_classes)
    config = ctx.task_config(sample)
    progress = fit(ctx, sample, model, train, val, config)
    load_task_state(model, progress.best_state)
    state = stored_state(model)  # Piggyback's and SupSup's masks at one bit per weight, not their scores
    return task_record(sample, config, ctx.input.as_record(), state, progress, progress.best_correct, cost.trainable,
                       cost.backbone)


def finished_record(ctx: Context, sample: TaskSample) -> TaskRecord | None:
    """The record of a task this method already finished, or None if it still has to run. A record made with
    other settings or data is never silently replaced."""
    path = ctx.weight_path(sample.task)
    if not path.exists():
        return None
    record = TaskRecord.load(path)
    require_same_settings(path, record.config, ctx.task_config(sample), "done")
    return record


def forget_tasks(ctx: Context, samples: list[TaskSample]) -> None:
    """--fresh: remove the selected tasks' rows, weights, resume points, logs and metrics for this method."""
    rows = read_results(ctx.csv_path)
    for sample in samples:
        rows.pop(sample.task.task_id, None)
        for path in (ctx.weight_path(sample.task), ctx.resume_path(sample.task), ctx.log_path(sample.task),
                     ctx.metrics_path(sample.task)):
            path.unlink(missing_ok=True)
    if ctx.csv_path.exists():
        write_results(ctx.csv_path, rows)


class TaskLogFile(logging.FileHandler):
    """The task's own log file. A write that fails (a full disk) stops the run with one line, rather than the
    logging module's traceback on stderr and a log that silently misses lines."""

    def handleError(self, record: logging.LogRecord) -> None:
        error = sys.exc_info()[1]
        if isinstance(error, OSError):
            raise WriteError(self.baseFilename, error) from None
        super().handleError(record)


@contextlib.contextmanager
def task_log(path: Path) -> Iterator[None]:
    """Send the log to the task's own file as well as the console while the task runs. A run that stops inside
    the task leaves the reason in the file too (the console gets it from main.py)."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        handler = TaskLogFile(path)
    except OSError as error:
        raise WriteError(path, error) from None
    handler.setFormatter(logging.Formatter("%(asctime)s %(message)s", "%Y-%m-%d %H:%M:%S"))
    log.addHandler(handler)
    try:
        yield
    except (ClrError, KeyboardInterrupt, Terminated) as error:
        if not isinstance(error, WriteError):
            handler.handle(log.makeRecord(log.name, logging.ERROR, __file__, 0, stop_line(error), None, None))
        raise
    finally:
        log.removeHandler(handler)
        handler.close()


def learn_isolated_task(ctx: Context, sample: TaskSample, number: int, total: int, task_done: TaskDone) -> None:
    """Learn one task unless its record exists. A plain run adds the task's row to <method>.csv at once; under
    torchrun that file is the leader's alone, written when every process is done."""
    task, own_csv = sample.task, not distributed.is_torchrun()
    record = finished_record(ctx, sample)
    if record is not None:
        log.info("[%d/%d] %s: already done (%s), skipping", number, total, task.name, ctx.weight_path(task))
        if own_csv and task.task_id not in read_results(ctx.csv_path):  # finished into another --result folder
            record_result(ctx.csv_path, task.task_id, task.name, record.best_acc)
        return
    log.info("[%d/%d] %s (id %d): %d classes", number, total, task.name, task.task_id, sample.num_classes)
    with task_log(ctx.log_path(sample.task)):
        if distributed.is_torchrun():
            log.info("learnt by %s", distributed.describe())
        record = train_isolated_task(ctx, sample)
    record.save(ctx.weight_path(sample.task))
    task_done(sample, record)
    if own_csv:
        record_result(ctx.csv_path, task.task_id, task.name, record.best_acc)
    ctx.resume_path(sample.task).unlink(missing_ok=True)


def task_model(ctx: Context, record: TaskRecord) -> TaskModel:
    """A saved task's model: a fresh copy of the backbone, built with the recorded method, method options, norm
    policy and CLR placement, with the recorded task state loaded. --predict classifies with it, the report
    re-evaluates it."""
    model = build_task_model(ctx.backbone, record.config["method"], record.num_classes, ctx.runtime,
                             recorded_options(record.config), recorded_policy(record.config))
    load_task_state(model, record.state)
    return model


def verify_task(ctx: Context, sample: TaskSample, record: TaskRecord) -> int:
    """Re-load a task's saved state onto a freshly built backbone and count its correct validation images."""
    tensors = ctx.tensors(sample)
    batches = ctx.batches(tensors.val_images, tensors.val_labels, ctx.runtime.eval_batch_size, shuffle=False)
    return evaluate(task_model(ctx, record), batches, ctx.runtime)


def record_finished(ctx: Context, samples: list[TaskSample]) -> None:
    """Under torchrun, once every process is done: the leader writes the rows of every selected task that has a
    record into <method>.csv, once, from the records (a plain run wrote each row as its task finished)."""
    if not (distributed.is_torchrun() and distributed.is_leader()):
        return
    finished = [(sample.task, finished_record(ctx, sample)) for sample in samples]
    record_results(ctx.csv_path, [(task.task_id, task.name, record.best_acc)
                                  for task, record in finished if record is not None])
