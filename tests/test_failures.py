"""Every failure ends in one line and a state the rerun can use: a full disk under --weight or --result, a
non-finite loss found within a few steps and written to the task's log, SIGTERM, and bad method options."""
import errno
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import matplotlib.figure
import pytest

import main
import training.loop
from common.console import TransientBar, print_stop_line
from common.errors import DatasetError
from tests.helpers import TASKS, read_csv, run_args

REPO = Path(__file__).resolve().parent.parent
METHOD = "Ghost_reduced_v1"


def one_error(stderr: str) -> str:
    errors = [line for line in stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and stderr.strip().endswith(errors[0]), stderr
    return errors[0]


def no_space() -> OSError:
    return OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def fill_disk_when_writing(monkeypatch, name_part: str) -> None:
    """Writes of files whose name contains ``name_part`` write half their bytes, then fail as a full disk does;
    every other write goes through."""
    real_bytes, real_text, real_savefig = Path.write_bytes, Path.write_text, matplotlib.figure.Figure.savefig

    def write_bytes(path: Path, data) -> int:
        if name_part not in path.name:
            return real_bytes(path, data)
        real_bytes(path, bytes(data)[:len(data) // 2])
        raise no_space()

    def write_text(path: Path, text: str, *args, **kwargs) -> int:
        if name_part not in path.name:
            return real_text(path, text, *args, **kwargs)
        real_text(path, text[:len(text) // 2])
        raise no_space()

    def savefig(figure, target, *args, **kwargs) -> None:
        if name_part not in Path(target).name:
            return real_savefig(figure, target, *args, **kwargs)
        Path(target).write_bytes(b"\x89PNG half")
        raise no_space()

    monkeypatch.setattr(Path, "write_bytes", write_bytes)
    monkeypatch.setattr(Path, "write_text", write_text)
    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", savefig)


def left_behind(out: Path) -> list[str]:
    return sorted(p.name for p in out.rglob(".*.tmp"))


@pytest.mark.slow
@pytest.mark.parametrize("name_part, folder", [
    (".resume.pt", "weight"), (f"{TASKS[0]}_{METHOD}.pt", "weight"), ("manifest.csv", "result"),
    (f"{METHOD}.csv", "result"), ("report.md", "result"), ("per_task_accuracy.png", "result"),
    ("metrics.jsonl", "result"),
], ids=["resume-point", "task-record", "manifest", "results-csv", "report", "figure", "metrics"])
def test_a_full_disk_is_one_line_naming_the_file_and_the_rerun_continues(data, tmp_path, monkeypatch, capsys,
                                                                          name_part, folder):
    args = run_args(data, tmp_path, "--tasks", TASKS[0], "--epochs", "1", "--image-size", "16")
    with monkeypatch.context() as patched:
        fill_disk_when_writing(patched, name_part)
        assert main.main(args) == 2
    error = one_error(capsys.readouterr().err)
    assert error.startswith(f"error: cannot write {tmp_path / folder}") and name_part in error
    assert error.endswith(": No space left on device; nothing half-written was left. Free some space (or choose "
                          "another folder) and rerun the same command")
    assert left_behind(tmp_path) == []
    assert main.main(args) == 0  # with space again, the same command finishes the work
    [row] = read_csv(tmp_path / "result" / f"{METHOD}.csv")
    assert row["task_name"] == TASKS[0] and (tmp_path / "result" / "report.md").is_file()


@pytest.mark.slow
@pytest.mark.parametrize("folder", ["cache", "anchors"])
def test_a_full_disk_for_the_cache_or_an_anchor_is_only_a_warning(data, tmp_path, monkeypatch, capsys, folder):
    """Either only costs a later run some time (a decode, a refit), so the run goes on without it."""
    real = Path.write_bytes

    def write_bytes(path: Path, data_bytes) -> int:
        if folder in path.parts:
            raise no_space()
        return real(path, data_bytes)

    monkeypatch.setattr(Path, "write_bytes", write_bytes)
    assert main.main(run_args(data, tmp_path, "--tasks", TASKS[0], "--epochs", "1", "--image-size", "16")) == 0
    warning = next(line for line in capsys.readouterr().err.splitlines() if line.startswith("warning: "))
    assert str(tmp_path / ("cache" if folder == "cache" else "weight/anchors")) in warning
    assert "No space left on device" in warning
    assert left_behind(tmp_path) == []


@pytest.mark.slow
def test_a_nan_mid_epoch_stops_within_a_few_steps_and_is_in_the_task_log(data, tmp_path, monkeypatch, capsys):
    real, calls = training.loop.l2_norm_penalty, []

    def nan_from_step_three(params):
        calls.append(1)
        penalty = real(params)
        return penalty * float("nan") if len(calls) >= 3 else penalty

    monkeypatch.setattr(training.loop, "l2_norm_penalty", nan_from_step_three)
    assert main.main(run_args(data, tmp_path, "--tasks", TASKS[0], "--image-size", "16")) == 2
    error = one_error(capsys.readouterr().err)
    assert error.startswith(f"error: task {TASKS[0]}: the training loss became nan by step "
                            f"{training.loop.CHECK_EVERY} in epoch 1, so the task stopped and saved no weights")
    assert len(calls) == training.loop.CHECK_EVERY < 11  # the task has 11 batches: the epoch did not finish
    log = (tmp_path / "result" / TASKS[0] / f"{METHOD}.log").read_text()
    assert log.splitlines()[-1].endswith(error)


def test_bad_method_options_are_refused_in_one_line(data, tmp_path, capsys):
    with pytest.raises(SystemExit) as stopped:
        main.main(run_args(data, tmp_path, "--method", "LwF", "--lwf-temperature", "0"))
    assert stopped.value.code == 2
    assert capsys.readouterr().err == "error: argument --lwf-temperature: must be positive, got 0 (see --help)\n"
    for option in ("--ewc-lambda", "--ewc-gamma", "--lwf-alpha", "--er-per-task", "--er-batch-size"):
        with pytest.raises(SystemExit):
            main.main(run_args(data, tmp_path, option, "-1"))
        assert f"error: argument {option}: must be zero or more, got -1" in capsys.readouterr().err


@pytest.mark.slow
def test_sigterm_stops_with_one_line_and_the_rerun_resumes(data, tmp_path):
    args = [sys.executable, str(REPO / "main.py"), *run_args(data, tmp_path, "--tasks", TASKS[0], "--epochs", "8")]
    run = subprocess.Popen(args, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    resume = tmp_path / "weight" / f"{TASKS[0]}_{METHOD}.resume.pt"
    deadline = time.monotonic() + 240
    while not resume.exists() and run.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    run.send_signal(signal.SIGTERM)
    _, stderr = run.communicate(timeout=120)
    assert run.returncode == 143
    assert stderr.strip().splitlines()[-1] == ("stopped by SIGTERM: rerun the same command to continue where it "
                                               "stopped")
    assert resume.exists() and left_behind(tmp_path) == []
    log = (tmp_path / "result" / TASKS[0] / f"{METHOD}.log").read_text()
    assert log.splitlines()[-1].endswith("stopped by SIGTERM: rerun the same command to continue where it stopped")
    rerun = subprocess.run(args, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stderr
    assert f"resuming {TASKS[0]} after epoch" in rerun.stdout


def count_to(stop_at: int | None) -> None:
    """A loop under a transient bar that raises at step ``stop_at`` (None: runs to its end)."""
    for step in TransientBar(range(4), desc="counting"):
        if step == stop_at:
            raise DatasetError(f"step {step} failed")


def test_a_transient_bar_vanishes_at_its_end_and_keeps_its_line_when_an_error_stops_its_loop(capsys):
    """tqdm closes a bar while the error unwinds through its loop; a plain leave=False bar would then end in a
    carriage return, and the stop line would follow its text on the same line of a log file."""
    count_to(None)
    finished = capsys.readouterr().err
    assert "counting" in finished and finished.endswith("\r")  # erased: the next output overwrites it
    with pytest.raises(DatasetError) as stopped:
        count_to(2)
    print_stop_line(stopped.value)
    err = capsys.readouterr().err
    bar_line, stop = err.rstrip("\n").rsplit("\n", 1)
    assert "counting:  50%" in bar_line.rsplit("\r", 1)[-1] and stop == "error: step 2 failed"


def write_empty(root: Path, relative: bytes) -> None:
    """An empty file (sampling reads names only) at a path given as bytes, as a camera or another OS may name it."""
    path = os.fsencode(root) + b"/" + relative
    os.makedirs(os.path.dirname(path), exist_ok=True)
    os.close(os.open(path, os.O_CREAT | os.O_WRONLY))


@pytest.mark.parametrize("refused", [b"b/train/a/1.png", b"b/train/caf\xe9/1.png"],
                         ids=["one-class task", "not a UTF-8 name"])
def test_a_refused_task_stops_on_a_line_of_its_own_below_the_open_progress_bar(tmp_path, capsys, refused):
    """The second task is refused while the "sampling tasks" bar is on screen: the error line starts at column 0
    (after the bar's line ends), in captured output as in a log file."""
    for relative in (b"a/train/x/1.png", b"a/train/y/2.png", b"a/val/x/3.png", b"a/val/y/4.png", refused,
                     b"b/val/a/5.png"):
        write_empty(tmp_path / "mine", relative)
    out = tmp_path / "out"
    assert main.main(["--data", str(tmp_path / "mine"), "--arch", "resnet18", "--weights", "none", "--image-size", "32",
                      "--workers", "0", "--result", str(out / "result"), "--weight", str(out / "weight")]) == 2
    err = capsys.readouterr().err
    start = err.index("error: ")
    assert "sampling tasks" in err[:start] and err[start - 1] == "\n", err
    assert "task b" in one_error(err) or "is not a valid UTF-8 name" in one_error(err)
