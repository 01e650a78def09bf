"""PSP: superposition of many models into one (Cheung et al., NeurIPS 2019), with the paper's binary superposition.
Every conv of the shared backbone computes y = W (c ⊙ x) with c the task's fixed random context of ±1, so each task
trains and reads its own model W ⊙ c out of the one set of weights. A conv's linear map acts on each input patch, so
its context has a patch's shape (input channels x kernel height x kernel width), shared by the output channels:
the conv runs with the weights W ⊙ c. The linear layers are the per-task heads, which need no context.

Every task's context is random, the first one's too (the paper privileges none), so the pretrained filters reach
every task sign-scrambled. BN is per task (its affine and running statistics are the task's, starting from the
backbone's, as in CLR): the contexts give each task its own activation statistics, which a shared BN would mix."""
import torch
from torch import nn

from continual.method import Method, TaskData
from network import MultiHeadModel, pack_bits, replace_convs
from network.multihead import batch_norm_state, batch_norm_tensors, load_batch_norm_state
from training.context import Context

class ContextConv(nn.Conv2d):
    """A conv that applies its weights through a context: conv(x, W ⊙ c), c of shape (in_channels/groups, kh, kw).
    It keeps the conv's own weight and bias (and so torchvision's names); an all-ones context is the plain conv."""

    def __init__(self, conv: nn.Conv2d) -> None:
        super().__init__(conv.in_channels, conv.out_channels, conv.kernel_size, stride=conv.stride,
                         padding=conv.padding, dilation=conv.dilation, groups=conv.groups, bias=conv.bias is not None,
                         padding_mode=conv.padding_mode, device=conv.weight.device, dtype=conv.weight.dtype)
        self.weight, self.bias = conv.weight, conv.bias
        self.register_buffer("context", torch.ones_like(conv.weight[0]), persistent=False)

    def reset_parameters(self) -> None:
        """Nothing: the weights are the backbone's (and construction draws nothing from the global random state)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._conv_forward(x, self.weight * self.context, self.bias)


class PSP(Method):
    def __init__(self, ctx: Context) -> None:
        super().__init__(ctx)
        self.backbone_bn: dict[str, torch.Tensor] = {}  # the backbone's BN, where each task's BN starts
        self.bn: list[dict[str, torch.Tensor]] = []  # per finished task: its BN

    def build_model(self) -> MultiHeadModel:
        model = super().build_model()
        replace_convs(model, ContextConv)
        self.backbone_bn = batch_norm_state(model)
        return model

    def before_task(self, model: MultiHeadModel, data: TaskData) -> None:
        load_batch_norm_state(model, self.backbone_bn)
        self.use_context(model, data.position)

    def use_task(self, model: MultiHeadModel, position: int) -> None:
        super().use_task(model, position)
        self.use_context(model, position)
        load_batch_norm_state(model, self.bn[position])

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

    def after_task(self, model: MultiHeadModel, data: TaskData) -> None:
        self.bn.append(batch_norm_state(model))

    def task_state(self, model: MultiHeadModel, position: int) -> dict[str, torch.Tensor]:
        """The head, the task's BN and its contexts, packed at one bit per element (kept so that the file holds the
        whole task, and counted so that its storage is honest, though the seed could redraw them)."""
        contexts = {f"{name}.context": pack_bits(context > 0)
                    for name, context in self.contexts(model, position).items()}
        return model.head_state(position) | self.bn[position] | contexts

    def task_parameters(self, model: MultiHeadModel, position: int) -> int:
        """The head and the task's BN affine."""
        bn_affine = sum(t.numel() for name, t in batch_norm_tensors(model).items()
                        if name.endswith((".weight", ".bias")))
        return super().task_parameters(model, position) + bn_affine

    def state_dict(self) -> dict:
        return {"bn": self.bn}

    def load_state_dict(self, state: dict) -> None:
        self.bn = state["bn"]

