"""CLR continual learning: learn a sequence of tasks on one frozen backbone, keeping a small state per task.

    python main.py --data DATA                  # the 53 DCT tasks with the release's recipe (CLR)
    python main.py --data DATA --method Ghost   # CLR-Full
    python main.py --data DATA --check          # preflight: every image, every count, before hours of training
    python main.py                              # a few-minute demo on synthetic data
    python main.py --report                     # rebuild the tables and figures from result/ and weight/
    python main.py --data DATA --method EWC     # a shared-backbone baseline, with its accuracy matrix
    python main.py --data DATA --method paper --seeds 0 1 2   # the paper's comparison, with 95% intervals
    python main.py --predict IMAGES --task auto # classify new images, the task found by the task mapper
    torchrun --nproc-per-node 8 main.py --data DATA   # the tasks (and whole shared-backbone sequences) over 8 GPUs

Each task trains only its own parameters (depthwise CLR kernels, BatchNorm, a linear head), so nothing learnt
earlier can be overwritten. At the end every saved task is re-loaded onto a fresh backbone and re-evaluated,
and the per-task tables and figures are written.
"""
import argparse
import signal
import sys
from collections.abc import Callable
from pathlib import Path

import torch

import continual  # noqa: F401  (the shared-backbone methods register as it is imported)
from common.cli import OneLineParser, add_options, number, option_flag
from common.console import TransientBar, console_log, print_stop_line
from common.errors import ClrError, NetworkError, RunError, Terminated
from dataset.check import check_tasks
from dataset.preprocess import default_workers
from dataset.sources import DataSource, check_files_exist, open_data, select_tasks, write_manifest
from dataset.synthetic import DEMO_TASKS, ensure_synthetic_dct
from dataset.task import TaskInfo, TaskSample
from inference import predict as prediction
from inference.mapper import task_anchor
from network import (CLR_PLACEMENTS, DEFAULT_METHOD, METHOD_SETS, METHODS, NORM_POLICIES, REGISTRY, MethodSpec,
                     all_options, backbone_choice, backbone_id, check_arch, check_shared_bn, expand_methods,
                     input_config, load_backbone, method_spec, methods_where, options_of_methods, policies_of_methods,
                     shared_bn_of)
from network.backbone import DEFAULT_ARCH, TIMM_PREFIX
from network.methods import SHARED_BN
from report import add_arguments as add_report_arguments
from report import report_run, require_results, tasks_on_disk, write_report, write_seeds_report
from training import distributed
from training.context import Context, bn_needs_two_images
from training.families import family_of
from training.isolated import TaskDone
from training.lock import run_locks
from training.settings import (PRECISIONS, Layout, MethodSettings, Recipe, prepare_output_folder, resolve_device,
                               runtime_for)
from training.tuning import DEFAULT_TUNING_TASKS, tune
from training.work import WorkUnit, do_units

log = console_log()

DEMO_DATA = Path("demo_data")
DEMO_DEFAULTS = {"weights": "none", "image_size": 32, "epochs": 12, "tasks": list(DEMO_TASKS),
                 "result": Path("demo_result"), "weight": Path("demo_weight")}  # never mixed with a real run's
DEFAULT_IMAGE_SIZE = 224


def named(test: Callable[[MethodSpec], object]) -> str:
    """The methods whose spec passes ``test``, as --help names them (``li18, li50``)."""
    return ", ".join(methods_where(test))


def get_args_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    data = parser.add_argument_group("data")
    data.add_argument("--data", type=Path, help="a DCT folder (holding rolling_releases/ and original_images/) "
                      "or a folder of your own tasks (<task>/train/<class>/<image>, <task>/val/<class>/<image>). "
                      f"Omitted: the demo on synthetic data in ./{DEMO_DATA}, its results in "
                      f"./{DEMO_DEFAULTS['result']}/ and ./{DEMO_DEFAULTS['weight']}/")
    data.add_argument("--stat", type=Path, help="task list in stat.csv format (oldid,newid,name,class_num,train_num,"
                      "test_num); default: the 53 DCT tasks of the repository's stat.csv, the sorted task "
                      f"folders, or ./{DEMO_DATA}/stat.csv for the demo")
    data.add_argument("--tasks", nargs="+", metavar="ID|NAME", help="run only these tasks (in run order)")
    data.add_argument("--check", action="store_true", help="verify every image and count of the selected tasks, "
                      "write their manifests, and exit (non-zero on any mismatch)")
    data.add_argument("--image-size", type=number(int), help=f"images are resized to SxS (default "
                      f"{DEFAULT_IMAGE_SIZE}; with --predict, what the tasks were trained with)")
    data.add_argument("--workers", type=number(int, allow_zero=True), default=default_workers(),
                      help="processes that decode images (default %(default)s; 0 decodes in this process)")
    data.add_argument("--cache-dir", type=Path, default=Path("cache"),
                      help="where decoded, resized images are cached per task (default ./cache/)")
    data.add_argument("--no-cache", action="store_true", help="decode every task afresh and cache nothing")

    model = parser.add_argument_group("model")
    model.add_argument("--method", nargs="+", choices=(*METHODS, *METHOD_SETS), metavar="METHOD",
                       help=f"one or more methods (default {DEFAULT_METHOD}), learnt into the same folders; "
                       + "; ".join(f"{name}: {' '.join(methods)}" for name, methods in METHOD_SETS.items()) + ". "
                       + "; ".join(f"{spec.label}: {spec.learns}" for spec in REGISTRY.values()))
    model.add_argument("--arch", help=f"backbone: a torchvision classification model (default {DEFAULT_ARCH}), or "
                       f"{TIMM_PREFIX}NAME for a timm model (pip install timm), with convolutions and one linear "
                       f"classifier; {named(lambda spec: spec.arch)} imply theirs")
    model.add_argument("--weights", help="backbone weights: imagenet (the model's standard ImageNet weights, "
                       "IMAGENET1K_V1 where torchvision has them, downloaded once; the default), none (a seeded "
                       f"random init, for demos and tests; implied by {named(lambda spec: spec.weights)}), or "
                       "the path of a state dict in the model's own key format")
    model.add_argument("--shared-bn", choices=SHARED_BN, help="the BatchNorm layers of a method with one backbone "
                       "carried across tasks: drift (the default: they train, their statistics follow each task), "
                       "freeze (from the second task on, BN stays in eval mode: its statistics stay as the first task "
                       "left them, its affine pair trains; FACIL's --fix-bn), per-task (each task keeps its own "
                       "statistics and affine pair, stored with its head). "
                       f"{named(lambda spec: spec.fixed_bn)} always keep BN per task")
    model.add_argument("--norm", choices=NORM_POLICIES, help="what each task does with the backbone's norm layers, "
                       "for the methods that train them but not every weight "
                       f"({named(lambda spec: spec.layers and spec.layers.chooses_norm)}): "
                       "train (default, the release's: affine and running statistics the task's, BN in train mode "
                       "with batch statistics), frozen (the backbone's, BN in eval mode, as Linear keeps them) or "
                       "affine (the affine pair the task's and trained, the backbone's statistics, BN in eval mode)")
    model.add_argument("--clr-placement", choices=CLR_PLACEMENTS, help="where the CLR variants put their kernels "
                       "among the convs with a spatial kernel: every (default, the release's: after each one) or "
                       "skip-depthwise (not after a depthwise conv, which already filters each channel on its own; "
                       "no change on a ResNet)")

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
    recipe.add_argument("--seed", type=int, help="seed; task k uses seed+k (default 0)")
    recipe.add_argument("--tune", action="store_true", help="first choose each shared-backbone method's learning "
                        "rate and its own stability option, per seed, on the first --tune-tasks tasks (their training "
                        "images less a held-out tenth, never the validation split: A-GEM's protocol, "
                        "docs/baselines.md#tuning), then learn every task with them; isolated methods keep the recipe")
    recipe.add_argument("--tune-tasks", type=number(int), metavar="N", help="with --tune: how many of the run's first "
                        f"tasks the choice is made on (default {DEFAULT_TUNING_TASKS}, A-GEM's)")
    recipe.add_argument("--seeds", type=int, nargs="+", metavar="SEED", help="run every method once per seed, "
                        "each seed in its own seed_<S>/ folders under --result and --weight, and report the mean, "
                        "the standard deviation and 95%% intervals over the seeds (instead of --seed)")

    run = parser.add_argument_group("run")
    run.add_argument("--result", type=Path, default=Path("result"),
                     help="logs, manifests, <method>.csv and report.md (default ./result/; the demo's: "
                     f"./{DEMO_DEFAULTS['result']}/)")
    run.add_argument("--weight", type=Path, default=Path("weight"),
                     help=f"per-task weights <task>_<method>.pt (default ./weight/; the demo's: "
                     f"./{DEMO_DEFAULTS['weight']}/)")
    run.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                     help="auto = cuda when available (default)")
    run.add_argument("--precision", choices=PRECISIONS, default="auto",
                     help="auto (default): bf16 autocast on CUDA, fp32 on the CPU; bf16: bf16 autocast on either "
                     "(on a CPU, its own bf16 autocast); fp32: the release's numerics")
    run.add_argument("--compile", action="store_true", help="torch.compile the model (CUDA)")
    run.add_argument("--fresh", action="store_true",
                     help="forget the selected tasks' results, weights and checkpoints (of every method and seed "
                     "selected), and start over")
    add_options(parser, "method options (each only with its own --method)", [dict(all_options())])
    add_report_arguments(parser)
    prediction.add_arguments(parser)
    return parser


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Parse the command line. Without --data a run takes the demo's settings and folders (but --predict, which
    takes its tasks' settings from their records, and --report --no-verify, which reads only the result and weight
    folders); then each method, and the arch and weights it implies, fill in whatever was not given, and the
    methods' options are checked against the registry (an option of a method not chosen is refused)."""
    parser = get_args_parser()
    args = parser.parse_args(argv)
    if args.predict is not None:
        if args.method and (len(args.method) > 1 or args.method[0] in METHOD_SETS):
            parser.error("--predict takes one --method: the method whose tasks classify the images")
        if args.norm is not None or args.clr_placement is not None:
            parser.error("--predict rebuilds each task with the --norm and --clr-placement it was trained with: "
                         "leave them out")
        args.method = args.method[0] if args.method else None
        return args
    if args.data is None and not (args.report and args.no_verify):
        parser.set_defaults(**DEMO_DEFAULTS)
        args = parser.parse_args(argv)
    args.image_size = args.image_size or DEFAULT_IMAGE_SIZE
    args.seeds = seeds_of(args, parser)
    try:
        args.methods = method_settings(args)
    except NetworkError as error:
        parser.error(str(error))
    args.tune_tasks = tuning_tasks(args, parser)
    return args


def tuning_tasks(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int | None:
    """How many tasks --tune chooses on (None: no tuning). It needs a shared-backbone method, and leaves to the search
    what it searches: a method option it would choose, given on the command line, is refused (--lr stays the rate of
    the isolated methods, and of the shared ones without --tune)."""
    if not args.tune:
        if args.tune_tasks is not None:
            parser.error("--tune-tasks goes with --tune")
        return None
    tuned = [method_spec(choice.method) for choice in args.methods if method_spec(choice.method).search]
    if not tuned:
        parser.error("--tune chooses the hyper-parameters of the shared-backbone methods, and none is among the "
                     "methods chosen (the isolated methods keep the release's recipe)")
    for spec in tuned:
        for name in spec.search:
            if name in spec.options and getattr(args, name) is not None:
                parser.error(f"--tune chooses {option_flag(name)} for --method {spec.name}: leave it out, or run "
                             "without --tune")
    return args.tune_tasks or DEFAULT_TUNING_TASKS


def seeds_of(args: argparse.Namespace, parser: argparse.ArgumentParser) -> list[int]:
    """The run's seeds: --seeds, or the one --seed (default 0)."""
    if args.seeds is None:
        return [0 if args.seed is None else args.seed]
    if args.seed is not None:
        parser.error("give --seed or --seeds, not both")
    repeated = [seed for seed in dict.fromkeys(args.seeds) if args.seeds.count(seed) > 1]
    if repeated:
        parser.error(f"--seeds lists seed {repeated[0]} more than once")
    return args.seeds


def method_settings(args: argparse.Namespace) -> list[MethodSettings]:
    """Each method --method names (a named set spelled out), with the arch and weights it implies or was given
    and its own options; another method's option is refused."""
    methods = expand_methods(args.method or [DEFAULT_METHOD])
    options = options_of_methods(methods, {name: getattr(args, name) for name, _ in all_options()
                                           if getattr(args, name) is not None})
    check_shared_bn(methods, args.shared_bn)
    policies = policies_of_methods(methods, args.norm, args.clr_placement)
    settings = [MethodSettings(method, *backbone_choice(method, args.arch, args.weights), options[method],
                               policies[method], shared_bn_of(method, args.shared_bn)) for method in methods]
    for arch in dict.fromkeys(choice.arch for choice in settings):
        check_arch(arch)
    return settings


def anchor_fitter(ctx: Context) -> TaskDone:
    """What a run with the task mapper does after each task: fit the task's anchor while its images are at hand."""
    return lambda sample, record: task_anchor(ctx, sample.task, record.config)


def units_of(ctx: Context, samples: list[TaskSample]) -> list[WorkUnit]:
    """The context's work, as its method's family divides it into units."""
    family = family_of(ctx.method)
    return family.units(ctx, samples, anchor_fitter(ctx) if family.task_mapper else None)


def mode_of(args: argparse.Namespace) -> str:
    """What this command does: one of check, predict, report or train."""
    if args.predict is None and (args.task is not None or args.output is not None):
        raise RunError("--task and --output go with --predict PATH [PATH ...]")
    if args.predict is not None and args.task is None:
        raise RunError("--predict needs --task NAME_OR_ID (the images' task) or --task auto")
    return "check" if args.check else "predict" if args.predict else "report" if args.report else "train"


def refuse_torchrun(mode: str) -> None:
    """Work that cannot be spread over a job's processes says so in one line, rather than running in each."""
    if distributed.is_torchrun() and mode in ("report", "predict"):
        raise RunError("--report and --predict work in one process: run them without torchrun")


def layout_of(args: argparse.Namespace) -> Layout:
    return Layout(result=args.result, weight=args.weight)


def open_selected(args: argparse.Namespace) -> tuple[DataSource, list[TaskInfo]]:
    """The data (the demo's, written the first time, without --data) and the tasks selected in it."""
    if args.data is None:
        with distributed.leader_first():  # under torchrun one process writes them, the others then find them
            ensure_synthetic_dct(DEMO_DATA)
        args.data, args.stat = DEMO_DATA, args.stat or DEMO_DATA / "stat.csv"
        backbones = "; ".join(dict.fromkeys(f"{choice.arch} with --weights {choice.weights}"
                                            for choice in args.methods))
        print(f"demo settings: {backbones}, {args.image_size}px images, {args.epochs} epochs, tasks "
              f"{' '.join(args.tasks)}, results in {args.result}/ and weights in {args.weight}/. "
              "For the paper's numbers pass --data DCT_FOLDER.")
    source = open_data(args.data, args.stat)
    return source, select_tasks(source.tasks, args.tasks)


def run_contexts(args: argparse.Namespace, source: DataSource, layouts: dict[int, Layout]) -> list[Context]:
    """The run's explicit settings, one context per seed and method (in that order: a plain run finishes one
    seed's methods before the next seed's), each with its frozen backbone on this process's device. Methods on the
    same backbone share one copy of it, which no method modifies."""
    device = distributed.local_device(resolve_device(args.device))
    runtime = runtime_for(device, args.precision, args.eval_batch_size, args.compile)
    backbones: dict[tuple[str, str], torch.nn.Module] = {}
    contexts = []
    for seed, layout in layouts.items():
        recipe = Recipe(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, norm_penalty=args.norm_penalty,
                        patience=args.patience, seed=seed)
        for choice in args.methods:
            key = (choice.arch, choice.weights)
            if key not in backbones:
                with distributed.leader_first():  # one process downloads the backbone's weights
                    backbones[key] = load_backbone(*key).to(device)  # each task's copy is then made on the device
                note_native_size(choice.arch, args.image_size)
            contexts.append(Context(method=choice.method, arch=choice.arch, backbone=backbones[key],
                                    backbone_id=backbone_id(*key), image_size=args.image_size,
                                    input=input_config(choice.arch), source=source, recipe=recipe, runtime=runtime,
                                    layout=layout, cache_dir=None if args.no_cache else args.cache_dir,
                                    workers=args.workers, options=choice.options, policy=choice.policy,
                                    shared_bn=choice.shared_bn))
    return contexts


def note_native_size(arch: str, image_size: int) -> None:
    """A backbone made for another image size is said, never resized silently."""
    native = input_config(arch).native_size
    if native != image_size:
        log.info("note: %s's weights were made for %d px images; this run uses %d px (--image-size)", arch, native,
                 image_size)


def check(args: argparse.Namespace) -> int:
    """--check: every selected task samples, matches its counts, and every image decodes; manifests written."""
    source, tasks = open_selected(args)
    layout = layout_of(args)
    prepare_output_folder(layout.result, "result")
    if not distributed.is_leader():
        return 0  # under torchrun, one process checks
    mismatches = check_tasks(source, tasks, lambda task: layout.manifest(task.name), args.workers)
    for mismatch in mismatches:
        print(f"mismatch: {mismatch}", file=sys.stderr)
    print(f"check FAILED: {len(mismatches)} mismatch(es) in {len(tasks)} task(s)" if mismatches
          else f"check passed for {len(tasks)} task(s)")
    return 1 if mismatches else 0


def predict(args: argparse.Namespace) -> int:
    """--predict: the tasks, their label maps and settings come from the weight folder's records."""
    source = open_data(args.data, args.stat) if args.data is not None else None
    request = prediction.Request(paths=args.predict, task=args.task, output=args.output, choices=args.tasks,
                                 method=args.method, arch=args.arch, weights=args.weights,
                                 image_size=args.image_size)
    return prediction.predict(request, layout_of(args), resolve_device(args.device), args.precision,
                              args.eval_batch_size, source, None if args.no_cache else args.cache_dir, args.workers)


def report(args: argparse.Namespace) -> int:
    """--report: the tables and figures from the result and weight folders (each seed's, and the report across
    seeds), verified unless --no-verify."""
    top = layout_of(args)
    layouts = top.seeds(args.seeds)
    for layout in layouts.values():
        require_results(layout)
    if args.no_verify:  # no device, no backbone and, without --data, no data
        tasks = {seed: tasks_on_disk(layout, args.data, args.stat, args.tasks) for seed, layout in layouts.items()}
        for seed, layout in layouts.items():
            print(write_report(layout, tasks[seed], None))
        if len(layouts) > 1:
            every = {task.task_id: task for seed_tasks in tasks.values() for task in seed_tasks}
            print(write_seeds_report(top, layouts, sorted(every.values(), key=lambda task: task.order)))
        return 0
    source, tasks = open_selected(args)
    report_seeds(top, layouts, run_contexts(args, source, layouts), tasks, verify=True)
    return 0


def report_seeds(top: Layout, layouts: dict[int, Layout], contexts: list[Context], tasks: list[TaskInfo],
                 verify: bool) -> None:
    """Each seed's report, verified unless not ``verify`` (with the isolated methods' task-agnostic accuracy),
    then, with several seeds, the report across them in the top result folder."""
    for layout in layouts.values():
        mine = [ctx for ctx in contexts if ctx.layout == layout]
        report_run(mine, tasks, task_agnostic=[ctx for ctx in mine if family_of(ctx.method).task_mapper],
                   verify=verify)
    if len(layouts) > 1:
        print(write_seeds_report(top, layouts, tasks))


def train(args: argparse.Namespace) -> int:
    """Learn every selected task of every method and seed (under torchrun, the units of work this process claims),
    then report them, verified unless --no-verify."""
    if args.batch_size == 1 and bn_needs_two_images(args.image_size):
        raise RunError("at 32 px or less BatchNorm cannot train on one image per batch: "
                       "use --batch-size 2 or more, or --image-size 33 or more")
    source, tasks = open_selected(args)
    top = layout_of(args)
    layouts = top.seeds(args.seeds)
    for layout in dict.fromkeys([top, *layouts.values()]):
        prepare_output_folder(layout.result, "result")
        prepare_output_folder(layout.weight, "weight")
    with run_locks([top.lock, *(layout.lock for layout in layouts.values())], holder=distributed.is_leader()):
        contexts = run_contexts(args, source, layouts)
        samples = [source.sample(task) for task in TransientBar(tasks, desc="sampling tasks")]
        check_files_exist(source.root, samples)
        if distributed.is_leader():  # the shared files have one writer
            for layout in layouts.values():
                for sample in samples:
                    write_manifest(sample, layout.manifest(sample.task.name))
            if args.fresh:
                for ctx in contexts:
                    family_of(ctx.method).forget(ctx, samples)
        distributed.barrier()  # no task is claimed before --fresh has forgotten it
        torch.backends.cudnn.benchmark = True
        if args.tune_tasks:
            contexts = tune(contexts, samples, args.tune_tasks)
        for ctx in contexts:
            log.info("%s on %s (%s), seed %d, %d task(s), %s, device %s", method_spec(ctx.method).label, ctx.arch,
                     ctx.backbone_id, ctx.recipe.seed, len(samples), method_spec(ctx.method).family.value,
                     ctx.device)
        do_units([unit for ctx in contexts for unit in units_of(ctx, samples)])
        if distributed.is_leader():
            for ctx in contexts:
                family_of(ctx.method).finish(ctx, samples)
            report_seeds(top, layouts, contexts, source.tasks, verify=not args.no_verify)
    return 0


MODES = {"check": check, "predict": predict, "report": report, "train": train}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    console_log()
    on_sigterm = signal.signal(signal.SIGTERM, stop_on_sigterm)
    try:
        mode = mode_of(args)
        with distributed.process_group():
            refuse_torchrun(mode)
            return MODES[mode](args)
    except (ClrError, OSError, KeyboardInterrupt, Terminated) as error:  # an unexpected OSError too: one line
        print_stop_line(error)
        return 130 if isinstance(error, KeyboardInterrupt) else 143 if isinstance(error, Terminated) else 2
    finally:
        signal.signal(signal.SIGTERM, on_sigterm)


def stop_on_sigterm(signum: int, frame: object) -> None:
    """SIGTERM (preemption, a time limit) unwinds the run like Ctrl-C: atomic writes leave nothing half-written
    and the last epoch's resume point stays."""
    raise Terminated


if __name__ == "__main__":
    sys.exit(main())
