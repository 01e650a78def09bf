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
from continual.importance import importance_penalty, mean_per_image_gradient
from training.shared_method import Method, TaskData
from network import MultiHeadModel
from network.methods import LR_SEARCH, SHARED, TUNED_LR, MethodSpec, implements
from training.context import Context

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
class MAS(Method):
    def __init__(self, ctx: Context) -> None:
        super().__init__(ctx)
        self.importance: dict[str, torch.Tensor] = {}  # Omega, summed over the finished tasks
        self.anchor: dict[str, torch.Tensor] = {}  # theta*: the shared backbone after the last finished task

    def batch_loss(self, model, data, images, labels, index):
        loss, logits = super().batch_loss(model, data, images, labels, index)
        if self.importance:
            loss = loss + self.option("mas_lambda") * self.penalty(model)
        return loss, logits

    def penalty(self, model: MultiHeadModel) -> torch.Tensor:
        return importance_penalty(model, self.importance, self.anchor)

    def after_task(self, model: MultiHeadModel, data: TaskData) -> None:
        shared = self.shared_parameters(model)
        task = mean_per_image_gradient(model, shared, self.ctx.runtime, self.ctx.normalisation,
                                       data.tensors.train_images, squared_output_norm, torch.abs)
        self.importance = {name: self.importance[name] + omega if self.importance else omega
                           for name, omega in task.items()}
        self.anchor = {name: p.detach().clone() for name, p in shared}
        super().after_task(model, data)

    def state_dict(self) -> dict:
        return super().state_dict() | {"importance": {name: t.cpu() for name, t in self.importance.items()},
                                       "anchor": {name: t.cpu() for name, t in self.anchor.items()}}

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        self.importance = {name: t.to(self.ctx.device) for name, t in state["importance"].items()}
        self.anchor = {name: t.to(self.ctx.device) for name, t in state["anchor"].items()}
