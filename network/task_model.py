"""One task's model for an isolated method: a copy of the frozen backbone, reprogrammed as the method's spec says,
with the task's own head; and the interface the fit loop relies on, which the shared-backbone model offers too."""
import copy
import functools
from collections.abc import Iterator
from typing import Protocol

import torch
from torch import nn

from common.errors import NetworkError
from network.backbone import arch_of, classifier_name, parameter_count
from network.layers import NORM_LAYERS, TaskLayer, freeze_norm_statistics, owned_parameters, replace_convs
from network.methods import LayerPolicy, implied, method_options, method_spec


class TrainableModel(Protocol):
    """What the fit loop needs of a model: a forward, train/eval modes, the tensors its norm penalty covers and its
    optimizer's parameter groups (a task model and the shared-backbone model both offer them)."""

    def __call__(self, x: torch.Tensor) -> torch.Tensor: ...

    def train(self, mode: bool = True) -> nn.Module: ...

    def eval(self) -> nn.Module: ...

    def parameters(self, recurse: bool = True) -> Iterator[nn.Parameter]: ...

    def penalised_parameters(self) -> list[nn.Parameter]: ...

    def optimizer_groups(self, lr: float) -> list[dict]: ...


class TaskModel(nn.Module):
    """One task's model: the backbone's own network, reprogrammed per method, with the task's head in place of its
    classifier.

    A task model is the backbone's own class with this one mixed in (see ``mix_into``), so it computes
    with the backbone's own forward and keeps the backbone's module names: on a torchvision ResNet a CLR kernel is
    ``layer1.0.conv2.clr.weight``, an adapter ``layer1.0.conv1.adapter.weight``, a Ghost_a gate
    ``layer1.0.conv1.gate`` and the head ``fc.weight``; on another network the head has its classifier's name
    (``classifier.3`` on MobileNetV3).
    """

    method: str
    arch: str
    num_classes: int
    head_name: str  # the classifier's module name, where the task's head is
    backbone_parameters: int  # of the plain backbone, for parameter_cost
    policy: LayerPolicy  # its norm policy and CLR placement
    options: dict[str, int | float]  # the method's options it was built with

    @property
    def task_head(self) -> nn.Linear:
        return self.get_submodule(self.head_name)

    def pooled_features(self, x: torch.Tensor) -> torch.Tensor:
        """The pooled features the head sees: its input, taken on the way through the network's own forward."""
        taken = []
        hook = self.task_head.register_forward_hook(lambda module, inputs, output: taken.append(inputs[0]))
        try:
            self(x)
        finally:
            hook.remove()
        return taken[0]

    def train(self, mode: bool = True) -> "TaskModel":
        """BN uses batch statistics while training, except where the task keeps the backbone's statistics (Linear,
        li18, li50, and --norm frozen or affine), as the release does by training Linear in eval mode."""
        super().train(mode)
        if not self.policy.trains_norm_statistics:
            freeze_norm_statistics(self)
        return self

    def task_modules(self) -> Iterator[tuple[str, nn.Module]]:
        """(name, module) of each module that holds tensors of this task: every task layer, the head, the norm
        layers where the policy gives them to the task, every module where the task trains every weight. What one
        holds is its ``owned_parameters``, and a norm layer's running statistics where the policy trains them."""
        layers = method_spec(self.method).layers
        head = self.task_head
        for name, module in self.named_modules():
            if (module is head or layers.trains_all or isinstance(module, TaskLayer)
                    or (self.policy.owns_norm_layers and isinstance(module, NORM_LAYERS))):
                yield name, module

    def penalised_parameters(self) -> list[nn.Parameter]:
        """The tensors of the norm penalty, in the optimizer's order: everything the task trains except what its
        layers leave out (Ghost_a's gates, the masks' scores)."""
        excluded = {id(layer.task_parameters()[name]) for layer in _task_layers(self) for name in layer.unpenalised}
        return [p for p in self.parameters() if p.requires_grad and id(p) not in excluded]

    def optimizer_groups(self, lr: float) -> list[dict]:
        """Adam's parameter groups, each in the model's parameter order: everything the task trains at ``lr``, then
        one group for each rate that its layers give some of their tensors (Piggyback's scores)."""
        own_rates = {id(layer.task_parameters()[name]): rate for layer in _task_layers(self)
                     for name, rate in layer.own_rates().items()}
        trained = [p for p in self.parameters() if p.requires_grad]
        return [{"params": [p for p in trained if id(p) not in own_rates], "lr": lr},
                *({"params": [p for p in trained if own_rates.get(id(p)) == rate], "lr": rate}
                  for rate in dict.fromkeys(own_rates.values()))]


def _task_layers(model: nn.Module) -> list[TaskLayer]:
    return [module for module in model.modules() if isinstance(module, TaskLayer)]


def mix_into(network: nn.Module, mixin: type, members: tuple[str, ...]) -> None:
    """Make ``network`` an instance of its own class with ``mixin``'s methods in front: a task model (or the
    shared-backbone model) is the backbone's own network, computing with its own forward, plus what the fit loop
    and the task's state need. ``members`` are the names the mixin adds; a network whose own submodule, parameter or
    buffer has one of them (torchvision's ViT has ``heads``) cannot take it, and is refused in one line."""
    if hasattr(type(network), "mixed_into"):
        raise NetworkError(f"the backbone is already a task's or a sequence's model ({type(network).__name__}): pass "
                           "the plain backbone")
    mine = (set(vars(mixin)) - {"__module__", "__doc__", "__annotations__", "__qualname__", "__dict__", "__weakref__",
                                "train", "forward"}) | set(members)
    taken = {name for module in (network,) for name in (*module._modules, *module._parameters, *module._buffers)}
    if mine & taken:
        clashes = ", ".join(repr(name) for name in sorted(mine & taken))
        raise NetworkError(f"cannot reprogram a {type(network).__name__}: its own submodule {clashes} has a name "
                           f"that the {mixin.__name__} needs")
    network.__class__ = _mixed_class(mixin, type(network))


@functools.cache
def _mixed_class(mixin: type, network_class: type) -> type:
    return type(f"{mixin.__name__}[{network_class.__name__}]", (mixin, network_class),
                {"__module__": __name__, "mixed_into": network_class})


_TASK_MODEL_MEMBERS = ("method", "arch", "head_name", "backbone_parameters", "policy", "options")  # set on each


def build_model(backbone: nn.Module, method: str, num_classes: int, options: dict[str, int | float] | None = None,
                policy: LayerPolicy | None = None) -> TaskModel:
    """A new model for one task, in eval mode; ``backbone`` itself is never modified.

    It starts from a copy of the backbone (its norm layers' parameters and statistics included), the method's fresh
    task layers and a fresh head in place of the backbone's classifier, and exactly the task-specific tensors
    require gradients. Layers with PyTorch's
    default init (Ghost_a, li18, li50, SupSup's scores) and the head draw on the global random state: seed it
    first. ``options`` are the method's hyper-parameters, checked against the registry (default: its defaults),
    ``policy`` its norm policy and CLR placement (None: the method's own); a saved task is rebuilt with the ones it
    recorded, since options may decide the shapes of its tensors (a layer's group size).
    """
    spec = method_spec(method)
    if spec.layers is None:
        raise NetworkError(f"--method {method} trains one backbone across the tasks: it has no per-task model")
    if num_classes < 1:
        raise NetworkError(f"a task needs at least one class, got {num_classes}")
    values = method_options(method, options)
    policy = policy or spec.layers.policy()
    if spec.layers.policy(policy.norm, policy.clr_placement) != policy:
        raise NetworkError(f"--method {method} cannot take --norm {policy.norm} with --clr-placement "
                           f"{policy.clr_placement} (docs/methods.md: norm policy and CLR placement)")
    arch = arch_of(backbone)
    implied(spec, "--arch", arch, spec.arch, arch)  # li18 / li50 refuse any other architecture
    head_name = classifier_name(backbone)
    network = copy.deepcopy(backbone)
    if spec.layers.reprogram is not None:
        replace_convs(network, lambda conv: None if policy.skips_kernel_after(conv)
                      else spec.layers.reprogram(conv, values))
    if not spec.layers.affine_norm:
        _drop_norm_affine(network)
    old_head = network.get_submodule(head_name)
    network.set_submodule(head_name, nn.Linear(old_head.in_features, num_classes, device=old_head.weight.device,
                                               dtype=old_head.weight.dtype))
    mix_into(network, TaskModel, _TASK_MODEL_MEMBERS)
    model: TaskModel = network
    model.method, model.arch, model.num_classes, model.head_name = method, arch, num_classes, head_name
    model.backbone_parameters = parameter_count(backbone)
    model.policy, model.options = policy, values
    model.requires_grad_(False)
    for _, module in model.task_modules():
        for parameter in owned_parameters(module).values():
            parameter.requires_grad_(True)
    return model.eval()


def _drop_norm_affine(network: nn.Module) -> None:
    """Non-affine norm layers, as SupSup's models have them: a random init's scales are 1 and shifts 0, so dropping
    them changes nothing computed, and the task keeps only BN's running statistics."""
    for module in network.modules():
        if isinstance(module, NORM_LAYERS):
            for flag in ("affine", "elementwise_affine"):  # BN, GroupNorm: affine; LayerNorm, RMSNorm: the other
                if hasattr(module, flag):
                    setattr(module, flag, False)
            module.register_parameter("weight", None)
            if hasattr(module, "bias"):
                module.register_parameter("bias", None)
