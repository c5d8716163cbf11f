"""Training settings shared by every model config.

Each model's config dataclass subclasses TrainSettings, so that the trainer reads the optimiser,
batch size and stopping rule from the model it trains, and each model documents its own defaults
and their source.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class TrainSettings:
    """Optimisation and stopping settings; subclasses override the defaults with their source."""

    max_len: int = 50
    learning_rate: float = 1e-4
    weight_decay: float = 0.1
    adam_betas: tuple[float, float] = (0.9, 0.999)
    batch_size: int = 128
    max_epochs: int = 240
    # Validation NDCG@10 is computed every `eval_every` epochs; training stops after `patience`
    # evaluations without improvement.
    eval_every: int = 1
    patience: int = 20
    # Sampled negatives per training example ("prefix" models only; "positions" models use one).
    num_negatives: int = 100
