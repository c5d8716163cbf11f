"""The memory-growth gate: deterministic costs of a fixed grid against a committed baseline.

For every model and L of the grid, one training step is measured on the CPU with one thread
(`bench.measure.measure_deterministic`): peak live bytes, bytes saved for backward, FLOPs and
parameters. All four repeat exactly from run to run on the same torch version, so any growth is
a change in the code, not noise. The gate fails when

- a value grows by more than `tolerance` (relative) over the baseline, or
- ConvRec's memory exponent, the least-squares slope of log(bytes) against log(L) over the
  grid, exceeds `exponent_bound` for peak live bytes or saved bytes. ConvRec's memory is meant
  to grow linearly in L, and the constant part (gradients and optimiser state of the item table)
  pulls the slope below 1, so a slope above the bound means a term faster than linear.

A drop is reported as an improvement and does not fail. `update=True` measures the grid and
rewrites the baseline file, with the provenance of the run and the grid it used.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch

from bench.measure import (
    DEFAULT_ATTRIBUTE_WIDTH,
    DEFAULT_CONTEXT_WIDTH,
    DEFAULT_NUM_ITEMS,
    measure_deterministic,
    provenance,
)
from convrec.errors import ConvbenchError

logger = logging.getLogger(__name__)

DEFAULT_BASELINE_PATH = Path(__file__).with_name("gate_baseline.json")
DEFAULT_TOLERANCE = 0.05
DEFAULT_EXPONENT_BOUND = 1.15
BASELINE_FORMAT_VERSION = 1

QUANTITIES: tuple[str, ...] = ("peak_live_bytes", "saved_bytes", "flops", "params")
# The model whose memory must grow linearly in L, and the quantities its exponent is fitted to.
LINEAR_MODEL = "convrec"
EXPONENT_QUANTITIES: tuple[str, ...] = ("peak_live_bytes", "saved_bytes")

Status = Literal["ok", "regression", "improvement"]


@dataclass(frozen=True)
class GateGrid:
    """The measured points: every model at every L, with the remaining settings shared."""

    models: tuple[str, ...] = ("convrec", "sasrec", "carca")
    seq_lens: tuple[int, ...] = (64, 128, 256, 512, 1024)
    batch_size: int = 8
    hidden_size: int = 64
    phase: Literal["train", "infer"] = "train"
    device: str = "cpu"
    num_candidates: int = 101
    num_items: int = DEFAULT_NUM_ITEMS
    attribute_width: int = DEFAULT_ATTRIBUTE_WIDTH
    context_width: int = DEFAULT_CONTEXT_WIDTH

    def points(self) -> list[tuple[str, int]]:
        return [(model, seq_len) for model in self.models for seq_len in self.seq_lens]

    def shared_settings(self) -> dict[str, Any]:
        """Return every setting except the models and lengths, which may differ per point."""
        settings = dataclasses.asdict(self)
        del settings["models"], settings["seq_lens"]
        return settings

    def to_json(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["models"] = list(self.models)
        data["seq_lens"] = list(self.seq_lens)
        return data


DEFAULT_GRID = GateGrid()


@dataclass(frozen=True)
class GateRow:
    """One quantity of one point, compared with the baseline."""

    model: str
    seq_len: int
    quantity: str
    baseline: int
    current: int
    status: Status

    @property
    def change(self) -> float:
        """Relative change from the baseline; inf when a zero baseline became positive."""
        if self.baseline == 0:
            return 0.0 if self.current == 0 else math.inf
        return (self.current - self.baseline) / self.baseline


@dataclass
class GateResult:
    """Outcome of one gate run: compared rows, fitted exponents, failures and notes."""

    rows: list[GateRow]
    exponents: dict[str, float]
    tolerance: float
    exponent_bound: float
    failures: list[str] = field(default_factory=list)
    improvements: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    updated: bool = False
    elapsed_s: float = 0.0

    @property
    def passed(self) -> bool:
        return not self.failures

    def render(self) -> str:
        """Return the report: a table of every compared value, the exponents and the verdict."""
        lines = []
        if self.rows:
            lines += _render_table(self.rows)
            lines.append("")
        for quantity, exponent in self.exponents.items():
            lines.append(f"{LINEAR_MODEL} {quantity} grows as L^{exponent:.3f} "
                         f"(bound {self.exponent_bound:.2f})")
        lines += [f"note: {note}" for note in self.notes]
        lines += [f"improvement: {text}" for text in self.improvements]
        lines += [f"FAIL: {text}" for text in self.failures]

        if self.updated:
            verdict = "baseline updated"
        elif self.passed:
            verdict = f"gate passed (tolerance {self.tolerance:.1%})"
        else:
            verdict = f"gate failed: {len(self.failures)} problem(s)"
        lines.append(f"{verdict} in {self.elapsed_s:.1f} s")
        return "\n".join(lines)


def _format_change(change: float) -> str:
    return "new" if math.isinf(change) else f"{change:+.2%}"


def _render_table(rows: list[GateRow]) -> list[str]:
    header = ("model", "point", "quantity", "baseline", "current", "change", "status")
    cells = [(row.model, f"L={row.seq_len}", row.quantity, f"{row.baseline:,}",
              f"{row.current:,}", _format_change(row.change), row.status) for row in rows]
    widths = [max(len(text) for text in column) for column in zip(header, *cells, strict=True)]
    # Text columns align left, numbers right.
    align = ["<", "<", "<", ">", ">", ">", "<"]

    def line(values: Iterable[str]) -> str:
        cells = zip(values, align, widths, strict=True)
        return "  ".join(f"{value:{a}{w}}" for value, a, w in cells).rstrip()

    return [line(header), line("-" * w for w in widths), *(line(cell) for cell in cells)]


# --- fitting and comparing --------------------------------------------------------------------


def fit_exponent(seq_lens: Iterable[int], values: Iterable[float]) -> float:
    """Return the least-squares slope of log(value) against log(L)."""
    xs = [math.log(seq_len) for seq_len in seq_lens]
    ys = []
    for value in values:
        if value <= 0:
            raise ConvbenchError(f"cannot fit a growth exponent to the non-positive value {value}")
        ys.append(math.log(value))
    if len(xs) != len(ys) or len(set(xs)) < 2:
        raise ConvbenchError("fitting a growth exponent needs values at two or more lengths L")

    mean_x = sum(xs) / len(xs)
    mean_y = sum(ys) / len(ys)
    covariance = sum((x - mean_x) * (y - mean_y) for x, y in zip(xs, ys, strict=True))
    variance = sum((x - mean_x) ** 2 for x in xs)
    return covariance / variance


def check_exponents(points: list[dict[str, Any]], bound: float
                    ) -> tuple[dict[str, float], list[str]]:
    """Fit LINEAR_MODEL's memory exponents over `points`; return them and the failures.

    Without LINEAR_MODEL at two or more lengths there is nothing to fit, and both are empty.
    """
    rows = sorted((p for p in points if p["model"] == LINEAR_MODEL), key=lambda p: p["seq_len"])
    if len({p["seq_len"] for p in rows}) < 2:
        return {}, []

    seq_lens = [p["seq_len"] for p in rows]
    span = f"L={seq_lens[0]}..{seq_lens[-1]}"
    exponents: dict[str, float] = {}
    failures: list[str] = []
    for quantity in EXPONENT_QUANTITIES:
        exponent = fit_exponent(seq_lens, [p[quantity] for p in rows])
        exponents[quantity] = exponent
        if exponent > bound:
            failures.append(f"{LINEAR_MODEL} {quantity} grows as L^{exponent:.3f} over {span}, "
                            f"above the bound {bound:.2f}: some tensor grows faster than L")
    return exponents, failures


def compare_points(baseline: dict[tuple[str, int], dict[str, Any]],
                   current: list[dict[str, Any]], tolerance: float
                   ) -> tuple[list[GateRow], list[str], list[str]]:
    """Compare every quantity of `current` with `baseline`; return rows, failures, improvements.

    A value more than `tolerance` above its baseline is a regression. Any value below it is an
    improvement, because the quantities are exact and a drop is always real.
    """
    rows, failures, improvements = [], [], []
    for point in current:
        key = (point["model"], point["seq_len"])
        reference = baseline[key]
        for quantity in QUANTITIES:
            before, after = int(reference[quantity]), int(point[quantity])
            row = GateRow(point["model"], point["seq_len"], quantity, before, after, "ok")
            where = f"{row.model} L={row.seq_len} {quantity}"
            if row.change > tolerance:
                row = dataclasses.replace(row, status="regression")
                failures.append(f"{where} grew from {before:,} to {after:,} "
                                f"({_format_change(row.change)}), above the "
                                f"{tolerance:.1%} tolerance")
            elif after < before:
                row = dataclasses.replace(row, status="improvement")
                improvements.append(f"{where} dropped from {before:,} to {after:,} "
                                    f"({_format_change(row.change)}); run with --update to "
                                    "record it")
            rows.append(row)
    return rows, failures, improvements


# --- the baseline file ------------------------------------------------------------------------


def load_baseline(path: Path) -> dict[str, Any]:
    """Read a baseline file written by `write_baseline`, or raise a ConvbenchError naming it."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConvbenchError(f"gate baseline {path} not found; run `convbench gate --update` "
                             "to measure the grid and write it") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ConvbenchError(f"cannot read gate baseline {path}: {error}; restore it from git "
                             "or rewrite it with `convbench gate --update`") from error

    version = data.get("format_version") if isinstance(data, dict) else None
    if version != BASELINE_FORMAT_VERSION or not isinstance(data.get("points"), list):
        raise ConvbenchError(
            f"gate baseline {path} is not a version {BASELINE_FORMAT_VERSION} baseline file "
            f"(format_version {version!r}); rewrite it with `convbench gate --update`"
        )
    return data


def write_baseline(path: Path, grid: GateGrid, points: list[dict[str, Any]],
                   run_provenance: dict[str, Any]) -> None:
    """Write the measured points, the grid and the run's provenance to `path` as JSON."""
    records = [{"model": p["model"], "seq_len": p["seq_len"],
                **{quantity: int(p[quantity]) for quantity in QUANTITIES}} for p in points]
    data = {
        "format_version": BASELINE_FORMAT_VERSION,
        "written_by": "convbench gate --update",
        "provenance": run_provenance,
        "grid": grid.to_json(),
        "points": records,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")


def _baseline_points(data: dict[str, Any], path: Path, grid: GateGrid
                     ) -> tuple[dict[tuple[str, int], dict[str, Any]], list[str]]:
    """Index the baseline's points by (model, L) after checking them against `grid`.

    Returns the index and notes. Raises when the shared settings differ or a point is missing.
    """
    recorded = data.get("grid", {})
    expected = grid.shared_settings()
    differences = [f"{name} {recorded.get(name)!r} (grid: {value!r})"
                   for name, value in expected.items() if recorded.get(name) != value]
    if differences:
        raise ConvbenchError(
            f"gate baseline {path} was measured with other settings: {', '.join(differences)}; "
            "run `convbench gate --update` to measure the current grid"
        )

    index = {(p["model"], int(p["seq_len"])): p for p in data["points"]}
    missing = [f"{model} L={seq_len}" for model, seq_len in grid.points()
               if (model, seq_len) not in index]
    if missing:
        raise ConvbenchError(
            f"gate baseline {path} has no values for {', '.join(missing)}; "
            "run `convbench gate --update` to measure the current grid and record it"
        )

    notes = []
    extra = sorted(set(index) - set(grid.points()))
    if extra:
        notes.append(f"the baseline has {len(extra)} point(s) outside the grid, not compared "
                     "(`--update` drops them)")
    recorded_torch = data.get("provenance", {}).get("torch_version")
    if recorded_torch != torch.__version__:
        notes.append(f"the baseline was measured with torch {recorded_torch}, this run uses "
                     f"torch {torch.__version__}; operator changes between versions can move "
                     "byte and FLOP counts")
    return index, notes


# --- the gate ---------------------------------------------------------------------------------


@contextmanager
def _single_thread() -> Iterator[None]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def measure_grid(grid: GateGrid) -> list[dict[str, Any]]:
    """Measure every point of `grid` and return one dict per point; threads are left as set."""
    points = []
    for model, seq_len in grid.points():
        start = time.perf_counter()
        point = measure_deterministic(model, seq_len=seq_len, batch_size=grid.batch_size,
                                      hidden_size=grid.hidden_size, phase=grid.phase,
                                      num_candidates=grid.num_candidates, device=grid.device,
                                      num_items=grid.num_items,
                                      attribute_width=grid.attribute_width,
                                      context_width=grid.context_width)
        logger.info("measured %s L=%d in %.2f s", model, seq_len, time.perf_counter() - start)
        points.append(point)
    return points


def run_gate(*, baseline_path: Path = DEFAULT_BASELINE_PATH, update: bool = False,
             tolerance: float = DEFAULT_TOLERANCE,
             exponent_bound: float = DEFAULT_EXPONENT_BOUND,
             grid: GateGrid = DEFAULT_GRID) -> GateResult:
    """Measure `grid` and compare it with the baseline file, or rewrite the file (`update`).

    Raises a ConvbenchError, before measuring anything, when the baseline is missing or
    unreadable, was measured with other shared settings, or lacks a point of the grid. With
    `update`, the exponent bound still applies, and a run that breaks it writes nothing.
    """
    if tolerance < 0:
        raise ConvbenchError(f"tolerance must be >= 0, got {tolerance}")
    if exponent_bound <= 0:
        raise ConvbenchError(f"exponent bound must be > 0, got {exponent_bound}")
    baseline_path = Path(baseline_path)

    index: dict[tuple[str, int], dict[str, Any]] = {}
    notes: list[str] = []
    if not update:
        index, notes = _baseline_points(load_baseline(baseline_path), baseline_path, grid)

    start = time.perf_counter()
    with _single_thread():
        points = measure_grid(grid)
        run_provenance = provenance()
    exponents, failures = check_exponents(points, exponent_bound)

    rows: list[GateRow] = []
    improvements: list[str] = []
    written = False
    if update:
        if failures:
            notes.append(f"baseline {baseline_path} left unchanged because of the failures below")
        else:
            write_baseline(baseline_path, grid, points, run_provenance)
            written = True
            notes.append(f"wrote {len(points)} points to {baseline_path}")
    else:
        rows, regressions, improvements = compare_points(index, points, tolerance)
        failures = regressions + failures

    return GateResult(rows=rows, exponents=exponents, tolerance=tolerance,
                      exponent_bound=exponent_bound, failures=failures,
                      improvements=improvements, notes=notes, updated=written,
                      elapsed_s=time.perf_counter() - start)
