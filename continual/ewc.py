"""EWC: elastic weight consolidation (Kirkpatrick et al., PNAS 2017), in its online form (Schwarz et al.,
ICML 2018, "Progress & Compress"): a quadratic penalty pulls each backbone weight toward its value after the
last task, in proportion to how much the earlier tasks' log-likelihood depends on it (a diagonal Fisher)."""
import torch
import torch.nn.functional as F

from common.cli import Option
from continual.importance import ImportanceMethod, mean_per_image_gradient
from dataset.images import Normalisation
from network import MultiHeadModel
from network.methods import LR_SEARCH, SHARED, TUNED_LR, MethodSpec, implements
from training.settings import Runtime

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
class EWC(ImportanceMethod):
    strength = "ewc_lambda"
    importance_key = "fisher"

    def task_importance(self, model, shared, data):
        return diagonal_fisher(model, shared, self.ctx.runtime, self.ctx.normalisation, data.tensors.train_images,
                               data.tensors.train_labels)

    def accumulate(self, total: torch.Tensor, task: torch.Tensor) -> torch.Tensor:
        """Online EWC: the earlier tasks' Fisher decays by gamma before the task's is added."""
        return self.option("ewc_gamma") * total + task


def diagonal_fisher(model: MultiHeadModel, shared: list[tuple[str, torch.nn.Parameter]], runtime: Runtime,
                    normalisation: Normalisation, images: torch.Tensor,
                    labels: torch.Tensor) -> dict[str, torch.Tensor]:
    """The empirical Fisher's diagonal for the ``shared`` backbone parameters: the mean over the images of each
    per-image squared gradient of log p(label | image), with BN in eval mode."""
    def log_likelihood(logits: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
        return -F.cross_entropy(logits, label)

    return mean_per_image_gradient(model, shared, runtime, normalisation, images, log_likelihood,
                                   lambda g: g ** 2, labels)

