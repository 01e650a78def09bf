"""Any torchvision classification model or timm model as the shared backbone: its classifier, its features, its
weights (random, from a file, offline ImageNet), its input config, and the names and models it refuses."""
import re
import sys

import pytest
import torch
from torch import nn
from torchvision import models
from torchvision.models.convnext import CNBlockConfig

from common.errors import NetworkError
from network.backbone import (DEFAULT_ARCH, InputConfig, arch_of, backbone_id, check_arch, classifier_name,
                              feature_extractor, input_config, load_backbone, parameter_count, weights_of)
from tests.helpers import seeded_and_frozen

timm = pytest.importorskip("timm")  # the code runs without it (see the last test); these tests use its models
IMAGENET = InputConfig(mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225), native_size=224,
                       source="torchvision ResNet50_Weights.IMAGENET1K_V1")


def images(count: int = 2, size: int = 32, seed: int = 0) -> torch.Tensor:
    return torch.randn(count, 3, size, size, generator=torch.Generator().manual_seed(seed))


def meta_torchvision(arch: str) -> nn.Module:
    """The structure of a torchvision model, without the cost of its weights."""
    with torch.device("meta"):
        return models.get_model(arch)


def meta_timm(name: str) -> nn.Module:
    with torch.device("meta"):
        return timm.create_model(name)


def perturbed(model: nn.Module, seed: int = 1) -> dict[str, torch.Tensor]:
    """The model's state with every floating tensor moved off its seeded init, so a load that silently kept the
    init would be seen."""
    generator = torch.Generator().manual_seed(seed)
    return {name: tensor + torch.rand(tensor.shape, generator=generator) if tensor.is_floating_point() else tensor
            for name, tensor in model.state_dict().items()}


def assert_one_line_error(call, expected: str) -> None:
    with pytest.raises(NetworkError) as error:
        call()
    assert str(error.value) == expected
    assert "\n" not in str(error.value)


# ---- the classifier and the features ------------------------------------------------------------------------

@pytest.mark.parametrize("build, name", [
    (lambda: meta_torchvision("resnet18"), "fc"),
    (lambda: meta_torchvision("mobilenet_v3_large"), "classifier.3"),
    (lambda: meta_torchvision("efficientnet_b0"), "classifier.1"),
    (lambda: meta_torchvision("convnext_tiny"), "classifier.2"),
    (lambda: meta_torchvision("densenet121"), "classifier"),
    (lambda: meta_torchvision("vgg16_bn"), "classifier.6"),
    (lambda: models.get_model("regnet_y_800mf"), "fc"),  # RegNet cannot be built on the meta device
    (lambda: meta_timm("efficientnet_lite0"), "classifier"),
    (lambda: meta_timm("legacy_xception"), "fc"),
    (lambda: meta_timm("convnext_atto"), "head.fc"),
])
def test_classifier_is_the_final_linear_layer(build, name):
    model = build()
    assert classifier_name(model) == name
    assert isinstance(model.get_submodule(name), nn.Linear)


def test_a_classifier_that_is_not_one_linear_layer_is_refused():
    assert_one_line_error(lambda: classifier_name(meta_torchvision("squeezenet1_0")),
                          "SqueezeNet's classifier (classifier.1) is a Conv2d, not a single nn.Linear: CLR replaces "
                          "it with each task's linear head")
    assert_one_line_error(lambda: load_backbone("squeezenet1_0", "none"),
                          "squeezenet1_0's classifier (classifier.1) is a Conv2d, not a single nn.Linear: CLR "
                          "replaces it with each task's linear head")
    distilled = meta_timm("deit_tiny_distilled_patch16_224")  # two heads, averaged: not one linear layer
    assert_one_line_error(lambda: classifier_name(distilled),
                          "VisionTransformerDistilled's classifier is a tuple of Linear, Linear, not a single "
                          "nn.Linear: CLR replaces it with each task's linear head")


def test_a_model_without_convolutions_is_refused():
    """NaFlexViT embeds its patches with a linear layer; the 86M-parameter model is refused before it is built."""
    assert_one_line_error(lambda: load_backbone("timm:naflexvit_base_patch16_gap", "none"),
                          "timm:naflexvit_base_patch16_gap has no convolutions: CLR reprograms conv layers")


def test_resnet_features_are_bit_identical_to_the_children_without_the_head():
    backbone = load_backbone("resnet18", "none")
    old = nn.Sequential(*list(backbone.children())[:-1], nn.Flatten()).eval()
    extractor = feature_extractor(backbone)
    with torch.no_grad():
        assert torch.equal(extractor(images()), old(images()))
    assert isinstance(backbone.fc, nn.Linear) and isinstance(extractor.fc, nn.Identity)
    assert not extractor.training and not any(p.requires_grad for p in extractor.parameters())


@pytest.mark.parametrize("build", [
    lambda: models.get_model("mobilenet_v3_small"),
    lambda: models.DenseNet(growth_rate=4, block_config=(1, 1, 1, 1), num_init_features=8),
    lambda: models.get_model("shufflenet_v2_x0_5"),
    lambda: models.ConvNeXt([CNBlockConfig(8, 16, 1), CNBlockConfig(16, None, 1)]),
    lambda: timm.create_model("test_convnext"),
    lambda: timm.create_model("test_efficientnet"),
])
def test_features_are_what_the_classifier_sees(build):
    model = build().eval()
    width = model.get_submodule(classifier_name(model)).in_features
    with torch.no_grad():
        features = feature_extractor(model)(images(size=64))
    assert features.shape == (2, width)


# ---- weights ------------------------------------------------------------------------------------------------

def test_random_resnet18_is_the_seeded_torchvision_init_and_leaves_the_rng_alone():
    torch.manual_seed(0)
    expected = models.get_model("resnet18").state_dict()
    torch.manual_seed(123)
    rng = torch.get_rng_state()
    backbone = load_backbone("resnet18", "none")
    assert torch.equal(rng, torch.get_rng_state())
    assert backbone.state_dict().keys() == expected.keys()
    assert all(torch.equal(tensor, backbone.state_dict()[name]) for name, tensor in expected.items())
    assert not backbone.training and not any(p.requires_grad for p in backbone.parameters())
    assert arch_of(backbone) == "resnet18" and parameter_count(backbone) == 11_689_512


def test_random_timm_backbone_is_deterministic():
    first = seeded_and_frozen("timm:test_efficientnet")
    assert arch_of(first) == "timm:test_efficientnet" and classifier_name(first) == "classifier"


@pytest.mark.parametrize("arch", ["mobilenet_v3_small", "timm:test_convnext"])
def test_state_dict_file_loads_exactly(arch, tmp_path):
    source = load_backbone(arch, "none")
    head = classifier_name(source)
    state = perturbed(source)
    wrapped = {f"module.{name}": tensor for name, tensor in state.items()
               if not name.startswith(f"{head}.") and not name.endswith("num_batches_tracked")}
    wrapped[f"module.{head}.weight"] = torch.ones(7, 3)  # a pretraining head of another shape: ignored
    path = tmp_path / "weights.pth"
    torch.save({"epoch": 3, "state_dict": wrapped}, path)
    loaded = load_backbone(arch, str(path))
    assert all(torch.equal(loaded.state_dict()[name], tensor) for name, tensor in state.items()
               if not name.startswith(f"{head}.") and not name.endswith("num_batches_tracked"))
    assert not loaded.training and not any(p.requires_grad for p in loaded.parameters())
    assert arch_of(loaded) == arch


def test_a_file_of_another_model_names_the_first_difference(tmp_path):
    path = tmp_path / "efficientnet.pth"
    torch.save(load_backbone("timm:test_efficientnet", "none").state_dict(), path)
    with pytest.raises(NetworkError) as error:
        load_backbone("timm:test_convnext", str(path))
    assert re.fullmatch(rf"weights file {re.escape(str(path))} does not fit timm:test_convnext: \d+ keys missing "
                        r"\(first: stem\.0\.weight, stem\.0\.bias, stem\.1\.weight, \.\.\.\), \d+ unexpected "
                        r"\(first: conv_stem\.weight, bn1\.weight, bn1\.bias, \.\.\.\)", str(error.value))
    state = load_backbone("mobilenet_v3_small", "none").state_dict()
    state["features.0.0.weight"] = torch.ones(16, 3, 5, 5)
    torch.save(state, path)
    assert_one_line_error(lambda: load_backbone("mobilenet_v3_small", str(path)),
                          f"weights file {path} looks like another architecture than mobilenet_v3_small: "
                          "features.0.0.weight has shape [16, 3, 5, 5], mobilenet_v3_small expects [16, 3, 3, 3]")


def logits_in_training(backbone: nn.Module, size: int) -> torch.Tensor:
    backbone.train()
    with torch.no_grad():
        return backbone(images(size=size))


def test_inception_v3_returns_plain_logits_in_training():
    backbone = load_backbone("inception_v3", "none")
    assert backbone.aux_logits is False and backbone.AuxLogits is None
    assert backbone.transform_input is True  # as torchvision builds it for its ImageNet weights
    logits = logits_in_training(backbone, size=75)  # its smallest input
    assert isinstance(logits, torch.Tensor) and logits.shape == (2, 1000)


def test_googlenet_file_with_auxiliary_heads_loads_and_returns_plain_logits_in_training(tmp_path):
    """torchvision's own googlenet file holds the auxiliary heads' tensors, as this one does."""
    with_aux = models.get_model("googlenet", aux_logits=True, init_weights=False).state_dict()
    path = tmp_path / "googlenet.pth"
    torch.save(with_aux, path)
    backbone = load_backbone("googlenet", str(path))
    assert all(torch.equal(tensor, with_aux[name]) for name, tensor in backbone.state_dict().items()
               if not name.startswith("fc."))
    assert backbone.aux_logits is False and backbone.aux1 is None and backbone.aux2 is None
    logits = logits_in_training(backbone, size=32)
    assert isinstance(logits, torch.Tensor) and logits.shape == (2, 1000)


def assert_imagenet_backbone_is(arch: str, state: dict[str, torch.Tensor]) -> None:
    rng = torch.get_rng_state()
    backbone = load_backbone(arch, "imagenet")
    assert torch.equal(rng, torch.get_rng_state())
    assert all(torch.equal(tensor, backbone.state_dict()[name]) for name, tensor in state.items())
    assert not backbone.training and not any(p.requires_grad for p in backbone.parameters())


def test_torchvision_imagenet_weights_come_from_torch_hubs_cache(monkeypatch, tmp_path):
    """Offline, from the file a first download leaves, read with weights_only=True."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    cached = tmp_path / "hub" / "checkpoints" / models.ResNet18_Weights.IMAGENET1K_V1.url.rsplit("/", 1)[-1]
    cached.parent.mkdir(parents=True)
    state = perturbed(models.get_model("resnet18"))
    torch.save(state, cached)
    assert_imagenet_backbone_is("resnet18", state)


def test_densenets_published_key_names_are_renamed(monkeypatch, tmp_path):
    """DenseNet's published weights say "denselayer1.norm.1" where the model says "norm1"."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    cached = tmp_path / "hub" / "checkpoints" / models.DenseNet121_Weights.IMAGENET1K_V1.url.rsplit("/", 1)[-1]
    cached.parent.mkdir(parents=True)
    state = perturbed(models.get_model("densenet121"))
    legacy = {re.sub(r"(denselayer\d+\.(?:norm|relu|conv))([12])\.", r"\1.\2.", key): value
              for key, value in state.items() if not key.endswith("num_batches_tracked")}  # older than torch 0.4
    assert "features.denseblock1.denselayer1.norm.1.weight" in legacy
    torch.save(legacy, cached)
    assert_imagenet_backbone_is("densenet121", state)


def test_timm_imagenet_weights_come_from_the_hub(monkeypatch, tmp_path):
    """Offline, from the file the Hugging Face hub hands timm, through timm's own loader."""
    from safetensors.torch import save_file
    hub_file = tmp_path / "model.safetensors"
    state = perturbed(timm.create_model("test_efficientnet"))
    save_file(state, hub_file)
    monkeypatch.setattr(timm.models._hub, "hf_hub_download", lambda *args, **kwargs: str(hub_file))
    assert_imagenet_backbone_is("timm:test_efficientnet", state)


def test_offline_timm_weights_say_what_to_do(monkeypatch):
    from huggingface_hub.errors import LocalEntryNotFoundError

    def offline(*args, **kwargs):
        raise LocalEntryNotFoundError("cannot reach the hub\nand the file is not in the cache")

    monkeypatch.setattr(timm.models._hub, "hf_hub_download", offline)
    assert_one_line_error(lambda: load_backbone("timm:test_efficientnet", "imagenet"),
                          "cannot download the ImageNet weights for timm:test_efficientnet (offline? cannot reach "
                          "the hub and the file is not in the cache); use --weights PATH (a saved state dict) or "
                          "--weights none (random weights)")


# ---- input config and ids -----------------------------------------------------------------------------------

def test_input_config_comes_from_the_weights_metadata_whatever_the_weights_option():
    assert input_config("resnet50") == IMAGENET  # one per architecture: --weights is not an argument
    assert input_config("resnet18").mean == IMAGENET.mean
    assert input_config("inception_v3").native_size == 299
    xception = input_config("timm:legacy_xception")
    assert xception == InputConfig(mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5), native_size=299,
                                   source="timm pretrained_cfg of legacy_xception.tf_in1k")
    assert input_config("timm:test_efficientnet").native_size == 160
    assert xception.as_record() == {"mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5], "native_size": 299,
                                    "source": "timm pretrained_cfg of legacy_xception.tf_in1k"}


def test_backbone_ids_and_back():
    assert backbone_id("resnet50", "imagenet") == "imagenet:IMAGENET1K_V1"
    assert backbone_id("vit_h_14", "imagenet") == "imagenet:IMAGENET1K_SWAG_E2E_V1"  # no V1: its DEFAULT
    assert backbone_id("timm:test_efficientnet", "imagenet") == "imagenet:timm/test_efficientnet.r160_in1k"
    assert backbone_id("timm:test_efficientnet", "none") == "none:seed0"
    for arch in ("resnet18", "timm:test_efficientnet"):
        assert weights_of(arch, backbone_id(arch, "imagenet")) == "imagenet"
        assert weights_of(arch, "none:seed0") == "none"
    assert_one_line_error(lambda: weights_of("timm:test_efficientnet", "imagenet:timm/test_efficientnet.old"),
                          "the tasks were trained on the backbone imagenet:timm/test_efficientnet.old, but "
                          "timm:test_efficientnet's ImageNet weights are now "
                          "imagenet:timm/test_efficientnet.r160_in1k: pass --weights with the path of the weights "
                          "they used")
    assert_one_line_error(lambda: backbone_id("timm:mobilenetv2_035", "imagenet"),
                          "timm:mobilenetv2_035 has no pretrained weights in timm; use --weights PATH (a saved state "
                          "dict) or --weights none (random weights)")


def test_unknown_names_are_refused_in_one_line():
    check_arch(DEFAULT_ARCH)
    check_arch("timm:test_efficientnet.r160_in1k")
    assert_one_line_error(lambda: check_arch("resnet34x"),
                          "unknown architecture 'resnet34x'; choose a torchvision classification model (e.g. "
                          "resnet50) or timm:NAME for a timm model (closest: resnet34, resnet50, resnet18)")
    assert_one_line_error(lambda: load_backbone("timm:test_efficientnetz", "none"),
                          "unknown timm model 'test_efficientnetz' (closest: test_efficientnet, "
                          "test_efficientnet_ln, test_efficientnet_gn)")
    assert_one_line_error(lambda: check_arch("timm:test_efficientnet.r999_in1k"),
                          "timm model test_efficientnet has no pretrained tag 'r999_in1k' (closest: "
                          "test_efficientnet.r160_in1k)")
    assert arch_of(nn.Sequential(nn.Conv2d(3, 4, 3))) == "Sequential"  # a user's own module: its class


def test_without_timm_only_timm_names_fail(monkeypatch):
    monkeypatch.setitem(sys.modules, "timm", None)  # what a machine without timm has: importing it fails
    assert_one_line_error(lambda: check_arch("timm:test_efficientnet"),
                          "timm:test_efficientnet needs timm, which is not installed: pip install timm")
    check_arch("mobilenet_v3_small")
    assert input_config("resnet50") == IMAGENET
    assert arch_of(load_backbone("resnet18", "none")) == "resnet18"
