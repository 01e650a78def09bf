"""What the methods that weigh each backbone parameter by its importance share: the base class that adds their
penalty to every later task's loss and carries the importance and the anchor through the sequence, the penalty
itself, and the mean of a per-image gradient statistic over a task's images (a diagonal Fisher is one). It
registers no method."""
from collections.abc import Callable

import torch
from torch.func import functional_call, grad, vmap

from dataset.images import Normalisation
from network import MultiHeadModel
from training.context import Context
from training.settings import Runtime
from training.shared_method import Method, TaskData

PER_IMAGE_CHUNK = 16  # images whose per-image gradients are held at once

Objective = Callable[..., torch.Tensor]
"""A scalar of one image's logits (a [1, classes] fp32 tensor) and, where labels are given, its label (a [1]
tensor): what is differentiated per image."""


@torch.no_grad()  # torch.func.grad still differentiates; this keeps the head's autograd graph out of the result
def mean_per_image_gradient(model: MultiHeadModel, shared: list[tuple[str, torch.nn.Parameter]], runtime: Runtime,
                            normalisation: Normalisation, images: torch.Tensor, objective: Objective,
                            statistic: Callable[[torch.Tensor], torch.Tensor],
                            labels: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """For each of the ``shared`` backbone parameters, the mean over ``images`` of ``statistic`` (elementwise) of
    the image's own gradient of ``objective`` at the model's current head, with BN in eval mode (per-image gradients
    need per-image statistics). ``labels``, where given, are passed to ``objective`` with their images."""
    model.eval()
    params = {name: p.detach() for name, p in shared}
    per_label = () if labels is None else (labels,)

    def value(backbone: dict, image: torch.Tensor, *label: torch.Tensor) -> torch.Tensor:
        logits = functional_call(model, backbone, (image.unsqueeze(0),))
        return objective(logits.float(), *(each.unsqueeze(0) for each in label))

    per_image = vmap(grad(value), in_dims=(None, 0, *(0 for _ in per_label)))
    total = {name: torch.zeros_like(p) for name, p in params.items()}
    device = runtime.device
    for start in range(0, len(images), PER_IMAGE_CHUNK):
        chunk = normalisation(images[start:start + PER_IMAGE_CHUNK].to(device))
        grads = per_image(params, runtime.model_input(chunk),
                          *(each[start:start + PER_IMAGE_CHUNK].to(device) for each in per_label))
        for name, g in grads.items():
            total[name] += statistic(g.float()).sum(0)
    return {name: t / len(images) for name, t in total.items()}


def importance_penalty(model: MultiHeadModel, importance: dict[str, torch.Tensor],
                       anchor: dict[str, torch.Tensor]) -> torch.Tensor:
    """sum_j importance_j (w_j - anchor_j)^2 over the parameters ``importance`` names."""
    params = dict(model.named_parameters())
    return sum((weight * (params[name] - anchor[name]) ** 2).sum() for name, weight in importance.items())


class ImportanceMethod(Method):
    """Sequential training in which every task after the first pays ``strength`` * sum_j importance_j (w_j -
    anchor_j)^2 for moving the shared backbone. A subclass names the option that weighs the penalty (``strength``)
    and measures a task's importance after it (``task_importance``); this class adds it to the earlier tasks'
    (``accumulate``: their sum), takes the anchor (the backbone after the task, unless the subclass sets it as each
    task starts) and carries both to the next task and through a resumed run."""

    strength: str  # the option weighing the penalty in the loss
    importance_key = "importance"  # the importance's name in ``state_dict`` (a subclass may keep its own)
    anchor_after_task = True  # False: the subclass sets the anchor as each task starts, and it is not stored

    def __init__(self, ctx: Context) -> None:
        super().__init__(ctx)
        self.importance: dict[str, torch.Tensor] = {}  # summed over the finished tasks
        self.anchor: dict[str, torch.Tensor] = {}

    def task_importance(self, model: MultiHeadModel, shared: list[tuple[str, torch.nn.Parameter]],
                        data: TaskData) -> dict[str, torch.Tensor]:
        """Each of the ``shared`` parameters' importance for the task just learnt (the model at its best epoch)."""
        raise NotImplementedError

    def accumulate(self, total: torch.Tensor, task: torch.Tensor) -> torch.Tensor:
        """A parameter's importance over the finished tasks, from the earlier tasks' and this task's."""
        return total + task

    def penalty(self, model: MultiHeadModel) -> torch.Tensor:
        return importance_penalty(model, self.importance, self.anchor)

    def batch_loss(self, model, data, images, labels, index):
        loss, logits = super().batch_loss(model, data, images, labels, index)
        if self.importance:
            loss = loss + self.option(self.strength) * self.penalty(model)
        return loss, logits

    @torch.no_grad()
    def after_task(self, model: MultiHeadModel, data: TaskData) -> None:
        shared = self.shared_parameters(model)
        task = self.task_importance(model, shared, data)
        self.importance = {name: self.accumulate(self.importance[name], value) if self.importance else value
                           for name, value in task.items()}
        if self.anchor_after_task:
            self.anchor = {name: p.detach().clone() for name, p in shared}
        super().after_task(model, data)

    def state_dict(self) -> dict:
        kept = {self.importance_key: self.importance} | ({"anchor": self.anchor} if self.anchor_after_task else {})
        return super().state_dict() | {key: {name: t.cpu() for name, t in tensors.items()}
                                       for key, tensors in kept.items()}

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        device = self.ctx.device
        self.importance = {name: t.to(device) for name, t in state[self.importance_key].items()}
        if self.anchor_after_task:
            self.anchor = {name: t.to(device) for name, t in state["anchor"].items()}
