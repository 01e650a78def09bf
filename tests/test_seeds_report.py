"""The report across seeds, on seed folders written by hand: its means, sample sds, t intervals and paired
differences checked against numbers worked out here with the standard library, and the one-seed case that can give
no interval."""
import math
import statistics
from pathlib import Path

import pandas as pd
import pytest

from dataset.task import TaskInfo, TaskSample
from report.across_seeds import ONE_SEED, t_95, write_seeds_report
from report.build import write_report
from report.methods import find_methods
from tests.helpers import png_size, table, write_method
from training.matrix import write_matrix
from training.settings import Layout

TASKS = [TaskInfo(0, 1, "scenes"), TaskInfo(1, 2, "birds"), TaskInfo(2, 17, "wikiart")]
IDS = [(task.task_id, task.name) for task in TASKS]
# best accuracy per seed, on scenes, birds, wikiart; EWC did not finish wikiart in seed 2
CLR = {0: [0.80, 0.60, 0.70], 1: [0.84, 0.62, 0.74], 2: [0.78, 0.58, 0.73]}
LINEAR = {0: [0.50, 0.40, 0.45], 1: [0.55, 0.42, 0.41], 2: [0.52, 0.38, 0.47]}
EWC_MATRIX = {0: [[0.85], [0.70, 0.66], [0.60, 0.55, 0.72]],
              1: [[0.90], [0.66, 0.64], [0.62, 0.50, 0.70]],
              2: [[0.88], [0.74, 0.57]]}
SEEDS = {"Ghost_reduced_v1": [0, 1, 2], "Linear": [0, 1, 2], "EWC": [0, 1]}  # the seeds each finished every task in


def seed_layout(top: Path, seed: int) -> Layout:
    return Layout(top / "result" / f"seed_{seed}", top / "weight" / f"seed_{seed}")


def write_seed(top: Path, seed: int) -> Layout:
    layout = seed_layout(top, seed)
    write_method(layout.result, layout.weight, "Ghost_reduced_v1", IDS, CLR[seed], 0.514)
    write_method(layout.result, layout.weight, "Linear", IDS, LINEAR[seed], 0.132)
    matrix = EWC_MATRIX[seed]
    write_method(layout.result, layout.weight, "EWC", IDS[:len(matrix)], matrix[-1], 0.02, shared=True)
    write_matrix(layout.matrix_csv("EWC"), [TaskSample(task, ("a", "b"), (), ()) for task in TASKS], matrix)
    return layout


def average(accuracies: list[float]) -> float:
    return statistics.mean(accuracies)


def bwt(matrix: list[list[float]]) -> float:
    return statistics.mean(matrix[-1][i] - matrix[i][i] for i in range(len(matrix) - 1))


def percent(fraction: float) -> str:
    return f"{100 * fraction:.2f}"


@pytest.fixture
def three_seeds(tmp_path) -> tuple[Path, dict[int, Layout]]:
    layouts = {seed: write_seed(tmp_path, seed) for seed in (0, 1, 2)}
    write_report(layouts[0], TASKS)  # seed 0's own report; seeds 1 and 2 have none yet
    return tmp_path / "result", layouts


def test_three_seeds_means_sds_intervals_and_paired_differences(three_seeds):
    result, layouts = three_seeds
    top = Layout(result, result.parent / "weight")
    report = write_seeds_report(top, layouts, TASKS)
    assert top.seeds_report.read_text() == report
    half = {seeds: t_95(seeds - 1) / math.sqrt(seeds) for seeds in (2, 3)}  # 12.706 / √2, 4.303 / √3

    summary = pd.read_csv(top.seeds_summary_csv).set_index("method")
    assert list(summary.index) == ["Ghost_reduced_v1", "Linear", "EWC"]
    ewc_final = {seed: EWC_MATRIX[seed][-1] for seed in EWC_MATRIX}
    for method, accuracies in (("Ghost_reduced_v1", CLR), ("Linear", LINEAR), ("EWC", ewc_final)):
        seeds = SEEDS[method]  # EWC's seed 2, stopped after two tasks, is left out of EWC's numbers only
        averages = [average(accuracies[seed]) for seed in seeds]
        row = summary.loc[method]
        assert row.tasks == 3 and row.average_seeds == len(seeds)
        assert row.average_mean == pytest.approx(statistics.mean(averages))
        assert row.average_sd == pytest.approx(statistics.stdev(averages))
        assert row.average_half_width == pytest.approx(half[len(seeds)] * statistics.stdev(averages))
        assert row.average_low == pytest.approx(row.average_mean - half[len(seeds)] * statistics.stdev(averages))
        assert [row[f"average_seed_{seed}"] for seed in seeds] == pytest.approx(averages)
    assert pd.isna(summary.loc["EWC", "average_seed_2"])
    bwts = [bwt(EWC_MATRIX[seed]) for seed in (0, 1, 2)]
    assert summary.loc["EWC", "bwt_mean"] == pytest.approx(statistics.mean(bwts))
    assert summary.loc["EWC", "bwt_half_width"] == pytest.approx(half[3] * statistics.stdev(bwts))
    assert pd.isna(summary.loc["Linear", "bwt_mean"]) and pd.isna(summary.loc["Linear", "bwt_seeds"])
    # the k-th task's head here is (5 + k) x 4 weights and 5 + k biases, float32: 100, 120, 140 bytes (EWC: 8 tasks)
    assert summary.loc["Linear", "bytes_per_task"] == 120 and summary.loc["EWC", "bytes_per_task"] == 940 / 8

    differences = pd.read_csv(top.seeds_differences_csv).set_index("method")
    assert list(differences.index) == ["Linear", "EWC"]
    for method, accuracies, excludes in (("Linear", LINEAR, True), ("EWC", ewc_final, False)):
        seeds = SEEDS[method]
        paired = [average(CLR[seed]) - average(accuracies[seed]) for seed in seeds]
        row = differences.loc[method]
        assert row.difference_seeds == len(seeds) and row.difference_mean == pytest.approx(statistics.mean(paired))
        assert row.difference_sd == pytest.approx(statistics.stdev(paired))
        assert row.difference_half_width == pytest.approx(half[len(seeds)] * statistics.stdev(paired))
        assert row.excludes_zero == excludes
        assert [row[f"difference_seed_{seed}"] for seed in seeds] == pytest.approx(paired)

    paper = pd.read_csv(top.paper_table_csv)
    assert list(paper.columns) == ["order", "task_id", "task_name"] + [
        f"{method}_{name}" for method in ("Ghost_reduced_v1", "Linear", "EWC") for name in ("mean", "sd", "seeds")]
    assert list(paper.task_name) == ["scenes", "birds", "wikiart", "average"]
    for k, task in enumerate(TASKS):
        clr = [CLR[seed][k] for seed in (0, 1, 2)]
        assert paper.loc[k, "Ghost_reduced_v1_mean"] == pytest.approx(statistics.mean(clr))
        assert paper.loc[k, "Ghost_reduced_v1_sd"] == pytest.approx(statistics.stdev(clr))
    assert paper.loc[2, "EWC_seeds"] == 2 and paper.loc[2, "EWC_mean"] == pytest.approx(0.71)
    assert paper.loc[3, "Linear_mean"] == pytest.approx(summary.loc["Linear", "average_mean"])
    assert paper.loc[3, "Linear_sd"] == pytest.approx(summary.loc["Linear", "average_sd"])

    cells = {row["task"]: row for row in table(top.paper_table_md.read_text(), "order")}
    scenes = [CLR[seed][0] for seed in (0, 1, 2)]
    assert cells["scenes"]["CLR acc %"] == f"{percent(statistics.mean(scenes))} ± {percent(statistics.stdev(scenes))}"
    assert cells["wikiart"]["EWC acc %"] == f"{percent(0.71)} ± {percent(statistics.stdev([0.72, 0.70]))}"
    assert cells["**average over the 3 tasks**"]["Linear acc %"].count(" ± ") == 1
    assert table(report, "order") == table(top.paper_table_md.read_text(), "order")

    rows = {row["method"]: row for row in table(report, "method")}
    clr = summary.loc["Ghost_reduced_v1"]
    assert rows["CLR"]["95% interval %"] == \
        f"{percent(clr.average_low)} to {percent(clr.average_high)} (± {percent(clr.average_half_width)})"
    assert rows["EWC"]["BWT points (mean ± sd)"] == \
        f"{percent(statistics.mean(bwts))} ± {percent(statistics.stdev(bwts))}"
    assert rows["Linear"]["stored per task"] == "120 B" and rows["Linear"]["BWT 95% interval"] == ""
    paired = {row["CLR minus"]: row for row in table(report, "CLR minus")}
    assert paired["Linear"]["excludes 0"] == "yes (CLR higher)" and paired["EWC"]["excludes 0"] == "no"
    assert "no interval can be given" not in report and ONE_SEED not in report

    assert "[seed_0/report.md](seed_0/report.md)" in report and "seed_1/report.md (not written yet)" in report
    assert "With one seed no interval can be given" in layouts[0].report.read_text()  # the seed's own report
    for stem in ("seeds_average_accuracy", "seeds_per_task_accuracy", "seeds_accuracy_vs_parameters",
                 "seeds_accuracy_heatmap"):
        assert f"[{stem}.png](figures/{stem}.png)" in report
        assert png_size(top.figures / f"{stem}.png")[0] >= 300
    assert not (top.figures / "seeds_critical_difference.png").exists()  # 3 tasks: no Friedman test
    assert find_methods(top) == []  # the top folder's CSVs are not a method's

    # the report's first lines say whose numbers leave a seed out; the comparison and the cost table follow
    assert report.splitlines()[2] == ("Compared over the seeds where it finished every task: EWC: seeds 0, 1 only "
                                      "(seed 2: 2 of 3 tasks).")
    assert "## Does CLR outperform them?" in report and "With 3 common task(s), fewer than 5" in report
    ewc = summary.loc["EWC"]
    assert (f"| EWC | 118 B | {percent(ewc.average_mean)} ± {percent(ewc.average_sd)} | "
            f"{percent(ewc.average_low)} to {percent(ewc.average_high)} (± {percent(ewc.average_half_width)}) |"
            in report)
    clr_means = [statistics.mean(CLR[seed][k] for seed in (0, 1, 2)) for k in range(3)]
    ewc_means = [statistics.mean(EWC_MATRIX[seed][-1][k] for seed in (0, 1)) for k in range(3)]
    median = statistics.median(c - e for c, e in zip(clr_means, ewc_means))
    assert f"| EWC | 3 | 0 | 0 | {100 * median:+.2f} | not run (3 tasks) | not run (3 tasks) |" in report


def test_a_method_unfinished_in_every_seed_is_listed_apart_and_shrinks_no_one(tmp_path):
    layouts = {seed: write_seed(tmp_path, seed) for seed in (0, 1)}
    for layout in layouts.values():  # SI stopped after its first task in both seeds
        write_method(layout.result, layout.weight, "SI", IDS[:1], [0.3], 0.02, shared=True)
    top = Layout(tmp_path / "result", tmp_path / "weight")
    report = write_seeds_report(top, layouts, TASKS)
    assert report.splitlines()[2] == ("Not compared (unfinished): SI: 1 of 3 tasks in seed 0; 1 of 3 tasks in seed 1. "
                                      "The comparison covers the 3 method(s) that finished all 3 tasks.")
    summary = pd.read_csv(top.seeds_summary_csv).set_index("method")
    assert summary.loc["Ghost_reduced_v1", "average_mean"] == pytest.approx(
        statistics.mean(average(CLR[seed]) for seed in (0, 1)))  # over all three tasks, not SI's one
    assert summary.loc["SI", "average_seeds"] == 0
    rows = {row["method"]: row for row in table(report, "method")}
    assert rows["SI"]["seeds"] == "not compared (1 of 3 tasks in seed 0; 1 of 3 tasks in seed 1)"
    assert "SI" not in pd.read_csv(top.seeds_differences_csv).method.to_list()


def test_one_seed_gives_no_interval_and_no_zeros(tmp_path):
    layout = write_seed(tmp_path, 0)
    report = write_seeds_report(Layout(tmp_path / "result", tmp_path / "weight"), {0: layout}, TASKS)
    assert "With one seed no interval can be given" in report
    rows = {row["method"]: row for row in table(report, "method")}
    for method in ("CLR", "Linear", "EWC"):
        assert rows[method]["seeds"] == "1" and rows[method]["95% interval %"] == ONE_SEED
    # seed 0's EWC finished every task, so every task is common
    clr = rows["CLR"]["average over the 3 tasks % (mean ± sd)"]
    assert clr == f"{percent(statistics.mean(CLR[0]))} (one seed)"
    assert rows["EWC"]["BWT 95% interval"] == ONE_SEED
    assert table(report, "CLR minus")[0]["excludes 0"] == ONE_SEED
    cells = [cell for first in ("method", "CLR minus", "order") for row in table(report, first)
             for cell in row.values()]
    assert not [cell for cell in cells if " ± " in cell or cell in ("0.00", "0")]
    summary = pd.read_csv(Layout(tmp_path / "result", tmp_path).seeds_summary_csv)
    assert summary.average_sd.isna().all() and summary.average_half_width.isna().all()


# The two-sided 95% critical values of Student's t for 1 to 30 degrees of freedom that the report used before scipy
# gave them (the standard printed table, three decimals): the intervals of existing reports must not move.
PRINTED_T_95 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145,
                2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045,
                2.042)


def test_t_critical_values_equal_the_printed_table_to_its_precision():
    assert [round(t_95(df), 3) for df in range(1, 31)] == list(PRINTED_T_95)
    assert round(t_95(40), 3) == 2.021 and round(t_95(60), 3) == 2.000  # exact beyond the table, not 1.96
