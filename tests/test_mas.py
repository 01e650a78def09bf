"""MAS, a shared-backbone method added as one file (continual/mas.py): its importance against a hand computation (the
mean over the images of each per-image |gradient of ||logits||^2|, no label read), summed over tasks; its penalty,
zero on the first task and pulling toward the backbone after the previous task, per-task BN left out; its options and
grid in the registry; and two small tasks end to end, killed and resumed bit for bit."""
import json
from types import SimpleNamespace

import pytest
import torch

import continual  # noqa: F401  (the shared-backbone methods register as it is imported)
import main
from continual.mas import MAS
from training.shared_method import Method
from dataset.images import IMAGENET
from network import METHOD_SETS, Family, MultiHeadModel, load_backbone, method_options, method_spec
from network.methods import LR_SEARCH
from network.multihead import norm_layer_tensors
from tests.helpers import SMALL_TASKS, Kill, matrix_of, read_csv, small_args
from training.settings import runtime_for

TASKS = SMALL_TASKS[:2]


def mas_and_model(shared_bn: str = "drift", mas_lambda: float = 2.0) -> tuple[MAS, MultiHeadModel]:
    torch.manual_seed(0)
    ctx = SimpleNamespace(backbone=load_backbone("resnet18", "none"), options={"mas_lambda": mas_lambda},
                          shared_bn=shared_bn, runtime=runtime_for(torch.device("cpu")), normalisation=IMAGENET,
                          device=torch.device("cpu"))
    mas = MAS(ctx)
    model = mas.build_model()
    model.add_head(3)
    return mas, model


def task_data(position: int, count: int = 4) -> SimpleNamespace:
    """A task's images; its labels are None, so reading one would fail."""
    generator = torch.Generator().manual_seed(position)
    images = torch.randint(0, 256, (count, 3, 16, 16), dtype=torch.uint8, generator=generator)
    return SimpleNamespace(position=position, tensors=SimpleNamespace(train_images=images, train_labels=None))


def hand_importance(model: MultiHeadModel, images: torch.Tensor, names: set[str]) -> dict[str, torch.Tensor]:
    """1/N sum_k |d ||F(x_k)||^2 / d theta|, one image at a time with autograd, BN in eval mode."""
    model.eval()
    params = dict(model.named_parameters())
    expected = {name: torch.zeros_like(params[name]) for name in names}
    for image in IMAGENET(images):
        model.zero_grad()
        (model(image[None]) ** 2).sum().backward()
        for name in expected:
            expected[name] += params[name].grad.abs() / len(images)
    return expected


def close(found: torch.Tensor, expected: torch.Tensor) -> None:
    """Equal up to fp32 rounding: vmap's batched gradients and one-image autograd sum in other orders, and an
    element near zero keeps only an absolute agreement with the tensor's scale."""
    torch.testing.assert_close(found, expected, rtol=1e-4, atol=1e-5 * expected.abs().max().item())


def test_importance_is_the_mean_per_image_gradient_magnitude_of_the_squared_output_norm_summed_over_tasks():
    mas, model = mas_and_model()
    backbone = {name for name, _ in model.backbone_named_parameters()}
    first = task_data(0)
    expected = hand_importance(model, first.tensors.train_images, backbone)
    mas.after_task(model, first)
    assert mas.importance.keys() == mas.anchor.keys() == backbone  # the backbone's, not the head's
    assert not any(omega.requires_grad for omega in mas.importance.values())  # a constant in the penalty
    for name in backbone:
        close(mas.importance[name], expected[name])
    # a second task (its own head, the backbone moved): its importance is added to the first's
    with torch.no_grad():
        for _, p in model.backbone_named_parameters():
            p.add_(0.01 * torch.randn_like(p))
    model.add_head(4)
    second = task_data(1, count=3)
    after_first = {name: omega.clone() for name, omega in mas.importance.items()}
    expected = hand_importance(model, second.tensors.train_images, backbone)
    mas.after_task(model, second)
    for name in backbone:
        close(mas.importance[name], after_first[name] + expected[name])
        assert torch.equal(mas.anchor[name], dict(model.named_parameters())[name].detach())


def test_penalty_is_zero_on_the_first_task_and_pulls_toward_the_previous_tasks_backbone():
    mas, model = mas_and_model(mas_lambda=2.0)
    images, labels = IMAGENET(task_data(0).tensors.train_images), torch.tensor([0, 1, 2, 0])
    plain = Method(mas.ctx)

    def losses() -> tuple[torch.Tensor, torch.Tensor]:
        model.train()
        return mas.batch_loss(model, None, images, labels, None)[0], plain.batch_loss(model, None, images, labels,
                                                                                      None)[0]

    with_mas, without = losses()
    assert torch.equal(with_mas, without)  # no importance yet: the recipe's loss alone
    mas.after_task(model, task_data(0))
    assert mas.penalty(model).item() == 0  # at theta* itself
    weight = dict(model.named_parameters())["layer1.0.conv1.weight"]
    with torch.no_grad():
        weight.add_(0.1)
    omega = mas.importance["layer1.0.conv1.weight"]
    torch.testing.assert_close(mas.penalty(model), 0.01 * omega.sum())
    with_mas, without = losses()
    assert torch.equal(with_mas, without + 2.0 * mas.penalty(model)) and with_mas > without
    # a gradient step on the penalty alone moves the weight back toward theta*, faster where Omega is larger
    model.zero_grad()
    mas.penalty(model).backward()
    torch.testing.assert_close(weight.grad, 2 * omega * 0.1)
    before = (weight.detach() - mas.anchor["layer1.0.conv1.weight"]).abs()
    with torch.no_grad():
        weight.sub_(0.1 * weight.grad)
    after = (weight.detach() - mas.anchor["layer1.0.conv1.weight"]).abs()
    assert (after <= before).all() and (after < before).any()


def test_per_task_bn_is_neither_weighted_nor_anchored():
    mas, model = mas_and_model("per-task")
    mas.before_task(model, task_data(0))
    mas.after_task(model, task_data(0))
    own = set(norm_layer_tensors(model))
    assert mas.importance.keys() == mas.anchor.keys() == {name for name, _ in mas.shared_parameters(model)}
    assert own and not mas.importance.keys() & own and len(mas.task_norms) == 1
    state = mas.state_dict()
    assert state.keys() == {"norms", "importance", "anchor"}


def test_mas_is_registered_with_its_option_and_grid_and_not_in_the_paper_set():
    spec = method_spec("MAS")
    assert spec.family is Family.SHARED and spec.implementation is MAS and spec.paper_column is None
    assert "MAS" not in METHOD_SETS["paper"]
    assert spec.order > method_spec("PackNet").order  # after the shared methods it joined
    assert method_options("MAS") == {"mas_lambda": 1.0}  # the paper's object-recognition lambda
    assert spec.search == {"lr": LR_SEARCH, "mas_lambda": (0.1, 0.5, 1.0, 10.0, 100.0)}
    args = main.parse_args(["--method", "MAS", "--mas-lambda", "3"])
    assert [(m.method, m.options, m.shared_bn) for m in args.methods] == [("MAS", {"mas_lambda": 3.0}, "drift")]
    assert "--mas-lambda" in main.get_args_parser().format_help()


@pytest.mark.slow
def test_two_tasks_end_to_end_and_a_killed_run_resumes_bit_identically(small_tasks, tmp_path, monkeypatch):
    """Two tasks of the small cut: the matrix, the records and the report's verification agree; killed in the second
    task's second epoch and resumed, the same matrix, heads, backbone and MAS state."""
    reference, resumed = tmp_path / "reference", tmp_path / "resumed"
    assert main.main(small_args(small_tasks, reference, "MAS", "--tasks", *TASKS)) == 0
    matrix = matrix_of(reference, "MAS", TASKS)
    assert [float(row["best_acc"]) for row in read_csv(reference / "result" / "MAS.csv")] == matrix[-1]
    for t, task in enumerate(TASKS):
        saved = torch.load(reference / "weight" / f"{task}_MAS.pt", weights_only=True)
        assert saved["shared_backbone"] is True and saved["config"]["mas_lambda"] == 1.0
        assert saved["best_acc"] == matrix[t][t] and sorted(saved["state"]) == ["fc.bias", "fc.weight"]
    assert json.loads((reference / "result" / "verification.json").read_text())["MAS"] == \
        {"equal": len(TASKS), "mismatches": [], "skipped": {}}

    kill = Kill(monkeypatch, at_call=4)
    assert main.main(small_args(small_tasks, resumed, "MAS", "--tasks", *TASKS)) == 130
    assert (resumed / "weight" / f"{TASKS[1]}_MAS.resume.pt").exists()
    kill.disarm()
    assert main.main(small_args(small_tasks, resumed, "MAS", "--tasks", *TASKS)) == 0
    for name in ("MAS_matrix.csv", "MAS.csv"):
        assert (resumed / "result" / name).read_text() == (reference / "result" / name).read_text()
    for task in TASKS:
        states = [torch.load(out / "weight" / f"{task}_MAS.pt", weights_only=True)["state"]
                  for out in (resumed, reference)]
        assert states[0].keys() == states[1].keys() and all(torch.equal(states[0][k], states[1][k]) for k in states[1])
    after = [torch.load(out / "weight" / "MAS_after_task.pt", weights_only=True) for out in (resumed, reference)]
    for key in after[1]["backbone"]:
        assert torch.equal(after[0]["backbone"][key], after[1]["backbone"][key])
    for part in ("importance", "anchor"):  # the second task's Omega was added to the first's after the resume
        mine, theirs = after[0]["method"][part], after[1]["method"][part]
        assert mine.keys() == theirs.keys() and all(torch.equal(mine[k], theirs[k]) for k in theirs)
    assert any(omega.abs().sum() > 0 for omega in after[1]["method"]["importance"].values())
