"""Each task's per-epoch metrics file (Layout.metrics): one record per epoch with the documented keys, equal to the
record's history; exactly one record per epoch after a kill wherever it falls; and --fresh removes it."""
from pathlib import Path

import pytest
import torch

import main
import training.fit
from tests.conftest import TASKS, Kill, run_args
from training.metrics import read_epochs
from training.settings import Layout

METHOD = "Ghost_reduced_v1"
KEYS = {"epoch", "loss", "train_acc", "val_acc", "lr", "images_per_s", "peak_gpu_mib", "wall_s", "best_epoch",
        "process", "world_size"}


def metrics_of(out: Path, task: str) -> list[dict]:
    return read_epochs(Layout(out / "result", out / "weight").metrics(task, METHOD))


def history_of(out: Path, task: str) -> list[dict]:
    return torch.load(out / "weight" / f"{task}_{METHOD}.pt", weights_only=True)["history"]


def test_every_epoch_has_one_record_equal_to_the_history(data, tmp_path):
    assert main.main(run_args(data, tmp_path)) == 0
    for task in TASKS:
        epochs, history = metrics_of(tmp_path, task), history_of(tmp_path, task)
        assert all(set(epoch) == KEYS for epoch in epochs)
        assert [epoch["epoch"] for epoch in epochs] == [1, 2]
        assert [{key: epoch[key] for key in history[0]} for epoch in epochs] == history  # loss, accuracies too
        assert [epoch["lr"] for epoch in epochs] == pytest.approx([1e-3, 1e-4])  # StepLR steps after each epoch
        assert epochs[-1]["best_epoch"] == torch.load(tmp_path / "weight" / f"{task}_{METHOD}.pt",
                                                      weights_only=True)["best_epoch"]
        assert all(epoch["peak_gpu_mib"] is None and epoch["process"] == 0 and epoch["world_size"] == 1
                   and epoch["images_per_s"] > 0 and epoch["wall_s"] > 0 for epoch in epochs)


def test_a_kill_in_an_epoch_or_before_its_resume_point_leaves_each_epoch_once(data, tmp_path, monkeypatch):
    one_task = run_args(data, tmp_path, "--tasks", TASKS[0])
    kill = Kill(monkeypatch, at_call=2)  # in the second epoch
    assert main.main(one_task) == 130
    assert [epoch["epoch"] for epoch in metrics_of(tmp_path, TASKS[0])] == [1]
    kill.disarm()
    assert main.main([*one_task, "--fresh"]) == 0

    real, saves = training.fit.save_resume_point, []

    def killed_on_the_second_save(*args, **kwargs):  # after epoch 2's record, before its resume point
        saves.append(1)
        if len(saves) == 2:
            raise KeyboardInterrupt
        real(*args, **kwargs)

    monkeypatch.setattr(training.fit, "save_resume_point", killed_on_the_second_save)
    assert main.main([*one_task, "--fresh"]) == 130
    assert [epoch["epoch"] for epoch in metrics_of(tmp_path, TASKS[0])] == [1, 2]  # a record the resume point lacks
    monkeypatch.setattr(training.fit, "save_resume_point", real)
    assert main.main(one_task) == 0
    epochs = metrics_of(tmp_path, TASKS[0])
    assert [epoch["epoch"] for epoch in epochs] == [1, 2]
    assert [epoch["val_acc"] for epoch in epochs] == [epoch["val_acc"] for epoch in history_of(tmp_path, TASKS[0])]


def test_fresh_removes_the_selected_tasks_metrics(data, tmp_path, monkeypatch):
    args = run_args(data, tmp_path, "--epochs", "1")
    assert main.main(args) == 0
    assert all(len(metrics_of(tmp_path, task)) == 1 for task in TASKS)
    Kill(monkeypatch, at_call=1)  # --fresh forgets both tasks, then the first stops in its first epoch
    assert main.main([*args, "--fresh"]) == 130
    layout = Layout(tmp_path / "result", tmp_path / "weight")
    assert metrics_of(tmp_path, TASKS[0]) == [] and not layout.metrics(TASKS[1], METHOD).exists()
