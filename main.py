"""CLR continual learning: learn a sequence of tasks on one frozen backbone, keeping a small state per task.

    python main.py --data DATA                  # the 53 DCT tasks with the release's recipe (CLR)
    python main.py --data DATA --method Ghost   # CLR-Full
    python main.py --data DATA --check          # preflight: every image, every count, before hours of training
    python main.py                              # a few-minute demo on synthetic data

Each task trains only its own parameters (depthwise CLR kernels, BatchNorm, a linear head), so nothing learnt
earlier can be overwritten. At the end every saved task is re-loaded onto a fresh backbone and re-evaluated.
"""
import argparse
import contextlib
import csv
import io
import hashlib
import logging
import math
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm import tqdm

from dataset.atomic import atomic_path, atomic_write_text
from dataset.check import check_tasks
from dataset.loader import DeviceBatches
from dataset.preprocess import TaskTensors, default_workers, load_task_tensors
from dataset.sources import (DataSource, check_files_exist, manifest_path, manifest_text, open_data, select_tasks,
                             write_manifest)
from dataset.synthetic import DEMO_TASKS, write_synthetic_dct
from dataset.task import DatasetError, TaskInfo, TaskSample
from network import (ARCHS, METHODS, NetworkError, backbone_id, build_model, load_backbone, load_task_state,
                     parameter_cost, task_state)

log = logging.getLogger("clr")

PAPER_NAMES = {"Ghost_reduced_v1": "CLR", "Ghost": "CLR-Full"}
CSV_HEADER = ["task_id", "task_name", "best_acc"]
DEMO_DATA = Path("demo_data")
DEMO_DEFAULTS = {"weights": "none", "image_size": 32, "epochs": 12, "tasks": list(DEMO_TASKS)}


class RunError(Exception):
    """A problem with the run's options or its output folders; printed as one line."""


class OneLineParser(argparse.ArgumentParser):
    """Report a bad option as one line (not the usage block), like every other user mistake."""

    def error(self, message: str) -> None:
        self.exit(2, f"error: {message} (see --help)\n")


def number(kind: type, allow_zero: bool = False):
    """An argparse type for a positive (or, with allow_zero, non-negative) int or float."""
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
        if not math.isfinite(value) or value < 0 or (value == 0 and not allow_zero):
            raise argparse.ArgumentTypeError(f"must be {'zero or more' if allow_zero else 'positive'}, got {text}")
        return value
    return parse


def get_args_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    data = parser.add_argument_group("data")
    data.add_argument("--data", type=Path, help="a DCT folder (holding rolling_releases/ and original_images/) "
                      "or a folder of your own tasks (<task>/train/<class>/<image>, <task>/val/<class>/<image>). "
                      f"Omitted: the demo on synthetic data in ./{DEMO_DATA}")
    data.add_argument("--stat", type=Path, help="task list in stat.csv format (oldid,newid,name,class_num,train_num,"
                      "test_num); default: the 53 DCT tasks of ./stat.csv, or the sorted task folders")
    data.add_argument("--tasks", nargs="+", metavar="ID|NAME", help="run only these tasks (in run order)")
    data.add_argument("--check", action="store_true", help="verify every image and count of the selected tasks, "
                      "write their manifests, and exit (non-zero on any mismatch)")
    data.add_argument("--image-size", type=number(int), default=224, help="images are resized to SxS (default 224)")
    data.add_argument("--workers", type=number(int, allow_zero=True), default=default_workers(),
                      help="processes that decode images (default %(default)s; 0 decodes in this process)")
    data.add_argument("--cache-dir", type=Path, default=Path("cache"),
                      help="where decoded, resized images are cached per task (default ./cache/)")
    data.add_argument("--no-cache", action="store_true", help="decode every task afresh and cache nothing")

    model = parser.add_argument_group("model")
    model.add_argument("--method", choices=METHODS, default=METHODS[0],
                       help="Ghost_reduced_v1 = CLR (default), Ghost = CLR-Full, Ghost_reduced_v2, "
                       "and the baselines Linear (head only) and Finetune (everything)")
    model.add_argument("--arch", choices=ARCHS, default=ARCHS[0], help="backbone (default %(default)s)")
    model.add_argument("--weights", default="imagenet", help="backbone weights: imagenet (torchvision "
                       "IMAGENET1K_V1, downloaded once), none (random init, for demos and tests), or a path to a "
                       "torchvision-format state dict (default %(default)s)")

    recipe = parser.add_argument_group("training recipe (defaults: the release's)")
    recipe.add_argument("--epochs", type=number(int), default=60, help="at most this many epochs (default 60)")
    recipe.add_argument("--batch-size", type=number(int), default=32, help="training batch size (default 32)")
    recipe.add_argument("--eval-batch-size", type=number(int), help="evaluation batch size (default: 16, the "
                        "release's, on CPU; 256 on CUDA. BN is in eval mode, so accuracy does not depend on it)")
    recipe.add_argument("--lr", type=number(float), default=1e-3, help="Adam learning rate (default 1e-3); "
                        "StepLR divides it by 10 every epochs//3 epochs")
    recipe.add_argument("--norm-penalty", type=number(float, allow_zero=True), default=1e-5,
                        help="weight of the sum of L2 norms of the task's tensors in the loss (default 1e-5)")
    recipe.add_argument("--patience", type=number(int, allow_zero=True), default=21,
                        help="stop when the epoch is more than this many epochs past the best (default 21)")
    recipe.add_argument("--seed", type=int, default=0, help="seed; task k uses seed+k (default 0)")

    run = parser.add_argument_group("run")
    run.add_argument("--result", type=Path, default=Path("result"),
                     help="logs, manifests, <method>.csv and report.md (default ./result/)")
    run.add_argument("--weight", type=Path, default=Path("weight"),
                     help="per-task weights <task>_<method>.pt (default ./weight/)")
    run.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                     help="auto = cuda when available (default)")
    run.add_argument("--precision", choices=("bf16", "fp32"), default="bf16",
                     help="CUDA compute precision: bf16 autocast (default) or fp32, the release's numerics. "
                     "The CPU always computes in fp32")
    run.add_argument("--compile", action="store_true", help="torch.compile the model (CUDA)")
    run.add_argument("--fresh", action="store_true",
                     help="forget the selected tasks' results, weights and checkpoints, and start over")
    return parser


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Parse the command line; without --data, the demo's settings fill in whatever was not given."""
    parser = get_args_parser()
    args = parser.parse_args(argv)
    if args.data is None:
        parser.set_defaults(**DEMO_DEFAULTS)
        args = parser.parse_args(argv)
    return args


@dataclass
class Progress:
    """Where a task's training stands; saved after every epoch so a killed run resumes exactly."""

    epoch: int = 0
    best_correct: int = -1
    best_epoch: int = 0
    best_state: dict[str, torch.Tensor] | None = None
    history: list[dict] = field(default_factory=list)


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


def build_optimizer(ctx: Context, model: torch.nn.Module) -> torch.optim.Adam:
    """Adam over the task's own tensors (fused on CUDA), as the recipe and the benchmark use it."""
    params = [p for p in model.parameters() if p.requires_grad]
    return torch.optim.Adam(params, lr=ctx.args.lr, fused=ctx.on_cuda or None)


def resolve_device(choice: str) -> torch.device:
    if choice == "cuda" and not torch.cuda.is_available():
        raise RunError("--device cuda was asked for, but torch sees no CUDA device")
    if choice == "auto":
        choice = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(choice)


def prepare_demo_data(args: argparse.Namespace) -> None:
    """Point the run at the synthetic demo tasks, writing them to ./demo_data the first time."""
    if not (DEMO_DATA / "rolling_releases" / "database_2.sqlite").exists():
        print(f"writing synthetic DCT-format demo data to ./{DEMO_DATA}")
        write_synthetic_dct(DEMO_DATA)
    args.data = DEMO_DATA
    args.stat = args.stat or DEMO_DATA / "stat.csv"
    print(f"demo settings: {args.arch} with --weights {args.weights}, {args.image_size}px images, "
          f"{args.epochs} epochs, tasks {' '.join(args.tasks)}. For the paper's numbers pass --data DCT_FOLDER.")


def prepare_output_folder(folder: Path, what: str) -> None:
    try:
        folder.mkdir(parents=True, exist_ok=True)
        tempfile.TemporaryFile(dir=folder).close()
    except OSError as error:
        raise RunError(f"cannot write to the {what} folder {folder}: {error.strerror or error}") from None


def l2_norm_penalty(params: list[torch.Tensor]) -> torch.Tensor:
    """Sum of each tensor's plain L2 norm. A zero-norm tensor adds 0 with gradient 0, the same as the release
    skipping it, without a host sync to test for it."""
    return torch.stack(torch._foreach_norm(params)).sum()


def train_one_epoch(model: torch.nn.Module, optimizer: torch.optim.Optimizer, batches: DeviceBatches,
                    ctx: Context, desc: str) -> tuple[float, float]:
    """One pass over the task's training images. Returns (mean loss, accuracy); reads the device once."""
    model.train()
    params = [p for group in optimizer.param_groups for p in group["params"]]
    totals = torch.zeros(2, device=ctx.device)  # loss sum, correct count: read from the device once per epoch
    shown = torch.zeros(2, pin_memory=ctx.on_cuda)  # a copy for the bar that may lag a few steps, never syncs
    bar = tqdm(batches, desc=desc, leave=False, unit="batch", dynamic_ncols=True)
    for step, (images, labels) in enumerate(bar):
        with ctx.autocast():
            logits = model(ctx.model_input(images))
        loss = F.cross_entropy(logits.float(), labels)
        if ctx.args.norm_penalty:
            loss = loss + ctx.args.norm_penalty * l2_norm_penalty(params)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        totals += torch.stack([loss.detach() * len(labels), (logits.argmax(1) == labels).sum().float()])
        if step % 10 == 9:
            shown.copy_(totals, non_blocking=True)
            seen = min((step + 1) * batches.batch_size, batches.num_images)
            bar.set_postfix(loss=f"{shown[0] / seen:.4f}", acc=f"{shown[1] / seen:.2%}", refresh=False)
    bar.close()
    loss_sum, correct = totals.tolist()
    return loss_sum / batches.num_images, correct / batches.num_images


@torch.inference_mode()
def evaluate(model: torch.nn.Module, batches: DeviceBatches, ctx: Context) -> int:
    """Number of correctly classified images. cuDNN picks its algorithms deterministically here, so the same
    weights give the same count now and when the report re-evaluates them."""
    model.eval()
    correct = torch.zeros((), dtype=torch.long, device=ctx.device)
    with torch.backends.cudnn.flags(enabled=True, benchmark=False, deterministic=True):
        for images, labels in batches:
            with ctx.autocast():
                logits = model(ctx.model_input(images))
            correct += (logits.argmax(1) == labels).sum()
    return int(correct)


def build_task_model(ctx: Context, num_classes: int) -> torch.nn.Module:
    model = build_model(ctx.backbone, ctx.args.method, num_classes).to(ctx.device)
    return model.to(memory_format=torch.channels_last) if ctx.on_cuda else model


def run_config(ctx: Context, sample: TaskSample) -> dict:
    """What a saved task was trained with; a resumed or skipped task must match it."""
    a = ctx.args
    return {"method": a.method, "arch": a.arch, "backbone": ctx.backbone_id, "num_classes": sample.num_classes,
            "image_size": a.image_size, "epochs": a.epochs, "batch_size": a.batch_size, "lr": a.lr,
            "norm_penalty": a.norm_penalty, "patience": a.patience, "seed": a.seed,
            "manifest_sha256": hashlib.sha256(manifest_text(sample).encode()).hexdigest()[:16]}


def load_checkpoint(path: Path) -> dict:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises many types for a damaged file
        raise RunError(f"cannot read {path} ({type(error).__name__}); delete it or pass --fresh") from None


def require_same_config(path: Path, saved: dict, expected: dict) -> None:
    differing = [f"{key} {saved.get(key)!r} (now {value!r})" for key, value in expected.items()
                 if saved.get(key) != value]
    if differing:
        raise RunError(f"{path} was made with other settings or data: {', '.join(differing)}; "
                       "pass --fresh to replace it, or use another --weight folder")


def save_resume_point(ctx: Context, sample: TaskSample, model, optimizer, scheduler, batches, progress) -> None:
    checkpoint = {
        "config": run_config(ctx, sample),
        "state": task_state(model), "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
        "epoch": progress.epoch, "best_correct": progress.best_correct, "best_epoch": progress.best_epoch,
        "best_state": progress.best_state, "history": progress.history,
        "torch_rng": torch.get_rng_state(), "shuffle_rng": batches.generator.get_state(),
        "cuda_rng": torch.cuda.get_rng_state() if ctx.on_cuda else None,
    }
    with atomic_path(ctx.resume_path(sample.task)) as tmp:
        torch.save(checkpoint, tmp)


def restore_resume_point(ctx: Context, sample: TaskSample, model, optimizer, scheduler, batches) -> Progress:
    path = ctx.resume_path(sample.task)
    checkpoint = load_checkpoint(path)
    require_same_config(path, checkpoint["config"], run_config(ctx, sample))
    load_task_state(model, checkpoint["state"])
    optimizer.load_state_dict(checkpoint["optimizer"])
    scheduler.load_state_dict(checkpoint["scheduler"])
    torch.set_rng_state(checkpoint["torch_rng"])
    batches.generator.set_state(checkpoint["shuffle_rng"])
    if ctx.on_cuda and checkpoint["cuda_rng"] is not None:
        torch.cuda.set_rng_state(checkpoint["cuda_rng"])
    return Progress(checkpoint["epoch"], checkpoint["best_correct"], checkpoint["best_epoch"],
                    checkpoint["best_state"], checkpoint["history"])


def train_task(ctx: Context, sample: TaskSample) -> dict:
    """Learn one task with the release's recipe and return what its weights file records."""
    args, task = ctx.args, sample.task
    seed = args.seed + task.order
    torch.manual_seed(seed)
    tensors = ctx.tensors(sample)
    train_batches = DeviceBatches(tensors.train_images, tensors.train_labels, args.batch_size, ctx.device,
                                  shuffle=True, seed=seed, min_last_batch=ctx.min_last_train_batch)
    val_batches = DeviceBatches(tensors.val_images, tensors.val_labels, ctx.eval_batch_size, ctx.device,
                                shuffle=False)
    model = build_task_model(ctx, sample.num_classes)
    optimizer = build_optimizer(ctx, model)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=max(1, args.epochs // 3), gamma=0.1)
    cost = parameter_cost(model)
    step = torch.compile(model) if args.compile else model

    progress = Progress()
    if ctx.resume_path(sample.task).exists():
        progress = restore_resume_point(ctx, sample, model, optimizer, scheduler, train_batches)
        log.info("resuming %s after epoch %d (best %.2f%% at epoch %d)", task.name, progress.epoch,
                 100 * progress.best_correct / val_batches.num_images, progress.best_epoch)
    else:
        log.info("hyper-parameters: %s", " ".join(f"{k}={v}" for k, v in sorted(vars(args).items())))
        log.info("resolved: device %s, %s, eval batch %d, StepLR step %d", ctx.device,
                 "bf16 autocast" if ctx.on_cuda and args.precision == "bf16" else "fp32", ctx.eval_batch_size,
                 scheduler.step_size)
        log.info("label map (class -> label): %s", {key: label for label, key in enumerate(sample.classes)})
        log.info("task-specific parameters: %d (%.3f%% of the backbone's %d), head %d",
                 cost.trainable, cost.percent, cost.backbone, cost.head)
        log.info("images: %d train, %d val; %d classes", len(sample.train), len(sample.val), sample.num_classes)

    while progress.epoch < args.epochs and progress.epoch - progress.best_epoch <= args.patience:
        progress.epoch += 1
        started = time.perf_counter()
        desc = f"{task.name} {progress.epoch}/{args.epochs}"
        loss, train_acc = train_one_epoch(step, optimizer, train_batches, ctx, desc)
        scheduler.step()
        correct = evaluate(model, val_batches, ctx)  # uncompiled: what the report re-evaluates
        if correct > progress.best_correct:
            progress.best_correct, progress.best_epoch = correct, progress.epoch
            progress.best_state = task_state(model)
        val_acc = correct / val_batches.num_images
        progress.history.append({"epoch": progress.epoch, "loss": loss, "train_acc": train_acc, "val_acc": val_acc})
        log.info("epoch %d/%d: train loss %.4f, train acc %.4f, val acc %.4f, best %.4f at epoch %d (%.1fs)",
                 progress.epoch, args.epochs, loss, train_acc, val_acc,
                 progress.best_correct / val_batches.num_images, progress.best_epoch,
                 time.perf_counter() - started)
        save_resume_point(ctx, sample, model, optimizer, scheduler, train_batches, progress)
    if progress.epoch < args.epochs:
        log.info("early stop after epoch %d: no new best for %d epochs", progress.epoch,
                 progress.epoch - progress.best_epoch)
    best_acc = progress.best_correct / val_batches.num_images
    log.info("best epoch %d: val acc %.4f", progress.best_epoch, best_acc)
    return {
        "state": progress.best_state, "config": run_config(ctx, sample),
        "task_id": task.task_id, "task_name": task.name, "label_map": {k: i for i, k in enumerate(sample.classes)},
        "best_epoch": progress.best_epoch, "best_correct": progress.best_correct, "best_acc": best_acc,
        "epochs_run": progress.epoch, "train_images": len(sample.train), "val_images": len(sample.val),
        "trainable_params": cost.trainable, "percent_of_backbone": cost.percent, "history": progress.history,
    }


def read_results(path: Path) -> dict[int, dict]:
    """Rows of a <method>.csv by task id."""
    if not path.exists():
        return {}
    with path.open(newline="") as file:
        return {int(row["task_id"]): row for row in csv.DictReader(file)}


def write_results(path: Path, rows: dict[int, dict]) -> None:
    text = io.StringIO()
    writer = csv.DictWriter(text, CSV_HEADER, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows.values())
    atomic_write_text(path, text.getvalue())


def record_result(path: Path, task_id: int, task_name: str, best_acc: float) -> None:
    """Add (or replace) a task's row in <method>.csv, rewriting the file atomically."""
    rows = read_results(path)
    rows[task_id] = {"task_id": task_id, "task_name": task_name, "best_acc": best_acc}
    write_results(path, rows)


def finished_weights(ctx: Context, sample: TaskSample) -> dict | None:
    """The saved weights of a task this method already finished, or None if it still has to run. The weights
    file is the record; one made with other settings or data is never silently replaced."""
    path = ctx.weight_path(sample.task)
    if not path.exists():
        return None
    saved = load_checkpoint(path)
    require_same_config(path, saved["config"], run_config(ctx, sample))
    return saved


def forget_tasks(ctx: Context, samples: list[TaskSample]) -> None:
    """--fresh: remove the selected tasks' rows, weights, resume points and logs for this method."""
    rows = read_results(ctx.csv_path)
    for sample in samples:
        rows.pop(sample.task.task_id, None)
        for path in (ctx.weight_path(sample.task), ctx.resume_path(sample.task), ctx.log_path(sample.task)):
            path.unlink(missing_ok=True)
    if ctx.csv_path.exists():
        write_results(ctx.csv_path, rows)


@contextlib.contextmanager
def task_log(path: Path):
    """Send the log to the task's own file as well as the console while the task runs."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(path)
    handler.setFormatter(logging.Formatter("%(asctime)s %(message)s", "%Y-%m-%d %H:%M:%S"))
    log.addHandler(handler)
    try:
        yield
    finally:
        log.removeHandler(handler)
        handler.close()


def learn_tasks(ctx: Context, samples: list[TaskSample]) -> None:
    """Learn the tasks in order, skipping those already done and resuming one that was interrupted."""
    for number, sample in enumerate(samples, 1):
        task = sample.task
        saved = finished_weights(ctx, sample)
        if saved is not None:
            log.info("[%d/%d] %s: already done (%s), skipping", number, len(samples), task.name, ctx.weight_path(task))
            if task.task_id not in read_results(ctx.csv_path):  # finished into another --result folder
                record_result(ctx.csv_path, task.task_id, task.name, saved["best_acc"])
            continue
        log.info("[%d/%d] %s (id %d): %d classes", number, len(samples), task.name, task.task_id, sample.num_classes)
        with task_log(ctx.log_path(sample.task)):
            saved = train_task(ctx, sample)
        with atomic_path(ctx.weight_path(sample.task)) as tmp:
            torch.save(saved, tmp)
        record_result(ctx.csv_path, task.task_id, task.name, saved["best_acc"])
        ctx.resume_path(sample.task).unlink(missing_ok=True)


def verify_task(ctx: Context, sample: TaskSample, saved: dict) -> int:
    """Re-load a task's saved state onto a freshly built backbone and count its correct validation images."""
    model = build_task_model(ctx, sample.num_classes)
    load_task_state(model, saved["state"])
    tensors = ctx.tensors(sample)
    batches = DeviceBatches(tensors.val_images, tensors.val_labels, ctx.eval_batch_size, ctx.device, shuffle=False)
    return evaluate(model, batches, ctx)


def percent(fraction: float | None) -> str:
    return "" if fraction is None else f"{100 * fraction:.2f}"


def method_label(method: str) -> str:
    return f"{PAPER_NAMES[method]} ({method})" if method in PAPER_NAMES else method


def write_report(ctx: Context, samples: list[TaskSample]) -> str:
    """Verify every finished task (zero forgetting, checked) and write result/report.md beside the CSVs."""
    method = ctx.args.method
    others = [m for m in METHODS if m != method and (ctx.args.result / f"{m}.csv").exists()]
    other_results = {m: read_results(ctx.args.result / f"{m}.csv") for m in others}
    header = ["order", "id", "task", "classes", "train", "val", "task params (% of backbone)",
              f"best acc % ({PAPER_NAMES.get(method, method)})", "re-evaluated %", "epochs run",
              *[f"best acc % ({PAPER_NAMES.get(m, m)})" for m in others]]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    accuracies: dict[str, list[float]] = {m: [] for m in [method, *others]}
    mismatches = []
    for sample in tqdm(samples, desc="verifying saved tasks", leave=False):
        task, saved = sample.task, finished_weights(ctx, sample)
        if saved is None:
            continue
        correct = verify_task(ctx, sample, saved)
        if correct != saved["best_correct"]:
            mismatches.append(f"{task.name}: recorded {saved['best_correct']} correct, re-evaluated {correct}")
        accuracies[method].append(saved["best_acc"])
        other_cells = []
        for m in others:
            row = other_results[m].get(task.task_id)
            other_cells.append(percent(float(row["best_acc"])) if row else "")
            if row:
                accuracies[m].append(float(row["best_acc"]))
        lines.append("| " + " | ".join(str(cell) for cell in [
            task.order + 1, task.task_id, task.name, sample.num_classes, saved["train_images"], saved["val_images"],
            f"{saved['trainable_params']:,} ({saved['percent_of_backbone']:.3f}%)", percent(saved["best_acc"]),
            percent(correct / saved["val_images"]), saved["epochs_run"], *other_cells]) + " |")
    averages = {m: (sum(a) / len(a) if a else None) for m, a in accuracies.items()}
    lines.append("| " + " | ".join(["", "", f"**average of {len(accuracies[method])}**", "", "", "", "",
                                     percent(averages[method]), "", "", *[percent(averages[m]) for m in others]]) + " |")
    title = (f"# {method_label(method)} on {ctx.args.arch} ({ctx.backbone_id}), {ctx.args.image_size}px\n\n"
             f"Data: `{ctx.source.root}`. Every saved task was re-loaded onto a freshly built backbone and "
             "re-evaluated on its validation split: "
             + ("all re-evaluated accuracies equal the recorded ones.\n\n" if not mismatches else
                f"**{len(mismatches)} MISMATCHES**: {'; '.join(mismatches)}\n\n"))
    report = title + "\n".join(lines) + "\n"
    atomic_write_text(ctx.args.result / "report.md", report)
    if mismatches:
        print(report)
        raise RunError(f"re-evaluation differs from the recorded accuracy for {len(mismatches)} task(s): "
                       + "; ".join(mismatches))
    return report


def run(args: argparse.Namespace) -> int:
    device = resolve_device(args.device)
    if args.data is None:
        prepare_demo_data(args)
    if args.batch_size == 1 and bn_needs_two_images(args.image_size):
        raise RunError("at 32 px or less BatchNorm cannot train on one image per batch: "
                       "use --batch-size 2 or more, or --image-size 33 or more")
    source = open_data(args.data, args.stat)
    tasks = select_tasks(source.tasks, args.tasks)
    prepare_output_folder(args.result, "result")
    if args.check:
        mismatches = check_tasks(source, tasks, args.result, args.workers)
        for mismatch in mismatches:
            print(f"mismatch: {mismatch}", file=sys.stderr)
        print(f"check FAILED: {len(mismatches)} mismatch(es) in {len(tasks)} task(s)" if mismatches
              else f"check passed for {len(tasks)} task(s)")
        return 1 if mismatches else 0

    prepare_output_folder(args.weight, "weight")
    backbone = load_backbone(args.arch, args.weights).to(device)  # each task's copy is then made on the device
    ctx = Context(args, device, source, backbone, backbone_id(args.weights))
    samples = [source.sample(task) for task in tqdm(tasks, desc="sampling tasks", leave=False)]
    check_files_exist(source.root, samples)
    for sample in samples:
        write_manifest(sample, manifest_path(args.result, sample.task))
    torch.backends.cudnn.benchmark = True
    if args.fresh:
        forget_tasks(ctx, samples)
    log.info("%s on %s (%s), %d task(s), device %s", method_label(args.method), args.arch, ctx.backbone_id,
             len(samples), device)
    learn_tasks(ctx, samples)
    selected = {sample.task for sample in samples}
    others = [source.sample(task) for task in source.tasks
              if task not in selected and ctx.weight_path(task).exists()]
    order = {task: index for index, task in enumerate(source.tasks)}
    print(write_report(ctx, sorted(samples + others, key=lambda sample: order[sample.task])))
    return 0


class TqdmHandler(logging.StreamHandler):
    """Console log lines that do not break the progress bars."""

    def emit(self, record: logging.LogRecord) -> None:
        tqdm.write(self.format(record), file=sys.stdout)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if not log.handlers:
        log.addHandler(TqdmHandler())
        log.setLevel(logging.INFO)
    try:
        return run(args)
    except (DatasetError, NetworkError, RunError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: rerun the same command to continue where it stopped", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
