"""Training with early stopping on validation NDCG@10, checkpointed so that a run can resume.

One `Trainer` trains one model on one split. Every epoch it draws fresh training examples (one
random prefix per user for "prefix" models, every position for "positions" models), takes AdamW
steps with the model's own settings, and every `eval_every` epochs scores the validation
candidates. The state after each epoch (weights, optimiser, random generators, best weights so
far, history) is written atomically. An interrupted run therefore continues from its last
finished epoch, and on the same device and thread count it ends exactly as an uninterrupted one.
"""

from __future__ import annotations

import logging
import math
import os
import pickle
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from convrec.data.sampling import PositionSampler, PrefixSampler, eval_batches
from convrec.data.split import Split
from convrec.errors import TrainingError
from convrec.metrics import TieRule, count_above_and_tied, mean_metrics, metrics_from_counts
from convrec.models.base import SequentialRecommender

logger = logging.getLogger(__name__)

SELECTION_METRIC = "NDCG@10"
CHECKPOINT_VERSION = 1


@dataclass
class TrainResult:
    """Summary of a finished training run; the evaluation after it adds the metrics."""

    best_epoch: int
    epochs_run: int
    best_valid_score: float
    train_seconds: float
    seconds_per_epoch: float
    stopped_early: bool
    history: list[dict] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


def evaluate(
    model: SequentialRecommender,
    split: Split,
    which: str,
    *,
    full: bool,
    batch_size: int = 256,
    device: torch.device | str = "cpu",
    tie_rule: TieRule = "pessimistic",
) -> dict[str, float]:
    """Score the held-out items of `which` ("valid" or "test") and return the mean metrics.

    Sampled protocol: the stored 1 + 100 candidates, target in column 0. Full ranking: every item,
    excluding the user's other interactions in any split.
    """
    model.eval()
    above_parts, tied_parts = [], []
    with torch.no_grad():
        for chunk in eval_batches(split, which, max_len=model.max_len, batch_size=batch_size,
                                  full=full):
            batch = chunk.batch.to(device)
            if full:
                scores = model.score_all(batch)
                target_column = torch.as_tensor(chunk.targets, device=scores.device)
                exclude = chunk.exclude.to(scores.device)
            else:
                scores = model.score(batch)
                target_column = torch.zeros(scores.shape[0], dtype=torch.long,
                                            device=scores.device)
                exclude = None
            above, tied = count_above_and_tied(scores.float(), target_column, exclude,
                                               users=chunk.users)
            above_parts.append(above.cpu().numpy())
            tied_parts.append(tied.cpu().numpy())
    if not above_parts:
        raise TrainingError(f"no user has a {which} item to evaluate")
    per_user = metrics_from_counts(np.concatenate(above_parts), np.concatenate(tied_parts),
                                   tie_rule)
    return mean_metrics(per_user)


class Trainer:
    """Train one model with early stopping; see the module docstring for the loop."""

    def __init__(
        self,
        model: SequentialRecommender,
        split: Split,
        *,
        seed: int,
        device: torch.device | str = "cpu",
        checkpoint_path: Path | None = None,
        progress: bool = True,
        description: str = "",
    ):
        self.model = model.to(device)
        self.split = split
        self.seed = seed
        self.device = torch.device(device)
        self.checkpoint_path = checkpoint_path
        self.progress = progress
        self.description = description
        config = model.config
        self.optimizer = torch.optim.AdamW(
            model.parameters(),
            lr=config.learning_rate,
            weight_decay=config.weight_decay,
            betas=tuple(config.adam_betas),
        )
        self.rng = np.random.default_rng(seed)

    def _sampler(self):
        config = self.model.config
        if self.model.training_mode == "prefix":
            return PrefixSampler(self.split, max_len=config.max_len,
                                 num_negatives=config.num_negatives,
                                 batch_size=config.batch_size, rng=self.rng)
        return PositionSampler(self.split, max_len=config.max_len,
                               batch_size=config.batch_size, rng=self.rng)

    def fit(self) -> TrainResult:
        """Train until `max_epochs` or early stopping, then load the best weights."""
        config = self.model.config
        state = self._load_checkpoint()
        sampler = self._sampler()

        bar = tqdm(total=config.max_epochs, initial=state["epoch"], unit="epoch",
                   desc=self.description or self.model.name, disable=not self.progress,
                   leave=False)
        while state["epoch"] < config.max_epochs and not state["stopped_early"]:
            epoch = state["epoch"] + 1
            started = time.perf_counter()
            mean_loss = self._train_epoch(sampler, epoch)
            state["train_seconds"] += time.perf_counter() - started
            record = {"epoch": epoch, "loss": mean_loss}

            if epoch % config.eval_every == 0 or epoch == config.max_epochs:
                valid = evaluate(self.model, self.split, "valid", full=False,
                                 device=self.device)
                score = valid[SELECTION_METRIC]
                record[f"valid_{SELECTION_METRIC}"] = score
                if score > state["best_score"]:
                    state["best_score"] = score
                    state["best_epoch"] = epoch
                    state["best_weights"] = _cpu_copy(self.model.state_dict())
                    state["bad_evals"] = 0
                else:
                    state["bad_evals"] += 1
                    if state["bad_evals"] >= config.patience:
                        state["stopped_early"] = True
                        logger.info("early stop at epoch %d: best %s %.4f at epoch %d", epoch,
                                    SELECTION_METRIC, state["best_score"], state["best_epoch"])

            state["history"].append(record)
            state["epoch"] = epoch
            self._save_checkpoint(state)
            bar.update(1)
            best = state["best_score"]
            bar.set_postfix(loss=f"{mean_loss:.4f}",
                            best=f"{best:.4f}" if best > -math.inf else "–")
        bar.close()

        if state["best_weights"] is None:
            raise TrainingError("training ended before any validation; raise max_epochs")
        self.model.load_state_dict(state["best_weights"])
        epochs_run = state["epoch"]
        return TrainResult(
            best_epoch=state["best_epoch"],
            epochs_run=epochs_run,
            best_valid_score=state["best_score"],
            train_seconds=state["train_seconds"],
            seconds_per_epoch=state["train_seconds"] / max(epochs_run, 1),
            stopped_early=state["stopped_early"],
            history=state["history"],
        )

    def _train_epoch(self, sampler, epoch: int) -> float:
        self.model.train()
        total, steps = 0.0, 0
        for step, batch in enumerate(sampler, start=1):
            batch = batch.to(self.device)
            loss = self.model.loss(batch)
            if not torch.isfinite(loss):
                raise TrainingError(
                    f"non-finite training loss {loss.item()} at epoch {epoch}, step {step}; "
                    "lower the learning rate or check the input data for extreme values"
                )
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
            total += loss.item()
            steps += 1
        return total / max(steps, 1)

    # Checkpoints: everything needed to continue the run bit for bit on the same machine.

    def _fresh_state(self) -> dict:
        return {
            "version": CHECKPOINT_VERSION,
            "epoch": 0,
            "best_score": -math.inf,
            "best_epoch": 0,
            "best_weights": None,
            "bad_evals": 0,
            "stopped_early": False,
            "train_seconds": 0.0,
            "history": [],
        }

    def _load_checkpoint(self) -> dict:
        path = self.checkpoint_path
        if path is None or not path.exists():
            return self._fresh_state()
        try:
            saved = torch.load(path, map_location="cpu", weights_only=False)
        except (OSError, RuntimeError, EOFError, pickle.UnpicklingError) as error:
            raise TrainingError(
                f"checkpoint {path} is damaged ({error}); delete it to start that run again"
            ) from None

        if saved.get("version") != CHECKPOINT_VERSION or saved.get("seed") != self.seed:
            raise TrainingError(
                f"checkpoint {path} was written by another run (seed or format differs); "
                "delete it or choose another work directory"
            )
        stored_fingerprint = saved.get("split_fingerprint")
        if stored_fingerprint is not None and stored_fingerprint != self.split.fingerprint:
            raise TrainingError(
                f"checkpoint {path} was trained on another version of the dataset (split "
                f"fingerprint {stored_fingerprint}, now {self.split.fingerprint}); delete it "
                "to start that run again"
            )

        self.model.load_state_dict(saved["model"])
        self.optimizer.load_state_dict(saved["optimizer"])
        self.rng.bit_generator.state = saved["numpy_rng"]
        torch.set_rng_state(saved["torch_rng"])
        if self.device.type == "cuda" and saved.get("cuda_rng") is not None:
            torch.cuda.set_rng_state(saved["cuda_rng"], self.device)
        state = saved["state"]
        # The stopping rule is applied again with the current patience, so a run that stopped
        # early continues when patience has been raised.
        state["stopped_early"] = state["bad_evals"] >= self.model.config.patience
        logger.info("resuming %s from epoch %d", path, state["epoch"])
        return state

    def _save_checkpoint(self, state: dict) -> None:
        path = self.checkpoint_path
        if path is None:
            return
        payload = {
            "version": CHECKPOINT_VERSION,
            "seed": self.seed,
            "split_fingerprint": self.split.fingerprint,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "numpy_rng": self.rng.bit_generator.state,
            "torch_rng": torch.get_rng_state(),
            "cuda_rng": (torch.cuda.get_rng_state(self.device)
                         if self.device.type == "cuda" else None),
            "state": state,
        }
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_suffix(path.suffix + ".tmp")
        torch.save(payload, temporary)
        os.replace(temporary, path)


def _cpu_copy(state_dict: dict) -> dict:
    return {name: tensor.detach().to("cpu", copy=True) for name, tensor in state_dict.items()}
