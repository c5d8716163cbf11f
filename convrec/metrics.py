"""Ranking metrics computed from the number of candidates that score above the target.

A target's 0-based rank is the count of competing candidates that outrank it. Ties need a rule:

- "pessimistic" (the default): every candidate whose score equals the target's counts as ranked
  above it. A model that gives every item the same score therefore gets HR@k = 0, never 1.
- "expected": the expected value of each metric when ties are broken uniformly at random. With
  all 101 sampled candidates tied, HR@10 is 10 / 101 = 0.099010.

NDCG here has one relevant item, so NDCG@k = 1 / log2(rank + 2) when rank < k and 0 otherwise;
MRR is 1 / (rank + 1) without a cut-off.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch

from convrec.errors import TrainingError

HR_CUTOFFS = (1, 5, 10, 20)
NDCG_CUTOFFS = (5, 10, 20)
TieRule = Literal["pessimistic", "expected"]


def metric_names() -> list[str]:
    """Return the reported metric names in table order."""
    return [f"HR@{k}" for k in HR_CUTOFFS] + [f"NDCG@{k}" for k in NDCG_CUTOFFS] + ["MRR"]


def count_above_and_tied(
    scores: torch.Tensor, target_column: torch.Tensor, exclude: torch.Tensor | None = None,
    users: np.ndarray | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Count, per row, the candidates scoring above the target and those tied with it.

    scores: (B, C). target_column: (B,) index of the target in each row. exclude: optional
    (B, C) bool mask of candidates left out of the ranking (never the target). Raises
    TrainingError naming the user when a row contains a NaN score, because a NaN compares false
    with everything and would silently rank the target first.
    """
    nan_rows = torch.isnan(scores).any(dim=1)
    if bool(nan_rows.any()):
        row = int(nan_rows.nonzero()[0, 0])
        who = f"user {int(users[row])}" if users is not None else f"batch row {row}"
        raise TrainingError(f"NaN score during evaluation for {who}; no metric was written")

    target_scores = scores.gather(1, target_column.view(-1, 1))
    above = scores > target_scores
    tied = scores == target_scores
    tied.scatter_(1, target_column.view(-1, 1), False)
    if exclude is not None:
        above &= ~exclude
        tied &= ~exclude
    return above.sum(dim=1), tied.sum(dim=1)


def metrics_from_counts(
    above: np.ndarray, tied: np.ndarray, tie_rule: TieRule = "pessimistic"
) -> dict[str, np.ndarray]:
    """Per-user metric values from the counts of candidates above and tied with the target."""
    above = np.asarray(above, dtype=np.int64)
    tied = np.asarray(tied, dtype=np.int64)
    if tie_rule == "pessimistic":
        return _metrics_at_rank(above + tied)
    if tie_rule != "expected":
        raise ValueError(f"unknown tie rule {tie_rule!r}; use 'pessimistic' or 'expected'")

    # Average the metrics over every rank the target can take among its ties. The largest tie
    # group is bounded by the number of candidates, so this loops over at most C offsets.
    totals = {name: np.zeros(len(above)) for name in metric_names()}
    for offset in range(int(tied.max(initial=0)) + 1):
        in_group = offset <= tied
        values = _metrics_at_rank(above + offset)
        for name in totals:
            totals[name] += np.where(in_group, values[name], 0.0)
    return {name: total / (tied + 1) for name, total in totals.items()}


def _metrics_at_rank(rank: np.ndarray) -> dict[str, np.ndarray]:
    rank = rank.astype(np.float64)
    values = {}
    for k in HR_CUTOFFS:
        values[f"HR@{k}"] = (rank < k).astype(np.float64)
    discount = 1.0 / np.log2(rank + 2.0)
    for k in NDCG_CUTOFFS:
        values[f"NDCG@{k}"] = np.where(rank < k, discount, 0.0)
    values["MRR"] = 1.0 / (rank + 1.0)
    return values


def mean_metrics(per_user: dict[str, np.ndarray]) -> dict[str, float]:
    """Average per-user metric values into one number per metric."""
    return {name: float(np.mean(values)) for name, values in per_user.items()}
