"""The one fit loop that every method trains a task through. On a task's model alone: the NaN check's cadence and
what a resume point brings back. In whole runs: a non-finite loss or weight stops any method with one line and leaves
nothing non-finite on disk, and a CPU run with every setting of a CUDA run learns and verifies."""
import dataclasses
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import main
import training.fit
from dataset.loader import DeviceBatches
from network import build_model, load_backbone, task_state
from tests.helpers import TASKS, read_csv, run_args, tensors_in
from training.checkpoints import Progress, restore_resume_point, save_resume_point
from training.loop import CHECK_EVERY, NonFiniteLoss, build_optimizer, train_one_epoch
from training.settings import runtime_for

FAMILIES = ["Ghost_reduced_v1", "SGD", "EWC", "LwF", "ER"]  # the isolated methods' loop, and each baseline's


CPU = runtime_for(torch.device("cpu"))


def tiny_task(images: int) -> tuple[torch.nn.Module, torch.optim.Optimizer, DeviceBatches]:
    """CLR on a random resnet18 for 3 classes, its optimizer, and shuffled batches of 2 random 16 px images."""
    torch.manual_seed(0)
    model = build_model(load_backbone("resnet18", "none"), "Ghost_reduced_v1", 3)
    pixels = torch.randint(0, 256, (images, 3, 16, 16), dtype=torch.uint8)
    batches = DeviceBatches(pixels, torch.arange(images) % 3, 2, CPU.device, shuffle=True, seed=0)
    return model, build_optimizer(model, 1e-3, CPU), batches


def test_the_nan_stop_looks_at_the_loss_every_check_every_steps():
    """A loss that turns NaN at step 3 stops the epoch at step CHECK_EVERY, the first look, not at its end."""
    model, optimizer, batches = tiny_task(2 * 3 * CHECK_EVERY)
    steps = []

    def nan_from_step_three(images, labels):
        steps.append(1)
        logits = model(images)
        loss = F.cross_entropy(logits, labels)
        return (loss * float("nan") if len(steps) >= 3 else loss), logits, labels

    with pytest.raises(NonFiniteLoss, match=f"^the training loss became nan by step {CHECK_EVERY}$"):
        train_one_epoch(model, optimizer, batches, CPU, 0.0, "nan", nan_from_step_three)
    assert len(steps) == CHECK_EVERY


def test_a_resume_point_brings_back_the_next_epochs_order_and_random_numbers(tmp_path):
    """Restored onto a model, optimizer and batches that moved on, the resume point gives what the run would have
    seen next: the next epoch's shuffle, the next random numbers, the saved weights and learning rate."""
    model, optimizer, batches = tiny_task(12)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=1, gamma=0.1)
    train_one_epoch(model, optimizer, batches, CPU, 0.0, "epoch 1")
    scheduler.step()
    path, config = tmp_path / "task.resume.pt", {"method": "Ghost_reduced_v1"}
    save_resume_point(path, config, model, optimizer, scheduler, batches, Progress(epoch=1))
    saved = task_state(model)
    next_images = torch.cat([images for images, _ in batches])
    next_draw = torch.rand(4)

    train_one_epoch(model, optimizer, batches, CPU, 0.0, "epoch 2")  # the run goes on; the resume point must undo it
    scheduler.step()
    progress = restore_resume_point(path, config, model, optimizer, scheduler, batches)
    assert progress.epoch == 1
    assert torch.equal(torch.cat([images for images, _ in batches]), next_images)
    assert torch.equal(torch.rand(4), next_draw)
    assert all(torch.equal(tensor, saved[name]) for name, tensor in task_state(model).items())
    assert optimizer.param_groups[0]["lr"] == pytest.approx(1e-4)


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("error: ")]


def saved_tensors(weight: Path) -> list[torch.Tensor]:
    return [t for path in weight.rglob("*.pt") for t in tensors_in(torch.load(path, weights_only=True))
            if t.is_floating_point()]


@pytest.mark.slow
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


@pytest.mark.slow
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
    assert not (tmp_path / "result" / f"{method}.csv").exists()
    assert all(t.isfinite().all() for t in saved_tensors(tmp_path / "weight"))


@pytest.mark.slow
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
