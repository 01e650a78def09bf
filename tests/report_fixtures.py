"""Result folders written by hand to the file contracts (<method>.csv, weights files, accuracy matrices,
task-agnostic counts), so the report is tested against the formats without training."""
import csv
from pathlib import Path

import torch


def write_csv(path: Path, header: list[str], rows: list[list]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as file:
        writer = csv.writer(file, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(rows)


def write_method(result: Path, weight: Path, method: str, tasks: list[tuple[int, str]], accuracies: list[float],
                 percent: float, shared: bool = False, arch: str = "resnet18") -> None:
    """<method>.csv and one weights file per task, with the keys every method writes (contract 1)."""
    write_csv(result / f"{method}.csv", ["task_id", "task_name", "best_acc"],
              [[task_id, name, acc] for (task_id, name), acc in zip(tasks, accuracies)])
    weight.mkdir(parents=True, exist_ok=True)
    for k, ((task_id, name), acc) in enumerate(zip(tasks, accuracies)):
        val, classes = 40 + k, 5 + k
        epochs = 3 + k
        history = [{"epoch": e, "loss": 1.0 / e, "train_acc": acc * e / epochs, "val_acc": acc * e / epochs}
                   for e in range(1, epochs + 1)]
        saved = {"state": {"fc.weight": torch.zeros(classes, 4), "fc.bias": torch.zeros(classes)},
                 "config": {"method": method, "arch": arch, "backbone": "none:seed0", "num_classes": classes,
                            "image_size": 32},
                 "task_id": task_id, "task_name": name, "label_map": {str(c): c for c in range(classes)},
                 "best_epoch": epochs, "best_correct": round(acc * val), "best_acc": acc, "epochs_run": epochs,
                 "train_images": 300 + k, "val_images": val, "trainable_params": round(percent * 1000),
                 "percent_of_backbone": percent, "history": history}
        if shared:
            saved["shared_backbone"] = True
        torch.save(saved, weight / f"{name}_{method}.pt")


def write_matrix(result: Path, method: str, tasks: list[tuple[int, str]], rows: list[list[float]]) -> None:
    """<method>_matrix.csv (contract 3): row t holds R[t][i] for i <= t, blanks after."""
    names = [name for _, name in tasks]
    write_csv(result / f"{method}_matrix.csv", ["task_id", "task_name", *names],
              [[task_id, name, *row, *[""] * (len(names) - len(row))]
               for (task_id, name), row in zip(tasks, rows)])


def write_task_agnostic(result: Path, method: str, tasks: list[tuple[int, str]],
                        counts: list[tuple[int, int, int]]) -> None:
    """task_agnostic_<method>.csv (contract 4): val images, mapper correct, end-to-end correct per task."""
    write_csv(result / f"task_agnostic_{method}.csv",
              ["task_id", "task_name", "val_images", "mapper_correct", "end_to_end_correct"],
              [[task_id, name, *count] for (task_id, name), count in zip(tasks, counts)])
