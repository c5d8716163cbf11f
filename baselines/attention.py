"""Layers and the per-position loss shared by the two attention baselines, SASRec and CARCA.

Attention has two interchangeable paths. The fused path calls
`torch.nn.functional.scaled_dot_product_attention`, which picks the fastest kernel for the device.
The reference path spells out softmax(Q K^T / sqrt(d)) V so that a test can check the fused one
against it. Both take a boolean mask that is True where a query may attend to a key.

Shape legend: B batch, H heads, Lq queries, Lk keys, D hidden width.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from convrec.errors import ConvbenchError


def causal_padding_mask(valid: torch.Tensor) -> torch.Tensor:
    """Return the (B, 1, L, L) self-attention mask of a left-padded profile.

    Query i may attend to key j when j <= i and position j contains an item (`valid`, (B, L) bool).
    Every query may also attend to itself, so the row of a padded query is never empty. Its
    output means nothing, and the models zero it afterwards.
    """
    B, L = valid.shape
    causal = torch.ones(L, L, dtype=torch.bool, device=valid.device).tril()
    diagonal = torch.eye(L, dtype=torch.bool, device=valid.device)
    keys = valid[:, None, :] | diagonal  # (B, L, L)
    return (causal & keys).unsqueeze(1)


def attend(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, allowed: torch.Tensor,
           *, dropout_p: float = 0.0, fused: bool = True) -> torch.Tensor:
    """Apply scaled dot-product attention and return (B, H, Lq, Dh) outputs.

    query: (B, H, Lq, Dh); key, value: (B, H, Lk, Dh); allowed: bool, broadcastable to
    (B, H, Lq, Lk). `dropout_p` drops attention weights, so pass 0 outside training.
    A query with no allowed key would get NaN from the softmax. Its row is computed over all
    keys instead and then set to zero, so that a profile made only of padding scores finitely.
    """
    empty = ~allowed.any(dim=-1, keepdim=True)  # (B, 1 or H, Lq, 1)
    allowed = allowed | empty

    if fused:
        output = F.scaled_dot_product_attention(query, key, value, attn_mask=allowed,
                                                dropout_p=dropout_p)
    else:
        scores = query @ key.transpose(-2, -1) / math.sqrt(query.shape[-1])  # (B, H, Lq, Lk)
        scores = scores.masked_fill(~allowed, float("-inf"))
        weights = F.dropout(scores.softmax(dim=-1), p=dropout_p)
        output = weights @ value

    return output.masked_fill(empty, 0.0)


class MultiHeadAttention(nn.Module):
    """Multi-head attention whose queries and keys come from different inputs.

    SASRec passes a LayerNorm output as queries and the un-normalised sequence as keys and values.
    CARCA passes candidate items as queries and profile states as keys and values.
    `projection_activation` is applied to the query, key and value projections (CARCA's authors
    use LeakyReLU there). `output_projection` adds the final D x D map that
    `torch.nn.MultiheadAttention` has and CARCA's authors do not.
    """

    def __init__(self, hidden_size: int, num_heads: int, dropout: float, *,
                 projection_activation: nn.Module | None = None, output_projection: bool = True,
                 fused: bool = True):
        super().__init__()
        if num_heads < 1 or hidden_size % num_heads != 0:
            raise ConvbenchError(
                f"hidden_size {hidden_size} is not divisible by num_heads {num_heads}; "
                "choose a head count that divides the hidden width"
            )
        self.num_heads = num_heads
        self.dropout = dropout
        self.fused = fused
        self.query = nn.Linear(hidden_size, hidden_size)
        self.key = nn.Linear(hidden_size, hidden_size)
        self.value = nn.Linear(hidden_size, hidden_size)
        self.activation = projection_activation if projection_activation is not None \
            else nn.Identity()
        self.output = nn.Linear(hidden_size, hidden_size) if output_projection else nn.Identity()

    def forward(self, queries: torch.Tensor, keys: torch.Tensor,
                allowed: torch.Tensor) -> torch.Tensor:
        """Attend from (B, Lq, D) queries to (B, Lk, D) keys and values; return (B, Lq, D)."""
        B, Lq, D = queries.shape
        Lk = keys.shape[1]
        H = self.num_heads

        q = self.activation(self.query(queries)).view(B, Lq, H, D // H).transpose(1, 2)
        k = self.activation(self.key(keys)).view(B, Lk, H, D // H).transpose(1, 2)
        v = self.activation(self.value(keys)).view(B, Lk, H, D // H).transpose(1, 2)
        # q: (B, H, Lq, D / H); k, v: (B, H, Lk, D / H)

        dropout_p = self.dropout if self.training else 0.0
        heads = attend(q, k, v, allowed, dropout_p=dropout_p, fused=self.fused)
        merged = heads.transpose(1, 2).reshape(B, Lq, D)
        return self.output(merged)


class PointwiseFeedForward(nn.Module):
    """Two position-wise linear maps with an activation and dropout; the caller adds the residual.

    Both baselines' reference code writes these maps as 1x1 convolutions, which equal a Linear.
    """

    def __init__(self, hidden_size: int, dropout: float, activation: nn.Module):
        super().__init__()
        self.layers = nn.Sequential(
            nn.Linear(hidden_size, hidden_size),
            activation,
            nn.Dropout(dropout),
            nn.Linear(hidden_size, hidden_size),
            nn.Dropout(dropout),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


def position_bce_loss(positive_logits: torch.Tensor, negative_logits: torch.Tensor,
                      targets: torch.Tensor) -> torch.Tensor:
    """Return the binary cross-entropy of per-position logits, averaged over target positions.

    positive_logits, negative_logits: (B, L). targets: (B, L) bool, False where the position has
    no next item (padding). The positive's label is 1 and the negative's is 0, and both terms are
    averaged over the same positions, as SASRec and CARCA do. A batch without targets gives 0.
    """
    positive_terms = F.softplus(-positive_logits)  # -log sigmoid(x)
    negative_terms = F.softplus(negative_logits)  # -log(1 - sigmoid(x))
    weights = targets.to(positive_logits.dtype)
    total = ((positive_terms + negative_terms) * weights).sum()
    return total / weights.sum().clamp(min=1.0)
