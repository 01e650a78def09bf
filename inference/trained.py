"""Trained tasks ready to use: the records a weight folder holds, the settings they agree on, a task's model and
its outputs, computed exactly as evaluation computed them."""
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from common.console import TransientBar
from common.errors import RunError
from dataset.sources import select_tasks
from dataset.task import TaskInfo
from network import DEFAULT_METHOD, METHODS
from training.context import Context
from training.families import family_of
from training.record import TaskRecord
from training.saved import PURPOSES, differing_settings
from training.settings import Layout


@dataclass(frozen=True)
class Trained:
    """Finished tasks of one method in a weight folder, in run order, and the settings they share."""

    method: str
    tasks: list[TaskInfo]
    records: list[TaskRecord]

    @property
    def settings(self) -> dict:
        """The arch, backbone and image size every task was trained with (what its model computes on)."""
        return {key: self.records[0].config[key] for key in PURPOSES["predict"]}


def record_paths(layout: Layout, method: str) -> dict[str, Path]:
    """Task name -> weights file of every task ``method`` finished in the weight folder."""
    suffix = layout.weights("", method).name  # "_<method>.pt"
    return {path.name.removesuffix(suffix): path for path in sorted(layout.weight.glob(f"*{suffix}"))
            if path.name != suffix}


def trained_method(layout: Layout, method: str | None) -> str:
    """The method given, or the one method with finished tasks in the weight folder (CLR first)."""
    if method is not None:
        return method
    found = [name for name in METHODS if record_paths(layout, name)]
    if not found:
        raise RunError(f"no trained tasks in {layout.weight}: train them first, or pass the --weight folder "
                       "they were trained into")
    if found[0] == DEFAULT_METHOD or len(found) == 1:
        return found[0]
    raise RunError(f"{layout.weight} holds tasks of several methods ({', '.join(found)}): pass --method")


def load_trained(layout: Layout, method: str | None, wanted: list[str] | None) -> Trained:
    """The finished tasks named in ``wanted`` (by name or id; None: all), read from their records, which must
    share the settings their models compute with."""
    method = trained_method(layout, method)
    records = [TaskRecord.load(path) for path in record_paths(layout, method).values()]
    if not records:
        raise RunError(f"no task has weights for --method {method} in {layout.weight} (train it first, or pass the "
                       "--weight folder and --method it was trained with)")
    tasks = [TaskInfo(order=index, task_id=record.task_id, name=record.task_name)
             for index, record in enumerate(sorted(records, key=lambda r: r.task_id))]
    by_id = {record.task_id: record for record in records}
    chosen = select_tasks(tasks, wanted)
    trained = Trained(method, chosen, [by_id[task.task_id] for task in chosen])
    for task, record in zip(trained.tasks, trained.records):
        differing = differing_settings(record.config, trained.settings, "predict")
        if differing:
            raise RunError(f"task {task.name} was trained with {', '.join(differing)} of task "
                           f"{trained.tasks[0].name}: predict with tasks trained alike")
    return trained


def require_given_settings(trained: Trained, given: dict) -> None:
    """Options given on the command line (None: not given) must agree with what the tasks were trained with."""
    current = trained.settings | {key: value for key, value in given.items() if value is not None}
    differing = differing_settings(trained.settings, current, "predict")
    if differing:
        raise RunError(f"task {trained.tasks[0].name} was trained with {', '.join(differing)}: leave the option "
                       "out, or pass the value it was trained with")


def task_models(ctx: Context, trained: Trained) -> Callable[[int], torch.nn.Module]:
    """The model each task of ``trained`` computes with, by its index, as its method's family rebuilds it (an isolated
    method's task model, a shared-backbone method's final model set to the task), exactly as its evaluation was."""
    return family_of(trained.method).task_models(ctx, trained.method, trained.records)


def usable_record(ctx: Context, task: TaskInfo, current: dict) -> TaskRecord | None:
    """The task's record if it was trained with this command's settings on the same images, else None. The recipe
    (epochs, lr, ...) may differ: it changed how the state was learnt, not what it computes."""
    path = ctx.weight_path(task)
    if not path.exists():
        return None
    record = TaskRecord.load(path)
    return None if differing_settings(record.config, current, "agnostic") else record


@torch.inference_mode()
def batch_outputs(model: torch.nn.Module, images: torch.Tensor, ctx: Context, desc: str) -> torch.Tensor:
    """``model`` applied to uint8 images exactly as training's ``evaluate`` serves them (the same batches,
    on-device normalisation, eval mode and deterministic cuDNN), so a task's validation images give the
    logits its recorded accuracy came from. Float32 on the CPU, one row per image."""
    runtime = ctx.runtime
    model.eval()
    batches = ctx.batches(images, torch.zeros(len(images), dtype=torch.int64), runtime.eval_batch_size, shuffle=False)
    outputs = []
    with torch.backends.cudnn.flags(enabled=True, benchmark=False, deterministic=True):
        for batch, _ in TransientBar(batches, desc=desc, unit="batch"):
            with runtime.autocast():
                outputs.append(model(runtime.model_input(batch)).float().cpu())
    return torch.cat(outputs)
