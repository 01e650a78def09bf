"""--norm and --clr-placement: which methods take them, what each policy trains and stores, where CLR's kernels go,
and that a task records both and is rebuilt with them (a small run trained once, with --norm affine)."""
import json
from pathlib import Path

import pytest
import torch
from torch import nn

import main
from network import LayerPolicy, build_model, load_backbone, parameter_cost, stored_state
from network.layers import NORM_LAYERS, ChannelwiseKernel
from network.methods import REGISTRY, is_depthwise, methods_where
from tests.helpers import SMALL_TASKS, read_csv_text, seeded_and_frozen, small_args
from training.saved import differing_settings, recorded_policy

CLR = "Ghost_reduced_v1"
TAKE_NORM = methods_where(lambda spec: spec.layers and spec.layers.chooses_norm)  # what the refusal lists


def test_the_options_apply_to_the_methods_that_train_norm_layers_and_to_the_clr_variants():
    takes_norm = [name for name, spec in REGISTRY.items() if spec.layers and spec.layers.chooses_norm]
    places = [name for name, spec in REGISTRY.items() if spec.layers and spec.layers.clr_kernels]
    known = {"Ghost_reduced_v1", "Ghost", "Ghost_reduced_v2", "Linear", "Finetune", "Ghost_a", "li18", "li50",
             "Resnet_Scratch", "Piggyback", "SupSup"}  # a method added since by its own file says it in its own test
    assert [name for name in takes_norm if name in known] == ["Ghost_reduced_v1", "Ghost", "Ghost_reduced_v2",
                                                              "Ghost_a", "Piggyback"]
    assert places == ["Ghost_reduced_v1", "Ghost", "Ghost_reduced_v2"]
    args = main.parse_args(["--method", CLR, "Linear", "SGD", "--norm", "frozen", "--clr-placement",
                            "skip-depthwise"])
    assert {choice.method: choice.policy for choice in args.methods} == {
        CLR: LayerPolicy("frozen", "skip-depthwise"), "Linear": LayerPolicy("frozen", "every"), "SGD": None}
    assert main.parse_args(["--method", "SupSup"]).methods[0].policy == LayerPolicy("train", "every")


@pytest.mark.parametrize("argv, message", [
    (["--method", "Linear", "li18", "--norm", "affine"], "error: --norm applies to the methods that train their norm "
     f"layers but not every weight ({', '.join(TAKE_NORM)}), none of which is among the methods chosen (Linear, "
     "li18) (see --help)\n"),
    (["--method", "Piggyback", "--clr-placement", "every"], "error: --clr-placement applies to the CLR variants "
     "(Ghost_reduced_v1, Ghost, Ghost_reduced_v2), none of which is among the methods chosen (Piggyback) "
     "(see --help)\n"),
    (["--predict", "x.png", "--task", "auto", "--norm", "frozen"], "error: --predict rebuilds each task with the "
     "--norm and --clr-placement it was trained with: leave them out (see --help)\n"),
])
def test_an_option_that_fits_no_chosen_method_is_one_line(argv, message, capsys):
    with pytest.raises(SystemExit):
        main.parse_args(argv)
    assert capsys.readouterr().err == message


def test_a_policy_the_method_cannot_take_is_refused():
    with pytest.raises(Exception, match="--method Linear cannot take --norm affine"):
        build_model(load_backbone("resnet18", "none"), "Linear", 3, policy=LayerPolicy("affine"))


def norm_names(model: nn.Module) -> set[str]:
    return {name for name, module in model.named_modules() if isinstance(module, NORM_LAYERS)}


def test_frozen_stores_no_norm_tensor_and_affine_only_the_affine_pair():
    backbone = seeded_and_frozen("resnet18")
    states = {norm: stored_state(build_model(backbone, CLR, 3, policy=LayerPolicy(norm))) for norm in
              ("train", "frozen", "affine")}
    norms = norm_names(backbone)
    owned = {norm: {tuple(name.rsplit(".", 1)) for name in state if name.rsplit(".", 1)[0] in norms}
             for norm, state in states.items()}
    assert {tensor for _, tensor in owned["train"]} == {"weight", "bias", "running_mean", "running_var"}
    assert owned["frozen"] == set()
    assert owned["affine"] == {pair for pair in owned["train"] if pair[1] in ("weight", "bias")}
    kernels_and_head = {name for name in states["train"] if name.rsplit(".", 1)[0] not in norms}
    assert set(states["frozen"]) == kernels_and_head and len(kernels_and_head) > 2
    affine = sum(module.weight.numel() * 2 for module in backbone.modules() if isinstance(module, NORM_LAYERS))
    costs = {norm: parameter_cost(build_model(backbone, CLR, 3, policy=LayerPolicy(norm))).trainable
             for norm in ("train", "frozen", "affine")}
    assert costs["train"] == costs["affine"] == costs["frozen"] + affine


@pytest.mark.parametrize("norm", ["frozen", "affine", "train"])
def test_only_train_moves_the_running_statistics_and_frozen_keeps_the_affine_pair(norm):
    backbone = seeded_and_frozen("resnet18")
    torch.manual_seed(0)
    model = build_model(backbone, CLR, 3, policy=LayerPolicy(norm))
    optimizer = torch.optim.Adam(model.optimizer_groups(1e-2))
    model.train()
    for _ in range(2):
        loss = nn.functional.cross_entropy(model(torch.randn(4, 3, 32, 32)), torch.tensor([0, 1, 2, 0]))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    original = backbone.state_dict()
    trained = model.state_dict()
    norms = norm_names(backbone)
    same = {key: torch.equal(trained[f"{name}.{key}"], original[f"{name}.{key}"]) for name in norms
            for key in ("running_mean", "running_var", "weight")}
    statistics_kept = all(equal for key, equal in same.items() if key.startswith("running"))
    assert statistics_kept == (norm != "train")
    assert (same["weight"] and all(same.values())) == (norm == "frozen")
    assert all(not module.training for module in model.modules()
               if isinstance(module, nn.BatchNorm2d)) == (norm != "train")


def clr_kernels(model: nn.Module) -> int:
    return sum(isinstance(module, ChannelwiseKernel) for module in model.modules())


def test_skip_depthwise_changes_nothing_on_a_resnet():
    backbone = seeded_and_frozen("resnet18")
    models = {}
    for placement in ("every", "skip-depthwise"):
        torch.manual_seed(1)
        models[placement] = build_model(backbone, CLR, 3, policy=LayerPolicy(clr_placement=placement))
    every, skipping = (models[p].state_dict() for p in ("every", "skip-depthwise"))
    assert every.keys() == skipping.keys() and all(torch.equal(every[key], skipping[key]) for key in every)
    assert clr_kernels(models["every"]) == clr_kernels(models["skip-depthwise"]) == 17  # stem + 16 3x3 convs


@pytest.mark.parametrize("arch", ["mobilenet_v3_small", "timm:mobilenetv2_035"])
def test_skip_depthwise_drops_one_kernel_per_depthwise_conv(arch):
    backbone = load_backbone(arch, "none")
    depthwise = sum(isinstance(module, nn.Conv2d) and is_depthwise(module) for module in backbone.modules())
    every = build_model(backbone, CLR, 3)
    skipping = build_model(backbone, CLR, 3, policy=LayerPolicy(clr_placement="skip-depthwise"))
    assert depthwise > 10
    assert clr_kernels(every) - clr_kernels(skipping) == depthwise
    assert not any(is_depthwise(module.conv) for module in skipping.modules() if hasattr(module, "clr"))


def test_a_record_written_before_the_policy_was_recorded_has_the_methods_own():
    current = {"method": CLR, "epochs": 2, "norm": "train", "clr_placement": "every"}
    old = {"method": CLR, "epochs": 2}
    assert differing_settings(old, current, "done") == []
    assert differing_settings(old, {**current, "norm": "frozen"}, "resume") == ["--norm train (now frozen)"]
    assert recorded_policy({"method": "Linear"}) == LayerPolicy("frozen", "every")
    assert differing_settings({"method": "Linear"}, {"method": "Linear", "norm": "frozen",
                                                     "clr_placement": "every"}, "done") == []
    assert recorded_policy({"method": CLR, "norm": "affine"}) == LayerPolicy("affine", "every")


@pytest.fixture(scope="module")
def affine_run(small_tasks, tmp_path_factory) -> Path:
    """The small cut's three tasks learnt by CLR with --norm affine, trained once."""
    out = tmp_path_factory.mktemp("affine")
    assert main.main(small_args(small_tasks, out, CLR, "--norm", "affine")) == 0
    return out


@pytest.mark.slow
def test_the_record_holds_the_policy_and_a_rerun_with_another_is_refused(small_tasks, affine_run, capsys):
    records = [torch.load(affine_run / "weight" / f"{task}_{CLR}.pt", weights_only=True) for task in SMALL_TASKS]
    assert all(record["config"]["norm"] == "affine" and record["config"]["clr_placement"] == "every"
               for record in records)
    assert not any(name.endswith("running_mean") for record in records for name in record["state"])
    capsys.readouterr()
    assert main.main(small_args(small_tasks, affine_run, CLR)) == 2
    error = capsys.readouterr().err
    last = error.splitlines()[-1].rsplit("\r", 1)[-1]  # after any progress bar the console cleared
    assert last.startswith("error: ") and "other settings or data: --norm affine (now train)" in last
    assert "Traceback" not in error
    assert main.main(small_args(small_tasks, affine_run, CLR, "--norm", "affine")) == 0  # verified again
    assert capsys.readouterr().out.count("already done") == len(SMALL_TASKS)


@pytest.mark.slow
def test_verify_and_predict_rebuild_the_task_with_its_recorded_policy(small_tasks, affine_run, capsys):
    verification = json.loads((affine_run / "result" / "verification.json").read_text())
    assert verification[CLR]["equal"] == len(SMALL_TASKS) and verification[CLR]["mismatches"] == []
    task = SMALL_TASKS[1]
    record = torch.load(affine_run / "weight" / f"{task}_{CLR}.pt", weights_only=True)
    images = sorted((small_tasks / task / "val").glob("*/*"))
    capsys.readouterr()  # no --norm: the record's own policy is used
    assert main.main([*small_args(small_tasks, affine_run, CLR), "--predict", *map(str, images), "--task", task]) == 0
    rows = read_csv_text(capsys.readouterr().out)
    correct = sum(row["class"] == Path(row["path"]).parent.name for row in rows)
    assert len(rows) == record["val_images"] and correct == record["best_correct"]
