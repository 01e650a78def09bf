"""The CLR network: exact sizes, identity at init, frozen backbone, per-task state and weights errors."""
import copy
import hashlib
import re
import urllib.error

import pytest
import torch
from torch import nn

from common.errors import NetworkError
from network import (REGISTRY, RESNETS, Family, ParameterCost, backbone_choice, backbone_id, build_model,
                     load_backbone, load_task_state, methods_of, parameter_cost, task_state)
from network.layers import TaskLayer
from tests.helpers import seeded_and_frozen
from training.loop import l2_norm_penalty

METHODS = methods_of(Family.ISOLATED)  # the methods with a model per task
BACKBONE_PARAMETERS = {"resnet50": 25_557_032, "resnet18": 11_689_512}
FEATURES = {"resnet50": 2048, "resnet18": 512}
# The methods whose network the generic tests build on resnet18. li50 is defined on resnet50 only, and
# Resnet_Scratch builds exactly Finetune's network (on a random backbone): both are tested on their own.
ON_RESNET18 = [method for method in METHODS if method not in ("li50", "Resnet_Scratch")]
# adapters start at the default init, SupSup at a random supermask of a signed-constant backbone
IDENTITY_AT_INIT = [method for method in ON_RESNET18 if method not in ("li18", "SupSup")]


@pytest.fixture(scope="module")
def backbones() -> dict[str, nn.Module]:
    """Random backbones whose BN affine parameters and statistics are not the trivial init (1, 0, 0, 1)."""
    generator = torch.Generator().manual_seed(1)
    result = {}
    for arch in RESNETS:
        backbone = load_backbone(arch, "none")
        with torch.no_grad():
            for module in backbone.modules():
                if isinstance(module, nn.BatchNorm2d):
                    for tensor in (module.weight, module.bias, module.running_mean):
                        tensor.copy_(torch.randn(tensor.shape, generator=generator) * 0.1 + tensor)
                    module.running_var.copy_(torch.rand(module.running_var.shape, generator=generator) + 0.5)
        result[arch] = backbone
    return result


def images(count: int = 4, seed: int = 0) -> torch.Tensor:
    return torch.randn(count, 3, 32, 32, generator=torch.Generator().manual_seed(seed))


def plain_features(backbone: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The unmodified torchvision forward, without its classifier."""
    plain = copy.deepcopy(backbone)
    plain.fc = nn.Identity()
    with torch.no_grad():
        return plain.eval()(x)


def train_steps(model: nn.Module, steps: int = 3, seed: int = 0) -> None:
    """A few Adam steps over the trainable tensors, as main.py's loop does them."""
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    labels = torch.arange(4) % model.num_classes
    model.train()
    for step in range(steps):
        optimizer.zero_grad()
        nn.functional.cross_entropy(model(images(seed=seed + step)), labels).backward()
        optimizer.step()
    model.eval()


# the methods whose task-specific tensors is_task_specific tells from their names; one added since by its own file
# is checked by its own test file, and here against what its layers declare
NAMED = {"Ghost_reduced_v1", "Ghost", "Ghost_reduced_v2", "Linear", "Finetune", "Ghost_a", "li18", "li50",
         "Resnet_Scratch", "Piggyback", "SupSup"}


def is_task_specific(method: str, name: str, model: nn.Module | None = None) -> bool:
    """The spec's task-specific tensors, told from torchvision names alone (for a method not in NAMED, the tensors
    its task layers in ``model`` declare, its norm layers and its head)."""
    if method in ("Finetune", "Resnet_Scratch") or name.startswith("fc."):
        return True
    if method in ("Linear", "li18", "li50"):
        return name.endswith(".adapter.weight")
    return (name.endswith(("clr.weight", ".dw.weight", ".gate", ".scores")) or ".bn" in name or name.startswith("bn1.")
            or "downsample.1." in name or (method not in NAMED and name in declared_tensors(model)))


def declared_tensors(model: nn.Module) -> set[str]:
    """The names of the tensors that the model's task layers declare they train."""
    return {f"{prefix}.{name}" for prefix, layer in model.named_modules() if isinstance(layer, TaskLayer)
            for name in layer.trained}


def parameters_ending(model: nn.Module, suffix: str) -> dict[str, nn.Parameter]:
    """The model's parameters whose names end with ``suffix``, e.g. every Ghost_a gate."""
    return {name: parameter for name, parameter in model.named_parameters() if name.endswith(suffix)}


# ---- sizes ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("arch, method, layers, kernels, bn_affine, head_per_class", [
    ("resnet50", "Ghost_reduced_v1", 17, 34_560, 53_120, 2049),
    ("resnet50", "Ghost", 53, 239_040, 53_120, 2049),
    ("resnet50", "Ghost_reduced_v2", 53, 57_280, 53_120, 2049),
    ("resnet18", "Ghost_reduced_v1", 17, 35_136, 9_600, 513),
    ("resnet18", "Ghost", 20, 43_200, 9_600, 513),
])
def test_task_state_sizes_match_the_reference_table(backbones, arch, method, layers, kernels, bn_affine,
                                                    head_per_class):
    classes = 7
    model = build_model(backbones[arch], method, classes)
    state = task_state(model)
    clr = {name: tensor for name, tensor in state.items() if name.endswith(".clr.weight")}
    affine = sum(t.numel() for name, t in state.items() if name.endswith((".weight", ".bias"))
                 and name not in clr and not name.startswith("fc."))
    stats = sum(t.numel() for name, t in state.items() if name.endswith(("running_mean", "running_var")))
    assert len(clr) == layers
    assert sum(t.numel() for t in clr.values()) == kernels
    assert affine == bn_affine and stats == bn_affine
    assert state["fc.weight"].numel() + state["fc.bias"].numel() == head_per_class * classes
    assert sum(t.numel() for t in state.values()) == kernels + 2 * bn_affine + head_per_class * classes
    trainable = kernels + bn_affine + head_per_class * classes
    assert parameter_cost(model) == ParameterCost(trainable, head_per_class * classes,
                                                  BACKBONE_PARAMETERS[arch],
                                                  100 * trainable / BACKBONE_PARAMETERS[arch])


def test_clr_costs_what_the_paper_claims(backbones):
    cost = parameter_cost(build_model(backbones["resnet50"], "Ghost_reduced_v1", 30))
    assert round(100 * (cost.trainable - cost.head) / cost.backbone, 3) == 0.343
    assert round(cost.percent, 2) == 0.58


@pytest.mark.parametrize("arch", RESNETS)
def test_baseline_costs(backbones, arch):
    head = (FEATURES[arch] + 1) * 5
    linear = parameter_cost(build_model(backbones[arch], "Linear", 5))
    assert (linear.trainable, linear.head) == (head, head)
    for method in ("Finetune", "Resnet_Scratch"):
        assert parameter_cost(build_model(backbones[arch], method, 5)).trainable == (
            BACKBONE_PARAMETERS[arch] - (FEATURES[arch] + 1) * 1000 + head)


@pytest.mark.parametrize("arch, adapters, kernels, gates, bn_affine", [
    ("resnet18", 1_392_832, 43_200, 4_800, 9_600),
    ("resnet50", 13_385_920, 239_040, 26_560, 53_120),
])
def test_release_method_costs_match_counts_of_the_torchvision_model(backbones, arch, adapters, kernels, gates,
                                                                   bn_affine):
    convs = [module for module in backbones[arch].modules() if isinstance(module, nn.Conv2d)]
    batchnorms = [module for module in backbones[arch].modules() if isinstance(module, nn.BatchNorm2d)]
    assert sum(conv.in_channels * conv.out_channels for conv in convs) == adapters  # one 1x1 adapter per conv
    assert sum(conv.out_channels * 3 * 3 for conv in convs) == kernels  # one depthwise 3x3 per conv
    assert sum(conv.out_channels for conv in convs) == gates
    assert sum(2 * bn.num_features for bn in batchnorms) == bn_affine
    head = (FEATURES[arch] + 1) * 7
    adapter_method = {"resnet18": "li18", "resnet50": "li50"}[arch]
    for method, trainable, running_stats in [(adapter_method, adapters + head, 0),
                                             ("Ghost_a", kernels + gates + bn_affine + head, bn_affine)]:
        model = build_model(backbones[arch], method, 7)
        assert parameter_cost(model) == ParameterCost(trainable, head, BACKBONE_PARAMETERS[arch],
                                                      100 * trainable / BACKBONE_PARAMETERS[arch])
        assert sum(tensor.numel() for tensor in task_state(model).values()) == trainable + running_stats


def test_placement_and_kernel_shapes(backbones):
    v2 = build_model(backbones["resnet50"], "Ghost_reduced_v2", 3)
    assert v2.conv1.clr.weight.shape == (64, 1, 3, 3)
    assert v2.layer1[0].conv1.clr.weight.shape == (64, 1, 1, 1)
    assert v2.layer1[0].conv2.clr.weight.shape == (64, 1, 3, 3)
    assert v2.layer2[0].downsample[0].clr.weight.shape == (512, 1, 1, 1)
    v1 = build_model(backbones["resnet50"], "Ghost_reduced_v1", 3)
    assert isinstance(v1.layer1[0].conv1, nn.Conv2d) and isinstance(v1.layer2[0].downsample[0], nn.Conv2d)
    ghost = build_model(backbones["resnet18"], "Ghost", 3)
    assert ghost.layer2[0].downsample[0].clr.weight.shape == (128, 1, 3, 3)
    assert (ghost.method, ghost.arch, ghost.num_classes) == ("Ghost", "resnet18", 3)


# ---- identity at init ----------------------------------------------------------------------------------

@pytest.mark.parametrize("arch", RESNETS)
@pytest.mark.parametrize("method", IDENTITY_AT_INIT)
def test_fresh_model_computes_the_backbone_features(backbones, arch, method):
    x = images()
    expected = plain_features(backbones[arch], x)
    model = build_model(backbones[arch], method, 6)
    assert not model.training
    with torch.no_grad():
        features = model.pooled_features(x)
        logits = model(x)
    assert features.shape == (4, FEATURES[arch]) and logits.shape == (4, 6)
    assert (features - expected).abs().max() <= 1e-5 * expected.abs().max()


def test_gated_clr_starts_as_exactly_the_backbone(backbones):
    x = images()
    model = build_model(backbones["resnet18"], "Ghost_a", 6)
    gates, kernels = parameters_ending(model, ".gate"), parameters_ending(model, ".dw.weight")
    assert len(gates) == len(kernels) == 20
    assert all(not gate.any() for gate in gates.values())
    assert all(kernel.std() > 0.05 for kernel in kernels.values())  # the default init, not the identity
    with torch.no_grad():
        assert torch.equal(model.pooled_features(x), plain_features(backbones["resnet18"], x))


def test_adapters_change_the_backbone_until_they_are_zeroed(backbones):
    x = images()
    expected = plain_features(backbones["resnet18"], x)
    model = build_model(backbones["resnet18"], "li18", 6)
    adapters = parameters_ending(model, ".adapter.weight")
    assert len(adapters) == 20
    assert model.layer2[0].downsample[0].adapter.stride == (2, 2) and model.conv1.adapter.stride == (2, 2)
    with torch.no_grad():
        assert (model.pooled_features(x) - expected).abs().max() > 0.1 * expected.abs().max()
        for adapter in adapters.values():
            adapter.zero_()
        assert torch.equal(model.pooled_features(x), expected)


def test_channels_last_gives_the_same_outputs(backbones):
    x = images()
    model = build_model(backbones["resnet18"], "Ghost_reduced_v2", 4)
    with torch.no_grad():
        expected = model(x)
        model.to(memory_format=torch.channels_last)
        actual = model(x.to(memory_format=torch.channels_last))
    assert (actual - expected).abs().max() <= 1e-5 * expected.abs().max()


# ---- what trains ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("method", ON_RESNET18)
def test_gradients_reach_only_task_specific_tensors(backbones, method):
    model = build_model(backbones["resnet18"], method, 3).train()
    nn.functional.cross_entropy(model(images()), torch.tensor([0, 1, 2, 0])).backward()
    expected = {name for name, _ in model.named_parameters() if is_task_specific(method, name, model)}
    assert {name for name, p in model.named_parameters() if p.requires_grad} == expected
    assert {name for name, p in model.named_parameters() if p.grad is not None} == expected
    assert set(task_state(model)) - {name for name, _ in model.named_buffers()} == expected
    behind_closed_gates = set(parameters_ending(model, ".dw.weight"))  # Ghost_a: gates start at 0
    assert all(model.get_parameter(name).grad.abs().sum() > 0 for name in expected - behind_closed_gates)
    assert all(not model.get_parameter(name).grad.any() for name in behind_closed_gates)


@pytest.mark.parametrize("method", ON_RESNET18)
def test_norm_penalty_covers_every_trained_tensor_except_the_gates(backbones, method):
    model = build_model(backbones["resnet18"], method, 3)
    gates = parameters_ending(model, ".gate")
    assert len(gates) == (20 if method == "Ghost_a" else 0)
    scores = parameters_ending(model, ".scores")  # Piggyback's and SupSup's: left out too
    trained = [p for p in model.parameters() if p.requires_grad]  # what the optimizer gets, in its order
    assert [id(p) for p in model.penalised_parameters()] == [
        id(p) for p in trained if not any(p is left_out for left_out in [*gates.values(), *scores.values()])]
    l2_norm_penalty(model.penalised_parameters()).backward()
    assert all(gate.grad is None for gate in gates.values())


@pytest.mark.parametrize("method", ["Linear", "li18"])
def test_frozen_batchnorm_stays_in_eval_mode_in_training(backbones, method):
    model = build_model(backbones["resnet18"], method, 3).train()
    batchnorms = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    assert model.training and model.fc.training and not any(bn.training for bn in batchnorms)
    before = copy.deepcopy(model.state_dict())
    model(images())
    assert all(torch.equal(before[name], tensor) for name, tensor in model.state_dict().items())
    assert set(task_state(model)) == {name for name, _ in model.named_parameters() if is_task_specific(method, name)}


def test_clr_trains_batchnorm_with_batch_statistics(backbones):
    model = build_model(backbones["resnet18"], "Ghost_reduced_v1", 3).train()
    assert all(m.training for m in model.modules() if isinstance(m, nn.BatchNorm2d))
    before = model.bn1.running_mean.clone()
    model(images())
    assert not torch.equal(before, model.bn1.running_mean)


def test_finetune_state_is_every_floating_tensor(backbones):
    model = build_model(backbones["resnet18"], "Finetune", 3)
    floating = {name for name, tensor in model.state_dict().items() if tensor.is_floating_point()}
    assert set(task_state(model)) == floating


# ---- frozen means frozen -------------------------------------------------------------------------------

def test_backbone_never_changes_across_tasks(backbones):
    backbone = backbones["resnet18"]
    loaded = {name: tensor.clone() for name, tensor in backbone.state_dict().items()}
    for task, method in enumerate(("Ghost_reduced_v1", "Finetune", "Ghost")):
        model = build_model(backbone, method, 3 + task)
        initial = task_state(model)
        train_steps(model, steps=2, seed=task)
        assert all(torch.equal(tensor, loaded[name]) for name, tensor in backbone.state_dict().items())
        if method != "Finetune":
            frozen = {name: tensor for name, tensor in model.state_dict().items()
                      if name.endswith(".weight") and not is_task_specific(method, name)}
            assert len(frozen) == 20
            assert all(torch.equal(t, loaded[name.replace(".conv.weight", ".weight")]) for name, t in frozen.items())
        changed = [name for name, tensor in task_state(model).items() if not torch.equal(tensor, initial[name])]
        assert "layer1.0.conv1.clr.weight" in changed or method == "Finetune"
        assert "layer1.0.bn1.running_mean" in changed


@pytest.mark.parametrize("method", ["li18", "Ghost_a"])
def test_release_methods_train_every_task_tensor_and_nothing_else(backbones, method):
    backbone = backbones["resnet18"]
    loaded = {name: tensor.clone() for name, tensor in backbone.state_dict().items()}
    model = build_model(backbone, method, 3)
    initial = task_state(model)
    train_steps(model, steps=2)
    assert all(torch.equal(tensor, loaded[name]) for name, tensor in backbone.state_dict().items())
    trained = task_state(model)
    assert all(not torch.equal(tensor, initial[name]) for name, tensor in trained.items())
    frozen = {name: tensor for name, tensor in model.state_dict().items()
              if name not in trained and not name.endswith("num_batches_tracked")}
    assert len(frozen) == (20 + 4 * 20 if method == "li18" else 20)  # convs, and BN where it is frozen
    assert all(torch.equal(t, loaded[name.replace(".conv.weight", ".weight")]) for name, t in frozen.items())


def test_methods_that_imply_an_arch_or_weights(backbones):
    assert backbone_choice("li18", None, None) == ("resnet18", "imagenet")
    assert backbone_choice("li50", None, "none") == ("resnet50", "none")
    assert backbone_choice("Resnet_Scratch", "resnet18", None) == ("resnet18", "none")
    assert backbone_choice("Ghost_a", None, None) == ("resnet50", "imagenet")
    assert backbone_choice("Ghost_a", "resnet18", "w.pth") == ("resnet18", "w.pth")
    with pytest.raises(NetworkError, match=r"^--method li18 means --arch resnet18, not resnet50: "
                                           r"leave --arch out or pass --arch resnet18$"):
        backbone_choice("li18", "resnet50", None)
    with pytest.raises(NetworkError, match=r"^--method Resnet_Scratch means --weights none, not imagenet: "
                                           r"leave --weights out or pass --weights none$"):
        backbone_choice("Resnet_Scratch", None, "imagenet")
    with pytest.raises(NetworkError, match=r"^--method li50 means --arch resnet50, not resnet18: "):
        build_model(backbones["resnet18"], "li50", 3)


def test_each_task_starts_from_the_backbone(backbones):
    backbone = backbones["resnet18"]
    first = build_model(backbone, "Ghost", 5)
    train_steps(first)
    second = build_model(backbone, "Ghost", 5)
    fresh = task_state(second)
    originals = backbone.state_dict()
    for name, tensor in fresh.items():
        if name.endswith(".clr.weight"):
            identity = torch.zeros_like(tensor)
            identity[:, :, 1, 1] = 1
            assert torch.equal(tensor, identity), name
        elif not name.startswith("fc."):
            assert torch.equal(tensor, originals[name]), name
    assert not torch.equal(fresh["layer1.0.bn1.running_mean"], task_state(first)["layer1.0.bn1.running_mean"])
    assert not torch.equal(fresh["fc.weight"], task_state(first)["fc.weight"])
    x = images()
    expected = plain_features(backbone, x)
    with torch.no_grad():
        assert (second.pooled_features(x) - expected).abs().max() <= 1e-5 * expected.abs().max()


# ---- per-task state ------------------------------------------------------------------------------------

@pytest.mark.parametrize("method", ON_RESNET18)
def test_state_roundtrip_is_bit_identical(backbones, method, tmp_path):
    model = build_model(backbones["resnet18"], method, 4)
    train_steps(model)
    state = task_state(model)
    assert all(t.device.type == "cpu" and not t.requires_grad for t in state.values())
    assert not any(name.endswith("num_batches_tracked") for name in state)
    torch.save(state, tmp_path / "task.pt")
    saved = torch.load(tmp_path / "task.pt", weights_only=True)
    fresh = build_model(backbones["resnet18"], method, 4)
    load_task_state(fresh, saved)
    x = images(seed=9)
    with torch.no_grad():
        assert torch.equal(model(x), fresh(x))
    assert all(torch.equal(t, state[name]) for name, t in task_state(fresh).items())


def test_task_state_is_a_copy(backbones):
    model = build_model(backbones["resnet18"], "Ghost_reduced_v1", 2)
    state = task_state(model)
    with torch.no_grad():
        model.fc.weight.add_(1)
        model.bn1.running_mean.add_(1)
    assert not torch.equal(state["fc.weight"], model.fc.weight)
    assert not torch.equal(state["bn1.running_mean"], model.bn1.running_mean)


def test_loading_another_methods_state_fails(backbones):
    state = task_state(build_model(backbones["resnet18"], "Ghost_reduced_v1", 5))
    with pytest.raises(NetworkError) as error:
        load_task_state(build_model(backbones["resnet18"], "Ghost", 5), state)
    assert str(error.value) == (
        "task state is for a different method or architecture: 3 keys missing (first: "
        "layer2.0.downsample.0.clr.weight, layer3.0.downsample.0.clr.weight, layer4.0.downsample.0.clr.weight), "
        "0 unexpected")
    with pytest.raises(NetworkError) as error:
        load_task_state(build_model(backbones["resnet18"], "Linear", 5), state)
    assert str(error.value) == (
        "task state is for a different method or architecture: 0 keys missing, 97 unexpected (first: "
        "conv1.clr.weight, bn1.weight, bn1.bias, ...)")


def test_loading_another_archs_state_fails(backbones):
    state = task_state(build_model(backbones["resnet18"], "Ghost_reduced_v1", 5))
    with pytest.raises(NetworkError) as error:
        load_task_state(build_model(backbones["resnet50"], "Ghost_reduced_v1", 5), state)
    assert str(error.value) == (
        "task state is for a different method or architecture: 140 keys missing (first: layer1.0.bn3.weight, "
        "layer1.0.bn3.bias, layer1.0.bn3.running_mean, ...), 8 unexpected (first: layer1.0.conv1.clr.weight, "
        "layer1.1.conv1.clr.weight, layer2.0.conv1.clr.weight, ...)")


def test_loading_another_class_counts_state_fails(backbones):
    state = task_state(build_model(backbones["resnet18"], "Ghost", 10))
    model = build_model(backbones["resnet18"], "Ghost", 5)
    before = task_state(model)
    with pytest.raises(NetworkError, match=r"^task state has 10 classes, the model 5$"):
        load_task_state(model, state)
    assert all(torch.equal(t, before[name]) for name, t in task_state(model).items())


# ---- names ---------------------------------------------------------------------------------------------

def test_unknown_names_list_the_valid_ones(backbones):
    with pytest.raises(NetworkError, match=r"^unknown architecture 'resnet34x'; choose a torchvision classification "
                                           r"model \(e\.g\. resnet50\) or timm:NAME for a timm model \(closest: "
                                           r"resnet34, resnet50, resnet18\)$"):
        load_backbone("resnet34x", "none")
    # every method registered, in the registry's order (tests/test_methods.py checks that order)
    with pytest.raises(NetworkError, match=rf"^unknown method 'CLR'; choose one of: {re.escape(', '.join(REGISTRY))}$"):
        build_model(backbones["resnet18"], "CLR", 5)
    assert RESNETS[0] == "resnet50" and METHODS[0] == "Ghost_reduced_v1"


def test_build_model_rejects_a_task_model_as_the_backbone(backbones):
    with pytest.raises(NetworkError, match=r"^the backbone is already a task's or a sequence's model "
                                           r"\(TaskModel\[ResNet\]\): pass the plain backbone$"):
        build_model(build_model(backbones["resnet18"], "Ghost", 2), "Ghost", 2)
    with pytest.raises(NetworkError, match=r"^--method li18 means --arch resnet18, not mobilenet_v3_small"):
        build_model(load_backbone("mobilenet_v3_small", "none"), "li18", 2)


# ---- backbone weights ----------------------------------------------------------------------------------

def test_random_backbone_is_deterministic_frozen_and_leaves_the_rng_alone():
    assert seeded_and_frozen("resnet18").conv1.weight.std() > 0.01


def test_state_dict_file_loads_exactly(backbones, tmp_path):
    path = tmp_path / "r18.pth"
    torch.save(backbones["resnet18"].state_dict(), path)
    loaded = load_backbone("resnet18", str(path))
    assert all(torch.equal(t, loaded.state_dict()[name]) for name, t in backbones["resnet18"].state_dict().items())
    assert not loaded.training and not any(p.requires_grad for p in loaded.parameters())


def test_swav_style_checkpoint_loads(backbones, tmp_path):
    source = backbones["resnet18"].state_dict()
    wrapped = {f"module.{name}": t for name, t in source.items()
               if not name.startswith("fc.") and not name.endswith("num_batches_tracked")}
    wrapped["module.fc.weight"] = torch.ones(3000, 512)  # a pretraining head of another size: ignored
    wrapped["module.fc.bias"] = torch.ones(3000)
    path = tmp_path / "swav.pth.tar"
    torch.save({"epoch": 800, "state_dict": wrapped}, path)
    loaded = load_backbone("resnet18", str(path))
    assert all(torch.equal(loaded.state_dict()[name], t) for name, t in source.items() if not name.startswith("fc."))
    assert loaded.fc.weight.shape == (1000, 512)
    model = build_model(loaded, "Ghost_reduced_v1", 3)
    assert model.fc.weight.shape == (3, 512)


def test_missing_weights_file(tmp_path):
    with pytest.raises(NetworkError, match=rf"^weights file not found: {re.escape(str(tmp_path / 'x.pth'))} "
                                           r"\(expected 'imagenet', 'none' or a state dict file\)$"):
        load_backbone("resnet18", str(tmp_path / "x.pth"))
    with pytest.raises(NetworkError, match=rf"^weights path is not a file: {re.escape(str(tmp_path))}$"):
        load_backbone("resnet18", str(tmp_path))


class Unsafe:
    """An object a weights_only load must refuse to build."""


def test_unreadable_weights_files(tmp_path):
    garbage, unsafe, empty, cut = (tmp_path / name for name in ("garbage.pth", "unsafe.pth", "empty.pth", "cut.pth"))
    garbage.write_bytes(b"this is not a checkpoint\n" * 10)
    torch.save({"conv1.weight": Unsafe()}, unsafe)
    empty.write_bytes(b"")
    torch.save({"conv1.weight": torch.ones(8)}, cut)
    cut.write_bytes(cut.read_bytes()[:300])
    for path in (garbage, unsafe, empty, cut):
        with pytest.raises(NetworkError) as error:
            load_backbone("resnet18", str(path))
        assert str(error.value) == (f"cannot read weights file {path}: not a PyTorch file of plain tensors "
                                    "(damaged, truncated, or holding objects that a safe load refuses)")


def test_weights_file_that_is_not_a_state_dict(tmp_path):
    for index, content in enumerate(([1, 2, 3], {"conv1.weight": 3}, {"state_dict": [torch.ones(1)]})):
        path = tmp_path / f"odd{index}.pth"
        torch.save(content, path)
        with pytest.raises(NetworkError, match=rf"^weights file {re.escape(str(path))} is not a state dict "
                                               r"\(a mapping of names to tensors\)$"):
            load_backbone("resnet18", str(path))


def test_weights_file_with_missing_and_unexpected_keys(backbones, tmp_path):
    state = dict(backbones["resnet18"].state_dict())
    for name in ("conv1.weight", "bn1.weight", "bn1.bias", "bn1.running_mean", "layer4.1.bn2.bias"):
        del state[name]
    state["projection_head.0.weight"] = torch.ones(2)
    path = tmp_path / "partial.pth"
    torch.save(state, path)
    with pytest.raises(NetworkError) as error:
        load_backbone("resnet18", str(path))
    assert str(error.value) == (f"weights file {path} does not fit resnet18: 5 keys missing (first: conv1.weight, "
                                "bn1.weight, bn1.bias, ...), 1 unexpected (first: projection_head.0.weight)")


def test_weights_file_of_another_architecture(backbones, tmp_path):
    path = tmp_path / "r18.pth"
    torch.save(backbones["resnet18"].state_dict(), path)
    with pytest.raises(NetworkError, match=rf"^weights file {re.escape(str(path))} looks like another "
                                           r"architecture: a resnet18 state dict, not resnet50$"):
        load_backbone("resnet50", str(path))
    state = dict(backbones["resnet18"].state_dict())
    state["layer1.0.conv1.weight"] = torch.ones(64, 64, 1, 1)
    torch.save(state, path)
    with pytest.raises(NetworkError, match=rf"^weights file {re.escape(str(path))} looks like another architecture "
                                           r"than resnet18: layer1\.0\.conv1\.weight has shape \[64, 64, 1, 1\], "
                                           r"resnet18 expects \[64, 64, 3, 3\]$"):
        load_backbone("resnet18", str(path))


@pytest.mark.parametrize("bad_value", [float("nan"), float("inf")])
def test_weights_file_with_a_non_finite_value(backbones, tmp_path, bad_value):
    state = dict(backbones["resnet18"].state_dict())
    state["fc.weight"] = torch.full((1000, 512), float("nan"))  # the unused head is not checked
    for key in ("layer1.0.conv1.weight", "layer3.1.bn2.running_var"):
        state[key] = state[key].clone()
        state[key].view(-1)[5] = bad_value
    path = tmp_path / "bad.pth"
    torch.save(state, path)
    with pytest.raises(NetworkError) as error:
        load_backbone("resnet18", str(path))
    assert str(error.value) == f"weights file {path} holds a non-finite value (NaN or inf) in layer1.0.conv1.weight"


def test_offline_imagenet_says_what_to_do(monkeypatch, tmp_path):
    def offline(*args, **kwargs):
        raise urllib.error.URLError("no route to host")

    monkeypatch.setenv("TORCH_HOME", str(tmp_path))  # an empty cache: the weights must be downloaded
    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    with pytest.raises(NetworkError, match=r"^cannot download the ImageNet weights for resnet18 \(offline\? "
                                           r"no route to host\); use --weights PATH \(a saved state dict\) "
                                           r"or --weights none \(random weights\)$"):
        load_backbone("resnet18", "imagenet")


def test_backbone_ids(tmp_path):
    path = tmp_path / "w.pth"
    path.write_bytes(b"some weights")
    for arch in ("resnet50", "resnet18"):
        assert backbone_id(arch, "imagenet") == "imagenet:IMAGENET1K_V1"
        assert backbone_id(arch, "none") == "none:seed0"
        assert backbone_id(arch, str(path)) == f"file:w.pth:{hashlib.sha256(b'some weights').hexdigest()[:16]}"
    with pytest.raises(NetworkError, match=r"^weights file not found: "):
        backbone_id("resnet18", str(tmp_path / "absent.pth"))


def test_masks_pack_to_one_bit_per_weight_and_back():
    from network import pack_bits, state_bytes, unpack_bits
    mask = torch.rand(64, 3, 7, 7, generator=torch.Generator().manual_seed(0)) > 0.3
    packed = pack_bits(mask)
    assert packed.dtype == torch.uint8 and packed.numel() == (64 * 3 * 49 + 7) // 8
    assert torch.equal(unpack_bits(packed, mask.shape), mask)
    assert pack_bits(torch.tensor([True, False, False, False, False, False, False, True, True])).tolist() == [129, 128]
    assert state_bytes({"mask": packed, "head": torch.zeros(10, 4)}) == packed.numel() + 160
    with pytest.raises(ValueError, match="cannot hold"):
        unpack_bits(packed[:-1], mask.shape)
