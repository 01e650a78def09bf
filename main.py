"""CLR continual learning: learn a sequence of tasks on one frozen backbone, keeping a small state per task.

    python main.py --data DATA                  # the 53 DCT tasks with the release's recipe (CLR)
    python main.py --data DATA --method Ghost   # CLR-Full
    python main.py --data DATA --check          # preflight: every image, every count, before hours of training
    python main.py                              # a few-minute demo on synthetic data
    python main.py --report                     # rebuild the tables and figures from result/ and weight/
    python main.py --data DATA --method EWC     # a shared-backbone baseline, with its accuracy matrix
    python main.py --predict IMAGES --task auto # classify new images, the task found by the task mapper
    torchrun --nproc-per-node 8 main.py --data DATA   # the tasks spread over 8 GPUs

Each task trains only its own parameters (depthwise CLR kernels, BatchNorm, a linear head), so nothing learnt
earlier can be overwritten. At the end every saved task is re-loaded onto a fresh backbone and re-evaluated,
and the per-task tables and figures are written.
"""
import argparse
import logging
import math
import sys
from pathlib import Path

import torch
from tqdm import tqdm

import continual
from dataset.check import check_tasks
from dataset.preprocess import default_workers
from dataset.sources import (DataSource, check_files_exist, manifest_path, open_data, select_tasks,
                             write_manifest)
from dataset.synthetic import DEMO_TASKS, write_synthetic_dct
from dataset.task import DatasetError, TaskInfo
from inference.agnostic import write_task_agnostic
from inference.predict import add_arguments as add_prediction_arguments, predict, predicting
from network import ARCHS, METHODS, NetworkError, backbone_choice, backbone_id, load_backbone
from report import add_arguments as add_report_arguments
from report import method_label, require_results, tasks_on_disk, write_report
from training import distributed
from training.context import Context, RunError, bn_needs_two_images, prepare_output_folder, resolve_device
from training.lock import run_lock
from training.runner import forget_tasks, learn_tasks

log = logging.getLogger("clr")

DEMO_DATA = Path("demo_data")
DEMO_DEFAULTS = {"weights": "none", "image_size": 32, "epochs": 12, "tasks": list(DEMO_TASKS)}


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
    model.add_argument("--method", choices=METHODS + continual.METHODS, default=METHODS[0],
                       help="Ghost_reduced_v1 = CLR (default), Ghost = CLR-Full, Ghost_reduced_v2, Ghost_a (gated "
                       "CLR), li18 / li50 (residual adapters), and the baselines Linear (head only), Finetune "
                       "(everything) and Resnet_Scratch (everything, from a random init); SGD, EWC, LwF and ER "
                       "share one backbone across the tasks")
    model.add_argument("--arch", choices=ARCHS, help=f"backbone (default {ARCHS[0]}; li18 and li50 imply theirs)")
    model.add_argument("--weights", help="backbone weights: imagenet (torchvision IMAGENET1K_V1, downloaded once; "
                       "the default), none (random init, for demos and tests; implied by Resnet_Scratch), or a "
                       "path to a torchvision-format state dict")

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
    continual.add_arguments(parser)
    add_report_arguments(parser)
    add_prediction_arguments(parser)
    return parser


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Parse the command line; the demo's settings (without --data, except for --report --no-verify, which reads
    only the result and weight folders), then the arch and weights the method implies, fill in whatever was not
    given."""
    parser = get_args_parser()
    args = parser.parse_args(argv)
    if args.data is None and not (args.report and args.no_verify):
        parser.set_defaults(**DEMO_DEFAULTS)
        args = parser.parse_args(argv)
    try:
        args.arch, args.weights = backbone_choice(args.method, args.arch, args.weights)
    except NetworkError as error:
        parser.error(str(error))
    return args


def prepare_demo_data(args: argparse.Namespace) -> None:
    """Point the run at the synthetic demo tasks, writing them to ./demo_data the first time."""
    notes = sys.stderr if args.predict else sys.stdout  # --predict prints its CSV on stdout
    with distributed.leader_first():  # under torchrun one process writes them, the others then find them
        if not (DEMO_DATA / "rolling_releases" / "database_2.sqlite").exists():
            print(f"writing synthetic DCT-format demo data to ./{DEMO_DATA}", file=notes)
            write_synthetic_dct(DEMO_DATA)
    args.data = DEMO_DATA
    args.stat = args.stat or DEMO_DATA / "stat.csv"
    print(f"demo settings: {args.arch} with --weights {args.weights}, {args.image_size}px images, "
          f"{args.epochs} epochs, tasks {' '.join(args.tasks)}. For the paper's numbers pass --data DCT_FOLDER.",
          file=notes)


def refuse_torchrun(args: argparse.Namespace) -> None:
    """Work that cannot be spread over a job's processes says so in one line, rather than running in each."""
    if not distributed.is_torchrun():
        return
    if args.method in continual.METHODS:
        raise RunError(f"--method {args.method} learns its tasks one after another on one shared backbone, so it "
                       "cannot be spread over processes: run it without torchrun")
    if args.report or args.predict:
        raise RunError("--report and --predict work in one process: run them without torchrun")


def run(args: argparse.Namespace) -> int:
    refuse_torchrun(args)
    if args.report:
        require_results(args.result)
        if args.no_verify:
            print(write_report(args, tasks_on_disk(args)))
            return 0
    device = distributed.local_device(resolve_device(args.device))
    if args.data is None:
        prepare_demo_data(args)
    if args.batch_size == 1 and bn_needs_two_images(args.image_size):
        raise RunError("at 32 px or less BatchNorm cannot train on one image per batch: "
                       "use --batch-size 2 or more, or --image-size 33 or more")
    source = open_data(args.data, args.stat)
    tasks = select_tasks(source.tasks, args.tasks)
    if predicting(args):
        return predict(args, device, source, tasks)
    prepare_output_folder(args.result, "result")
    if args.check:
        if not distributed.is_leader():
            return 0  # under torchrun, one process checks
        mismatches = check_tasks(source, tasks, args.result, args.workers)
        for mismatch in mismatches:
            print(f"mismatch: {mismatch}", file=sys.stderr)
        print(f"check FAILED: {len(mismatches)} mismatch(es) in {len(tasks)} task(s)" if mismatches
              else f"check passed for {len(tasks)} task(s)")
        return 1 if mismatches else 0

    prepare_output_folder(args.weight, "weight")
    with run_lock(args.weight, holder=distributed.is_leader()):
        return learn(args, device, source, tasks)


def learn(args: argparse.Namespace, device: torch.device, source: DataSource, tasks: list[TaskInfo]) -> int:
    """Learn the selected tasks (under torchrun, those this process claims), then verify and report them."""
    with distributed.leader_first():  # one process downloads the backbone's weights
        backbone = load_backbone(args.arch, args.weights).to(device)  # each task's copy is then made on the device
    ctx = Context(args, device, source, backbone, backbone_id(args.weights))
    shared_backbone = args.method in continual.METHODS
    if args.report:
        report_run(ctx, tasks)
        return 0
    samples = [source.sample(task) for task in tqdm(tasks, desc="sampling tasks", leave=False)]
    check_files_exist(source.root, samples)
    if distributed.is_leader():  # the shared files have one writer
        for sample in samples:
            write_manifest(sample, manifest_path(args.result, sample.task))
        if args.fresh:
            (continual.forget_sequence if shared_backbone else forget_tasks)(ctx, samples)
    distributed.barrier()  # no task is claimed before --fresh has forgotten it
    torch.backends.cudnn.benchmark = True
    if shared_backbone:  # one backbone carried from task to task: its own sequence and accuracy matrix
        continual.learn(ctx, samples)
    else:
        log.info("%s on %s (%s), %d task(s), device %s", method_label(args.method), args.arch, ctx.backbone_id,
                 len(samples), device)
        learn_tasks(ctx, samples)  # under torchrun, returns once every process is done
    if distributed.is_leader():
        report_run(ctx, source.tasks)
    return 0


def report_run(ctx: Context, tasks: list[TaskInfo]) -> None:
    """The end of a run, and --report: answer every finished task's validation images without task labels, then
    verify every method's saved tasks and write the tables and figures."""
    finished = [ctx.source.sample(task) for task in tasks if ctx.weight_path(task).exists()]
    # a shared-backbone method's tasks have no state of their own for the task mapper to choose between
    agnostic = None if ctx.args.method in continual.METHODS else write_task_agnostic(ctx, finished)
    print(write_report(ctx.args, tasks, ctx))
    if agnostic is not None:
        print(agnostic.summary())


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
        with distributed.process_group():
            return run(args)
    except (DatasetError, NetworkError, RunError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: rerun the same command to continue where it stopped", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
