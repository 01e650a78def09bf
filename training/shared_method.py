"""What a shared-backbone method may change, as hooks around the shared recipe (the pattern of Mammoth's
``models/``): before a task, the phases it trains in, the loss of a batch, after a task, and what it carries to the
next task."""
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from dataset.loader import DeviceBatches
from dataset.preprocess import TaskTensors
from dataset.task import TaskSample
from network import MultiHeadModel
from network.methods import FREEZE, PER_TASK
from network.multihead import load_norm_layer_state, norm_affine_count, norm_layer_state, norm_layer_tensors
from training.checkpoints import MethodHooks
from training.context import Context


@dataclass
class TaskData:
    """One task while it is learnt: its place in the run, its images and its batches."""

    sample: TaskSample
    position: int  # 0-based place in the run: the index of the task's head
    tensors: TaskTensors  # uint8 images on the CPU, as the cache holds them
    labels: torch.Tensor  # the training labels on the device, looked up by image index
    train: DeviceBatches  # serves image indices (not labels), so a method can find its per-image records
    val: DeviceBatches


PhaseHook = Callable[[MultiHeadModel, TaskData], None]
MethodLoss = Callable[[MultiHeadModel, TaskData, torch.Tensor, torch.Tensor, torch.Tensor],
                      tuple[torch.Tensor, torch.Tensor]]


@dataclass(frozen=True)
class Phase:
    """One pass of a task through the fit loop, as a method declares it (``Method.phases``). The sequence driver runs
    a task's phases in order, each with its own resume point and metrics file, so that a method never enters the fit
    loop itself, a killed run resumes the phase it was in and finds the ones before it finished, and no method knows
    where a phase's files are. A phase changes only what it names; everything else is the task's: the batches (and
    their shuffling, which runs on from one phase to the next), the method's ``task_hooks``, the rest of the recipe.

    ``Phase()`` is the task's main phase: the run's recipe and the method's loss; its settings, history and best
    epoch are the task's record. Any other phase has a name, which its resume point records as ``"phase"``."""

    name: str | None = None  # None: the task's main phase
    epochs: int | None = None  # None: the recipe's --epochs (StepLR steps every epochs // 3 of the phase's)
    lr: float | None = None  # None: the recipe's --lr
    loss: MethodLoss | None = None  # None: the method's batch_loss
    start: PhaseHook | None = None  # sets the model up before the phase (again when a killed run comes back to it)
    end: PhaseHook | None = None  # after the phase, its best epoch loaded: undoes start, or the step that follows it

    @property
    def main(self) -> bool:
        return self.name is None


class Method:
    """Plain sequential training of the backbone and the task's head, with the run's BatchNorm mode
    (``ctx.shared_bn``): the base hooks do what that mode asks and nothing else. A subclass that overrides a hook
    calls the base one (``before_task`` first, ``after_task`` last)."""

    NORMS_KEY = "norms"  # the name the per-task BN list has in ``state_dict`` (PSP's and PackNet's files keep theirs)

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self.start_norms: dict[str, torch.Tensor] = {}  # per-task BN: the backbone's, where each task's BN starts
        self.task_norms: list[dict[str, torch.Tensor]] = []  # per-task BN: each finished task's (CPU)

    @property
    def norms_per_task(self) -> bool:
        return self.ctx.shared_bn == PER_TASK

    def option(self, name: str) -> int | float:
        """One of the method's options (network.methods names them and checks their ranges), as the run has it."""
        return self.ctx.options[name]

    def build_model(self) -> MultiHeadModel:
        """The shared model, before any task (PSP and PackNet change its layers)."""
        model = MultiHeadModel.of(self.ctx.backbone)
        if self.norms_per_task:
            self.start_norms = norm_layer_state(model)
        return model

    def use_task(self, model: MultiHeadModel, position: int) -> None:
        """Make the model compute as the task at ``position`` does (to evaluate it): its head, and whatever else
        the method keeps per task (its BN where BN is per task)."""
        model.use_head(position)
        if self.norms_per_task:
            load_norm_layer_state(model, self.task_norms[position])

    def before_task(self, model: MultiHeadModel, data: TaskData) -> None:
        """Called with the backbone as the previous task left it, before the task's first epoch (and again
        when a killed task resumes, so anything recorded here is recorded from the same weights). The base
        hook sets up the task's BN: with ``per-task`` it starts from the backbone's, with ``freeze`` its statistics
        stay as the first task left them."""
        if self.norms_per_task:
            load_norm_layer_state(model, self.start_norms)
        model.statistics_frozen = self.ctx.shared_bn == FREEZE and data.position > 0
        model.heads[:data.position].requires_grad_(self.trains_earlier_heads())

    def phases(self, data: TaskData) -> list[Phase]:
        """The task's phases in the order they run, the main one among them: the main phase alone by default (LwF
        warms the new head up before it, PackNet prunes at its end and retrains after it). Decided by the options
        and the task's place only, so that a resumed run declares the same phases and each finds its own files."""
        return [Phase()]

    def trains_earlier_heads(self) -> bool:
        """Whether a task also trains the earlier tasks' heads (LwF and ER, as their papers do): then a task's head
        changes after the task, and its record is rewritten after each later task."""
        return False

    def shared_parameters(self, model: MultiHeadModel) -> list[tuple[str, torch.nn.Parameter]]:
        """The backbone's parameters that every task shares: what EWC and SI anchor (with per-task BN, the norm
        layers' affine pairs are each task's own and left out)."""
        own = set(norm_layer_tensors(model)) if self.norms_per_task else set()
        return [(name, p) for name, p in model.backbone_named_parameters() if name not in own]

    def batch_loss(self, model: MultiHeadModel, data: TaskData, images: torch.Tensor, labels: torch.Tensor,
                   index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(loss, the current head's logits) for a batch of the task's training images at ``index``."""
        runtime = self.ctx.runtime
        with runtime.autocast():
            logits = model(runtime.model_input(images))
        return F.cross_entropy(logits.float(), labels), logits

    def task_hooks(self, model: MultiHeadModel, data: TaskData) -> MethodHooks | None:
        """A call after every optimizer step and the state built while the task trains, for the fit loop to run and
        keep in the task's resume point (SI); None: the plain loop."""
        return None

    def after_task(self, model: MultiHeadModel, data: TaskData) -> None:
        """Called with the task's best-epoch backbone and head, before the task is evaluated and saved; the base
        hook keeps the task's BN where BN is per task."""
        if self.norms_per_task:
            self.task_norms = self.task_norms[:data.position] + [norm_layer_state(model)]

    def task_state(self, model: MultiHeadModel, position: int) -> dict[str, torch.Tensor]:
        """What the task's weights file keeps of its own: its head (``fc.*``), its BN where BN is per task, and
        whatever else the method keeps per task, as CPU tensors."""
        return model.head_state(position) | (self.task_norms[position] if self.norms_per_task else {})

    def task_parameters(self, model: MultiHeadModel, position: int) -> int:
        """Parameter elements the task at ``position`` trained and keeps as its own, for its record: its head, and
        its norm layers' affine pairs where BN is per task (PackNet adds the weights it owns)."""
        head = sum(p.numel() for p in model.heads[position].parameters())
        return head + (norm_affine_count(model) if self.norms_per_task else 0)

    def task_bytes(self, position: int) -> int:
        """Bytes the method keeps for the task at ``position`` outside its ``task_state`` (ER: its images), for the
        report's storage per task; what every task shares (EWC's Fisher) is not counted per task."""
        return 0

    def state_dict(self) -> dict:
        """What the method carries to the next task (CPU tensors); saved with the backbone after each task."""
        return {self.NORMS_KEY: self.task_norms} if self.norms_per_task else {}

    def load_state_dict(self, state: dict) -> None:
        """Restore ``state_dict()`` (a resumed run)."""
        if self.norms_per_task:
            self.task_norms = state[self.NORMS_KEY]

    def notes(self) -> list[str]:
        """Lines the run's printed summary adds after the matrix (PackNet: the layers that ran out of weights)."""
        return []
