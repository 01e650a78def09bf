"""A task's own tensors: extracting them, restoring them, and what they cost."""
from dataclasses import dataclass

import torch

from common.errors import NetworkError
from network.task_model import TaskModel
from network.errors import describe_key_difference
from network.layers import NORM_LAYERS, NORM_STATISTICS, TaskLayer, norm_tensors, owned_parameters


@dataclass(frozen=True)
class ParameterCost:
    """What one task adds to the shared backbone, in parameter elements."""

    trainable: int  # task layers + norm affine where norms train + head (BN running statistics are buffers)
    head: int
    backbone: int  # the plain backbone's parameter count
    percent: float  # 100 * trainable / backbone


def task_state(model: TaskModel) -> dict[str, torch.Tensor]:
    """The task's own tensors (detached CPU copies): all that must be saved to restore the task later."""
    return {name: tensor.detach().to("cpu", copy=True) for name, tensor in _task_tensors(model).items()}


def stored_state(model: TaskModel) -> dict[str, torch.Tensor]:
    """What a finished task's record keeps: its ``task_state``, with each tensor that its layer stores in another
    form in that form, in its place (a masked conv's real-valued scores as the hard mask they give, at one bit per
    weight: ``<conv>.mask_bits``). The same as ``task_state`` for a method whose layers store none."""
    forms = _stored_forms(model)
    state = {}
    for name, tensor in task_state(model).items():
        if name in forms:
            stored_name, layer, local = forms[name]
            state[stored_name] = layer.stored_form(local).detach().to("cpu", copy=True)
        else:
            state[name] = tensor
    return state


def load_task_state(model: TaskModel, state: dict[str, torch.Tensor]) -> None:
    """Restore a ``task_state`` or a ``stored_state`` onto a model built from the same backbone, method, arch and
    class count: each tensor that its layer stores in another form may come in either form. A stored mask makes
    its conv compute exactly that mask."""
    given_stored = {stored_name: (name, layer, local) for name, (stored_name, layer, local)
                    in _stored_forms(model).items() if stored_name in state}
    replaced = {name for name, _, _ in given_stored.values()}
    targets = {name: tensor for name, tensor in _task_tensors(model).items() if name not in replaced}
    missing = [name for name in targets if name not in state]
    unexpected = [name for name in state if name not in targets and name not in given_stored]
    if missing or unexpected:
        raise NetworkError("task state is for a different method or architecture: "
                           + describe_key_difference(missing, unexpected))
    if any(not isinstance(tensor, torch.Tensor) for tensor in state.values()):
        raise NetworkError("task state is not a mapping of names to tensors")
    head_weight = f"{model.head_name}.weight"
    saved_classes = state[head_weight].shape[0] if head_weight in state else model.num_classes
    if saved_classes != model.num_classes:
        raise NetworkError(f"task state has {saved_classes} classes, the model {model.num_classes}")
    for name, target in targets.items():
        source = state[name]
        if source.shape != target.shape:
            raise NetworkError(f"task state tensor {name} has shape {list(source.shape)}, "
                               f"the model expects {list(target.shape)}")
    decoded = {}
    for stored_name, (_, layer, local) in given_stored.items():
        try:
            decoded[stored_name] = layer.decode_stored(local, state[stored_name])
        except ValueError as error:
            raise NetworkError(f"task state tensor {stored_name} does not fit its layer: {error}") from None
    with torch.no_grad():
        for name, target in targets.items():
            target.copy_(state[name])
    for stored_name, (_, layer, local) in given_stored.items():
        layer.load_decoded(local, decoded[stored_name])


def parameter_cost(model: TaskModel) -> ParameterCost:
    """How many parameter elements the task trains and stores (besides BN statistics), absolute and relative."""
    trainable = sum(parameter.numel() for _, module in model.task_modules()
                    for parameter in owned_parameters(module).values())
    head = sum(parameter.numel() for parameter in model.task_head.parameters())
    return ParameterCost(trainable, head, model.backbone_parameters, 100 * trainable / model.backbone_parameters)


def _stored_forms(model: TaskModel) -> dict[str, tuple[str, TaskLayer, str]]:
    """For each task tensor that its layer stores in another form, by state-dict name: the stored form's name, the
    layer and the tensor's name in the layer."""
    return {f"{prefix}.{name}": (f"{prefix}.{stored}", layer, name) for prefix, layer in model.task_modules()
            if isinstance(layer, TaskLayer) for name, stored in layer.stored_as.items()}


def _task_tensors(model: TaskModel) -> dict[str, torch.Tensor]:
    """The live task-specific tensors by state-dict name; BN's num_batches_tracked is left out (unused). ``model`` is a
    TaskModel or the shared-backbone model. Under --norm affine a norm layer's statistics stay the backbone's."""
    statistics = not isinstance(model, TaskModel) or model.policy.trains_norm_statistics
    tensors = {}
    for prefix, module in model.task_modules():
        named = list(owned_parameters(module).items())
        if isinstance(module, NORM_LAYERS):  # the affine pair as above, then any running statistics
            named = [(name, tensor) for name, tensor in norm_tensors(module).items()
                     if statistics or name not in NORM_STATISTICS]
        for name, tensor in named:
            tensors[f"{prefix}.{name}" if prefix else name] = tensor
    return tensors
