"""SI: synaptic intelligence (Zenke, Poole & Ganguli, ICML 2017). While a task trains, each backbone weight
accumulates its share of the loss's decrease along the training path, omega += -g * dw per optimizer step; after
the task, its importance grows by Omega += omega / (Delta^2 + xi), Delta the weight's total change over the task,
and later tasks pay c * sum Omega (w - w*)^2 for moving it away from w*, its value when they start.

The path ends where the task ends, at its best epoch: omega is taken as it was after that epoch (the fit loop keeps
it with the best weights) and Delta is the best weights minus the task's start. g is the gradient of the recipe's
loss (cross-entropy and the norm penalty) without SI's own penalty, as in the paper."""
from functools import partial

import torch

from common.cli import Option
from continual.importance import ImportanceMethod
from network import MultiHeadModel
from network.methods import LR_SEARCH, SHARED, TUNED_LR, MethodSpec, implements
from training.checkpoints import MethodHooks
from training.context import Context
from training.shared_method import TaskData

SPEC = MethodSpec(
    "SI", SHARED, "the whole backbone with a path-integral penalty, and a head",
    "Zenke, Poole & Ganguli, Synaptic Intelligence, ICML 2017", order=160, paper_column=7,
    options={
        "si_c": Option(0.1, "SI: weight c of the penalty c sum_k Omega_k (w_k - w*_k)^2 (default %(default)s, the "
                       "paper's split CIFAR-10/100 setting)"),
        "si_xi": Option(0.1, "SI: damping xi of Omega += omega / (Delta^2 + xi) (default %(default)s, the paper's "
                        "split CIFAR-10/100 setting)", bounds="(]"),
    }, search={TUNED_LR: LR_SEARCH, "si_c": (0.01, 0.1, 1.0, 10.0)})


@implements(SPEC)
class SI(ImportanceMethod):
    strength = "si_c"
    anchor_after_task = False  # w*: the backbone as the task being trained started

    def __init__(self, ctx: Context) -> None:
        super().__init__(ctx)
        self.path: dict[str, torch.Tensor] = {}  # omega: the running path integral of the task being trained
        self.previous: dict[str, torch.Tensor] = {}  # the backbone before the last optimizer step

    def before_task(self, model: MultiHeadModel, data: TaskData) -> None:
        super().before_task(model, data)
        self.anchor = {name: p.detach().clone() for name, p in self.shared_parameters(model)}
        self.path = {name: torch.zeros_like(p) for name, p in self.anchor.items()}
        self.previous = {name: p.clone() for name, p in self.anchor.items()}

    def task_hooks(self, model: MultiHeadModel, data: TaskData) -> MethodHooks:
        return MethodHooks(partial(self.after_step, model), self.running_state, partial(self.load_running_state, model))

    @torch.no_grad()
    def after_step(self, model: MultiHeadModel) -> None:
        """omega -= g * dw, with g the step's gradient less that of SI's penalty (2 c Omega (w - w*), at the weights
        the gradient was taken at); one fused operation per quantity over all tensors."""
        names, params = zip(*self.shared_parameters(model))
        previous, gradients = [self.previous[name] for name in names], [p.grad for p in params]
        if self.importance:
            moved = torch._foreach_sub(previous, [self.anchor[name] for name in names])
            penalty = torch._foreach_mul(moved, [self.importance[name] for name in names])
            gradients = torch._foreach_add(gradients, penalty, alpha=-2 * self.option("si_c"))
        steps = torch._foreach_sub(params, previous)
        torch._foreach_addcmul_([self.path[name] for name in names], gradients, steps, value=-1)
        torch._foreach_copy_(previous, params)

    def running_state(self) -> dict[str, torch.Tensor]:
        return {name: omega.to("cpu", copy=True) for name, omega in self.path.items()}

    def load_running_state(self, model: MultiHeadModel, state: dict[str, torch.Tensor]) -> None:
        """omega as saved, the model's weights already restored to where it was saved."""
        self.path = {name: omega.to(self.ctx.device) for name, omega in state.items()}
        self.previous = {name: p.detach().clone() for name, p in self.shared_parameters(model)}

    def task_importance(self, model, shared, data):
        """omega / (Delta^2 + xi) of the task just learnt."""
        xi = self.option("si_xi")
        return {name: self.path[name] / ((p - self.anchor[name]) ** 2 + xi) for name, p in shared}
