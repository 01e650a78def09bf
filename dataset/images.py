"""Decoding and resizing exactly as the release's per-image transform does it."""
import functools
import os
from dataclasses import dataclass

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


@dataclass(frozen=True)
class Normalisation:
    """The per-channel mean and std a backbone's weights expect (their own metadata: ImageNet's for the ResNets,
    0.5 for timm's Xception), applied to uint8 images as ``ToTensor`` + ``Normalize`` would."""

    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 [N, 3, S, S] -> float normalised, with the same operations as ``ToTensor`` + ``Normalize``."""
        mean, std = _mean_and_std(self, images.device)
        return images.float().div_(255).sub_(mean).div_(std)


IMAGENET = Normalisation()  # the release's


@functools.cache
def _mean_and_std(normalisation: Normalisation, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Built once per device: creating them per batch would copy from pageable host memory and stall CUDA."""
    shape = (1, 3, 1, 1)
    return (torch.tensor(normalisation.mean, device=device).view(shape),
            torch.tensor(normalisation.std, device=device).view(shape))
