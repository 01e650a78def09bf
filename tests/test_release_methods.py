"""The release's other methods through main.py: they learn, verify, resume bit-identically, imply their arch."""
from pathlib import Path

import pytest

import main
import training.loop
from tests.helpers import TASKS, Kill, assert_same_states, read_csv, run_args, saved_states

# method -> the option it implies, left out of the command line to show that the method supplies it
IMPLIED = {"li18": ("--arch", "resnet18"), "Ghost_a": None, "Resnet_Scratch": ("--weights", "none")}
# method -> tensors in its norm penalty on resnet18: 20 (adapters | depthwise kernels | conv weights), the
# affine pair of each of the 20 BNs where BN trains, the head's two; never Ghost_a's 20 gates
PENALISED = {"li18": 20 + 2, "Ghost_a": 20 + 2 * 20 + 2, "Resnet_Scratch": 20 + 2 * 20 + 2}


def method_args(data: Path, out: Path, method: str, *extra: str) -> list[str]:
    args = run_args(data, out, "--tasks", TASKS[0], "--method", method, *extra)
    if IMPLIED[method]:
        start = args.index(IMPLIED[method][0])
        del args[start:start + 2]
    return args


class PenaltyRecorder:
    """Record the shapes of the tensors train_one_epoch puts in the norm penalty."""

    def __init__(self, monkeypatch):
        self.shapes: set[tuple[tuple[int, ...], ...]] = set()
        self.real = training.loop.l2_norm_penalty
        monkeypatch.setattr(training.loop, "l2_norm_penalty", self)

    def __call__(self, params):
        self.shapes.add(tuple(tuple(p.shape) for p in params))
        return self.real(params)


def check_learnt(out: Path, method: str, penalty: PenaltyRecorder) -> None:
    """The task's row, weights and verified report are there, made with the implied settings and penalty."""
    [row] = read_csv(out / "result" / f"{method}.csv")
    [saved] = saved_states(out).values()
    assert row["task_name"] == TASKS[0] and float(row["best_acc"]) == saved["best_acc"] > 0
    assert (saved["config"]["method"], saved["config"]["arch"], saved["config"]["backbone"]) == (
        method, "resnet18", "none:seed0")
    report = (out / "result" / "report.md").read_text()
    assert report.startswith(f"# Per-task results: {method}, 1 task(s)")
    assert f"- **{method}** (isolated per-task state; resnet18, backbone none:seed0, 32 px)" in report
    assert ("1 task(s) re-loaded onto a freshly built backbone and re-evaluated on their validation split: "
            "all re-evaluated accuracies equal the recorded ones") in report
    [penalised] = penalty.shapes
    gates = [shape for shape in penalised if len(shape) == 4 and shape[0] == 1]
    assert gates == [] and len(penalised) == PENALISED[method]


@pytest.mark.slow
@pytest.mark.parametrize("method", ["li18", "Resnet_Scratch"])
def test_release_method_learns_and_verifies(data, tmp_path, monkeypatch, method):
    penalty = PenaltyRecorder(monkeypatch)
    assert main.main(method_args(data, tmp_path, method, "--epochs", "1")) == 0
    check_learnt(tmp_path, method, penalty)


@pytest.mark.slow
def test_gated_clr_learns_and_resumes_bit_identically(data, tmp_path, monkeypatch):
    whole, resumed = tmp_path / "whole", tmp_path / "resumed"
    penalty = PenaltyRecorder(monkeypatch)
    assert main.main(method_args(data, whole, "Ghost_a")) == 0
    check_learnt(whole, "Ghost_a", penalty)
    kill = Kill(monkeypatch, at_call=2)
    assert main.main(method_args(data, resumed, "Ghost_a", "--cache-dir", str(whole / "cache"))) == 130
    kill.disarm()
    assert main.main(method_args(data, resumed, "Ghost_a", "--cache-dir", str(whole / "cache"))) == 0
    assert read_csv(resumed / "result" / "Ghost_a.csv") == read_csv(whole / "result" / "Ghost_a.csv")
    assert_same_states(saved_states(resumed), saved_states(whole))


def test_a_method_refuses_another_arch_in_one_line(capsys):
    with pytest.raises(SystemExit) as exit_:
        main.main(["--method", "li50", "--arch", "resnet18"])
    assert exit_.value.code == 2
    assert capsys.readouterr().err == ("error: --method li50 means --arch resnet50, not resnet18: leave --arch out "
                                       "or pass --arch resnet50 (see --help)\n")
