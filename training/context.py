"""What every task of a run shares: the options, the device, the data, the frozen backbone and where files go."""
import argparse
import contextlib
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch

from dataset.preprocess import TaskTensors, load_task_tensors
from dataset.sources import DataSource
from dataset.task import TaskInfo, TaskSample


class RunError(Exception):
    """A problem with the run's options or its output folders; printed as one line."""


@dataclass
class Context:
    """What every task of a run shares."""

    args: argparse.Namespace
    device: torch.device
    source: DataSource
    backbone: torch.nn.Module
    backbone_id: str

    @property
    def on_cuda(self) -> bool:
        return self.device.type == "cuda"

    @property
    def min_last_train_batch(self) -> int:
        """A trailing one-image batch is skipped only where BatchNorm cannot train on it; at larger sizes
        every image trains, as in the release."""
        return 2 if bn_needs_two_images(self.args.image_size) else 1

    @property
    def eval_batch_size(self) -> int:
        return self.args.eval_batch_size or (256 if self.on_cuda else 16)

    def autocast(self) -> contextlib.AbstractContextManager:
        if self.on_cuda and self.args.precision == "bf16":
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def weight_path(self, task: TaskInfo) -> Path:
        return self.args.weight / f"{task.name}_{self.args.method}.pt"

    def resume_path(self, task: TaskInfo) -> Path:
        return self.args.weight / f"{task.name}_{self.args.method}.resume.pt"

    def log_path(self, task: TaskInfo) -> Path:
        return self.args.result / task.name / f"{self.args.method}.log"

    @property
    def csv_path(self) -> Path:
        return self.args.result / f"{self.args.method}.csv"

    def tensors(self, sample: TaskSample) -> TaskTensors:
        cache = None if self.args.no_cache else self.args.cache_dir
        return load_task_tensors(self.source.root, sample, self.args.image_size, cache, self.args.workers)

    def model_input(self, images: torch.Tensor) -> torch.Tensor:
        """channels_last on CUDA, where cuDNN is fastest with it; as served on the CPU."""
        return images.contiguous(memory_format=torch.channels_last) if self.on_cuda else images


def bn_needs_two_images(image_size: int) -> bool:
    """ResNet downsamples 32x: at 32 px or less its last feature map is 1x1, and BatchNorm in train mode
    cannot learn from a batch that gives it one value per channel."""
    return image_size <= 32



def resolve_device(choice: str) -> torch.device:
    if choice == "cuda" and not torch.cuda.is_available():
        raise RunError("--device cuda was asked for, but torch sees no CUDA device")
    if choice == "auto":
        choice = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(choice)



def prepare_output_folder(folder: Path, what: str) -> None:
    try:
        folder.mkdir(parents=True, exist_ok=True)
        tempfile.TemporaryFile(dir=folder).close()
    except OSError as error:
        raise RunError(f"cannot write to the {what} folder {folder}: {error.strerror or error}") from None

