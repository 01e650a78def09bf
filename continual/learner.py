"""The shared-backbone model: one torchvision ResNet trained from task to task, and one linear head per task."""
from dataclasses import dataclass

import torch
from torch import nn

from dataset.loader import DeviceBatches
from dataset.preprocess import TaskTensors
from dataset.task import TaskSample
from network import load_task_state, task_state
from training.context import Context
from training.loop import build_task_model, evaluate

HEAD_KEYS = ("fc.weight", "fc.bias")


@dataclass
class TaskData:
    """One task while it is learnt: its place in the run, its images and its batches."""

    sample: TaskSample
    position: int  # 0-based place in the run: the index of the task's head
    tensors: TaskTensors  # uint8 images on the CPU, as the cache holds them
    labels: torch.Tensor  # the training labels on the device, looked up by image index
    train: DeviceBatches  # serves image indices (not labels), so a method can find its per-image records
    val: DeviceBatches


def validation_batches(ctx: Context, tensors: TaskTensors) -> DeviceBatches:
    return DeviceBatches(tensors.val_images, tensors.val_labels, ctx.eval_batch_size, ctx.device, shuffle=False)


def task_data(ctx: Context, sample: TaskSample, position: int) -> TaskData:
    tensors = ctx.tensors(sample)
    indices = torch.arange(len(tensors.train_labels))
    train = DeviceBatches(tensors.train_images, indices, ctx.args.batch_size, ctx.device, shuffle=True,
                          seed=ctx.args.seed + sample.task.order, min_last_batch=ctx.min_last_train_batch)
    return TaskData(sample, position, tensors, tensors.train_labels.to(ctx.device), train,
                    validation_batches(ctx, tensors))


class Learner:
    """The whole backbone trains (BN in train mode while training, as ``Finetune``); ``model.fc`` is the head
    in use. Earlier heads are frozen: a task's head is final once the task is learnt, so its weights file is."""

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self.model = build_task_model(ctx, 1, "Finetune")  # its one-class placeholder head is never used
        self.heads: list[nn.Linear] = []

    def add_head(self, num_classes: int) -> None:
        """A fresh head (drawn from the global RNG) for the next task, made the one in use."""
        for head in self.heads:
            head.requires_grad_(False)
        self.heads.append(nn.Linear(self.model.fc.in_features, num_classes, device=self.ctx.device))
        self.use_head(len(self.heads) - 1)

    def use_head(self, position: int) -> None:
        self.model.fc = self.heads[position]
        self.model.num_classes = self.model.fc.out_features  # what load_task_state checks a state against

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """The backbone's pooled features (call under ``ctx.autocast()``)."""
        return self.model.features(self.ctx.model_input(images))

    def backbone_state(self) -> dict[str, torch.Tensor]:
        return {name: t for name, t in task_state(self.model).items() if name not in HEAD_KEYS}

    def head_state(self, position: int) -> dict[str, torch.Tensor]:
        head = self.heads[position]
        return {"fc.weight": head.weight.detach().cpu().clone(), "fc.bias": head.bias.detach().cpu().clone()}

    def restore(self, backbone: dict[str, torch.Tensor], heads: list[dict[str, torch.Tensor]]) -> None:
        """The state saved after a task: its backbone and every head learnt so far (all frozen)."""
        self.heads = []
        for state in heads:
            self.add_head(state["fc.weight"].shape[0])
            with torch.no_grad():
                self.model.fc.weight.copy_(state["fc.weight"])
                self.model.fc.bias.copy_(state["fc.bias"])
        load_task_state(self.model, backbone | self.head_state(len(heads) - 1))
        for head in self.heads:
            head.requires_grad_(False)

    def evaluate_learnt(self, samples: list[TaskSample]) -> list[int]:
        """Correct validation images of every task learnt so far, each with its own head: a matrix row."""
        current = len(self.heads) - 1
        row = []
        for position, sample in enumerate(samples[:len(self.heads)]):
            self.use_head(position)
            row.append(evaluate(self.model, validation_batches(self.ctx, self.ctx.tensors(sample)), self.ctx))
        self.use_head(current)
        return row
