"""FLOP counting with `torch.utils.flop_counter.FlopCounterMode`, completed for CPU attention.

FlopCounterMode counts matrix products, convolutions and the CUDA attention kernels. On CPU,
`torch.nn.functional.scaled_dot_product_attention` dispatches to
`aten._scaled_dot_product_flash_attention_for_cpu` and its backward to
`aten._scaled_dot_product_flash_attention_for_cpu_backward`. torch 2.13 has no formula for
either, so without the formulas below SASRec's and CARCA's attention costs nothing on CPU.

Convention (the one FlopCounterMode uses for the CUDA flash kernels): a multiply-add is 2 FLOPs,
and elementwise work (softmax, scaling, masking) is not counted. For query (B, H, Lq, Dh), key
(B, Hk, Lk, Dh) and value (B, Hk, Lk, Dv):
- forward = 2*B*H*Lq*Lk*Dh (Q K^T) + 2*B*H*Lq*Lk*Dv (attention weights times V);
- backward = 5 products of the same sizes: Q K^T recomputed from the saved log-sum-exp, then
  dP = dO V^T, dV = P^T dO, dQ = dS K and dK = dS^T Q. That is 2.5 times the forward when
  Dh = Dv, not the usual 2, because the flash kernel recomputes the attention weights.
Causal and boolean masks are ignored: the count is that of dense attention, as FlopCounterMode
does for the CUDA kernels, although a causal flash kernel skips about half of the blocks.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch.utils.flop_counter import FlopCounterMode

aten = torch.ops.aten


def _attention_dims(query_shape, key_shape, value_shape) -> tuple[int, int, int, int, int, int]:
    B, H, Lq, Dh = query_shape
    Bk, Hk, Lk, Dk = key_shape
    Bv, Hv, Lv, Dv = value_shape
    if not (B == Bk == Bv and Hk == Hv and Lk == Lv and Dh == Dk and H % Hk == 0):
        raise ValueError(
            f"incompatible attention shapes: query {tuple(query_shape)}, "
            f"key {tuple(key_shape)}, value {tuple(value_shape)}"
        )
    return B, H, Lq, Lk, Dh, Dv


def attention_forward_flops(query_shape, key_shape, value_shape) -> int:
    """Return the FLOPs of dense attention: Q K^T plus the weights times V."""
    B, H, Lq, Lk, Dh, Dv = _attention_dims(query_shape, key_shape, value_shape)
    return 2 * B * H * Lq * Lk * Dh + 2 * B * H * Lq * Lk * Dv


def attention_backward_flops(query_shape, key_shape, value_shape) -> int:
    """Return the FLOPs of the flash attention backward: Q K^T recomputed plus four gradients."""
    B, H, Lq, Lk, Dh, Dv = _attention_dims(query_shape, key_shape, value_shape)
    recompute_scores = 2 * B * H * Lq * Lk * Dh
    grad_weights = 2 * B * H * Lq * Lk * Dv  # dP = dO V^T
    grad_value = 2 * B * H * Lq * Lk * Dv  # dV = P^T dO
    grad_query = 2 * B * H * Lq * Lk * Dh  # dQ = dS K
    grad_key = 2 * B * H * Lq * Lk * Dh  # dK = dS^T Q
    return recompute_scores + grad_weights + grad_value + grad_query + grad_key


# FlopCounterMode calls these with every tensor argument replaced by its shape.
def _cpu_flash_forward(query, key, value, *args, out_shape=None, **kwargs) -> int:
    return attention_forward_flops(query, key, value)


def _cpu_flash_backward(grad_out, query, key, value, *args, out_shape=None, **kwargs) -> int:
    return attention_backward_flops(query, key, value)


CPU_ATTENTION_FORMULAS: dict[Any, Callable[..., int]] = {
    aten._scaled_dot_product_flash_attention_for_cpu: _cpu_flash_forward,
    aten._scaled_dot_product_flash_attention_for_cpu_backward: _cpu_flash_backward,
}


def flop_counter() -> FlopCounterMode:
    """Return a silent FlopCounterMode that also counts the CPU attention kernels.

    The formulas are passed as `custom_mapping`, so torch's global formula registry is left
    unchanged.
    """
    return FlopCounterMode(display=False, custom_mapping=CPU_ATTENTION_FORMULAS)


def count_flops(fn: Callable[[], Any]) -> int:
    """Run `fn` once and return the FLOPs of every counted operator it dispatches."""
    with flop_counter() as counter:
        fn()
    return int(counter.get_total_flops())
