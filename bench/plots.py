"""Log-log figures of a sweep: cost against sequence length, and accuracy against cost.

Figures are drawn on `matplotlib.figure.Figure` objects, which render through the Agg canvas
without touching pyplot's global state, so plotting works on machines without a display.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import LogFormatterSciNotation, LogLocator, NullFormatter, ScalarFormatter

from bench.point import PHASES

logger = logging.getLogger(__name__)

# (column, y-axis label) of the three panel columns of a scaling figure.
_PANELS = (
    ("time_median_s", "time per step (s)"),
    ("peak_live_bytes", "peak live tensor memory (bytes)"),
    ("flops", "FLOPs per step"),
)
_PHASE_TITLES = {"train": "training step", "infer": "inference"}
_GUIDE_SLOPES = (1, 2)
# Mantissas of the tick sets tried on a log axis with fewer than two powers of ten in view,
# sparsest first. The first set with _NARROW_LOG_TICKS ticks in view is used, else the last.
# Consecutive mantissas of the last two sets differ by at most a factor of 2, so any view that
# spans a factor of 4 shows at least two of their ticks.
_NARROW_LOG_SUBS = ((1.0, 2.0, 5.0), (1.0, 2.0, 3.0, 5.0), tuple(range(1, 10)))
_NARROW_LOG_TICKS = 3


def _model_colors(models: Sequence[str]) -> dict[str, tuple]:
    palette = sns.color_palette("colorblind", n_colors=max(len(models), 3))
    return {model: palette[i] for i, model in enumerate(sorted(models))}


def _positive(frame: pd.DataFrame, column: str) -> pd.DataFrame:
    """Return rows with a positive `column`, sorted by L, as float columns seq_len and value."""
    if column not in frame:
        return frame.iloc[0:0].assign(value=[])
    values = pd.to_numeric(frame[column], errors="coerce")
    positive = frame.assign(value=values, seq_len=frame["seq_len"].astype(float))
    positive = positive[np.isfinite(positive["value"]) & (positive["value"] > 0)]
    return positive.groupby("seq_len", as_index=False)["value"].mean().sort_values("seq_len")


def _draw_guides(axes, lengths: np.ndarray, anchor: float) -> None:
    """Draw slope-1 and slope-2 lines through (smallest L, anchor), labelled at their end."""
    x = np.array([lengths.min(), lengths.max()], dtype=float)
    for slope in _GUIDE_SLOPES:
        y = anchor * (x / x[0]) ** slope
        axes.plot(x, y, color="0.6", linestyle=":", linewidth=1.0, zorder=1)
        axes.annotate(f"slope {slope}", (x[1], y[1]), fontsize=7, color="0.4",
                      xytext=(2, 0), textcoords="offset points", va="center")


def _draw_panel(axes, frame: pd.DataFrame, column: str, colors: dict, on_cuda: bool) -> None:
    """Draw one cost column of one phase: one line per model, measured and estimated."""
    plotted = []
    for model, rows in frame.groupby("model", sort=True):
        color = colors[model]
        measured = _positive(rows[rows["status"] == "measured"], column)
        estimated = _positive(rows[rows["status"] == "estimated"], column)
        if not measured.empty:
            axes.plot(measured["seq_len"], measured["value"], color=color, linestyle="-",
                      marker="o", markersize=4, zorder=3)
            plotted.append(measured)
        if not estimated.empty:
            # Every estimate gets a hollow marker. The dashed line only continues the measured
            # line through lengths without a measurement, so it draws no trend between checks.
            axes.plot(estimated["seq_len"], estimated["value"], color=color, linestyle="none",
                      marker="o", markersize=6, markerfacecolor="none", zorder=2)
            beyond = estimated[~estimated["seq_len"].isin(measured["seq_len"])]
            if not measured.empty:
                beyond = pd.concat([measured.iloc[[-1]], beyond[beyond["seq_len"]
                                                                > measured["seq_len"].max()]])
            if len(beyond) > 1:
                axes.plot(beyond["seq_len"], beyond["value"], color=color, linestyle="--",
                          zorder=2)
            plotted.append(estimated)
        if on_cuda and column == "peak_live_bytes":
            cuda = _positive(rows[rows["status"] == "measured"], "cuda_peak_bytes")
            if not cuda.empty:
                axes.plot(cuda["seq_len"], cuda["value"], color=color, linestyle="-.",
                          marker="s", markersize=4, zorder=3)
                plotted.append(cuda)

    if not plotted:
        axes.text(0.5, 0.5, "no data", transform=axes.transAxes, ha="center", va="center",
                  color="0.5")
        return
    points = pd.concat(plotted)
    smallest = points["seq_len"].min()
    _draw_guides(axes, points["seq_len"].to_numpy(),
                 float(points.loc[points["seq_len"] == smallest, "value"].median()))
    axes.set_xscale("log", base=2)
    axes.xaxis.set_major_formatter(ScalarFormatter())
    axes.set_yscale("log")
    label_log_axis(axes.yaxis)


def label_log_axis(axis) -> None:
    """Give a log-scaled axis at least two tick labels without crowding them.

    Call it after the data are drawn, because it reads the view limits. With two or more powers
    of ten in view, only those are labelled, since labelled minor ticks over several decades
    overlap. With fewer, the axis gets labelled ticks at 1-2-5 mantissas, or at denser ones
    when the view is too narrow for three of those, so that its values can still be read.
    """
    low, high = sorted(axis.get_view_interval())

    def ticks_in_view(locator) -> int:
        return sum(1 for tick in locator.tick_values(low, high) if low <= tick <= high)

    axis.set_minor_formatter(NullFormatter())
    if ticks_in_view(LogLocator(base=10)) >= 2:
        return
    for subs in _NARROW_LOG_SUBS:
        locator = LogLocator(base=10, subs=subs)
        if ticks_in_view(locator) >= _NARROW_LOG_TICKS:
            break
    axis.set_major_locator(locator)
    # Infinite thresholds label every tick the locator places, instead of a subset chosen by
    # the number of decades in view.
    axis.set_major_formatter(LogFormatterSciNotation(base=10, labelOnlyBase=False,
                                                     minor_thresholds=(math.inf, math.inf)))


def _legend_handles(colors: dict, on_cuda: bool) -> list[Line2D]:
    handles = [Line2D([], [], color=color, linewidth=2, label=model)
               for model, color in colors.items()]
    handles.append(Line2D([], [], color="0.3", linestyle="-", marker="o", markersize=4,
                          label="measured"))
    handles.append(Line2D([], [], color="0.3", linestyle="--", marker="o", markersize=5,
                          markerfacecolor="none", label="estimated (fake tensors)"))
    if on_cuda:
        handles.append(Line2D([], [], color="0.3", linestyle="-.", marker="s", markersize=4,
                              label="CUDA peak allocated"))
    handles.append(Line2D([], [], color="0.6", linestyle=":", label="slope 1 and 2 guides"))
    return handles


def plot_scaling(frame: pd.DataFrame, output_dir: Path) -> list[Path]:
    """Write the figures of `scaling_figures` as PNG files into `output_dir`; return the paths."""
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    if frame.empty:
        logger.warning("the sweep table is empty; no scaling figure written")
        return []
    paths = []
    for name, figure in scaling_figures(frame).items():
        path = output_dir / f"{name}.png"
        figure.savefig(path, dpi=120)
        paths.append(path)
    return paths


def scaling_figures(frame: pd.DataFrame) -> dict[str, Figure]:
    """Draw one figure per (device, batch size, width) of the sweep table `frame`.

    Returns the figures by file stem, such as "scale_cpu_B1" (with "_D64" appended when the
    table has several widths). Each figure has one row per phase and three columns: time per
    step, memory (peak live tensor bytes, plus the CUDA peak on CUDA) and FLOPs, all against L
    on log-log axes.
    """
    if frame.empty:
        return {}
    colors = _model_colors(frame["model"].unique().tolist())
    several_widths = frame["hidden_size"].nunique() > 1
    figures = {}

    for (device, batch_size, hidden_size), setting in frame.groupby(
            ["device", "batch_size", "hidden_size"], sort=True):
        phases = [phase for phase in PHASES if phase in set(setting["phase"])]
        on_cuda = str(device).startswith("cuda")
        with sns.axes_style("whitegrid"):
            figure = Figure(figsize=(4.2 * len(_PANELS), 3.4 * len(phases) + 0.8),
                            layout="constrained")
            grid = figure.subplots(len(phases), len(_PANELS), squeeze=False)
            for row, phase in enumerate(phases):
                rows = setting[setting["phase"] == phase]
                for col, (column, label) in enumerate(_PANELS):
                    axes = grid[row][col]
                    _draw_panel(axes, rows, column, colors, on_cuda)
                    axes.set_title(f"{_PHASE_TITLES[phase]}: {label.split(' (')[0]}",
                                   fontsize=9)
                    axes.set_ylabel(label, fontsize=8)
                    axes.set_xlabel("sequence length L", fontsize=8)
            figure.suptitle(f"cost against L on {device}, B={batch_size}, D={hidden_size}")
            figure.legend(handles=_legend_handles(colors, on_cuda), loc="outside lower center",
                          ncol=len(colors) + 4, fontsize=8, frameon=False)

        name = f"scale_{device}_B{batch_size}"
        if several_widths:
            name += f"_D{hidden_size}"
        figures[name.replace(":", "-")] = figure
    return figures


def plot_accuracy_vs_cost(accuracy: pd.DataFrame, output_path: Path, *,
                          metric: str = "test_full_ndcg@10") -> Path:
    """Plot `metric` against training cost, one line per model, each point labelled with its L.

    `accuracy` has one row per (model, L, seed) with `metric`, `train_step_seconds` and
    `peak_live_bytes` (see `bench.sweep.attach_costs`); seeds are averaged. The left panel puts
    time per training step on x, the right panel peak live tensor memory.
    """
    output_path = Path(output_path)
    output_path.parent.mkdir(parents=True, exist_ok=True)
    panels = (("train_step_seconds", "time per training step (s)"),
              ("peak_live_bytes", "peak live tensor memory (bytes)"))
    colors = _model_colors(accuracy["model"].unique().tolist()) if not accuracy.empty else {}

    with sns.axes_style("whitegrid"):
        figure = Figure(figsize=(10, 4.2), layout="constrained")
        grid = figure.subplots(1, len(panels), squeeze=False)
        for col, (cost, label) in enumerate(panels):
            axes = grid[0][col]
            drawn = False
            for model, rows in accuracy.groupby("model", sort=True):
                if cost not in rows or metric not in rows:
                    continue
                values = rows.assign(cost=pd.to_numeric(rows[cost], errors="coerce"),
                                     score=pd.to_numeric(rows[metric], errors="coerce"))
                values = values[np.isfinite(values["cost"]) & (values["cost"] > 0)
                                & np.isfinite(values["score"])]
                if values.empty:
                    continue
                mean = values.groupby("seq_len", as_index=False)[["cost", "score"]].mean()
                mean = mean.sort_values("seq_len")
                axes.plot(mean["cost"], mean["score"], color=colors[model], marker="o",
                          markersize=4, label=model)
                for _, point in mean.iterrows():
                    axes.annotate(f"L={int(point['seq_len'])}", (point["cost"], point["score"]),
                                  fontsize=7, xytext=(3, 3), textcoords="offset points")
                drawn = True
            if drawn:
                axes.set_xscale("log")
                label_log_axis(axes.xaxis)
                axes.legend(fontsize=8)
            else:
                axes.text(0.5, 0.5, "no trained run with a measured cost",
                          transform=axes.transAxes, ha="center", va="center", color="0.5")
            axes.set_xlabel(label, fontsize=8)
            axes.set_ylabel(metric, fontsize=8)
        figure.suptitle(f"{metric} against training cost")

    figure.savefig(output_path, dpi=120)
    return output_path
