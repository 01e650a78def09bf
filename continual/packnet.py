"""PackNet (Mallya & Lazebnik, CVPR 2018): one backbone whose conv weights are shared out among the tasks. Before
the first task each conv keeps its largest pretrained weights (the backbone's share) and frees the rest at zero.
A task trains the free weights, its own BN and its own head; then it prunes the smallest of the weights it trained
back to the free pool, retrains the kept ones briefly and freezes them. A task computes with its own mask (the
weights of the backbone and of the tasks up to it), BN and head, so it computes later exactly as when learnt."""
import logging

import torch
from torch import nn

from common.cli import Option
from common.errors import RunError
from network import MultiHeadModel, pack_bits, replace_convs
from network.layers import conv_with_weight
from network.methods import LR_SEARCH, PER_TASK, SHARED, TUNED_LR, MethodSpec, implements
from training.context import Context
from training.shared_method import Method, Phase, TaskData

SPEC = MethodSpec(
    "PackNet", SHARED, "the backbone weights still free, pruned and frozen after the task; a 1-bit mask, its own norm "
    "layers and a head", "Mallya & Lazebnik, PackNet, CVPR 2018", order=180, paper_column=9,
    options={
        "packnet_keep": Option(0.5, "PackNet: fraction of each conv's pretrained weights (the largest) that the "
                               "backbone keeps before the first task; the rest are freed at zero (default "
                               "%(default)s, the paper's prune of its first task, ImageNet, to 50%%)", high=1,
                               bounds="(]"),
        "packnet_prune": Option(0.75, "PackNet: fraction of the weights a task trained (per layer, the smallest) that "
                                "go back to the free pool after it; below 1, so a task keeps weights of its own "
                                "(default %(default)s, the paper's and its release's scripts/run_sequence.sh)",
                                high=1, bounds="[)"),
        "packnet_retrain_epochs": Option(10, "PackNet: epochs that retrain a task's kept weights after its prune (0: "
                                         "none; default %(default)s, the post-prune epochs of the release's "
                                         "scripts/run_sequence.sh)"),
        "packnet_retrain_lr": Option(1e-4, "PackNet: Adam learning rate of the retraining (default %(default)s, the "
                                     "release's post-prune rate in run_sequence.sh, a tenth of its training rate)",
                                     bounds="(]"),
    }, fixed_bn=PER_TASK, search={TUNED_LR: LR_SEARCH, "packnet_prune": (0.5, 0.75, 0.9)})

log = logging.getLogger("clr")

BACKBONE = 0  # the owner of the pretrained weights kept before the first task; task k (1-based) owns with k
FREE = 255  # the owner of a free weight: zero, and above every task, so "owner <= k" is task k's mask
MASK_PREFIX = "masks."


class OwnedWeightsConv(nn.Module):
    """A conv that computes with the weights of the task in use only (``active``) and trains only those of the task
    being learnt (``trained``): the gradient hook zeroes every other weight's gradient, the norm penalty's too, so
    Adam (whose state starts at zero) leaves them bit for bit unchanged."""

    def __init__(self, conv: nn.Conv2d) -> None:
        super().__init__()
        self.conv = conv
        self.register_buffer("active", torch.ones_like(conv.weight, dtype=torch.bool), persistent=False)
        self.register_buffer("trained", torch.ones_like(conv.weight, dtype=torch.bool), persistent=False)
        conv.weight.register_hook(lambda grad: torch.where(self.trained, grad, 0.0))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return conv_with_weight(self.conv, torch.where(self.active, self.conv.weight, 0.0), x)


@implements(SPEC)
class PackNet(Method):
    """Its BN is per task, by its definition: it always runs with --shared-bn per-task (the base Method's)."""

    NORMS_KEY = "batch_norms"

    def __init__(self, ctx: Context) -> None:
        super().__init__(ctx)
        self.owners: dict[str, torch.Tensor] = {}  # conv name -> uint8 owner of each weight (BACKBONE, k or FREE)
        self.empty_layers: list[list] = []  # per task: [its name, the convs where it keeps no weight]

    def build_model(self) -> MultiHeadModel:
        model = super().build_model()
        replace_convs(model, OwnedWeightsConv)
        for name, layer in masked_convs(model):
            freed = smallest(layer.conv.weight, torch.ones_like(layer.active), 1 - self.option("packnet_keep"))
            self.owners[name] = torch.where(freed, FREE, BACKBONE).to(torch.uint8)
            with torch.no_grad():
                layer.conv.weight.masked_fill_(freed, 0)
        return model

    def use_task(self, model: MultiHeadModel, position: int) -> None:
        super().use_task(model, position)
        self.select(model, position + 1)

    def select(self, model: MultiHeadModel, task: int) -> None:
        """Task ``task``'s mask in every conv, and its own weights as the trained ones."""
        for name, layer in masked_convs(model):
            layer.active, layer.trained = self.owners[name] <= task, self.owners[name] == task

    def before_task(self, model: MultiHeadModel, data: TaskData) -> None:
        super().before_task(model, data)  # each task's BN starts from the pretrained one
        task = data.position + 1
        if task >= FREE:
            raise RunError(f"PackNet learns at most {FREE - 1} tasks in one sequence")
        for owners in self.owners.values():
            owners.masked_fill_(owners == FREE, task)
        self.select(model, task)
        total = sum(owners.numel() for owners in self.owners.values())
        log.info("PackNet: %s trains the %.2f%% of the conv weights that are free", data.sample.task.name,
                 100 * sum(int((owners == task).sum()) for owners in self.owners.values()) / total)

    def phases(self, data: TaskData) -> list[Phase]:
        """The task trains the free weights and, at the end of that main phase, prunes; then (unless
        --packnet-retrain-epochs is 0) it retrains the kept weights at --packnet-retrain-lr. The prune belongs to the
        main phase's end so that it happens with the retraining or without it."""
        train, retrain = Phase(end=self.prune), self.option("packnet_retrain_epochs")
        if not retrain:
            return [train]
        return [train, Phase("retrain", epochs=retrain, lr=self.option("packnet_retrain_lr"))]

    def prune(self, model: MultiHeadModel, data: TaskData) -> None:
        """Prune the task's smallest weights back to the free pool at zero; the kept ones stay the task's."""
        task, prune = data.position + 1, self.option("packnet_prune")
        for name, layer in masked_convs(model):
            pruned = smallest(layer.conv.weight, self.owners[name] == task, prune)
            self.owners[name].masked_fill_(pruned, FREE)
            with torch.no_grad():
                layer.conv.weight.masked_fill_(pruned, 0)
        self.select(model, task)
        kept = {name: int((owners == task).sum()) for name, owners in self.owners.items()}
        log.info("PackNet: %s pruned %.0f%% of its weights and keeps %d", data.sample.task.name, 100 * prune,
                 sum(kept.values()))
        empty = [name for name, count in kept.items() if not count]
        self.empty_layers = self.empty_layers[:data.position] + [[data.sample.task.name, empty]]
        if empty:
            log.warning(self.notes()[-1])

    def task_state(self, model: MultiHeadModel, position: int) -> dict[str, torch.Tensor]:
        """Its head, its BN and its own weights' mask at one bit per weight (the values live in the backbone)."""
        masks = {MASK_PREFIX + name: pack_bits(owners == position + 1) for name, owners in self.owners.items()}
        return super().task_state(model, position) | masks

    def task_parameters(self, model: MultiHeadModel, position: int) -> int:
        """The weights it owns, its norm layers' affine pairs and its head."""
        owned = sum(int((owners == position + 1).sum()) for owners in self.owners.values())
        return owned + super().task_parameters(model, position)

    def state_dict(self) -> dict:
        return {"owners": copied(self.owners, "cpu"), **super().state_dict(), "empty_layers": self.empty_layers}

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        self.owners = copied(state["owners"], self.ctx.device)
        self.empty_layers = state["empty_layers"]

    def notes(self) -> list[str]:
        """The tasks that found too few free weights in a conv to keep any: they compute there with the earlier
        tasks' weights only (a real limit of a fixed prune ratio over many tasks, not an error)."""
        return [f"PackNet: task {task} keeps no weights of its own in {len(empty)} conv(s) ({', '.join(empty)}): "
                "too few were free there; it still trained its BN, its head and its other convs"
                for task, empty in self.empty_layers if empty]


def masked_convs(model: nn.Module) -> list[tuple[str, OwnedWeightsConv]]:
    return [(name, module) for name, module in model.named_modules() if isinstance(module, OwnedWeightsConv)]


def smallest(weight: torch.Tensor, candidates: torch.Tensor, fraction: float) -> torch.Tensor:
    """A mask of the round(fraction x count) candidates of smallest magnitude, on the CPU with ties at the cut
    broken by position, so that every device picks the same ones."""
    index = candidates.flatten().cpu().nonzero().squeeze(1)
    magnitude = weight.detach().flatten().abs().cpu()[index]
    count = round(fraction * len(index))
    mask = torch.zeros(weight.numel(), dtype=torch.bool)
    if count:
        cut = magnitude.kthvalue(count).values
        below = magnitude < cut
        mask[index[below]] = True
        mask[index[(magnitude == cut).nonzero().squeeze(1)[:count - int(below.sum())]]] = True
    return mask.reshape(weight.shape).to(weight.device)


def copied(tensors: dict[str, torch.Tensor], device: torch.device | str) -> dict[str, torch.Tensor]:
    return {name: tensor.detach().to(device, copy=True) for name, tensor in tensors.items()}
