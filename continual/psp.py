"""PSP: superposition of many models into one (Cheung et al., NeurIPS 2019), with the paper's binary superposition.
Every conv of the shared backbone computes y = W (c ⊙ x) with c the task's fixed random context of ±1, so each task
trains and reads its own model W ⊙ c out of the one set of weights. A conv's linear map acts on each input patch, so
its context has a patch's shape (input channels x kernel height x kernel width), shared by the output channels:
the conv runs with the weights W ⊙ c. The linear layers are the per-task heads, which need no context.

Every task's context is random, the first one's too (the paper privileges none), so the pretrained filters reach
every task sign-scrambled. BN is per task (its affine and running statistics are the task's, starting from the
backbone's, as in CLR): the contexts give each task its own activation statistics, which a shared BN would mix. So
PSP always runs with --shared-bn per-task (the base Method's per-task BN)."""
import torch
from torch import nn

from network import MultiHeadModel, pack_bits, replace_convs
from network.layers import conv_with_weight
from network.methods import LR_SEARCH, PER_TASK, SHARED, TUNED_LR, MethodSpec, implements
from training.shared_method import Method, TaskData

SPEC = MethodSpec("PSP", SHARED, "the whole backbone through the task's ±1 contexts, its own norm layers, and a "
                  "head", "Cheung et al., Superposition of Many Models into One, NeurIPS 2019", order=170,
                  paper_column=8, fixed_bn=PER_TASK, search={TUNED_LR: LR_SEARCH})


class ContextConv(nn.Module):
    """A conv that applies its weights through a context: the conv's own forward with W ⊙ c, c of shape
    (in_channels/groups, kh, kw). It holds the conv's weight and bias as its own, so the backbone's names stay
    (``layer1.0.conv1.weight``), and calls the conv itself, kept outside the module tree, so that a conv subclass's
    own padding rule stays too; an all-ones context is the plain conv."""

    def __init__(self, conv: nn.Conv2d) -> None:
        super().__init__()
        self.weight, self.bias = conv.weight, conv.bias
        self.register_buffer("context", torch.ones_like(conv.weight[0]), persistent=False)
        object.__setattr__(self, "conv", conv)  # not a submodule: its tensors are this module's

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return conv_with_weight(self.conv, self.weight * self.context, x)


@implements(SPEC)
class PSP(Method):
    NORMS_KEY = "bn"

    def build_model(self) -> MultiHeadModel:
        model = super().build_model()
        replace_convs(model, ContextConv)
        return model

    def before_task(self, model: MultiHeadModel, data: TaskData) -> None:
        super().before_task(model, data)
        self.use_context(model, data.position)

    def use_task(self, model: MultiHeadModel, position: int) -> None:
        super().use_task(model, position)
        self.use_context(model, position)

    def use_context(self, model: MultiHeadModel, position: int) -> None:
        convs = dict(model.named_modules())
        for name, context in self.contexts(model, position).items():
            convs[name].context.copy_(context)

    def contexts(self, model: MultiHeadModel, position: int) -> dict[str, torch.Tensor]:
        """Each conv's ±1 context for the task at ``position``, drawn in the model's order from a generator seeded
        with --seed + position: the same in every run, and no storage needed beyond the seed."""
        generator = torch.Generator().manual_seed(self.ctx.recipe.seed + position)
        return {name: torch.randint(0, 2, conv.context.shape, generator=generator) * 2 - 1
                for name, conv in model.named_modules() if isinstance(conv, ContextConv)}

    def task_state(self, model: MultiHeadModel, position: int) -> dict[str, torch.Tensor]:
        """The head, the task's BN and its contexts, packed at one bit per element (kept so that the file holds the
        whole task, and counted so that its storage is honest, though the seed could redraw them)."""
        contexts = {f"{name}.context": pack_bits(context > 0)
                    for name, context in self.contexts(model, position).items()}
        return super().task_state(model, position) | contexts

