"""One command, every GPU figure, one report: the acceptance run of a CUDA machine.

    python benchmarks/acceptance.py                         # on one GPU: its steps' time limits add up to 28 minutes
    python benchmarks/acceptance.py --steps speed torchrun  # a subset, in the usual order
    python benchmarks/acceptance.py --quick                 # the same steps on the CPU at tiny sizes (1-2 minutes)

The steps, in this order, each timed and guarded (a failing step is recorded with its error tail and the next
one still runs):

  parity      bf16 and fp32 reach the same best accuracy on the demo tasks (mean gap <= 1 point)
  speed       benchmarks/speed.py without and with --compile: images/s of paths (a), (b), (c), b/a, b/c, and
              the compile time
  torchrun    1, 2 and 4 processes sharing one GPU: training images/s summed over the processes
  run         a short real run that ends with main.py's verified report
  nan         a diverging run (--lr 1e30 --precision bf16) stops with exit 2, one error line, no weights file
  projection  the wall time of the 53 tasks x 60 epochs from the measured rates and stat.csv's counts

On a GPU every run uses ResNet-50 with --weights none: parity at 64 px for 15 epochs (as tests/test_cuda_parity.py,
its two runs side by side), speed.py at 224 px (the compiled run with --repeats 1), torchrun on 4 equal 15-class
tasks for 5 epochs, the run on the 3 demo tasks at 224 px for 3 epochs. All runs use the first GPU this process may
use. --quick uses resnet18, 32 px, 1-2 epochs, 3-class torchrun tasks, one thread per process, and speed.py
--compile with compiling disabled (TORCH_COMPILE_DISABLE=1: inductor needs minutes on a small CPU).

Epoch times, the process of each task and the peak GPU memory of every process (null on the CPU) are read from the
tasks' metrics files (result/<task>/<method>.metrics.jsonl), training images from the tasks' manifests, and the
verified tasks from result/verification.json: never from the wording of a log or of report.md.
Everything runs through main.py's and speed.py's command lines, with this Python, --weights none and synthetic
data written to a temporary folder: nothing is downloaded or installed. It writes <result>/acceptance_<device>.json
(every figure, the device, the versions, the date, the command line), <result>/acceptance_<device>.md (tables to
paste into the docs) and each command's output under <result>/acceptance_<device>_logs/. The exit status is 1 if
any step failed.
"""
import argparse
import csv
import dataclasses
import json
import os
import re
import shlex
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from training.metrics import read_epochs  # noqa: E402
from training.settings import Layout  # noqa: E402

MAIN = ROOT / "main.py"
SPEED = ROOT / "benchmarks" / "speed.py"
STAT = ROOT / "stat.csv"  # the 53 DCT tasks' train and val counts
METHOD = "Ghost_reduced_v1"  # main.py's default method, CLR
DEMO_TASKS = ("shapes", "stripes", "blob_scenes")  # dataset.synthetic's demo tasks
STEPS = ("parity", "speed", "torchrun", "run", "nan", "projection")
REPRODUCTION_EPOCHS = 60
TAIL_LINES = 20


@dataclass(frozen=True)
class Profile:
    """The sizes of every step: the GPU's, or --quick's tiny CPU ones."""

    device: str
    arch: str
    image_size: int  # speed, torchrun, run and nan
    parity_size: int
    parity_epochs: int
    parity_points: float | None  # the largest mean bf16 - fp32 gap of the best accuracies that passes (None: not
    # judged; --quick's 1-epoch runs say only that both precisions run, since the CPU's bf16 autocast is real)
    run_epochs: int
    torchrun_epochs: int  # the first epoch of each task is the warm-up, left out of the rates
    torchrun_procs: tuple[int, ...]
    torchrun_classes: int  # classes per torchrun task: 15 joins the three demo tasks, fewer take one's first
    speed_args: tuple[str, ...]
    compile_args: tuple[str, ...]
    compile_env: dict  # extra environment of the --compile speed run
    timeouts: dict = field(default_factory=dict)  # seconds per command of a step


GPU = Profile(device="cuda", arch="resnet50", image_size=224, parity_size=64, parity_epochs=15, parity_points=1.0,
              run_epochs=3,
              torchrun_epochs=5, torchrun_procs=(1, 2, 4), torchrun_classes=15,
              speed_args=("--image-size", "224"),
              compile_args=("--image-size", "224", "--compile", "--repeats", "1"), compile_env={},
              timeouts={"parity": 240, "speed": 240, "compile": 360, "torchrun": 180, "run": 180, "nan": 120})
QUICK = Profile(device="cpu", arch="resnet18", image_size=32, parity_size=32, parity_epochs=1, parity_points=None,
                run_epochs=1,
                torchrun_epochs=2, torchrun_procs=(1, 2), torchrun_classes=3,
                speed_args=("--image-size", "32", "--steps", "2", "--warmup", "1", "--repeats", "1",
                            "--photo-size", "0", "0"),
                compile_args=("--image-size", "32", "--steps", "2", "--warmup", "1", "--repeats", "1",
                              "--photo-size", "0", "0", "--compile"),
                # inductor takes minutes on a 2-core CPU: --quick checks the command and its JSON, not a compile
                compile_env={"TORCH_COMPILE_DISABLE": "1"},
                timeouts={"parity": 600, "speed": 600, "compile": 600, "torchrun": 600, "run": 600, "nan": 600})


class StepFailed(Exception):
    """A step's check did not hold; the message says which, the tail what the command printed last."""

    def __init__(self, message: str, tail: str = ""):
        super().__init__(message)
        self.tail = tail


def positive(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"expected a positive whole number, got {text!r}")
    return int(text)


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--result", type=Path, default=Path("result"), help="where the JSON, the markdown and the "
                        "command logs go (default ./result/)")
    parser.add_argument("--steps", nargs="+", choices=STEPS, metavar="NAME",
                        help=f"run only these steps, in the usual order ({' '.join(STEPS)})")
    parser.add_argument("--quick", action="store_true", help="the same steps on the CPU at tiny sizes (resnet18, "
                        "32 px, 1-2 epochs, 1 and 2 torchrun processes), to check the command itself")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                        help="auto = cuda when available (default); --quick always uses the CPU")
    parser.add_argument("--nproc", type=positive, nargs="+", metavar="N",
                        help="torchrun process counts (default: 1 2 4; with --quick 1 2)")
    return parser


# ---- running commands ----

class Runner:
    """Runs this Python on a command line with a time limit, saving its output; kills the whole process group
    (torchrun's workers too) when the limit passes."""

    def __init__(self, work: Path, logs: Path, env: dict):
        self.work, self.logs, self.env = work, logs, env

    def __call__(self, name: str, argv: list[str], timeout: float, cwd: Path | None = None,
                 env: dict | None = None) -> tuple[int, str]:
        """(exit status, output): stdout and stderr together, as the command printed them."""
        command = [sys.executable, *argv]
        environment = {**os.environ, "PYTHONUNBUFFERED": "1", **self.env, **(env or {})}
        log = self.logs / f"{name}.log"
        with log.open("w") as out:
            out.write("$ " + shlex.join(command) + "\n")
            out.flush()
            started = time.perf_counter()
            process = subprocess.Popen(command, cwd=cwd or self.work, env=environment, stdout=out,
                                       stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
            try:
                code = process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                last = tail_of(log)  # what it was doing, before the stop adds its tracebacks
                stop_group(process)
                raise StepFailed(f"{name}: no result after {timeout:.0f} s (stopped)", last) from None
            except BaseException:
                stop_group(process)
                raise
        output = log.read_text(errors="replace")
        with log.open("a") as out:
            out.write(f"\n$ exit status {code} after {time.perf_counter() - started:.1f} s\n")
        return code, output

    def checked(self, name: str, argv: list[str], timeout: float, **kwargs) -> str:
        """The output of a command that must exit 0."""
        code, output = self(name, argv, timeout, **kwargs)
        if code != 0:
            raise StepFailed(f"{name}: exit status {code}", tail(output))
        return output


def stop_group(process: subprocess.Popen) -> None:
    """Stop the command and every process it started (its own session), politely first."""
    for sig, wait in ((signal.SIGTERM, 10), (signal.SIGKILL, 10)):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            return
        try:
            process.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue


def tail(text: str, lines: int = TAIL_LINES) -> str:
    """The last lines of a command's output, progress bars' carriage-return updates collapsed."""
    kept = [line.rsplit("\r", 1)[-1].rstrip() for line in text.split("\n")]
    return "\n".join([line[:400] for line in kept if line.strip()][-lines:])


def tail_of(path: Path) -> str:
    return tail(path.read_text(errors="replace")) if path.exists() else ""


# ---- what the runs leave behind ----

@dataclass
class TaskMetrics:
    """What one task's metrics file and manifest say: its training images and each epoch's record."""

    task: str
    train_images: int
    epochs: list[dict]  # the task's metrics records, in order (at least one)

    @property
    def process(self) -> int:
        """The process that learnt it (its last epoch's: a resumed task may have started in another)."""
        return self.epochs[-1]["process"]


def run_layout(folder: Path) -> Layout:
    """The files of a main.py run of main_args(name): its --result and --weight folders under ``folder``."""
    return Layout(folder / "result", folder / "weight")


def manifest_train_images(path: Path) -> int:
    with path.open(newline="") as file:
        return sum(row["split"] == "train" for row in csv.DictReader(file))


def read_task_metrics(layout: Layout) -> list[TaskMetrics]:
    """Every task of the result folder with an epoch in its metrics file."""
    tasks = []
    for folder in sorted(path for path in layout.result.iterdir() if path.is_dir()):
        epochs = read_epochs(layout.metrics(folder.name, METHOD))
        if epochs:
            tasks.append(TaskMetrics(folder.name, manifest_train_images(layout.manifest(folder.name)), epochs))
    return tasks


def peak_memory(tasks: list[TaskMetrics]) -> dict:
    """The largest per-epoch peak GPU memory of each process's epochs, in MiB (null where it has none: the CPU)."""
    by_rank: dict[int, float | None] = {}
    for epoch in (epoch for task in tasks for epoch in task.epochs):
        known = [value for value in (by_rank.get(epoch["process"]), epoch["peak_gpu_mib"]) if value is not None]
        by_rank[epoch["process"]] = max(known) if known else None
    values = [value for value in by_rank.values() if value is not None]
    return {"per_process_mib": [by_rank[rank] for rank in sorted(by_rank)], "max_mib": max(values) if values else None}


def training_rates(tasks: list[TaskMetrics]) -> dict:
    """Training images/s from the tasks' epoch records, whose wall_s times each epoch's training and validation pass.

    Per process: its tasks' training images times their epochs after the first (the first includes cuDNN's
    algorithm search and is a warm-up), over those epochs' seconds. Summed over the processes, which train side by
    side. The window rate checks that sum: every epoch's images over the longest process's summed epoch seconds,
    the job's training time when its processes run side by side."""
    per_rank: dict[int, list[float]] = {}
    busy: dict[int, float] = {}
    for task in tasks:
        timed = task.epochs[1:] or task.epochs  # a one-epoch task: its only epoch, warm-up and all
        images, seconds = per_rank.setdefault(task.process, [0.0, 0.0])
        per_rank[task.process] = [images + task.train_images * len(timed), seconds + sum(e["wall_s"] for e in timed)]
        busy[task.process] = busy.get(task.process, 0.0) + sum(e["wall_s"] for e in task.epochs)
    rates = {rank: images / seconds for rank, (images, seconds) in sorted(per_rank.items()) if seconds > 0}
    if not rates:
        raise StepFailed("no epoch records in the tasks' metrics files")
    all_images = sum(task.train_images * len(task.epochs) for task in tasks)
    window = max(busy.values())
    return {"train_images_per_s": sum(rates.values()), "per_process_train_images_per_s": list(rates.values()),
            "train_images_per_s_window": all_images / window if window > 0 else None,
            "tasks_per_process": [sum(task.process == rank for task in tasks) for rank in sorted(per_rank)],
            "epochs": sum(len(task.epochs) for task in tasks)}


def best_accuracies(result: Path) -> dict[str, float]:
    path = result / f"{METHOD}.csv"
    if not path.exists():
        raise StepFailed(f"no {path}")
    with path.open(newline="") as file:
        return {row["task_name"]: float(row["best_acc"]) for row in csv.DictReader(file)}


def stat_counts(path: Path = STAT) -> tuple[int, int, int]:
    """(tasks, training images, validation images) of a stat.csv."""
    with path.open(newline="") as file:
        rows = list(csv.DictReader(file))
    return len(rows), sum(int(row["train_num"]) for row in rows), sum(int(row["test_num"]) for row in rows)


# ---- the steps ----

class Acceptance:
    def __init__(self, profile: Profile, run: Runner, work: Path, procs: tuple[int, ...]):
        self.profile, self.run, self.work, self.procs = profile, run, work, procs
        self.data = work / "data"
        self.cache = work / "cache"  # decoded images, shared by every run (entries are written atomically)
        self.figures: dict[str, dict] = {}

    def main_args(self, name: str, *extra: str, data: Path | None = None, tasks: tuple[str, ...] | None = DEMO_TASKS,
                  image_size: int | None = None) -> list[str]:
        """main.py's command line for a run in its own folders under the work folder."""
        p, folder = self.profile, self.work / name
        args = ["--data", str(data or self.data)]
        args += ["--stat", str(self.data / "stat.csv")] if data is None else []
        args += ["--tasks", *tasks] if tasks else []
        return args + ["--weights", "none", "--arch", p.arch, "--image-size", str(image_size or p.image_size),
                       "--device", p.device, "--result", str(folder / "result"), "--weight", str(folder / "weight"),
                       "--cache-dir", str(self.cache), *extra]

    def write_data(self) -> None:
        self.run.checked("data", ["-m", "dataset.synthetic", str(self.data)], 300, cwd=ROOT)

    # parity
    def parity(self) -> dict:
        p = self.profile
        runs = {}
        commands = {precision: [str(MAIN), *self.main_args(f"parity_{precision}", "--epochs", str(p.parity_epochs),
                                                            "--precision", precision, image_size=p.parity_size)]
                    for precision in ("bf16", "fp32")}
        with concurrent(2) as pool:  # two processes side by side: accuracy does not depend on the neighbour
            futures = {precision: pool.submit(self.run.checked, f"parity_{precision}", argv, p.timeouts["parity"])
                       for precision, argv in commands.items()}
            for precision, future in futures.items():
                future.result()
                runs[precision] = best_accuracies(self.work / f"parity_{precision}" / "result")
        bf16, fp32 = runs["bf16"], runs["fp32"]
        missing = [task for task in DEMO_TASKS if task not in bf16 or task not in fp32]
        if missing:
            raise StepFailed(f"no best accuracy for {', '.join(missing)} in the runs' {METHOD}.csv")
        gap = 100 * sum(bf16[task] - fp32[task] for task in DEMO_TASKS) / len(DEMO_TASKS)
        figures = {"image_size": p.parity_size, "epochs": p.parity_epochs, "tasks": list(DEMO_TASKS),
                   "best_acc_bf16": bf16, "best_acc_fp32": fp32, "mean_gap_points": gap,
                   "limit_points": p.parity_points,
                   "peak_gpu_memory": {precision: peak_memory(read_task_metrics(run_layout(self.work / f"parity_"
                                                                                            f"{precision}")))
                                       for precision in runs}}
        self.figures["parity"] = figures
        if p.parity_points is not None and abs(gap) > p.parity_points:
            raise StepFailed(f"bf16 - fp32 mean best-accuracy gap {gap:+.2f} points exceeds {p.parity_points} "
                             f"(bf16 {bf16}, fp32 {fp32})")
        return figures

    # speed
    def speed(self) -> dict:
        p = self.profile
        figures, failures = {}, []
        for variant, extra, env, timeout in (("plain", p.speed_args, {}, p.timeouts["speed"]),
                                             ("compile", p.compile_args, p.compile_env, p.timeouts["compile"])):
            folder = self.work / f"speed_{variant}"
            argv = [str(SPEED), "--device", p.device, "--arch", p.arch, *extra, "--result", str(folder)]
            progress(f"  speed.py {' '.join(extra)}")
            try:
                self.run.checked(f"speed_{variant}", argv, timeout, env=env)
                saved = json.loads(next(folder.glob("benchmark_*.json")).read_text())
            except StepFailed as error:  # the other variant's figures still count
                failures.append(error)
                continue
            rates, ratios = saved["images_per_s"], saved["ratios"]
            figures[variant] = {
                "train_images_per_s": {path[0]: rates[path]["train_images_per_s"] for path in rates},
                "eval_images_per_s": {path[0]: rates[path]["eval_images_per_s"] for path in rates},
                "train_b_over_a": ratios["train_b_over_a"], "train_b_over_c": ratios["train_b_over_c"],
                "eval_b_over_a": ratios["eval_b_over_a"], "eval_b_over_c": ratios["eval_b_over_c"],
                "compile_seconds": saved.get("compile_seconds"),
                "compile_disabled": variant == "compile" and bool(env),  # --quick: the uncompiled warm-up
                "preprocessing_images_per_s": saved["preprocessing_images_per_s"],
                "settings": saved["settings"]}
        self.figures["speed"] = figures
        if failures:
            raise StepFailed("; ".join(str(error) for error in failures), failures[-1].tail)
        return figures

    # torchrun
    def torchrun_data(self) -> Path:
        """Four equal tasks as task folders whose class folders link to the synthetic images, so 1, 2 and 4
        processes share the same work evenly. Each task has the classes of the three demo tasks joined (15), or with
        --quick the first 3 classes of one demo task."""
        root = self.work / "torchrun_data"
        if root.exists():
            return root
        originals = self.data / "original_images"
        for index in range(4):
            if self.profile.torchrun_classes == 15:
                classes = [(source, name) for source in DEMO_TASKS
                           for name in sorted(entry.name for entry in (originals / source / "train").iterdir())]
            else:
                source = DEMO_TASKS[index % len(DEMO_TASKS)]
                classes = [(source, name) for name in sorted(entry.name for entry in
                                                             (originals / source / "train").iterdir())]
                classes = classes[:self.profile.torchrun_classes]
            for split in ("train", "val"):
                for source, name in classes:
                    link = root / f"task{index + 1}" / split / f"{source}_{name}"
                    link.parent.mkdir(parents=True, exist_ok=True)
                    link.symlink_to(originals / source / split / name, target_is_directory=True)
        return root

    def torchrun(self) -> dict:
        p = self.profile
        data = self.torchrun_data()
        measured: dict[str, dict] = {}
        figures = {"tasks": 4, "classes_per_task": p.torchrun_classes, "epochs": p.torchrun_epochs,
                   "image_size": p.image_size, "processes": measured,
                   "rate": "per process: its tasks' training images x their epochs after the first, over those "
                           "epochs' recorded seconds (each a training and a validation pass); summed over the "
                           "processes. window: every epoch's training images over the longest process's summed "
                           "epoch seconds"}
        failures = []
        for procs in self.procs:
            name = f"torchrun_{procs}"
            argv = ["-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(procs), str(MAIN),
                    *self.main_args(name, "--epochs", str(p.torchrun_epochs), data=data, tasks=None)]
            started = time.perf_counter()
            try:
                self.run.checked(name, argv, p.timeouts["torchrun"])
                tasks = read_task_metrics(run_layout(self.work / name))
                if len(tasks) != 4:
                    raise StepFailed(f"{name}: {len(tasks)} tasks with metrics files, expected 4")
                measured[str(procs)] = {**training_rates(tasks), "peak_gpu_memory": peak_memory(tasks),
                                        "wall_seconds": time.perf_counter() - started}
            except StepFailed as error:
                failures.append(error)
            progress(f"  torchrun {procs} process(es): " + (
                f"{measured[str(procs)]['train_images_per_s']:,.0f} training img/s summed"
                if str(procs) in measured else "failed"))
        self.figures["torchrun"] = figures
        if failures:
            raise StepFailed("; ".join(str(error) for error in failures), failures[-1].tail)
        return figures

    # run
    def real_run(self) -> dict:
        p = self.profile
        layout = run_layout(self.work / "run")
        output = self.run.checked("run", [str(MAIN), *self.main_args("run", "--epochs", str(p.run_epochs))],
                                  p.timeouts["run"])
        found = (json.loads(layout.verification.read_text()) if layout.verification.exists() else {}).get(METHOD, {})
        tasks = read_task_metrics(layout)
        figures = {"image_size": p.image_size, "epochs": p.run_epochs, "tasks": list(DEMO_TASKS),
                   "best_acc": best_accuracies(layout.result), "verified_tasks": found.get("equal", 0),
                   "train_images_per_s": training_rates(tasks)["train_images_per_s"] if tasks else None,
                   "peak_gpu_memory": peak_memory(tasks)}
        self.figures["run"] = figures
        if figures["verified_tasks"] != len(DEMO_TASKS) or found.get("mismatches"):
            raise StepFailed(f"{layout.verification} does not say that all {len(DEMO_TASKS)} re-evaluated accuracies "
                             f"equal the recorded ones: {found or 'no entry for ' + METHOD}", tail(output))
        return figures

    # nan
    def nan(self) -> dict:
        p = self.profile
        weight = self.work / "nan" / "weight"
        code, output = self.run("nan", [str(MAIN), *self.main_args("nan", "--epochs", "2", "--lr", "1e30",
                                                                   "--precision", "bf16", tasks=DEMO_TASKS[:1])],
                                p.timeouts["nan"])
        shown = [line.rsplit("\r", 1)[-1] for line in output.split("\n")]  # a progress bar may precede it
        errors = [line for line in shown if line.startswith("error:")]
        weights = sorted(path.name for path in weight.glob("*.pt") if not path.name.endswith(".resume.pt"))
        figures = {"exit_status": code, "error_lines": errors, "weights_files": weights}
        self.figures["nan"] = figures
        problems = ([f"exit status {code}, expected 2"] if code != 2 else [])
        problems += [f"{len(errors)} error: lines, expected 1"] if len(errors) != 1 else []
        problems += ["the error line does not say the loss became nan or inf"] \
            if errors and not re.search(r"loss became -?(nan|inf)", errors[0]) else []
        problems += [f"weights file(s) left: {', '.join(weights)}"] if weights else []
        if problems:
            raise StepFailed("; ".join(problems), tail(output))
        return figures

    # projection
    def projection(self) -> dict:
        tasks, train, val = stat_counts()
        hours = {}
        for procs, figures in self.figures.get("torchrun", {}).get("processes", {}).items():
            hours[f"torchrun_{procs}"] = REPRODUCTION_EPOCHS * train / figures["train_images_per_s"] / 3600
        for variant, figures in self.figures.get("speed", {}).items():
            hours[f"speed_b_{variant}"] = REPRODUCTION_EPOCHS * (train / figures["train_images_per_s"]["b"]
                                                                 + val / figures["eval_images_per_s"]["b"]) / 3600
        if not hours:
            raise StepFailed("nothing measured to project from: run it with the speed or torchrun step")
        best = min(hours, key=hours.get)
        figures = {"tasks": tasks, "epochs": REPRODUCTION_EPOCHS, "train_images": train, "val_images": val,
                   "hours": hours, "best": best, "best_hours": hours[best],
                   "method": "torchrun_N: 60 x training images / the summed epoch rate of N processes on one GPU "
                             "(its epochs include a validation pass at the synthetic tasks' val/train ratio, 0.14, "
                             "where DCT's is 0.10); speed_b_*: 60 x (training images / (b) train rate + validation "
                             "images / (b) eval rate). Early stopping only shortens it; per-task preprocessing, "
                             "start-up and per-epoch resume points are not included"}
        self.figures["projection"] = figures
        return figures


class concurrent:
    """A small thread pool as a context manager (threads only wait on subprocesses)."""

    def __init__(self, workers: int):
        from concurrent.futures import ThreadPoolExecutor
        self.pool = ThreadPoolExecutor(workers)

    def __enter__(self):
        return self.pool

    def __exit__(self, *exc) -> None:
        self.pool.shutdown(wait=True)


# ---- reporting ----

START = [time.perf_counter()]  # reset by main()


def clock() -> str:
    seconds = int(time.perf_counter() - START[0])
    return f"{seconds // 60}:{seconds % 60:02d}"


def progress(text: str) -> None:
    print(f"[{clock()}] {text}", flush=True)


PROBE = """
import json, os, platform, sys
import torch, torchvision
cuda = sys.argv[1] != "cpu" and torch.cuda.is_available()
threads = torch.get_num_threads()
cpu = f"CPU ({platform.processor() or platform.machine()}, {os.cpu_count()} cores, {threads} thread(s) per process)"
print(json.dumps({"device_type": "cuda" if cuda else "cpu", "device": torch.cuda.get_device_name(0) if cuda else cpu,
                  "torch": torch.__version__, "torchvision": torchvision.__version__, "cuda": torch.version.cuda,
                  "python": platform.python_version()}))
"""


def probe(run: Runner, device: str) -> dict:
    """The device and versions, read in a child process so that this one never holds a CUDA context."""
    output = run.checked("probe", ["-c", PROBE, device], 120)
    return json.loads(output.strip().splitlines()[-1])


def quick_threads() -> dict:
    """--quick: one thread per process (unless OMP_NUM_THREADS says otherwise). Runs side by side and a loaded CPU
    then share the cores without OpenMP threads waiting on each other, which can slow a step tenfold."""
    return {"OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}


def one_gpu() -> dict:
    """Every run on the first GPU this process may use, so 2 and 4 torchrun processes share one GPU on a machine
    with several."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",")[0].strip()
    return {"CUDA_VISIBLE_DEVICES": visible or "0"}


def summary_line(name: str, figures: dict | None, error: str | None) -> str:
    """One readable line of a step's main figures."""
    if error:
        return error.splitlines()[0][:200]
    if not figures:
        return ""
    if name == "parity":
        return f"mean gap bf16 - fp32 {figures['mean_gap_points']:+.2f} points"
    if name == "speed":
        return "; ".join(f"{variant}: train (b) {f['train_images_per_s']['b']:,.0f} img/s, b/a "
                         f"{f['train_b_over_a']:.2f}x, b/c {f['train_b_over_c']:.2f}"
                         + (f", compile {f['compile_seconds']:.0f} s" if f.get("compile_seconds")
                            and not f.get("compile_disabled") else "")
                         for variant, f in figures.items())
    if name == "torchrun":
        return ", ".join(f"{procs} process(es) {f['train_images_per_s']:,.0f}"
                         for procs, f in figures["processes"].items()) + " training img/s summed"
    if name == "run":
        return f"{figures['verified_tasks']} task(s) re-evaluated equal to their record"
    if name == "nan":
        return f"exit {figures['exit_status']}, {len(figures['error_lines'])} error line, no weights file"
    if name == "projection":
        return f"53 tasks x 60 epochs: {figures['best_hours']:.1f} h ({figures['best']})"
    return ""


def fmt(value, spec: str = ",.0f", unit: str = "") -> str:
    return "n/a" if value is None else f"{value:{spec}}{unit}"


def markdown(report: dict) -> str:
    """The tables to paste into the docs."""
    steps = report["steps"]
    passed = sum(step["status"] == "passed" for step in steps.values())
    cuda = f"CUDA {report['cuda']}, " if report["device_type"] == "cuda" else ""
    lines = [f"**Acceptance on {report['device']}** (torch {report['torch']}, torchvision {report['torchvision']}, "
             f"{cuda}{report['date'][:10]}, `{report['command']}`): {passed} of {len(steps)} step(s) passed in "
             f"{report['wall_seconds'] / 60:.1f} min.", "",
             "| step | measured | result | time |", "|---|---|---|---:|"]

    def row(step: str, label: str, text: str) -> None:
        entry = steps[step]
        status = entry["status"] if not entry["error"] else f"**{entry['status']}**"
        lines.append(f"| {label} | {text} | {status} | {entry['seconds']:.0f} s |")

    figures = {name: step["figures"] or {} for name, step in steps.items()}
    if "parity" in steps:
        f = figures["parity"]
        text = (f"best accuracy bf16 {mean_percent(f['best_acc_bf16'])}, fp32 {mean_percent(f['best_acc_fp32'])} "
                f"(mean of the 3 demo tasks, {f['image_size']} px, {plural(f['epochs'], 'epoch')}): gap "
                f"{f['mean_gap_points']:+.2f} points "
                + (f"(limit ±{f['limit_points']:g})" if f["limit_points"] is not None else "(not judged with --quick)")
                if f else steps["parity"]["error"])
        row("parity", "parity bf16 / fp32", one_line(text))
    if "speed" in steps:
        parts = []
        for variant, f in figures["speed"].items():
            label = ("with --compile (compiling disabled by --quick)" if f.get("compile_disabled") else
                     "with --compile" if variant == "compile" else "without --compile")
            parts.append(f"{label}: train (a) "
                         f"{fmt(f['train_images_per_s']['a'])}, (b) {fmt(f['train_images_per_s']['b'])}, (c) "
                         f"{fmt(f['train_images_per_s']['c'])} img/s, b/a {f['train_b_over_a']:.2f}×, b/c "
                         f"{f['train_b_over_c']:.2f}; eval (a) {fmt(f['eval_images_per_s']['a'])}, (b) "
                         f"{fmt(f['eval_images_per_s']['b'])}, (c) {fmt(f['eval_images_per_s']['c'])} img/s, b/a "
                         f"{f['eval_b_over_a']:.2f}×, b/c {f['eval_b_over_c']:.2f}"
                         + ("" if f.get("compile_disabled") or f.get("compile_seconds") is None
                            else f"; compile {f['compile_seconds']:.0f} s"))
        row("speed", "speed.py", one_line("<br>".join(parts) or steps["speed"]["error"]))
    if "torchrun" in steps:
        f = figures["torchrun"].get("processes", {})
        text = "; ".join(f"{procs} process(es): {fmt(m['train_images_per_s'])} training img/s summed "
                         f"(window {fmt(m['train_images_per_s_window'])}), peak GPU memory per process "
                         f"{fmt(m['peak_gpu_memory']['max_mib'], unit=' MiB')}" for procs, m in f.items())
        row("torchrun", "torchrun on one device", one_line(text or steps["torchrun"]["error"]))
    if "run" in steps:
        f = figures["run"]
        text = (f"{f['verified_tasks']}/3 demo tasks re-evaluated equal to their record ({f['image_size']} px, "
                f"{plural(f['epochs'], 'epoch')}, best {mean_percent(f['best_acc'])} mean), peak GPU memory "
                f"{fmt(f['peak_gpu_memory']['max_mib'], unit=' MiB')}" if f else steps["run"]["error"])
        row("run", "verified run", one_line(text))
    if "nan" in steps:
        f = figures["nan"]
        left = plural(len(f["weights_files"]), "weights file") if f and f["weights_files"] else "no weights file"
        text = (f"`--lr 1e30 --precision bf16`: exit {f['exit_status']}, "
                f"{plural(len(f['error_lines']), '`error:` line')}, {left}" if f else steps["nan"]["error"])
        row("nan", "NaN stop", one_line(text))
    if "projection" in steps:
        f = figures["projection"]
        text = ("; ".join(f"{projection_label(name)}: {hours:.1f} h" for name, hours in f["hours"].items())
                if f else steps["projection"]["error"])
        row("projection", "53 tasks × 60 epochs, one device", one_line(text))
    return "\n".join(lines) + "\n"


def projection_label(name: str) -> str:
    """torchrun_4 -> 4 processes, speed_b_compile -> speed.py (b) --compile."""
    if name.startswith("torchrun_"):
        return plural(int(name.split("_")[1]), "process").replace("processs", "processes")
    return "speed.py (b)" + (" --compile" if name.endswith("compile") else "")


def plural(count: int, noun: str) -> str:
    return f"{count} {noun}{'' if count == 1 else 's'}"


def mean_percent(accuracies: dict[str, float]) -> str:
    return f"{100 * sum(accuracies.values()) / len(accuracies):.1f}%" if accuracies else "n/a"


def one_line(text: str | None) -> str:
    return " ".join((text or "").split()).replace("|", "\\|")


def write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


# ---- the command ----

def main(argv: list[str] | None = None) -> int:
    args = get_args_parser().parse_args(argv)
    START[0] = time.perf_counter()
    profile = QUICK if args.quick else GPU
    selected = [step for step in STEPS if not args.steps or step in args.steps]
    args.result.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="clr-acceptance-") as tmp:
        work = Path(tmp)
        early_logs = work / "logs"
        early_logs.mkdir()
        run = Runner(work, early_logs, quick_threads() if args.quick else {} if args.device == "cpu" else one_gpu())
        try:
            info = probe(run, "cpu" if args.quick else args.device)
        except StepFailed as error:
            print(f"error: cannot start torch: {error}\n{error.tail}", file=sys.stderr)
            return 2
        if info["device_type"] == "cpu" and not args.quick and args.device != "cpu":
            print("error: torch sees no CUDA device. This command measures a GPU: use --quick to check it on the CPU "
                  "in a minute or two, or --device cpu to run the GPU-sized steps on the CPU (hours)", file=sys.stderr)
            return 2
        profile = dataclasses.replace(profile, device=info["device_type"])
        logs = args.result / f"acceptance_{info['device_type']}_logs"
        logs.mkdir(exist_ok=True)
        for old in logs.glob("*.log"):
            old.unlink()
        run.logs = logs
        procs = tuple(args.nproc or profile.torchrun_procs)
        report = {"device": info["device"], "device_type": info["device_type"],
                  "environment": run.env,
                  "torch": info["torch"], "torchvision": info["torchvision"], "cuda": info["cuda"],
                  "python": info["python"], "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                  "command": shlex.join([Path(sys.executable).name, *sys.argv]) if argv is None
                  else shlex.join(["python", "benchmarks/acceptance.py", *argv]),
                  "quick": args.quick, "profile": dataclasses.asdict(profile),
                  "torchrun_procs": list(procs), "passed": None, "wall_seconds": None, "steps": {}}
        json_path = args.result / f"acceptance_{info['device_type']}.json"
        md_path = args.result / f"acceptance_{info['device_type']}.md"
        progress(f"acceptance on {info['device']}: torch {info['torch']}"
                 f"{', CUDA ' + str(info['cuda']) if info['device_type'] == 'cuda' else ''}; "
                 f"steps {' '.join(selected)}{' (--quick)' if args.quick else ''}")
        acceptance = Acceptance(profile, run, work, procs)
        steps: dict[str, Callable[[], dict]] = {
            "parity": acceptance.parity, "speed": acceptance.speed, "torchrun": acceptance.torchrun,
            "run": acceptance.real_run, "nan": acceptance.nan, "projection": acceptance.projection}
        needs_data = any(step != "projection" for step in selected)
        if needs_data:
            try:
                acceptance.write_data()
                progress("synthetic data written")
            except StepFailed as error:
                print(f"error: cannot write the synthetic data: {error}\n{error.tail}", file=sys.stderr)
                return 2
        for number, name in enumerate(selected, 1):
            progress(f"{number}/{len(selected)} {name} ...")
            started = time.perf_counter()
            figures, error, output_tail = None, None, None
            try:
                figures = steps[name]()
            except StepFailed as failure:
                error, output_tail = str(failure), failure.tail or None
                figures = acceptance.figures.get(name)
            except Exception as failure:  # a bug in this script: recorded, and the next step still runs
                error, output_tail = f"{type(failure).__name__}: {failure}", None
                figures = acceptance.figures.get(name)
            seconds = time.perf_counter() - started
            status = "failed" if error else "passed"
            report["steps"][name] = {"status": status, "seconds": seconds, "figures": figures, "error": error,
                                     "tail": output_tail}
            progress(f"{number}/{len(selected)} {name} {status} in {seconds:.0f} s: "
                     f"{summary_line(name, figures, error)}")
            if output_tail:
                print("    " + output_tail.replace("\n", "\n    "), flush=True)
            report["wall_seconds"] = time.perf_counter() - START[0]
            report["passed"] = all(step["status"] == "passed" for step in report["steps"].values())
            write_atomic(json_path, json.dumps(report, indent=2) + "\n")
        write_atomic(md_path, markdown(report))
    failed = [name for name, step in report["steps"].items() if step["status"] != "passed"]
    progress(f"{'FAILED: ' + ' '.join(failed) if failed else 'all steps passed'}; wrote {json_path} and {md_path}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
