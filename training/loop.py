"""The inner loops: one training epoch, one evaluation, and the optimizer they share with the benchmark."""
from collections.abc import Callable

import torch
import torch.nn.functional as F
from tqdm import tqdm

from dataset.loader import DeviceBatches
from network import build_model
from training.context import Context


def build_optimizer(ctx: Context, model: torch.nn.Module) -> torch.optim.Adam:
    """Adam over the task's own tensors (fused on CUDA), as the recipe and the benchmark use it."""
    params = [p for p in model.parameters() if p.requires_grad]
    return torch.optim.Adam(params, lr=ctx.args.lr, fused=ctx.on_cuda or None)


def l2_norm_penalty(params: list[torch.Tensor]) -> torch.Tensor:
    """Sum of each tensor's plain L2 norm. A zero-norm tensor adds 0 with gradient 0, the same as the release
    skipping it, without a host sync to test for it."""
    return torch.stack(torch._foreach_norm(params)).sum()


BatchLoss = Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor, torch.Tensor]]
"""(images, what the batches serve) -> (loss before the norm penalty, the task head's logits, the labels)."""


def cross_entropy_loss(model: torch.nn.Module, ctx: Context) -> BatchLoss:
    """The release's loss: cross-entropy of the task's head on batches that serve the labels."""
    def loss(images: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        with ctx.autocast():
            logits = model(ctx.model_input(images))
        return F.cross_entropy(logits.float(), labels), logits, labels
    return loss


def train_one_epoch(model: torch.nn.Module, optimizer: torch.optim.Optimizer, batches: DeviceBatches,
                    ctx: Context, desc: str, batch_loss: BatchLoss | None = None) -> tuple[float, float]:
    """One pass over the task's training images. Returns (mean loss, accuracy); reads the device once.

    ``batch_loss`` lets a continual-learning method add its own terms (default: the release's loss)."""
    batch_loss = batch_loss or cross_entropy_loss(model, ctx)
    model.train()
    params = model.penalised_parameters()
    totals = torch.zeros(2, device=ctx.device)  # loss sum, correct count: read from the device once per epoch
    shown = torch.zeros(2, pin_memory=ctx.on_cuda)  # a copy for the bar that may lag a few steps, never syncs
    bar = tqdm(batches, desc=desc, leave=False, unit="batch", dynamic_ncols=True)
    for step, (images, targets) in enumerate(bar):
        loss, logits, labels = batch_loss(images, targets)
        if ctx.args.norm_penalty:
            loss = loss + ctx.args.norm_penalty * l2_norm_penalty(params)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        totals += torch.stack([loss.detach() * len(labels), (logits.argmax(1) == labels).sum().float()])
        if step % 10 == 9:
            shown.copy_(totals, non_blocking=True)
            seen = min((step + 1) * batches.batch_size, batches.num_images)
            bar.set_postfix(loss=f"{shown[0] / seen:.4f}", acc=f"{shown[1] / seen:.2%}", refresh=False)
    bar.close()
    loss_sum, correct = totals.tolist()
    return loss_sum / batches.num_images, correct / batches.num_images


@torch.inference_mode()
def evaluate(model: torch.nn.Module, batches: DeviceBatches, ctx: Context) -> int:
    """Number of correctly classified images. cuDNN picks its algorithms deterministically here, so the same
    weights give the same count now and when the report re-evaluates them."""
    model.eval()
    correct = torch.zeros((), dtype=torch.long, device=ctx.device)
    with torch.backends.cudnn.flags(enabled=True, benchmark=False, deterministic=True):
        for images, labels in batches:
            with ctx.autocast():
                logits = model(ctx.model_input(images))
            correct += (logits.argmax(1) == labels).sum()
    return int(correct)


def build_task_model(ctx: Context, num_classes: int, method: str | None = None) -> torch.nn.Module:
    """A task's model for the run's method, or for another isolated method when the report re-evaluates it."""
    model = build_model(ctx.backbone, method or ctx.args.method, num_classes).to(ctx.device)
    return model.to(memory_format=torch.channels_last) if ctx.on_cuda else model


