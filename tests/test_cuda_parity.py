"""bf16 autocast (the CUDA default) learns the synthetic tasks as well as the release's fp32. Needs a GPU."""
import csv

import pytest
import torch

import main
from dataset.synthetic import DEMO_TASKS, write_synthetic_dct

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


def best_accuracies(data, out, precision: str) -> dict[str, float]:
    code = main.main(["--data", str(data), "--stat", str(data / "stat.csv"), "--tasks", *DEMO_TASKS,
                      "--weights", "none", "--image-size", "64", "--epochs", "15", "--device", "cuda",
                      "--precision", precision, "--workers", "0", "--result", str(out / "result"),
                      "--weight", str(out / "weight"), "--cache-dir", str(out / "cache")])
    assert code == 0
    with (out / "result" / "Ghost_reduced_v1.csv").open(newline="") as file:
        return {row["task_name"]: float(row["best_acc"]) for row in csv.DictReader(file)}


def test_bf16_and_fp32_reach_the_same_best_accuracy(tmp_path):
    data = tmp_path / "data"
    write_synthetic_dct(data)
    bf16 = best_accuracies(data, tmp_path / "bf16", "bf16")
    fp32 = best_accuracies(data, tmp_path / "fp32", "fp32")
    print({task: (bf16[task], fp32[task]) for task in DEMO_TASKS})
    mean_gap = sum(bf16[task] - fp32[task] for task in DEMO_TASKS) / len(DEMO_TASKS)
    assert abs(mean_gap) <= 0.01, (bf16, fp32)
