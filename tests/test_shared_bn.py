"""--shared-bn for the shared-backbone methods: freeze keeps BN's running statistics through a later task while its
affine pair trains; per-task gives each task its own BN (started from the backbone's, stored with its head, loaded to
evaluate it) and keeps it out of EWC's and SI's anchors; the value is recorded, refused when it does not apply, and a
resume with another value is refused in one line."""
import json
from types import SimpleNamespace

import pytest
import torch

import main
import training.sequence
from continual.ewc import EWC
from network import MultiHeadModel, load_backbone
from network.multihead import norm_affine_count, norm_layer_state
from tests.helpers import SMALL_TASKS, small_args
from training.settings import Recipe, runtime_for
from training.shared_method import Method

TASKS = SMALL_TASKS[:2]


def method_of(kind: type[Method], shared_bn: str, **options) -> tuple[Method, MultiHeadModel]:
    ctx = SimpleNamespace(backbone=load_backbone("resnet18", "none"), recipe=Recipe(), options=options,
                          shared_bn=shared_bn, runtime=runtime_for(torch.device("cpu")),
                          normalisation=lambda images: images.float() / 255, device=torch.device("cpu"))
    method = kind(ctx)
    return method, method.build_model()


def train_steps(model: MultiHeadModel, steps: int = 3) -> None:
    """A few Adam steps of every trainable tensor on random images, through ``model.train()`` as the fit loop does."""
    model.train()
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=0.1)
    for _ in range(steps):
        images, labels = torch.randn(4, 3, 16, 16), torch.randint(0, model.num_classes, (4,))
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(model(images), labels).backward()
        optimizer.step()


def learn(method: Method, model: MultiHeadModel, position: int) -> None:
    torch.manual_seed(position)
    model.add_head(3)
    data = SimpleNamespace(position=position)
    method.before_task(model, data)
    train_steps(model)
    method.after_task(model, data)


def statistics(model: MultiHeadModel) -> dict[str, torch.Tensor]:
    return {name: t for name, t in norm_layer_state(model).items() if name.endswith(("running_mean", "running_var"))}


def affine(model: MultiHeadModel) -> dict[str, torch.Tensor]:
    return {name: t for name, t in norm_layer_state(model).items() if name.endswith((".weight", ".bias"))}


def changed(before: dict[str, torch.Tensor], after: dict[str, torch.Tensor]) -> bool:
    return any(not torch.equal(before[name], after[name]) for name in before)


def test_freeze_keeps_the_statistics_from_the_second_task_on_while_the_affine_pair_trains():
    method, model = method_of(Method, "freeze")
    start = statistics(model)
    learn(method, model, 0)  # the first task trains BN as drift does
    assert changed(start, statistics(model)) and not model.statistics_frozen
    after_first, affine_first = statistics(model), affine(model)
    learn(method, model, 1)
    assert model.statistics_frozen
    assert not changed(after_first, statistics(model))  # bit for bit
    assert changed(affine_first, affine(model))
    model.statistics_frozen = False  # drift: the same training moves them
    train_steps(model)
    assert changed(after_first, statistics(model))


def test_per_task_bn_starts_from_the_backbone_is_stored_with_the_head_and_loaded_per_task():
    method, model = method_of(Method, "per-task")
    start = norm_layer_state(model)
    learn(method, model, 0)
    method.before_task(model, SimpleNamespace(position=1))
    assert not changed(start, norm_layer_state(model))  # the second task's BN starts from the backbone's
    torch.manual_seed(1)
    model.add_head(3)
    train_steps(model)
    method.after_task(model, SimpleNamespace(position=1))
    first, second = method.task_norms
    assert changed(first, second)
    method.use_task(model, 0)
    assert not changed(first, norm_layer_state(model)) and model.current == 0
    state = method.task_state(model, 0)
    assert state.keys() == {"fc.weight", "fc.bias", *first} and not changed(first, state)
    head = sum(p.numel() for p in model.heads[0].parameters())
    assert method.task_parameters(model, 0) == head + norm_affine_count(model) == head + 9600
    assert method.state_dict() == {"norms": method.task_norms}
    names = {name for name, _ in method.shared_parameters(model)}
    assert not names & set(first) and names == {name for name, _ in model.backbone_named_parameters()} - set(first)


def test_drift_stores_no_bn_and_shares_every_backbone_parameter():
    method, model = method_of(Method, "drift")
    learn(method, model, 0)
    assert method.task_state(model, 0).keys() == {"fc.weight", "fc.bias"} and method.state_dict() == {}
    assert method.shared_parameters(model) == model.backbone_named_parameters()


def test_ewc_does_not_anchor_per_task_bn():
    ewc, model = method_of(EWC, "per-task", ewc_lambda=1.0, ewc_gamma=1.0)
    model.add_head(3)
    data = SimpleNamespace(position=0, tensors=SimpleNamespace(
        train_images=torch.randint(0, 256, (4, 3, 16, 16), dtype=torch.uint8), train_labels=torch.tensor([0, 1, 2, 0])))
    ewc.before_task(model, data)
    ewc.after_task(model, data)
    bn = set(norm_layer_state(model))
    assert ewc.importance.keys() == ewc.anchor.keys() == {name for name, _ in ewc.shared_parameters(model)}
    assert not ewc.importance.keys() & bn and len(ewc.task_norms) == 1


def test_a_value_that_applies_to_no_chosen_method_is_refused_in_one_line(capsys):
    for methods, expected in ((["PSP", "PackNet"], "--method PSP PackNet keeps BN per task by its definition"),
                              (["Ghost_reduced_v1"], "--shared-bn is for the methods with one backbone")):
        with pytest.raises(SystemExit):
            main.parse_args(["--method", *methods, "--shared-bn", "freeze"])
        assert expected in capsys.readouterr().err
    args = main.parse_args(["--method", "PSP", "SGD", "--shared-bn", "freeze"])
    assert [choice.shared_bn for choice in args.methods] == ["per-task", "freeze"]
    assert main.parse_args(["--method", "PSP", "--shared-bn", "per-task"]).methods[0].shared_bn == "per-task"
    assert main.parse_args(["--method", "SGD"]).methods[0].shared_bn == "drift"


@pytest.mark.slow
def test_per_task_run_re_evaluates_to_its_last_row_keeps_task_bn_and_refuses_another_value(small_tasks, tmp_path,
                                                                                          monkeypatch, capsys):
    """EWC with per-task BN on two tasks: the first task's BN as saved after it is the one the final files hold,
    the final model re-evaluates each task to the matrix's last row, and a rerun with --shared-bn drift is refused."""
    after_first = {}
    real_save = training.sequence.save_sequence

    def keep_first(ctx, model, method, config, finished):
        if len(finished["records"]) == 1:
            after_first.update(finished["records"][0].state)
        real_save(ctx, model, method, config, finished)

    monkeypatch.setattr(training.sequence, "save_sequence", keep_first)
    args = small_args(small_tasks, tmp_path, "EWC", "--tasks", *TASKS, "--epochs", "1", "--shared-bn", "per-task")
    assert main.main(args) == 0
    first = torch.load(tmp_path / "weight" / f"{TASKS[0]}_EWC.pt", weights_only=True)
    second = torch.load(tmp_path / "weight" / f"{TASKS[1]}_EWC.pt", weights_only=True)
    assert first["config"]["shared_bn"] == "per-task" and first["state"].keys() == after_first.keys()
    assert all(torch.equal(first["state"][key], after_first[key]) for key in after_first)
    bn = [key for key in first["state"] if key.endswith("running_mean")]
    assert bn and any(not torch.equal(first["state"][key], second["state"][key]) for key in bn)
    head = first["state"]["fc.weight"].numel() + first["state"]["fc.bias"].numel()
    assert first["trainable_params"] == head + 9600 and first["stored_bytes"] == 4 * head + 76800
    # the report's verification rebuilt the final model (with the recorded per-task BN) and equals the last row
    assert json.loads((tmp_path / "result" / "verification.json").read_text())["EWC"] == \
        {"equal": 2, "mismatches": [], "skipped": {}}
    capsys.readouterr()
    assert main.main([*args[:-1], "drift"]) == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "--shared-bn per-task (now drift)" in errors[0]
