"""The one fit loop that every method trains through: a non-finite loss or weight stops any method with one line
and leaves nothing non-finite on disk, and a CPU run with every setting of a CUDA run learns and verifies."""
import dataclasses
import math
from pathlib import Path

import pytest
import torch

import main
import training.fit
from tests.conftest import TASKS, read_csv, run_args, tensors_in

FAMILIES = ["Ghost_reduced_v1", "SGD", "EWC", "LwF", "ER"]  # the isolated methods' loop, and each baseline's


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("error: ")]


def saved_tensors(weight: Path) -> list[torch.Tensor]:
    return [t for path in weight.rglob("*.pt") for t in tensors_in(torch.load(path, weights_only=True))
            if t.is_floating_point()]


@pytest.mark.parametrize("method", FAMILIES)
def test_a_huge_learning_rate_stops_every_method_with_one_line_and_no_nan_on_disk(data, tmp_path, capsys, method):
    args = run_args(data, tmp_path, "--method", method, "--lr", "1e30", "--image-size", "16", "--epochs", "2")
    assert main.main(args) == 2
    [error] = error_lines(capsys.readouterr().err)
    assert error.startswith(f"error: task {TASKS[0]}: ") and " in epoch 1, so the task stopped and saved no weights; " \
        "it had no resume point yet." in error and "--lr" in error
    assert not list((tmp_path / "weight").glob(f"*_{method}.pt"))  # no record, no sequence state
    assert not (tmp_path / "result" / f"{method}.csv").exists()
    assert all(t.isfinite().all() for t in saved_tensors(tmp_path / "weight"))


@pytest.mark.parametrize("method", ["Ghost_reduced_v1", "SGD"])
def test_a_nan_epoch_keeps_the_last_good_resume_point_in_either_family(data, tmp_path, monkeypatch, capsys, method):
    real, calls = training.fit.train_one_epoch, []

    def nan_in_epoch_two(*args, **kwargs):
        calls.append(1)
        return (math.nan, 0.0) if len(calls) == 2 else real(*args, **kwargs)

    monkeypatch.setattr(training.fit, "train_one_epoch", nan_in_epoch_two)
    assert main.main(run_args(data, tmp_path, "--method", method, "--image-size", "16")) == 2
    [error] = error_lines(capsys.readouterr().err)
    resume = tmp_path / "weight" / f"{TASKS[0]}_{method}.resume.pt"
    assert error == (f"error: task {TASKS[0]}: the training loss became nan in epoch 2, so the task stopped and "
                     f"saved no weights; its resume point after epoch 1 is kept in {resume}. Rerun to retry, or try "
                     "--precision fp32 or a lower --lr (with --fresh or another --weight folder)")
    saved = torch.load(resume, weights_only=True)
    assert saved["epoch"] == 1 and len(saved["history"]) == 1 and math.isfinite(saved["history"][0]["loss"])
    assert [p.name for p in (tmp_path / "weight").glob("*.pt")] == [resume.name]
    assert all(t.isfinite().all() for t in saved_tensors(tmp_path / "weight"))


def test_cpu_run_with_every_cuda_setting_learns_and_verifies(data, tmp_path, monkeypatch, capsys):
    """bf16 autocast, channels_last, fused Adam and evaluation in batches of 256, all on the CPU: only the CUDA
    kernels themselves are left for a GPU to test."""
    def cuda_like(*args, **kwargs):
        return dataclasses.replace(real(*args, **kwargs), channels_last=True, fused_optimizer=True)

    real = main.runtime_for
    monkeypatch.setattr(main, "runtime_for", cuda_like)
    args = run_args(data, tmp_path, "--tasks", TASKS[0], "--epochs", "3", "--precision", "bf16",
                    "--eval-batch-size", "256")
    assert main.main(args) == 0
    log = (tmp_path / "result" / TASKS[0] / "Ghost_reduced_v1.log").read_text()
    assert "bf16 autocast, eval batch 256" in log
    [row] = read_csv(tmp_path / "result" / "Ghost_reduced_v1.csv")
    assert float(row["best_acc"]) > 0.5  # 5 classes: chance is 0.2
    report = (tmp_path / "result" / "report.md").read_text()
    assert "all re-evaluated accuracies equal the recorded ones" in report
