"""PackNet end to end on two small synthetic tasks: a flat accuracy matrix, frozen weights that stay bit for bit,
the bytes and parameters each task keeps, resume after a kill in either phase (each with its own metrics file), a
backbone that runs out of free weights, and the refusal under torchrun."""
import math
from pathlib import Path

import pytest
import torch
from torch import nn

import main
from continual.packnet import FREE, MASK_PREFIX, PackNet, smallest
from network import load_backbone, unpack_bits
from tests.helpers import SMALL_TASKS, Kill, assert_same_states, read_csv, saved_states, small_args
from training.metrics import read_epochs
from training.settings import Layout

TWO = SMALL_TASKS[:2]


def packnet_args(small_tasks: Path, out: Path, *extra: str) -> list[str]:
    """One epoch of training and two of retraining per task: calls 1-3 of train_one_epoch are the first task's."""
    return small_args(small_tasks, out, "PackNet", "--tasks", *TWO, "--epochs", "1",
                                   "--packnet-retrain-epochs", "2", *extra)


@pytest.fixture(scope="module")
def reference(small_tasks, tmp_path_factory) -> tuple[Path, dict]:
    """An uninterrupted run, and the conv weights and owners as the first task left them."""
    out, after_first = tmp_path_factory.mktemp("packnet"), {}
    real = PackNet.before_task

    def before_task(self, model, task_data):
        if task_data.position == 1:
            after_first["weights"] = {name: p.detach().clone() for name, p in model.named_parameters()
                                      if name.endswith("conv.weight")}
            after_first["owners"] = {name: owners.clone() for name, owners in self.owners.items()}
        real(self, model, task_data)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(PackNet, "before_task", before_task)
        assert main.main(packnet_args(small_tasks, out)) == 0
    return out, after_first


def after_task_state(out: Path) -> dict:
    return torch.load(out / "weight" / "PackNet_after_task.pt", weights_only=True)


@pytest.mark.slow
def test_matrix_is_flat_and_earlier_weights_stay_bit_for_bit(reference):
    out, after_first = reference
    rows = read_csv(out / "result" / "PackNet_matrix.csv")
    assert rows[1][TWO[0]] == rows[0][TWO[0]]  # R[T][i] == R[i][i], as written
    saved = after_task_state(out)
    changed = 0
    for name, before in after_first["weights"].items():
        layer = name.removesuffix(".conv.weight")
        owners, now = saved["method"]["owners"][layer], saved["backbone"][name]
        frozen = after_first["owners"][layer] <= 1  # the backbone's and the first task's
        assert torch.equal(owners[frozen], after_first["owners"][layer][frozen])
        assert torch.equal(now[frozen], before[frozen].cpu()), name
        assert (now[owners == FREE] == 0).all()  # pruned back to the pool at zero
        changed += int((now[owners == 2] != 0).sum())
    assert changed > 0  # the second task did train weights of its own
    assert all((owners == 1).any() for owners in after_first["owners"].values())


@pytest.mark.slow
def test_each_task_keeps_its_mask_bn_and_head(reference):
    out, _ = reference
    resnet = load_backbone("resnet18", "none")
    convs = {name: m.weight.numel() for name, m in resnet.named_modules() if isinstance(m, nn.Conv2d)}
    channels = sum(m.num_features for m in resnet.modules() if isinstance(m, nn.BatchNorm2d))
    owners = after_task_state(out)["method"]["owners"]
    assert set(owners) == set(convs) and len(convs) == 20  # every conv: the stem and the downsamples too
    states = saved_states(out)
    for position, task in enumerate(TWO):
        record = states[f"{task}_PackNet.pt"]
        classes, state = record["config"]["num_classes"], record["state"]
        masks = {key.removeprefix(MASK_PREFIX): t for key, t in state.items() if key.startswith(MASK_PREFIX)}
        assert set(masks) == set(convs)
        owned = 0
        for name, numel in convs.items():
            assert masks[name].dtype == torch.uint8 and masks[name].numel() == math.ceil(numel / 8)
            mine = unpack_bits(masks[name], owners[name].shape)
            assert torch.equal(mine, owners[name] == position + 1)
            owned += int(mine.sum())
        head = 512 * classes + classes
        assert len(state) == 2 + 4 * 20 + len(convs)  # head, four tensors per BN, a mask per conv
        assert record["stored_bytes"] == 4 * head + 4 * 4 * channels + sum(math.ceil(n / 8) for n in convs.values())
        assert record["trainable_params"] == owned + 2 * channels + head
        assert owned > 0


@pytest.mark.slow
def test_killed_in_either_phase_and_resumed_gives_the_same_files(small_tasks, reference, tmp_path, monkeypatch):
    def resume_points() -> list[str]:
        return sorted(path.name for path in (tmp_path / "weight").glob("*resume.pt"))

    kill = Kill(monkeypatch, at_call=4)  # the second task's training: it starts again from the first's state
    assert main.main(packnet_args(small_tasks, tmp_path)) == 130
    assert resume_points() == []
    kill.disarm()
    kill = Kill(monkeypatch, at_call=3)  # its training again, then its retraining's first and second epoch
    assert main.main(packnet_args(small_tasks, tmp_path)) == 130
    assert resume_points() == [f"{TWO[1]}_PackNet.phase2.resume.pt", f"{TWO[1]}_PackNet.resume.pt"]
    kill.disarm()
    assert main.main(packnet_args(small_tasks, tmp_path)) == 0
    assert resume_points() == []
    out, _ = reference
    for name in ("PackNet_matrix.csv", "PackNet.csv"):
        assert (tmp_path / "result" / name).read_text() == (out / "result" / name).read_text()
    for task in TWO:
        for phase, epochs in (("PackNet", 1), ("PackNet.phase2", 2)):  # each pass's own metrics, each epoch once
            resumed, uninterrupted = (read_epochs(Layout(folder / "result", folder / "weight").metrics(task, phase))
                                      for folder in (tmp_path, out))
            assert [(e["epoch"], e["loss"], e["val_acc"], e["lr"]) for e in resumed] \
                == [(e["epoch"], e["loss"], e["val_acc"], e["lr"]) for e in uninterrupted]
            assert [e["epoch"] for e in resumed] == list(range(1, epochs + 1))
    resumed, uninterrupted = saved_states(tmp_path), saved_states(out)
    mine, theirs = (states.pop("PackNet_after_task.pt") for states in (resumed, uninterrupted))
    assert_same_states(resumed, uninterrupted)
    for a, b in ((mine["backbone"], theirs["backbone"]), (mine["method"]["owners"], theirs["method"]["owners"])):
        assert a.keys() == b.keys() and all(torch.equal(a[key], b[key]) for key in a)


@pytest.mark.slow
def test_a_task_without_free_weights_warns_and_still_finishes(small_tasks, tmp_path, capsys):
    no_free = ["--tasks", TWO[0], "--epochs", "1", "--packnet-keep", "1", "--packnet-retrain-epochs", "0"]
    assert main.main(small_args(small_tasks, tmp_path, "PackNet", *no_free)) == 0
    note = f"PackNet: task {TWO[0]} keeps no weights of its own in 20 conv(s) (conv1, layer1.0.conv1,"
    assert note in capsys.readouterr().out  # the printed summary
    log = (tmp_path / "result" / TWO[0] / "PackNet.log").read_text()
    assert f"PackNet: {TWO[0]} trains the 0.00% of the conv weights that are free" in log
    assert note in log
    record = torch.load(tmp_path / "weight" / f"{TWO[0]}_PackNet.pt", weights_only=True)
    assert record["best_acc"] > 0 and record["trainable_params"] == 2 * 4800 + 512 * 5 + 5  # BN and head only


def test_the_smallest_weights_are_picked_with_ties_broken_by_position():
    weight = torch.tensor([[0.5, -0.1, 0.1, 0.3], [0.1, -2.0, 0.0, 0.1]])
    candidates = torch.ones_like(weight, dtype=torch.bool)
    candidates[1, 2] = False  # the 0.0 is another owner's
    assert smallest(weight, candidates, 0.5).tolist() == [[False, True, True, False], [True, False, False, True]]
    assert smallest(weight, candidates, 0.3).tolist() == [[False, True, True, False], [False] * 4]  # round(2.1)
    assert not smallest(weight, candidates, 0).any() and torch.equal(smallest(weight, candidates, 1), candidates)


def test_degenerate_fractions_are_refused_in_one_line(small_tasks, tmp_path, capsys):
    """A keep of 0 would throw the pretrained backbone away, a prune of 1 would leave a task no weights of its own."""
    for option, value, expected in (("--packnet-keep", "1.5", "(0, 1]"), ("--packnet-keep", "0", "(0, 1]"),
                                    ("--packnet-prune", "1", "[0, 1)")):
        with pytest.raises(SystemExit) as stopped:
            main.main(packnet_args(small_tasks, tmp_path, option, value))
        assert stopped.value.code == 2
        assert capsys.readouterr().err == (f"error: argument {option}: must be in {expected}, got {value} "
                                           "(see --help)\n")