"""Scale-out under torchrun on the CPU: every task learnt once, with the results of one process; the weight
folder's run lock; claiming units of work; and the predicted load balance."""
import logging
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.distributed as dist

import main
from benchmarks import balance
from common.console import TqdmHandler
from dataset.task import TaskInfo
from tests import helpers
from tests.helpers import read_csv
from training import distributed
from training.settings import Layout

REPO = Path(__file__).resolve().parent.parent
TASKS = helpers.SMALL_TASKS
METHOD = "Ghost_reduced_v1"


def run_args(data: Path, out: Path) -> list[str]:
    """CLR on the small cut's three tasks, one epoch, on the CPU."""
    return helpers.small_args(data, out, METHOD, "--epochs", "1", "--device", "cpu")


def saved_weights(out: Path) -> dict[str, dict]:
    return {p.name: torch.load(p, weights_only=True) for p in sorted((out / "weight").glob(f"*_{METHOD}.pt"))}


@pytest.fixture(scope="module")
def one_process(small_tasks, tmp_path_factory) -> Path:
    """The reference: a plain run with one thread, as torchrun gives each process."""
    return helpers.reference_run(tmp_path_factory, lambda out: run_args(small_tasks, out))


@pytest.fixture(scope="module")
def two_processes(small_tasks, tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess]:
    return helpers.torchrun_job(tmp_path_factory, lambda out: run_args(small_tasks, out))


@pytest.mark.slow
def test_two_processes_learn_each_task_once_with_the_results_of_one(one_process, two_processes):
    out, job = two_processes
    assert job.returncode == 0, job.stderr[-3000:]
    assert read_csv(out / "result" / f"{METHOD}.csv") == read_csv(one_process / "result" / f"{METHOD}.csv")
    assert [row["task_name"] for row in read_csv(out / "result" / f"{METHOD}.csv")] == TASKS
    reference, weights = saved_weights(one_process), saved_weights(out)
    assert weights.keys() == reference.keys() == {f"{task}_{METHOD}.pt" for task in TASKS}
    for name, saved in weights.items():
        expected = reference[name]
        assert saved["state"].keys() == expected["state"].keys()
        assert all(torch.equal(saved["state"][key], expected["state"][key]) for key in saved["state"]), name
        assert (saved["history"], saved["best_acc"]) == (expected["history"], expected["best_acc"])
    for task in TASKS:  # learnt by exactly one process, each epoch once
        log = (out / "result" / task / f"{METHOD}.log").read_text()
        assert log.count("learnt by process ") == 1 and "of 2 on " in log
        assert log.count("epoch 1/1: train loss") == 1
    report = (out / "result" / "report.md").read_text()
    assert report == (one_process / "result" / "report.md").read_text()
    assert "all re-evaluated accuracies equal the recorded ones" in report
    assert job.stdout.count(report.splitlines()[0]) == 1  # printed by the leader alone
    assert not list((out / "weight").glob("*.resume.pt"))


def test_tasks_are_claimed_largest_first_and_each_once():
    order = distributed.largest_first([5, 9, 5, 7])
    assert order == [1, 3, 0, 2]  # ties keep run order
    store = dist.HashStore()
    first, second = distributed.claim(store, order), distributed.claim(store, order)
    drawn = [next(first), next(second), next(second), next(first)]
    assert drawn == order
    assert list(first) == [] and list(second) == []


def one_error_line(stderr: str) -> str:
    """The run's only error line, which must also be the last thing it wrote (progress bars share stderr)."""
    errors = [line for line in stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and stderr.strip().endswith(errors[0]), stderr
    return errors[0]


HOLD_LOCK = ("import sys, time; from pathlib import Path; from training.lock import run_lock\n"
             "with run_lock(Path(sys.argv[1])):\n    print('locked', flush=True); time.sleep(600)")


@pytest.mark.slow
def test_a_busy_weight_folder_is_refused_in_one_line_and_a_killed_holder_leaves_no_lock(small_tasks, one_process,
                                                                                         capsys):
    lock = Layout(one_process / "result", one_process / "weight").lock
    holder = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(lock)], cwd=REPO, stdout=subprocess.PIPE,
                              text=True)
    try:
        assert holder.stdout.readline() == "locked\n"
        assert main.main(run_args(small_tasks, one_process)) == 2
        error = one_error_line(capsys.readouterr().err)
        assert error.startswith("error: another run is using the weight folder")
        assert str(lock) in error and "another --weight folder" in error
    finally:
        holder.kill()  # SIGKILL: no clean-up runs
        holder.wait()
    assert main.main(run_args(small_tasks, one_process)) == 0
    assert capsys.readouterr().out.count("already done") == len(TASKS)


def test_balance_largest_first_beats_round_robin_and_respects_the_largest_task(capsys):
    costs = [10, 1, 1, 1, 1]
    assert balance.largest_first_loads(costs, 2) == [10, 4]  # the largest task sets the pace
    assert balance.round_robin_loads(costs, 2) == [12, 2]
    balance.main(["--processes", "2", "4", "8"])
    printed = capsys.readouterr().out
    rows = [line.split("|") for line in printed.splitlines() if "|" in line and line.split("|")[0].strip().isdigit()]
    assert [int(row[0]) for row in rows] == [2, 4, 8]
    for row in rows:
        greedy, round_robin, bound = (float(cell) for cell in row[1:4])
        assert bound <= greedy <= round_robin
    assert "53 tasks" in printed


def test_balance_counts_isolated_tasks_and_whole_sequences_as_units():
    tasks = [TaskInfo(order=k, task_id=k, name=name, class_num=2, train_num=train, val_num=10)
             for k, (name, train) in enumerate([("a", 90), ("b", 40)])]
    units = balance.unit_costs(tasks, ["Ghost_reduced_v1", "EWC"], seeds=2, epochs=3)
    assert units == [("Ghost_reduced_v1 seed 0 a", 300), ("Ghost_reduced_v1 seed 0 b", 150),
                     ("EWC seed 0", 450), ("Ghost_reduced_v1 seed 1 a", 300),
                     ("Ghost_reduced_v1 seed 1 b", 150), ("EWC seed 1", 450)]
    # two processes: each takes one sequence first, then the isolated tasks fill in, largest first
    assert balance.largest_first_loads([cost for _, cost in units], 2) == [900, 900]


@pytest.mark.parametrize("extra", [["--report"], ["--predict", "x.png", "--task", "shapes"]])
def test_report_and_predict_refuse_torchrun_and_training_any_method_goes_ahead(monkeypatch, extra):
    args = main.parse_args(["--data", "DATA", *extra])
    main.refuse_torchrun(main.mode_of(args))  # a plain run goes ahead
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(main.RunError, match="--report and --predict work in one process"):
        main.refuse_torchrun(main.mode_of(args))
    for method in ("Ghost_reduced_v1", "SGD", "PackNet"):  # isolated tasks and whole sequences are units of work
        main.refuse_torchrun(main.mode_of(main.parse_args(["--data", "DATA", "--method", method])))


def tuned_args(data: Path, out: Path) -> list[str]:
    """SGD with --tune on the small cut, its first task for tuning, one epoch, on the CPU."""
    return helpers.small_args(data, out, "SGD", "--tune", "--tune-tasks", "1", "--epochs", "1", "--device", "cpu")


@pytest.fixture(scope="module")
def tuned_one_process(small_tasks, tmp_path_factory) -> Path:
    return helpers.reference_run(tmp_path_factory, lambda out: tuned_args(small_tasks, out))


@pytest.fixture(scope="module")
def tuned_two_processes(small_tasks, tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess]:
    return helpers.torchrun_job(tmp_path_factory, lambda out: tuned_args(small_tasks, out))


@pytest.mark.slow
def test_a_tuning_is_spread_over_the_processes_with_the_choice_and_files_of_one(tuned_one_process,
                                                                                 tuned_two_processes):
    out, job = tuned_two_processes
    assert job.returncode == 0, job.stderr[-3000:]
    table, reference = (read_csv(folder / "result" / "tuning" / "SGD.csv") for folder in (out, tuned_one_process))
    assert [{k: v for k, v in row.items() if k != "seconds"} for row in table] == \
           [{k: v for k, v in row.items() if k != "seconds"} for row in reference]
    trials = [f"lr={row['lr']}" for row in table]
    assert len(trials) == 4
    for trial in trials:  # each configuration claimed by one process, once (matched up to the label's end)
        claims = re.findall(rf"takes SGD seed 0 tuning {re.escape(trial)}(?![\w.,=+-])", job.stdout + job.stderr)
        assert len(claims) == 1, trial
    assert read_csv(out / "result" / "SGD.csv") == read_csv(tuned_one_process / "result" / "SGD.csv")
    mine, theirs = (torch.load(folder / "weight" / "SGD_after_task.pt", weights_only=True)
                    for folder in (out, tuned_one_process))
    assert mine["backbone"].keys() == theirs["backbone"].keys()
    assert all(torch.equal(mine["backbone"][key], theirs["backbone"][key]) for key in mine["backbone"])


class RecordingStdout:
    """A stdout that records each write and flush it is given, as the pipe a torchrun job's processes share."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, ...]] = []

    def write(self, text: str) -> int:
        self.calls.append(("write", text))
        return len(text)

    def flush(self) -> None:
        self.calls.append(("flush",))


def test_each_log_line_reaches_stdout_whole_in_one_write_then_a_flush(monkeypatch):
    """A block-buffered stdout flushes at any byte, so two processes' lines could cut into each other (seen once: a
    claim line split in the middle of its label); one write of a whole line, flushed, reaches a pipe whole."""
    stdout = RecordingStdout()
    monkeypatch.setattr(sys, "stdout", stdout)
    handler = TqdmHandler()
    for label in ("SGD seed 0 tuning lr=0.0001", "EWC seed 1"):
        handler.emit(logging.LogRecord("clr", logging.INFO, __file__, 1, "rank 1 of 2 takes %s", (label,), None))
    assert [call for call in stdout.calls if call != ("write", "")] == [
        ("write", "rank 1 of 2 takes SGD seed 0 tuning lr=0.0001\n"), ("flush",),
        ("write", "rank 1 of 2 takes EWC seed 1\n"), ("flush",)]
