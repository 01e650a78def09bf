"""Tiny image files in the modes and formats real data mixes, written by the tests that need them."""
from pathlib import Path

import numpy as np
from PIL import Image

from dataset.task import Item, TaskInfo, TaskSample


def noise(seed: int, width: int, height: int, channels: int = 3) -> np.ndarray:
    """Deterministic random pixels, so resizing has real work to do."""
    shape = (height, width, channels) if channels > 1 else (height, width)
    return np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)


def write_mixed_images(folder: Path) -> list[str]:
    """Write one image per mode/format, all non-square, some smaller and some larger than 32; names relative."""
    folder.mkdir(parents=True, exist_ok=True)
    images = {
        "rgb.jpg": Image.fromarray(noise(1, 45, 23)),
        "cmyk.jpg": Image.fromarray(noise(2, 33, 47, 4), "CMYK"),
        "rgba.png": Image.fromarray(noise(3, 50, 20, 4), "RGBA"),
        "palette.gif": Image.fromarray(noise(4, 29, 31)).quantize(colors=16),
        "gray.png": Image.fromarray(noise(5, 64, 48, 1), "L"),
        "bilevel.png": Image.fromarray(noise(6, 37, 19, 1) > 127),
        "small.bmp": Image.fromarray(noise(7, 8, 12)),
        "photo.webp": Image.fromarray(noise(8, 70, 41)),
    }
    for name, image in images.items():
        image.save(folder / name)
    return [f"{folder.name}/{name}" for name in images]


def make_sample(paths: list[str], val_count: int = 2, name: str = "mixed") -> TaskSample:
    """A hand-made sample: the last ``val_count`` paths are validation; labels cycle over 3 classes."""
    items: list[Item] = [(path, index % 3) for index, path in enumerate(paths)]
    return TaskSample(TaskInfo(order=0, task_id=1, name=name), ("a", "b", "c"),
                      tuple(items[:-val_count]), tuple(items[-val_count:]))
