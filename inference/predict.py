"""--predict: classify new images with a trained task, given by name or id, or found by the task mapper."""
import argparse
import csv
import io
import sys
from pathlib import Path

import torch

from dataset.atomic import atomic_write_text
from dataset.folders import IMAGE_EXTENSIONS, images_below
from dataset.preprocess import decode_images
from dataset.sources import DataSource, select_tasks
from dataset.task import TaskInfo
from inference.mapper import backbone_features, choose_tasks, task_anchor
from inference.trained import batch_outputs, load_trained, task_model
from network import backbone_id, load_backbone
from training.context import Context, RunError

AUTO = "auto"
COLUMNS = ("path", "task", "label", "class", "confidence")
AUTO_COLUMNS = COLUMNS + ("task_margin",)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of --predict, as their own group of main.py's parser."""
    group = parser.add_argument_group("using trained tasks")
    group.add_argument("--predict", nargs="+", type=Path, metavar="PATH",
                       help="classify these image files and folders (searched recursively, sorted) with the "
                       "tasks trained in --weight, write a CSV and exit")
    group.add_argument("--task", metavar="NAME_OR_ID|auto",
                       help="with --predict: the task the images belong to, or auto to let the task mapper "
                       "choose a task (among --tasks) for each image")
    group.add_argument("--output", type=Path, metavar="FILE",
                       help="with --predict: write the CSV here (default: print it)")


def predicting(args: argparse.Namespace) -> bool:
    """Whether this run predicts; --task or --output without --predict is a mistake, not something to ignore."""
    if args.predict is None:
        if args.task is not None or args.output is not None:
            raise RunError("--task and --output go with --predict PATH [PATH ...]")
        return False
    if args.task is None:
        raise RunError("--predict needs --task NAME_OR_ID (the images' task) or --task auto")
    return True


def predict(args: argparse.Namespace, device: torch.device, source: DataSource, tasks: list[TaskInfo]) -> int:
    """Classify the images of --predict and write the CSV; every problem is found before anything is written."""
    files = image_files(args.predict)
    check_output(args.output)
    ctx = Context(args, device, source, load_backbone(args.arch, args.weights).to(device), backbone_id(args.weights))
    candidates = candidate_tasks(ctx, tasks)
    trained = [load_trained(ctx, task) for task in candidates]
    images = torch.from_numpy(decode_images(Path(""), [str(path) for path in files], args.image_size, args.workers,
                                            desc="decoding images"))
    if args.task == AUTO:
        anchors = [task_anchor(ctx, task, saved["config"]) for task, saved in zip(candidates, trained)]
        chosen, margins = choose_tasks(backbone_features(ctx, images, "task mapper"), anchors)
    else:
        chosen, margins = torch.zeros(len(files), dtype=torch.int64), None
    rows = [[path, *answer] for path, answer in zip(files, classify(ctx, candidates, trained, images, chosen))]
    if margins is not None:
        rows = [row + [f"{margin:.6g}"] for row, margin in zip(rows, margins.tolist())]
    write_csv(args.output, AUTO_COLUMNS if margins is not None else COLUMNS, rows)
    return 0


def candidate_tasks(ctx: Context, tasks: list[TaskInfo]) -> list[TaskInfo]:
    """The --task given, or for auto every selected task with weights for this method."""
    if ctx.args.task != AUTO:
        return select_tasks(ctx.source.tasks, [ctx.args.task])
    candidates = [task for task in tasks if ctx.weight_path(task).exists()]
    if not candidates:
        raise RunError(f"no task has weights for --method {ctx.args.method} in {ctx.args.weight}: "
                       "nothing to choose from")
    return candidates


def classify(ctx: Context, candidates: list[TaskInfo], trained: list[dict], images: torch.Tensor,
             chosen: torch.Tensor) -> list[list]:
    """(task, label, class, confidence) for each image, from the model of its chosen candidate; each task's
    model is built once, for all of its images."""
    answers: list[list] = [[] for _ in range(len(images))]
    for index, (task, saved) in enumerate(zip(candidates, trained)):
        members = (chosen == index).nonzero().flatten()
        if not len(members):
            continue
        logits = batch_outputs(task_model(ctx, saved), images[members], ctx, task.name)
        labels = logits.argmax(1)  # from the logits, as evaluation counts them
        confidences = logits.softmax(1).gather(1, labels.unsqueeze(1)).flatten()
        classes = {label: key for key, label in saved["label_map"].items()}
        for member, label, confidence in zip(members.tolist(), labels.tolist(), confidences.tolist()):
            answers[member] = [task.name, label, classes[label], f"{confidence:.6f}"]
    return answers


def image_files(paths: list[Path]) -> list[Path]:
    """Files as given, and the image files below each folder in sorted order."""
    files = []
    for path in paths:
        if path.is_dir():
            found = images_below(path)
            if not found:
                raise RunError(f"no image files under {path} (looked for {', '.join(sorted(IMAGE_EXTENSIONS))})")
            files += [path / name for name in found]
        elif path.exists():
            files.append(path)
        else:
            raise RunError(f"image file or folder not found: {path}")
    return files


def check_output(path: Path | None) -> None:
    """Refuse an --output that cannot be written before any work is done."""
    if path is not None and (path.is_dir() or not path.parent.is_dir()):
        raise RunError(f"cannot write --output {path}: " + ("it is a folder" if path.is_dir()
                                                            else f"no folder {path.parent}"))


def write_csv(path: Path | None, columns: tuple[str, ...], rows: list[list]) -> None:
    """The predictions, written atomically to ``path`` or printed."""
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(columns)
    writer.writerows(rows)
    if path is None:
        sys.stdout.write(text.getvalue())
    else:
        atomic_write_text(path, text.getvalue())
        print(f"{len(rows)} predictions written to {path}", file=sys.stderr)
