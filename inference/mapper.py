"""The task mapper: a small anchor per task, fitted on the frozen backbone's features, that says which task
an image most likely belongs to.

An anchor is a diagonal Gaussian per class that shares one (shrunk) variance per task: the task's class means
of the pooled backbone features, divided by the task's per-feature standard deviation and stored as float16,
and that standard deviation. An image's score for a task is the Gaussian log-density of its nearest class
mean, ``-0.5 ||(f - mu) / std||^2 - sum(log std)``; the task with the highest score is chosen. Like SKILL's
Mahalanobis mapper it scores the nearest class mean, but each task's variance is its own, so an anchor
depends only on the backbone, the image size and that task's training images: a new task never changes
an old task's anchor, and every method trained on the same backbone shares it.
"""
from dataclasses import dataclass
from pathlib import Path

import torch

from common.errors import RunError, warn
from common.files import save_torch
from dataset.task import TaskInfo
from inference.trained import batch_outputs
from network.backbone import feature_extractor
from training.context import Context
from training.saved import PURPOSES, differing_settings, manifest_sha256

ANCHOR_FORMAT = 1
FITTED_ON = PURPOSES["anchor"]  # what a stored anchor must match
SHRINK = 0.1  # each feature's variance moves this far towards the task's mean variance: no feature dominates
FLOAT16_MAX = torch.finfo(torch.float16).max


@dataclass(frozen=True)
class Anchor:
    """One task's class means in units of its per-feature standard deviation, and that deviation."""

    scaled_means: torch.Tensor  # [classes, features], float16 (float32 only where float16 would overflow)
    std: torch.Tensor  # [features], float32

    def score(self, features: torch.Tensor) -> torch.Tensor:
        """Log-density (up to a constant shared by all tasks) of each image's nearest class of this task."""
        scaled = features.double() / self.std.double()
        means = self.scaled_means.double()
        distances = (scaled.square().sum(1, keepdim=True) - 2 * scaled @ means.T + means.square().sum(1)).clamp_min(0)
        return -0.5 * distances.min(1).values - self.std.double().log().sum()


def fit_anchor(features: torch.Tensor, labels: torch.Tensor) -> Anchor:
    """Class means and the shrunk pooled within-class variance of a task's training features."""
    features = features.double()
    classes = int(labels.max()) + 1
    counts = torch.bincount(labels, minlength=classes)
    sums = torch.zeros(classes, features.shape[1], dtype=torch.float64).index_add_(0, labels, features)
    means = sums / counts.clamp_min(1).unsqueeze(1)
    variance = (features - means[labels]).square().mean(0)
    if variance.mean() == 0:  # every image gives the same features: nothing to scale by
        variance = torch.ones_like(variance)
    std = ((1 - SHRINK) * variance + SHRINK * variance.mean()).sqrt()
    scaled = means[counts > 0] / std  # a class without training images has no mean to keep
    small = scaled.abs().max() <= FLOAT16_MAX
    return Anchor(scaled.to(torch.float16 if small else torch.float32), std.float())


def backbone_features(ctx: Context, images: torch.Tensor, desc: str) -> torch.Tensor:
    """Pooled features of the frozen backbone (no CLR layers, no head): the same for every task."""
    return batch_outputs(feature_extractor(ctx.backbone), images, ctx, desc)


def choose_tasks(features: torch.Tensor, anchors: list[Anchor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Each image's best-scoring anchor (an index into ``anchors``) and its margin over the runner-up
    (log-density units; ``inf`` with one task)."""
    scores = torch.stack([anchor.score(features) for anchor in anchors], 1)
    top = scores.topk(min(2, len(anchors)), 1)
    margin = top.values[:, 0] - top.values[:, 1] if len(anchors) > 1 else torch.full_like(top.values[:, 0], torch.inf)
    return top.indices[:, 0], margin


def task_anchor(ctx: Context, task: TaskInfo, config: dict) -> Anchor:
    """The task's anchor for the backbone, image size and data its weights ``config`` records: read from its
    file, or fitted on the task's training images and saved when missing or made with other settings."""
    path = ctx.layout.anchor(task.name)
    expected = {key: config[key] for key in FITTED_ON}
    stored = _read_anchor(path, expected) if path.exists() else None
    if stored is not None:
        return stored
    if ctx.source is None:
        raise RunError(f"task {task.name} has no usable task-mapper anchor in {path.parent}: pass --data with the "
                       "data it was trained on, so that the anchor can be fitted")
    listed = [listed for listed in ctx.source.tasks if listed.task_id == task.task_id]
    sample = ctx.source.sample(listed[0]) if listed else None
    if sample is None or manifest_sha256(sample) != config["manifest_sha256"]:
        raise RunError(f"the data of task {task.name} differs from what its weights were trained on, "
                       "so its task anchor cannot be fitted")
    tensors = ctx.tensors(sample)
    anchor = fit_anchor(backbone_features(ctx, tensors.train_images, f"{task.name}: task anchor"),
                        tensors.train_labels)
    _save_anchor(path, anchor, expected, task)
    return anchor


def _read_anchor(path: Path, expected: dict) -> Anchor | None:
    """The stored anchor, or None (with a warning) when it is unreadable or fitted with other settings."""
    try:
        stored = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises many types for a damaged file
        warn(f"task anchor {path} is unreadable ({type(error).__name__}); fitting it again")
        return None
    differing = differing_settings(stored, expected, "anchor")
    if stored.get("format") != ANCHOR_FORMAT or differing:
        warn(f"task anchor {path} was fitted with other settings ({', '.join(differing) or 'format'}); "
             "fitting it again")
        return None
    return Anchor(stored["scaled_means"], stored["std"])


def _save_anchor(path: Path, anchor: Anchor, fitted_on: dict, task: TaskInfo) -> None:
    """Save atomically; a failure only costs a refit next time, so it is a warning."""
    record = {"format": ANCHOR_FORMAT, **fitted_on, "task_id": task.task_id, "task_name": task.name,
              "scaled_means": anchor.scaled_means, "std": anchor.std}
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        save_torch(record, path)
    except OSError as error:
        warn(f"cannot save task anchor {path} ({error.strerror or error}); it will be fitted again when needed")
