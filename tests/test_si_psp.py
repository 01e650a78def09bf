"""SI and PSP: SI's importance against a hand computation, PSP's context conv against the paper's y = W (c ⊙ x) on
each patch and its contexts, what each task's weights file holds and counts, and both end to end, killed and resumed
(on the small cut of the demo tasks, so a whole backbone trains in seconds)."""
import math
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import main
from continual.psp import PSP, ContextConv
from continual.si import SI
from network import load_backbone, state_bytes, unpack_bits
from tests.helpers import SMALL_TASKS, Kill, matrix_of, read_csv, small_args
from training.settings import Recipe

TASKS = SMALL_TASKS[:2]
METHODS = ("SI", "PSP")


def two_tasks(small_tasks, out, method: str) -> list[str]:
    return small_args(small_tasks, out, method, "--tasks", *TASKS)


@pytest.fixture(scope="module")
def runs(small_tasks, tmp_path_factory) -> dict:
    """One uninterrupted run of each method: its output folder."""
    outs = {method: tmp_path_factory.mktemp(method) for method in METHODS}
    for method, out in outs.items():
        assert main.main(two_tasks(small_tasks, out, method)) == 0
    return outs


def one_weight_model(values: list[float]):
    """A 'model' of one backbone tensor, as SI sees a MultiHeadModel."""
    weight = nn.Parameter(torch.tensor(values))
    return weight, SimpleNamespace(named_parameters=lambda: [("w", weight)],
                                   backbone_named_parameters=lambda: [("w", weight)], heads=nn.ModuleList())


def test_si_importance_is_the_path_integral_of_the_task_loss():
    si = SI(SimpleNamespace(device=torch.device("cpu"), options={"si_c": 0.5, "si_xi": 0.1}, shared_bn="drift"))
    weight, model = one_weight_model([1.0, -2.0])
    target = torch.tensor([3.0, 0.5])
    optimizer = torch.optim.SGD([weight], lr=0.1)
    si.before_task(model, SimpleNamespace(position=0))
    for _ in range(3):  # loss |w - t|^2: g = 2 (w - t), and plain SGD shrinks w - t by 1 - 2 lr = 0.8 a step
        optimizer.zero_grad()
        ((weight - target) ** 2).sum().backward()
        optimizer.step()
        si.after_step(model)
    si.after_task(model, SimpleNamespace(position=0))
    start_gap = torch.tensor([1.0 - 3.0, -2.0 - 0.5])
    path = 0.1 * 4 * start_gap ** 2 * (1 + 0.8 ** 2 + 0.8 ** 4)  # -sum g dw = lr sum g^2
    change = (0.8 ** 3 - 1) * start_gap
    torch.testing.assert_close(si.importance["w"], path / (change ** 2 + 0.1), rtol=1e-6, atol=0)

    # the second task trains with SI's penalty, but omega follows the task's own loss only
    importance, anchor = si.importance["w"].clone(), weight.detach().clone()
    si.before_task(model, SimpleNamespace(position=1))
    target, recorded = torch.tensor([-1.0, 2.0]), torch.zeros(2)
    for _ in range(3):
        before = weight.detach().clone()
        optimizer.zero_grad()
        (((weight - target) ** 2).sum() + 0.5 * (importance * (weight - anchor) ** 2).sum()).backward()
        optimizer.step()
        si.after_step(model)
        recorded -= 2 * (before - target) * (weight.detach() - before)
    torch.testing.assert_close(si.path["w"], recorded, rtol=1e-6, atol=1e-7)


def test_context_conv_is_the_paper_linear_map_on_each_patch():
    torch.manual_seed(0)
    conv = nn.Conv2d(3, 4, 3, stride=2, padding=1, bias=True)
    images = torch.randn(2, 3, 9, 9)
    superposed = ContextConv(conv)
    assert superposed.weight is conv.weight and superposed.bias is conv.bias
    assert torch.equal(superposed(images), conv(images))  # the all-ones context is the plain conv
    context = torch.randint(0, 2, (3, 3, 3)) * 2 - 1
    superposed.context.copy_(context)
    patches = F.unfold(images, 3, padding=1, stride=2)  # (batch, 3*3*3, positions): the input x of the linear map
    expected = conv.weight.reshape(4, -1) @ (context.reshape(-1, 1) * patches) + conv.bias[:, None]
    torch.testing.assert_close(superposed(images), expected.reshape(2, 4, 5, 5))


def psp_model(seed: int = 0):
    psp = PSP(SimpleNamespace(backbone=load_backbone("resnet18", "none"), recipe=Recipe(seed=seed),
                              shared_bn="per-task"))
    return psp, psp.build_model()


def test_psp_contexts_are_seeded_per_task_and_keep_torchvision_names():
    psp, model = psp_model()
    plain = load_backbone("resnet18", "none")
    assert {name for name, _ in model.named_parameters()} == {n for n, _ in plain.named_parameters()} - {
        "fc.weight", "fc.bias"}
    first, second = psp.contexts(model, 0), psp.contexts(model, 1)
    assert len(first) == sum(isinstance(m, nn.Conv2d) for m in plain.modules()) == 20
    assert all(set(c.unique().tolist()) == {-1, 1} for c in first.values())
    assert first["layer1.0.conv1"].shape == (64, 3, 3)
    assert not torch.equal(first["layer1.0.conv1"], second["layer1.0.conv1"])
    again = psp_model()[0].contexts(model, 1)  # a rerun draws the same
    assert all(torch.equal(again[name], second[name]) for name in second)
    psp.use_context(model, 1)
    assert torch.equal(model.get_submodule("layer4.1.conv2").context, second["layer4.1.conv2"].float())


@pytest.mark.slow
@pytest.mark.parametrize("method", METHODS)
def test_matrix_csv_and_weights_files_agree(runs, method):
    out = runs[method]
    matrix = matrix_of(out, method, TASKS)
    assert [float(row["best_acc"]) for row in read_csv(out / "result" / f"{method}.csv")] == matrix[-1]
    for t, task in enumerate(TASKS):
        saved = torch.load(out / "weight" / f"{task}_{method}.pt", weights_only=True)
        assert saved["best_acc"] == matrix[t][t] == saved["best_correct"] / saved["val_images"]
        assert saved["shared_backbone"] is True and len(saved["history"]) == 2
    assert not list((out / "weight").glob("*.resume.pt"))


@pytest.mark.slow
def test_what_each_task_stores(runs):
    si = torch.load(runs["SI"] / "weight" / f"{TASKS[0]}_SI.pt", weights_only=True)
    assert sorted(si["state"]) == ["fc.bias", "fc.weight"]
    head = 5 * 512 + 5  # five classes on resnet18's 512 features
    assert si["trainable_params"] == head and si["stored_bytes"] == 4 * head
    psp, model = psp_model()
    bn = [m.num_features for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    bits = [c.context.numel() for c in model.modules() if isinstance(c, ContextConv)]
    for position, task in enumerate(TASKS):
        saved = torch.load(runs["PSP"] / "weight" / f"{task}_PSP.pt", weights_only=True)
        state = saved["state"]
        assert len(state) == 2 + 4 * len(bn) + len(bits)  # head, BN affine and statistics, one context per conv
        assert saved["trainable_params"] == head + 2 * sum(bn)
        assert saved["stored_bytes"] == state_bytes(state) == 4 * (head + 4 * sum(bn)) + sum(
            math.ceil(b / 8) for b in bits)
        for name, context in psp.contexts(model, position).items():
            assert torch.equal(unpack_bits(state[f"{name}.context"], context.shape), context > 0)


@pytest.mark.slow
@pytest.mark.parametrize("method", METHODS)
def test_killed_and_resumed_run_is_bit_identical(small_tasks, runs, tmp_path, monkeypatch, method):
    kill = Kill(monkeypatch, at_call=4)  # the second task's second epoch
    assert main.main(two_tasks(small_tasks, tmp_path, method)) == 130
    resume = torch.load(tmp_path / "weight" / f"{TASKS[1]}_{method}.resume.pt", weights_only=True)
    assert ("method_state" in resume) == (method == "SI")  # only a method with hooks adds to the resume point
    kill.disarm()
    assert main.main(two_tasks(small_tasks, tmp_path, method)) == 0
    for name in (f"{method}_matrix.csv", f"{method}.csv"):
        assert (tmp_path / "result" / name).read_text() == (runs[method] / "result" / name).read_text()
    for task in TASKS:
        resumed = torch.load(tmp_path / "weight" / f"{task}_{method}.pt", weights_only=True)["state"]
        reference = torch.load(runs[method] / "weight" / f"{task}_{method}.pt", weights_only=True)["state"]
        assert resumed.keys() == reference.keys() and all(torch.equal(resumed[k], reference[k]) for k in reference)
    after = [torch.load(out / "weight" / f"{method}_after_task.pt", weights_only=True) for out in (tmp_path, runs[method])]
    for key in after[1]["backbone"]:  # the backbone, and SI's importance, which the second task's omega made
        assert torch.equal(after[0]["backbone"][key], after[1]["backbone"][key])
    if method == "SI":
        importance = [a["method"]["importance"] for a in after]
        assert all(torch.equal(importance[0][k], importance[1][k]) for k in importance[1])
