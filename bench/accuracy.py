"""The `convbench accuracy` job: every chosen model on every chosen dataset over several seeds."""

from __future__ import annotations

import logging
from pathlib import Path

from convrec.accuracy_report import write_accuracy_report
from convrec.data.discovery import available_datasets
from convrec.errors import ConvbenchError
from convrec.experiment import ModelSpec, prepare_dataset, resolve_device, run_one

logger = logging.getLogger(__name__)


def parse_model_specs(text: str) -> list[ModelSpec]:
    """Split `a,b:key=1,key2=2;c` into specs: `;` separates models once any has overrides."""
    parts = text.split(";") if ";" in text or ":" not in text else [text]
    specs = []
    for part in parts:
        if ":" in part:
            specs.append(ModelSpec.parse(part))
        else:
            specs += [ModelSpec.parse(name) for name in part.split(",") if name.strip()]
    if not specs:
        raise ConvbenchError("no model given; use for example --models convrec,sasrec,carca")
    return specs


def run_accuracy_command(*, models: str, datasets: str, all_datasets: bool, seeds: int,
                         first_seed: int, max_epochs: int | None, output: Path, work_dir: Path,
                         data_dir: Path | None, device: str, progress: bool) -> None:
    specs = parse_model_specs(models)
    if all_datasets:
        names = available_datasets(data_dir=data_dir)
        if not names:
            raise ConvbenchError("no dataset found; install recbole (pip install --no-deps "
                                 "recbole) or pass --data-dir")
    else:
        names = [name.strip() for name in datasets.split(",") if name.strip()]
    torch_device = resolve_device(device)
    extra = {"max_epochs": max_epochs} if max_epochs is not None else {}
    seed_list = list(range(first_seed, first_seed + seeds))
    logger.info("datasets: %s; models: %s; seeds: %s; device: %s", ", ".join(names),
                ", ".join(spec.label for spec in specs), seed_list, torch_device)

    for name in names:
        data, split = prepare_dataset(name, work_dir, data_dir)
        results = []
        for spec in specs:
            for seed in seed_list:
                result = run_one(spec, data, split, seed=seed, work_dir=work_dir,
                                 device=torch_device, extra_overrides=extra, progress=progress)
                sampled = result["metrics"]["test_sampled"]
                full = result["metrics"]["test_full"]
                logger.info("%s %s seed %d: sampled NDCG@10 %.4f HR@10 %.4f | full NDCG@10 "
                            "%.4f HR@10 %.4f | %d epochs, %.1f s/epoch", data.name, spec.label,
                            seed, sampled["NDCG@10"], sampled["HR@10"], full["NDCG@10"],
                            full["HR@10"], result["train"]["epochs_run"],
                            result["train"]["seconds_per_epoch"])
                results.append(result)
                # Write after every run so an interruption keeps what is finished.
                write_accuracy_report(results, output)
        for path in write_accuracy_report(results, output):
            logger.info("wrote %s", path)
