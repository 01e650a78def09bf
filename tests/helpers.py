"""What the test modules share besides fixtures: main.py's options for the small runs, ways to run and interrupt
them, readers of their outputs, and builders of hand-made data (DCT databases, odd image files, result folders
written to the file contracts). The fixtures that hold data and trained runs are in conftest.py."""
import csv
import io
import shutil
import sqlite3
import struct
import subprocess
import sys
from contextlib import closing
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn

import main
import training.fit
from dataset.sources import open_data
from dataset.synthetic import DEMO_TASKS
from dataset.task import Item, TaskInfo, TaskSample
from network import load_backbone

REPO = Path(__file__).resolve().parent.parent

# ---- the small runs ----

TASKS = list(DEMO_TASKS[:2])  # the small DCT runs' tasks

# The small cut: the three demo domains as task folders with a few images per class, so that a whole backbone
# trains in seconds. Folder names sort in demo order.
SMALL_TASKS = [f"{order}_{name}" for order, name in enumerate(DEMO_TASKS, 1)]
TRAIN_PER_CLASS, VAL_PER_CLASS = 10, 4


def run_args(data: Path, out: Path, *extra: str) -> list[str]:
    """main.py's options for a small CLR run on the DCT data: resnet18 from a random init, 32 px, 2 epochs, two
    tasks (a later option wins)."""
    return ["--data", str(data), "--stat", str(data / "stat.csv"), "--tasks", *TASKS, "--arch", "resnet18",
            "--weights", "none", "--image-size", "32", "--epochs", "2", "--workers", "0",
            "--result", str(out / "result"), "--weight", str(out / "weight"), "--cache-dir", str(out / "cache"),
            *extra]


def small_args(data: Path, out: Path, method: str, *extra: str) -> list[str]:
    """main.py's options for a method on the small cut's task folders: resnet18 from a random init, 16 px, 2
    epochs, every task (a later option wins)."""
    return ["--data", str(data), "--method", method, "--arch", "resnet18", "--weights", "none",
            "--image-size", "16", "--epochs", "2", "--workers", "0", "--result", str(out / "result"),
            "--weight", str(out / "weight"), "--cache-dir", str(out / "cache"), *extra]


def write_small_tasks(dct: Path, root: Path) -> Path:
    """The small cut of the DCT data's demo tasks, as task folders under ``root``."""
    source = open_data(dct, dct / "stat.csv")
    for folder, task in zip(SMALL_TASKS, (t for t in source.tasks if t.name in DEMO_TASKS)):
        sample = source.sample(task)
        for split, items, count in (("train", sample.train, TRAIN_PER_CLASS), ("val", sample.val, VAL_PER_CLASS)):
            for label, key in enumerate(sample.classes):
                for path, _ in [item for item in items if item[1] == label][:count]:
                    target = root / folder / split / f"class{key}" / Path(path).name
                    target.parent.mkdir(parents=True, exist_ok=True)
                    shutil.copyfile(dct / path, target)
    return root


def one_thread_main(argv: list[str]) -> int:
    """main.main with one thread, as torchrun gives each process (OMP_NUM_THREADS=1): the reference a job's files
    must equal, since CPU arithmetic can depend on the thread count."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return main.main(argv)
    finally:
        torch.set_num_threads(threads)


def reference_run(tmp_path_factory, argv_of) -> Path:
    """A fresh folder ``out`` with a one-thread plain run of ``argv_of(out)`` in it: the reference for what a
    torchrun job must reproduce."""
    out = tmp_path_factory.mktemp("one")
    assert one_thread_main(argv_of(out)) == 0
    return out


def torchrun_job(tmp_path_factory, argv_of) -> tuple[Path, subprocess.CompletedProcess]:
    """A fresh folder with main.py run as a torchrun job of two processes on this machine, and the job."""
    out = tmp_path_factory.mktemp("two")
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
               str(REPO / "main.py"), *argv_of(out)]
    return out, subprocess.run(command, cwd=out, capture_output=True, text=True, timeout=900)


class Kill:
    """Make the n-th training epoch of the run raise KeyboardInterrupt, as Ctrl-C would (every method trains
    through training.fit)."""

    def __init__(self, monkeypatch, at_call: int):
        self.calls, self.at_call = 0, at_call
        self.real = training.fit.train_one_epoch
        self.monkeypatch = monkeypatch
        monkeypatch.setattr(training.fit, "train_one_epoch", self)

    def __call__(self, *args, **kwargs):
        self.calls += 1
        if self.calls == self.at_call:
            raise KeyboardInterrupt
        return self.real(*args, **kwargs)

    def disarm(self) -> None:
        self.monkeypatch.setattr(training.fit, "train_one_epoch", self.real)


# ---- reading a run's outputs ----

def read_csv(path: Path) -> list[dict]:
    with path.open(newline="") as file:
        return list(csv.DictReader(file))


def read_csv_text(text: str) -> list[dict]:
    """Rows of CSV text, as --predict prints it."""
    return list(csv.DictReader(io.StringIO(text)))


def matrix_of(out: Path, method: str, tasks: list[str]) -> list[list[float]]:
    """A shared-backbone method's accuracy matrix, row t holding R[t][i] for the tasks learnt so far."""
    rows = read_csv(out / "result" / f"{method}_matrix.csv")
    return [[float(row[name]) for name in tasks if row[name] != ""] for row in rows]


def tensors_in(value) -> list[torch.Tensor]:
    """Every tensor in a nest of dicts, lists and tuples."""
    if isinstance(value, torch.Tensor):
        return [value]
    if isinstance(value, dict):
        value = list(value.values())
    if isinstance(value, (list, tuple)):
        return [t for item in value for t in tensors_in(item)]
    return []


def saved_states(out: Path) -> dict[str, dict]:
    return {p.name: torch.load(p, weights_only=True) for p in sorted((out / "weight").glob("*.pt"))}


def assert_same_states(a: dict[str, dict], b: dict[str, dict]) -> None:
    assert a.keys() == b.keys()
    for name in a:
        assert a[name]["state"].keys() == b[name]["state"].keys()
        for key in a[name]["state"]:
            assert torch.equal(a[name]["state"][key], b[name]["state"][key]), (name, key)


def table(report: str, first_column: str) -> list[dict[str, str]]:
    """The markdown table whose header starts with the given column, as dicts of cells."""
    lines = report.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(f"| {first_column} |"))
    header = [cell.strip() for cell in lines[start].strip("|").split("|")]
    rows = []
    for line in lines[start + 2:]:
        if not line.startswith("|"):
            break
        rows.append(dict(zip(header, (cell.strip() for cell in line.strip("|").split("|")))))
    return rows


def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", path
    return struct.unpack(">II", data[16:24])


# ---- networks ----

def seeded_and_frozen(arch: str) -> nn.Module:
    """--weights none of ``arch``, checked: the same tensors whatever the global random state (as in another
    process), that state left alone, eval mode, every parameter frozen."""
    torch.manual_seed(123)
    rng = torch.get_rng_state()
    first = load_backbone(arch, "none")
    assert torch.equal(rng, torch.get_rng_state())
    torch.rand(5)
    second = load_backbone(arch, "none")
    assert all(torch.equal(t, second.state_dict()[name]) for name, t in first.state_dict().items())
    assert not first.training and not any(p.requires_grad for p in first.parameters())
    return first


# ---- hand-built DCT databases ----

TRAIN, VAL, TEST = 0, 1, 2
SPLIT_FOLDER = {TRAIN: "train", VAL: "val", TEST: "test"}


def image(class_id: int, index: int, split: int = TRAIN, problem: int = 0, dataset_id: int = 1) -> tuple:
    """One `files` row; its filename names its class and index so expectations read plainly."""
    return (f"h{dataset_id}-{split}-{class_id}-{index}", f"/{SPLIT_FOLDER[split]}/", f"{class_id}_{index}.jpg",
            class_id, dataset_id, problem, split)


def write_database(root: Path, files: list[tuple], datasets: tuple = ((1, "toy"),)) -> Path:
    database = root / "rolling_releases" / "database_2.sqlite"
    database.parent.mkdir(parents=True)
    with closing(sqlite3.connect(database)) as connection:
        connection.execute("CREATE TABLE datasets(dataset_id INTEGER, dataset_name TEXT, good INTEGER)")
        connection.execute('CREATE TABLE files(hash TEXT, path TEXT, filename TEXT, class_id INTEGER, '
                           'dataset_id INTEGER, problem INTEGER, "set" INTEGER)')
        connection.executemany("INSERT INTO datasets VALUES (?, ?, 1)", datasets)
        connection.executemany("INSERT INTO files VALUES (?, ?, ?, ?, ?, ?, ?)", files)
        connection.commit()
    return database


# ---- image files in the modes and formats real data mixes ----

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
    for name, picture in images.items():
        picture.save(folder / name)
    return [f"{folder.name}/{name}" for name in images]


def make_sample(paths: list[str], val_count: int = 2, name: str = "mixed") -> TaskSample:
    """A hand-made sample: the last ``val_count`` paths are validation; labels cycle over 3 classes."""
    items: list[Item] = [(path, index % 3) for index, path in enumerate(paths)]
    return TaskSample(TaskInfo(order=0, task_id=1, name=name), ("a", "b", "c"),
                      tuple(items[:-val_count]), tuple(items[-val_count:]))


# ---- result folders written by hand to the file contracts, so the report is tested without training ----

def write_csv(path: Path, header: list[str], rows: list[list]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as file:
        writer = csv.writer(file, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(rows)


def write_method(result: Path, weight: Path, method: str, tasks: list[tuple[int, str]], accuracies: list[float],
                 percent: float, shared: bool = False, arch: str = "resnet18") -> None:
    """<method>.csv and one weights file per task, with the keys every method writes (contract 1)."""
    write_csv(result / f"{method}.csv", ["task_id", "task_name", "best_acc"],
              [[task_id, name, acc] for (task_id, name), acc in zip(tasks, accuracies)])
    weight.mkdir(parents=True, exist_ok=True)
    for k, ((task_id, name), acc) in enumerate(zip(tasks, accuracies)):
        val, classes = 40 + k, 5 + k
        epochs = 3 + k
        history = [{"epoch": e, "loss": 1.0 / e, "train_acc": acc * e / epochs, "val_acc": acc * e / epochs}
                   for e in range(1, epochs + 1)]
        saved = {"state": {"fc.weight": torch.zeros(classes, 4), "fc.bias": torch.zeros(classes)},
                 "config": {"method": method, "arch": arch, "backbone": "none:seed0", "num_classes": classes,
                            "image_size": 32},
                 "task_id": task_id, "task_name": name, "label_map": {str(c): c for c in range(classes)},
                 "best_epoch": epochs, "best_correct": round(acc * val), "best_acc": acc, "epochs_run": epochs,
                 "train_images": 300 + k, "val_images": val, "trainable_params": round(percent * 1000),
                 "percent_of_backbone": percent, "history": history}
        if shared:
            saved["shared_backbone"] = True
        torch.save(saved, weight / f"{name}_{method}.pt")


def write_matrix(result: Path, method: str, tasks: list[tuple[int, str]], rows: list[list[float]]) -> None:
    """<method>_matrix.csv (contract 3): row t holds R[t][i] for i <= t, blanks after."""
    names = [name for _, name in tasks]
    write_csv(result / f"{method}_matrix.csv", ["task_id", "task_name", *names],
              [[task_id, name, *row, *[""] * (len(names) - len(row))]
               for (task_id, name), row in zip(tasks, rows)])


def write_task_agnostic(result: Path, method: str, tasks: list[tuple[int, str]],
                        counts: list[tuple[int, int, int]]) -> None:
    """task_agnostic_<method>.csv (contract 4): val images, mapper correct, end-to-end correct per task."""
    write_csv(result / f"task_agnostic_{method}.csv",
              ["task_id", "task_name", "val_images", "mapper_correct", "end_to_end_correct"],
              [[task_id, name, *count] for (task_id, name), count in zip(tasks, counts)])
