"""EFT, added as one file (network/isolated/eft.py): the layer computes the paper's F' = spatial(F) + depth(F), a task
costs what the group sizes say, exactly its transformations, norm layers and head train, its state comes back bit
for bit, its options are the registry's, and main.py learns and verifies it end to end."""
import pytest
import torch
from torch import nn

import main
from network import (ParameterCost, build_model, load_backbone, load_task_state, method_options, parameter_cost,
                     state_bytes, stored_state, task_state)
from network.layers import NORM_LAYERS
from network.methods import LayerPolicy, options_markdown, policies_of_methods
from network.isolated.eft import FeatureTransform, group_size
from tests.helpers import TASKS, read_csv, read_csv_text, run_args, saved_states

BACKBONE_PARAMETERS = {"resnet50": 25_557_032, "resnet18": 11_689_512}
CONV_CHANNELS = {"resnet50": 26_560, "resnet18": 4_800}  # the output channels of every conv, summed
BN_AFFINE = {"resnet50": 53_120, "resnet18": 9_600}
FEATURES = {"resnet50": 2048, "resnet18": 512}


@pytest.fixture(scope="module")
def backbones() -> dict[str, nn.Module]:
    return {arch: load_backbone(arch, "none") for arch in BACKBONE_PARAMETERS}


def transforms(model: nn.Module) -> dict[str, FeatureTransform]:
    return {name: module for name, module in model.named_modules() if isinstance(module, FeatureTransform)}


def by_hand(features: torch.Tensor, layer: FeatureTransform) -> torch.Tensor:
    """F' written out element by element: output channel o sums the 3x3 taps over the ``a`` channels of its spatial
    group, and the 1x1 weights over the ``b`` channels of its depth group, plus both biases."""
    channels, height, width = features.shape
    a, b = channels // layer.spatial.groups, channels // layer.depth.groups
    padded = nn.functional.pad(features, (1, 1, 1, 1))
    out = torch.zeros_like(features)
    for o in range(channels):
        for y in range(height):
            for x in range(width):
                total = layer.spatial.bias[o] + layer.depth.bias[o]
                for k in range(a):
                    i = o // a * a + k
                    total = total + (layer.spatial.weight[o, k] * padded[i, y:y + 3, x:x + 3]).sum()
                for k in range(b):
                    i = o // b * b + k
                    total = total + layer.depth.weight[o, k, 0, 0] * features[i, y, x]
                out[o, y, x] = total
    return out


def test_the_layer_computes_the_papers_transformation_of_the_convs_output():
    torch.manual_seed(0)
    conv = nn.Conv2d(3, 4, 3, padding=1, bias=False)
    layer = FeatureTransform(conv, 2, 4)  # a = 2: two spatial groups of 2 channels; b = 4: one depth group
    assert layer.spatial.weight.shape == (4, 2, 3, 3) and layer.depth.weight.shape == (4, 4, 1, 1)
    x = torch.randn(1, 3, 4, 5)
    with torch.no_grad():
        features = conv(x)
        assert torch.equal(layer(x), features)  # a fresh layer is the identity
        for tensor in (layer.spatial.weight, layer.spatial.bias, layer.depth.weight, layer.depth.bias):
            tensor.copy_(torch.randn_like(tensor))
        assert torch.allclose(layer(x)[0], by_hand(features[0], layer), atol=1e-5)
        # one element in full: channel 3 sees channels 2 and 3 through the 3x3 taps and all four through the 1x1
        centre = (layer.spatial.weight[3] * nn.functional.pad(features[0, 2:], (1, 1, 1, 1))[:, 1:4, 2:5]).sum()
        point = (layer.depth.weight[3, :, 0, 0] * features[0, :, 1, 2]).sum()
        assert torch.isclose(layer(x)[0, 3, 1, 2], centre + point + layer.spatial.bias[3] + layer.depth.bias[3],
                             atol=1e-5)


@pytest.mark.parametrize("channels, asked, used", [(64, 8, 8), (64, 16, 16), (24, 16, 12), (40, 16, 10),
                                                   (4, 8, 4), (7, 8, 7), (7, 4, 1), (1, 16, 1)])
def test_a_group_size_that_does_not_divide_the_channels_becomes_their_largest_divisor_below_it(channels, asked,
                                                                                               used):
    assert group_size(channels, asked) == used


@pytest.mark.parametrize("arch", ["resnet18", "resnet50"])
@pytest.mark.parametrize("a, b", [(8, 16), (4, 32)])
def test_a_task_costs_what_the_group_sizes_say(backbones, arch, a, b):
    """Per channel of every conv: 9a spatial weights, b depth weights and two biases; then the norm layers' affine
    pairs and the head. On the ResNets every conv's channels are a multiple of 32, so no group size is changed."""
    classes = 7
    model = build_model(backbones[arch], "EFT", classes, {"eft_group_size": a, "eft_depth_group_size": b})
    layers = transforms(model)
    convs = [module for module in backbones[arch].modules() if isinstance(module, nn.Conv2d)]
    assert len(layers) == len(convs) and sum(conv.out_channels for conv in convs) == CONV_CHANNELS[arch]
    transformations = CONV_CHANNELS[arch] * (9 * a + b + 2)
    assert sum(p.numel() for layer in layers.values() for p in layer.task_parameters().values()) == transformations
    head = (FEATURES[arch] + 1) * classes
    trainable = transformations + BN_AFFINE[arch] + head
    assert parameter_cost(model) == ParameterCost(trainable, head, BACKBONE_PARAMETERS[arch],
                                                  100 * trainable / BACKBONE_PARAMETERS[arch])
    assert sum(t.numel() for t in task_state(model).values()) == trainable + BN_AFFINE[arch]  # + running statistics


def test_the_defaults_cost_on_resnet50_what_docs_methods_states(backbones):
    cost = parameter_cost(build_model(backbones["resnet50"], "EFT", 30))
    without_head = cost.trainable - cost.head
    assert without_head == 2_443_520 and round(100 * without_head / cost.backbone, 2) == 9.56
    assert cost.trainable == 2_504_990 and round(cost.percent, 2) == 9.80


def test_exactly_the_transformations_the_norm_layers_and_the_head_train(backbones):
    model = build_model(backbones["resnet18"], "EFT", 3).train()
    names = {name for name, module in model.named_modules() if isinstance(module, NORM_LAYERS)}
    expected = {f"{prefix}.{name}" for prefix, layer in transforms(model).items() for name in layer.trained}
    expected |= {f"{name}.{tensor}" for name in names for tensor in ("weight", "bias")} | {"fc.weight", "fc.bias"}
    assert len(expected) == 20 * 4 + 20 * 2 + 2  # four tensors after each of the 20 convs, BN's affine pairs, head
    assert {name for name, p in model.named_parameters() if p.requires_grad} == expected
    nn.functional.cross_entropy(model(torch.randn(4, 3, 32, 32)), torch.tensor([0, 1, 2, 0])).backward()
    assert {name for name, p in model.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0} == expected
    assert all(not layer.conv.weight.requires_grad for layer in transforms(model).values())
    assert [id(p) for p in model.penalised_parameters()] == [id(p) for p in model.parameters() if p.requires_grad]


def test_a_fresh_task_computes_the_backbone_on_a_depthwise_separable_network():
    """MobileNetV3's convs have 8 to 576 channels (and its squeeze-excite convs odd counts): every group size is
    fitted, and with the identity start the task computes exactly the backbone's features."""
    backbone = load_backbone("mobilenet_v3_small", "none")
    model = build_model(backbone, "EFT", 5)
    layers = transforms(model).values()
    assert len(layers) == sum(isinstance(m, nn.Conv2d) for m in backbone.modules())
    assert {(layer.conv.out_channels, layer.conv.out_channels // layer.depth.groups) for layer in layers
            if layer.conv.out_channels in (24, 88)} == {(24, 12), (88, 11)}
    reference = build_model(backbone, "Linear", 5)  # the backbone's own function, its head aside
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(model.pooled_features(x), reference.pooled_features(x))


def test_a_trained_task_comes_back_bit_identical_from_its_stored_state(backbones):
    torch.manual_seed(0)
    model = build_model(backbones["resnet18"], "EFT", 4)
    initial = task_state(model)
    optimizer = torch.optim.Adam(model.optimizer_groups(1e-2))
    model.train()
    nn.functional.cross_entropy(model(torch.randn(4, 3, 32, 32)), torch.tensor([0, 1, 2, 3])).backward()
    optimizer.step()
    model.eval()
    stored = stored_state(model)
    assert stored.keys() == initial.keys()  # kept as they are, no other form
    assert all(not torch.equal(stored[name], initial[name]) for name in stored
               if name.endswith((".spatial.weight", ".depth.weight", ".spatial.bias", ".depth.bias")))
    assert state_bytes(stored) == 4 * sum(t.numel() for t in stored.values())
    fresh = build_model(backbones["resnet18"], "EFT", 4)
    load_task_state(fresh, stored)
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(fresh(x), model(x))
    assert all(torch.equal(tensor, stored[name]) for name, tensor in task_state(fresh).items())


def test_the_options_are_registered_with_their_ranges(capsys):
    assert method_options("EFT") == {"eft_group_size": 8, "eft_depth_group_size": 16}
    assert "| `--eft-group-size` | `EFT` | 8 | [1, ∞) |" in options_markdown().splitlines()
    assert "| `--eft-depth-group-size` | `EFT` | 16 | [1, ∞) |" in options_markdown().splitlines()
    args = main.parse_args(["--method", "EFT", "--eft-group-size", "4", "--norm", "affine"])
    assert args.methods[0].options == {"eft_group_size": 4, "eft_depth_group_size": 16}
    assert args.methods[0].policy == LayerPolicy("affine", "every")  # EFT trains its norm layers: --norm applies
    assert policies_of_methods(["EFT"], None, None) == {"EFT": LayerPolicy("train", "every")}
    for argv, error in ((["--method", "EFT", "--eft-group-size", "0"], "argument --eft-group-size: must be in "
                         "[1, inf], got 0"),
                        (["--method", "EFT", "--eft-group-size", "2.5"], "argument --eft-group-size: expected a "
                         "number, got '2.5'"),
                        (["--method", "EFT", "--clr-placement", "skip-depthwise"], "--clr-placement applies to the "
                         "CLR variants")):
        with pytest.raises(SystemExit):
            main.parse_args(argv)
        assert error in capsys.readouterr().err
    assert "EFT: channels in each group of the 3x3 group-wise conv" in " ".join(
        main.get_args_parser().format_help().split())


@pytest.mark.slow
def test_main_learns_two_tasks_and_verifies_and_predicts_them_with_their_group_sizes(data, tmp_path, capsys):
    """Group sizes other than the defaults change the shapes of a task's tensors: the report's verification and
    --predict rebuild each task with the sizes it recorded."""
    argv = run_args(data, tmp_path, "--method", "EFT", "--epochs", "1", "--eft-group-size", "4",
                    "--eft-depth-group-size", "8")
    assert main.main(argv) == 0
    rows = read_csv(tmp_path / "result" / "EFT.csv")
    assert [row["task_name"] for row in rows] == TASKS
    records = saved_states(tmp_path)
    for task in TASKS:
        saved = records[f"{task}_EFT.pt"]
        classes = len(saved["label_map"])
        assert saved["config"]["eft_group_size"] == 4 and saved["config"]["eft_depth_group_size"] == 8
        assert saved["trainable_params"] == CONV_CHANNELS["resnet18"] * (9 * 4 + 8 + 2) + 9_600 + 513 * classes
        assert saved["state"]["layer4.1.conv2.spatial.weight"].shape == (512, 4, 3, 3)
        assert "layer4.1.conv2.conv.weight" not in saved["state"]
    report = (tmp_path / "result" / "report.md").read_text()
    assert ("2 task(s) re-loaded onto a freshly built backbone and re-evaluated on their validation split: all "
            "re-evaluated accuracies equal the recorded ones") in report
    task = TASKS[1]
    manifest = read_csv(tmp_path / "result" / task / "manifest.csv")
    items = [(str(data / row["path"]), int(row["label"])) for row in manifest if row["split"] == "val"]
    capsys.readouterr()
    assert main.main([*argv, "--predict", *[path for path, _ in items], "--task", task]) == 0
    predicted = read_csv_text(capsys.readouterr().out)
    correct = sum(int(row["label"]) == label for row, (_, label) in zip(predicted, items, strict=True))
    assert correct == records[f"{task}_EFT.pt"]["best_correct"] > 0
