"""The `convbench gate` command: options, the call to `run_gate`, the report and the exit code.

`bench.cli` registers `gate_command` and turns a ConvbenchError (missing or outdated baseline)
into a message and an exit code.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from bench.gate import DEFAULT_BASELINE_PATH, DEFAULT_EXPONENT_BOUND, DEFAULT_TOLERANCE, run_gate


def gate_command(
    baseline: Annotated[Path, typer.Option(
        "--baseline", dir_okay=False,
        help="Baseline JSON file to compare with, or to write with --update.",
    )] = DEFAULT_BASELINE_PATH,
    update: Annotated[bool, typer.Option(
        "--update",
        help="Measure the grid and rewrite the baseline file instead of comparing with it. "
             "Use it when a change in memory or FLOPs is intended.",
    )] = False,
    tolerance: Annotated[float, typer.Option(
        "--tolerance", min=0.0,
        help="Largest relative growth of a value over its baseline that still passes, as a "
             "fraction (0.05 is 5%).",
    )] = DEFAULT_TOLERANCE,
    exponent_bound: Annotated[float, typer.Option(
        "--exponent-bound", min=0.0,
        help="Largest allowed slope of log(bytes) against log(L) for ConvRec's peak live bytes "
             "and saved bytes over the grid.",
    )] = DEFAULT_EXPONENT_BOUND,
) -> None:
    """Check that memory, FLOPs and parameters of a fixed grid have not grown beyond the baseline.

    Each point is one CPU training step, measured with one thread. The command exits with
    status 1 when a value grows beyond the tolerance or ConvRec's memory exponent exceeds the
    bound.
    """
    result = run_gate(baseline_path=baseline, update=update, tolerance=tolerance,
                      exponent_bound=exponent_bound)
    typer.echo(result.render())
    if not result.passed:
        raise typer.Exit(1)
