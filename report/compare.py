"""Does CLR outperform them? Demšar's tests across tasks (JMLR 7, 2006): each method's average rank, the Friedman
test with Iman and Davenport's F, the Nemenyi critical difference, and CLR against each other method by the
Wilcoxon signed-rank test, Holm-corrected. The input is one accuracy per task and method (one seed's, or each task's
mean over seeds); the estimators and what they assume: docs/report.md, "Does CLR outperform them?"."""
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats

from network import DEFAULT_METHOD
from report.methods import accuracy_kind, display_name
from report.tables import markdown, percent_cell
from training.families import AFTER_LAST_TASK

ALPHA = 0.05
MIN_TASKS = 5  # below this many common tasks no test is run: their p-values could not fall below α
ONE_SEED_VALUES = ("one seed's accuracy on the task, which includes that seed's noise (the head's initialisation, the "
                   "order of the batches)")


def average_ranks(accuracy: pd.DataFrame) -> pd.Series:
    """Each method's mean rank over the tasks (rows): 1 for the highest accuracy on a task, tied methods sharing the
    average of the ranks they span (Demšar, Section 3.2.2)."""
    return accuracy.rank(axis=1, ascending=False, method="average").mean()


def nemenyi_q(methods: int, alpha: float = ALPHA) -> float:
    """The Nemenyi test's critical value: the studentized range's 1 - α quantile for ``methods`` groups and infinite
    degrees of freedom, divided by √2 (Demšar's Table 5a: 2.569 for four methods at α = 0.05)."""
    return float(stats.studentized_range.ppf(1 - alpha, methods, math.inf)) / math.sqrt(2)


@dataclass(frozen=True)
class Friedman:
    """The Friedman test over the methods' average ranks, with Demšar's statistics: χ²F (no correction for ties, so
    that ties everywhere give 0, not NaN) and Iman and Davenport's F_F, whose F distribution gives the p-value; and the
    Nemenyi critical difference, the gap in average rank beyond which two methods differ significantly."""

    ranks: pd.Series
    tasks: int
    chi2: float
    f: float
    p: float
    q: float
    critical_difference: float

    @classmethod
    def of(cls, accuracy: pd.DataFrame, alpha: float = ALPHA) -> "Friedman":
        tasks, methods = accuracy.shape
        ranks = average_ranks(accuracy)
        chi2 = max(0.0, 12 * tasks / (methods * (methods + 1))
                   * (float((ranks ** 2).sum()) - methods * (methods + 1) ** 2 / 4))
        room = tasks * (methods - 1) - chi2  # 0 when every task ranks the methods the same way
        f = math.inf if room <= 1e-9 else (tasks - 1) * chi2 / room
        p = float(stats.f.sf(f, methods - 1, (methods - 1) * (tasks - 1)))
        q = nemenyi_q(methods, alpha)
        return cls(ranks, tasks, chi2, f, p, q, q * math.sqrt(methods * (methods + 1) / (6 * tasks)))

    def groups(self) -> list[list[str]]:
        """The maximal runs of methods, in rank order, whose ranks lie within the critical difference of each other:
        the bars of the critical-difference diagram (a method alone in no run is significantly apart from all)."""
        order = self.ranks.sort_values()
        runs = []
        for start in range(len(order)):
            end = start
            while end + 1 < len(order) and order.iloc[end + 1] - order.iloc[start] <= self.critical_difference:
                end += 1
            if end > start and not (runs and runs[-1][1] >= end):
                runs.append((start, end))
        return [list(order.index[start:end + 1]) for start, end in runs]


@dataclass(frozen=True)
class SignedRank:
    """CLR against another method over the same tasks: wins, ties and losses, the median per-task difference (CLR's
    accuracy minus the other's), and the Wilcoxon signed-rank test (Demšar, Section 3.1.3). Zero differences are
    ranked and their ranks split evenly between the two sides, as Demšar does. ``p`` is None where no test is run."""

    wins: int
    ties: int
    losses: int
    median_difference: float
    positive_ranks: float | None = None  # R+: the ranks of the tasks where CLR is higher
    negative_ranks: float | None = None
    p: float | None = None

    @classmethod
    def of(cls, first: pd.Series, second: pd.Series, test: bool = True) -> "SignedRank":
        difference = (first - second).round(12)  # equal accuracies are exact ties, not floating-point noise
        counts = {"wins": int((difference > 0).sum()), "ties": int((difference == 0).sum()),
                  "losses": int((difference < 0).sum()), "median_difference": float(difference.median())}
        if not test or not difference.any():
            return cls(**counts)
        positive = float(stats.wilcoxon(difference, zero_method="zsplit", alternative="greater").statistic)
        total = len(difference) * (len(difference) + 1) / 2
        p = float(stats.wilcoxon(difference, zero_method="zsplit").pvalue)
        return cls(**counts, positive_ranks=positive, negative_ranks=total - positive, p=p)


def holm(p_values: pd.Series) -> pd.Series:
    """Holm's step-down adjustment (1979) for a family of tests: the i-th smallest of m p-values times m - i + 1,
    made non-decreasing in that order and capped at 1. It holds the chance of any false alarm at α."""
    ordered = p_values.sort_values()
    adjusted = (ordered * np.arange(len(ordered), 0, -1)).cummax().clip(upper=1.0)
    return adjusted.reindex(p_values.index)


def p_cell(p: float) -> str:
    return "< 0.001" if p < 0.001 else f"{p:.3f}"


def p_is(p: float) -> str:
    """"p = 0.012", or "p < 0.001" below what three decimals show."""
    cell = p_cell(p)
    return f"p {cell}" if cell.startswith("<") else f"p = {cell}"


@dataclass
class Comparison:
    """The methods compared and the tasks they share. A method that did not finish every task is listed apart with
    what it finished, so that it cannot shrink everyone else's comparison."""

    accuracy: pd.DataFrame  # the shared tasks x the compared methods (fractions), tasks in run order
    task_count: int  # the tasks in the report
    unfinished: dict[str, str] = field(default_factory=dict)  # method -> what it finished, e.g. "3 of 10 tasks"
    coverage: dict[str, str] = field(default_factory=dict)  # compared method -> what its values cover, if not all

    @classmethod
    def of(cls, accuracy: pd.DataFrame, unfinished: dict[str, str] | None = None,
           coverage: dict[str, str] | None = None) -> "Comparison":
        """Compare the methods (columns) that finished every task (row); each other one is listed apart, with
        ``unfinished``'s words for it where given, else its count of finished tasks."""
        finished = accuracy.count()
        complete = [m for m in accuracy if finished[m] == len(accuracy)] if len(accuracy) else []
        apart = {m: (unfinished or {}).get(m, f"{finished[m]} of {len(accuracy)} tasks")
                 for m in accuracy if m not in complete}
        return cls(accuracy[complete], len(accuracy), apart, coverage or {})

    @property
    def methods(self) -> list[str]:
        return list(self.accuracy.columns)

    @property
    def testable(self) -> bool:
        return len(self.accuracy) >= MIN_TASKS

    def friedman(self) -> Friedman | None:
        """The Friedman test and critical difference; None below three methods or MIN_TASKS tasks."""
        return Friedman.of(self.accuracy) if len(self.methods) >= 3 and self.testable else None

    def against_clr(self) -> dict[str, tuple[SignedRank, float | None]]:
        """CLR against each other compared method: its signed-rank result and its Holm-adjusted p (None untested)."""
        if DEFAULT_METHOD not in self.methods:
            return {}
        results = {other: SignedRank.of(self.accuracy[DEFAULT_METHOD], self.accuracy[other], self.testable)
                   for other in self.methods if other != DEFAULT_METHOD}
        adjusted = holm(pd.Series({m: r.p for m, r in results.items() if r.p is not None}, dtype=float))
        return {m: (r, None if r.p is None else float(adjusted[m])) for m, r in results.items()}

    def unfinished_line(self) -> str:
        """The report's first lines name what is not compared; empty when every method finished every task."""
        if not self.unfinished:
            return ""
        return ("Not compared (unfinished): " + "; ".join(f"{display_name(m)}: {words}" for m, words in
                                                           self.unfinished.items())
                + f". The comparison covers the {len(self.methods)} method(s) that finished all {self.task_count} "
                "tasks.")


def verdict(other: str, result: SignedRank, adjusted: float | None, tasks: int) -> str:
    """One sentence: is CLR significantly better than ``other``, worse, or neither?"""
    counts = (f"wins {result.wins}, ties {result.ties}, losses {result.losses} over {tasks} tasks; median difference "
              f"{100 * result.median_difference:+.2f} points")
    name = display_name(other)
    if tasks < MIN_TASKS:
        return f"- CLR against {name}: {counts}. With {tasks} tasks no test is run."
    if adjusted is None:
        return f"- CLR against {name}: the same accuracy on every task ({counts}): there is no difference to test."
    if adjusted < ALPHA:
        side = "better" if result.positive_ranks > result.negative_ranks else "worse"
        return (f"- CLR is significantly {side} than {name} ({counts}; Wilcoxon {p_is(result.p)}, "
                f"Holm-adjusted {p_is(adjusted)}, below {ALPHA}).")
    return (f"- CLR is neither significantly better nor worse than {name} ({counts}; Wilcoxon {p_is(result.p)}, "
            f"Holm-adjusted {p_is(adjusted)}, not below {ALPHA}).")


def ranks_markdown(comparison: Comparison, friedman: Friedman | None) -> str:
    ranks = friedman.ranks if friedman else average_ranks(comparison.accuracy)
    means = comparison.accuracy.mean()
    order = ranks.sort_values().index
    return markdown(pd.DataFrame({
        "method": [display_name(m) for m in order],
        "average rank": [f"{ranks[m]:.3f}" for m in order],
        f"average acc % over the {len(comparison.accuracy)} tasks": [percent_cell(means[m]) for m in order],
        "accuracy ranked": [accuracy_kind(m) for m in order],
        "values cover": [comparison.coverage.get(m, "") for m in order]}))


def against_markdown(against: dict[str, tuple[SignedRank, float | None]], tasks: int) -> str:
    def p_text(p: float | None) -> str:
        if tasks < MIN_TASKS:
            return f"not run ({tasks} tasks)"
        return "no difference" if p is None else p_cell(p)
    return markdown(pd.DataFrame({
        "CLR against": [display_name(m) for m in against],
        "wins": [r.wins for r, _ in against.values()], "ties": [r.ties for r, _ in against.values()],
        "losses": [r.losses for r, _ in against.values()],
        "median difference (points)": [f"{100 * r.median_difference:+.2f}" for r, _ in against.values()],
        "Wilcoxon p": [p_text(r.p) for r, _ in against.values()],
        "Holm-adjusted p": [p_text(adjusted) for _, adjusted in against.values()]}))


def friedman_text(comparison: Comparison, friedman: Friedman | None) -> str:
    tasks, methods = len(comparison.accuracy), len(comparison.methods)
    if methods < 2:
        return ("Fewer than two methods finished every task, so there is nothing to compare: no rank, no test."
                if methods == 0 else "Only one method finished every task: there is nothing to compare it with.")
    if not comparison.testable:
        return (f"With {tasks} common task(s), fewer than {MIN_TASKS}, neither the Friedman test nor the Wilcoxon "
                f"tests are run: over {tasks} task(s) the smallest two-sided Wilcoxon p is {2 / 2 ** tasks:.3g}, so "
                "no p-value could mean anything. The ranks and counts below only describe these tasks.")
    if friedman is None:
        return ("With only two methods the Friedman test and the Nemenyi critical difference are not run: they "
                "compare three or more. The Wilcoxon signed-rank test below compares the two.")
    f = "∞ (every task ranks the methods alike)" if math.isinf(friedman.f) else f"{friedman.f:.2f}"
    outcome = ("the average ranks differ more than chance would make them at α = 0.05, so the critical difference "
               "below tells which methods differ" if friedman.p < ALPHA else
               "the average ranks do not differ significantly at α = 0.05, so no method can be singled out; the "
               "critical difference is shown for completeness")
    return (f"Friedman test over {tasks} tasks and {methods} methods: χ²F = {friedman.chi2:.2f} ({methods - 1} df), "
            f"Iman–Davenport F_F = {f} ({methods - 1} and {(methods - 1) * (tasks - 1)} df), {p_is(friedman.p)}:"
            f" {outcome}. Nemenyi critical difference at α = 0.05: CD = q · √(k(k+1)/6N) = {friedman.q:.3f} · "
            f"√({methods}·{methods + 1}/(6·{tasks})) = {friedman.critical_difference:.2f} ranks; two methods whose "
            "average ranks differ by more are significantly different.")


def section(comparison: Comparison, values: str, figure_paths: list[Path], result: Path) -> str:
    """The report's "Does CLR outperform them?" section. ``values`` says what one task's value is (one seed's
    accuracy, or its mean over seeds); it links the CD diagram and the heatmap among ``figure_paths`` (under
    ``result``)."""
    links = [f"[{path.name}]({path.relative_to(result).as_posix()})" for path in figure_paths
             if path.stem.endswith(("critical_difference", "accuracy_heatmap"))]
    friedman = comparison.friedman()
    shared = [display_name(m) for m in comparison.methods if accuracy_kind(m) == AFTER_LAST_TASK]
    lines = [(f"Each value is {values}. Methods are ranked on each of the {len(comparison.accuracy)} tasks that every "
              "compared method finished (rank 1 the highest; tied methods share the average of their ranks).")]
    if shared:
        lines.append(f"A shared-backbone method ({', '.join(shared)}) is ranked on its accuracy after the last task; "
                     "the others on their best validation accuracy.")
    if comparison.unfinished:
        lines.append(comparison.unfinished_line())
    parts = ["## Does CLR outperform them?", " ".join(lines), friedman_text(comparison, friedman)]
    if len(comparison.methods) >= 2:
        parts.append(ranks_markdown(comparison, friedman))
        against = comparison.against_clr()
        if against:
            tasks = len(comparison.accuracy)
            parts += [("CLR against each other method, task by task: the Wilcoxon signed-rank test of the per-task "
                       "differences, its p-values Holm-corrected across the comparisons."),
                      against_markdown(against, tasks),
                      "\n".join(verdict(m, r, adjusted, tasks) for m, (r, adjusted) in against.items())]
        else:
            parts.append("CLR is not among the compared methods, so there is no comparison with it.")
    if links:
        parts.append("Figures: " + ", ".join(links) + ".")
    return "\n\n".join(parts)
