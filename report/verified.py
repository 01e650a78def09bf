"""The verified report: every saved task re-loaded onto a fresh backbone, re-evaluated, and tabulated."""
from tqdm import tqdm

from dataset.atomic import atomic_write_text
from dataset.loader import DeviceBatches
from dataset.task import TaskSample
from network import METHODS, load_task_state
from training.context import Context, RunError
from training.loop import build_task_model, evaluate
from training.results import read_results
from training.runner import finished_weights

PAPER_NAMES = {"Ghost_reduced_v1": "CLR", "Ghost": "CLR-Full"}


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


