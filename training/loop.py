"""The inner loops: one training epoch, one evaluation, and the optimizer they share with the benchmark."""
import math
from collections.abc import Callable

import torch
import torch.nn.functional as F

from common.console import TransientBar
from dataset.loader import DeviceBatches
from network import LayerPolicy, TrainableModel, build_model
from training.settings import Runtime


def trained_parameters(model: torch.nn.Module) -> list[torch.nn.Parameter]:
    """The tensors a task trains, in the model's order."""
    return [p for p in model.parameters() if p.requires_grad]


def build_optimizer(model: TrainableModel, lr: float, runtime: Runtime) -> torch.optim.Adam:
    """Adam over the task's own tensors (fused where the runtime says), as the recipe and the benchmark use it, in
    the groups the model gives (Piggyback's scores have their own rate)."""
    return torch.optim.Adam(model.optimizer_groups(lr), lr=lr, fused=runtime.fused_optimizer or None)


def build_task_model(backbone: torch.nn.Module, method: str, num_classes: int, runtime: Runtime,
                     options: dict[str, int | float] | None = None,
                     policy: LayerPolicy | None = None) -> torch.nn.Module:
    """A task's model for ``method`` with its ``options``, norm policy and CLR placement (a saved task's recorded
    ones), on the runtime's device and memory format."""
    return runtime.prepare(build_model(backbone, method, num_classes, options, policy))


def l2_norm_penalty(params: list[torch.Tensor]) -> torch.Tensor:
    """Sum of each tensor's plain L2 norm. A zero-norm tensor adds 0 with gradient 0, the same as the release
    skipping it, without a host sync to test for it."""
    return torch.stack(torch._foreach_norm(params)).sum()


CHECK_EVERY = 10  # steps between looks at the lagging copy of the running loss: the bar's update, and the NaN stop


class NonFiniteLoss(Exception):
    """The running training loss became NaN or infinite within an epoch (``fit`` says which task and epoch)."""

    def __init__(self, loss: float, step: int) -> None:
        super().__init__(f"the training loss became {loss} by step {step}")


BatchLoss = Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor, torch.Tensor]]
"""(images, what the batches serve) -> (loss before the norm penalty, the task head's logits, the labels)."""


def cross_entropy_loss(model: torch.nn.Module, runtime: Runtime) -> BatchLoss:
    """The release's loss: cross-entropy of the task's head on batches that serve the labels."""
    def loss(images: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        with runtime.autocast():
            logits = model(runtime.model_input(images))
        return F.cross_entropy(logits.float(), labels), logits, labels
    return loss


def train_one_epoch(model: torch.nn.Module, optimizer: torch.optim.Optimizer, batches: DeviceBatches,
                    runtime: Runtime, norm_penalty: float, desc: str,
                    batch_loss: BatchLoss | None = None,
                    after_step: Callable[[], None] | None = None) -> tuple[float, float]:
    """One pass over the task's training images. Returns (mean loss, accuracy); reads the device once.

    Every CHECK_EVERY steps it looks at a copy of the running loss that may lag a few steps on CUDA (it never
    waits for the device), and stops with NonFiniteLoss once that is NaN or infinite: a broken epoch costs a
    few steps, not the whole epoch. ``batch_loss`` lets a continual-learning method add its own terms (default:
    the release's loss); ``after_step``, called after every optimizer step, lets one follow the weights' path
    (SI)."""
    batch_loss = batch_loss or cross_entropy_loss(model, runtime)
    model.train()
    params = model.penalised_parameters()
    totals = torch.zeros(2, device=runtime.device)  # loss sum, correct count: read from the device once per epoch
    shown = torch.zeros(2, pin_memory=runtime.pin_memory)  # a copy for the bar that may lag, never syncs
    bar = TransientBar(batches, desc=desc, unit="batch", dynamic_ncols=True)
    for step, (images, targets) in enumerate(bar):
        loss, logits, labels = batch_loss(images, targets)
        if norm_penalty:
            loss = loss + norm_penalty * l2_norm_penalty(params)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if after_step is not None:
            after_step()
        totals += torch.stack([loss.detach() * len(labels), (logits.argmax(1) == labels).sum().float()])
        if step % CHECK_EVERY == CHECK_EVERY - 1:
            shown.copy_(totals, non_blocking=True)
            if not math.isfinite(shown[0]):
                raise NonFiniteLoss(float(shown[0]), step + 1)
            seen = min((step + 1) * batches.batch_size, batches.num_images)
            bar.set_postfix(loss=f"{shown[0] / seen:.4f}", acc=f"{shown[1] / seen:.2%}", refresh=False)
    bar.close()
    loss_sum, correct = totals.tolist()
    return loss_sum / batches.num_images, correct / batches.num_images


@torch.inference_mode()
def evaluate(model: torch.nn.Module, batches: DeviceBatches, runtime: Runtime) -> int:
    """Number of correctly classified images. cuDNN picks its algorithms deterministically here, so the same
    weights give the same count now and when the report re-evaluates them."""
    model.eval()
    correct = torch.zeros((), dtype=torch.long, device=runtime.device)
    with torch.backends.cudnn.flags(enabled=True, benchmark=False, deterministic=True):
        for images, labels in batches:
            with runtime.autocast():
                logits = model(runtime.model_input(images))
            correct += (logits.argmax(1) == labels).sum()
    return int(correct)
