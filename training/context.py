"""What every task of a run shares: the method, the frozen backbone, the data and the run's settings."""
from dataclasses import dataclass, field
from pathlib import Path

import torch

from dataset.images import Normalisation
from dataset.loader import DeviceBatches
from dataset.preprocess import TaskTensors, load_task_tensors
from dataset.sources import DataSource
from dataset.task import TaskInfo, TaskSample
from network import LayerPolicy
from network.backbone import InputConfig
from training.saved import manifest_sha256
from training.settings import Layout, Recipe, Runtime


@dataclass(frozen=True)
class Context:
    """What every task of a run shares. Built once by main.py; nothing below it reads the command line."""

    method: str
    arch: str
    backbone: torch.nn.Module  # frozen, on the runtime's device; each task builds its model from a copy
    backbone_id: str  # which weights it holds (see network.backbone_id), recorded with every task
    image_size: int
    input: InputConfig  # the normalisation the backbone's weights expect (their own metadata), recorded too
    source: DataSource | None  # None: prediction from the weight folder alone, without --data
    recipe: Recipe
    runtime: Runtime
    layout: Layout
    cache_dir: Path | None = None  # None: decode every task afresh and cache nothing
    workers: int = 0  # processes that decode images
    options: dict[str, int | float] = field(default_factory=dict)  # the method's own hyper-parameters
    tuning: dict | None = None  # how --tune chose the rate and options (training.tuning); None: not tuned
    shared_bn: str | None = None  # a shared backbone's BN from task to task (network.methods.SHARED_BN); None: isolated
    policy: LayerPolicy | None = None  # an isolated method's norm policy and CLR placement (None: its own, or none)

    @property
    def device(self) -> torch.device:
        return self.runtime.device

    @property
    def normalisation(self) -> Normalisation:
        return Normalisation(self.input.mean, self.input.std)

    def batches(self, images: torch.Tensor, labels: torch.Tensor, batch_size: int, shuffle: bool,
                seed: int | None = None, min_last_batch: int = 1) -> DeviceBatches:
        """Batches of a task's uint8 images on this run's device, normalised as the backbone expects."""
        return DeviceBatches(images, labels, batch_size, self.device, shuffle=shuffle, seed=seed,
                             min_last_batch=min_last_batch, normalisation=self.normalisation)

    @property
    def min_last_train_batch(self) -> int:
        """A trailing one-image batch is skipped only where BatchNorm cannot train on it; at larger sizes
        every image trains, as in the release."""
        return 2 if bn_needs_two_images(self.image_size) else 1

    def weight_path(self, task: TaskInfo) -> Path:
        return self.layout.weights(task.name, self.method)

    def resume_path(self, task: TaskInfo) -> Path:
        return self.layout.resume(task.name, self.method)

    def log_path(self, task: TaskInfo) -> Path:
        return self.layout.task_log(task.name, self.method)

    def metrics_path(self, task: TaskInfo) -> Path:
        return self.layout.metrics(task.name, self.method)

    @property
    def csv_path(self) -> Path:
        return self.layout.results_csv(self.method)

    def tensors(self, sample: TaskSample) -> TaskTensors:
        return load_task_tensors(self.source.root, sample, self.image_size, self.cache_dir, self.workers)

    def task_config(self, sample: TaskSample) -> dict:
        """The settings a task's files are made with: a resumed or skipped task must match them all."""
        r = self.recipe
        return {"method": self.method, "arch": self.arch, "backbone": self.backbone_id,
                "num_classes": sample.num_classes, "image_size": self.image_size, "epochs": r.epochs,
                "batch_size": r.batch_size, "lr": r.lr, "norm_penalty": r.norm_penalty, "patience": r.patience,
                "seed": r.seed, **self.options, **(self.policy.as_config() if self.policy else {}),
                **({"tuning": self.tuning} if self.tuning else {}),
                "manifest_sha256": manifest_sha256(sample)}


def bn_needs_two_images(image_size: int) -> bool:
    """ResNet downsamples 32x: at 32 px or less its last feature map is 1x1, and BatchNorm in train mode
    cannot learn from a batch that gives it one value per channel."""
    return image_size <= 32
