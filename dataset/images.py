"""Decoding and resizing exactly as the release's per-image transform does it."""
import functools
import os

import torch
from PIL import Image
from torchvision import transforms

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def open_rgb(path: str | os.PathLike) -> Image.Image:
    """Open and fully decode an image as RGB, as the release's loader does (``.convert('RGB')``)."""
    with Image.open(path) as image:
        return image.convert("RGB")


def resize_square(image: Image.Image, size: int) -> Image.Image:
    """Resize to (size, size) with the filter torchvision's ``Resize`` uses on PIL images (bilinear)."""
    return image.resize((size, size), Image.BILINEAR)


def release_transform(size: int) -> transforms.Compose:
    """The release's per-image transform: ``Resize((S, S))``, ``ToTensor``, ``Normalize`` (ImageNet)."""
    return transforms.Compose([
        transforms.Resize((size, size)),
        transforms.ToTensor(),
        transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD),
    ])


@functools.cache
def _mean_and_std(device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Built once per device: creating them per batch would copy from pageable host memory and stall CUDA."""
    shape = (1, 3, 1, 1)
    return (torch.tensor(IMAGENET_MEAN, device=device).view(shape),
            torch.tensor(IMAGENET_STD, device=device).view(shape))


def normalize_uint8(images: torch.Tensor) -> torch.Tensor:
    """uint8 [N, 3, S, S] -> float normalised, with the same operations as ``ToTensor`` + ``Normalize``."""
    mean, std = _mean_and_std(images.device)
    return images.float().div_(255).sub_(mean).div_(std)
