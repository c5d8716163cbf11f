"""SASRec: self-attentive sequential recommendation (Kang and McAuley, ICDM 2018).

Item ids only: no attributes and no context. Trained per position with binary cross-entropy
against one sampled negative, and scored by the dot product of the last position's output with
the candidates' item embeddings.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import torch
from torch import nn

from baselines.attention import (
    MultiHeadAttention,
    PointwiseFeedForward,
    causal_padding_mask,
    position_bce_loss,
)
from convrec.data.batches import PositionBatch, ScoringBatch
from convrec.data.schema import DatasetMeta
from convrec.errors import ConvbenchError
from convrec.models.base import SequentialRecommender
from convrec.models.config import TrainSettings

logger = logging.getLogger(__name__)

# LayerNorm epsilon of both the TensorFlow original and SASRec.pytorch.
LAYER_NORM_EPS = 1e-8


@dataclass
class SASRecConfig(TrainSettings):
    """SASRec settings.

    Defaults come from the public PyTorch port SASRec.pytorch (github.com/pmixer/SASRec.pytorch),
    from its `main.py` argument defaults and the MovieLens-1M command in its README. They are
    max_len 200, hidden width 50, 2 blocks, 1 head, dropout 0.2, Adam with learning rate 1e-3 and
    betas (0.9, 0.98), batch 128, and no weight decay (`l2_emb` 0). The port's saved MovieLens-1M
    arguments run 201 epochs and its current `main.py` defaults to 1000, so the cap here is 200.
    The port evaluates every 20 epochs without early stopping, and so does this default:
    patience equals max_epochs, more than the number of evaluations, and the checkpoint with the
    best validation NDCG@10 is tested.
    """

    max_len: int = 200
    hidden_size: int = 50
    num_blocks: int = 2
    num_heads: int = 1
    dropout: float = 0.2
    learning_rate: float = 1e-3
    adam_betas: tuple[float, float] = (0.9, 0.98)
    weight_decay: float = 0.0
    batch_size: int = 128
    max_epochs: int = 200
    eval_every: int = 20
    patience: int = 200
    # True runs attention through scaled_dot_product_attention; False through the plain softmax
    # reference path, which gives the same scores and exists to check the fused kernels.
    fused_attention: bool = True


class SASRecBlock(nn.Module):
    """One self-attention block, with LayerNorm before attention and before the feed-forward.

    As in the TensorFlow original and SASRec.pytorch, the query is the LayerNorm output while
    keys and values are the un-normalised input, and each residual adds the normalised input.
    """

    def __init__(self, config: SASRecConfig):
        super().__init__()
        D = config.hidden_size
        self.attention_norm = nn.LayerNorm(D, eps=LAYER_NORM_EPS)
        self.attention = MultiHeadAttention(D, config.num_heads, config.dropout,
                                            fused=config.fused_attention)
        self.feed_forward_norm = nn.LayerNorm(D, eps=LAYER_NORM_EPS)
        self.feed_forward = PointwiseFeedForward(D, config.dropout, nn.ReLU())

    def forward(self, x: torch.Tensor, allowed: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        """Map (B, L, D) states to (B, L, D); `valid` (B, L, 1) zeroes padded positions."""
        query = self.attention_norm(x)
        x = query + self.attention(query, x, allowed)
        x = self.feed_forward_norm(x)
        x = x + self.feed_forward(x)
        return x * valid


class SASRec(SequentialRecommender):
    """SASRec behind the shared model interface.

    Item embeddings (padding row 0) are scaled by sqrt(D), a learned position embedding is added,
    then embedding dropout and causal self-attention blocks follow, and a final LayerNorm.
    Item embeddings are shared between input and output, as in the original.

    NOTE: positions are numbered from the most recent item backwards (1 = last item, 0 = padding),
    where SASRec.pytorch numbers them from the left edge of the padded window. With profiles
    always padded to max_len this only relabels the position table. It makes a profile's scores
    independent of how much left padding it carries.
    NOTE: padded keys are masked out of attention, as the TensorFlow original does (its key
    masking) and SASRec.pytorch does not (its `key_padding_mask` is commented out). A padded query
    attends to itself only, and its output is zeroed after every block.
    NOTE: attention has an output projection because SASRec.pytorch uses
    `torch.nn.MultiheadAttention`, which has one. The TensorFlow original has none.
    """

    name = "sasrec"
    config_class = SASRecConfig
    training_mode = "positions"

    def __init__(self, config: SASRecConfig, meta: DatasetMeta):
        super().__init__(config, meta)
        D = config.hidden_size
        self.item_embedding = nn.Embedding(meta.num_items + 1, D, padding_idx=0)
        self.position_embedding = nn.Embedding(config.max_len + 1, D, padding_idx=0)
        self.embedding_dropout = nn.Dropout(config.dropout)
        self.blocks = nn.ModuleList(SASRecBlock(config) for _ in range(config.num_blocks))
        self.final_norm = nn.LayerNorm(D, eps=LAYER_NORM_EPS)
        self._init_weights()
        logger.debug("built SASRec with %d parameters",
                     sum(p.numel() for p in self.parameters()))

    def _init_weights(self) -> None:
        # SASRec.pytorch draws every matrix from Xavier normal and keeps the default init of
        # vectors (biases, LayerNorm); the padding rows stay zero.
        for parameter in self.parameters():
            if parameter.dim() >= 2:
                nn.init.xavier_normal_(parameter)
        with torch.no_grad():
            self.item_embedding.weight[0].zero_()
            self.position_embedding.weight[0].zero_()

    def encode(self, profile_items: torch.Tensor) -> torch.Tensor:
        """Return (B, L, D) states of (B, L) left-padded profiles; state t uses items <= t only."""
        B, L = profile_items.shape
        if L > self.max_len:
            raise ConvbenchError(
                f"profile length {L} exceeds SASRec's max_len {self.max_len}; truncate profiles "
                f"to the last {self.max_len} items or build the model with a larger max_len"
            )
        valid = profile_items != 0  # (B, L)

        positions = torch.arange(L, 0, -1, device=profile_items.device).expand(B, L) * valid
        x = self.item_embedding(profile_items) * math.sqrt(self.config.hidden_size)
        x = x + self.position_embedding(positions)
        x = self.embedding_dropout(x) * valid.unsqueeze(-1)

        allowed = causal_padding_mask(valid)  # (B, 1, L, L)
        for block in self.blocks:
            x = block(x, allowed, valid.unsqueeze(-1))
        return self.final_norm(x)

    def position_logits(self, batch: PositionBatch) -> tuple[torch.Tensor, torch.Tensor]:
        """Return (B, L) logits of the positive and of the negative item at every position."""
        states = self.encode(batch.profile_items)
        positive = (states * self.item_embedding(batch.positive_items)).sum(dim=-1)
        negative = (states * self.item_embedding(batch.negative_items)).sum(dim=-1)
        return positive, negative

    def loss(self, batch: PositionBatch) -> torch.Tensor:
        positive, negative = self.position_logits(batch)
        return position_bce_loss(positive, negative, batch.positive_items != 0)

    def score(self, batch: ScoringBatch) -> torch.Tensor:
        """Return (B, C) scores; with `candidate_items` None, score every item like `score_all`."""
        if batch.candidate_items is None:
            return self.score_all(batch)
        last = self.encode(batch.profile_items)[:, -1]  # (B, D)
        candidates = self.item_embedding(batch.candidate_items)  # (B, C, D)
        return (candidates @ last.unsqueeze(-1)).squeeze(-1)

    def score_all(self, batch: ScoringBatch, chunk_size: int = 2048) -> torch.Tensor:
        """Return (B, N + 1) scores from one matmul against the item table; column 0 is -inf.

        `chunk_size` is accepted for the shared signature and unused, because the (B, N + 1)
        result is the largest tensor either way.
        """
        last = self.encode(batch.profile_items)[:, -1]  # (B, D)
        scores = last @ self.item_embedding.weight.T  # (B, N + 1)
        scores[:, 0] = float("-inf")
        return scores
