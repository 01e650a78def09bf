"""The numbers, checked against what is on disk: each isolated method's saved tasks re-loaded onto a freshly built
backbone and re-evaluated on their validation split (zero forgetting), and each shared-backbone method's final model
rebuilt from its after-task file and every task re-evaluated on it (the accuracy matrix's last row)."""
from collections import Counter
from dataclasses import dataclass, field

import pandas as pd

from common.console import TransientBar
from continual.restore import load_final_model
from continual.sequence import evaluate_task
from dataset.task import TaskInfo, TaskSample
from network import load_task_state
from report.inputs import MethodResults
from training.context import Context
from training.loop import build_task_model, evaluate
from training.record import TaskRecord
from training.saved import PIXELS, differing_settings, recorded_options, recorded_policy


@dataclass
class Verification:
    """What re-evaluating one method's saved tasks found."""

    equal: int = 0
    mismatches: list[str] = field(default_factory=list)
    skipped: Counter = field(default_factory=Counter)  # reason -> number of tasks
    checked_as: str = "re-loaded onto a freshly built backbone and re-evaluated on their validation split"
    compared_with: str = "the recorded ones"

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
            parts.append(f"{self.checked} task(s) {self.checked_as}: "
                         + (f"all re-evaluated accuracies equal {self.compared_with}" if not self.mismatches else
                            f"**{len(self.mismatches)} MISMATCH(ES)**: " + "; ".join(self.mismatches)))
        parts += [f"{count} task(s) not re-evaluated: {reason}" for reason, count in self.skipped.items()]
        return ". ".join(parts) + "."


def verify_task(ctx: Context, sample: TaskSample, method: str, record: TaskRecord) -> int:
    """Re-load a task's saved state onto a freshly built backbone (with its recorded method options, norm policy and
    CLR placement) and count its correct validation images."""
    model = build_task_model(ctx.backbone, method, sample.num_classes, ctx.runtime, recorded_options(record.config),
                             recorded_policy(record.config))
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
    """Re-evaluate every saved task of a method: an isolated method's where its settings and data match this run's,
    a shared-backbone method's on its final model. ``samples`` caches each task's sample across methods."""
    finished = [task for task in tasks if task.task_id in results.accuracy.index]
    if ctx is None:
        return Verification(skipped=Counter({"--no-verify": len(finished)}))
    if results.shared_backbone:
        return verify_sequence(ctx, results, finished, samples)
    found = Verification()
    for task in TransientBar(finished, desc=f"verifying {results.name}"):
        if task.task_id not in results.records:
            found.skipped["no weights file"] += 1
            continue
        sample = sample_of(ctx, task, samples)
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


def verify_sequence(ctx: Context, results: MethodResults, finished: list[TaskInfo],
                    samples: dict[int, TaskSample]) -> Verification:
    """Rebuild a shared-backbone method's final model from its after-task file alone and re-evaluate each finished
    task on it (its head and per-task state). The matrix's last row was computed on the same model by the same
    evaluation, so each count must equal it exactly (on the device it was trained on)."""
    path = ctx.layout.after_task(results.name)
    found = Verification(checked_as=f"re-evaluated on the final model rebuilt from {path.name} (the backbone after "
                         "the last task, with each task's head and per-task state)",
                         compared_with="the accuracy matrix's last row")
    if not path.exists() or results.matrix is None:
        found.skipped[f"no {path.name}" if not path.exists() else "no accuracy matrix"] = len(finished)
        return found
    final = load_final_model(ctx, results.name)
    last_row = results.matrix.iloc[-1]
    for task in TransientBar(finished, desc=f"verifying {results.name}"):
        if task.name not in final.task_names or pd.isna(last_row.get(task.name)):
            found.skipped[f"not among the tasks of {path.name} and the matrix's last row"] += 1
            continue
        sample = sample_of(ctx, task, samples)
        position = final.position(task.name)
        reason = skip_reason(final.ctx.task_config(sample), final.records[position].config)
        if reason:
            found.skipped[reason] += 1
            continue
        correct = evaluate_task(final.ctx, final.model, final.method, position, sample)
        expected = round(float(last_row[task.name]) * len(sample.val))
        if correct == expected:
            found.equal += 1
        else:
            found.mismatches.append(f"{task.name}: the matrix's last row has {expected} correct, re-evaluated "
                                    f"{correct}")
    return found


def sample_of(ctx: Context, task: TaskInfo, samples: dict[int, TaskSample]) -> TaskSample:
    """The task's sample from ``ctx``'s data, drawn once per report."""
    if task.task_id not in samples:
        samples[task.task_id] = ctx.source.sample(task)
    return samples[task.task_id]
