"""The whole comparison in one command: several methods and seeds, an isolated method's tasks and a
shared-backbone method's sequences as units of work, the same files from 1 and 2 processes, a kill and rerun
that trains nothing twice, and the verified report across seeds."""
import re
import subprocess
from pathlib import Path

import pytest
import torch

import training.fit
from tests import helpers
from tests.helpers import Kill, read_csv
from training.settings import Layout

pytestmark = pytest.mark.slow  # every test here reads or makes a trained run

METHODS = ["Ghost_reduced_v1", "EWC"]
SEEDS = [0, 1]
TASKS = helpers.SMALL_TASKS[:2]
# timm's tiny EfficientNet: EWC's per-image Fisher is most of a run's time, and on resnet18 it takes 9 times longer
RUN = ["--tasks", *TASKS, "--method", *METHODS, "--seeds", *map(str, SEEDS), "--epochs", "1", "--device", "cpu",
       "--arch", "timm:test_efficientnet"]
TASK_EPOCHS = len(METHODS) * len(SEEDS) * len(TASKS)  # every task of every method and seed, 1 epoch


def run_args(data: Path, out: Path) -> list[str]:
    return helpers.small_args(data, out, METHODS[0], *RUN)  # RUN's --method wins


@pytest.fixture(scope="module")
def one_process(small_tasks, tmp_path_factory) -> Path:
    """The reference: a plain run with one thread, as torchrun gives each process."""
    return helpers.reference_run(tmp_path_factory, lambda out: run_args(small_tasks, out))


@pytest.fixture(scope="module")
def two_processes(small_tasks, tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess]:
    return helpers.torchrun_job(tmp_path_factory, lambda out: run_args(small_tasks, out))


def same(a, b) -> bool:
    """Equal nests of dicts, lists and values, tensors bit for bit."""
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b)
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return type(a) is type(b) and len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    return a == b


def assert_same_files(out: Path, reference: Path) -> None:
    """Every weights, anchor and after-task file equal in content, and every CSV equal to the byte."""
    for folder, pattern in (("weight", "*.pt"), ("result", "*.csv")):
        found = sorted(p.relative_to(out) for p in (out / folder).rglob(pattern) if ".resume" not in p.name)
        assert found == sorted(p.relative_to(reference) for p in (reference / folder).rglob(pattern)
                               if ".resume" not in p.name)
        for path in found:
            if path.suffix == ".csv":
                assert (out / path).read_bytes() == (reference / path).read_bytes(), path
            else:
                assert same(torch.load(out / path, weights_only=True),
                            torch.load(reference / path, weights_only=True)), path


def test_each_seed_gets_its_own_folders_with_every_methods_files(one_process):
    assert not (one_process / "result" / f"{METHODS[0]}.csv").exists()  # several seeds: nothing at the top
    for seed in SEEDS:
        seed_layout = Layout(one_process / "result", one_process / "weight").for_seed(seed)
        for method in METHODS:
            rows = read_csv(seed_layout.results_csv(method))
            assert [row["task_name"] for row in rows] == TASKS
            for task in TASKS:
                record = torch.load(seed_layout.weights(task, method), weights_only=True)
                assert (record["config"]["seed"], record["config"]["method"]) == (seed, method)
        assert seed_layout.after_task("EWC").exists() and seed_layout.matrix_csv("EWC").exists()
    first, second = (torch.load(Layout(one_process / "result", one_process / "weight").for_seed(seed)
                                .weights(TASKS[0], METHODS[0]), weights_only=True)["state"]
                     for seed in SEEDS)
    assert any(not torch.equal(first[key], second[key]) for key in first)  # another seed, another head


def test_the_report_across_seeds_gives_intervals_paired_differences_and_error_bars(one_process):
    top = Layout(one_process / "result", one_process / "weight")
    for seed in SEEDS:  # each seed's own report re-evaluated CLR's saved tasks
        assert "all re-evaluated accuracies equal the recorded ones" in top.for_seed(seed).report.read_text()
    report = top.seeds_report.read_text()
    assert "seed_0/report.md" in report and "seed_1/report.md" in report
    summary = {row["method"]: row for row in read_csv(top.seeds_summary_csv)}
    assert set(summary) == set(METHODS)
    for method in METHODS:
        seeds = [float(read_csv(top.for_seed(seed).results_csv(method))[k]["best_acc"]) for seed in SEEDS
                 for k in range(len(TASKS))]
        assert float(summary[method]["average_mean"]) == pytest.approx(sum(seeds) / len(seeds))
        assert summary[method]["average_half_width"] != ""  # two seeds give an interval
    differences = read_csv(top.seeds_differences_csv)
    assert [row["method"] for row in differences] == ["EWC"]
    assert (top.figures / "seeds_average_accuracy.png").stat().st_size > 0
    assert "±" in top.paper_table_md.read_text()


def test_two_processes_give_the_files_of_one_with_sequences_and_tasks_side_by_side(one_process, two_processes):
    out, job = two_processes
    assert job.returncode == 0, job.stderr[-3000:]
    assert_same_files(out, one_process)
    # the two processes share stderr, so one's line can run into the other's: read the claims, not the lines
    tasks = "|".join(TASKS)
    taken = re.findall(rf"process (\d) of 2 on \S+ takes (EWC seed \d|{METHODS[0]} seed \d (?:{tasks}))",
                       job.stdout + job.stderr)
    units = [f"EWC seed {seed}" for seed in SEEDS] + [f"{METHODS[0]} seed {seed} {task}" for seed in SEEDS
                                                       for task in TASKS]
    assert sorted(unit for _, unit in taken) == sorted(units)  # each unit claimed once
    # the two sequences are the largest units, so each process starts with one, and CLR's tasks fill in after
    assert sorted(process for process, unit in taken if unit.startswith("EWC")) == ["0", "1"]
    assert not list((out / "weight").rglob("*.resume.pt"))


def test_a_killed_run_rerun_finishes_without_training_anything_twice(small_tasks, one_process, tmp_path, monkeypatch):
    kill = Kill(monkeypatch, at_call=4)  # seed 0's EWC sequence, in its second task
    assert helpers.one_thread_main(run_args(small_tasks, tmp_path)) == 130
    kill.disarm()
    epochs = []
    real = training.fit.train_one_epoch
    monkeypatch.setattr(training.fit, "train_one_epoch", lambda *a, **k: epochs.append(1) or real(*a, **k))
    assert helpers.one_thread_main(run_args(small_tasks, tmp_path)) == 0
    assert len(epochs) == TASK_EPOCHS - 3  # the three epochs that finished before the kill are not run again
    assert_same_files(tmp_path, one_process)
