""""Does CLR outperform them?" on a real one-seed run: three methods finish five tasks, a fourth is killed after its
second task; `main.py --report` compares the three over all five tasks and lists the fourth apart."""
import shutil
import statistics
from pathlib import Path

import pytest

import main
from tests import helpers
from tests.helpers import Kill, read_csv, table

pytestmark = pytest.mark.slow  # trains a run

FINISHED = ["Ghost_reduced_v1", "Ghost", "Linear"]
KILLED = "SGD"
COPIES = ["4_shapes_again", "5_stripes_again"]  # two more tasks, so that five tasks allow the tests to run


def percent(fraction: float) -> str:
    return f"{100 * fraction:.2f}"


@pytest.fixture(scope="module")
def five_tasks(small_tasks, tmp_path_factory) -> Path:
    """The small cut's three tasks and copies of the first two under new names, as task folders."""
    root = tmp_path_factory.mktemp("five")
    for name in helpers.SMALL_TASKS:
        shutil.copytree(small_tasks / name, root / name)
    for copy, name in zip(COPIES, helpers.SMALL_TASKS, strict=False):
        shutil.copytree(small_tasks / name, root / copy)
    return root


def accuracies(out: Path, method: str) -> dict[str, float]:
    return {row["task_name"]: float(row["best_acc"]) for row in read_csv(out / "result" / f"{method}.csv")}


def test_an_unfinished_method_is_listed_apart_and_the_finished_ones_are_compared_over_every_task(
        five_tasks, tmp_path, monkeypatch):
    args = helpers.small_args(five_tasks, tmp_path, FINISHED[0], "--epochs", "1", "--arch", "timm:test_efficientnet")
    assert main.main([*args, "--method", *FINISHED]) == 0
    kill = Kill(monkeypatch, at_call=3)  # one epoch per task: the third call is the third task's
    assert main.main([*args, "--method", KILLED]) == 130
    kill.disarm()
    assert len(accuracies(tmp_path, KILLED)) == 2

    assert main.main([*args, "--report", "--method", *FINISHED]) == 0
    result = tmp_path / "result"
    report = (result / "report.md").read_text()
    assert report.splitlines()[2] == (f"Not compared (unfinished): {KILLED}: 2 of 5 tasks. The comparison covers the "
                                      "3 method(s) that finished all 5 tasks.")
    assert "## Does CLR outperform them?" in report and "Friedman test over 5 tasks and 3 methods" in report
    assert "one seed's accuracy on the task, which includes that seed's noise" in report
    found = {method: accuracies(tmp_path, method) for method in FINISHED}
    assert all(len(values) == 5 for values in found.values())

    ranks = {row["method"]: row for row in table(report, "method | average rank")}
    assert set(ranks) == {"CLR", "CLR-Full", "Linear"}
    for method, name in zip(FINISHED, ("CLR", "CLR-Full", "Linear"), strict=True):
        assert ranks[name]["average acc % over the 5 tasks"] == percent(statistics.mean(found[method].values()))
    against = {row["CLR against"]: row for row in table(report, "CLR against")}
    for method, name in zip(FINISHED[1:], ("CLR-Full", "Linear"), strict=True):
        differences = [found[FINISHED[0]][task] - found[method][task] for task in found[method]]
        row = against[name]
        assert [int(row[k]) for k in ("wins", "ties", "losses")] == [
            sum(d > 0 for d in differences), sum(d == 0 for d in differences), sum(d < 0 for d in differences)]
        assert row["median difference (points)"] == f"{100 * statistics.median(differences):+.2f}"
        if any(differences):
            assert 0 < float(row["Wilcoxon p"]) <= 1
        else:
            assert row["Wilcoxon p"] == "no difference"
    assert KILLED not in against
    for stem in ("critical_difference", "accuracy_heatmap"):
        assert f"[{stem}.png](figures/{stem}.png)" in report
        assert helpers.png_size(result / "figures" / f"{stem}.png")[0] >= 300
