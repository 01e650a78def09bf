"""The accuracy matrix R[t][i] (accuracy on task i after learning task t) and what is read from it."""
from pathlib import Path

from common.files import write_csv
from dataset.task import TaskSample


def write_matrix(path: Path, samples: list[TaskSample], matrix: list[list[float]]) -> None:
    """``task_id,task_name,<task 1>,...,<task T>``: one row per finished task, empty cells for tasks not
    learnt yet; the columns are the run's tasks in run order."""
    write_csv(path, ["task_id", "task_name", *(sample.task.name for sample in samples)],
              ([sample.task.task_id, sample.task.name, *row, *[""] * (len(samples) - len(row))]
               for sample, row in zip(samples, matrix)))


def backward_transfer(matrix: list[list[float]]) -> float | None:
    """BWT = mean over i < T of R[T][i] - R[i][i] (negative: forgetting); None with fewer than two tasks."""
    if len(matrix) < 2:
        return None
    return sum(matrix[-1][i] - matrix[i][i] for i in range(len(matrix) - 1)) / (len(matrix) - 1)


def summary(method: str, samples: list[TaskSample], matrix: list[list[float]]) -> str:
    """The matrix in percent, the average final accuracy and the BWT, for the console."""
    names = [sample.task.name for sample in samples[:len(matrix)]]
    lines = [f"{method}: accuracy % on each task (columns) after learning each task (rows)",
             " | ".join(["after \\ on", *names])]
    lines += [" | ".join([name, *(f"{100 * r:.2f}" for r in row)]) for name, row in zip(names, matrix)]
    final = sum(matrix[-1]) / len(matrix[-1])
    bwt = backward_transfer(matrix)
    lines.append(f"average final accuracy {100 * final:.2f}%, BWT "
                 + ("n/a (one task)" if bwt is None else f"{100 * bwt:+.2f} points"))
    return "\n".join(lines)
