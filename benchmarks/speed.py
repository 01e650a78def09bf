"""How fast a CLR task is learnt: the release-style pipeline vs this project's path vs the compute bound.

    python benchmarks/speed.py                     # CPU: 64 px, a few steps; CUDA: 224 px
    python benchmarks/speed.py --image-size 224 --steps 50

On synthetic DCT-format data, for one model and method, it measures
  (a) release-style: per-image PIL decode + transform every epoch through a DataLoader with 0 workers,
      fp32, NCHW, host syncs every step (the release's per-tensor norm test and loss.item());
  (b) this project: training.loop's train_one_epoch / evaluate over preprocessed, device-resident batches;
  (c) compute bound: the same functions fed one batch already in device memory,
so b/c is what the data path costs and b/a what this project gains. It also times preprocessing and estimates
the 53-task x 60-epoch reproduction's wall time. Figures are printed and saved as JSON in --result.
"""
import argparse
import itertools
import json
import platform
import statistics
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import torch
import torch.nn.functional as F
from PIL import Image
from torch.utils.data import DataLoader

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from common.files import atomic_write_text  # noqa: E402
from dataset.images import Normalisation  # noqa: E402
from dataset.loader import DeviceBatches, ReleaseStyleDataset  # noqa: E402
from dataset.preprocess import decode_images, default_workers, load_task_tensors  # noqa: E402
from dataset.sources import DEFAULT_STAT, open_data, read_stat  # noqa: E402
from dataset.synthetic import DEMO_TASKS, write_synthetic_dct  # noqa: E402
from network import DEFAULT_ARCH, build_model, input_config, load_backbone  # noqa: E402
from training.families import ISOLATED_FAMILY  # noqa: E402  (the methods with a model per task)
from training.loop import build_optimizer, build_task_model, evaluate, train_one_epoch  # noqa: E402  (measured)
from training.settings import (PRECISIONS, RELEASE_EVAL_BATCH, Recipe, Runtime, resolve_device,  # noqa: E402
                               runtime_for)

REPRODUCTION_EPOCHS = 60


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arch", default=DEFAULT_ARCH, help="any of main.py's --arch values (default %(default)s)")
    parser.add_argument("--method", choices=ISOLATED_FAMILY.methods, default=ISOLATED_FAMILY.methods[0],
                        help="an isolated method (default %(default)s)")
    parser.add_argument("--image-size", type=int, help="default: 224 on CUDA, 64 on CPU")
    parser.add_argument("--batch-size", type=int, default=32, help="training batch (default 32)")
    parser.add_argument("--eval-batch-size", type=int, help="this project's eval batch (default: main.py's)")
    parser.add_argument("--steps", type=int, help="timed batches per measurement (default: 50 CUDA, 6 CPU)")
    parser.add_argument("--warmup", type=int, help="untimed batches first (default: 10 CUDA, 2 CPU)")
    parser.add_argument("--repeats", type=int, default=3, help="rounds over the three paths; medians are "
                        "reported (default 3)")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    parser.add_argument("--precision", choices=PRECISIONS, default="auto",
                        help="this project's path: auto (default) is bf16 autocast on CUDA, fp32 on the CPU")
    parser.add_argument("--compile", action="store_true", help="torch.compile this project's training step")
    parser.add_argument("--photo-size", type=int, nargs=2, default=(500, 375), metavar=("W", "H"),
                        help="re-save the measured task's images at this size first, so decoding costs what a "
                        "DCT photo costs (default 500 375; 0 0 keeps the small synthetic images)")
    parser.add_argument("--workers", type=int, default=default_workers(),
                        help="preprocessing workers (default %(default)s)")
    parser.add_argument("--result", type=Path, default=Path("result"), help="JSON goes here (default ./result/)")
    return parser


class Timer:
    """Wall time of a block, with the device drained before and after."""

    def __init__(self, device: torch.device):
        self.device, self.seconds = device, 0.0

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def __enter__(self) -> "Timer":
        self._sync()
        self.start = time.perf_counter()
        return self

    def __exit__(self, *exc) -> None:
        self._sync()
        self.seconds = time.perf_counter() - self.start


class Cycle:
    """The first `steps` (full) batches of the real data path, starting new (reshuffled) epochs as needed."""

    def __init__(self, batches: DeviceBatches, steps: int):
        self.batches, self.steps, self.batch_size = batches, steps, batches.batch_size
        self.num_images = steps * batches.batch_size

    def __len__(self) -> int:
        return self.steps

    def __iter__(self):
        epochs = itertools.chain.from_iterable(iter(self.batches) for _ in itertools.count())
        return itertools.islice(epochs, self.steps)


class RepeatedBatch:
    """One batch already in device memory, served `steps` times: the step with no data path at all."""

    def __init__(self, batch: tuple[torch.Tensor, torch.Tensor], steps: int):
        self.batch, self.steps = batch, steps
        self.batch_size = len(batch[1])
        self.num_images = steps * self.batch_size

    def __len__(self) -> int:
        return self.steps

    def __iter__(self):
        return itertools.repeat(self.batch, self.steps)


def release_batches(dataset: ReleaseStyleDataset, batch_size: int, shuffle: bool, steps: int):
    """`steps` batches decoded image by image in this process, epoch after epoch, as the release does."""
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=shuffle, num_workers=0, drop_last=True)
    return itertools.islice(itertools.chain.from_iterable(loader for _ in itertools.count()), steps)


def release_style_train(model, optimizer, batches, device: torch.device) -> int:
    """The release's step: fp32, NCHW, a host sync per tensor for the norm test and one for the loss."""
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    seen = 0
    for images, labels in batches:
        images, labels = images.to(device), labels.to(device)
        logits = model(images)
        loss = F.cross_entropy(logits, labels)
        for param in params:
            norm = torch.norm(param)
            if norm != 0:
                loss = loss + 1e-5 * norm
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        loss.item()
        (logits.argmax(1) == labels).sum().item()
        seen += len(labels)
    return seen


@torch.no_grad()
def release_style_eval(model, batches, device: torch.device) -> int:
    model.eval()
    seen = 0
    for images, labels in batches:
        images, labels = images.to(device), labels.to(device)
        (model(images).argmax(1) == labels).sum().item()
        seen += len(labels)
    return seen


def measure_project(backbone: torch.nn.Module, method: str, recipe: Recipe, runtime: Runtime, num_classes: int,
                    train_batches, eval_batches, warmup_batches, warmup_eval) -> dict:
    """Images/s of the project's own train_one_epoch and evaluate over the given batch sources."""
    model = build_task_model(backbone, method, num_classes, runtime)
    optimizer = build_optimizer(model, recipe.lr, runtime)
    step_model = torch.compile(model) if runtime.compile else model
    with Timer(runtime.device) as warm_up:  # with --compile, the training step compiles here
        train_one_epoch(step_model, optimizer, warmup_batches, runtime, recipe.norm_penalty, "warm-up")
    with Timer(runtime.device) as train:
        train_one_epoch(step_model, optimizer, train_batches, runtime, recipe.norm_penalty, "train")
    evaluate(model, warmup_eval, runtime)
    with Timer(runtime.device) as evaluation:
        evaluate(model, eval_batches, runtime)
    return {"train_images_per_s": train_batches.num_images / train.seconds,
            "eval_images_per_s": eval_batches.num_images / evaluation.seconds, "warmup_seconds": warm_up.seconds}


def measure_release_style(backbone: torch.nn.Module, method: str, recipe: Recipe, device: torch.device, root: Path,
                          sample, size: int, steps: int, warmup: int) -> dict:
    model = build_model(backbone, method, sample.num_classes).to(device)
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=recipe.lr)
    train_set = ReleaseStyleDataset(root, sample.train, size)
    val_set = ReleaseStyleDataset(root, sample.val, size)
    release_style_train(model, optimizer, release_batches(train_set, recipe.batch_size, True, warmup), device)
    with Timer(device) as train:
        seen = release_style_train(model, optimizer, release_batches(train_set, recipe.batch_size, True, steps),
                                   device)
    release_style_eval(model, release_batches(val_set, RELEASE_EVAL_BATCH, False, warmup), device)
    with Timer(device) as evaluation:
        seen_eval = release_style_eval(model, release_batches(val_set, RELEASE_EVAL_BATCH, False, steps), device)
    return {"train_images_per_s": seen / train.seconds, "eval_images_per_s": seen_eval / evaluation.seconds}


def enlarge(root: Path, paths: list[str], size: tuple[int, int]) -> None:
    """Re-save each image at `size`, same format and mode, so decoding costs what it costs on real photos."""
    for path in paths:
        with Image.open(root / path) as image:
            image_format, resized = image.format, image.resize(size, Image.BILINEAR)
        resized.save(root / path, format=image_format)


def reproduction_hours(train_rate: float, eval_rate: float, preprocess_rate: float | None = None) -> float:
    """All 60 epochs of the 53 tasks (docs/release.md §5's image counts; early stopping only shortens it)."""
    tasks = read_stat(DEFAULT_STAT)
    seconds = REPRODUCTION_EPOCHS * (sum(t.train_num for t in tasks) / train_rate
                                     + sum(t.val_num for t in tasks) / eval_rate)
    if preprocess_rate:  # this project decodes each image once; the release decodes it every epoch
        seconds += sum(t.train_num + t.val_num for t in tasks) / preprocess_rate
    return seconds / 3600


def run_benchmark(args: argparse.Namespace) -> dict:
    with tempfile.TemporaryDirectory(prefix="clr-bench-") as work:
        return measure_all(args, Path(work))


def measure_all(args: argparse.Namespace, work: Path) -> dict:
    device = resolve_device(args.device)
    cuda = device.type == "cuda"
    size = args.image_size or (224 if cuda else 64)
    steps = args.steps or (50 if cuda else 6)
    warmup = args.warmup if args.warmup is not None else (10 if cuda else 2)
    torch.backends.cudnn.benchmark = True

    data = Path(work) / "data"
    write_synthetic_dct(data)
    source = open_data(data, data / "stat.csv")
    sample = source.sample(next(t for t in source.tasks if t.name == DEMO_TASKS[0]))
    paths = sample.paths
    if all(args.photo_size):
        enlarge(source.root, paths, tuple(args.photo_size))
    with Timer(torch.device("cpu")) as preprocessing:
        decode_images(source.root, paths, size, args.workers, "preprocessing")
    tensors = load_task_tensors(source.root, sample, size, None, args.workers)

    recipe = Recipe(batch_size=args.batch_size)
    runtime = runtime_for(device, args.precision, args.eval_batch_size, args.compile)
    backbone = load_backbone(args.arch, "none")
    inputs = input_config(args.arch)
    normalisation = Normalisation(inputs.mean, inputs.std)
    # Full batches only, in all three paths: the small synthetic task's partial last batch would otherwise be
    # ~1 step in 10 (on the DCT tasks it is under 1 in 80) and weigh on b against c's full batches.
    train = DeviceBatches(tensors.train_images, tensors.train_labels, args.batch_size, device, shuffle=True, seed=0,
                          min_last_batch=args.batch_size, normalisation=normalisation)
    # Evaluation is timed on all the task's images: its val split alone (46) holds no full batch of CUDA's 256.
    val = DeviceBatches(torch.cat([tensors.train_images, tensors.val_images]),
                        torch.cat([tensors.train_labels, tensors.val_labels]), runtime.eval_batch_size, device,
                        shuffle=False, min_last_batch=runtime.eval_batch_size, normalisation=normalisation)

    one_train, one_val = next(iter(train)), next(iter(val))
    measurements = {
        "a_release_style": lambda: measure_release_style(backbone, args.method, recipe, device, source.root, sample,
                                                         size, steps, warmup),
        "b_this_project": lambda: measure_project(backbone, args.method, recipe, runtime, sample.num_classes,
                                                  Cycle(train, steps), Cycle(val, steps), Cycle(train, warmup),
                                                  Cycle(val, warmup)),
        "c_compute_bound": lambda: measure_project(backbone, args.method, recipe, runtime, sample.num_classes,
                                                   RepeatedBatch(one_train, steps), RepeatedBatch(one_val, steps),
                                                   RepeatedBatch(one_train, warmup), RepeatedBatch(one_val, warmup)),
    }
    names = list(measurements)
    rounds = []
    for round_index in range(args.repeats):  # each round starts with another path, so position effects even out
        order = names[round_index % len(names):] + names[:round_index % len(names)]
        rounds.append({name: measurements[name]() for name in order})
    figures = {name: {metric: statistics.median(r[name][metric] for r in rounds)
                      for metric in ("train_images_per_s", "eval_images_per_s")} for name in names}
    a, b, c = figures["a_release_style"], figures["b_this_project"], figures["c_compute_bound"]
    preprocess_rate = len(paths) / preprocessing.seconds
    return {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "device": torch.cuda.get_device_name(device) if cuda else f"CPU ({platform.processor() or platform.machine()}, "
                                                                    f"{torch.get_num_threads()} threads)",
        "torch": torch.__version__,
        "settings": {"arch": args.arch, "method": args.method, "image_size": size, "batch_size": args.batch_size,
                     "eval_batch_size": {"a": RELEASE_EVAL_BATCH, "b_c": runtime.eval_batch_size},
                     "precision": "bf16" if runtime.bf16 else "fp32", "channels_last": runtime.channels_last,
                     "compile": args.compile, "steps": steps, "warmup": warmup, "repeats": args.repeats,
                     "workers": args.workers,
                     "task": sample.task.name, "task_images": len(paths),
                     "photo_size": list(args.photo_size)},
        "images_per_s": figures,
        "ratios": {"train_b_over_a": b["train_images_per_s"] / a["train_images_per_s"],
                   "train_b_over_c": b["train_images_per_s"] / c["train_images_per_s"],
                   "eval_b_over_a": b["eval_images_per_s"] / a["eval_images_per_s"],
                   "eval_b_over_c": b["eval_images_per_s"] / c["eval_images_per_s"]},
        "preprocessing_images_per_s": preprocess_rate,
        # b is the first compiled path measured: its warm-up compiles the training step and runs --warmup batches
        "compile_seconds": rounds[0]["b_this_project"]["warmup_seconds"] if args.compile else None,
        "reproduction_hours": {"a_release_style": reproduction_hours(a["train_images_per_s"], a["eval_images_per_s"]),
                               "b_this_project": reproduction_hours(b["train_images_per_s"], b["eval_images_per_s"],
                                                                    preprocess_rate)},
    }


def format_report(result: dict) -> str:
    s = result["settings"]
    rows = [f"device {result['device']}, torch {result['torch']}, {result['date']}",
            f"{s['arch']} {s['method']}, {s['image_size']} px, batch {s['batch_size']} "
            f"(eval {s['eval_batch_size']}), {s['precision']}, channels_last {s['channels_last']}, "
            f"compile {s['compile']}, {s['steps']} timed batches after {s['warmup']} warm-up, "
            f"median of {s['repeats']} rounds",
            "", f"{'path':<22}{'train img/s':>14}{'eval img/s':>14}"]
    for name, figures in result["images_per_s"].items():
        rows.append(f"{name:<22}{figures['train_images_per_s']:>14.1f}{figures['eval_images_per_s']:>14.1f}")
    r = result["ratios"]
    rows += ["", f"b/a: train {r['train_b_over_a']:.2f}x, eval {r['eval_b_over_a']:.2f}x",
             f"b/c: train {r['train_b_over_c']:.3f}, eval {r['eval_b_over_c']:.3f}",
             f"preprocessing (decode + resize, {s['workers']} workers, {s['task_images']} synthetic images "
             f"saved at {s['photo_size'][0]}x{s['photo_size'][1]}): "
             f"{result['preprocessing_images_per_s']:.0f} img/s",
             *([f"compile: the first compiled warm-up took {result['compile_seconds']:.1f} s"]
               if result["compile_seconds"] is not None else []),
             "53 tasks x 60 epochs (no early stop), estimated: "
             f"release-style {result['reproduction_hours']['a_release_style']:.1f} h, "
             f"this project {result['reproduction_hours']['b_this_project']:.1f} h"]
    return "\n".join(rows)


def main_cli(argv: list[str] | None = None) -> None:
    args = get_args_parser().parse_args(argv)
    result = run_benchmark(args)
    print(format_report(result))
    args.result.mkdir(parents=True, exist_ok=True)
    device = "cuda" if "CPU" not in result["device"] else "cpu"
    path = args.result / f"benchmark_{device}_{result['settings']['image_size']}px.json"
    atomic_write_text(path, json.dumps(result, indent=2) + "\n")
    print(f"saved {path}")


if __name__ == "__main__":
    main_cli()
