"""Binary masks over a frozen conv's weights, learnt through real-valued scores: Piggyback's threshold rule
(Mallya et al., ECCV 2018) and edge-popup's top-k rule (Ramanujan et al., CVPR 2020) that SupSup uses
(Wortsman et al., NeurIPS 2020)."""
import math

import torch
from torch import nn

from network.bits import pack_bits, unpack_bits
from network.layers import TaskLayer, conv_with_weight


class _StraightThrough(torch.autograd.Function):
    """The hard mask forward; backward, dL/dmask passed to the scores unchanged (straight-through)."""

    @staticmethod
    def forward(ctx, scores: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return mask.to(scores.dtype)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        return grad, None


class MaskedConv(TaskLayer):
    """A frozen conv whose weights a task masks: ``conv2d(x, weight * mask(scores))``.

    The rule is Piggyback's ``scores > threshold`` when ``keep`` is None, else edge-popup's: the ``keep`` weights
    with the largest ``|scores|``. Only the scores are the task's (``<conv name>.scores``); the conv stays the
    backbone's (``<conv name>.conv.weight``). The scores train at ``lr`` where it is given (Piggyback), else at the
    run's rate. The norm penalty leaves them out: it would pull them toward zero, across Piggyback's threshold, and
    neither mask paper regularises them. A finished task's record keeps the hard mask they give, at one bit per
    weight (``<conv name>.mask_bits``).
    """

    trained = ("scores",)
    unpenalised = ("scores",)
    stored_as = {"scores": "mask_bits"}

    def __init__(self, conv: nn.Conv2d, scores: torch.Tensor, *, threshold: float = 0.0,
                 keep: int | None = None, lr: float | None = None) -> None:
        super().__init__()
        self.conv = conv
        self.scores = nn.Parameter(scores)
        self.threshold = threshold
        self.keep = keep
        self.lr = lr

    def mask(self) -> torch.Tensor:
        """The hard boolean mask the forward uses."""
        if self.keep is None:
            return self.scores > self.threshold
        return top_k_mask(self.scores.abs(), self.keep)

    def load_mask(self, mask: torch.Tensor) -> None:
        """Make the conv compute exactly ``mask``: the scores become the mask as 0/1 floats, which the threshold rule
        (0 <= threshold < 1) and the top-k rule (keeping as many as the mask holds) both give back."""
        with torch.no_grad():
            self.scores.copy_(mask)
        if self.keep is not None:
            self.keep = int(mask.sum())

    def own_rates(self) -> dict[str, float]:
        return {} if self.lr is None else {"scores": self.lr}

    def stored_form(self, name: str) -> torch.Tensor:
        return pack_bits(self.mask())

    def decode_stored(self, name: str, stored: torch.Tensor) -> torch.Tensor:
        return unpack_bits(stored, self.scores.shape)

    def load_decoded(self, name: str, decoded: torch.Tensor) -> None:
        self.load_mask(decoded)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return conv_with_weight(self.conv, self.conv.weight * _StraightThrough.apply(self.scores, self.mask()), x)


def top_k_mask(values: torch.Tensor, keep: int) -> torch.Tensor:
    """True at the ``keep`` largest of ``values``, in their shape."""
    flat = torch.zeros(values.numel(), dtype=torch.bool, device=values.device)
    flat[values.reshape(-1).topk(keep, sorted=False).indices] = True
    return flat.view(values.shape)


def kept_count(numel: int, fraction: float) -> int:
    """Weights edge-popup keeps of ``numel`` at ``fraction``: all but int((1 - fraction) * numel), as its code
    counts them."""
    return numel - int((1 - fraction) * numel)


def piggyback_conv(conv: nn.Conv2d, *, threshold: float, score_init: float, lr: float) -> MaskedConv:
    """Piggyback: every score starts at the constant ``score_init``; above ``threshold`` the whole backbone. The
    threshold is below 1 (the registry's range), where a stored mask's 0/1 scores give the mask back. The scores
    train at their own rate ``lr``."""
    scores = torch.full_like(conv.weight, score_init, memory_format=torch.contiguous_format)
    return MaskedConv(conv, scores, threshold=threshold, lr=lr)


def supsup_conv(conv: nn.Conv2d, *, sparsity: float) -> MaskedConv:
    """SupSup: the frozen weights made signed-constant, scores kaiming-uniform (edge-popup's init, drawn from the
    global random state), the top ``sparsity`` fraction of |scores| kept."""
    signed_constant_(conv.weight)
    scores = torch.empty_like(conv.weight, memory_format=torch.contiguous_format)
    nn.init.kaiming_uniform_(scores, a=math.sqrt(5))
    return MaskedConv(conv, scores, keep=kept_count(scores.numel(), sparsity))


def signed_constant_(weight: torch.Tensor) -> None:
    """SupSup's init: each weight becomes sign(w) * gain / sqrt(fan_in), with the ReLU gain."""
    fan_in = weight[0].numel()
    with torch.no_grad():
        weight.copy_(weight.sign() * (nn.init.calculate_gain("relu") / math.sqrt(fan_in)))
