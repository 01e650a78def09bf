"""<method>.csv: one row per finished task, as the release writes it (with a header here)."""
import csv
from collections.abc import Iterable
from pathlib import Path

from common.files import write_csv

CSV_HEADER = ["task_id", "task_name", "best_acc"]


def read_results(path: Path) -> dict[int, dict]:
    """Rows of a <method>.csv by task id."""
    if not path.exists():
        return {}
    with path.open(newline="") as file:
        return {int(row["task_id"]): row for row in csv.DictReader(file)}


def write_results(path: Path, rows: dict[int, dict]) -> None:
    write_csv(path, CSV_HEADER, rows.values())


def record_results(path: Path, results: Iterable[tuple[int, str, float]]) -> None:
    """Add (or replace) rows given as (task_id, task_name, best_acc), rewriting <method>.csv once, atomically."""
    rows = read_results(path)
    for task_id, task_name, best_acc in results:
        rows[task_id] = {"task_id": task_id, "task_name": task_name, "best_acc": best_acc}
    write_results(path, rows)


def record_result(path: Path, task_id: int, task_name: str, best_acc: float) -> None:
    """Add (or replace) a task's row in <method>.csv, rewriting the file atomically."""
    record_results(path, [(task_id, task_name, best_acc)])
