"""CARCA: context- and attribute-aware next-item recommendation via cross-attention.

Rashed, Elsayed and Schmidt-Thieme, RecSys 2022. Each (item, context) pair is encoded from the item
id, the item's attributes and the interaction's context. Self-attention blocks run over the
profile, every candidate cross-attends to the profile states, and a linear map turns the result
into one score per candidate. Training is per position with binary cross-entropy against one
sampled negative.

Reference code: the authors' TensorFlow 1 script, github.com/ahmedrashed-ml/CARCA, `CARCA.py`.
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

# The authors project the concatenated attributes and context to 5 * D before fusing them with
# the id embedding (their `feat_emb` layer).
FEATURE_WIDTH_FACTOR = 5
# The authors' `normalize` uses this epsilon.
LAYER_NORM_EPS = 1e-8
# Standard deviation of the authors' `random_normal_initializer` for the feature, fusion and
# score layers.
SMALL_INIT_STD = 0.01


@dataclass
class CARCAConfig(TrainSettings):
    """CARCA settings.

    Defaults are the authors' Video_Games arguments in `CARCA.py` (github.com/ahmedrashed-ml/CARCA).
    They are max_len 50, hidden width 90, 3 blocks, 3 heads, dropout 0.5, Adam with learning rate
    1e-4 and beta2 0.98, batch 128, and 801 epochs. Embedding L2 is off (`l2_emb` 0.0) and the
    candidate product is on (`use_res` True). Their arguments for the other datasets differ:
    - Beauty: max_len 75, 1 head, `l2_emb` 1e-4, otherwise as Video_Games but 1801 epochs;
    - Men and Fashion: max_len 35, hidden width 390, dropout 0.3, learning rate 6e-6 (Men) and
      1e-5 (Fashion, batch 100), `l2_emb` 1e-4, no candidate product.
    The authors evaluate every 20 epochs without early stopping, and so does this default:
    patience equals max_epochs, more than the number of evaluations, and the checkpoint with the
    best validation NDCG@10 is tested. On MovieLens-100K, validation NDCG@10 stays near 0.25 from
    epoch 40 to about epoch 180 before it rises again, so a patience of 5 evaluations can stop a
    run on that plateau.
    """

    max_len: int = 50
    hidden_size: int = 90
    num_blocks: int = 3
    num_heads: int = 3
    dropout: float = 0.5
    learning_rate: float = 1e-4
    adam_betas: tuple[float, float] = (0.9, 0.98)
    weight_decay: float = 0.0
    batch_size: int = 128
    max_epochs: int = 801
    eval_every: int = 20
    patience: int = 801
    # Multiply the cross-attention output element-wise by the candidate vector before the score
    # layer. The authors call this a residual (`use_res`), but their code multiplies.
    candidate_product: bool = True
    # True runs attention through scaled_dot_product_attention; False through the plain softmax
    # reference path, which gives the same scores and exists to check the fused kernels.
    fused_attention: bool = True


class CARCABlock(nn.Module):
    """One profile self-attention block in the authors' layout.

    The query is the LayerNorm output and keys and values are the un-normalised input. Query, key
    and value projections pass through LeakyReLU, there is no output projection, and the
    attention output is multiplied element-wise by the normalised query, which is what the
    authors' `res` option does. The feed-forward (LeakyReLU) then adds its normalised input.
    """

    def __init__(self, config: CARCAConfig):
        super().__init__()
        D = config.hidden_size
        self.attention_norm = nn.LayerNorm(D, eps=LAYER_NORM_EPS)
        self.attention = MultiHeadAttention(
            D, config.num_heads, config.dropout, projection_activation=nn.LeakyReLU(),
            output_projection=False, fused=config.fused_attention,
        )
        self.feed_forward_norm = nn.LayerNorm(D, eps=LAYER_NORM_EPS)
        self.feed_forward = PointwiseFeedForward(D, config.dropout, nn.LeakyReLU())

    def forward(self, x: torch.Tensor, allowed: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        """Map (B, L, D) states to (B, L, D); `valid` (B, L, 1) zeroes padded positions."""
        query = self.attention_norm(x)
        x = self.attention(query, x, allowed) * query
        x = self.feed_forward_norm(x)
        x = x + self.feed_forward(x)
        return x * valid


class CARCA(SequentialRecommender):
    """CARCA behind the shared model interface.

    Item encoder, for profile items and candidates alike: the id embedding (padding row 0,
    scaled by sqrt(D)) is concatenated with a projection of [attributes, context] to 5D, and the
    6D vector is mapped to D. With no attributes and no context (F = X = 0) the id embedding
    alone is mapped D -> D. Candidates carry the context of the interaction being predicted.

    NOTE: training masks attention so that no position attends to its target or later items.
    Profile self-attention is causal, and the candidate at position t attends only to profile
    positions <= t. The authors' code masks neither, so in their training the profile states,
    and through them every candidate, include the target. Inference keeps the causal
    self-attention so that a profile is encoded the same way in training and scoring, and
    candidates attend to the whole profile.
    NOTE: padded positions never receive attention, in the blocks and in the cross-attention.
    The authors mask keys whose vector is all zero, which stops working in the cross-attention
    once the final LayerNorm has learned a bias.
    NOTE: no position embedding. The authors build one but never add it (`self.seq += t` is
    commented out), so it is left out. Order reaches the model through the context and, here,
    the causal mask.
    NOTE: the authors' embedding L2 (`l2_emb`) is not implemented. It is 0 for Video_Games, the
    dataset the defaults come from.
    """

    name = "carca"
    config_class = CARCAConfig
    training_mode = "positions"

    def __init__(self, config: CARCAConfig, meta: DatasetMeta):
        super().__init__(config, meta)
        D = config.hidden_size
        N = meta.num_items
        attributes = torch.as_tensor(meta.item_attributes, dtype=torch.float32)
        if attributes.dim() != 2 or attributes.shape[0] != N + 1:
            raise ConvbenchError(
                f"item_attributes of dataset {meta.name!r} has shape {tuple(attributes.shape)}; "
                f"expected ({N + 1}, F) with row 0 for padding"
            )
        # Not persistent: the attributes come with the dataset, so checkpoints need not carry them.
        self.register_buffer("item_attributes", attributes, persistent=False)  # (N + 1, F)

        self.item_embedding = nn.Embedding(N + 1, D, padding_idx=0)
        feature_width = meta.attribute_width + meta.context_width
        if feature_width > 0:
            self.feature_projection = nn.Linear(feature_width, FEATURE_WIDTH_FACTOR * D)
            self.fusion = nn.Linear((FEATURE_WIDTH_FACTOR + 1) * D, D)
        else:
            self.feature_projection = None
            self.fusion = nn.Linear(D, D)
        self.embedding_dropout = nn.Dropout(config.dropout)
        self.blocks = nn.ModuleList(CARCABlock(config) for _ in range(config.num_blocks))
        self.final_norm = nn.LayerNorm(D, eps=LAYER_NORM_EPS)

        self.cross_attention = MultiHeadAttention(
            D, config.num_heads, config.dropout, projection_activation=nn.LeakyReLU(),
            output_projection=False, fused=config.fused_attention,
        )
        self.score_layer = nn.Linear(D, 1)
        self._init_weights()
        logger.debug("built CARCA with %d parameters",
                     sum(p.numel() for p in self.parameters()))

    def _init_weights(self) -> None:
        # TensorFlow 1 defaults, as the authors' script leaves them: Glorot uniform matrices and
        # zero biases, except the layers they give a N(0, 0.01) initialiser.
        for module in self.modules():
            if isinstance(module, (nn.Linear, nn.Embedding)):
                nn.init.xavier_uniform_(module.weight)
            if isinstance(module, nn.Linear):
                nn.init.zeros_(module.bias)
        for module in (self.feature_projection, self.fusion, self.score_layer):
            if module is not None:
                nn.init.normal_(module.weight, std=SMALL_INIT_STD)
        with torch.no_grad():
            self.item_embedding.weight[0].zero_()

    def encode_items(self, items: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        """Return (B, S, D) vectors of (B, S) items in their (B, S, X) contexts."""
        X = self.meta.context_width
        if context.shape[-1] != X:
            raise ConvbenchError(
                f"context width {context.shape[-1]} does not match the {X} context columns of "
                f"dataset {self.meta.name!r}; build the batch from the same dataset as the model"
            )
        ids = self.item_embedding(items) * math.sqrt(self.config.hidden_size)
        if self.feature_projection is None:
            return self.fusion(ids)

        features = torch.cat([self.item_attributes[items], context.to(ids.dtype)], dim=-1)
        features = self.feature_projection(features)  # (B, S, 5D)
        return self.fusion(torch.cat([ids, features], dim=-1))

    def encode_profile(self, profile_items: torch.Tensor,
                       profile_context: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Return (B, L, D) profile states and the (B, L) mask of positions that contain an item.

        State t depends on the items and contexts at positions <= t only.
        """
        valid = profile_items != 0  # (B, L)
        x = self.encode_items(profile_items, profile_context)
        x = self.embedding_dropout(x) * valid.unsqueeze(-1)

        allowed = causal_padding_mask(valid)  # (B, 1, L, L)
        for block in self.blocks:
            x = block(x, allowed, valid.unsqueeze(-1))
        return self.final_norm(x), valid

    def _cross_score(self, candidates: torch.Tensor, states: torch.Tensor,
                     allowed: torch.Tensor) -> torch.Tensor:
        """Score (B, Q, D) candidates against (B, L, D) profile states; return (B, Q)."""
        attended = self.cross_attention(candidates, states, allowed)
        if self.config.candidate_product:
            attended = attended * candidates
        return self.score_layer(attended).squeeze(-1)

    def position_logits(self, batch: PositionBatch) -> tuple[torch.Tensor, torch.Tensor]:
        """Return (B, L) logits of the positive and of the negative item at every position."""
        states, valid = self.encode_profile(batch.profile_items, batch.profile_context)
        L = states.shape[1]
        positive = self.encode_items(batch.positive_items, batch.target_context)
        negative = self.encode_items(batch.negative_items, batch.target_context)
        candidates = torch.cat([positive, negative], dim=1)  # (B, 2L, D)

        # The candidate at position t predicts the item at t + 1, so it may attend to profile
        # positions <= t only. Positive and negative rows share the mask.
        causal = torch.ones(L, L, dtype=torch.bool, device=valid.device).tril()
        allowed = causal & valid[:, None, :]  # (B, L, L)
        allowed = torch.cat([allowed, allowed], dim=1).unsqueeze(1)  # (B, 1, 2L, L)

        logits = self._cross_score(candidates, states, allowed)  # (B, 2L)
        return logits[:, :L], logits[:, L:]

    def loss(self, batch: PositionBatch) -> torch.Tensor:
        positive, negative = self.position_logits(batch)
        return position_bce_loss(positive, negative, batch.positive_items != 0)

    def _score_items(self, items: torch.Tensor, batch: ScoringBatch, states: torch.Tensor,
                     valid: torch.Tensor) -> torch.Tensor:
        B, C = items.shape
        context = batch.candidate_context.unsqueeze(1).expand(B, C, -1)  # (B, C, X)
        candidates = self.encode_items(items, context)
        # Every candidate attends to the whole profile.
        allowed = valid[:, None, None, :]  # (B, 1, 1, L)
        return self._cross_score(candidates, states, allowed)

    def score(self, batch: ScoringBatch) -> torch.Tensor:
        """Return (B, C) scores; with `candidate_items` None, score every item like `score_all`."""
        if batch.candidate_items is None:
            return self.score_all(batch)
        states, valid = self.encode_profile(batch.profile_items, batch.profile_context)
        return self._score_items(batch.candidate_items, batch, states, valid)

    def score_all(self, batch: ScoringBatch, chunk_size: int = 2048) -> torch.Tensor:
        """Return (B, N + 1) scores over every item; column 0 (padding) is -inf.

        The profile is encoded once. Items are scored in chunks of `chunk_size` because the item
        encoding includes the candidate context, so every (user, item) pair has its own vector.
        """
        states, valid = self.encode_profile(batch.profile_items, batch.profile_context)
        B = states.shape[0]
        N = self.meta.num_items
        device = states.device
        scores = torch.full((B, N + 1), float("-inf"), device=device, dtype=states.dtype)
        for start in range(1, N + 1, chunk_size):
            stop = min(start + chunk_size, N + 1)
            items = torch.arange(start, stop, device=device).expand(B, -1)
            scores[:, start:stop] = self._score_items(items, batch, states, valid)
        return scores
