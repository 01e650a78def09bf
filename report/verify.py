"""Zero forgetting, checked: each isolated method's saved tasks re-loaded onto a freshly built backbone and
re-evaluated on their validation split."""
from collections import Counter
from dataclasses import dataclass, field

from tqdm import tqdm

from dataset.loader import DeviceBatches
from dataset.task import TaskInfo, TaskSample
from network import load_task_state
from report.inputs import MethodResults, weight_path
from training.checkpoints import load_checkpoint, run_config
from training.context import Context
from training.loop import build_task_model, evaluate

SETTINGS = ("arch", "backbone", "image_size")  # what the backbone and the pixels depend on


@dataclass
class Verification:
    """What re-evaluating one method's saved tasks found."""

    equal: int = 0
    mismatches: list[str] = field(default_factory=list)
    skipped: Counter = field(default_factory=Counter)  # reason -> number of tasks

    @property
    def checked(self) -> int:
        return self.equal + len(self.mismatches)

    def summary(self) -> str:
        """One sentence for the report."""
        parts = []
        if self.checked:
            parts.append(f"{self.checked} task(s) re-loaded onto a freshly built backbone and re-evaluated on "
                         "their validation split: " + ("all re-evaluated accuracies equal the recorded ones"
                                                       if not self.mismatches else
                                                       f"**{len(self.mismatches)} MISMATCH(ES)**: "
                                                       + "; ".join(self.mismatches)))
        parts += [f"{count} task(s) not re-evaluated: {reason}" for reason, count in self.skipped.items()]
        return ". ".join(parts) + "."


def verify_task(ctx: Context, sample: TaskSample, method: str, saved: dict) -> int:
    """Re-load a task's saved state onto a freshly built backbone and count its correct validation images."""
    model = build_task_model(ctx, sample.num_classes, method)
    load_task_state(model, saved["state"])
    tensors = ctx.tensors(sample)
    batches = DeviceBatches(tensors.val_images, tensors.val_labels, ctx.eval_batch_size, ctx.device, shuffle=False)
    return evaluate(model, batches, ctx)


def describe(config: dict) -> str:
    return f"{config.get('arch')}, backbone {config.get('backbone')}, {config.get('image_size')} px"


def skip_reason(expected: dict, saved: dict) -> str | None:
    """Why a saved task cannot be re-evaluated with this run's backbone and data, or None if it can."""
    config = saved["config"]
    if any(config.get(key) != expected[key] for key in SETTINGS):
        return f"settings differ (trained with {describe(config)}; this report has {describe(expected)})"
    if config.get("manifest_sha256") != expected["manifest_sha256"]:
        return "the data differ (its images or labels are not the ones --data gives now)"
    return None


def verify_method(ctx: Context | None, results: MethodResults, tasks: list[TaskInfo],
                  samples: dict[int, TaskSample]) -> Verification:
    """Re-evaluate every saved task of an isolated method whose settings and data match this run's.
    ``samples`` caches each task's sample across methods."""
    found = Verification()
    finished = [task for task in tasks if task.task_id in results.accuracy.index]
    if ctx is None:
        found.skipped["--no-verify"] = len(finished)
        return found
    if results.shared_backbone:
        found.skipped["shared backbone (the backbone moved on after each task; see its accuracy matrix and BWT)"] \
            = len(finished)
        return found
    for task in tqdm(finished, desc=f"verifying {results.name}", leave=False):
        path = weight_path(ctx.args.weight, task.name, results.name)
        if task.task_id not in results.records:
            found.skipped["no weights file"] += 1
            continue
        if task.task_id not in samples:
            samples[task.task_id] = ctx.source.sample(task)
        sample = samples[task.task_id]
        saved = load_checkpoint(path)
        reason = skip_reason(run_config(ctx, sample), saved)
        if reason:
            found.skipped[reason] += 1
            continue
        correct = verify_task(ctx, sample, results.name, saved)
        if correct == saved["best_correct"]:
            found.equal += 1
        else:
            found.mismatches.append(f"{task.name}: recorded {saved['best_correct']} correct, re-evaluated {correct}")
    return found
