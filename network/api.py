"""CLR for your own training code: reprogram any supported CNN for one task, train it with any loop, and save or
load exactly that task's tensors (docs/api.md)."""
import os
from pathlib import Path

import torch
from torch import nn

from common.errors import NetworkError
from common.files import save_torch
from network.methods import DEFAULT_METHOD, LayerPolicy
from network.state import load_task_state, stored_state
from network.task_model import TaskModel, build_model

_FORMAT = 1  # the layout of a saved task file: {"format", "method", "num_classes", "state"}, "policy" (its
# LayerPolicy.as_config(); a file without it has the method's own) and "options" (the method's; without: its defaults)


def reprogram(model: nn.Module, num_classes: int, method: str = DEFAULT_METHOD,
              options: dict[str, int | float] | None = None, policy: LayerPolicy | None = None) -> TaskModel:
    """A model for one task with ``num_classes`` classes: a copy of ``model`` (a torchvision or timm classifier, or
    any module with convolutions and one linear classifier) reprogrammed by ``method`` (CLR by default), whose
    trainable tensors are exactly the task's. ``model`` itself is never changed. ``options`` are the method's own
    (see docs/options.md), ``policy`` its norm policy and CLR placement (None: the method's own; see
    docs/methods.md); the new layers and the head draw on the global random state, so seed it first."""
    return build_model(model, method, num_classes, options, policy)


def save_task(model: TaskModel, path: str | os.PathLike) -> None:
    """Save the task's own tensors (masks at one bit per weight), with what is needed to rebuild it: nothing of the
    backbone. Written atomically: an interrupted save leaves no half-written file."""
    save_torch({"format": _FORMAT, "method": model.method, "num_classes": model.num_classes,
                "policy": model.policy.as_config(), "options": model.options, "state": stored_state(model)}, Path(path))


def load_task(model: nn.Module, path: str | os.PathLike) -> TaskModel:
    """The task saved in ``path``, rebuilt on ``model``: the backbone it was trained on (the same architecture and
    weights), which is not changed, with the method's options and the policy it was saved with."""
    try:
        saved = torch.load(path, map_location="cpu", weights_only=True)
    except OSError as error:
        raise NetworkError(f"cannot read {path}: {error.strerror or error}") from None
    except Exception as error:  # torch raises many types for a damaged file
        raise NetworkError(f"cannot read {path} ({type(error).__name__}): not a task saved by save_task") from None
    if not isinstance(saved, dict) or saved.get("format") != _FORMAT:
        raise NetworkError(f"{path} is not a task saved by save_task")
    recorded = saved.get("policy")  # None: a file saved before the policy was, with the method's own
    task = build_model(model, saved["method"], saved["num_classes"], saved.get("options"),
                       policy=LayerPolicy(**recorded) if recorded else None)
    load_task_state(task, saved["state"])
    return task
