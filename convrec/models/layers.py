"""Building blocks of ConvRec's down-scaling stack: the layer schedule and the convolution layers.

Shapes follow the project legend: B batch, L sequence length, D hidden width, H heads.
Every tensor here is (B, L, D) or smaller, so cost grows linearly in L.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch
import torch.nn.functional as F
from torch import nn

from convrec.errors import ConvbenchError

Schedule = tuple[tuple[int, int], ...]

# (kernel size, stride) per layer, from the authors' code (ConvRec, Elsayed et al., IJCAI 2026).
# The product of its strides, 70, covers profiles of up to 70 items.
DEFAULT_SCHEDULE: Schedule = ((2, 2), (5, 5), (7, 7))
# Stride of the layers appended when a profile is longer than the default schedule covers.
EXTENSION_STRIDE = 7


def stride_product(schedule: Schedule) -> int:
    return math.prod(stride for _, stride in schedule)


def default_schedule(max_len: int) -> Schedule:
    """Return a schedule whose stride product covers `max_len`, so the stack ends at length 1.

    Profiles of up to 70 items get the authors' schedule. For longer ones, (7, 7) layers are
    appended while one more would still leave the product short of `max_len`. One last layer then
    gets the smallest stride that covers it. For example, max_len 200 gives (2, 2), (5, 5),
    (7, 7), (3, 3), with product 210.
    """
    if max_len < 1:
        raise ConvbenchError(f"max_len must be at least 1, got {max_len}")
    layers = list(DEFAULT_SCHEDULE)
    product = stride_product(DEFAULT_SCHEDULE)
    while product * EXTENSION_STRIDE < max_len:
        layers.append((EXTENSION_STRIDE, EXTENSION_STRIDE))
        product *= EXTENSION_STRIDE
    if product < max_len:
        stride = math.ceil(max_len / product)
        layers.append((stride, stride))
    return tuple(layers)


def validate_schedule(schedule: Iterable[Iterable[int]]) -> Schedule:
    """Return a user-set schedule as a tuple of (kernel size, stride) pairs, or raise.

    Each layer needs kernel size >= stride >= 1: a stride larger than the kernel would skip
    positions, so some profile items would never reach the sequence vector.
    """
    try:
        layers = tuple(tuple(int(value) for value in layer) for layer in schedule)
    except (TypeError, ValueError) as error:
        raise ConvbenchError(
            f"invalid schedule {schedule!r}: expected (kernel size, stride) pairs of integers, "
            "for example ((2, 2), (5, 5), (7, 7))"
        ) from error
    if not layers:
        raise ConvbenchError("invalid schedule (): set at least one (kernel size, stride) layer, "
                             "or leave it unset to choose one from max_len")
    for index, layer in enumerate(layers):
        if len(layer) != 2:
            raise ConvbenchError(
                f"invalid schedule layer {index}: {layer!r} is not a (kernel size, stride) pair"
            )
        kernel_size, stride = layer
        if not kernel_size >= stride >= 1:
            raise ConvbenchError(
                f"invalid schedule layer {index}: kernel size {kernel_size}, stride {stride}; "
                "each layer needs kernel size >= stride >= 1"
            )
    return layers


def resolve_schedule(max_len: int, schedule: Iterable[Iterable[int]] | None) -> Schedule:
    """Return the validated user schedule, or the default one for `max_len` when it is None."""
    if schedule is None:
        return default_schedule(max_len)
    return validate_schedule(schedule)


def window_padding(length: int, kernel_size: int, stride: int) -> int:
    """Return the left padding after which windows of (kernel_size, stride) tile `length` exactly.

    The last window then ends on the last position, which contains the most recent item of a
    left-padded profile. A sequence shorter than the kernel is padded to one full window.
    """
    if length < kernel_size:
        return kernel_size - length
    return (stride - (length - kernel_size) % stride) % stride


def output_length(length: int, kernel_size: int, stride: int) -> int:
    padded = length + window_padding(length, kernel_size, stride)
    return (padded - kernel_size) // stride + 1


class MultiHeadConv1d(nn.Module):
    """Convolution over time whose D channels are split into H heads, then a D x D mixing map.

    Each head is an independent (D/H -> D/H) convolution, which is a grouped convolution, so the
    weight has nn.Conv1d's layout (D, D/H, k) with groups = H. The windows are read as strided
    views and contracted with einsum, which on CPU ran about twice as fast as F.conv1d on the
    (B, L, D) layout for B = 128, L = 50, D = 256 (forward and backward, torch 2.13).
    """

    def __init__(self, width: int, num_heads: int, kernel_size: int, stride: int):
        super().__init__()
        if width % num_heads != 0:
            raise ConvbenchError(
                f"hidden size {width} is not divisible by num_heads {num_heads}; "
                "choose a num_heads that divides it"
            )
        self.num_heads = num_heads
        self.kernel_size = kernel_size
        self.stride = stride
        head_width = width // num_heads
        self.weight = nn.Parameter(torch.empty(width, head_width, kernel_size))
        self.bias = nn.Parameter(torch.empty(width))
        self.mix = nn.Linear(width, width)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        # The same initialisation as nn.Conv1d, with fan-in (D/H) * k.
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        fan_in = self.weight.shape[1] * self.kernel_size
        bound = 1.0 / math.sqrt(fan_in)
        nn.init.uniform_(self.bias, -bound, bound)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Convolve (B, L, D) without padding and return (B, (L - k) // s + 1, D)."""
        B, L, D = x.shape
        H = self.num_heads
        windows = x.unfold(1, self.kernel_size, self.stride)  # (B, L_out, D, k), a view
        L_out = windows.shape[1]
        windows = windows.reshape(B, L_out, H, D // H, self.kernel_size)
        weight = self.weight.view(H, D // H, D // H, self.kernel_size)  # (H, out, in, k)
        heads = torch.einsum("blhik,hoik->blho", windows, weight)
        return self.mix(heads.reshape(B, L_out, D) + self.bias)


class DownscalingLayer(nn.Module):
    """One layer of the stack: multi-head convolution plus two scaled average-pooled skip paths.

    output = LayerNorm(dropout(GELU(conv(x))) + w_input * pool(x) + w_carried * pool(carried)),
    where `carried` is the stack's input pooled once per layer so far. Both scalars start at 0.5,
    as in the authors' code.
    """

    def __init__(self, width: int, num_heads: int, kernel_size: int, stride: int,
                 dropout: float):
        super().__init__()
        self.kernel_size = kernel_size
        self.stride = stride
        self.conv = MultiHeadConv1d(width, num_heads, kernel_size, stride)
        self.dropout = nn.Dropout(dropout)
        self.norm = nn.LayerNorm(width)
        self.input_skip_weight = nn.Parameter(torch.tensor(0.5))
        self.carried_skip_weight = nn.Parameter(torch.tensor(0.5))

    def forward(self, x: torch.Tensor, carried: torch.Tensor, valid: torch.Tensor | None
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """Down-scale x and carried (B, L, D); return them at (B, L_out, D) and the new mask.

        With `valid` (B, L) bool, padded inputs must already be zero. The skip paths then
        average over valid positions only, and outputs whose window contains no valid position are
        zeroed and marked invalid. Without it, padded positions are averaged in like any other.
        """
        pad = window_padding(x.shape[1], self.kernel_size, self.stride)
        if pad:
            x = F.pad(x, (0, 0, pad, 0))
            carried = F.pad(carried, (0, 0, pad, 0))
            if valid is not None:
                valid = F.pad(valid, (pad, 0), value=False)

        pooled_input = self._pool(x)
        pooled_carried = self._pool(carried)
        if valid is not None:
            # Padded positions are zero, so the window sums need only be divided by the number
            # of valid positions instead of k.
            counts = self._pool(valid.unsqueeze(-1).to(x.dtype)) * self.kernel_size
            scale = self.kernel_size / counts.clamp(min=1.0)
            pooled_input = pooled_input * scale
            pooled_carried = pooled_carried * scale

        convolved = self.dropout(F.gelu(self.conv(x)))
        out = self.norm(convolved + self.input_skip_weight * pooled_input
                        + self.carried_skip_weight * pooled_carried)

        if valid is not None:
            out_valid = counts.squeeze(-1) > 0
            out = out * out_valid.unsqueeze(-1)
            return out, pooled_carried, out_valid
        return out, pooled_carried, None

    def _pool(self, x: torch.Tensor) -> torch.Tensor:
        # (B, L, D) -> (B, L_out, D); with the padding above, the windows match the convolution's.
        pooled = F.avg_pool1d(x.transpose(1, 2), self.kernel_size, self.stride)
        return pooled.transpose(1, 2)


class DownscalingStack(nn.Module):
    """Layers of strided multi-head convolution that shrink (B, L, D) to a sequence vector (B, D).

    After the last layer the remaining positions are averaged: all of them without a padding
    mask (the authors' behaviour), only the valid ones with it. A profile with no valid position
    then gets the zero vector.
    """

    def __init__(self, width: int, num_heads: int, schedule: Schedule, dropout: float,
                 padding_mask: bool):
        super().__init__()
        self.schedule = schedule
        self.padding_mask = padding_mask
        self.layers = nn.ModuleList(
            DownscalingLayer(width, num_heads, kernel_size, stride, dropout)
            for kernel_size, stride in schedule
        )

    def forward(self, x: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        """Reduce x (B, L, D), zero at padded positions, with valid (B, L) bool, to (B, D)."""
        mask = valid if self.padding_mask else None
        carried = x
        for layer in self.layers:
            x, carried, mask = layer(x, carried, mask)

        if mask is None:
            return x.mean(dim=1)
        counts = mask.sum(dim=1, keepdim=True).clamp(min=1).to(x.dtype)
        return x.sum(dim=1) / counts
