"""The statistics of "Does CLR outperform them?" (report/compare.py) against Demšar's own worked examples, and the
cases a small or odd run brings: two methods, few tasks, ties everywhere, CLR missing."""
import math
from pathlib import Path

import pandas as pd
import pytest
from scipy import stats

from report.compare import MIN_TASKS, Comparison, Friedman, SignedRank, average_ranks, holm, nemenyi_q, section
from report.methods import accuracy_label

# J. Demšar, "Statistical Comparisons of Classifiers over Multiple Data Sets", JMLR 7 (2006) 1-30: the AUC of C4.5
# with four settings on 14 UCI data sets, as printed (three decimals) in Table 2 (its first two columns) and Table 6.
DATA_SETS = ["adult (sample)", "breast cancer", "breast cancer wisconsin", "cmc", "ionosphere", "iris",
             "liver disorders", "lung cancer", "lymphography", "mushroom", "primary tumor", "rheum", "voting", "wine"]
C45 = pd.DataFrame({
    "C4.5": [0.763, 0.599, 0.954, 0.628, 0.882, 0.936, 0.661, 0.583, 0.775, 1.000, 0.940, 0.619, 0.972, 0.957],
    "C4.5+m": [0.768, 0.591, 0.971, 0.661, 0.888, 0.931, 0.668, 0.583, 0.838, 1.000, 0.962, 0.666, 0.981, 0.978],
    "C4.5+cf": [0.771, 0.590, 0.968, 0.654, 0.886, 0.916, 0.609, 0.563, 0.866, 1.000, 0.965, 0.614, 0.975, 0.946],
    "C4.5+m+cf": [0.798, 0.569, 0.967, 0.657, 0.898, 0.931, 0.685, 0.625, 0.875, 1.000, 0.962, 0.669, 0.975, 0.970],
}, index=DATA_SETS)
# Table 6 ranks voting's C4.5+cf 2nd and C4.5+m+cf 3rd: their printed 0.975 tie only at three decimals. Every other
# rank of the table follows from the printed values, ties sharing their average rank.
UNROUNDED_VOTING = {"C4.5+cf": 0.9752, "C4.5+m+cf": 0.9748}


def test_wilcoxon_example_of_section_3_1_3():
    """C4.5+m against C4.5: R+ = 93, R- = 12, so T = 12, below 21, the critical value for 14 data sets at α = 0.05
    (Demšar's Table 2 and text)."""
    result = SignedRank.of(C45["C4.5+m"], C45["C4.5"])
    assert (result.positive_ranks, result.negative_ranks) == (93.0, 12.0)
    critical = 21  # Demšar: the exact critical value of T for 14 data sets at α = 0.05
    assert min(result.positive_ranks, result.negative_ranks) == 12 < critical
    assert (result.wins, result.ties, result.losses) == (10, 2, 2)
    assert result.p == pytest.approx(stats.wilcoxon(C45["C4.5+m"] - C45["C4.5"], zero_method="zsplit").pvalue)
    assert result.p < 0.05


def test_friedman_and_nemenyi_example_of_section_3_2_2():
    table = C45.copy()
    for method, value in UNROUNDED_VOTING.items():
        table.loc["voting", method] = value
    friedman = Friedman.of(table)
    assert [round(r, 3) for r in friedman.ranks] == [3.143, 2.000, 2.893, 1.964]
    assert round(friedman.chi2, 2) == 9.28 and round(friedman.f, 2) == 3.69
    assert round(stats.f.ppf(0.95, 3, 39), 2) == 2.85 and friedman.p < 0.05  # F(3, 39) at 0.05: 2.85 < 3.69
    assert round(nemenyi_q(4), 3) == 2.569 and round(friedman.critical_difference, 2) == 1.25
    # C4.5 and C4.5+m+cf differ by 1.18 < 1.25: the Nemenyi test finds no pair different, one group holds all
    assert friedman.groups() == [["C4.5+m+cf", "C4.5+m", "C4.5+cf", "C4.5"]]
    # as printed, voting's tie splits the two ranks: 2.929 and 1.929
    assert [round(r, 3) for r in average_ranks(C45)] == [3.143, 2.000, 2.929, 1.929]


def test_nemenyi_q_matches_demsars_table_5a():
    """Table 5a prints q_0.05 to three decimals for 2 to 10 methods."""
    printed = [1.960, 2.343, 2.569, 2.728, 2.850, 2.949, 3.031, 3.102, 3.164]
    assert [nemenyi_q(k) for k in range(2, 11)] == pytest.approx(printed, abs=1e-3)


def test_holm_multiplies_the_ith_smallest_by_m_minus_i_plus_one_and_keeps_order():
    p = pd.Series({"a": 0.01, "b": 0.04, "c": 0.03, "d": 0.5})
    assert holm(p).to_dict() == pytest.approx({"a": 0.04, "b": 0.09, "c": 0.09, "d": 0.5})
    assert holm(pd.Series({"a": 0.6, "b": 0.4})).to_dict() == pytest.approx({"a": 0.8, "b": 0.8})


def clr_table(tasks: int, **others: float) -> pd.DataFrame:
    """CLR at 0.9 - 0.01 k on task k, each other method a fixed amount below it (a negative amount: above)."""
    clr = pd.Series([0.9 - 0.01 * k for k in range(tasks)], index=range(1, tasks + 1))
    return pd.DataFrame({"Ghost_reduced_v1": clr, **{m: clr - gap for m, gap in others.items()}})


def test_section_states_significance_and_holm_for_each_method():
    table = clr_table(8, Linear=0.05, EWC=-0.02)
    text = section(Comparison.of(table), "one seed's accuracy (it includes that seed's noise)", [], Path("."))
    assert "## Does CLR outperform them?" in text
    assert "- CLR is significantly better than Linear (wins 8, ties 0, losses 0 over 8 tasks" in text
    assert "- CLR is significantly worse than EWC (wins 0, ties 0, losses 8 over 8 tasks" in text
    assert "EWC) is ranked on its accuracy after the last task" in text
    friedman = Friedman.of(table)
    assert list(friedman.ranks.round(3)) == [2.0, 3.0, 1.0] and math.isinf(friedman.f) and friedman.p == 0.0
    assert "F_F = ∞" in text and "nan" not in text.lower()


def test_an_unfinished_method_is_listed_apart_and_does_not_shrink_the_comparison():
    table = clr_table(10, Linear=0.05, EWC=0.1)
    table.loc[4:, "EWC"] = math.nan  # EWC finished 3 of the 10 tasks
    comparison = Comparison.of(table)
    assert comparison.methods == ["Ghost_reduced_v1", "Linear"] and len(comparison.accuracy) == 10
    assert comparison.unfinished == {"EWC": "3 of 10 tasks"}
    text = section(comparison, "one seed's accuracy", [], Path("."))
    assert "Not compared (unfinished): EWC: 3 of 10 tasks." in text
    assert "over 10 tasks" in text and "Friedman" in text  # two methods: no Friedman test, said so
    assert "With only two methods the Friedman test and the Nemenyi critical difference are not run" in text


def test_fewer_than_five_tasks_gives_no_p_value():
    text = section(Comparison.of(clr_table(MIN_TASKS - 1, Linear=0.05, EWC=0.1)), "one seed's accuracy", [], Path("."))
    assert f"With {MIN_TASKS - 1} common task(s), fewer than {MIN_TASKS}" in text and "0.125" in text
    assert "p = " not in text and "significantly" not in text and "not run (4 tasks)" in text


def test_ties_everywhere_give_no_nan():
    table = pd.DataFrame(1.0, index=range(1, 7), columns=["Ghost_reduced_v1", "Ghost", "Linear"])
    friedman = Friedman.of(table)
    assert friedman.chi2 == 0.0 and friedman.f == 0.0 and friedman.p == 1.0
    assert friedman.groups() == [["Ghost_reduced_v1", "Ghost", "Linear"]]
    text = section(Comparison.of(table), "one seed's accuracy", [], Path("."))
    assert "nan" not in text.lower() and text.count("there is no difference to test") == 2
    assert "| CLR-Full | 0 | 6 | 0 | +0.00 | no difference | no difference |" in text


def test_without_clr_there_is_no_comparison_with_it():
    table = clr_table(6, Linear=0.05, EWC=0.1).drop(columns="Ghost_reduced_v1")
    text = section(Comparison.of(table), "one seed's accuracy", [], Path("."))
    assert "CLR is not among the compared methods" in text


def test_labels_say_which_accuracy_a_method_shows():
    assert accuracy_label("Ghost_reduced_v1") == "CLR (best validation)"
    assert accuracy_label("EWC") == "EWC (after the last task)"
    assert accuracy_label("Unknown") == "Unknown (best validation)"  # a CSV of a method this version does not know
