"""Each task's per-epoch metrics file (Layout.metrics): one record per epoch with the documented keys, equal to the
record's history; exactly one record per epoch after a kill wherever it falls; and --fresh removes it."""
import shutil
from pathlib import Path

import pytest
import torch

import main
import training.fit
from tests.helpers import SMALL_TASKS, Kill, small_args
from training.metrics import read_epochs
from training.settings import Layout

pytestmark = pytest.mark.slow  # every test here reads or makes a trained run

TASKS = SMALL_TASKS[:2]
METHOD = "Ghost_reduced_v1"
KEYS = {"epoch", "loss", "train_acc", "val_acc", "lr", "images_per_s", "peak_gpu_mib", "wall_s", "best_epoch",
        "process", "world_size"}


def run_args(small_tasks: Path, out: Path, *extra: str) -> list[str]:
    """CLR on resnet18 from a random init, 16 px, 2 epochs, two tasks."""
    return small_args(small_tasks, out, METHOD, "--tasks", *TASKS, *extra)


def metrics_of(out: Path, task: str) -> list[dict]:
    return read_epochs(Layout(out / "result", out / "weight").metrics(task, METHOD))


def history_of(out: Path, task: str) -> list[dict]:
    return torch.load(out / "weight" / f"{task}_{METHOD}.pt", weights_only=True)["history"]


@pytest.fixture(scope="module")
def finished(small_tasks, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("metrics")
    assert main.main(run_args(small_tasks, out)) == 0
    return out


def test_every_epoch_has_one_record_equal_to_the_history(finished):
    for task in TASKS:
        epochs, history = metrics_of(finished, task), history_of(finished, task)
        assert all(set(epoch) == KEYS for epoch in epochs)
        assert [epoch["epoch"] for epoch in epochs] == [1, 2]
        assert [{key: epoch[key] for key in history[0]} for epoch in epochs] == history  # loss, accuracies too
        assert [epoch["lr"] for epoch in epochs] == pytest.approx([1e-3, 1e-4])  # StepLR steps after each epoch
        assert epochs[-1]["best_epoch"] == torch.load(finished / "weight" / f"{task}_{METHOD}.pt",
                                                      weights_only=True)["best_epoch"]
        assert all(epoch["peak_gpu_mib"] is None and epoch["process"] == 0 and epoch["world_size"] == 1
                   and epoch["images_per_s"] > 0 and epoch["wall_s"] > 0 for epoch in epochs)


def test_a_kill_in_an_epoch_or_before_its_resume_point_leaves_each_epoch_once(small_tasks, tmp_path, monkeypatch):
    one_task = run_args(small_tasks, tmp_path, "--tasks", TASKS[0])
    kill = Kill(monkeypatch, at_call=2)  # in the second epoch
    assert main.main(one_task) == 130
    assert [epoch["epoch"] for epoch in metrics_of(tmp_path, TASKS[0])] == [1]
    kill.disarm()

    real = training.fit.save_resume_point

    def killed_before_saving(*args, **kwargs):  # after the resumed epoch 2's record, before its resume point
        raise KeyboardInterrupt

    monkeypatch.setattr(training.fit, "save_resume_point", killed_before_saving)
    assert main.main(one_task) == 130
    assert [epoch["epoch"] for epoch in metrics_of(tmp_path, TASKS[0])] == [1, 2]  # a record the resume point lacks
    monkeypatch.setattr(training.fit, "save_resume_point", real)
    assert main.main(one_task) == 0
    epochs = metrics_of(tmp_path, TASKS[0])
    assert [epoch["epoch"] for epoch in epochs] == [1, 2]
    assert [epoch["val_acc"] for epoch in epochs] == [epoch["val_acc"] for epoch in history_of(tmp_path, TASKS[0])]


def test_fresh_removes_the_selected_tasks_metrics(finished, small_tasks, tmp_path, monkeypatch):
    for folder in ("result", "weight"):
        shutil.copytree(finished / folder, tmp_path / folder)
    Kill(monkeypatch, at_call=1)  # --fresh forgets both tasks, then the first stops in its first epoch
    assert main.main(run_args(small_tasks, tmp_path, "--fresh")) == 130
    layout = Layout(tmp_path / "result", tmp_path / "weight")
    assert metrics_of(tmp_path, TASKS[0]) == [] and not layout.metrics(TASKS[1], METHOD).exists()
