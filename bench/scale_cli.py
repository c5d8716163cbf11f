"""The `convbench scale` command: the efficiency sweep, its figures and its report.

`scale_command` declares the Typer options; `run_scale` does the work with plain keyword
arguments, so tests and scripts can call it without Typer.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated

import typer

from bench.point import PHASES
from convrec.errors import ConvbenchError

logger = logging.getLogger(__name__)

GIB = 1024**3
DEFAULT_MODELS = "convrec,sasrec,carca"


def parse_int_list(text: str, option: str) -> list[int]:
    """Parse "1,32,128" into [1, 32, 128]; raise ConvbenchError naming `option` otherwise."""
    values = []
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        try:
            value = int(part)
        except ValueError:
            raise ConvbenchError(f"invalid {option} entry {part!r} in {text!r}; "
                                 f"give comma-separated positive integers") from None
        if value < 1:
            raise ConvbenchError(f"invalid {option} entry {value} in {text!r}; "
                                 f"every value must be at least 1")
        values.append(value)
    if not values:
        raise ConvbenchError(f"{option} is empty; give comma-separated positive integers")
    return sorted(set(values))


def parse_name_list(text: str, option: str, valid: list[str] | None = None) -> list[str]:
    """Parse "a, b" into ["a", "b"], keeping order; reject names outside `valid`."""
    names = []
    for part in text.split(","):
        name = part.strip().lower()
        if name and name not in names:
            names.append(name)
    if not names:
        raise ConvbenchError(f"{option} is empty; give a comma-separated list")
    if valid is not None:
        unknown = [name for name in names if name not in valid]
        if unknown:
            raise ConvbenchError(f"unknown {option} value(s) {', '.join(unknown)}; "
                                 f"valid values are: {', '.join(valid)}")
    return names


def run_scale(
    *,
    models: list[str],
    lengths: list[int],
    batch_sizes: list[int],
    phases: list[str],
    devices: list[str] | None,
    hidden_size: int,
    output: Path,
    time_budget_s: float,
    memory_budget_bytes: int,
    warmup: int = 2,
    repeats: int = 5,
    accuracy: bool = False,
    dataset: str = "ml-100k",
    seeds: int = 1,
    max_epochs: int | None = None,
    accuracy_budget_s: float | None = None,
    data_dir: Path | None = None,
    resume: bool = True,
    progress: bool = True,
) -> dict[str, Path]:
    """Run the sweep (and the accuracy runs), then write figures and report; return the paths."""
    from bench.plots import plot_accuracy_vs_cost, plot_scaling
    from bench.report import write_report
    from bench.sweep import (
        ACCURACY_FILE,
        POINTS_FILE,
        check_accuracy_dataset,
        run_accuracy_sweep,
        run_sweep,
    )

    output = Path(output)
    if accuracy:
        check_accuracy_dataset(dataset, lengths, output_dir=output, data_dir=data_dir)
    points = run_sweep(models=models, lengths=lengths, batch_sizes=batch_sizes, phases=phases,
                       devices=devices, hidden_size=hidden_size, output_dir=output,
                       time_budget_s=time_budget_s, memory_budget_bytes=memory_budget_bytes,
                       warmup=warmup, repeats=repeats, resume=resume, progress=progress)
    figures = plot_scaling(points, output)
    paths = {"points": output / POINTS_FILE}

    accuracy_rows = None
    if accuracy:
        sweep_devices = sorted(points["device"].astype(str).unique())
        accuracy_device = "cuda" if "cuda" in sweep_devices else "cpu"
        accuracy_rows = run_accuracy_sweep(models=models, lengths=lengths, dataset=dataset,
                                           seeds=seeds, hidden_size=hidden_size,
                                           output_dir=output, data_dir=data_dir,
                                           device=accuracy_device,
                                           overrides=({"max_epochs": max_epochs}
                                                      if max_epochs is not None else None),
                                           time_budget_s=accuracy_budget_s,
                                           resume=resume, progress=progress)
        figures.append(plot_accuracy_vs_cost(accuracy_rows, output / "accuracy_vs_cost.png"))
        paths["accuracy"] = output / ACCURACY_FILE

    paths.update(write_report(output, points, accuracy_rows, figures))
    for index, figure in enumerate(figures):
        paths[f"figure_{index}"] = figure
    logger.info("scale sweep written to %s", output)
    return paths


def scale_command(
    max_len: Annotated[int, typer.Option(
        min=1, help="Largest sequence length L; lengths double from --min-len up to it, "
                    "and it is always included.")] = 4096,
    min_len: Annotated[int, typer.Option(
        min=1, help="Smallest sequence length L of the sweep.")] = 16,
    lengths: Annotated[str | None, typer.Option(
        help="Comma-separated sequence lengths to sweep, for example `16,64,256`; replaces "
             "--min-len and --max-len.")] = None,
    batch_sizes: Annotated[str, typer.Option(
        help="Comma-separated batch sizes B to sweep.")] = "1,32,128",
    models: Annotated[str, typer.Option(
        # The default is shown with spaces, so that a narrow help column can wrap it.
        show_default=False, help=f"Comma-separated models to profile (default: "
                                 f"{DEFAULT_MODELS.replace(',', ', ')}).")] = DEFAULT_MODELS,
    phases: Annotated[str, typer.Option(
        help="Comma-separated phases: `train` times a training step (forward, backward, "
             "AdamW), `infer` the scoring of 101 candidates.")] = "train,infer",
    devices: Annotated[str | None, typer.Option(
        help="Comma-separated devices: cpu, cuda or cuda:N (default: cpu, plus cuda when "
             "torch sees a GPU).")] = None,
    hidden_size: Annotated[int, typer.Option(
        min=1, help="Hidden width D of every model, so that all are compared at one width "
                    "instead of each model's own default.")] = 64,
    output: Annotated[Path, typer.Option(
        help="Directory for points.csv, the tidy CSV, the figures and summary.md.")] = Path(
        "reports/scale"),
    time_budget: Annotated[float, typer.Option(
        min=0.1, help="Wall-time budget of one point in seconds, process start-up included; "
                      "a point over it is killed and recorded as a timeout.")] = 300.0,
    memory_budget: Annotated[float, typer.Option(
        min=0.01, help="Memory budget of one point in GiB, for the resident memory of its "
                       "process and, on CUDA, the GPU memory it allocates; a point over it is "
                       "recorded as oom.")] = 16.0,
    repeats: Annotated[int, typer.Option(
        min=1, help="Timed steps per point; the median and the interquartile range are "
                    "recorded.")] = 5,
    warmup: Annotated[int, typer.Option(
        min=0, help="Untimed steps per point before the timed ones.")] = 2,
    accuracy: Annotated[bool, typer.Option(
        "--accuracy", help="Also train every model at every sweep length up to the dataset's "
                           "longest history, and write accuracy.csv with test NDCG@10 and "
                           "HR@10 beside the cost of that length.")] = False,
    dataset: Annotated[str, typer.Option(
        help="Dataset of the --accuracy runs: a name (ml-100k, ml-1m) or a path.")] = "ml-100k",
    seeds: Annotated[int, typer.Option(
        min=1, help="Number of training seeds of each --accuracy run: 0, 1, ..., "
                    "seeds-1.")] = 1,
    max_epochs: Annotated[int | None, typer.Option(
        min=1, help="Cap the training epochs of every --accuracy run (default: each model's "
                    "own max_epochs).")] = None,
    accuracy_budget: Annotated[float | None, typer.Option(
        min=0.0, help="Minutes of training allowed to each --accuracy run. A run whose time, "
                      "predicted from the sweep's measured training steps, exceeds it is not "
                      "trained, and its row in accuracy.csv says so; a later call with a larger "
                      "budget trains it. The prediction counts training steps only, at the "
                      "sweep's thread count, so runs that share the machine take longer. "
                      "Default: no limit.")] = None,
    data_dir: Annotated[Path | None, typer.Option(
        help="Directory with dataset files, searched first by --accuracy.")] = None,
    resume: Annotated[bool, typer.Option(
        help="Keep the points already in the output directory and measure only the missing "
             "ones; --no-resume starts a new table.")] = True,
    progress: Annotated[bool, typer.Option(help="Show progress bars.")] = True,
) -> None:
    """Measure time, memory and FLOPs of each model across sequence lengths, and fit exponents."""
    from convrec.models.registry import model_names

    if lengths is not None:
        length_list = parse_int_list(lengths, "--lengths")
    else:
        if min_len > max_len:
            raise ConvbenchError(f"--min-len {min_len} is larger than --max-len {max_len}; "
                                 f"lower --min-len or raise --max-len")
        from bench.sweep import default_lengths

        length_list = default_lengths(min_len, max_len)

    device_list = None
    if devices is not None:
        from bench.sweep import validate_devices

        device_list = validate_devices(parse_name_list(devices, "--devices"))

    run_scale(
        models=parse_name_list(models, "--models", model_names()),
        lengths=length_list,
        batch_sizes=parse_int_list(batch_sizes, "--batch-sizes"),
        phases=parse_name_list(phases, "--phases", list(PHASES)),
        devices=device_list,
        hidden_size=hidden_size,
        output=output,
        time_budget_s=time_budget,
        memory_budget_bytes=int(memory_budget * GIB),
        warmup=warmup,
        repeats=repeats,
        accuracy=accuracy,
        dataset=dataset,
        seeds=seeds,
        max_epochs=max_epochs,
        accuracy_budget_s=None if accuracy_budget is None else accuracy_budget * 60,
        data_dir=data_dir,
        resume=resume,
        progress=progress,
    )
