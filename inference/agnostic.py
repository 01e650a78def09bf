"""Task-agnostic evaluation: how the finished tasks do when nobody says which task an image is from.

Over every finished task's validation images, the task mapper picks a task for each image; an image counts
for the mapper when it picks the image's own task, and end to end when, in addition, that task's model
predicts the image's class. Written to ``result/task_agnostic_<method>.csv``.
"""
from dataclasses import dataclass
from pathlib import Path

from common.files import write_csv
from dataset.task import TaskSample
from inference.mapper import backbone_features, choose_tasks, task_anchor
from inference.trained import batch_outputs, usable_record
from training.context import Context
from training.isolated import task_model

COLUMNS = ("task_id", "task_name", "val_images", "mapper_correct", "end_to_end_correct")


@dataclass(frozen=True)
class TaskAgnostic:
    """The per-task counts as written, and where."""

    path: Path
    rows: list[dict]
    task_given_correct: int  # the recorded best_correct of the same tasks, for comparison

    def accuracy(self, column: str) -> float:
        return sum(row[column] for row in self.rows) / sum(row["val_images"] for row in self.rows)

    def summary(self) -> str:
        images = sum(row["val_images"] for row in self.rows)
        return (f"task-agnostic over {len(self.rows)} task(s), {images} validation images: task mapper "
                f"{self.accuracy('mapper_correct'):.2%}, end to end {self.accuracy('end_to_end_correct'):.2%} "
                f"(task given: {self.task_given_correct / images:.2%}) -> {self.path}")


def write_task_agnostic(ctx: Context, samples: list[TaskSample]) -> TaskAgnostic | None:
    """Evaluate every finished task among ``samples`` (trained with this command's settings, on these images)
    without its task label and write the CSV; None (and no file) when there is none. Tasks without a task anchor
    get one here."""
    finished = [(sample, record) for sample in samples
                if (record := usable_record(ctx, sample.task, ctx.task_config(sample))) is not None]
    if not finished:
        return None
    anchors = [task_anchor(ctx, sample.task, record.config) for sample, record in finished]
    rows = []
    for index, (sample, record) in enumerate(finished):
        tensors, name = ctx.tensors(sample), sample.task.name
        chosen, _ = choose_tasks(backbone_features(ctx, tensors.val_images, f"{name}: task mapper"), anchors)
        # the whole split in its own batches, as evaluation ran it, so the task-given counts are the recorded ones
        predicted = batch_outputs(task_model(ctx, record), tensors.val_images, ctx, name).argmax(1)
        mapped = chosen == index
        rows.append({"task_id": sample.task.task_id, "task_name": name, "val_images": len(tensors.val_labels),
                     "mapper_correct": int(mapped.sum()),
                     "end_to_end_correct": int((mapped & (predicted == tensors.val_labels)).sum())})
    path = ctx.layout.task_agnostic_csv(ctx.method)
    write_csv(path, COLUMNS, rows)
    return TaskAgnostic(path, rows, sum(record.best_correct for _, record in finished))
