"""--predict: classify new images with a trained task, given by name or id, or found by the task mapper."""
import argparse
import sys
from dataclasses import dataclass
from pathlib import Path

import torch

from common.errors import RunError
from common.files import csv_text, write_csv
from dataset.folders import IMAGE_EXTENSIONS, images_below
from dataset.preprocess import decode_images
from dataset.sources import DataSource
from inference.mapper import backbone_features, choose_tasks, task_anchor
from inference.trained import Trained, batch_outputs, load_trained, require_given_settings, task_models
from network import backbone_id, input_config, load_backbone, weights_of
from training.context import Context
from training.settings import Layout, Recipe, runtime_for

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


@dataclass(frozen=True)
class Request:
    """What --predict was asked."""

    paths: list[Path]  # image files and folders
    task: str  # a task's name or id, or auto
    output: Path | None  # None: print the CSV
    choices: list[str] | None  # --tasks: the tasks auto may choose from (None: every trained task)
    method: str | None  # None: the one method the weight folder holds (CLR first)
    arch: str | None  # None: what the tasks were trained with
    weights: str | None
    image_size: int | None


def predict(request: Request, layout: Layout, device: torch.device, precision: str, eval_batch_size: int | None,
            source: DataSource | None, cache_dir: Path | None, workers: int) -> int:
    """Classify the images and write the CSV; every problem is found before anything is written. The tasks and
    their settings come from their records in the weight folder; ``source`` (--data) is needed only to fit a
    missing task-mapper anchor."""
    files = image_files(request.paths)
    check_output(request.output)
    auto = request.task == AUTO
    trained = load_trained(layout, request.method, request.choices if auto else [request.task])
    settings = trained.settings
    arch = settings["arch"]
    given_backbone = None if request.weights is None else backbone_id(request.arch or arch, request.weights)
    require_given_settings(trained, {"arch": request.arch, "backbone": given_backbone,
                                     "image_size": request.image_size})
    weights = request.weights or weights_of(arch, settings["backbone"])
    backbone = load_backbone(arch, weights).to(device)
    ctx = Context(method=trained.method, arch=arch, backbone=backbone, backbone_id=settings["backbone"],
                  image_size=settings["image_size"], input=input_config(arch), source=source,
                  recipe=Recipe(), runtime=runtime_for(device, precision, eval_batch_size), layout=layout,
                  cache_dir=cache_dir, workers=workers)
    images = torch.from_numpy(decode_images(Path(""), [str(path) for path in files], ctx.image_size, workers,
                                            desc="decoding images"))
    if auto:
        anchors = [task_anchor(ctx, task, record.config) for task, record in zip(trained.tasks, trained.records)]
        chosen, margins = choose_tasks(backbone_features(ctx, images, "task mapper"), anchors)
    else:
        chosen, margins = torch.zeros(len(files), dtype=torch.int64), None
    rows = [[path, *answer] for path, answer in zip(files, classify(ctx, trained, images, chosen))]
    if margins is not None:
        rows = [row + [f"{margin:.6g}"] for row, margin in zip(rows, margins.tolist())]
    write_predictions(request.output, AUTO_COLUMNS if margins is not None else COLUMNS, rows)
    return 0


def classify(ctx: Context, trained: Trained, images: torch.Tensor, chosen: torch.Tensor) -> list[list]:
    """(task, label, class, confidence) for each image, from the model of its chosen task; each task's model is
    set up once, for all of its images."""
    answers: list[list] = [[] for _ in range(len(images))]
    model_of = task_models(ctx, trained)
    for index, (task, record) in enumerate(zip(trained.tasks, trained.records)):
        members = (chosen == index).nonzero().flatten()
        if not len(members):
            continue
        logits = batch_outputs(model_of(index), images[members], ctx, task.name)
        labels = logits.argmax(1)  # from the logits, as evaluation counts them
        confidences = logits.softmax(1).gather(1, labels.unsqueeze(1)).flatten()
        classes = {label: key for key, label in record.label_map.items()}
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


def write_predictions(path: Path | None, columns: tuple[str, ...], rows: list[list]) -> None:
    """The predictions, written atomically to ``path`` or printed."""
    if path is None:
        sys.stdout.write(csv_text(columns, rows))
    else:
        write_csv(path, columns, rows)
        print(f"{len(rows)} predictions written to {path}", file=sys.stderr)
