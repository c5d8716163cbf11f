"""Batch containers: what the trainer, the evaluator and the profiler hand to a model.

ScoringBatch serves both evaluation and ConvRec's training (positive at candidate column 0);
PositionBatch serves the per-position training of SASRec and CARCA.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import torch


@dataclass
class ScoringBatch:
    """Profiles plus the candidates to score for the interaction that follows each profile.

    users: (B,) long. profile_items: (B, L) long, left-padded with 0.
    profile_context: (B, L, X) float, zeros at padding.
    candidate_items: (B, C) long, or None to score every item (full ranking).
    candidate_context: (B, X) float, context of the interaction being predicted.
    """

    users: torch.Tensor
    profile_items: torch.Tensor
    profile_context: torch.Tensor
    candidate_items: torch.Tensor | None
    candidate_context: torch.Tensor

    def to(self, device: torch.device | str) -> ScoringBatch:
        return _move(self, device)


@dataclass
class PositionBatch:
    """Per-position training targets: at position t the model predicts the item that follows it.

    profile_items: (B, L) long, left-padded with 0. profile_context: (B, L, X) float.
    positive_items: (B, L) long, the next item at each position, 0 where there is none.
    negative_items: (B, L) long, one sampled negative per position, 0 where there is none.
    target_context: (B, L, X) float, context of the positive interaction at each position.
    """

    users: torch.Tensor
    profile_items: torch.Tensor
    profile_context: torch.Tensor
    positive_items: torch.Tensor
    negative_items: torch.Tensor
    target_context: torch.Tensor

    def to(self, device: torch.device | str) -> PositionBatch:
        return _move(self, device)


def _move(batch, device):
    values = {}
    for f in fields(batch):
        value = getattr(batch, f.name)
        values[f.name] = value.to(device) if isinstance(value, torch.Tensor) else value
    return type(batch)(**values)
