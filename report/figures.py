"""The report's figures (matplotlib, headless): per-task accuracy, accuracy against parameters per task,
training curves and accuracy matrices, and across seeds, means with their spread and intervals. Each is saved as a
PNG under a stable name (SVG was dropped: at 53 tasks the training curves made a 1.7 MB file, and every run paid
for it)."""
import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # no display on servers and in CI; set before pyplot is imported
import matplotlib.pyplot as plt  # noqa: E402
import matplotlib.ticker as ticker  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from common.files import atomic_path  # noqa: E402
from report.inputs import MethodResults  # noqa: E402
from report.compare import Comparison, Friedman  # noqa: E402
from report.methods import accuracy_label, display_name  # noqa: E402
from report.tables import size_cell  # noqa: E402

MARKERS = "oDs^v<>Ph*X"
CURVE_COLUMNS = 6  # small multiples per row of the training-curves figure
ANNOTATED_MATRIX = 15  # print each cell's value in matrices up to this many tasks


def save(figure: plt.Figure, folder: Path, stem: str) -> list[Path]:
    """Write the figure as a PNG, atomically, and close it."""
    path = folder / f"{stem}.png"
    with atomic_path(path) as tmp:
        figure.savefig(tmp, format="png", dpi=100, bbox_inches="tight")
    plt.close(figure)
    return [path]


def per_task_accuracy(tasks: pd.DataFrame, accuracy: pd.DataFrame, folder: Path, spread: pd.DataFrame | None = None,
                      stem: str = "per_task_accuracy") -> list[Path]:
    """Every method's accuracy on every task, tasks sorted by the first method's (CLR's) accuracy, one row per
    task so that 53 task names stay readable. With ``spread`` (the sd across seeds of each task and method),
    ``accuracy`` holds the means and each point gets a bar of ± one sd; the methods then sit slightly apart in
    the row, so that their bars do not hide each other."""
    first = accuracy.columns[0]
    order = accuracy.sort_values(by=first, na_position="first").index
    figure, axes = plt.subplots(figsize=(8, 1.8 + (0.26 if spread is None else 0.4) * len(order)),
                                layout="constrained")
    rows = np.arange(len(order))
    axes.hlines(rows, 0, 100, colors="0.92", linewidth=0.8, zorder=0)
    apart = np.linspace(-0.25, 0.25, len(accuracy.columns)) if spread is not None and len(accuracy.columns) > 1 \
        else np.zeros(len(accuracy.columns))
    for k, method in enumerate(accuracy.columns):
        if spread is None:
            label = f"{accuracy_label(method)}, average {100 * accuracy[method].mean():.2f}%"
            axes.scatter(100 * accuracy.loc[order, method], rows, marker=MARKERS[k % len(MARKERS)], s=28,
                         label=label, zorder=2)
        else:  # no average in the label: the report's averages across seeds leave out a method's unfinished seeds
            axes.errorbar(100 * accuracy.loc[order, method], rows + apart[k],  # one seed gives no spread, no bar
                          xerr=100 * spread.loc[order, method].fillna(0.0), fmt=MARKERS[k % len(MARKERS)],
                          markersize=5, capsize=2, elinewidth=1, label=accuracy_label(method), zorder=2)
    axes.set_yticks(rows, tasks.loc[order, "task_name"], fontsize=8)
    axes.set_ylim(-0.7, len(order) - 0.3)
    axes.set_xlim(0, 100)
    axes.set_xlabel("accuracy (%): each method's best validation accuracy, or after the last task, as its legend says"
                    + ("" if spread is None else "; mean over seeds ± one sd"))
    axes.set_title(f"{'Accuracy' if spread is None else 'Mean accuracy over seeds'} per task ({len(order)} tasks, "
                   f"sorted by {display_name(first)})")
    figure.legend(loc="outside lower center", ncols=3, fontsize=8, frameon=False)
    axes.grid(axis="x", alpha=0.4)
    return save(figure, folder, stem)


def accuracy_vs_parameters(stored: pd.Series, accuracy: pd.Series, folder: Path, ylabel: str,
                           half_width: pd.Series | None = None, stem: str = "accuracy_vs_parameters") -> list[Path]:
    """CLR's trade-off: each method's average accuracy (a fraction) against what each task stores of its own
    (``stored``, bytes), so that a binary mask (one bit per weight) and float parameters (four bytes each) compare
    honestly; with ``half_width``, each point has its 95% interval (no bar where one seed gives none). Methods often
    share a point (every one at 100% on easy tasks), so a legend, not labels, names them."""
    shown = pd.DataFrame({"stored": stored, "accuracy": accuracy}).dropna()
    figure, axes = plt.subplots(figsize=(8.5, 4.8), layout="constrained")
    colours = plt.get_cmap("tab20").colors
    for k, (method, row) in enumerate(shown.iterrows()):
        bar = None if half_width is None or pd.isna(half_width.get(method)) else 100 * half_width[method]
        axes.errorbar(row.stored, 100 * row.accuracy, yerr=bar, fmt=MARKERS[k % len(MARKERS)], markersize=8,
                      capsize=4, color=colours[k % len(colours)], label=accuracy_label(method), zorder=2, alpha=0.85)
    axes.set_xscale("log", base=2)
    axes.xaxis.set_major_locator(ticker.LogLocator(base=4))
    axes.xaxis.set_major_formatter(ticker.FuncFormatter(lambda value, _: size_cell(value)))
    axes.xaxis.set_minor_locator(ticker.NullLocator())
    axes.set_ylim(0, 102)
    if len(shown):
        axes.set_xlim(shown.stored.min() / 2, shown.stored.max() * 2)
    axes.set_xlabel("bytes each task stores of its own (log scale; a mask is one bit per weight)")
    axes.set_ylabel(ylabel)
    axes.set_title("Accuracy against what each task stores")
    axes.grid(alpha=0.4)
    if len(shown):
        figure.legend(loc="outside right upper", fontsize=8, frameon=False)
    return save(figure, folder, stem)


def critical_difference(friedman: Friedman, folder: Path, stem: str = "critical_difference") -> list[Path]:
    """Demšar's critical-difference diagram (his Figure 1): the methods on the axis of average ranks, the best (lowest)
    to the right, the critical difference drawn above, and a thick bar joining each group of methods whose ranks lie
    within it, i.e. that the Nemenyi test does not tell apart."""
    ranks = friedman.ranks.sort_values()
    methods = len(ranks)
    half = math.ceil(methods / 2)
    figure, axes = plt.subplots(figsize=(8, 2.2 + 0.28 * half), layout="constrained")
    axes.set_xlim(methods + 0.3, 0.7)  # reversed: rank 1 on the right
    depth = half + 1.2
    axes.set_ylim(-depth, 1.6)
    axes.axis("off")
    axes.hlines(0, 1, methods, color="black", linewidth=1)
    for tick in range(1, methods + 1):
        axes.vlines(tick, 0, 0.12, color="black", linewidth=1)
        axes.text(tick, 0.2, str(tick), ha="center", va="bottom", fontsize=9)
    axes.hlines(1.1, 1, 1 + friedman.critical_difference, color="black", linewidth=1.5)
    axes.vlines([1, 1 + friedman.critical_difference], 1.0, 1.2, color="black", linewidth=1.5)
    axes.text(1 + friedman.critical_difference / 2, 1.25, f"CD = {friedman.critical_difference:.2f}", ha="center",
              va="bottom", fontsize=9)
    for k, (method, rank) in enumerate(ranks.items()):  # the best half hangs to the right, the rest to the left
        right = k < half
        row = -(k + 1 if right else methods - k) * 0.9
        end = 0.5 if right else methods + 0.5
        axes.plot([rank, rank, end], [0, row, row], color="black", linewidth=0.8)
        axes.text(end - 0.05 if right else end + 0.05, row, f"{display_name(method)} ({rank:.2f})",
                  ha="left" if right else "right", va="center", fontsize=9)
    for level, group in enumerate(friedman.groups()):
        axes.hlines(-0.25 - 0.2 * level, ranks[group[0]] - 0.03, ranks[group[-1]] + 0.03, color="black",
                    linewidth=4)
    axes.set_title(f"Average ranks over {friedman.tasks} tasks; a bar joins methods not significantly different "
                   "(Nemenyi, α = 0.05)", fontsize=9)
    return save(figure, folder, stem)


def accuracy_heatmap(tasks: pd.DataFrame, accuracy: pd.DataFrame, folder: Path, title: str,
                     stem: str = "accuracy_heatmap") -> list[Path]:
    """The paper's per-task table as a picture: tasks in run order down, methods across, each cell's accuracy (%)
    written in it; blank where a method did not finish the task."""
    values = 100 * accuracy.to_numpy(dtype=float)
    figure, axes = plt.subplots(figsize=(2.5 + 1.1 * accuracy.shape[1], 1.6 + 0.28 * len(accuracy)),
                                layout="constrained")
    image = axes.imshow(np.ma.masked_invalid(values), cmap="viridis", vmin=0, vmax=100, aspect="auto")
    axes.set_xticks(range(accuracy.shape[1]), [accuracy_label(m).replace(" (", "\n(") for m in accuracy.columns],
                    fontsize=8)
    axes.xaxis.tick_top()
    axes.set_yticks(range(len(accuracy)), [f"{order}. {name}" for order, name in
                                           zip(tasks.loc[accuracy.index, "order"], tasks.loc[accuracy.index,
                                                                                               "task_name"])],
                    fontsize=8)
    for (row, column), value in np.ndenumerate(values):
        if not math.isnan(value):
            axes.text(column, row, f"{value:.1f}", ha="center", va="center", fontsize=7,
                      color="white" if value < 60 else "black")
    axes.set_title(title, fontsize=10)
    figure.colorbar(image, ax=axes, label="accuracy (%)", fraction=0.04)
    return save(figure, folder, stem)


def training_curves(tasks: pd.DataFrame, results: list[MethodResults], folder: Path) -> list[Path]:
    """Validation accuracy per epoch, one small panel per task, one line per method (from the metrics files, or the
    weights files' histories)."""
    shown = [task_id for task_id in tasks.index if any(task_id in r.curves for r in results)]
    if not shown:
        return []  # no finished task has epochs to draw
    columns = min(CURVE_COLUMNS, max(1, len(shown)))
    rows = max(1, math.ceil(len(shown) / columns))
    figure, grid = plt.subplots(rows, columns, figsize=(2.7 * columns + 0.6, 2.1 * rows + 1.0), squeeze=False,
                                sharey=True, layout="constrained")
    for axes in grid.flat[len(shown):]:
        axes.set_visible(False)
    for axes, task_id in zip(grid.flat, shown):
        for k, r in enumerate(results):
            epochs = r.curves.get(task_id, [])
            if epochs:
                axes.plot([e["epoch"] for e in epochs], [100 * e["val_acc"] for e in epochs], linewidth=1.2,
                          marker=MARKERS[k % len(MARKERS)], markersize=2.5, color=f"C{k}", label=display_name(r.name))
        axes.set_title(tasks.loc[task_id, "task_name"], fontsize=8)
        axes.set_ylim(0, 100)
        axes.tick_params(labelsize=7)
        axes.xaxis.set_major_locator(ticker.MaxNLocator(integer=True))
        axes.grid(alpha=0.4)
    for axes in grid[:, 0]:
        axes.set_ylabel("val accuracy (%)", fontsize=8)
    for axes in grid[-1, :]:
        axes.set_xlabel("epoch", fontsize=8)
    handles = {label: line for axes in grid.flat for line, label in zip(*axes.get_legend_handles_labels())}
    figure.suptitle("Validation accuracy per epoch, per task")
    figure.legend(handles.values(), handles.keys(), loc="outside lower center", ncols=min(6, max(1, len(handles))),
                  fontsize=9, frameon=False)
    return save(figure, folder, "training_curves")


def accuracy_matrix(results: MethodResults, folder: Path) -> list[Path]:
    """R[t][i]: accuracy on task i after learning task t; the lower triangle, since later tasks are unknown."""
    matrix = results.matrix
    values = 100 * matrix.drop(columns="task_name").to_numpy(dtype=float)
    names = list(matrix.columns[1:])
    learnt = list(matrix.task_name)
    size = max(4.5, 0.22 * len(names) + 2.5)
    figure, axes = plt.subplots(figsize=(size + 1.2, max(3.0, 0.22 * len(learnt) + 2.5)), layout="constrained")
    image = axes.imshow(np.ma.masked_invalid(values), cmap="viridis", vmin=0, vmax=100, aspect="auto")
    font = 8 if len(names) <= 20 else 6
    axes.set_xticks(range(len(names)), names, rotation=90, fontsize=font)
    axes.set_yticks(range(len(learnt)), learnt, fontsize=font)
    if len(names) <= ANNOTATED_MATRIX:
        for (t, i), value in np.ndenumerate(values):
            if not math.isnan(value):
                axes.text(i, t, f"{value:.0f}", ha="center", va="center", fontsize=7,
                          color="white" if value < 60 else "black")
    axes.set_xlabel("evaluated task")
    axes.set_ylabel("after learning task")
    axes.set_title(f"{display_name(results.name)}: accuracy matrix")
    figure.colorbar(image, ax=axes, label="accuracy (%)", fraction=0.04)
    return save(figure, folder, f"accuracy_matrix_{results.name}")


def comparison_figures(comparison: Comparison, tasks: pd.DataFrame, accuracy: pd.DataFrame, folder: Path, title: str,
                       prefix: str = "") -> list[Path]:
    """The figures of "Does CLR outperform them?": the critical-difference diagram where the Friedman test runs, and
    the heatmap of ``accuracy`` (every method, tasks in run order)."""
    friedman = comparison.friedman()
    paths = critical_difference(friedman, folder, f"{prefix}critical_difference") if friedman else []
    return paths + accuracy_heatmap(tasks, accuracy, folder, title, f"{prefix}accuracy_heatmap")


def average_accuracy_intervals(summary: pd.DataFrame, tasks: int, folder: Path) -> list[Path]:
    """Each method's average accuracy, as a mean over seeds with its 95% interval (columns ``average_seeds``,
    ``average_mean``, ``average_half_width``): a gap between two methods that these bars cover may be seed noise.
    A method with one seed has its point and no bar, and says so."""
    shown = summary.dropna(subset=["average_mean"])
    figure, axes = plt.subplots(figsize=(8, 1.6 + 0.4 * len(shown)), layout="constrained")
    for k, (method, row) in enumerate(shown.iterrows()):
        half_width = None if math.isnan(row.average_half_width) else 100 * row.average_half_width
        axes.errorbar(100 * row.average_mean, k, xerr=half_width, fmt=MARKERS[k % len(MARKERS)], markersize=7,
                      capsize=4, color=f"C{k}")
    axes.set_yticks(range(len(shown)), [display_name(m) + ("" if n >= 2 else " (one seed)")
                                        for m, n in zip(shown.index, shown.average_seeds)])
    axes.set_ylim(len(shown) - 0.5, -0.5)  # the paper's order, top down
    axes.set_xlabel(f"average accuracy over the {tasks} tasks (%): mean over seeds, 95% interval")
    axes.set_title("Average accuracy across seeds")
    axes.grid(axis="x", alpha=0.4)
    return save(figure, folder, "seeds_average_accuracy")
