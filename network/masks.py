"""Binary masks over a frozen conv's weights, learnt through real-valued scores: Piggyback's threshold rule
(Mallya et al., ECCV 2018) and edge-popup's top-k rule (Ramanujan et al., CVPR 2020) that SupSup uses
(Wortsman et al., NeurIPS 2020)."""
import math

import torch
from torch import nn

from network.layers import conv_with_weight



class _StraightThrough(torch.autograd.Function):
    """The hard mask forward; backward, dL/dmask passed to the scores unchanged (straight-through)."""

    @staticmethod
    def forward(ctx, scores: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return mask.to(scores.dtype)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        return grad, None


class MaskedConv(nn.Module):
    """A frozen conv whose weights a task masks: ``conv2d(x, weight * mask(scores))``.

    The rule is Piggyback's ``scores > threshold`` when ``keep`` is None, else edge-popup's: the ``keep`` weights
    with the largest ``|scores|``. Only the scores are the task's (``<conv name>.scores``); the conv stays the
    backbone's (``<conv name>.conv.weight``).
    """

    def __init__(self, conv: nn.Conv2d, scores: torch.Tensor, *, threshold: float = 0.0,
                 keep: int | None = None) -> None:
        super().__init__()
        self.conv = conv
        self.scores = nn.Parameter(scores)
        self.threshold = threshold
        self.keep = keep

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


def piggyback_conv(conv: nn.Conv2d, *, threshold: float, score_init: float) -> MaskedConv:
    """Piggyback: every score starts at the constant ``score_init``; above ``threshold`` the whole backbone. The
    threshold is below 1 (the registry's range), where a stored mask's 0/1 scores give the mask back."""
    scores = torch.full_like(conv.weight, score_init, memory_format=torch.contiguous_format)
    return MaskedConv(conv, scores, threshold=threshold)


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
