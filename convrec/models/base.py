"""The model contract shared by ConvRec, SASRec and CARCA.

The trainer, the evaluator and the profiler only use this interface, so they treat every model
alike. A model is built from its typed config plus the dataset metadata.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import ClassVar, Literal

import torch
from torch import nn

from convrec.data.batches import PositionBatch, ScoringBatch
from convrec.data.schema import DatasetMeta

TrainingMode = Literal["prefix", "positions"]


class SequentialRecommender(nn.Module, ABC):
    """Base class of every registered model.

    training_mode "prefix": `loss` takes a ScoringBatch whose candidate column 0 is the positive
    (one random prefix per user and epoch, K sampled negatives). training_mode "positions":
    `loss` takes a PositionBatch (every position predicts its successor).
    """

    name: ClassVar[str]
    config_class: ClassVar[type]
    training_mode: ClassVar[TrainingMode]

    def __init__(self, config, meta: DatasetMeta):
        super().__init__()
        self.config = config
        self.meta = meta

    @property
    def max_len(self) -> int:
        return int(self.config.max_len)

    @abstractmethod
    def loss(self, batch: ScoringBatch | PositionBatch) -> torch.Tensor:
        """Return the scalar training loss of one batch."""

    @abstractmethod
    def score(self, batch: ScoringBatch) -> torch.Tensor:
        """Return (B, C) scores for `batch.candidate_items`; higher means more likely next."""

    def score_all(self, batch: ScoringBatch, chunk_size: int = 2048) -> torch.Tensor:
        """Return (B, N + 1) scores over every item; column 0 (padding) is -inf.

        The default scores the items in chunks through `score`; models override it when they
        can share work across candidates.
        """
        B = batch.profile_items.shape[0]
        N = self.meta.num_items
        device = batch.profile_items.device
        scores = torch.full((B, N + 1), float("-inf"), device=device)
        for start in range(1, N + 1, chunk_size):
            stop = min(start + chunk_size, N + 1)
            items = torch.arange(start, stop, device=device).expand(B, -1)
            chunk = ScoringBatch(
                users=batch.users,
                profile_items=batch.profile_items,
                profile_context=batch.profile_context,
                candidate_items=items,
                candidate_context=batch.candidate_context,
            )
            scores[:, start:stop] = self.score(chunk)
        return scores
