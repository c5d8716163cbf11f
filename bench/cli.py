"""The `convbench` command line: accuracy runs, dataset summaries, the scale sweep and the gate.

Each command declares its options and hands off to a plain function. A ConvbenchError becomes a
one-line message on standard error and a non-zero exit code, without a traceback.
"""

from __future__ import annotations

import functools
import logging
import sys
from pathlib import Path
from typing import Annotated

import typer

from bench.gate_cli import gate_command
from bench.scale_cli import scale_command
from convrec.errors import ConvbenchError

logger = logging.getLogger("convbench")

app = typer.Typer(
    name="convbench",
    help="Train, evaluate and profile ConvRec, SASRec and CARCA for sequential recommendation.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
data_app = typer.Typer(help="Inspect datasets.", no_args_is_help=True)
app.add_typer(data_app, name="data")

DEFAULT_MODELS = "convrec,sasrec,carca"


def handle_errors(command):
    """Turn a ConvbenchError raised by `command` into a message and its exit code."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except ConvbenchError as error:
            typer.echo(f"error: {error}", err=True)
            raise typer.Exit(error.exit_code) from None
        except KeyboardInterrupt:
            typer.echo("interrupted; rerun the same command to resume", err=True)
            raise typer.Exit(130) from None

    return wrapper


@app.callback()
def configure(
    verbose: Annotated[bool, typer.Option("--verbose", "-v",
                                          help="Log debug messages as well.")] = False,
) -> None:
    """Set up logging once for every command."""
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO,
                        format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)


@app.command("accuracy")
@handle_errors
def accuracy_command(
    models: Annotated[str, typer.Option(
        help="Models to train: convrec, sasrec, carca, separated by commas. To override "
             "config fields write `name:key=value,key=value` and separate models with `;`, "
             "for example `convrec:padding_mask=true;sasrec:max_len=50`.")] = DEFAULT_MODELS,
    datasets: Annotated[str, typer.Option(
        help="Comma-separated dataset names (ml-100k, ml-1m) or paths to dataset files or "
             "directories.")] = "ml-100k",
    all_datasets: Annotated[bool, typer.Option(
        "--all-datasets", help="Run on every dataset that can be found without downloading, "
                               "instead of --datasets.")] = False,
    seeds: Annotated[int, typer.Option(min=1, help="Number of training seeds, counted from "
                                                    "--first-seed.")] = 3,
    first_seed: Annotated[int, typer.Option(
        min=0, help="First training seed; use it to split the seeds of one protocol across "
                    "processes or machines that share the work directory.")] = 0,
    max_epochs: Annotated[int | None, typer.Option(
        min=1, help="Cap every model's number of training epochs (default: each model's "
                    "own max_epochs).")] = None,
    output: Annotated[Path, typer.Option(help="Directory for the report files.")] = Path(
        "reports/accuracy"),
    work_dir: Annotated[Path, typer.Option(
        help="Directory for splits, checkpoints and per-run results; rerunning the same "
             "command resumes from it.")] = Path("runs"),
    data_dir: Annotated[Path | None, typer.Option(
        help="Directory containing dataset files, searched before the cache, the recbole "
             "wheel and the download.")] = None,
    device: Annotated[str, typer.Option(help="Device: auto, cpu, cuda or cuda:N.")] = "auto",
    progress: Annotated[bool, typer.Option(help="Show a progress bar of epochs.")] = True,
) -> None:
    """Train and evaluate models on datasets, and write the accuracy report."""
    from bench.accuracy import run_accuracy_command

    run_accuracy_command(models=models, datasets=datasets, all_datasets=all_datasets,
                         seeds=seeds, first_seed=first_seed, max_epochs=max_epochs,
                         output=output, work_dir=work_dir, data_dir=data_dir, device=device,
                         progress=progress)


@data_app.command("info")
@handle_errors
def data_info_command(
    name_or_path: Annotated[str, typer.Argument(
        help="Dataset name (ml-100k, ml-1m) or path to a dataset file or directory.")],
    data_dir: Annotated[Path | None, typer.Option(
        help="Directory containing dataset files, searched first.")] = None,
) -> None:
    """Print a dataset's summary: sizes, length percentiles, widths and every filter applied."""
    from convrec.data.discovery import load_dataset, resolve_dataset
    from convrec.data.summary import format_summary, summarize

    data = load_dataset(name_or_path, data_dir=data_dir)
    location, how = resolve_dataset(name_or_path, data_dir=data_dir)
    typer.echo(f"source: {location} ({how})")
    typer.echo(format_summary(summarize(data)))


app.command("scale")(handle_errors(scale_command))
app.command("gate")(handle_errors(gate_command))


def main() -> None:
    app()


if __name__ == "__main__":
    main()
