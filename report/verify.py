"""Zero forgetting, checked: each isolated method's saved tasks re-loaded onto a freshly built backbone and
re-evaluated on their validation split."""
from collections import Counter
from dataclasses import dataclass, field

from tqdm import tqdm

from dataset.task import TaskInfo, TaskSample
from network import load_task_state
from report.inputs import MethodResults
from training.context import Context
from training.loop import build_task_model, evaluate
from training.record import PIXELS, TaskRecord, differing_settings


@dataclass
class Verification:
    """What re-evaluating one method's saved tasks found."""

    equal: int = 0
    mismatches: list[str] = field(default_factory=list)
    skipped: Counter = field(default_factory=Counter)  # reason -> number of tasks

    @property
    def checked(self) -> int:
        return self.equal + len(self.mismatches)

    def as_dict(self) -> dict:
        """What result/verification.json holds for the method: tasks equal to their record, the mismatches, and
        how many tasks were not re-evaluated for each reason."""
        return {"equal": self.equal, "mismatches": self.mismatches, "skipped": dict(self.skipped)}

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


def verify_task(ctx: Context, sample: TaskSample, method: str, record: TaskRecord) -> int:
    """Re-load a task's saved state onto a freshly built backbone and count its correct validation images."""
    model = build_task_model(ctx.backbone, method, sample.num_classes, ctx.runtime)
    load_task_state(model, record.state)
    tensors = ctx.tensors(sample)
    batches = ctx.batches(tensors.val_images, tensors.val_labels, ctx.runtime.eval_batch_size, shuffle=False)
    return evaluate(model, batches, ctx.runtime)


def describe(config: dict) -> str:
    return f"{config.get('arch')}, backbone {config.get('backbone')}, {config.get('image_size')} px"


def skip_reason(expected: dict, config: dict) -> str | None:
    """Why a saved task cannot be re-evaluated with this run's backbone and data, or None if it can."""
    differing = differing_settings(config, expected, "verify")
    if not differing:
        return None
    if any(config.get(key) != expected[key] for key in PIXELS):
        return f"settings differ (trained with {describe(config)}; this report has {describe(expected)})"
    return "the data differ (its images or labels are not the ones --data gives now)"


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
        if task.task_id not in results.records:
            found.skipped["no weights file"] += 1
            continue
        if task.task_id not in samples:
            samples[task.task_id] = ctx.source.sample(task)
        sample = samples[task.task_id]
        reason = skip_reason(ctx.task_config(sample), results.records[task.task_id].config)
        if reason:
            found.skipped[reason] += 1
            continue
        record = TaskRecord.load(ctx.layout.weights(task.name, results.name))
        correct = verify_task(ctx, sample, results.name, record)
        if correct == record.best_correct:
            found.equal += 1
        else:
            found.mismatches.append(f"{task.name}: recorded {record.best_correct} correct, re-evaluated {correct}")
    return found
