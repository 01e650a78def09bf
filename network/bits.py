"""Binary masks stored as they are counted: one bit per weight, eight weights a byte."""
import math

import torch

_BIT_WEIGHTS = torch.tensor([128, 64, 32, 16, 8, 4, 2, 1], dtype=torch.uint8)  # the first weight is the high bit


def pack_bits(mask: torch.Tensor) -> torch.Tensor:
    """A boolean mask of any shape as uint8 bytes on the CPU, in row-major order, the last byte zero-padded."""
    flat = mask.detach().reshape(-1).to("cpu", torch.uint8)
    padded = torch.cat([flat, flat.new_zeros(-len(flat) % 8)])
    return (padded.view(-1, 8) * _BIT_WEIGHTS).sum(1, dtype=torch.uint8)


def unpack_bits(packed: torch.Tensor, shape: torch.Size | tuple[int, ...]) -> torch.Tensor:
    """The boolean mask ``pack_bits`` packed, given its shape."""
    count = math.prod(shape)
    if packed.dtype != torch.uint8 or packed.numel() != (count + 7) // 8:
        raise ValueError(f"{packed.numel()} packed bytes of {packed.dtype} cannot hold a mask of shape {list(shape)}")
    bits = packed.reshape(-1, 1).bitwise_and(_BIT_WEIGHTS.to(packed.device)).ne(0)
    return bits.reshape(-1)[:count].reshape(shape)


def state_bytes(state: dict[str, torch.Tensor]) -> int:
    """What a task's tensors occupy as stored: each tensor's elements at its dtype's size."""
    return sum(tensor.numel() * tensor.element_size() for tensor in state.values())
