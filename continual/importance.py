"""What the methods that weigh each backbone parameter by its importance share: the mean of a per-image gradient
statistic over a task's images (EWC's Fisher is one), and the penalty that pulls each parameter toward its anchor
in proportion to its importance (EWC's, SI's). It registers no method."""
from collections.abc import Callable

import torch
from torch.func import functional_call, grad, vmap

from dataset.images import Normalisation
from network import MultiHeadModel
from training.settings import Runtime

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
