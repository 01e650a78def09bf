"""A task's own tensors: extracting them, restoring them, and what they cost."""
from dataclasses import dataclass

import torch

from common.errors import NetworkError
from network.bits import pack_bits, unpack_bits
from network.task_model import TaskModel
from network.errors import describe_key_difference
from network.layers import NORM_LAYERS, NORM_STATISTICS, norm_tensors
from network.masks import MaskedConv

_SCORES, _MASK_BITS = "scores", "mask_bits"  # a masked conv's state: its training form, its stored form


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
    """What a finished task's record keeps: its ``task_state``, with each masked conv's real-valued scores replaced
    by the hard mask they give, packed at one bit per weight (``<conv>.mask_bits``). The same as ``task_state``
    for a method without masks."""
    masked = {f"{prefix}.{_SCORES}": module for prefix, module in _masked_convs(model).items()}
    state = {}
    for name, tensor in task_state(model).items():
        if name in masked:
            state[name.removesuffix(_SCORES) + _MASK_BITS] = pack_bits(masked[name].mask())
        else:
            state[name] = tensor
    return state


def load_task_state(model: TaskModel, state: dict[str, torch.Tensor]) -> None:
    """Restore a ``task_state`` or a ``stored_state`` onto a model built from the same backbone, method, arch and
    class count. A stored mask makes its conv compute exactly that mask."""
    masks = {f"{prefix}.{_MASK_BITS}": module for prefix, module in _masked_convs(model).items()
             if f"{prefix}.{_MASK_BITS}" in state}  # masked convs given as mask bits (the others: as scores)
    targets = {name: tensor for name, tensor in _task_tensors(model).items()
               if name.removesuffix(_SCORES) + _MASK_BITS not in masks}
    missing = [name for name in [*targets, *masks] if name not in state]
    unexpected = [name for name in state if name not in targets and name not in masks]
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
    try:
        unpacked = {name: unpack_bits(state[name], module.scores.shape) for name, module in masks.items()}
    except ValueError as error:
        raise NetworkError(f"task state holds a mask that does not fit its conv: {error}") from None
    with torch.no_grad():
        for name, target in targets.items():
            target.copy_(state[name])
    for name, mask in unpacked.items():
        masks[name].load_mask(mask)


def parameter_cost(model: TaskModel) -> ParameterCost:
    """How many parameter elements the task trains and stores (besides BN statistics), absolute and relative."""
    trainable = sum(parameter.numel() for _, module in model.task_modules()
                    for parameter in module.parameters(recurse=False))
    head = sum(parameter.numel() for parameter in model.task_head.parameters())
    return ParameterCost(trainable, head, model.backbone_parameters, 100 * trainable / model.backbone_parameters)


def _masked_convs(model: TaskModel) -> dict[str, MaskedConv]:
    return {name: module for name, module in model.named_modules() if isinstance(module, MaskedConv)}


def _task_tensors(model: TaskModel) -> dict[str, torch.Tensor]:
    """The live task-specific tensors by state-dict name; BN's num_batches_tracked is left out (unused). ``model`` is a
    TaskModel or the shared-backbone model. Under --norm affine a norm layer's statistics stay the backbone's."""
    statistics = not isinstance(model, TaskModel) or model.policy.trains_norm_statistics
    tensors = {}
    for prefix, module in model.task_modules():
        named = list(module.named_parameters(recurse=False))
        if isinstance(module, NORM_LAYERS):  # the affine pair as above, then any running statistics
            named = [(name, tensor) for name, tensor in norm_tensors(module).items()
                     if statistics or name not in NORM_STATISTICS]
        for name, tensor in named:
            tensors[f"{prefix}.{name}" if prefix else name] = tensor
    return tensors
