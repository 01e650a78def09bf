"""Where each method's layers go on networks other than the ResNets, each case on a tiny instance of a real
architecture: squeeze-excite 1x1 convs, depthwise and grouped convs, TF "same"-padding convs, norm layers other than
BatchNorm2d (and none at all), layer scale, and classifiers that are not a single ``fc``."""
from types import SimpleNamespace

import pytest
import torch
from torch import nn

import continual  # noqa: F401  (the shared-backbone methods register as it is imported)
from continual.packnet import OwnedWeightsConv
from continual.psp import ContextConv
from network import (REGISTRY, Family, MultiHeadModel, build_model, classifier_name, feature_extractor, load_backbone,
                     method_options, parameter_cost, task_state, shared_bn_of)
from network.layers import NORM_LAYERS, ReprogrammedConv
from network.masks import piggyback_conv
from training.settings import Recipe

timm = pytest.importorskip("timm")


def x(size: int = 32, count: int = 2) -> torch.Tensor:
    return torch.randn(count, 3, size, size, generator=torch.Generator().manual_seed(0))


def reprogrammed(model: nn.Module) -> dict[str, ReprogrammedConv]:
    return {name: module for name, module in model.named_modules() if isinstance(module, ReprogrammedConv)}


@pytest.fixture(scope="module")
def mobilenet() -> nn.Module:
    """torchvision's MobileNetV3-small: depthwise convs, squeeze-excite 1x1 convs on pooled maps, Hardswish, and a
    classifier Sequential whose last layer is the head."""
    return load_backbone("mobilenet_v3_small", "none")


def test_clr_goes_after_every_spatial_conv_and_clr_full_after_every_conv(mobilenet):
    all_convs = {name: conv for name, conv in mobilenet.named_modules() if isinstance(conv, nn.Conv2d)}
    spatial = {name for name, conv in all_convs.items() if conv.kernel_size != (1, 1)}
    squeeze_excite = {name for name in all_convs if ".fc1" in name or ".fc2" in name}
    assert squeeze_excite and all(all_convs[name].kernel_size == (1, 1) for name in squeeze_excite)
    clr = reprogrammed(build_model(mobilenet, "Ghost_reduced_v1", 4))
    assert set(clr) == spatial  # the stem and every depthwise conv; no squeeze-excite conv (1x1)
    full = reprogrammed(build_model(mobilenet, "Ghost", 4))
    assert set(full) == set(all_convs)  # squeeze-excite included: a 3x3 on a 1x1 map, only its centre tap counts


def test_a_clr_kernel_after_a_depthwise_conv_costs_what_the_conv_costs(mobilenet):
    for name, layer in reprogrammed(build_model(mobilenet, "Ghost_reduced_v1", 4)).items():
        conv = layer.conv
        assert layer.clr.weight.shape == (conv.out_channels, 1, 3, 3)
        if conv.groups == conv.in_channels == conv.out_channels and conv.kernel_size == (3, 3):  # depthwise 3x3
            assert layer.clr.weight.numel() == conv.weight.numel(), name


def test_grouped_convs_get_a_depthwise_kernel_over_their_outputs():
    regnet = load_backbone("regnet_x_400mf", "none")
    grouped = {name: conv for name, conv in regnet.named_modules()
               if isinstance(conv, nn.Conv2d) and 1 < conv.groups < conv.in_channels}
    assert grouped
    layers = reprogrammed(build_model(regnet, "Ghost_reduced_v1", 3))
    for name, conv in grouped.items():
        assert layers[name].clr.weight.shape == (conv.out_channels, 1, 3, 3)


@pytest.mark.parametrize("method", ["Ghost_reduced_v1", "Ghost", "Ghost_reduced_v2", "Ghost_a", "Piggyback"])
def test_a_fresh_task_computes_the_backbone_on_other_networks(mobilenet, method):
    model = build_model(mobilenet, method, 4)
    with torch.no_grad():
        assert torch.equal(model.pooled_features(x()), feature_extractor(mobilenet)(x()))


def test_a_classifier_sequential_keeps_its_hidden_layers_and_gets_the_task_head(mobilenet):
    assert classifier_name(mobilenet) == "classifier.3"
    model = build_model(mobilenet, "Ghost_reduced_v1", 7)
    assert model.head_name == "classifier.3" and model.task_head.out_features == 7
    assert not model.classifier[0].weight.requires_grad  # the pretrained pre-logits layer stays the backbone's
    assert model(x()).shape == (2, 7)
    assert set(parameter_cost(model).__dict__) == {"trainable", "head", "backbone", "percent"}
    assert parameter_cost(model).head == 7 * (1024 + 1)


def test_tf_same_padding_convs_are_called_not_reimplemented():
    """timm's Conv2dSame pads asymmetrically in its own forward; every wrapper that runs a conv with other weights
    (Piggyback's and SupSup's masks, PSP's contexts, PackNet's owned weights) calls the module, so an all-ones mask,
    context or ownership computes exactly the conv, at an odd size where "same" padding is asymmetric."""
    conv = timm.layers.Conv2dSame(4, 6, 3, stride=2)
    inputs = torch.randn(1, 4, 9, 9)
    with torch.no_grad():
        expected = conv(inputs)
        assert torch.equal(piggyback_conv(conv, threshold=5e-3, score_init=1e-2, lr=1e-4)(inputs), expected)
        assert torch.equal(ContextConv(conv)(inputs), expected)
        assert torch.equal(OwnedWeightsConv(conv)(inputs), expected)


@pytest.fixture(scope="module")
def efficientnet() -> nn.Module:
    """timm's test EfficientNet with TF "same" padding: Conv2dSame and BatchNormAct2d (BN with its activation)."""
    return load_backbone("timm:test_efficientnet", "none")


def test_timm_norm_act_layers_are_the_tasks_and_keep_eps_and_momentum(efficientnet):
    assert any(isinstance(m, timm.layers.BatchNormAct2d) for m in efficientnet.modules())
    model = build_model(efficientnet, "Ghost_reduced_v1", 3)
    state = task_state(model)
    assert "bn1.running_mean" in state and "bn1.weight" in state and model.head_name == "classifier"
    originals = {name: m for name, m in efficientnet.named_modules() if isinstance(m, NORM_LAYERS)}
    for name, module in model.named_modules():
        if isinstance(module, NORM_LAYERS):
            assert (module.eps, module.momentum) == (originals[name].eps, originals[name].momentum)
    linear = build_model(efficientnet, "Linear", 3).train()
    assert not any(m.training for m in linear.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm))
    with torch.no_grad():
        assert torch.equal(model.pooled_features(x(33)), feature_extractor(efficientnet)(x(33)))


def test_layer_norm_and_layer_scale_of_convnext():
    """ConvNeXt's LayerNorm is a norm layer like BN (the task's, affine only: it keeps no statistics); its layer
    scale (gamma) is a backbone weight, frozen under CLR and trained only by the methods that train everything."""
    convnext = load_backbone("timm:test_convnext", "none")
    assert classifier_name(convnext) == "head.fc"
    model = build_model(convnext, "Ghost_reduced_v1", 3)
    trained = {name for name, p in model.named_parameters() if p.requires_grad}
    layer_norms = {f"{name}.{key}" for name, m in convnext.named_modules() if isinstance(m, nn.LayerNorm)
                   for key in ("weight", "bias")}
    assert layer_norms and layer_norms <= trained
    assert not any(name.endswith("gamma") for name in trained)
    assert any(name.endswith("gamma") for name, p in build_model(convnext, "Finetune", 3).named_parameters()
               if p.requires_grad)
    supsup = build_model(convnext, "SupSup", 3)
    assert all(m.weight is None for m in supsup.modules() if isinstance(m, nn.LayerNorm))
    assert supsup(x()).shape == (2, 3)


def test_group_norm_is_a_norm_layer_too():
    model = build_model(load_backbone("timm:test_efficientnet_gn", "none"), "Ghost_reduced_v1", 3)
    assert any(isinstance(m, nn.GroupNorm) and m.weight.requires_grad for m in model.modules())


def test_a_network_without_norm_layers():
    """A plain conv net with no norm at all (a small VGG-style stack): the task keeps its CLR kernels and its head."""
    network = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(8, 16, 3, padding=1),
                            nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 10)).requires_grad_(False)
    model = build_model(network, "Ghost_reduced_v1", 4)
    assert set(task_state(model)) == {"0.clr.weight", "3.clr.weight", "7.weight", "7.bias"}
    with torch.no_grad():
        assert torch.equal(model.pooled_features(x()), feature_extractor(network)(x()))


def test_the_shared_backbone_model_on_a_timm_network(efficientnet):
    model = MultiHeadModel.of(efficientnet)
    model.add_head(3)
    model.add_head(5)
    assert model(x(), task=0).shape == (2, 3) and model(x()).shape == (2, 5)
    assert set(model.head_state(1)) == {"classifier.weight", "classifier.bias"}
    with torch.no_grad():
        assert torch.equal(model.eval().pooled_features(x()), feature_extractor(efficientnet)(x()))


@pytest.mark.parametrize("arch", ["mobilenet_v3_small", "timm:test_convnext", "timm:test_efficientnet"])
def test_every_method_runs_on_other_networks_or_refuses_in_one_line(arch):
    """One training step of every method's model on each network; li18/li50 refuse it (ResNet-only)."""
    backbone = load_backbone(arch, "none")
    for method, spec in REGISTRY.items():
        if spec.arch is not None:
            with pytest.raises(Exception, match=rf"^--method {method} means --arch {spec.arch}, not {arch}"):
                build_model(backbone, method, 3)
            continue
        if spec.family is Family.ISOLATED:
            model = build_model(backbone, method, 3)
        else:
            ctx = SimpleNamespace(backbone=backbone, recipe=Recipe(), options=method_options(method), device="cpu",
                                  image_size=32, shared_bn=shared_bn_of(method, None))
            model = spec.implementation(ctx).build_model()
            model.add_head(3)
        model.train()
        torch.nn.functional.cross_entropy(model(x()), torch.tensor([0, 2])).backward()
        assert any(p.grad is not None for p in model.parameters() if p.requires_grad), method


def test_a_network_whose_own_submodule_a_model_needs_is_refused_in_one_line():
    """torchvision's ViT keeps its classifier in ``heads``, the name of the shared-backbone model's heads."""
    class WithHeads(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 3)
            self.heads = nn.Sequential(nn.Linear(4, 10))

        def forward(self, images: torch.Tensor) -> torch.Tensor:
            return self.heads(self.conv(images).mean((2, 3)))

    with pytest.raises(Exception, match=r"^cannot reprogram a WithHeads: its own submodule 'heads' has a name that "
                                        r"the MultiHeadModel needs$"):
        MultiHeadModel.of(WithHeads())
    assert build_model(WithHeads(), "Ghost_reduced_v1", 3)(x()).shape == (2, 3)  # a task model needs no ``heads``
