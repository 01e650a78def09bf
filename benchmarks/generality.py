"""Does CLR work on this CNN? CLR under each norm policy and kernel placement, the linear probe, and CLR on a random
init, on a backbone and tasks you name: a markdown table of accuracy and cost per task (docs/methods.md).

    python benchmarks/generality.py --arch resnet18 --weights none               # the demo's tasks, 32 px, 12 epochs
    python benchmarks/generality.py --arch timm:efficientnet_lite0 --weights /tmp/lite0.pt --image-size 64 --epochs 6
    python benchmarks/generality.py --arch mobilenet_v3_small --weights none --configs clr-train-every linear

Each configuration is one main.py run, called in-process (``main.main``) with its own --result and --weight folders
under --scratch, so training, skipping a finished task and the records are main.py's own; the table is read from
the task records it wrote (best validation accuracy, trainable parameters, % of the backbone, stored bytes). Run it
again with the same --scratch and finished configurations are read, not retrained. The configurations:

  clr-<norm>-<placement>  CLR (Ghost_reduced_v1) with --norm <norm> (train, frozen, affine) and --clr-placement
                          <placement> (every, skip-depthwise)
  linear                  the linear probe (its norm layers frozen)
  clr-random              CLR with the release's settings on a random init of the same architecture (--weights
                          none): how much of CLR's accuracy the weights give (left out when --weights is none)

Without --data it uses main.py's demo data (written to ./demo_data on first use) and its tasks.
"""
import argparse
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import main  # noqa: E402
from inference.trained import record_paths  # noqa: E402
from network import CLR_PLACEMENTS, NORM_POLICIES  # noqa: E402
from training.record import TaskRecord  # noqa: E402
from training.settings import Layout  # noqa: E402

CLR = "Ghost_reduced_v1"


@dataclass(frozen=True)
class Configuration:
    name: str
    label: str  # the table's row
    method: str
    options: tuple[str, ...]  # main.py options besides the run's own
    random_init: bool = False  # --weights none, whatever the run's weights


CONFIGURATIONS = (
    *(Configuration(f"clr-{norm}-{placement}", f"CLR, `--norm {norm} --clr-placement {placement}`", CLR,
                    ("--norm", norm, "--clr-placement", placement))
      for placement in CLR_PLACEMENTS for norm in NORM_POLICIES),
    Configuration("linear", "Linear (norm layers frozen)", "Linear", ()),
    Configuration("clr-random", "CLR, `--norm train --clr-placement every`, random init", CLR, (), random_init=True),
)
BY_NAME = {configuration.name: configuration for configuration in CONFIGURATIONS}


@dataclass(frozen=True)
class Row:
    """One configuration's records, task by task in run order."""

    label: str
    accuracy: dict[str, float]  # task name -> best validation accuracy
    trainable: list[int]  # per task: the parameters it trains and keeps
    percent: list[float]  # per task: % of the backbone
    stored_bytes: list[int]  # per task

    @property
    def mean_accuracy(self) -> float:
        return sum(self.accuracy.values()) / len(self.accuracy)


def layout(scratch: Path, configuration: Configuration) -> Layout:
    return Layout(result=scratch / configuration.name / "result", weight=scratch / configuration.name / "weight")


def run_configuration(configuration: Configuration, run_options: list[str], weights: str, scratch: Path) -> None:
    """One main.py run of the configuration, into its own folders; a failed run stops the benchmark in one line."""
    folders = layout(scratch, configuration)
    argv = [*run_options, "--method", configuration.method, "--weights", "none" if configuration.random_init
            else weights, *configuration.options, "--result", str(folders.result), "--weight", str(folders.weight),
            "--cache-dir", str(scratch / "cache"), "--no-verify"]
    print(f"== {configuration.name}: python main.py {' '.join(argv)}", flush=True)
    status = main.main(argv)
    if status != 0:
        raise SystemExit(f"error: configuration {configuration.name} stopped with exit status {status}")


def read_row(configuration: Configuration, scratch: Path) -> Row:
    """The configuration's task records, as the table shows them."""
    records = sorted((TaskRecord.load(path) for path in record_paths(layout(scratch, configuration),
                                                                      configuration.method).values()),
                     key=lambda record: record.task_id)
    if not records:
        raise SystemExit(f"error: configuration {configuration.name} has no finished task under {scratch}")
    return Row(configuration.label, {record.task_name: record.best_acc for record in records},
               [record.trainable_params for record in records], [record.percent_of_backbone for record in records],
               [record.stored_bytes for record in records])


def mean(values: list[float]) -> float:
    return sum(values) / len(values)


def table(rows: list[Row]) -> str:
    """Accuracy (%) per task and their mean, and the mean cost per task (the heads differ with the class count)."""
    tasks = list(rows[0].accuracy)
    header = ["configuration", *tasks, "mean", "trainable params per task", "% of backbone", "stored per task"]
    lines = ["| " + " | ".join(header) + " |", "|---|" + "---:|" * (len(header) - 1)]
    for row in rows:
        cells = [row.label, *(f"{100 * row.accuracy[task]:.2f}" for task in tasks), f"{100 * row.mean_accuracy:.2f}",
                 f"{mean(row.trainable):,.0f}", f"{mean(row.percent):.3f}%",
                 f"{mean(row.stored_bytes) / 2**10:,.1f} KiB"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arch", required=True, help="the backbone, as main.py's --arch names it")
    parser.add_argument("--weights", required=True, help="its weights, as main.py's --weights: imagenet, none or a "
                        "state-dict path")
    parser.add_argument("--data", type=Path, help="main.py's --data (default: the demo's synthetic tasks)")
    parser.add_argument("--stat", type=Path, help="main.py's --stat")
    parser.add_argument("--tasks", nargs="+", help="main.py's --tasks (default: the demo's, or every task)")
    parser.add_argument("--image-size", type=int, default=32, help="main.py's --image-size (default %(default)s, "
                        "the demo's)")
    parser.add_argument("--epochs", type=int, default=12, help="main.py's --epochs (default %(default)s, the demo's)")
    parser.add_argument("--seed", type=int, default=0, help="main.py's --seed (default %(default)s)")
    parser.add_argument("--device", default="auto", help="main.py's --device (default %(default)s)")
    parser.add_argument("--configs", nargs="+", choices=tuple(BY_NAME), default=tuple(BY_NAME), metavar="CONFIG",
                        help=f"the configurations to run, in the table's order (default all: {', '.join(BY_NAME)})")
    parser.add_argument("--scratch", type=Path, help="the folder of every run's results, weights and decoded-image "
                        "cache (default: a new temporary folder); an existing one is reused")
    return parser


def main_cli(argv: list[str] | None = None) -> str:
    """Run the configurations and print the table (returned too)."""
    args = get_args_parser().parse_args(argv)
    scratch = args.scratch or Path(tempfile.mkdtemp(prefix="generality_"))
    run_options = ["--arch", args.arch, "--image-size", str(args.image_size), "--epochs", str(args.epochs),
                   "--seed", str(args.seed), "--device", args.device]
    for flag, value in (("--data", args.data), ("--stat", args.stat)):
        run_options += [flag, str(value)] if value is not None else []
    run_options += ["--tasks", *args.tasks] if args.tasks else []
    configurations = [BY_NAME[name] for name in args.configs
                      if not (BY_NAME[name].random_init and args.weights == "none")]
    for configuration in configurations:
        run_configuration(configuration, run_options, args.weights, scratch)
    text = table([read_row(configuration, scratch) for configuration in configurations])
    print(f"\n{args.arch}, --weights {args.weights}, {args.image_size} px, {args.epochs} epochs, seed {args.seed} "
          f"(runs under {scratch}):\n\n{text}")
    return text


if __name__ == "__main__":
    main_cli()
