"""Shared-backbone continual-learning baselines: one backbone trained from task to task, one head per task
(task-incremental: the task id picks the head at test time), and the accuracy matrix that shows forgetting."""
import argparse
import logging

from common.cli import add_options
from continual.er import ER
from continual.ewc import EWC
from continual.lwf import LwF
from continual.method import Method, Option
from continual.packnet import PackNet
from continual.psp import PSP
from continual.sequence import forget_sequence, learn_sequence
from continual.sgd import SGD
from continual.si import SI
from dataset.task import TaskSample
from training.context import Context

log = logging.getLogger("clr")

REGISTRY: dict[str, type[Method]] = {"SGD": SGD, "EWC": EWC, "LwF": LwF, "ER": ER, "SI": SI, "PSP": PSP,
                                     "PackNet": PackNet}
METHODS = tuple(REGISTRY)
__all__ = ["METHODS", "REGISTRY", "Option", "add_arguments", "learn", "forget_sequence"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """One options group with each method's hyper-parameters (used only by that method)."""
    add_options(parser, "shared-backbone baselines (--method " + "/".join(METHODS) + ")",
                (method.OPTIONS for method in REGISTRY.values()))


def learn(ctx: Context, samples: list[TaskSample]) -> None:
    """Learn the selected tasks in order with one shared backbone, resuming where a previous run stopped, with the
    method's own hyper-parameters as the context holds them (and every file records them)."""
    log.info("%s on %s (%s), %d task(s), shared backbone, device %s", ctx.method, ctx.arch, ctx.backbone_id,
             len(samples), ctx.device)
    print(learn_sequence(ctx, samples, REGISTRY[ctx.method](ctx, **ctx.options)))
