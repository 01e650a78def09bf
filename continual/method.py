"""What a shared-backbone method may change, as hooks around the shared recipe (the pattern of Mammoth's
``models/``): before a task, the loss of a batch, after a task, and what it carries to the next task."""
import argparse

import torch
import torch.nn.functional as F

from continual.learner import Learner, TaskData
from training.context import Context


class Method:
    """Plain sequential training of the backbone and the task's head: every hook does nothing extra."""

    OPTIONS: dict[str, tuple[int | float, str]] = {}  # option name -> (default, help), shown as --name-with-dashes

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx

    def option(self, name: str) -> int | float:
        return getattr(self.ctx.args, name)

    def options(self) -> dict[str, int | float]:
        """This method's hyper-parameters, recorded in (and required to match) every file the run saves."""
        return {name: self.option(name) for name in self.OPTIONS}

    def before_task(self, learner: Learner, data: TaskData) -> None:
        """Called with the backbone as the previous task left it, before the task's first epoch (and again
        when a killed task resumes, so anything recorded here is recorded from the same weights)."""

    def batch_loss(self, learner: Learner, data: TaskData, images: torch.Tensor, labels: torch.Tensor,
                   index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(loss, the current head's logits) for a batch of the task's training images at ``index``."""
        with self.ctx.autocast():
            logits = learner.model(self.ctx.model_input(images))
        return F.cross_entropy(logits.float(), labels), logits

    def after_task(self, learner: Learner, data: TaskData) -> None:
        """Called with the task's best-epoch backbone and head, before the task is evaluated and saved."""

    def state_dict(self) -> dict:
        """What the method carries to the next task (CPU tensors); saved with the backbone after each task."""
        return {}

    def load_state_dict(self, state: dict) -> None:
        """Restore ``state_dict()`` (a resumed run)."""


def non_negative(kind: type):
    """An argparse type for a method option: a number of ``kind``, zero or more."""
    def parse(text: str) -> int | float:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
        if not value >= 0 or value == float("inf"):
            raise argparse.ArgumentTypeError(f"must be zero or more, got {text}")
        return value
    return parse
