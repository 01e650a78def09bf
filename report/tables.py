"""The report's tables, all pandas: tasks side by side per method, a summary per method, accuracy matrices
with backward transfer, and task-agnostic accuracy."""
import math

import pandas as pd

import training.matrix
from dataset.task import TaskInfo
from report.inputs import MethodResults
from report.methods import display_name
from training.verification import Verification

COUNT_COLUMNS = ["classes", "train", "val"]


def task_frame(tasks: list[TaskInfo], results: list[MethodResults]) -> pd.DataFrame:
    """One row per task that any method finished, in run order, indexed by task id, with its classes and
    image counts: from a weights file (the sample actually used) where there is one, else the stat file's."""
    rows = {}
    for task in tasks:
        if not any(task.task_id in r.accuracy.index for r in results):
            continue
        record = next((r.records[task.task_id] for r in results if task.task_id in r.records), None)
        rows[task.task_id] = {"order": task.order + 1, "task_name": task.name,
                              "classes": record.config.get("num_classes") if record else task.class_num,
                              "train": record.train_images if record else task.train_num,
                              "val": record.val_images if record else task.val_num}
    frame = pd.DataFrame.from_dict(rows, orient="index", columns=["order", "task_name", *COUNT_COLUMNS])
    return frame.rename_axis("task_id").astype({column: "Int64" for column in ["order", *COUNT_COLUMNS]})


def accuracy_frame(tasks: pd.DataFrame, results: list[MethodResults]) -> pd.DataFrame:
    """Best accuracy (fraction) per task and method; NaN where the method has not finished the task."""
    return pd.DataFrame({r.name: r.accuracy for r in results}, index=tasks.index, dtype=float)


def params_frame(tasks: pd.DataFrame, results: list[MethodResults]) -> pd.DataFrame:
    """Extra parameters each task adds, in % of the backbone, per task and method (from the weights files)."""
    return pd.DataFrame({r.name: pd.Series({task_id: record.percent_of_backbone
                                            for task_id, record in r.records.items()}, dtype=float)
                         for r in results}, index=tasks.index, dtype=float)


def bytes_frame(tasks: pd.DataFrame, results: list[MethodResults]) -> pd.DataFrame:
    """Bytes each task keeps of its own, per task and method (from the weights files): float tensors at their
    size, masks at one bit per weight, ER's images; what all tasks share (the backbone) is not counted."""
    return pd.DataFrame({r.name: pd.Series({task_id: record.stored_bytes for task_id, record in r.records.items()},
                                           dtype=float)
                         for r in results}, index=tasks.index, dtype=float)


def backward_transfer(matrix: pd.DataFrame) -> float | None:
    """The BWT of a matrix as read from <method>_matrix.csv (``training.matrix`` defines it)."""
    return training.matrix.backward_transfer(matrix.drop(columns="task_name").to_numpy(dtype=float).tolist())


def summary_frame(accuracy: pd.DataFrame, params: pd.DataFrame, stored: pd.DataFrame, results: list[MethodResults],
                  checks: dict[str, Verification], compared: pd.DataFrame) -> pd.DataFrame:
    """One row per method: tasks finished, average and median accuracy, the average over the tasks of the comparison
    (``compared``: the tasks x the methods that finished every task; empty for a method that did not), parameters and
    bytes per task, and backward transfer (0 for an isolated method whose every task re-evaluated equal)."""
    rows = {}
    for r in results:
        check = checks[r.name]
        verified_zero = check.checked == r.accuracy.size and not check.mismatches
        rows[r.name] = {"tasks": int(accuracy[r.name].count()), "average": accuracy[r.name].mean(),
                        "median": accuracy[r.name].median(),
                        "compared_average": compared[r.name].mean() if r.name in compared else math.nan,
                        "params_percent": params[r.name].mean(), "bytes_per_task": stored[r.name].mean(),
                        "bwt": (backward_transfer(r.matrix) if r.matrix is not None
                                else 0.0 if verified_zero else None)}
    return pd.DataFrame.from_dict(rows, orient="index").astype({"bwt": float})


def cell(value, digits: int = 2, scale: float = 1.0) -> str:
    """A number for a markdown cell; blank where there is none."""
    if value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value)):
        return ""
    return f"{scale * value:.{digits}f}" if isinstance(value, float) else str(value)


def percent_cell(fraction) -> str:
    return cell(fraction, 2, 100)


def params_cell(percent) -> str:
    return cell(percent, 3)


def size_cell(size) -> str:
    """Bytes in binary units, three significant figures; blank where unknown."""
    if size is None or (isinstance(size, float) and math.isnan(size)):
        return ""
    for unit in ("B", "KiB", "MiB"):
        if size < 1024 or unit == "MiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.3g} {unit}"
        size /= 1024


def markdown(frame: pd.DataFrame) -> str:
    """A pipe table of already formatted cells."""
    lines = ["| " + " | ".join(map(str, frame.columns)) + " |", "|" + "---|" * len(frame.columns)]
    lines += ["| " + " | ".join(map(str, row)) + " |" for row in frame.itertuples(index=False)]
    return "\n".join(lines)


def accuracy_header(method: str) -> str:
    return f"{display_name(method)} acc %"


def params_header(method: str) -> str:
    return f"{display_name(method)} params %"


def footer_row(label: str, accuracy: pd.Series, params: pd.Series, format_accuracy=percent_cell,
               format_params=params_cell) -> dict:
    """A row under the per-task table: the label in the task column, one value per method column."""
    return {"task": label, **{accuracy_header(m): format_accuracy(v) for m, v in accuracy.items()},
            **{params_header(m): format_params(v) for m, v in params.items()}}


def per_task_markdown(tasks: pd.DataFrame, accuracy: pd.DataFrame, params: pd.DataFrame,
                      compared: pd.DataFrame) -> str:
    """The paper's per-task table: counts, each method's accuracy side by side, then each one's parameters,
    with average and median rows that say over how many tasks they are taken. ``compared`` is the comparison's
    tasks x methods (those that finished every task): where a method is unfinished, the last row averages the
    compared methods over those tasks, so the unfinished one cannot shrink it."""
    table = pd.DataFrame({"order": tasks.order.map(cell), "id": tasks.index.astype(str), "task": tasks.task_name,
                          **{c: tasks[c].map(cell) for c in COUNT_COLUMNS}})
    for method in accuracy:
        table[accuracy_header(method)] = accuracy[method].map(percent_cell)
    for method in params:
        table[params_header(method)] = params[method].map(params_cell)
    if accuracy.notna().all().all():
        over = f"over {len(tasks)} task{'' if len(tasks) == 1 else 's'}"
        footers = [footer_row(f"**average {over}**", accuracy.mean(), params.mean()),
                   footer_row(f"**median {over}**", accuracy.median(), params.median())]
    else:
        footers = [footer_row("**tasks finished**", accuracy.count(), params.count(), str, str),
                   footer_row("**average over the tasks finished**", accuracy.mean(), params.mean()),
                   footer_row("**median over the tasks finished**", accuracy.median(), params.median())]
        if len(compared.columns):
            footers.append(footer_row(f"**average over the {len(compared)} compared tasks**",
                                      compared.mean().reindex(accuracy.columns),
                                      params.loc[compared.index, compared.columns].mean().reindex(params.columns)))
    footer = pd.DataFrame(footers, columns=table.columns, dtype=object).fillna("")
    return markdown(pd.concat([table.reset_index(drop=True), footer], ignore_index=True))


def summary_markdown(summary: pd.DataFrame, checks: dict[str, Verification], compared: int) -> str:
    table = pd.DataFrame({
        "method": [display_name(m) for m in summary.index], "tasks": summary.tasks.astype(str),
        "average acc %": summary.average.map(percent_cell),
        "median acc %": summary["median"].map(percent_cell),
        f"average over the {compared} compared tasks %": summary.compared_average.map(percent_cell),
        "extra params per task (% of backbone)": summary.params_percent.map(params_cell),
        "stored per task": summary.bytes_per_task.map(size_cell),
        "BWT (points)": summary.bwt.map(percent_cell),
        "verified": [f"{checks[m].equal}/{checks[m].checked}" if checks[m].checked else "no" for m in summary.index],
    })
    return markdown(table)


def matrix_markdown(results: MethodResults) -> str:
    """A shared-backbone method's forgetting: each task just after learning it and after the last task."""
    matrix = results.matrix
    r = matrix.drop(columns="task_name").to_numpy(dtype=float)
    learnt = len(r)
    just_learnt, final = r.diagonal()[:learnt], r[-1, :learnt]
    bwt = backward_transfer(matrix)
    table = pd.DataFrame({"task": matrix.task_name.to_list(), "just learnt % (R[i][i])": [percent_cell(v) for v in just_learnt],
                          f"after task {learnt} % (R[T][i])": [percent_cell(v) for v in final],
                          "change (points)": [percent_cell(v) for v in final - just_learnt]})
    bwt_text = (f"BWT over {learnt} tasks: **{percent_cell(bwt)} points** (mean over i < T of R[T][i] - R[i][i])"
                if bwt is not None else "BWT needs two tasks learnt")
    return (f"### {display_name(results.name)}: accuracy matrix\n\n{bwt_text}; average accuracy after the last "
            f"task: {percent_cell(float(final.mean()))}%.\n\n" + markdown(table))


def task_agnostic_markdown(results: MethodResults) -> str:
    """Accuracy when the task is not given: the mapper picks it from the image, then that task's head answers."""
    frame = results.task_agnostic
    images = frame.val_images.sum()
    table = pd.DataFrame({"task": frame.task_name, "val": frame.val_images.astype(str),
                          "mapper %": (frame.mapper_correct / frame.val_images).map(percent_cell),
                          "end to end %": (frame.end_to_end_correct / frame.val_images).map(percent_cell)})
    return (f"### {display_name(results.name)}: task-agnostic\n\nOver {images} validation images of "
            f"{len(frame)} tasks: the task mapper picked the right task for "
            f"**{percent_cell(frame.mapper_correct.sum() / images)}%**, and the image was classified right end to "
            f"end (right task, right class) for **{percent_cell(frame.end_to_end_correct.sum() / images)}%**.\n\n"
            + markdown(table))


def wide_csv(tasks: pd.DataFrame, accuracy: pd.DataFrame, params: pd.DataFrame, stored: pd.DataFrame) -> str:
    """results_wide.csv: one row per task, each method's accuracy (a fraction, as in <method>.csv) in a column
    named after it, then its parameters per task as params_percent_<method> and its bytes as stored_bytes_<method>."""
    wide = pd.concat([tasks, accuracy, params.add_prefix("params_percent_"),
                      stored.astype("Int64").add_prefix("stored_bytes_")], axis=1)
    return wide.reset_index().to_csv(index=False, lineterminator="\n")
