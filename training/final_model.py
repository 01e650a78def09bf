"""A shared-backbone method's final model, rebuilt from its weight folder alone: the backbone as the last task it
learnt left it, every task's head and the method's per-task state (PSP's contexts, PackNet's masks, per-task BN), set
to compute as any of its tasks exactly as the sequence's evaluation set it. --predict classifies with it, and the
report re-evaluates every task on it."""
import dataclasses
from dataclasses import dataclass

from common.errors import RunError
from network import MultiHeadModel, input_config, load_backbone, method_spec
from training.context import Context
from training.record import TaskRecord
from training.saved import read_saved
from training.sequence import recorded_config, restore_saved
from training.settings import Recipe
from training.shared_method import Method


@dataclass(frozen=True)
class FinalModel:
    """The model after the last finished task, with what it was learnt with."""

    ctx: Context  # the sequence's own settings, on the caller's device, data and folders
    model: MultiHeadModel
    method: Method
    records: list[TaskRecord]  # every finished task's record, in run order (its position is its head)

    @property
    def task_names(self) -> list[str]:
        return [record.task_name for record in self.records]

    def position(self, task_name: str) -> int:
        """The place of a finished task in the sequence: the index of its head and per-task state."""
        if task_name not in self.task_names:
            raise RunError(f"task {task_name} is not among the tasks {self.ctx.layout.after_task(self.ctx.method)} "
                           f"holds ({', '.join(self.task_names)})")
        return self.task_names.index(task_name)

    def use_task(self, task_name: str) -> MultiHeadModel:
        """The model, computing as the task does."""
        self.method.use_task(self.model, self.position(task_name))
        return self.model


def sequence_context(ctx: Context, method: str, config: dict) -> Context:
    """The context a sequence's file was made with (its method, architecture, image size, recipe, seed, options and BN)
    on ``ctx``'s device, data and folders. Its backbone is the architecture with the fixed random init: every
    tensor the final model computes with comes from the file, so the pretrained weights are not needed."""
    arch, config = config["arch"], recorded_config(method, config)
    return dataclasses.replace(
        ctx, method=method, arch=arch, backbone=load_backbone(arch, "none").to(ctx.device),
        backbone_id=config["backbone"], image_size=config["image_size"], input=input_config(arch),
        recipe=Recipe(**{field.name: config[field.name] for field in dataclasses.fields(Recipe)}),
        options={name: config[name] for name in method_spec(method).options}, shared_bn=config["shared_bn"])


def load_final_model(ctx: Context, method: str) -> FinalModel:
    """``method``'s final model from ``<method>_after_task.pt`` in ``ctx``'s weight folder, on ``ctx``'s device."""
    path = ctx.layout.after_task(method)
    if not path.exists():
        raise RunError(f"no {path}: --method {method} has not learnt a task into {ctx.layout.weight} (train it "
                       "first, or pass the --weight folder it was trained into)")
    saved = read_saved(path)
    own = sequence_context(ctx, method, saved["config"])
    implementation = method_spec(method).implementation(own)
    model = own.runtime.prepare(implementation.build_model())
    return FinalModel(own, model, implementation, restore_saved(saved, model, implementation)["records"])
