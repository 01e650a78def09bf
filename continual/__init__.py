"""Shared-backbone continual-learning baselines: one backbone trained from task to task, one head per task
(task-incremental: the task id picks the head at test time), and the accuracy matrix that shows forgetting."""
import argparse
import logging

from continual.er import ER
from continual.ewc import EWC
from continual.lwf import LwF
from continual.method import Method, non_negative
from continual.runner import forget_sequence, learn_sequence
from continual.sgd import SGD
from dataset.task import TaskSample
from training.context import Context

log = logging.getLogger("clr")

REGISTRY: dict[str, type[Method]] = {"SGD": SGD, "EWC": EWC, "LwF": LwF, "ER": ER}
METHODS = tuple(REGISTRY)
__all__ = ["METHODS", "REGISTRY", "add_arguments", "learn", "forget_sequence"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """One options group with each method's hyper-parameters (used only by that method)."""
    group = parser.add_argument_group("shared-backbone baselines (--method " + "/".join(METHODS) + ")")
    for method in REGISTRY.values():
        for name, (default, help_text) in method.OPTIONS.items():
            group.add_argument("--" + name.replace("_", "-"), type=non_negative(type(default)), default=default,
                               help=help_text)


def learn(ctx: Context, samples: list[TaskSample]) -> None:
    """Learn the selected tasks in order with one shared backbone, resuming where a previous run stopped."""
    log.info("%s on %s (%s), %d task(s), shared backbone, device %s", ctx.args.method, ctx.args.arch,
             ctx.backbone_id, len(samples), ctx.device)
    print(learn_sequence(ctx, samples, REGISTRY[ctx.args.method](ctx)))
