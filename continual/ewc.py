"""EWC: elastic weight consolidation (Kirkpatrick et al., PNAS 2017), in its online form (Schwarz et al.,
ICML 2018, "Progress & Compress"): a quadratic penalty pulls each backbone weight toward its value after the
last task, in proportion to how much the earlier tasks' log-likelihood depends on it (a diagonal Fisher)."""
import torch
import torch.nn.functional as F
from torch.func import functional_call, grad, vmap

from continual.method import Method, TaskData
from dataset.images import Normalisation
from network import MultiHeadModel
from training.settings import Runtime
from training.context import Context

FISHER_CHUNK = 16  # images whose per-image gradients are held at once


class EWC(Method):
    def __init__(self, ctx: Context) -> None:
        super().__init__(ctx)
        self.fisher: dict[str, torch.Tensor] = {}
        self.anchor: dict[str, torch.Tensor] = {}

    def batch_loss(self, model, data, images, labels, index):
        loss, logits = super().batch_loss(model, data, images, labels, index)
        if self.fisher:
            loss = loss + self.option("ewc_lambda") * self.penalty(model)
        return loss, logits

    def penalty(self, model: MultiHeadModel) -> torch.Tensor:
        params = dict(model.named_parameters())
        return sum((self.fisher[name] * (params[name] - anchor) ** 2).sum() for name, anchor in self.anchor.items())

    def after_task(self, model: MultiHeadModel, data: TaskData) -> None:
        shared = self.shared_parameters(model)
        fisher = diagonal_fisher(model, shared, self.ctx.runtime, self.ctx.normalisation, data.tensors.train_images,
                                 data.tensors.train_labels)
        gamma = self.option("ewc_gamma")
        self.fisher = {name: gamma * self.fisher[name] + f if self.fisher else f for name, f in fisher.items()}
        self.anchor = {name: p.detach().clone() for name, p in shared}
        super().after_task(model, data)

    def state_dict(self) -> dict:
        return super().state_dict() | {"fisher": _to(self.fisher, "cpu"), "anchor": _to(self.anchor, "cpu")}

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        self.fisher, self.anchor = _to(state["fisher"], self.ctx.device), _to(state["anchor"], self.ctx.device)


@torch.no_grad()  # torch.func.grad still differentiates; this keeps the head's autograd graph out of the result
def diagonal_fisher(model: MultiHeadModel, shared: list[tuple[str, torch.nn.Parameter]], runtime: Runtime,
                    normalisation: Normalisation, images: torch.Tensor,
                    labels: torch.Tensor) -> dict[str, torch.Tensor]:
    """The empirical Fisher's diagonal for the ``shared`` backbone parameters: the mean over the images of each
    per-image squared gradient of log p(label | image), with BN in eval mode (per-image gradients need per-image
    statistics)."""
    model.eval()
    params = {name: p.detach() for name, p in shared}

    def log_likelihood(backbone: dict, image: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
        logits = functional_call(model, backbone, (image.unsqueeze(0),))
        return -F.cross_entropy(logits.float(), label.unsqueeze(0))

    per_image = vmap(grad(log_likelihood), in_dims=(None, 0, 0))
    fisher = {name: torch.zeros_like(p) for name, p in params.items()}
    device = runtime.device
    for start in range(0, len(labels), FISHER_CHUNK):
        chunk = normalisation(images[start:start + FISHER_CHUNK].to(device))
        grads = per_image(params, runtime.model_input(chunk), labels[start:start + FISHER_CHUNK].to(device))
        for name, g in grads.items():
            fisher[name] += (g.float() ** 2).sum(0)
    return {name: f / len(labels) for name, f in fisher.items()}


def _to(tensors: dict[str, torch.Tensor], device) -> dict[str, torch.Tensor]:
    return {name: t.to(device) for name, t in tensors.items()}
