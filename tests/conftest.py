"""What the test modules share: one synthetic DCT dataset for the whole session, main.py's options for a small
run on it, and helpers that read a run's outputs or interrupt it."""
import csv
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import main
import training.fit
from dataset.synthetic import DEMO_TASKS, write_synthetic_dct

REPO = Path(__file__).resolve().parent.parent

TASKS = list(DEMO_TASKS[:2])  # the small runs' tasks


@pytest.fixture(scope="session")
def dct(tmp_path_factory) -> Path:
    """The synthetic DCT-format data (seed 0), written once; tests that change data copy it first."""
    root = tmp_path_factory.mktemp("dct") / "DATA"
    write_synthetic_dct(root, seed=0)
    return root


@pytest.fixture(scope="session")
def data(dct) -> Path:
    """The same folder under the name most tests use; a module may override ``data`` with data of its own."""
    return dct


def run_args(data: Path, out: Path, *extra: str) -> list[str]:
    """main.py's options for a small CLR run: resnet18 from a random init, 32 px, 2 epochs, two tasks."""
    return ["--data", str(data), "--stat", str(data / "stat.csv"), "--tasks", *TASKS, "--arch", "resnet18",
            "--weights", "none", "--image-size", "32", "--epochs", "2", "--workers", "0",
            "--result", str(out / "result"), "--weight", str(out / "weight"), "--cache-dir", str(out / "cache"),
            *extra]


def one_thread_main(argv: list[str]) -> int:
    """main.main with one thread, as torchrun gives each process (OMP_NUM_THREADS=1): the reference a job's files
    must equal, since CPU arithmetic can depend on the thread count."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return main.main(argv)
    finally:
        torch.set_num_threads(threads)


def reference_run(tmp_path_factory, argv_of) -> Path:
    """A fresh folder ``out`` with a one-thread plain run of ``argv_of(out)`` in it: a test module's reference for
    what a torchrun job must reproduce."""
    out = tmp_path_factory.mktemp("one")
    assert one_thread_main(argv_of(out)) == 0
    return out


def torchrun_job(tmp_path_factory, argv_of) -> tuple[Path, subprocess.CompletedProcess]:
    """A fresh folder with main.py run as a torchrun job of two processes on this machine, and the job."""
    out = tmp_path_factory.mktemp("two")
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
               str(REPO / "main.py"), *argv_of(out)]
    return out, subprocess.run(command, cwd=out, capture_output=True, text=True, timeout=900)


def read_csv(path: Path) -> list[dict]:
    with path.open(newline="") as file:
        return list(csv.DictReader(file))


def tensors_in(value) -> list[torch.Tensor]:
    """Every tensor in a nest of dicts, lists and tuples."""
    if isinstance(value, torch.Tensor):
        return [value]
    if isinstance(value, dict):
        value = list(value.values())
    if isinstance(value, (list, tuple)):
        return [t for item in value for t in tensors_in(item)]
    return []


def saved_states(out: Path) -> dict[str, dict]:
    return {p.name: torch.load(p, weights_only=True) for p in sorted((out / "weight").glob("*.pt"))}


def assert_same_states(a: dict[str, dict], b: dict[str, dict]) -> None:
    assert a.keys() == b.keys()
    for name in a:
        assert a[name]["state"].keys() == b[name]["state"].keys()
        for key in a[name]["state"]:
            assert torch.equal(a[name]["state"][key], b[name]["state"][key]), (name, key)


class Kill:
    """Make the n-th training epoch of the run raise KeyboardInterrupt, as Ctrl-C would (every method trains
    through training.fit)."""

    def __init__(self, monkeypatch, at_call: int):
        self.calls, self.at_call = 0, at_call
        self.real = training.fit.train_one_epoch
        self.monkeypatch = monkeypatch
        monkeypatch.setattr(training.fit, "train_one_epoch", self)

    def __call__(self, *args, **kwargs):
        self.calls += 1
        if self.calls == self.at_call:
            raise KeyboardInterrupt
        return self.real(*args, **kwargs)

    def disarm(self) -> None:
        self.monkeypatch.setattr(training.fit, "train_one_epoch", self.real)
