"""Training settings shared by every model config.

Each model's config dataclass subclasses TrainSettings, so that the trainer reads the optimiser,
batch size and stopping rule from the model it trains, and each model documents its own defaults
and their source.
"""

from __future__ import annotations

from dataclasses import dataclass

from convrec.errors import ConvbenchError


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

    def __post_init__(self) -> None:
        positive = ("max_len", "batch_size", "max_epochs", "eval_every", "patience",
                    "num_negatives", "learning_rate")
        for name in positive:
            value = getattr(self, name)
            if not value > 0:
                raise ConvbenchError(f"{name} must be positive, got {value!r}")
        if not self.weight_decay >= 0:
            raise ConvbenchError(f"weight_decay must be at least 0, got {self.weight_decay!r}")
        if len(self.adam_betas) != 2 or not all(0 <= beta < 1 for beta in self.adam_betas):
            raise ConvbenchError(
                f"adam_betas must be two numbers in [0, 1), got {self.adam_betas!r}"
            )
