"""Piggyback and SupSup: the masked conv, the two forms of a task's state and their cost, and both methods through
main.py (learn, verify, resume bit-identically)."""
import math
from pathlib import Path

import pytest
import torch
from torch import nn

import main
import training.isolated
from network import (build_model, load_backbone, load_task_state, parameter_cost, state_bytes, stored_state,
                     task_state)
from network.backbone import feature_extractor
from network.masks import MaskedConv, kept_count
from tests.helpers import SMALL_TASKS, Kill, assert_same_states, read_csv, run_args, saved_states, small_args
from training.record import TaskRecord


@pytest.fixture(scope="module")
def backbone() -> nn.Module:
    return load_backbone("resnet18", "none")


def masked_convs(model: nn.Module) -> dict[str, MaskedConv]:
    return {name: module for name, module in model.named_modules() if isinstance(module, MaskedConv)}


def test_forward_uses_the_hard_mask_and_the_gradient_reaches_the_scores():
    torch.manual_seed(0)
    conv = nn.Conv2d(2, 3, 3, padding=1, bias=False)
    scores = torch.randn_like(conv.weight)
    masked = MaskedConv(conv, scores.clone(), threshold=0.1)
    x = torch.randn(2, 2, 5, 5)
    out = masked(x)
    assert torch.equal(out, nn.functional.conv2d(x, conv.weight * (scores > 0.1), padding=1))
    out.sum().backward()
    # straight-through: d(sum)/d(mask) = d(sum)/d(weight * mask) * weight, passed to the scores unchanged
    effective = (conv.weight * (scores > 0.1)).detach().requires_grad_(True)
    nn.functional.conv2d(x, effective, padding=1).sum().backward()
    assert torch.equal(masked.scores.grad, effective.grad * conv.weight)
    assert (masked.scores.grad[scores <= 0.1] != 0).any()  # masked-out weights learn too


def test_top_k_keeps_exactly_k_per_layer(backbone):
    torch.manual_seed(0)
    model = build_model(backbone, "SupSup", 3, {"supsup_sparsity": 0.3})
    for module in masked_convs(model).values():
        numel = module.scores.numel()
        mask = module.mask()
        assert int(mask.sum()) == kept_count(numel, 0.3) == numel - int(0.7 * numel)
        smallest_kept = module.scores.abs()[mask].min()
        assert smallest_kept >= module.scores.abs()[~mask].max()


def test_signed_constant_init(backbone):
    torch.manual_seed(0)
    model = build_model(backbone, "SupSup", 3)
    originals = {name: module for name, module in backbone.named_modules() if isinstance(module, nn.Conv2d)}
    convs = masked_convs(model)
    assert convs.keys() == originals.keys()  # every conv, the downsample 1x1s included
    for name, module in convs.items():
        weight, original = module.conv.weight, originals[name].weight
        fan_in = original[0].numel()
        assert torch.equal(weight.abs(), torch.full_like(weight, math.sqrt(2) / math.sqrt(fan_in)))
        assert torch.equal(weight.sign(), original.sign())
    assert all(not module.affine and module.weight is None
               for module in model.modules() if isinstance(module, nn.BatchNorm2d))


def test_fresh_piggyback_computes_the_backbone(backbone):
    model = build_model(backbone, "Piggyback", 3)
    assert all(bool(module.mask().all()) for module in masked_convs(model).values())
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(model.pooled_features(x), feature_extractor(backbone)(x))


@pytest.mark.parametrize("method", ["Piggyback", "SupSup"])
def test_stored_mask_gives_back_the_same_model(backbone, method):
    """The record's mask bits, loaded onto a model built with the default options, compute what the trained
    scores computed, under both rules (Piggyback's scores perturbed so the mask is no longer all ones; SupSup
    trained at another sparsity)."""
    torch.manual_seed(0)
    trained = build_model(backbone, method, 3, {"supsup_sparsity": 0.2} if method == "SupSup" else None)
    with torch.no_grad():
        for module in masked_convs(trained).values():
            module.scores.add_(torch.randn_like(module.scores) * 0.01)
    x = torch.randn(2, 3, 32, 32)
    expected = trained(x)
    fresh = build_model(backbone, method, 3)
    load_task_state(fresh, stored_state(trained))
    assert torch.equal(fresh(x), expected)
    for name, module in masked_convs(fresh).items():
        assert torch.equal(module.mask(), masked_convs(trained)[name].mask())


@pytest.mark.parametrize("method", ["Piggyback", "SupSup"])
def test_cost_and_bytes_per_task(backbone, method):
    model = build_model(backbone, method, 3)
    convs = [m for m in backbone.modules() if isinstance(m, nn.Conv2d)]
    bns = [m for m in backbone.modules() if isinstance(m, nn.BatchNorm2d)]
    channels = sum(bn.num_features for bn in bns)
    head = 512 * 3 + 3
    affine = 2 * channels if method == "Piggyback" else 0  # SupSup's BN is non-affine
    scores = sum(conv.weight.numel() for conv in convs)
    cost = parameter_cost(model)
    assert (cost.trainable, cost.head) == (scores + affine + head, head)
    stored = stored_state(model)
    assert state_bytes(stored) == sum(math.ceil(c.weight.numel() / 8) for c in convs) + 4 * (
        affine + 2 * channels + head)
    assert state_bytes(task_state(model)) == 4 * (scores + affine + 2 * channels + head)
    assert all(stored[f"{name}.mask_bits"].dtype == torch.uint8 for name in masked_convs(model))
    assert len(model.penalised_parameters()) == (2 * len(bns) if method == "Piggyback" else 0) + 2


OPTION = {"Piggyback": ("--piggyback-threshold", "0.009"), "SupSup": ("--supsup-sparsity", "0.4")}


TASKS = SMALL_TASKS[:2]


def mask_args(small_tasks: Path, out: Path, method: str) -> list[str]:
    """Two task folders, 16 px, a few images per class: the task-folder layout, small enough to train thrice."""
    args = small_args(small_tasks, out, method, "--tasks", *TASKS, *OPTION[method])
    if method == "SupSup":  # the method implies --weights none
        start = args.index("--weights")
        del args[start:start + 2]
    return args


class LookBack:
    """After the second task is learnt, re-evaluate the first from its record: (correct now, recorded)."""

    def __init__(self, monkeypatch):
        self.real, self.found = training.isolated.train_isolated_task, None
        monkeypatch.setattr(training.isolated, "train_isolated_task", self)

    def __call__(self, ctx, sample):
        record = self.real(ctx, sample)
        if sample.task.name == TASKS[1]:
            first = ctx.source.sample(next(task for task in ctx.source.tasks if task.name == TASKS[0]))
            earlier = TaskRecord.load(ctx.weight_path(first.task))
            self.found = (training.isolated.verify_task(ctx, first, earlier), earlier.best_correct)
        return record


@pytest.fixture(scope="module")
def whole_runs(small_tasks, tmp_path_factory) -> dict[str, tuple[Path, tuple[int, int]]]:
    """One uninterrupted run of each method: its output folder, and the first task re-evaluated from its record
    after the second was learnt, with its recorded count."""
    runs = {}
    with pytest.MonkeyPatch.context() as monkeypatch:
        for method in OPTION:
            look_back, out = LookBack(monkeypatch), tmp_path_factory.mktemp(method)
            assert main.main(mask_args(small_tasks, out, method)) == 0
            runs[method] = (out, look_back.found)
            monkeypatch.undo()
    return runs


@pytest.mark.slow
@pytest.mark.parametrize("method", ["Piggyback", "SupSup"])
def test_method_learns_and_verifies(whole_runs, method):
    whole, (recomputed, recorded) = whole_runs[method]
    assert recomputed == recorded  # the first task is untouched by the second
    records = saved_states(whole)
    assert len(records) == 2 and [row["task_name"] for row in read_csv(whole / "result" / f"{method}.csv")] == TASKS
    option = OPTION[method][0].removeprefix("--").replace("-", "_")
    for record in records.values():
        assert not any(key.endswith(".scores") for key in record["state"])
        assert record["stored_bytes"] == state_bytes(record["state"])
        assert record["config"]["backbone"] == "none:seed0" and record["config"][option] == float(OPTION[method][1])
    assert ("2 task(s) re-loaded onto a freshly built backbone and re-evaluated on their validation split: "
            "all re-evaluated accuracies equal the recorded ones") in (whole / "result" / "report.md").read_text()


@pytest.mark.slow
def test_killed_and_resumed_run_is_bit_identical(small_tasks, whole_runs, tmp_path, monkeypatch):
    """Piggyback's scores train at their own rate in a second Adam group: the resume point must bring back both
    (SupSup resumes through the same training form of the state)."""
    kill = Kill(monkeypatch, at_call=4)  # the second task's second epoch: it resumes from its first
    assert main.main(mask_args(small_tasks, tmp_path, "Piggyback")) == 130
    kill.disarm()
    assert main.main(mask_args(small_tasks, tmp_path, "Piggyback")) == 0
    assert_same_states(saved_states(tmp_path), saved_states(whole_runs["Piggyback"][0]))


def test_supsup_refuses_pretrained_weights(data, tmp_path, capsys):
    with pytest.raises(SystemExit) as stopped:
        main.main(run_args(data, tmp_path, "--method", "SupSup", "--weights", "imagenet"))
    assert stopped.value.code == 2
    assert capsys.readouterr().err == ("error: --method SupSup means --weights none, not imagenet: leave --weights "
                                       "out or pass --weights none (see --help)\n")
