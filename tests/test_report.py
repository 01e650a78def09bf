"""--report and the end-of-run report: tables parsed back against the CSVs, figures, partial results,
accuracy matrices with BWT, task-agnostic counts, verification, and the one-line error without results."""
import json
import shutil
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pytest
import torch

import main
import report.verify
import training.families
from dataset.synthetic import DEMO_TASKS
from dataset.task import TaskInfo
from report.inputs import read_method
from tests.helpers import png_size, table, write_matrix, write_method, write_task_agnostic
from training.metrics import write_epochs
from training.saved import PURPOSES
from training.settings import Layout

TASKS = [(17, "wikiart"), (1, "scenes"), (2, "birds")]  # ./stat.csv runs them scenes, birds, wikiart
STAT_ORDER = ["scenes", "birds", "wikiart"]
CLR = [0.5, 0.8125, 0.625]
LINEAR = [0.25, 0.375]  # wikiart and scenes only: a partially finished method
# no critical-difference diagram: it needs three methods over five tasks
FIGURES = ["per_task_accuracy", "accuracy_vs_parameters", "training_curves", "accuracy_heatmap"]


def report_on(folder: Path, *extra: str) -> int:
    return main.main(["--report", "--no-verify", "--result", str(folder / "result"),
                      "--weight", str(folder / "weight"), *extra])


def row(rows: list[dict], task: str) -> dict:
    return next(r for r in rows if r["task"] == task)


def percent(fraction: float) -> str:
    return f"{100 * fraction:.2f}"


@pytest.fixture
def two_methods(tmp_path) -> Path:
    write_method(tmp_path / "result", tmp_path / "weight", "Linear", TASKS[:2], LINEAR, 0.132)
    write_method(tmp_path / "result", tmp_path / "weight", "Ghost_reduced_v1", TASKS, CLR, 0.514)
    return tmp_path


def test_two_methods_tables_equal_the_csvs_and_figures_are_images(two_methods, capsys):
    assert report_on(two_methods) == 0
    result = two_methods / "result"
    report = (result / "report.md").read_text()
    assert capsys.readouterr().out.strip() == report.strip()
    rows = table(report, "order")
    tasks = [r for r in rows if not r["task"].startswith("**")]
    assert [r["task"] for r in tasks] == STAT_ORDER and [r["order"] for r in tasks] == ["1", "2", "3"]
    header = list(rows[0])
    assert header.index("CLR acc %") < header.index("Linear acc %") < header.index("CLR params %")
    for method, accuracies in (("Ghost_reduced_v1", CLR), ("Linear", LINEAR)):
        csv = pd.read_csv(result / f"{method}.csv")
        column = "CLR acc %" if method == "Ghost_reduced_v1" else "Linear acc %"
        for task_name, acc in zip(csv.task_name, csv.best_acc):
            assert row(rows, task_name)[column] == percent(acc)
    assert row(rows, "birds")["Linear acc %"] == "" and row(rows, "birds")["Linear params %"] == ""
    assert row(rows, "scenes")["classes"] == "6" and row(rows, "scenes")["val"] == "41"  # from its weights file

    assert row(rows, "**tasks finished**")["CLR acc %"] == "3" and row(rows, "**tasks finished**")["Linear acc %"] == "2"
    assert row(rows, "**average over the tasks finished**")["CLR acc %"] == percent(sum(CLR) / 3)
    assert row(rows, "**median over the tasks finished**")["CLR acc %"] == percent(0.625)
    compared = row(rows, "**average over the 3 compared tasks**")  # Linear, unfinished, does not shrink it to 2
    assert compared["CLR acc %"] == percent(sum(CLR) / 3) and compared["Linear acc %"] == ""
    assert compared["CLR params %"] == "0.514" and compared["Linear params %"] == ""
    summary = {r["method"]: r for r in table(report, "method")}
    assert summary["Linear"]["tasks"] == "2" and summary["CLR"]["average acc %"] == percent(sum(CLR) / 3)
    assert "3 task(s) not re-evaluated: --no-verify" in report
    assert json.loads((result / "verification.json").read_text()) == {
        "Ghost_reduced_v1": {"equal": 0, "mismatches": [], "skipped": {"--no-verify": 3}},
        "Linear": {"equal": 0, "mismatches": [], "skipped": {"--no-verify": 2}}}

    wide = pd.read_csv(result / "results_wide.csv").set_index("task_name")
    assert list(wide.index) == STAT_ORDER
    for (task_id, name), acc in zip(TASKS, CLR):
        assert wide.loc[name, "Ghost_reduced_v1"] == acc and wide.loc[name, "task_id"] == task_id
    assert wide.loc["scenes", "Linear"] == LINEAR[1] and pd.isna(wide.loc["birds", "Linear"])
    assert wide.loc["wikiart", "params_percent_Linear"] == 0.132
    # these files predate stored_bytes: it is counted from the saved head, (classes x 4 + classes) float32
    for name in STAT_ORDER:
        assert wide.loc[name, "stored_bytes_Ghost_reduced_v1"] == 4 * 5 * wide.loc[name, "classes"]
    assert summary["CLR"]["stored per task"] == "120 B" and summary["Linear"]["stored per task"] == "110 B"

    for stem in FIGURES:
        width, height = png_size(result / "figures" / f"{stem}.png")
        assert 300 <= width <= 4000 and 200 <= height <= 6000, (stem, width, height)
    assert sorted(p.name for p in (result / "figures").iterdir()) == sorted(f"{stem}.png" for stem in FIGURES)


def test_training_curves_come_from_the_metrics_files_else_the_histories(two_methods):
    layout = Layout(two_methods / "result", two_methods / "weight")
    with_metrics = [{"epoch": epoch, "val_acc": acc} for epoch, acc in ((1, 0.25), (2, 0.5))]
    path = layout.metrics("scenes", "Ghost_reduced_v1")
    path.parent.mkdir()
    write_epochs(path, with_metrics)
    results = read_method(layout, "Ghost_reduced_v1", [TaskInfo(k, task_id, name) for k, (task_id, name)
                                                       in enumerate(TASKS)])
    assert results.curves[1] == with_metrics
    assert results.curves[17] == results.records[17].history and len(results.curves[17]) > 0


def test_one_method_and_the_tasks_option(two_methods):
    (two_methods / "result" / "Linear.csv").unlink()
    assert report_on(two_methods, "--tasks", "scenes", "wikiart") == 0
    report = (two_methods / "result" / "report.md").read_text()
    rows = table(report, "order")
    assert [r["task"] for r in rows] == ["scenes", "wikiart", "**average over 2 tasks**", "**median over 2 tasks**"]
    assert rows[2]["CLR acc %"] == percent((CLR[0] + CLR[1]) / 2) and "Linear" not in report
    assert len(pd.read_csv(two_methods / "result" / "results_wide.csv")) == 2


def test_shared_backbone_matrix_gives_bwt_and_a_heatmap(two_methods):
    matrix = [[0.9], [0.7, 0.8], [0.5, 0.6, 0.75]]
    tasks = [TASKS[1], TASKS[2], TASKS[0]]  # run order
    write_method(two_methods / "result", two_methods / "weight", "SGD", tasks, matrix[-1], 0.02, shared=True)
    write_matrix(two_methods / "result", "SGD", tasks, matrix)
    assert report_on(two_methods) == 0
    report = (two_methods / "result" / "report.md").read_text()
    bwt = ((0.5 - 0.9) + (0.6 - 0.8)) / 2
    assert f"BWT over 3 tasks: **{percent(bwt)} points**" in report
    summary = {r["method"]: r for r in table(report, "method")}
    assert summary["SGD"]["BWT (points)"] == percent(bwt) and summary["CLR"]["BWT (points)"] == ""
    forgetting = {r["task"]: r for r in table(report, "task")}
    assert forgetting["scenes"]["just learnt % (R[i][i])"] == "90.00"
    assert forgetting["scenes"]["after task 3 % (R[T][i])"] == "50.00"
    assert "**SGD** (shared backbone" in report
    assert png_size(two_methods / "result" / "figures" / "accuracy_matrix_SGD.png")[0] >= 300
    assert "SGD_matrix" not in table(report, "order")[0]  # a matrix file is not a method
    # SGD finished all three tasks beside CLR: both are compared, SGD on its accuracy after the last task; Linear
    # (2 of 3) is named in the report's first lines and left out
    assert report.splitlines()[2] == ("Not compared (unfinished): Linear: 2 of 3 tasks. The comparison covers the 2 "
                                      "method(s) that finished all 3 tasks.")
    assert "A shared-backbone method (SGD) is ranked on its accuracy after the last task" in report
    assert "- CLR against SGD: wins 2, ties 0, losses 1 over 3 tasks; median difference +2.50 points." in report
    assert {r["method"]: r["average over the 3 compared tasks %"] for r in summary.values()} == {
        "CLR": percent(sum(CLR) / 3), "Linear": "", "SGD": percent(sum(matrix[-1]) / 3)}


def test_task_agnostic_counts_are_summed_before_dividing(two_methods):
    write_task_agnostic(two_methods / "result", "Ghost_reduced_v1", TASKS, [(40, 30, 20), (41, 41, 35), (42, 21, 7)])
    assert report_on(two_methods) == 0
    report = (two_methods / "result" / "report.md").read_text()
    assert (f"Over 123 validation images of 3 tasks: the task mapper picked the right task for "
            f"**{percent(92 / 123)}%**") in report and f"for **{percent(62 / 123)}%**" in report
    agnostic = {r["task"]: r for r in table(report, "task")}
    assert agnostic["birds"]["mapper %"] == percent(21 / 42) and agnostic["birds"]["end to end %"] == percent(7 / 42)


def test_no_results_is_one_line(tmp_path, capsys):
    (tmp_path / "result").mkdir()
    (tmp_path / "result" / "results_wide.csv").write_text("task_id,task_name,best_acc\n")  # not a method's
    assert report_on(tmp_path) == 2
    assert main.main(["--report", "--result", str(tmp_path / "nothing")]) == 2
    errors = capsys.readouterr().err.splitlines()
    assert len(errors) == 2 and all(line.startswith("error: no results to report in ") for line in errors)
    assert not (tmp_path / "demo_data").exists()


@pytest.fixture(scope="module")
def trained(data, tmp_path_factory) -> tuple[Path, list[str]]:
    """One tiny real run (one task, one epoch) whose saved task the report can re-evaluate."""
    out = tmp_path_factory.mktemp("trained")
    args = ["--data", str(data), "--stat", str(data / "stat.csv"), "--tasks", DEMO_TASKS[0], "--arch", "resnet18",
            "--weights", "none", "--image-size", "32", "--workers", "0", "--cache-dir", str(out / "cache")]
    assert main.main([*args, "--epochs", "1", "--result", str(out / "result"), "--weight", str(out / "weight")]) == 0
    return out, args


def copy_run(trained: tuple[Path, list[str]], to: Path) -> list[str]:
    out, args = trained
    for folder in ("result", "weight"):
        shutil.copytree(out / folder, to / folder)
    return [*args, "--report", "--result", str(to / "result"), "--weight", str(to / "weight")]


@pytest.mark.slow
def test_report_reverifies_matching_methods_and_says_why_others_are_not(trained, tmp_path, capsys):
    args = copy_run(trained, tmp_path)
    task_id = int(pd.read_csv(tmp_path / "result" / "Ghost_reduced_v1.csv").task_id[0])
    write_method(tmp_path / "result", tmp_path / "weight", "Linear", [(task_id, DEMO_TASKS[0])], [0.5], 0.1,
                 arch="resnet50")
    write_method(tmp_path / "result", tmp_path / "weight", "SGD", [(task_id, DEMO_TASKS[0])], [0.5], 0.1, shared=True)
    assert main.main(args) == 0
    report = (tmp_path / "result" / "report.md").read_text()
    assert ("**CLR (Ghost_reduced_v1)** (isolated per-task state; resnet18, backbone none:seed0, 32 px): 1 task(s) "
            "re-loaded onto a freshly built backbone and re-evaluated on their validation split: all re-evaluated "
            "accuracies equal the recorded ones.") in report
    assert "**Linear** (isolated per-task state; resnet50, backbone none:seed0, 32 px): 1 task(s) not re-evaluated: " \
           "settings differ (trained with resnet50, backbone none:seed0, 32 px; this report has resnet18" in report
    assert "**SGD** (shared backbone" in report and "1 task(s) not re-evaluated: no SGD_after_task.pt" in report
    summary = {r["method"]: r for r in table(report, "method")}
    assert summary["CLR"]["verified"] == "1/1" and summary["CLR"]["BWT (points)"] == "0.00"
    verification = json.loads((tmp_path / "result" / "verification.json").read_text())
    assert verification["Ghost_reduced_v1"] == {"equal": 1, "mismatches": [], "skipped": {}}
    assert verification["Linear"]["equal"] == 0 and sum(verification["Linear"]["skipped"].values()) == 1
    assert summary["Linear"]["verified"] == "no" and summary["Linear"]["BWT (points)"] == ""
    assert main.main([*args, "--image-size", "48"]) == 0
    assert "settings differ (trained with resnet18, backbone none:seed0, 32 px; this report has resnet18, backbone " \
           "none:seed0, 48 px)" in (tmp_path / "result" / "report.md").read_text()
    capsys.readouterr()


def test_a_re_evaluation_one_image_off_in_four_hundred_is_a_mismatch(monkeypatch):
    """The re-evaluated count must equal the record's exactly: one image off in 400 (0.25 points) is a mismatch."""
    task = TaskInfo(order=0, task_id=7, name="big")
    settings = dict.fromkeys(PURPOSES["verify"], "as trained")  # the record's settings are this run's
    record = SimpleNamespace(best_correct=300, val_images=400, config=settings)
    results = SimpleNamespace(name="Ghost_reduced_v1", accuracy=pd.Series([0.75], index=[7]), records={7: record},
                              matrix=None)
    ctx = SimpleNamespace(task_config=lambda sample: settings,
                          layout=SimpleNamespace(weights=lambda task, method: task))
    monkeypatch.setattr(training.families, "TaskRecord", SimpleNamespace(load=lambda path: record))
    for correct, expected in ((299, (0, ["big: recorded 300 correct, re-evaluated 299"])),
                              (301, (0, ["big: recorded 300 correct, re-evaluated 301"])), (300, (1, []))):
        monkeypatch.setattr(training.families, "verify_task", lambda *args: correct)
        found = report.verify.verify_method(ctx, results, [task], {7: "its sample"})
        assert (found.equal, found.mismatches) == expected


@pytest.mark.slow
def test_a_record_that_does_not_reproduce_is_an_error(trained, tmp_path, capsys):
    args = copy_run(trained, tmp_path)
    path = next((tmp_path / "weight").glob("*.pt"))
    saved = torch.load(path, weights_only=True)
    saved["best_correct"] += 1
    torch.save(saved, path)
    assert main.main(args) == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and errors[0].startswith("error: re-evaluation differs from the recorded accuracy for 1 task")
    assert "**1 MISMATCH(ES)**" in (tmp_path / "result" / "report.md").read_text()


@pytest.mark.slow
def test_a_training_run_with_no_verify_reports_without_re_evaluating(trained, tmp_path, capsys):
    """--no-verify on a training run skips the end-of-run re-evaluation (a record that would not reproduce passes)
    and the report says why the tasks were not re-evaluated."""
    copy_run(trained, tmp_path)
    path = next((tmp_path / "weight").glob("*.pt"))
    saved = torch.load(path, weights_only=True)
    saved["best_correct"] += 1
    torch.save(saved, path)
    args = [*trained[1], "--epochs", "1", "--result", str(tmp_path / "result"), "--weight", str(tmp_path / "weight")]
    assert main.main([*args, "--no-verify"]) == 0
    assert "1 task(s) not re-evaluated: --no-verify" in (tmp_path / "result" / "report.md").read_text()
    assert json.loads((tmp_path / "result" / "verification.json").read_text()) == {
        "Ghost_reduced_v1": {"equal": 0, "mismatches": [], "skipped": {"--no-verify": 1}}}
    assert main.main(args) == 2  # the same run verified finds the altered record
    capsys.readouterr()


def test_sizes_are_written_in_binary_units():
    from report.tables import size_cell
    assert [size_cell(v) for v in (0.0, 1023.0, 1536.0, 3 * 2**20, 94.1 * 2**20, float("nan"))] == \
        ["0 B", "1023 B", "1.5 KiB", "3 MiB", "94.1 MiB", ""]
