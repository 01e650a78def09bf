"""The task-layer protocol: a new kind of layer, declared through ``TaskLayer`` alone, is trained, penalised, given
its own rate, counted, stored and restored as it declares, with no edit to TaskModel or network.state."""
import pytest
import torch
from torch import nn

from common.errors import NetworkError
from network import (build_model, load_backbone, load_task_state, parameter_cost, stored_state, task_state)
from network.layers import TaskLayer
from network.methods import ISOLATED, REGISTRY, MethodSpec, TaskLayers
from training.loop import l2_norm_penalty

SCALE_RATE = 0.25  # the scales' own Adam rate, far from the run's
RUN_RATE = 1e-3


class ScaledConv(TaskLayer):
    """``conv(x) * scale + shift``: the scale trains at its own rate and is stored at half precision, the shift is
    left out of the norm penalty."""

    trained = ("scale", "shift")
    unpenalised = ("shift",)
    stored_as = {"scale": "scale_half"}

    def __init__(self, conv: nn.Conv2d, rate: float) -> None:
        super().__init__()
        self.conv = conv
        self.scale = nn.Parameter(torch.ones(1, conv.out_channels, 1, 1))
        self.shift = nn.Parameter(torch.zeros(1, conv.out_channels, 1, 1))
        self.rate = rate

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x) * self.scale + self.shift

    def own_rates(self) -> dict[str, float]:
        return {"scale": self.rate}

    def stored_form(self, name: str) -> torch.Tensor:
        return self.scale.detach().half()

    def decode_stored(self, name: str, stored: torch.Tensor) -> torch.Tensor:
        if stored.dtype != torch.float16 or stored.shape != self.scale.shape:
            raise ValueError(f"a half-precision scale of shape {list(self.scale.shape)} expected")
        return stored.float()

    def load_decoded(self, name: str, decoded: torch.Tensor) -> None:
        with torch.no_grad():
            self.scale.copy_(decoded)


@pytest.fixture(scope="module")
def backbone() -> nn.Module:
    return load_backbone("resnet18", "none")


@pytest.fixture
def toy(monkeypatch) -> str:
    """A method that puts a ScaledConv after every conv, its norm layers frozen (only the layers and the head
    train)."""
    spec = MethodSpec("Toy", ISOLATED, "a scale and a shift after every conv, a head", "this test", order=999,
                      layers=TaskLayers(lambda conv, options: ScaledConv(conv, SCALE_RATE), norm="frozen"))
    monkeypatch.setitem(REGISTRY, "Toy", spec)
    return "Toy"


def scaled(model: nn.Module) -> dict[str, ScaledConv]:
    return {name: module for name, module in model.named_modules() if isinstance(module, ScaledConv)}


def test_the_declared_tensors_train_each_at_its_rate_and_the_penalty_skips_the_shifts(backbone, toy):
    torch.manual_seed(0)
    model = build_model(backbone, toy, 3)
    layers = scaled(model)
    assert len(layers) == 20  # every conv of a ResNet-18, the downsample 1x1s included
    scales = [layer.scale for layer in layers.values()]
    shifts = [layer.shift for layer in layers.values()]
    head = list(model.fc.parameters())
    trained = [p for p in model.parameters() if p.requires_grad]
    assert {id(p) for p in trained} == {id(p) for p in [*scales, *shifts, *head]}
    groups = model.optimizer_groups(RUN_RATE)
    assert [group["lr"] for group in groups] == [RUN_RATE, SCALE_RATE]
    assert [id(p) for p in groups[0]["params"]] == [id(p) for p in trained if not any(p is s for s in scales)]
    assert [id(p) for p in groups[1]["params"]] == [id(p) for p in scales]
    assert [id(p) for p in model.penalised_parameters()] == [
        id(p) for p in trained if not any(p is s for s in shifts)]
    assert parameter_cost(model).trainable == sum(p.numel() for p in [*scales, *shifts, *head])

    optimizer = torch.optim.Adam(groups)
    model.train()
    loss = nn.functional.cross_entropy(model(torch.randn(4, 3, 32, 32)), torch.tensor([0, 1, 2, 0]))
    loss = loss + l2_norm_penalty(model.penalised_parameters())
    loss.backward()
    optimizer.step()
    # Adam's first step moves an element by its group's rate times g / (|g| + eps): by the rate, unless its
    # gradient is tiny, and never by more
    for steps, rate in ((torch.cat([(s - 1).abs().flatten() for s in scales]), SCALE_RATE),
                        (torch.cat([s.abs().flatten() for s in shifts]), RUN_RATE)):
        assert steps.max() <= rate * (1 + 1e-6)
        assert torch.isclose(steps.median(), torch.tensor(rate), rtol=1e-4)


def test_the_record_keeps_each_tensor_in_its_declared_form_and_gives_it_back(backbone, toy):
    torch.manual_seed(0)
    trained = build_model(backbone, toy, 3)
    with torch.no_grad():
        for layer in scaled(trained).values():
            layer.scale.copy_(torch.randn_like(layer.scale))
            layer.shift.copy_(torch.randn_like(layer.shift))
    full, stored = task_state(trained), stored_state(trained)
    # the same tensors in the same order, each scale as its half-precision form under the declared name
    assert list(stored) == [name.removesuffix(".scale") + ".scale_half" if name.endswith(".scale") else name
                            for name in full]
    for name, layer in scaled(trained).items():
        assert stored[f"{name}.scale_half"].dtype == torch.float16
        assert torch.equal(stored[f"{name}.scale_half"], layer.scale.detach().half())
        assert torch.equal(stored[f"{name}.shift"], layer.shift.detach())

    for state, rounded in ((stored, True), (full, False)):  # either form restores
        fresh = build_model(backbone, toy, 3)
        load_task_state(fresh, state)
        for name, layer in scaled(fresh).items():
            scale = scaled(trained)[name].scale.detach()
            assert torch.equal(layer.scale.detach(), scale.half().float() if rounded else scale)
            assert torch.equal(layer.shift.detach(), scaled(trained)[name].shift.detach())
        assert torch.equal(fresh.fc.weight, trained.fc.weight)

    name = next(iter(scaled(trained)))
    with pytest.raises(NetworkError, match=rf"^task state tensor {name}\.scale_half does not fit its layer: a "
                                           r"half-precision scale of shape \[1, 64, 1, 1\] expected$"):
        load_task_state(build_model(backbone, toy, 3), stored | {f"{name}.scale_half": torch.zeros(1, 64, 1, 1)})


def test_a_layer_that_declares_a_tensor_it_lacks_is_refused():
    class Misspelt(ScaledConv):
        trained = ("scale", "shfit")

    with pytest.raises(ValueError, match="Misspelt declares trained tensors it does not have: shfit"):
        Misspelt(nn.Conv2d(2, 3, 1), SCALE_RATE).task_parameters()
