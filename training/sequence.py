"""The task sequence of a shared-backbone method: learn each task through the one fit loop, in the phases the method
declares (each with its own files, named here), evaluate every task learnt so far, and save after each task, in one
file, everything the next task needs."""
import dataclasses
import itertools
import logging
from pathlib import Path

import torch

from common.files import save_torch
from dataset.loader import DeviceBatches
from dataset.task import TaskInfo, TaskSample
from network import MultiHeadModel, load_task_state, method_spec, shared_bn_of
from training.checkpoints import Progress
from training.context import Context
from training.fit import fit
from training.isolated import forget_tasks, task_log
from training.loop import evaluate
from training.matrix import summary, write_matrix
from training.record import TaskRecord, task_record
from training.results import write_results
from training.saved import read_saved, require_same_settings
from training.shared_method import Method, Phase, TaskData

log = logging.getLogger("clr")

MAIN_PHASE = 1  # the number of a task's main phase; the others are numbered from 2 in the order they run


def sequence_config(ctx: Context, samples: list[TaskSample]) -> dict:
    """What the sequence's files depend on: the recipe, the method's options and its BN mode (in every task's
    config), the tasks in order and their data."""
    configs = [ctx.task_config(sample) for sample in samples]
    return {**{k: v for k, v in configs[0].items() if k not in ("num_classes", "manifest_sha256")},
            "shared_bn": ctx.shared_bn, "tasks": [sample.task.name for sample in samples],
            "manifests_sha256": [config["manifest_sha256"] for config in configs]}


def forget_sequence(ctx: Context, samples: list[TaskSample]) -> None:
    """--fresh: the selected tasks' files (their other phases' too), and the sequence's own state and matrix."""
    forget_tasks(ctx, samples)
    for sample in samples:
        for path in other_phase_files(ctx, sample.task):
            path.unlink()
    ctx.layout.after_task(ctx.method).unlink(missing_ok=True)
    ctx.layout.matrix_csv(ctx.method).unlink(missing_ok=True)


def phase_files(ctx: Context, task: TaskInfo, number: int) -> tuple[Path, Path]:
    """The resume point and metrics file of a task's phase ``number``: the one rule that names a phase's files. The
    main phase keeps the method's own names (the ones every other part of the run reads); phase N of the others
    takes <method>.phase<N> in place of the method's name, so LwF's warm-up (before its main phase) and PackNet's
    retraining (after it) are both <method>.phase2, as their files have always been named."""
    name = ctx.method if number == MAIN_PHASE else f"{ctx.method}.phase{number}"
    return ctx.layout.resume(task.name, name), ctx.layout.metrics(task.name, name)


def numbered(phases: list[Phase]) -> list[tuple[int, Phase]]:
    """Each of a task's phases with the number its files take (``phase_files``)."""
    main = [phase for phase in phases if phase.main]
    if len(main) != 1 or main[0].epochs is not None or main[0].lr is not None:
        raise ValueError(f"a task has one main phase, and it trains with the run's recipe: {phases}")
    others = itertools.count(MAIN_PHASE + 1)
    return [(MAIN_PHASE if phase.main else next(others), phase) for phase in phases]


def other_phase_files(ctx: Context, task: TaskInfo) -> list[Path]:
    """The files of a task's phases other than the main one that are on disk, found without the method's phases (which
    --fresh does not build): a phase writes its metrics file when it starts, and starts only once the phase numbered
    before it has finished, so the numbers on disk run from 2 without a gap."""
    found, number = [], MAIN_PHASE + 1
    while files := [path for path in phase_files(ctx, task, number) if path.exists()]:
        found, number = found + files, number + 1
    return found


def validation_batches(ctx: Context, sample: TaskSample) -> DeviceBatches:
    tensors = ctx.tensors(sample)
    return ctx.batches(tensors.val_images, tensors.val_labels, ctx.runtime.eval_batch_size, shuffle=False)


def task_data(ctx: Context, sample: TaskSample, position: int) -> TaskData:
    tensors = ctx.tensors(sample)
    indices = torch.arange(len(tensors.train_labels))
    train = ctx.batches(tensors.train_images, indices, ctx.recipe.batch_size, shuffle=True,
                        seed=ctx.recipe.task_seed(sample.task.order), min_last_batch=ctx.min_last_train_batch)
    val = ctx.batches(tensors.val_images, tensors.val_labels, ctx.runtime.eval_batch_size, shuffle=False)
    return TaskData(sample, position, tensors, tensors.train_labels.to(ctx.device), train, val)


def evaluate_learnt(ctx: Context, model: MultiHeadModel, method: Method, samples: list[TaskSample]) -> list[int]:
    """Correct validation images of every task learnt so far, each as that task computes (its own head): a matrix
    row."""
    current = model.current
    row = [evaluate_task(ctx, model, method, position, sample)
           for position, sample in enumerate(samples[:len(model.heads)])]
    method.use_task(model, current)
    return row


def evaluate_task(ctx: Context, model: MultiHeadModel, method: Method, position: int, sample: TaskSample) -> int:
    """Correct validation images of the task at ``position``, computed as that task computes (its head and the
    method's per-task state): one cell of a matrix row, and what the report's re-evaluation recomputes."""
    method.use_task(model, position)
    return evaluate(model, validation_batches(ctx, sample), ctx.runtime)


def learn_sequence(ctx: Context, samples: list[TaskSample], method: Method) -> str:
    """Learn the tasks in order, continuing after the last finished task; returns the matrix summary."""
    config = sequence_config(ctx, samples)
    fixed = " (PSP and PackNet keep BN per task by their definition)" if method_spec(ctx.method).fixed_bn else ""
    log.info("%s: --shared-bn %s%s", ctx.method, ctx.shared_bn, fixed)
    model = ctx.runtime.prepare(method.build_model())
    finished = {"records": [], "correct": []}
    if ctx.layout.after_task(ctx.method).exists():
        finished = restore_sequence(ctx, model, method, config)
        write_outputs(ctx, samples, finished)  # the files that follow from it, in case a crash came between
    for position, sample in enumerate(samples):
        if position < len(finished["records"]):
            log.info("[%d/%d] %s: already done (%s), skipping", position + 1, len(samples), sample.task.name,
                     ctx.layout.after_task(ctx.method))
            continue
        log.info("[%d/%d] %s (id %d): %d classes", position + 1, len(samples), sample.task.name,
                 sample.task.task_id, sample.num_classes)
        torch.manual_seed(ctx.recipe.task_seed(sample.task.order))
        model.add_head(sample.num_classes)
        data = task_data(ctx, sample, position)
        task_config = {**config, **ctx.task_config(sample)}
        phases = numbered(method.phases(data))
        with task_log(ctx.log_path(sample.task)):
            method.before_task(model, data)
            progress = learn_phases(ctx, model, method, data, phases, task_config)
            method.after_task(model, data)
            row = evaluate_learnt(ctx, model, method, samples)
            log.info("after %s: accuracy %s", sample.task.name,
                     ", ".join(f"{s.task.name} {c / len(s.val):.4f}" for s, c in zip(samples, row)))
        trained = method.task_parameters(model, position)
        state = method.task_state(model, position)
        if method.trains_earlier_heads():  # their heads trained too: each record holds its head as it is now
            for earlier, record in enumerate(finished["records"]):
                record.state, record.state_after = method.task_state(model, earlier), sample.task.name
        finished["records"].append(task_record(sample, task_config, ctx.input.as_record(), state, progress,
                                               row[position], trained,
                                               model.backbone_parameters, method.task_bytes(position),
                                               shared_backbone=True))
        finished["correct"].append(row)
        save_sequence(ctx, model, method, config, finished)
        write_outputs(ctx, samples, finished)
        for number, _ in phases:  # the task is saved: its phases' resume points have served
            resume, _ = phase_files(ctx, sample.task, number)
            resume.unlink(missing_ok=True)
    return "\n".join([summary(ctx.method, samples, accuracy_matrix(samples, finished)), *method.notes()])


def learn_phases(ctx: Context, model: MultiHeadModel, method: Method, data: TaskData,
                 phases: list[tuple[int, Phase]], config: dict) -> Progress:
    """A task's phases in order, each set up by its ``start``, trained through the fit loop with its own resume point
    and metrics (a phase a killed run had finished restores its best epoch from its resume point and trains no
    more), then its ``end``; returns the main phase's progress, which the task's record keeps. The main phase's
    settings are the task's (``config``, what its record holds); another phase's are the task's settings under the
    phase's recipe, with its name as ``"phase"``."""
    progress = None
    for number, phase in phases:
        if phase.start is not None:
            phase.start(model, data)
        if phase.main:
            progress = learn_phase(ctx, model, method, data, phase, number, config)
        else:
            phase_ctx = phase_context(ctx, phase)
            log.info("%s: the %s phase of %s", ctx.method, phase.name, data.sample.task.name)
            learn_phase(phase_ctx, model, method, data, phase, number,
                        {**phase_ctx.task_config(data.sample), "phase": phase.name})
        if phase.end is not None:
            phase.end(model, data)
    return progress


def phase_context(ctx: Context, phase: Phase) -> Context:
    """The run's context under a phase's recipe: its epochs and learning rate where it sets them."""
    changes = {key: value for key, value in (("epochs", phase.epochs), ("lr", phase.lr)) if value is not None}
    return dataclasses.replace(ctx, recipe=dataclasses.replace(ctx.recipe, **changes))


def learn_phase(ctx: Context, model: MultiHeadModel, method: Method, data: TaskData, phase: Phase, number: int,
                config: dict) -> Progress:
    """One phase through the fit loop on the shared model, with the phase's loss and the method's step hooks;
    leaves the model (and the hooks' state) at the phase's best epoch."""
    loss = phase.loss or method.batch_loss

    def batch_loss(images: torch.Tensor, index: torch.Tensor):
        labels = data.labels[index]
        return *loss(model, data, images, labels, index), labels

    hooks = method.task_hooks(model, data)
    resume, metrics = phase_files(ctx, data.sample.task, number)
    progress = fit(ctx, data.sample, model, data.train, data.val, config, batch_loss, resume=resume, metrics=metrics,
                   hooks=hooks)
    load_task_state(model, progress.best_state)  # backbone and heads as they were at the best epoch
    if hooks is not None:
        hooks.load(progress.best_method_state)  # and the method's state as it was then
    return progress


def save_sequence(ctx: Context, model: MultiHeadModel, method: Method, config: dict, finished: dict) -> None:
    """Everything the next task needs, atomically in one file, so a crash never leaves a mixed state."""
    state = {"config": config, "backbone": model.backbone_state(), "method": method.state_dict(),
             "records": [vars(record) for record in finished["records"]], "correct": finished["correct"]}
    save_torch(state, ctx.layout.after_task(ctx.method))


def restore_sequence(ctx: Context, model: MultiHeadModel, method: Method, config: dict) -> dict:
    """Continue a sequence: its after-task file, which must have been made with this run's settings."""
    path = ctx.layout.after_task(ctx.method)
    saved = read_saved(path)
    require_same_settings(path, recorded_config(ctx.method, saved["config"]), config, "resume")
    return restore_saved(saved, model, method)


def recorded_config(method: str, config: dict) -> dict:
    """A sequence's recorded config, with the --shared-bn value of a file made before the option existed (the
    method's own: per-task for PSP and PackNet, drift for the others)."""
    return {"shared_bn": shared_bn_of(method, None)} | config


def restore_saved(saved: dict, model: MultiHeadModel, method: Method) -> dict:
    """Load a sequence's saved state (``save_sequence``'s) into a model and method built for it: the backbone, every
    head and the method's state as the last finished task left them; returns the records and matrix rows."""
    # a task's accuracy just after it was learnt is the matrix's diagonal (files before 2026-11-29 keep it only there)
    records = [TaskRecord(**record | {"best_correct": row[i], "best_acc": row[i] / record["val_images"]})
               for i, (record, row) in enumerate(zip(saved["records"], saved["correct"]))]
    model.restore(saved["backbone"], [model.head_of(record.state) for record in records])
    method.load_state_dict(saved["method"])
    return {"records": records, "correct": saved["correct"]}


def accuracy_matrix(samples: list[TaskSample], finished: dict) -> list[list[float]]:
    return [[correct / len(sample.val) for correct, sample in zip(row, samples)] for row in finished["correct"]]


def write_outputs(ctx: Context, samples: list[TaskSample], finished: dict) -> None:
    """The files that follow from the sequence's state: each finished task's record (its head as the last finished
    task left it, and its accuracy just after it was learnt), <method>.csv (the accuracy after the last task) and the
    matrix."""
    matrix = accuracy_matrix(samples, finished)
    for sample, record in zip(samples, finished["records"]):
        record.save(ctx.weight_path(sample.task))
    write_results(ctx.csv_path, {sample.task.task_id: {"task_id": sample.task.task_id, "task_name": sample.task.name,
                                                       "best_acc": accuracy}
                                 for sample, accuracy in zip(samples, matrix[-1])})
    write_matrix(ctx.layout.matrix_csv(ctx.method), samples, matrix)
