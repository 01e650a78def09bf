"""Small synthetic data in the real DCT format, so the demo and the tests need no download.

The folder exercises what the real data does to a reader: rows interleaved across tasks and classes,
``problem`` rows, test-split rows, non-contiguous dataset and class ids, a task with >= 60 classes, and
images in mixed formats, PIL modes and non-square sizes. The demo tasks are distinct visual domains whose
classes differ in colour statistics as well as structure, so even a frozen random-init backbone that only
adapts BatchNorm and a head learns them.
"""
import hashlib
import io
import os
import shutil
import sqlite3
import sys
import tempfile
from collections import Counter
from collections.abc import Callable
from contextlib import closing
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
from PIL import Image

from common.cli import OneLineParser
from common.errors import DatasetError
from dataset.dct import DATABASE

TRAIN, VAL, TEST = 0, 1, 2
SPLIT_FOLDERS = {TRAIN: "train", VAL: "val", TEST: "test"}
TRAIN_BATCH = 32  # the release's training batch size
NATIVE_SIZES = (36, 96)  # inclusive range of each side, drawn independently: images are not square

Rgb = tuple[float, float, float]
Painter = Callable[["Canvas", np.random.Generator], np.ndarray]


@dataclass(frozen=True)
class Canvas:
    """Pixel-centre coordinates in [-1, 1] on both axes, so a drawing looks the same after a square resize."""

    y: np.ndarray  # [H, 1], -1 at the top
    x: np.ndarray  # [1, W], -1 at the left

    @classmethod
    def of_size(cls, height: int, width: int) -> "Canvas":
        return cls(y=np.linspace(-1, 1, height)[:, None], x=np.linspace(-1, 1, width)[None, :])

    def fill(self, colour: Rgb) -> np.ndarray:
        return np.broadcast_to(np.asarray(colour), (self.y.shape[0], self.x.shape[1], 3)).copy()


# ---- painters: each returns a float RGB image [H, W, 3] in about [0, 1] ----

def _blend(image: np.ndarray, colour: Rgb, weight: np.ndarray) -> np.ndarray:
    weight = weight[..., None]
    return image * (1 - weight) + np.asarray(colour) * weight


def _jitter(colour: Rgb, rng: np.random.Generator, spread: float = 0.04) -> Rgb:
    """Per-image colour variation that stays inside the class's hue family."""
    return tuple(np.clip(np.asarray(colour) + rng.normal(0, spread, 3), 0, 1))


def _circle(dy: np.ndarray, dx: np.ndarray) -> np.ndarray:
    return dy**2 + dx**2 < 1


def _square(dy: np.ndarray, dx: np.ndarray) -> np.ndarray:
    return np.maximum(abs(dy), abs(dx)) < 0.8


def _triangle(dy: np.ndarray, dx: np.ndarray) -> np.ndarray:
    return (dy > -1) & (dy < 0.7) & (abs(dx) < (dy + 1) * 0.6)


def _ring(dy: np.ndarray, dx: np.ndarray) -> np.ndarray:
    return (dy**2 + dx**2 < 1) & (dy**2 + dx**2 > 0.3)


def _cross(dy: np.ndarray, dx: np.ndarray) -> np.ndarray:
    return ((abs(dx) < 0.3) & (abs(dy) < 1)) | ((abs(dy) < 0.3) & (abs(dx) < 1))


def _paint_shape(canvas: Canvas, rng: np.random.Generator, *,
                mask: Callable[[np.ndarray, np.ndarray], np.ndarray], fg: Rgb, bg: Rgb) -> np.ndarray:
    """One geometric shape at a random place and scale on a plain background."""
    cy, cx = rng.uniform(-0.15, 0.15, 2)
    radius = rng.uniform(0.45, 0.6)
    inside = mask((canvas.y - cy) / radius, (canvas.x - cx) / radius)
    return _blend(canvas.fill(_jitter(bg, rng)), _jitter(fg, rng), inside.astype(float))


def _paint_stripes(canvas: Canvas, rng: np.random.Generator, *,
                  angle: float | None, light: Rgb, dark: Rgb) -> np.ndarray:
    """Soft-edged oriented stripes (a checkerboard when ``angle`` is None), 3 to 6 periods across."""
    frequency = rng.uniform(2.0, 2.5) * np.pi
    phase = rng.uniform(-0.6, 0.6, 2)
    if angle is None:
        wave = np.sin(frequency * canvas.x + phase[0]) * np.sin(frequency * canvas.y + phase[1])
    else:
        theta = np.deg2rad(angle + rng.normal(0, 3))
        wave = np.sin(frequency * (canvas.x * np.cos(theta) + canvas.y * np.sin(theta)) + phase[0])
    weight = 0.5 + 0.5 * np.tanh(3 * wave)
    return _blend(canvas.fill(_jitter(dark, rng)), _jitter(light, rng), weight)


def _paint_scene(canvas: Canvas, rng: np.random.Generator, *, top: Rgb, bottom: Rgb,
                blob: Rgb, blobs: tuple[int, int], blob_size: tuple[float, float],
                blob_rows: tuple[float, float]) -> np.ndarray:
    """A two-colour "sky over ground" split with soft Gaussian blobs in a band of rows."""
    horizon = rng.uniform(-0.05, 0.15)
    ground = 0.5 + 0.5 * np.tanh((canvas.y - horizon) * 8)
    image = _blend(canvas.fill(_jitter(top, rng)), _jitter(bottom, rng), ground)  # ground: [H, 1]
    for _ in range(rng.integers(blobs[0], blobs[1] + 1)):
        cy, cx = rng.uniform(*blob_rows), rng.uniform(-0.9, 0.9)
        sigma = rng.uniform(*blob_size)
        weight = np.exp(-((canvas.y - cy) ** 2 + (canvas.x - cx) ** 2) / (2 * sigma**2))
        image = _blend(image, _jitter(blob, rng), weight)
    return image


def _hue(index: int, count: int, value: float) -> Rgb:
    """An evenly spaced saturated hue: ``count`` easily told-apart colours."""
    h = index / count * 6
    rising, falling = h % 1, 1 - h % 1
    sectors = [(1, rising, 0), (falling, 1, 0), (0, 1, rising), (0, falling, 1), (rising, 0, 1), (1, 0, falling)]
    r, g, b = sectors[int(h)]
    return tuple(value * (0.2 + 0.8 * c) for c in (r, g, b))


# ---- the tasks ----

@dataclass(frozen=True)
class SplitSizes:
    """Images per class, each drawn uniformly from an inclusive (low, high) range."""

    train: tuple[int, int]
    val: tuple[int, int]
    test: tuple[int, int]
    problem: tuple[int, int]  # extra rows flagged ``problem`` != 0, spread over the train and val splits


@dataclass(frozen=True)
class SyntheticTask:
    """One DCT dataset: its id and name in the ``datasets`` table, its classes and how they are drawn."""

    dataset_id: int
    name: str
    classes: tuple[tuple[str, Painter], ...]
    sizes: SplitSizes

    def class_id(self, class_index: int) -> int:
        """Global class ids with gaps, so a reader cannot mistake them for labels."""
        return 1000 * self.dataset_id + 3 * class_index + 5


DEMO_SIZES = SplitSizes(train=(60, 68), val=(8, 10), test=(1, 1), problem=(1, 1))
MANY_SIZES = SplitSizes(train=(2, 3), val=(1, 1), test=(0, 1), problem=(0, 1))

SHAPES = SyntheticTask(12, "shapes", (
    ("circle", partial(_paint_shape, mask=_circle, fg=(0.9, 0.15, 0.1), bg=(0.1, 0.1, 0.12))),
    ("square", partial(_paint_shape, mask=_square, fg=(0.15, 0.3, 0.95), bg=(0.85, 0.85, 0.8))),
    ("triangle", partial(_paint_shape, mask=_triangle, fg=(0.1, 0.8, 0.2), bg=(0.45, 0.45, 0.45))),
    ("ring", partial(_paint_shape, mask=_ring, fg=(0.95, 0.9, 0.1), bg=(0.05, 0.1, 0.35))),
    ("cross", partial(_paint_shape, mask=_cross, fg=(0.9, 0.2, 0.85), bg=(0.95, 0.95, 0.95))),
), DEMO_SIZES)

STRIPES = SyntheticTask(5, "stripes", (
    ("horizontal", partial(_paint_stripes, angle=90, light=(1.0, 0.75, 0.2), dark=(0.75, 0.4, 0.05))),
    ("vertical", partial(_paint_stripes, angle=0, light=(0.3, 0.45, 0.9), dark=(0.05, 0.1, 0.45))),
    ("diagonal", partial(_paint_stripes, angle=45, light=(0.55, 0.9, 0.45), dark=(0.15, 0.5, 0.15))),
    ("antidiagonal", partial(_paint_stripes, angle=135, light=(0.9, 0.45, 0.75), dark=(0.5, 0.1, 0.4))),
    ("checker", partial(_paint_stripes, angle=None, light=(0.75, 0.75, 0.75), dark=(0.35, 0.35, 0.35))),
), DEMO_SIZES)

SCENES = SyntheticTask(31, "blob_scenes", (
    ("beach", partial(_paint_scene, top=(0.45, 0.7, 0.95), bottom=(0.9, 0.8, 0.55), blob=(1, 1, 1),
                      blobs=(2, 3), blob_size=(0.1, 0.2), blob_rows=(-0.9, -0.5))),
    ("forest", partial(_paint_scene, top=(0.15, 0.4, 0.15), bottom=(0.2, 0.15, 0.05), blob=(0.05, 0.2, 0.05),
                       blobs=(5, 8), blob_size=(0.1, 0.25), blob_rows=(-0.8, 0.4))),
    ("night", partial(_paint_scene, top=(0.02, 0.02, 0.1), bottom=(0.05, 0.05, 0.05), blob=(1, 1, 0.7),
                      blobs=(8, 14), blob_size=(0.03, 0.06), blob_rows=(-0.9, -0.3))),
    ("sunset", partial(_paint_scene, top=(0.4, 0.1, 0.45), bottom=(0.95, 0.45, 0.1), blob=(1, 0.9, 0.3),
                       blobs=(1, 1), blob_size=(0.15, 0.25), blob_rows=(-0.2, 0.2))),
    ("snow", partial(_paint_scene, top=(0.85, 0.9, 0.97), bottom=(0.95, 0.95, 0.95), blob=(0.45, 0.45, 0.5),
                     blobs=(3, 5), blob_size=(0.08, 0.15), blob_rows=(-0.1, 0.6))),
), DEMO_SIZES)

COMPASS = SyntheticTask(2, "compass60", tuple(
    (f"hue{index % 6}_angle{index // 6 * 18}",
     partial(_paint_stripes, angle=index // 6 * 18, light=_hue(index % 6, 6, 1.0), dark=_hue(index % 6, 6, 0.3)))
    for index in range(60)  # exactly 60: the smallest class count that takes the larger sampling quota
), MANY_SIZES)

TASKS = (SHAPES, STRIPES, SCENES, COMPASS)  # stat file order: demo tasks first
DEMO_TASKS: tuple[str, ...] = (SHAPES.name, STRIPES.name, SCENES.name)


# ---- image files ----

@dataclass(frozen=True)
class ImageFormat:
    """A file format and the PIL mode the image is stored in (the reader must convert each to RGB)."""

    pil_format: str
    mode: str
    extension: str


FORMATS = (
    ImageFormat("PNG", "RGB", ".png"),
    ImageFormat("JPEG", "RGB", ".jpg"),
    ImageFormat("PNG", "RGBA", ".png"),
    ImageFormat("JPEG", "CMYK", ".jpg"),
    ImageFormat("GIF", "P", ".gif"),
    ImageFormat("PNG", "L", ".png"),
    ImageFormat("BMP", "RGB", ".bmp"),
    ImageFormat("WEBP", "RGB", ".webp"),
)


def _to_uint8(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Global brightness change and pixel noise on top of the painter's own variation."""
    image = image * rng.uniform(0.9, 1.1) + rng.normal(0, 0.02, image.shape)
    return np.round(np.clip(image, 0, 1) * 255).astype(np.uint8)


def encode_image(pixels: np.ndarray, image_format: ImageFormat) -> bytes:
    """uint8 RGB [H, W, 3] -> file bytes in the given format and mode (tests patch it to fail mid-run)."""
    image = Image.fromarray(pixels, "RGB")
    if image_format.mode == "P":
        image = image.quantize(64, method=Image.Quantize.FASTOCTREE)
    elif image_format.mode == "RGBA":
        alpha = np.linspace(96, 255, pixels.shape[1], dtype=np.uint8)  # ignored by convert("RGB")
        image.putalpha(Image.fromarray(np.broadcast_to(alpha, pixels.shape[:2]).copy(), "L"))
    else:
        image = image.convert(image_format.mode)
    buffer = io.BytesIO()
    image.save(buffer, image_format.pil_format)
    return buffer.getvalue()


# ---- generation ----

Row = tuple[str, str, str, int, int, int, int]  # hash, path, filename, class_id, dataset_id, problem, set


def _quota(split: int, num_classes: int) -> int:
    """The per-class cap of docs/release.md §4, used here only to prove that sampling takes every row."""
    many = num_classes >= 60
    amount = (5120 if many else 2560) if split == TRAIN else (512 if many else 256)
    return round(amount / min(num_classes, 300))


def _class_plan(sizes: SplitSizes, rng: np.random.Generator) -> list[tuple[int, int]]:
    """(set, problem) for each image of one class: problem rows land in train or val, flagged 1 or 2."""
    plan = []
    for split, (low, high) in ((TRAIN, sizes.train), (VAL, sizes.val), (TEST, sizes.test)):
        plan += [(split, 0)] * int(rng.integers(low, high + 1))
    for _ in range(int(rng.integers(sizes.problem[0], sizes.problem[1] + 1))):
        plan.append((int(rng.integers(TRAIN, VAL + 1)), int(rng.integers(1, 3))))
    return plan


def _task_plan(task: SyntheticTask, rng: np.random.Generator) -> list[list[tuple[int, int]]]:
    """The class plans of one task, never leaving a last training batch of a single image.

    At 32 px ResNet's layer4 output is 1x1, so BatchNorm in train mode cannot normalise a batch of one.
    """
    plans = [_class_plan(task.sizes, rng) for _ in task.classes]
    if sum(plan.count((TRAIN, 0)) for plan in plans) % TRAIN_BATCH == 1:
        plans[-1].append((TRAIN, 0))
    return plans


def _write_task(task: SyntheticTask, out: Path, seed: int) -> list[Row]:
    """Draw and save every image of one task; formats cycle so each class and split gets all of them."""
    rng = np.random.default_rng([seed, task.dataset_id])
    rows: list[Row] = []
    image_index = 0
    for class_index, ((class_name, paint), plan) in enumerate(zip(task.classes, _task_plan(task, rng))):
        for file_index, (split, problem) in enumerate(plan):
            image_format = FORMATS[image_index % len(FORMATS)]
            image_index += 1
            height, width = rng.integers(NATIVE_SIZES[0], NATIVE_SIZES[1] + 1, 2)
            pixels = _to_uint8(paint(Canvas.of_size(int(height), int(width)), rng), rng)
            data = encode_image(pixels, image_format)
            folder = f"/{SPLIT_FOLDERS[split]}/{class_name}/"
            filename = f"img{file_index:03d}{image_format.extension}"
            target = out / "original_images" / (task.name + folder + filename)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)
            rows.append((hashlib.sha256(data).hexdigest(), folder, filename, task.class_id(class_index),
                         task.dataset_id, problem, split))
    return rows


def _write_database(path: Path, rows: list[Row]) -> None:
    path.parent.mkdir(parents=True)
    with closing(sqlite3.connect(path)) as db:
        db.execute("CREATE TABLE datasets (dataset_id INTEGER PRIMARY KEY, dataset_name TEXT, good INTEGER)")
        db.execute('CREATE TABLE files (hash TEXT, path TEXT, filename TEXT, class_id INTEGER, '
                   'dataset_id INTEGER, problem INTEGER, "set" INTEGER)')
        db.executemany("INSERT INTO datasets VALUES (?, ?, 1)", [(task.dataset_id, task.name) for task in TASKS])
        db.executemany("INSERT INTO files VALUES (?, ?, ?, ?, ?, ?, ?)", rows)
        db.commit()


def _stat_line(order: int, task: SyntheticTask, rows: list[Row]) -> str:
    """The task's stat row: every non-problem row, after proving that the sampling quota takes them all."""
    num_classes = len(task.classes)
    counts = {}
    for split in (TRAIN, VAL):
        usable = Counter(row[3] for row in rows if row[5] == 0 and row[6] == split)
        per_class = [usable[task.class_id(index)] for index in range(num_classes)]
        assert 0 < min(per_class) and max(per_class) <= _quota(split, num_classes), (task.name, split)
        counts[split] = sum(per_class)
    return f"{order},{task.dataset_id},{task.name},{num_classes},{counts[TRAIN]},{counts[VAL]}"


def _build(folder: Path, seed: int) -> None:
    rows_per_task = [_write_task(task, folder, seed) for task in TASKS]
    rows = [row for task_rows in rows_per_task for row in task_rows]
    np.random.default_rng(seed).shuffle(rows)  # interleave tasks and classes as a real database does
    _write_database(folder / DATABASE, rows)
    lines = ["oldid,newid,name,class_num,train_num,test_num"]
    lines += [_stat_line(order, task, task_rows)
              for order, (task, task_rows) in enumerate(zip(TASKS, rows_per_task))]
    (folder / "stat.csv").write_text("\n".join(lines) + "\n")


def _check_target(out: Path) -> None:
    """Never overwrite anything: ``out`` must be new or an empty folder."""
    if out.exists() and not (out.is_dir() and not any(out.iterdir())):
        raise DatasetError(f"{out} already exists and is not an empty folder; choose a new path")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise DatasetError(f"cannot create the folder {out.parent}: {error.strerror}") from None


def ensure_synthetic_dct(out: Path) -> None:
    """The demo's data: written to ``out`` (seed 0) the first time, found there afterwards."""
    if not (Path(out) / DATABASE).exists():
        print(f"writing synthetic DCT-format demo data to ./{out}")
        write_synthetic_dct(out)


def write_synthetic_dct(out: Path, seed: int = 0) -> Path:
    """Write a synthetic DCT-format folder at ``out`` and return its stat file path.

    Everything is built in a temporary folder beside ``out`` and renamed into place at the end, so an
    interrupted run leaves nothing half-written. The same seed gives the same rows and image bytes.
    """
    if seed < 0:
        raise DatasetError(f"the seed must be >= 0, got {seed}")
    out = Path(out)
    _check_target(out)
    building = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    try:
        _build(building, seed)
        os.replace(building, out)
    finally:
        shutil.rmtree(building, ignore_errors=True)  # a no-op once the rename succeeded
    return out / "stat.csv"


def main(argv: list[str] | None = None) -> int:
    parser = OneLineParser(prog="python -m dataset.synthetic",
                           description="Write a small synthetic data folder in the DCT format.")
    parser.add_argument("out", type=Path, help="folder to create (must not exist, or be empty)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0); same seed, same files")
    args = parser.parse_args(argv)
    try:
        stat = write_synthetic_dct(args.out, args.seed)
    except DatasetError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"wrote {args.out}: database {args.out / 'rolling_releases' / 'database_2.sqlite'}, "
          f"images under {args.out / 'original_images'}, stat file {stat}")
    print(stat.read_text(), end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
