"""The report across seeds: each seed's run is an ordinary result folder with its own verified report; this reads
them all and tells a difference between methods from seed-to-seed noise, with means, sample sds, Student-t
intervals and CLR's paired differences (the estimators: docs/report.md, "Across seeds")."""
import math
import os
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
from scipy import stats

from common.errors import RunError
from common.files import atomic_write_text
from dataset.task import TaskInfo
from network import DEFAULT_METHOD
from report import compare, figures, tuning
from report.inputs import MethodResults
from report.methods import display_name, method_label, paper_order, read_methods
from report.tables import (accuracy_frame, accuracy_header, backward_transfer, bytes_frame, cell,
                           markdown, percent_cell, size_cell, task_frame)
from training.settings import Layout, prepare_output_folder

ONE_SEED = "n/a (one seed)"


def t_95(degrees_of_freedom: int) -> float:
    """The two-sided 95% critical value of Student's t, exact at any degrees of freedom (scipy's quantile)."""
    return float(stats.t.ppf(0.975, degrees_of_freedom))


@dataclass(frozen=True)
class Estimate:
    """A mean over seeds, its sample sd (ddof=1) and the half-width of its 95% t interval, t(n-1) * sd / sqrt(n).
    The sd and the interval are NaN below two seeds: one seed says nothing of the spread."""

    seeds: int
    mean: float
    sd: float
    half_width: float

    @classmethod
    def of(cls, values: pd.Series) -> "Estimate":
        values = values.dropna()
        n = len(values)
        if n < 2:
            return cls(n, float(values.mean()) if n else math.nan, math.nan, math.nan)
        sd = float(values.std(ddof=1))
        return cls(n, float(values.mean()), sd, t_95(n - 1) * sd / math.sqrt(n))

    @property
    def low(self) -> float:
        return self.mean - self.half_width

    @property
    def high(self) -> float:
        return self.mean + self.half_width

    @property
    def excludes_zero(self) -> bool | None:
        """Whether the interval lies wholly above or wholly below 0; None without an interval."""
        return None if math.isnan(self.half_width) else self.low > 0 or self.high < 0

    def fields(self, prefix: str) -> dict:
        """The numbers for a CSV row, as fractions, under ``<prefix>_seeds``, ``<prefix>_mean``, ..."""
        return {f"{prefix}_seeds": self.seeds, f"{prefix}_mean": self.mean, f"{prefix}_sd": self.sd,
                f"{prefix}_half_width": self.half_width, f"{prefix}_low": self.low, f"{prefix}_high": self.high}


NO_SEED = Estimate(0, math.nan, math.nan, math.nan)  # where no seed has a value


def spread_cell(mean: float, sd: float, seeds: int) -> str:
    """"mean ± sd" in percent; the mean alone where one seed gives no sd; blank where no seed has a value."""
    if not seeds:
        return ""
    return f"{percent_cell(mean)} (one seed)" if seeds < 2 else f"{percent_cell(mean)} ± {percent_cell(sd)}"


def interval_cell(estimate: Estimate) -> str:
    if not estimate.seeds:
        return ""
    if estimate.seeds < 2:
        return ONE_SEED
    return f"{percent_cell(estimate.low)} to {percent_cell(estimate.high)} (± {percent_cell(estimate.half_width)})"


def excludes_zero_cell(estimate: Estimate) -> str:
    if estimate.excludes_zero is None:
        return ONE_SEED if estimate.seeds == 1 else ""
    return f"yes (CLR {'higher' if estimate.low > 0 else 'lower'})" if estimate.excludes_zero else "no"


@dataclass
class SeedTables:
    """Every seed's results side by side: accuracy and bytes with a column per (seed, method)."""

    by_seed: dict[int, list[MethodResults]]
    methods: list[str]  # in the paper's order
    tasks: pd.DataFrame  # the tasks any method finished in any seed (report.tables.task_frame)
    accuracy: pd.DataFrame
    stored: pd.DataFrame

    @property
    def seeds(self) -> list[int]:
        return list(self.by_seed)

    @property
    def finished(self) -> pd.DataFrame:
        """How many tasks each method finished in each seed: seeds x methods, NaN where it did not run."""
        return self.accuracy.count().unstack("method").reindex(index=self.seeds, columns=self.methods)

    @property
    def complete(self) -> pd.DataFrame:
        """Whether each method finished every task in each seed: seeds x methods, False where it did not run. A seed
        where a method is incomplete is left out of that method's numbers, so that it shrinks no one's tasks."""
        return self.finished == len(self.tasks)

    def unfinished(self) -> dict[str, str]:
        """The methods complete in no seed, each with what it finished: they are listed apart, not compared."""
        finished, complete = self.finished, self.complete
        words = {}
        for method in (m for m in self.methods if not complete[m].any()):
            counts = finished[method].dropna()
            words[method] = "; ".join(f"{int(count)} of {len(self.tasks)} tasks" + (f" in seed {seed}"
                                                                                     if len(self.seeds) > 1 else "")
                                      for seed, count in counts.items())
        return words

    def coverage(self) -> dict[str, str]:
        """The methods complete in some seeds but not all: the seeds they are compared over, and why not the rest."""
        finished, complete_in = self.finished, self.complete
        words = {}
        for method in self.methods:
            complete = complete_in[method]
            if complete.any() and not complete.all():
                missing = [f"seed {seed}: " + ("not run" if pd.isna(finished.loc[seed, method]) else
                                               f"{int(finished.loc[seed, method])} of {len(self.tasks)} tasks")
                           for seed in complete.index[~complete]]
                words[method] = (f"seeds {', '.join(map(str, complete.index[complete]))} only "
                                 f"({'; '.join(missing)})")
        return words

    def compared_means(self) -> pd.DataFrame:
        """Each task's mean accuracy per method over the seeds in which that method finished every task: tasks x
        methods, all NaN for a method complete in no seed."""
        complete = self.complete
        kept = self.accuracy[[column for column in self.accuracy.columns if complete.loc[column]]]
        means = kept.T.groupby(level="method").mean().T
        return means.reindex(index=self.tasks.index, columns=self.methods)

    def over_seeds(self) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
        """Each task's mean, sample sd (ddof=1) and number of seeds over the seeds that finished it, per method:
        three tasks x methods frames."""
        by_method = self.accuracy.T.groupby(level="method")
        return tuple(frame.T.reindex(index=self.tasks.index, columns=self.methods)
                     for frame in (by_method.mean(), by_method.std(ddof=1), by_method.count()))

    def averages(self) -> pd.DataFrame:
        """Each seed's average accuracy over every task: seeds x methods, NaN where the method did not finish every
        task in that seed (or did not run there)."""
        means = self.accuracy.mean().unstack("method").reindex(index=self.seeds, columns=self.methods)
        return means.where(self.complete)

    def backward_transfers(self) -> pd.DataFrame:
        """Each seed's BWT of the methods with an accuracy matrix: seeds x those methods."""
        bwt = {seed: {r.name: backward_transfer(r.matrix) for r in results if r.matrix is not None}
               for seed, results in self.by_seed.items()}
        shared = [m for m in self.methods if any(m in row for row in bwt.values())]
        return pd.DataFrame.from_dict(bwt, orient="index", dtype=float).reindex(index=self.seeds, columns=shared)


def read_seed_tables(seed_layouts: dict[int, Layout], tasks: list[TaskInfo]) -> SeedTables:
    by_seed = {seed: read_methods(layout, tasks) for seed, layout in sorted(seed_layouts.items())}
    everything = [r for results in by_seed.values() for r in results]
    if not everything:
        raise RunError("no results for the selected task(s) in any seed's folder: "
                       + ", ".join(str(layout.result) for layout in seed_layouts.values()))
    frame = task_frame(tasks, everything)
    names = ["seed", "method"]
    accuracy = pd.concat({seed: accuracy_frame(frame, results) for seed, results in by_seed.items()}, axis=1,
                         names=names)
    stored = pd.concat({seed: bytes_frame(frame, results) for seed, results in by_seed.items()}, axis=1, names=names)
    return SeedTables(by_seed, paper_order(sorted({r.name for r in everything})), frame, accuracy, stored)


def summary_frame(tables: SeedTables) -> pd.DataFrame:
    """One row per method: its average accuracy and (with a matrix) BWT over seeds with their intervals, each
    seed's average, and the mean bytes a task stores over every seed's tasks."""
    averages, bwt = tables.averages(), tables.backward_transfers()
    stored = tables.stored.melt().groupby("method")["value"].mean()
    rows = {method: {"tasks": len(tables.tasks), **Estimate.of(averages[method]).fields("average"),
                     **(Estimate.of(bwt[method]).fields("bwt") if method in bwt else {}),
                     "bytes_per_task": stored.get(method),
                     **{f"average_seed_{seed}": averages.loc[seed, method] for seed in tables.seeds}}
            for method in tables.methods}
    columns = ["tasks", *NO_SEED.fields("average"), *NO_SEED.fields("bwt"), "bytes_per_task",
               *(f"average_seed_{seed}" for seed in tables.seeds)]  # the bwt columns are there, empty, without a matrix
    frame = pd.DataFrame.from_dict(rows, orient="index").reindex(columns=columns).rename_axis("method")
    return frame.astype({column: "Int64" for column in frame if column.endswith("_seeds")})


def differences_frame(tables: SeedTables) -> pd.DataFrame:
    """CLR's average minus each other method's, paired by seed (same seed, same tasks), with its interval."""
    averages = tables.averages()
    rows = {}
    unfinished = tables.unfinished()
    for other in (m for m in tables.methods if m != DEFAULT_METHOD and DEFAULT_METHOD in tables.methods
                  and not {m, DEFAULT_METHOD} & unfinished.keys()):
        difference = averages[DEFAULT_METHOD] - averages[other]
        estimate = Estimate.of(difference)
        rows[other] = {**estimate.fields("difference"), "excludes_zero": estimate.excludes_zero,
                       **{f"difference_seed_{seed}": difference[seed] for seed in tables.seeds}}
    columns = [*NO_SEED.fields("difference"), "excludes_zero", *(f"difference_seed_{seed}" for seed in tables.seeds)]
    return pd.DataFrame.from_dict(rows, orient="index").reindex(columns=columns).rename_axis("method")


def estimate(row: pd.Series, prefix: str) -> Estimate:
    """The estimate a summary or differences row holds under ``prefix``; no seeds where the row has none."""
    if pd.isna(row[f"{prefix}_seeds"]):
        return NO_SEED
    return Estimate(int(row[f"{prefix}_seeds"]), row[f"{prefix}_mean"], row[f"{prefix}_sd"],
                    row[f"{prefix}_half_width"])


def paper_frame(tables: SeedTables, summary: pd.DataFrame) -> pd.DataFrame:
    """The paper-style table: a row per task (run order), each method's mean and sd over seeds and how many seeds
    finished the task, as fractions; the last row is each method's average over every task (its sd is across the
    seeds' averages, in the seeds where the method finished every task)."""
    means, sds, counts = tables.over_seeds()
    frame = pd.DataFrame({"order": tables.tasks.order, "task_id": tables.tasks.index,
                          "task_name": tables.tasks.task_name}).reset_index(drop=True)
    average = {"task_name": "average"}
    for method in tables.methods:
        frame[[f"{method}_mean", f"{method}_sd", f"{method}_seeds"]] = pd.concat(
            [means[method], sds[method], counts[method]], axis=1).to_numpy()
        average |= {f"{method}_{name}": summary.loc[method, f"average_{name}"] for name in ("mean", "sd", "seeds")}
    frame = pd.concat([frame, pd.DataFrame([average])], ignore_index=True)
    return frame.astype({"order": "Int64", "task_id": "Int64", **{f"{m}_seeds": "Int64" for m in tables.methods}})


def paper_markdown(tables: SeedTables, paper: pd.DataFrame) -> str:
    cells = pd.DataFrame({"order": paper.order.map(cell), "id": paper.task_id.map(cell), "task": paper.task_name})
    cells.loc[cells.index[-1], "task"] = f"**average over the {len(tables.tasks)} tasks**"
    for method in tables.methods:
        cells[accuracy_header(method)] = [spread_cell(mean, sd, seeds) for mean, sd, seeds in
                                          zip(paper[f"{method}_mean"], paper[f"{method}_sd"], paper[f"{method}_seeds"])]
    return markdown(cells)


def summary_markdown(summary: pd.DataFrame, tasks: int, unfinished: dict[str, str]) -> str:
    averages = [estimate(row, "average") for _, row in summary.iterrows()]
    bwts = [estimate(row, "bwt") for _, row in summary.iterrows()]
    table = pd.DataFrame({
        "method": [display_name(m) for m in summary.index],
        "seeds": [f"not compared ({unfinished[m]})" if m in unfinished else str(n)
                  for m, n in summary.average_seeds.items()],
        f"average over the {tasks} tasks % (mean ± sd)":
            [spread_cell(e.mean, e.sd, e.seeds) for e in averages],
        "95% interval %": [interval_cell(e) for e in averages],
        "BWT points (mean ± sd)": [spread_cell(e.mean, e.sd, e.seeds) for e in bwts],
        "BWT 95% interval": [interval_cell(e) for e in bwts],
        "stored per task": summary.bytes_per_task.map(size_cell),
    })
    return markdown(table)


def differences_markdown(differences: pd.DataFrame, seeds: list[int]) -> str:
    estimates = [estimate(row, "difference") for _, row in differences.iterrows()]
    table = pd.DataFrame({
        "CLR minus": [display_name(m) for m in differences.index],
        "seeds paired": [str(e.seeds) for e in estimates],
        "difference points (mean ± sd)": [spread_cell(e.mean, e.sd, e.seeds) for e in estimates],
        "95% interval": [interval_cell(e) for e in estimates],
        "excludes 0": [excludes_zero_cell(e) for e in estimates],
        "per seed (points)": [", ".join(f"{seed}: {percent_cell(row[f'difference_seed_{seed}'])}" for seed in seeds
                                        if not pd.isna(row[f"difference_seed_{seed}"]))
                              for _, row in differences.iterrows()],
    })
    return markdown(table)


def link(path: Path, result: Path) -> str:
    target = Path(os.path.relpath(path, result)).as_posix()
    return f"[{target}]({target})" if path.exists() else f"{target} (not written yet)"


def methods_section(tables: SeedTables, seed_layouts: dict[int, Layout], result: Path) -> str:
    lines = [f"- seed {seed}: {', '.join(method_label(r.name) for r in results) or 'no results'}; its own verified "
             f"report: {link(seed_layouts[seed].report, result)}" for seed, results in tables.by_seed.items()]
    return ("## Methods and seeds\n\nEach seed's run is a result folder of its own, with its own report that states "
            "what re-evaluation found.\n\n" + "\n".join(lines))


def summary_section(summary: pd.DataFrame, tasks: int, unfinished: dict[str, str]) -> str:
    text = (f"Each seed's average accuracy for a method is its mean over all {tasks} tasks, in each seed where the "
            "method finished every one of them; a seed where it did not is left out of that method's numbers, and a "
            "method that finished every task in no seed is not compared. The table gives its mean over seeds ± the "
            "sample sd (ddof=1), and the 95% Student-t interval of "
            "that mean, mean ± t(n-1) · sd / √n. BWT, for the methods with an accuracy matrix, is each seed's BWT "
            "over the tasks its matrix holds, summarised the same way; an isolated method's is 0 by construction (each "
            "seed's report says what re-evaluation found). \"Stored per task\" is the mean over every seed's tasks.")
    if (summary.average_seeds == 1).any():
        text += (" With one seed no interval can be given: a method run with one seed shows its mean alone and "
                 f"\"{ONE_SEED}\" for its spread and interval.")
    return "## Summary\n\n" + text + "\n\n" + summary_markdown(summary, tasks, unfinished)


def differences_section(tables: SeedTables, differences: pd.DataFrame) -> str:
    clr = method_label(DEFAULT_METHOD)
    if differences.empty:
        why = "is not among the methods" if DEFAULT_METHOD not in tables.methods else "has no other method beside it"
        return f"## Paired differences\n\n{clr} {why}: there is no difference to give."
    return ("## Paired differences\n\n"
            f"For each other method, {clr}'s average minus that method's, in the same seed over the same tasks: "
            "pairing removes what a seed does to both methods alike. The mean difference over seeds has a 95% "
            "Student-t interval. \"Excludes 0\" says the interval lies wholly on one side of 0: a difference this "
            "consistent across these seeds is unlikely to be seed noise alone (at about a 5% false alarm rate per "
            "comparison, more over many). It says nothing of how much the difference matters, nor whether it holds "
            "for other tasks, backbones or data; and \"no\" does not mean the methods are equal, only that these "
            "seeds cannot tell them apart.\n\n" + differences_markdown(differences, tables.seeds))


def cost_section(summary: pd.DataFrame, tasks: int, figure_paths: list[Path], result: Path) -> str:
    """The paper's trade-off across seeds: what each task stores against the average accuracy with its interval."""
    shown = summary.dropna(subset=["average_mean"])
    averages = [estimate(row, "average") for _, row in shown.iterrows()]
    table = pd.DataFrame({"method": [display_name(m) for m in shown.index],
                          "stored per task": shown.bytes_per_task.map(size_cell),
                          f"average over the {tasks} tasks % (mean ± sd)":
                              [spread_cell(e.mean, e.sd, e.seeds) for e in averages],
                          "95% interval %": [interval_cell(e) for e in averages]})
    figure = next((path for path in figure_paths if path.stem == "seeds_accuracy_vs_parameters"), None)
    return ("## Accuracy for cost\n\nEach method's average accuracy over seeds, with its 95% interval, against the "
            "bytes each task stores of its own (the figure's axis is logarithmic): the numbers of "
            + (f"[{figure.name}]({figure.relative_to(result).as_posix()})" if figure else "the figure")
            + ".\n\n" + markdown(table))


def report_text(tables: SeedTables, seed_layouts: dict[int, Layout], summary: pd.DataFrame,
                differences: pd.DataFrame, paper: pd.DataFrame, comparison: compare.Comparison,
                figure_paths: list[Path], result: Path) -> str:
    names = ", ".join(method_label(m) for m in tables.methods)
    seeds = ", ".join(map(str, tables.seeds))
    coverage = "; ".join(f"{display_name(m)}: {words}" for m, words in comparison.coverage.items())
    first_lines = [comparison.unfinished_line()] if comparison.unfinished else []
    first_lines += [f"Compared over the seeds where it finished every task: {coverage}."] if coverage else []
    values = (compare.ONE_SEED_VALUES if len(tables.seeds) == 1 else
              "the task's mean accuracy over the seeds in which the method finished every task: all "
              f"{len(tables.seeds)} seeds, unless \"values cover\" says otherwise")
    sections = [
        f"# Across seeds: {names}; seeds {seeds}",
        *first_lines,
        methods_section(tables, seed_layouts, result),
        *filter(None, [tuning.seeds_section(seed_layouts, tables.methods)]),
        summary_section(summary, len(tables.tasks), tables.unfinished()),
        differences_section(tables, differences),
        compare.section(comparison, values, figure_paths, result),
        cost_section(summary, len(tables.tasks), figure_paths, result),
        "## Per task\n\nThe paper's table across seeds: each task's accuracy (a shared-backbone method's after the "
        "last task, the others' best validation accuracy), mean ± sample sd over the seeds that finished it "
        "(\"(one seed)\" where one seed did); the last row is each method's average over every task, its sd taken "
        "across the seeds' averages.\n\n" + paper_markdown(tables, paper),
        "## Figures\n\n" + "\n".join(f"- [{path.name}]({path.relative_to(result).as_posix()})"
                                     for path in figure_paths),
    ]
    return "\n\n".join(sections) + "\n"


def write_seeds_report(layout: Layout, seed_layouts: dict[int, Layout], tasks: list[TaskInfo]) -> str:
    """The report across seeds, written into the run's top result folder (its own report.md, CSVs and figures)
    from each seed's result folder over ``tasks`` (in run order): what one seed's report cannot say, whether a
    difference between methods stands out from seed-to-seed noise. Returns the report's text."""
    result = layout.result
    tables = read_seed_tables(seed_layouts, tasks)
    summary, differences = summary_frame(tables), differences_frame(tables)
    paper = paper_frame(tables, summary)
    prepare_output_folder(layout.figures, "figures")
    comparison = compare.Comparison.of(tables.compared_means(), tables.unfinished(), tables.coverage())
    figure_paths = figures.average_accuracy_intervals(summary, len(tables.tasks), layout.figures)
    means, sds, _ = tables.over_seeds()
    figure_paths += figures.per_task_accuracy(tables.tasks, means, layout.figures, spread=sds,
                                              stem="seeds_per_task_accuracy")
    figure_paths += figures.accuracy_vs_parameters(
        summary.bytes_per_task, summary.average_mean, layout.figures,
        f"average accuracy over the {len(tables.tasks)} tasks (%): mean over seeds, 95% interval",
        half_width=summary.average_half_width, stem="seeds_accuracy_vs_parameters")
    figure_paths += figures.comparison_figures(comparison, tables.tasks, means, layout.figures,
                                               "Mean accuracy (%) over seeds per task, tasks in run order", "seeds_")
    text = report_text(tables, seed_layouts, summary, differences, paper, comparison, figure_paths, result)
    atomic_write_text(layout.seeds_summary_csv, summary.reset_index().to_csv(index=False, lineterminator="\n"))
    atomic_write_text(layout.seeds_differences_csv, differences.reset_index().to_csv(index=False, lineterminator="\n"))
    atomic_write_text(layout.paper_table_csv, paper.to_csv(index=False, lineterminator="\n"))
    atomic_write_text(layout.paper_table_md, f"# Per task across seeds {', '.join(map(str, tables.seeds))}\n\n"
                      + paper_markdown(tables, paper) + "\n")
    atomic_write_text(layout.seeds_report, text)
    return text
