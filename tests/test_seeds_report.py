"""The report across seeds, on seed folders written by hand: its means, sample sds, t intervals and paired
differences checked against numbers worked out here with the standard library, and the one-seed case that can give
no interval."""
import math
import statistics
from pathlib import Path

import pandas as pd
import pytest

from continual.matrix import write_matrix
from dataset.task import TaskInfo, TaskSample
from report.across_seeds import ONE_SEED, t_95, write_seeds_report
from report.build import write_report
from report.methods import find_methods
from tests.helpers import png_size, table, write_method
from training.settings import Layout

TASKS = [TaskInfo(0, 1, "scenes"), TaskInfo(1, 2, "birds"), TaskInfo(2, 17, "wikiart")]
IDS = [(task.task_id, task.name) for task in TASKS]
# best accuracy per seed, on scenes, birds, wikiart; EWC did not finish wikiart in seed 2
CLR = {0: [0.80, 0.60, 0.70], 1: [0.84, 0.62, 0.74], 2: [0.78, 0.58, 0.73]}
LINEAR = {0: [0.50, 0.40, 0.45], 1: [0.55, 0.42, 0.41], 2: [0.52, 0.38, 0.47]}
EWC_MATRIX = {0: [[0.85], [0.70, 0.66], [0.60, 0.55, 0.72]],
              1: [[0.90], [0.66, 0.64], [0.62, 0.50, 0.70]],
              2: [[0.88], [0.74, 0.57]]}
COMMON = [0, 1]  # scenes and birds: the tasks every method finished in every seed


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
    return statistics.mean(accuracies[k] for k in COMMON)


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
    half = t_95(2) / math.sqrt(3)  # 4.303 / √3

    summary = pd.read_csv(top.seeds_summary_csv).set_index("method")
    assert list(summary.index) == ["Ghost_reduced_v1", "Linear", "EWC"]
    ewc_final = {seed: EWC_MATRIX[seed][-1] for seed in EWC_MATRIX}
    for method, accuracies in (("Ghost_reduced_v1", CLR), ("Linear", LINEAR), ("EWC", ewc_final)):
        averages = [average(accuracies[seed]) for seed in (0, 1, 2)]
        row = summary.loc[method]
        assert row.common_tasks == 2 and row.average_seeds == 3
        assert row.average_mean == pytest.approx(statistics.mean(averages))
        assert row.average_sd == pytest.approx(statistics.stdev(averages))
        assert row.average_half_width == pytest.approx(half * statistics.stdev(averages))
        assert row.average_low == pytest.approx(statistics.mean(averages) - half * statistics.stdev(averages))
        assert [row[f"average_seed_{seed}"] for seed in (0, 1, 2)] == pytest.approx(averages)
    bwts = [bwt(EWC_MATRIX[seed]) for seed in (0, 1, 2)]
    assert summary.loc["EWC", "bwt_mean"] == pytest.approx(statistics.mean(bwts))
    assert summary.loc["EWC", "bwt_half_width"] == pytest.approx(half * statistics.stdev(bwts))
    assert pd.isna(summary.loc["Linear", "bwt_mean"]) and pd.isna(summary.loc["Linear", "bwt_seeds"])
    # the k-th task's head here is (5 + k) x 4 weights and 5 + k biases, float32: 100, 120, 140 bytes (EWC: 8 tasks)
    assert summary.loc["Linear", "bytes_per_task"] == 120 and summary.loc["EWC", "bytes_per_task"] == 940 / 8

    differences = pd.read_csv(top.seeds_differences_csv).set_index("method")
    assert list(differences.index) == ["Linear", "EWC"]
    for method, accuracies, excludes in (("Linear", LINEAR, True), ("EWC", ewc_final, False)):
        paired = [average(CLR[seed]) - average(accuracies[seed]) for seed in (0, 1, 2)]
        row = differences.loc[method]
        assert row.difference_mean == pytest.approx(statistics.mean(paired))
        assert row.difference_sd == pytest.approx(statistics.stdev(paired))
        assert row.difference_half_width == pytest.approx(half * statistics.stdev(paired))
        assert row.excludes_zero == excludes
        assert [row[f"difference_seed_{seed}"] for seed in (0, 1, 2)] == pytest.approx(paired)

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
    assert cells["**average over the 2 common tasks**"]["Linear acc %"].count(" ± ") == 1
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
    for stem in ("seeds_average_accuracy", "seeds_per_task_accuracy"):
        assert f"[{stem}.png](figures/{stem}.png)" in report
        assert png_size(top.figures / f"{stem}.png")[0] >= 300
    assert find_methods(top) == []  # the top folder's CSVs are not a method's


def test_one_seed_gives_no_interval_and_no_zeros(tmp_path):
    layout = write_seed(tmp_path, 0)
    report = write_seeds_report(Layout(tmp_path / "result", tmp_path / "weight"), {0: layout}, TASKS)
    assert "With one seed no interval can be given" in report
    rows = {row["method"]: row for row in table(report, "method")}
    for method in ("CLR", "Linear", "EWC"):
        assert rows[method]["seeds"] == "1" and rows[method]["95% interval %"] == ONE_SEED
    # seed 0's EWC finished every task, so every task is common
    clr = rows["CLR"]["average over the 3 common tasks % (mean ± sd)"]
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
