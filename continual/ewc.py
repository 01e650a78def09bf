"""EWC: elastic weight consolidation (Kirkpatrick et al., PNAS 2017), in its online form (Schwarz et al.,
ICML 2018, "Progress & Compress"): a quadratic penalty pulls each backbone weight toward its value after the
last task, in proportion to how much the earlier tasks' log-likelihood depends on it (a diagonal Fisher)."""
import torch
import torch.nn.functional as F

from common.cli import Option
from continual.importance import importance_penalty, mean_per_image_gradient
from dataset.images import Normalisation
from network import MultiHeadModel
from network.methods import LR_SEARCH, SHARED, TUNED_LR, MethodSpec, implements
from training.context import Context
from training.settings import Runtime
from training.shared_method import Method, TaskData

SPEC = MethodSpec(
    "EWC", SHARED, "the whole backbone with a quadratic penalty, and a head",
    "Kirkpatrick et al., PNAS 2017, online (Schwarz et al., ICML 2018)", order=130, paper_column=4,
    options={
        "ewc_lambda": Option(10.0, "EWC: weight of the penalty sum_j F_j (w_j - w*_j)^2 (default %(default)s, "
                             "Mammoth's online-EWC setting for Seq-CIFAR-10)"),
        "ewc_gamma": Option(1.0, "EWC: the accumulated Fisher is multiplied by this before a task's Fisher is added "
                            "(online EWC; 1 = plain sum over tasks; default %(default)s)"),
    }, search={TUNED_LR: LR_SEARCH, "ewc_lambda": (1.0, 10.0, 100.0, 1000.0, 5000.0)})


@implements(SPEC)
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
        return importance_penalty(model, self.fisher, self.anchor)

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


def diagonal_fisher(model: MultiHeadModel, shared: list[tuple[str, torch.nn.Parameter]], runtime: Runtime,
                    normalisation: Normalisation, images: torch.Tensor,
                    labels: torch.Tensor) -> dict[str, torch.Tensor]:
    """The empirical Fisher's diagonal for the ``shared`` backbone parameters: the mean over the images of each
    per-image squared gradient of log p(label | image), with BN in eval mode."""
    def log_likelihood(logits: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
        return -F.cross_entropy(logits, label)

    return mean_per_image_gradient(model, shared, runtime, normalisation, images, log_likelihood,
                                   lambda g: g ** 2, labels)


def _to(tensors: dict[str, torch.Tensor], device) -> dict[str, torch.Tensor]:
    return {name: t.to(device) for name, t in tensors.items()}
