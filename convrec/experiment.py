"""Accuracy runs: train each model on each dataset over several seeds, and evaluate the best
checkpoint on the test split under the sampled and the full-ranking protocol.

Every run lives in its own directory under the work directory, named by the model label, a hash
of its complete config and its seed. A finished run leaves `result.json`; an unfinished one leaves
`checkpoint.pt`, from which the next call continues. The evaluation split (leave-one-out targets
and the 1 + 100 candidates) is drawn once per dataset with a fixed seed, independent of the
training seeds, and stored beside the runs, so every model and every seed is scored on the same
candidates.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import random
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from convrec.data.discovery import load_dataset
from convrec.data.schema import InteractionData
from convrec.data.split import Split, load_or_make_split
from convrec.errors import ConvbenchError
from convrec.models.registry import build_model, get_model_class
from convrec.provenance import provenance
from convrec.trainer import Trainer, evaluate

logger = logging.getLogger(__name__)

# The split seed is fixed for every run so that all models and training seeds share the same
# evaluation candidates.
SPLIT_SEED = 0
NUM_EVAL_NEGATIVES = 100


@dataclass(frozen=True)
class ModelSpec:
    """A registered model name plus config overrides, written `name` or `name:key=value,...`."""

    name: str
    overrides: tuple[tuple[str, object], ...] = ()

    @property
    def label(self) -> str:
        if not self.overrides:
            return self.name
        settings = ",".join(f"{key}={value}" for key, value in self.overrides)
        return f"{self.name}({settings})"

    @classmethod
    def parse(cls, text: str) -> ModelSpec:
        name, _, rest = text.strip().partition(":")
        get_model_class(name)  # rejects unknown names with the list of valid ones
        overrides = []
        for item in filter(None, (part.strip() for part in rest.split(","))):
            key, sep, value = item.partition("=")
            if not sep:
                raise ConvbenchError(
                    f"invalid model setting {item!r} in {text!r}; write name:key=value,key=value"
                )
            overrides.append((key.strip(), _parse_value(value.strip())))
        return cls(name.strip().lower(), tuple(overrides))


def _parse_value(text: str) -> object:
    lowered = text.lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    for convert in (int, float):
        try:
            return convert(text)
        except ValueError:
            pass
    return text


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch once, at the entry point of a run."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def resolve_device(device: str) -> torch.device:
    """Turn `auto`, `cpu`, `cuda` or `cuda:N` into a torch device that exists here."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except RuntimeError:
        resolved = None
    if resolved is None or resolved.type not in ("cpu", "cuda"):
        raise ConvbenchError(f"invalid device {device!r}; use auto, cpu, cuda or cuda:N")
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ConvbenchError(f"device {device!r} requested but CUDA is not available here; "
                             "install a CUDA build of torch or use --device cpu")
    return resolved


# Settings that only decide when training stops. Runs that differ only in them share a run
# directory, so raising max_epochs or patience continues a finished run from its checkpoint:
# up to the old stop, training is the same whatever the stopping rule.
STOPPING_SETTINGS = ("max_epochs", "patience")


def config_digest(config) -> str:
    """Short stable hash of a model config without its stopping settings, naming run dirs."""
    settings = dataclasses.asdict(config)
    for name in STOPPING_SETTINGS:
        settings.pop(name, None)
    text = json.dumps(settings, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:10]


def write_json_atomic(path: Path, payload: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_suffix(path.suffix + ".tmp")
    temporary.write_text(json.dumps(payload, indent=2, sort_keys=True, default=str) + "\n")
    os.replace(temporary, path)


def prepare_dataset(dataset: str, work_dir: Path, data_dir: Path | None = None
                    ) -> tuple[InteractionData, Split]:
    """Load a dataset and the stored split of it (drawn on first use)."""
    data = load_dataset(dataset, data_dir=data_dir)
    split_path = work_dir / _safe_name(data.name) / f"split-seed{SPLIT_SEED}.npz"
    split = load_or_make_split(data, split_path, SPLIT_SEED, NUM_EVAL_NEGATIVES)
    return data, split


def run_one(
    spec: ModelSpec,
    data: InteractionData,
    split: Split,
    *,
    seed: int,
    work_dir: Path,
    device: torch.device,
    extra_overrides: dict | None = None,
    progress: bool = True,
) -> dict:
    """Train and evaluate one (model, dataset, seed), or return its stored result."""
    # Settings given on the command line (such as --max-epochs) become part of the label, so
    # that runs with different settings never share a row of the report.
    spec = ModelSpec(spec.name, spec.overrides + tuple((extra_overrides or {}).items()))
    seed_everything(seed)
    model = build_model(spec.name, data.meta(), **dict(spec.overrides))
    config = dataclasses.asdict(model.config)
    run_dir = (work_dir / _safe_name(data.name) / _safe_name(spec.label)
               / f"{config_digest(model.config)}-seed{seed}")
    result_path = run_dir / "result.json"
    if result_path.exists():
        result = _read_result(result_path)
        if result.get("split_fingerprint") != split.fingerprint:
            raise ConvbenchError(
                f"{result_path} was computed on another version of dataset {data.name!r} "
                f"(split fingerprint {result.get('split_fingerprint')} there, "
                f"{split.fingerprint} now); delete {run_dir} to train it again, or use "
                "another --work-dir"
            )
        stored = {name: result["config"].get(name) for name in STOPPING_SETTINGS}
        wanted = {name: config[name] for name in STOPPING_SETTINGS}
        if stored == wanted:
            logger.info("reusing finished run %s", run_dir)
            return result
        logger.info("continuing %s from its checkpoint: stopping settings %s, were %s",
                    run_dir, wanted, stored)

    trainer = Trainer(model, split, seed=seed, device=device,
                      checkpoint_path=run_dir / "checkpoint.pt", progress=progress,
                      description=f"{data.name} {spec.label} seed {seed}")
    train = trainer.fit()
    evaluation_started = time.perf_counter()
    metrics = {
        "valid_sampled": evaluate(model, split, "valid", full=False, device=device),
        "test_sampled": evaluate(model, split, "test", full=False, device=device),
        "test_full": evaluate(model, split, "test", full=True, device=device),
    }
    evaluation_seconds = time.perf_counter() - evaluation_started
    result = {
        "dataset": data.name,
        "split_fingerprint": split.fingerprint,
        "model": spec.label,
        "model_name": spec.name,
        "seed": seed,
        "config": config,
        "params": sum(p.numel() for p in model.parameters()),
        "train": train.to_dict(),
        "metrics": metrics,
        "evaluation_seconds": evaluation_seconds,
        # Training time summed over every resumed part, plus the final evaluation.
        "wall_seconds": train.train_seconds + evaluation_seconds,
        "provenance": provenance(device),
    }
    write_json_atomic(result_path, result)
    return result


def _read_result(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ConvbenchError(
            f"{path} is damaged ({error}); delete it to train that run again"
        ) from None


def run_accuracy_point(
    model_name: str,
    dataset: str,
    *,
    max_len: int,
    seed: int,
    work_dir: Path,
    data_dir: Path | None = None,
    device: str = "cpu",
    overrides: dict | None = None,
) -> dict:
    """Train one model at one profile length and return flat test metrics (for `scale`)."""
    data, split = prepare_dataset(dataset, work_dir, data_dir)
    extra = dict(overrides or {})
    extra["max_len"] = max_len
    result = run_one(ModelSpec.parse(model_name), data, split, seed=seed, work_dir=work_dir,
                     device=resolve_device(device), extra_overrides=extra, progress=False)
    flat = {"epochs": result["train"]["epochs_run"],
            "train_seconds": result["train"]["train_seconds"],
            "params": result["params"]}
    for protocol in ("sampled", "full"):
        for metric, value in result["metrics"][f"test_{protocol}"].items():
            flat[f"test_{protocol}_{metric.lower()}"] = value
    return flat


def history_stats(dataset: str, data_dir: Path | None = None) -> tuple[int, int]:
    """Return the longest training history (the largest useful profile length) and the number
    of users with a training history."""
    data = load_dataset(dataset, data_dir=data_dir)
    # Two interactions per user are held out for validation and test.
    lengths = [len(sequence) - 2 for sequence in data.sequences[1:]]
    return max(lengths, default=0), sum(length > 0 for length in lengths)


def _safe_name(text: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_.=" else "_" for ch in text)
