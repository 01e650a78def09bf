"""MAS: memory aware synapses (Aljundi et al., ECCV 2018, "Memory Aware Synapses: Learning what (not) to forget").

A parameter matters as much as the network's output is sensitive to it. After a task, each backbone parameter's
importance for it is the mean over the task's training images of the magnitude of the image's own gradient of
the squared L2 norm of the output, here the task's head's logits (the paper's Eq. 2 with Eq. 4's g):

    Omega_ij = 1/N sum_k | d ||F(x_k; theta)||^2 / d theta_ij |

No label is read: the importance is unsupervised, unlike EWC's Fisher. Omega sums over the finished tasks (the
paper accumulates it; its authors' code adds each task's to the previous ones), and every later task's loss adds
the paper's Eq. 3 penalty, lambda sum_ij Omega_ij (theta_ij - theta*_ij)^2, theta* the backbone after the previous
task."""
import torch

from common.cli import Option
from continual.importance import ImportanceMethod, mean_per_image_gradient
from network.methods import LR_SEARCH, SHARED, TUNED_LR, MethodSpec, implements

SPEC = MethodSpec(
    "MAS", SHARED, "the whole backbone with a penalty weighted by the output's sensitivity, and a head",
    "Aljundi et al., Memory Aware Synapses, ECCV 2018", order=190,
    options={
        "mas_lambda": Option(1.0, "MAS: weight lambda of the penalty lambda sum_ij Omega_ij (theta_ij - theta*_ij)^2 "
                             "(default %(default)s, the paper's object-recognition setting; FACIL's and Avalanche's "
                             "default 1 halves the penalty, 0.5 here)"),
    }, search={TUNED_LR: LR_SEARCH, "mas_lambda": (0.1, 0.5, 1.0, 10.0, 100.0)})


def squared_output_norm(logits: torch.Tensor) -> torch.Tensor:
    """||F(x; theta)||^2 of one image's logits: what MAS differentiates."""
    return (logits ** 2).sum()


@implements(SPEC)
class MAS(ImportanceMethod):
    strength = "mas_lambda"

    def task_importance(self, model, shared, data):
        """Omega of the task just learnt: the mean over its training images of |d ||F(x_k)||^2 / d theta|."""
        return mean_per_image_gradient(model, shared, self.ctx.runtime, self.ctx.normalisation,
                                       data.tensors.train_images, squared_output_norm, torch.abs)
