"""Batches served from one task's decoded uint8 images, and the release's per-image pipeline to compare with."""
from collections.abc import Iterator, Sequence
from pathlib import Path

import torch
from torch.utils.data import Dataset

from dataset.images import IMAGENET, Normalisation, open_rgb, release_transform
from dataset.task import Item


class DeviceBatches:
    """(normalised float images, labels) batches from uint8 images held on the training device.

    The images move to ``device`` once, as uint8 (4x smaller than float); each batch is converted and
    normalised there as the backbone expects (``normalisation``), with the same operations as ``ToTensor`` +
    ``Normalize``. Shuffled batches come from a fresh permutation every epoch, drawn from ``generator`` (CPU),
    whose state a caller can save and restore to resume mid-task with the same order.
    """

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, batch_size: int, device: torch.device,
                 shuffle: bool, seed: int | None = None, min_last_batch: int = 1,
                 normalisation: Normalisation = IMAGENET) -> None:
        if images.dtype != torch.uint8 or images.dim() != 4 or images.shape[1] != 3:
            raise ValueError(f"images must be uint8 [N, 3, S, S], got {images.dtype} {tuple(images.shape)}")
        if labels.shape != (images.shape[0],):
            raise ValueError(f"labels must be [{images.shape[0]}], got {tuple(labels.shape)}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        self.device = torch.device(device)
        self.images = images.to(self.device)
        self.labels = labels.to(self.device, dtype=torch.int64)
        self.batch_size = batch_size
        self.min_last_batch = min_last_batch  # a smaller trailing batch is not served
        self.shuffle = shuffle
        self.normalisation = normalisation
        self.generator = torch.Generator()
        if seed is None:
            self.generator.seed()
        else:
            self.generator.manual_seed(seed)

    @property
    def num_images(self) -> int:
        """Images served per epoch."""
        remainder = self.images.shape[0] % self.batch_size
        return self.images.shape[0] - (remainder if remainder < self.min_last_batch else 0)

    def __len__(self) -> int:
        return -(-self.num_images // self.batch_size)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        order = self._epoch_order()
        for start in range(0, self.num_images, self.batch_size):
            if order is None:
                batch = slice(start, start + self.batch_size)
            else:
                batch = order[start:start + self.batch_size]
            yield self.normalisation(self.images[batch]), self.labels[batch]

    def _epoch_order(self) -> torch.Tensor | None:
        """This epoch's permutation on the device (None: in order), copied without a host sync on CUDA."""
        if not self.shuffle:
            return None
        order = torch.randperm(self.images.shape[0], generator=self.generator)
        if self.device.type == "cuda":
            return order.pin_memory().to(self.device, non_blocking=True)
        return order.to(self.device)


class ReleaseStyleDataset(Dataset):
    """The release's pipeline, image by image: open, convert to RGB, ``Resize`` -> ``ToTensor`` -> ``Normalize``.

    The reference that the preprocessed path must match, and the baseline for speed comparisons.
    """

    def __init__(self, root: Path, items: Sequence[Item], size: int) -> None:
        self.root = Path(root)
        self.items = tuple(items)
        self.transform = release_transform(size)

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        path, label = self.items[index]
        return self.transform(open_rgb(self.root / path)), label
