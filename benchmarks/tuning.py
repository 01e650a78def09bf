"""Each shared-backbone baseline with and without --tune, per seed, and what tuning cost: the table of
docs/baselines.md#tuned-against-untuned.

    python benchmarks/tuning.py                                # the six-task sequence, SGD EWC LwF SI ER, seeds 0 1
    python benchmarks/tuning.py --sequence demo --epochs 12    # the demo's three tasks with the demo's epochs
    python benchmarks/tuning.py --methods SGD EWC --seeds 0 --epochs 2 --out /tmp/tuning
    python benchmarks/tuning.py --sequence demo --train-per-class 16   # the demo's tasks, 16 training images a class

Two runs of main.py in this process, each over every method and seed: untuned (the release's recipe and each
method's default option) and with --tune, each into its own folders under --out. Both train resnet18 from the fixed
random init (--weights none, nothing downloaded) at 32 px, as the demo does. The six-task sequence alternates two
domains: the demo's three synthetic domains drawn with seed 0, then drawn again with seed 1 and their colours
inverted. --train-per-class keeps the first so many training images of each class (the validation split stays
whole), for a measurement a small CPU can afford. The table gives each method's average final accuracy (the mean of
its matrix's last row) per seed, untuned and tuned, the values --tune chose, and the wall time of each run.
"""
import argparse
import csv
import shutil
import sys
import time
from pathlib import Path

from PIL import Image, ImageOps

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import main  # noqa: E402
from dataset.sources import open_data  # noqa: E402
from dataset.synthetic import DEMO_TASKS, write_synthetic_dct  # noqa: E402
from network import method_spec  # noqa: E402

METHODS = ("SGD", "EWC", "LwF", "SI", "ER")


SIX = ((0, False), (1, True))  # the six-task sequence: the demo's domains drawn with seed 0, then seed 1 inverted
DEMO = ((0, False),)  # the demo's three tasks as its data gives them


def write_tasks(folder: Path, draws: tuple[tuple[int, bool], ...], train_per_class: int | None = None) -> Path:
    """The demo's three domains drawn once per (seed, inverted) of ``draws``, as task folders
    (``<order>_<domain>[_inverted]/<split>/class<key>/<image>``, which sort in run order), written once;
    ``train_per_class``: keep only the first so many training images of each class."""
    if folder.exists():
        return folder
    scratch = folder.with_name(folder.name + ".partial")
    shutil.rmtree(scratch, ignore_errors=True)
    scratch.mkdir(parents=True)
    for draw, (seed, inverted) in enumerate(draws):
        dct = write_synthetic_dct(scratch / f"dct_{seed}", seed=seed)
        source = open_data(dct.parent, dct)
        for task in (task for task in source.tasks if task.name in DEMO_TASKS):
            order = 3 * draw + DEMO_TASKS.index(task.name) + 1
            name = f"{order}_{task.name}" + ("_inverted" if inverted else "")
            sample = source.sample(task)
            kept = [item for label in range(sample.num_classes)
                    for item in [item for item in sample.train if item[1] == label][:train_per_class]]
            for split, items in (("train", kept), ("val", sample.val)):
                for path, label in items:
                    target = scratch / "tasks" / name / split / f"class{sample.classes[label]}" / Path(path).name
                    target.parent.mkdir(parents=True, exist_ok=True)
                    image = Image.open(dct.parent / path).convert("RGB")
                    (ImageOps.invert(image) if inverted else image).save(target.with_suffix(".png"))
    (scratch / "tasks").rename(folder)
    shutil.rmtree(scratch)
    return folder


def final_accuracy(result: Path, method: str) -> float:
    """The mean of the method's accuracy after the last task (its <method>.csv), in %."""
    with (result / f"{method}.csv").open() as file:
        accuracies = [float(row["best_acc"]) for row in csv.DictReader(file)]
    return 100 * sum(accuracies) / len(accuracies)


def chosen(result: Path, method: str) -> tuple[str, int, float]:
    """What --tune chose, how many configurations it tried, and their seconds in all."""
    with (result / "tuning" / f"{method}.csv").open() as file:
        rows = list(csv.DictReader(file))
    best = next(row for row in rows if row["chosen"] == "1")
    words = ", ".join(f"{name} {best[name]}" for name in method_spec(method).search)
    return words, len(rows), sum(float(row["seconds"]) for row in rows)


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sequence", choices=("six", "demo"), default="six")
    parser.add_argument("--methods", nargs="+", default=list(METHODS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1])
    parser.add_argument("--epochs", type=int, default=2, help="epochs per task (default 2; the demo's are 12)")
    parser.add_argument("--train-per-class", type=int, help="keep this many training images per class (default: "
                        "all, about 64; the validation split stays whole)")
    parser.add_argument("--out", type=Path, default=Path("benchmark_tuning"), help="data, results and weights")
    return parser


def run(args: argparse.Namespace) -> str:
    cut = f"_{args.train_per_class}" if args.train_per_class else ""
    if args.sequence == "demo" and not args.train_per_class:  # the demo's own data, as main.py writes it
        root = args.out / "demo_data"
        if not root.exists():
            args.out.mkdir(parents=True, exist_ok=True)
            write_synthetic_dct(root)
        data = ["--data", str(root), "--stat", str(root / "stat.csv"), "--tasks", *DEMO_TASKS]
    else:
        draws = SIX if args.sequence == "six" else DEMO
        data = ["--data", str(write_tasks(args.out / f"{args.sequence}_tasks{cut}", draws, args.train_per_class))]
    seconds = {}
    for mode, extra in (("untuned", []), ("tuned", ["--tune"])):
        folder = args.out / f"{args.sequence}{cut}" / mode
        started = time.perf_counter()
        code = main.main([*data, "--method", *args.methods, "--seeds", *map(str, args.seeds), *extra,
                          "--arch", "resnet18", "--weights", "none", "--image-size", "32", "--epochs",
                          str(args.epochs), "--result", str(folder / "result"), "--weight", str(folder / "weight"),
                          "--cache-dir", str(args.out / "cache"), "--no-verify"])
        if code:
            raise SystemExit(code)
        seconds[mode] = time.perf_counter() - started
    def seed_folder(mode: str, seed: int) -> Path:
        return args.out / f"{args.sequence}{cut}" / mode / "result" / (f"seed_{seed}" if len(args.seeds) > 1 else "")

    lines = ["| method | seed | untuned % | tuned % | tuned − untuned | --tune chose | configurations | tuning s |",
             "|---|---:|---:|---:|---:|---|---:|---:|"]
    for method in args.methods:
        for seed in args.seeds:
            untuned = final_accuracy(seed_folder("untuned", seed), method)
            tuned = final_accuracy(seed_folder("tuned", seed), method)
            words, configurations, tuning_seconds = chosen(seed_folder("tuned", seed), method)
            lines.append(f"| {method} | {seed} | {untuned:.2f} | {tuned:.2f} | {tuned - untuned:+.2f} | {words} | "
                         f"{configurations} | {tuning_seconds:.0f} |")
    lines.append(f"\nWall time over every method and seed: untuned {seconds['untuned']:.0f} s, tuned (tuning "
                 f"included) {seconds['tuned']:.0f} s, {seconds['tuned'] / seconds['untuned']:.1f} times as long.")
    return "\n".join(lines)


if __name__ == "__main__":
    print(run(get_args_parser().parse_args()))
