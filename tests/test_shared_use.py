"""A shared-backbone method used as a user uses it: --predict, run from another folder, classifies images for a named
task with the final model (EWC, SI, PSP, PackNet), and the report re-evaluates EWC's final model against the accuracy
matrix's last row and names a tampered after-task file; on the small cut of the demo tasks."""
import json
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

import main
from tests.helpers import SMALL_TASKS, read_csv, read_csv_text, small_args, table

pytestmark = pytest.mark.slow  # every test here reads or makes a trained run

TASKS = SMALL_TASKS[:2]
METHODS = ("EWC", "SI", "PSP", "PackNet")


def method_args(small_tasks: Path, out: Path, method: str, *extra: str) -> list[str]:
    """Two tasks, one epoch each (PackNet: one of retraining too)."""
    retrain = ("--packnet-retrain-epochs", "1") if method == "PackNet" else ()
    return small_args(small_tasks, out, method, "--tasks", *TASKS, "--epochs", "1", *retrain, *extra)


@pytest.fixture(scope="module")
def trained(small_tasks, tmp_path_factory) -> Callable[[str], Path]:
    """The output folder of a method's run, trained the first time a test asks for it."""
    outs: dict[str, Path] = {}

    def out_of(method: str) -> Path:
        if method not in outs:
            outs[method] = tmp_path_factory.mktemp(method)
            assert main.main(method_args(small_tasks, outs[method], method)) == 0
        return outs[method]

    return out_of


def last_row_correct(out: Path, method: str, task: str, images: int) -> int:
    """A task's correct count in the accuracy matrix's last row (written as a fraction of its images)."""
    return round(float(read_csv(out / "result" / f"{method}_matrix.csv")[-1][task]) * images)


@pytest.mark.parametrize("method", METHODS)
def test_predict_classifies_a_named_task_as_the_sequence_evaluated_it(method, trained, small_tasks, tmp_path,
                                                                     monkeypatch, capsys):
    """The first task, after the backbone moved on to the second: the predictions are the final model's own, so
    the images predicted right are as many as the matrix's last row counts."""
    out = trained(method)
    task = TASKS[0]
    monkeypatch.chdir(tmp_path)  # nothing is read from the working folder
    capsys.readouterr()
    assert main.main(["--predict", str(small_tasks / task / "val"), "--task", task, "--weight", str(out / "weight"),
                      "--workers", "0"]) == 0
    rows = read_csv_text(capsys.readouterr().out)
    assert {row["task"] for row in rows} == {task} and len(rows) > 1
    correct = sum(row["class"] == Path(row["path"]).parent.name for row in rows)
    assert correct == last_row_correct(out, method, task, len(rows))
    assert main.main(["--predict", str(small_tasks / task / "val"), "--task", task, "--weight", str(out / "weight"),
                      "--image-size", "32"]) == 2
    assert capsys.readouterr().err.startswith(f"error: task {TASKS[0]} was trained with --image-size 16 (now 32)")


def test_task_auto_fits_the_mappers_anchors_for_a_shared_method(trained, small_tasks, capsys):
    """The task mapper works on the frozen pretrained backbone, whatever the method: EWC stands for them all."""
    out = trained("EWC")
    capsys.readouterr()
    assert main.main([*method_args(small_tasks, out, "EWC"), "--predict", str(small_tasks / TASKS[1] / "val"),
                      "--task", "auto"]) == 0
    rows = read_csv_text(capsys.readouterr().out)
    assert {row["task"] for row in rows} <= set(TASKS) and "task_margin" in rows[0]
    assert sorted(path.name for path in (out / "weight" / "anchors").iterdir()) == [f"{task}.pt" for task in TASKS]


def test_the_report_verifies_the_final_model_and_names_a_tampered_one(trained, small_tasks, tmp_path, capsys):
    """EWC stands for the shared methods: the run's own report, then a copy with one weight changed."""
    out = trained("EWC")
    report = (out / "result" / "report.md").read_text()
    assert ("2 task(s) re-evaluated on the final model rebuilt from EWC_after_task.pt (the backbone after the last "
            "task, with each task's head and per-task state): all re-evaluated accuracies equal the accuracy "
            "matrix's last row.") in report
    assert json.loads((out / "result" / "verification.json").read_text())["EWC"] == \
        {"equal": 2, "mismatches": [], "skipped": {}}
    assert {row["method"]: row for row in table(report, "method")}["EWC"]["verified"] == "2/2"

    for folder in ("result", "weight"):
        shutil.copytree(out / folder, tmp_path / folder)
    path = tmp_path / "weight" / "EWC_after_task.pt"
    saved = torch.load(path, weights_only=True)
    position, label = class_to_force(small_tasks, out)
    saved["records"][position]["state"]["fc.bias"][label] = 1e4  # one weight: the task now answers one class
    torch.save(saved, path)
    capsys.readouterr()
    assert main.main([*method_args(small_tasks, tmp_path, "EWC"), "--report"]) == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and f"{TASKS[position]}: the matrix's last row has " in errors[0]
    assert "**1 MISMATCH(ES)**" in (tmp_path / "result" / "report.md").read_text()


def class_to_force(small_tasks: Path, out: Path) -> tuple[int, int]:
    """A task and a class whose validation images are not as many as the task's correct count, so a head that
    answers that class for every image must change the count."""
    for position, task in enumerate(TASKS):
        classes = sorted(folder.name for folder in (small_tasks / task / "val").iterdir())
        counts = [len(list((small_tasks / task / "val" / name).iterdir())) for name in classes]
        label_map = torch.load(out / "weight" / f"{task}_EWC.pt", weights_only=True)["label_map"]
        correct = last_row_correct(out, "EWC", task, sum(counts))
        for name, count in zip(classes, counts):
            if count != correct:
                return position, label_map[name]
    raise AssertionError("every class of every task has as many images as the task's correct count")
