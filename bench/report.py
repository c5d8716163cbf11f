"""Report files of a sweep: a tidy CSV of every point, its provenance, and `summary.md`.

The tidy CSV has one row per (point, method, metric) with the columns model, phase, seq_len,
batch_size, hidden_size, device, method, status, reason, metric, value, followed by the
provenance columns (prov_*) of the process that measured the point. A point that has no value
(skipped, oom, timeout, error) still gets one row, with an empty metric and value, so every point
of the grid appears. `provenance.json` lists the distinct machines and software that measured the
sweep, with the time range of their measurements.
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from bench.fit import (
    COMBINED_STATUS,
    FIT_METRICS,
    LOW_R2,
    LOW_R2_NOTE,
    MIN_FIT_LENGTHS,
    crossovers,
    fill_with_estimates,
    scaling_exponents,
)
from bench.sweep import KEY_COLUMNS

logger = logging.getLogger(__name__)

TIDY_FILE = "points_tidy.csv"
PROVENANCE_FILE = "provenance.json"
SUMMARY_FILE = "summary.md"

# Cost columns of the sweep table that become metrics in the tidy CSV.
METRIC_COLUMNS = (
    "time_median_s", "time_iqr_s", "time_min_s", "time_max_s",
    "params", "flops", "saved_bytes", "peak_live_bytes",
    "peak_rss_bytes", "base_rss_bytes", "rss_growth_bytes", "cuda_peak_bytes",
    "process_seconds", "measure_seconds",
)
# Quantities that both `measure_deterministic` and `estimate_point` return, so they can be checked.
CHECKED_COLUMNS = ("params", "flops", "saved_bytes", "peak_live_bytes")
_ID_COLUMNS = (*KEY_COLUMNS, "method", "status", "reason")
_TIME_KEY = "prov_utc_time"


def tidy_frame(points: pd.DataFrame) -> pd.DataFrame:
    """Return the long form of the sweep table: one row per point, method and metric."""
    provenance_columns = sorted(column for column in points.columns
                                if column.startswith("prov_"))
    id_columns = [column for column in _ID_COLUMNS if column in points.columns]
    metrics = [column for column in METRIC_COLUMNS if column in points.columns]
    base = points[id_columns + metrics + provenance_columns].reset_index(drop=True)
    base = base.assign(_row=np.arange(len(base)))

    long = base.melt(id_vars=["_row", *id_columns, *provenance_columns], value_vars=metrics,
                     var_name="metric", value_name="value")
    long = long[pd.to_numeric(long["value"], errors="coerce").notna()]
    # Points with no value at all keep one row, so the tidy table still lists them.
    missing = base[~base["_row"].isin(long["_row"])]
    missing = missing[["_row", *id_columns, *provenance_columns]].assign(metric=None, value=None)
    tidy = pd.concat([long, missing], ignore_index=True) if not missing.empty else long
    tidy = tidy.sort_values(["_row", "metric"], na_position="last").drop(columns="_row")
    return tidy[[*id_columns, "metric", "value", *provenance_columns]].reset_index(drop=True)


def provenance_records(points: pd.DataFrame) -> list[dict]:
    """Return each distinct provenance (time left out) with its number of rows and time range."""
    columns = sorted(column for column in points.columns
                     if column.startswith("prov_") and column != _TIME_KEY)
    measured = points[points[columns].notna().any(axis=1)] if columns else points.iloc[0:0]
    records = []
    for values, group in measured.groupby(columns, dropna=False, sort=True):
        values = values if isinstance(values, tuple) else (values,)
        record = {column.removeprefix("prov_"): _plain(value)
                  for column, value in zip(columns, values, strict=True)}
        record["rows"] = len(group)
        if _TIME_KEY in group:
            times = group[_TIME_KEY].dropna().astype(str)
            record["first_utc_time"] = times.min() if not times.empty else None
            record["last_utc_time"] = times.max() if not times.empty else None
        records.append(record)
    return records


def _plain(value):
    """Turn numpy scalars and NaN into JSON-friendly values."""
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and math.isnan(value):
        return None
    # Columns with missing entries come back from CSV as floats; keep whole counts whole.
    if isinstance(value, float) and value.is_integer() and abs(value) < 2**53:
        return int(value)
    return value


def estimate_checks(points: pd.DataFrame) -> pd.DataFrame:
    """Pair every measured point with its estimate; return one row per checked quantity."""
    columns = [*KEY_COLUMNS, "quantity", "measured", "estimated", "ratio"]
    measured = points[points["status"] == "measured"]
    estimated = points[points["status"] == "estimated"]
    if measured.empty or estimated.empty:
        return pd.DataFrame(columns=columns)
    pairs = measured.merge(estimated, on=list(KEY_COLUMNS), suffixes=("_measured", "_estimated"))
    rows = []
    for _, pair in pairs.iterrows():
        for quantity in CHECKED_COLUMNS:
            got = pd.to_numeric(pair.get(f"{quantity}_measured"), errors="coerce")
            expected = pd.to_numeric(pair.get(f"{quantity}_estimated"), errors="coerce")
            if pd.isna(got) or pd.isna(expected):
                continue
            if got != 0:
                ratio = expected / got
            elif expected == 0:
                ratio = 1.0
            else:
                ratio = math.inf
            rows.append([*(pair[column] for column in KEY_COLUMNS), quantity, got, expected,
                         ratio])
    return pd.DataFrame(rows, columns=columns)


# An estimate within this relative distance of the measurement counts as agreeing.
CHECK_TOLERANCE = 1e-3


def _check_table(points: pd.DataFrame) -> pd.DataFrame:
    """Return one row per checked point with the estimated / measured ratio of each quantity."""
    checks = estimate_checks(points)
    if checks.empty:
        return checks
    wide = checks.pivot_table(index=list(KEY_COLUMNS), columns="quantity", values="ratio",
                              aggfunc="first")
    wide = wide[[quantity for quantity in CHECKED_COLUMNS if quantity in wide.columns]]
    wide.columns = [f"{quantity} ratio" for quantity in wide.columns]
    return wide.reset_index()


def _markdown_table(frame: pd.DataFrame) -> str:
    if frame.empty:
        return "(none)\n"
    header = "| " + " | ".join(str(column) for column in frame.columns) + " |"
    rule = "| " + " | ".join("---" for _ in frame.columns) + " |"
    lines = [header, rule]
    for _, row in frame.iterrows():
        cells = [_format_cell(value).replace("|", "\\|") for value in row]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _format_cell(value) -> str:
    value = _plain(value)
    if value is None:
        return ""
    if isinstance(value, float):
        if value.is_integer() and abs(value) < 1e15:
            return str(int(value))
        return f"{value:.4g}"
    return str(value)


def _status_counts(points: pd.DataFrame) -> pd.DataFrame:
    counts = points.groupby(["method", "status"]).size().rename("points").reset_index()
    return counts.sort_values(["method", "status"])


def _fit_cell(slope: float, r2: float, top_slope: float, note: str) -> str:
    """Format one fit as "slope (R²), top slope", or as its note alone when it has no slope."""
    if math.isnan(slope):
        return note
    cell = f"{slope:.2f} ({r2:.3f}), top {top_slope:.2f}"
    return f"{cell}, {note}" if note else cell


def _exponent_table(points: pd.DataFrame) -> pd.DataFrame:
    """Return one row per setting, metric and status, with a "slope (R^2)" column per model."""
    combined = pd.concat([points, fill_with_estimates(points)], ignore_index=True)
    table = scaling_exponents(combined, FIT_METRICS, statuses=("measured", COMBINED_STATUS))
    if table.empty:
        return table
    table = table.assign(fit=[_fit_cell(slope, r2, top, note) for slope, r2, top, note
                              in zip(table["slope"], table["r2"], table["top_slope"],
                                     table["note"], strict=True)],
                         lengths=table["min_len"].astype(str) + ".."
                         + table["max_len"].astype(str))
    index = ["device", "phase", "batch_size", "hidden_size", "metric", "status"]
    wide = table.pivot_table(index=index, columns="model", values="fit", aggfunc="first")
    ranges = table.groupby(index)["lengths"].agg(lambda values: ", ".join(sorted(set(values))))
    wide = wide.join(ranges.rename("fitted lengths")).reset_index()
    wide.columns.name = None
    # List the metrics in the order of FIT_METRICS (time, memory, FLOPs), not alphabetically.
    wide["_order"] = wide["metric"].map({metric: i for i, metric in enumerate(FIT_METRICS)})
    wide = wide.sort_values(["device", "phase", "batch_size", "hidden_size", "status", "_order"])
    return wide.drop(columns="_order")


def _crossover_table(points: pd.DataFrame) -> pd.DataFrame:
    table = crossovers(points, FIT_METRICS)
    if table.empty:
        return table
    table = table.dropna(subset=["crossover"])
    return table.assign(crossover=[value if isinstance(value, str) else f"L = {value:.0f}"
                                   for value in table["crossover"]])


def _not_measured(points: pd.DataFrame) -> pd.DataFrame:
    rows = points[(points["method"] == "measure") & (points["status"] != "measured")]
    return rows[[*KEY_COLUMNS, "status", "reason"]].sort_values(list(KEY_COLUMNS))


def _accuracy_table(accuracy: pd.DataFrame) -> pd.DataFrame:
    metrics = [column for column in ("test_full_ndcg@10", "test_full_hr@10",
                                     "test_sampled_ndcg@10", "test_sampled_hr@10",
                                     "train_step_seconds", "peak_live_bytes", "epochs",
                                     "train_seconds", "predicted_train_seconds",
                                     "cost_batch_size")
               if column in accuracy]
    if "status" in accuracy:
        accuracy = accuracy[accuracy["status"].fillna("trained") == "trained"]
    keys = [column for column in ("dataset", "model", "seq_len", "hidden_size", "max_epochs")
            if column in accuracy and accuracy[column].notna().all()]
    grouped = accuracy.groupby(keys, sort=True)
    table = grouped[metrics].mean(numeric_only=True)
    table["seeds"] = grouped.size()
    return table.reset_index()


def render_summary(points: pd.DataFrame, accuracy: pd.DataFrame | None = None,
                   figures: Sequence[Path] = ()) -> str:
    """Return the Markdown summary of a sweep table (and its accuracy rows, when given)."""
    measure_rows = points[points["method"] == "measure"]
    parts = ["# Scale sweep\n\n"]
    parts.append(
        f"Models: {', '.join(sorted(points['model'].unique()))}. "
        f"Lengths: {', '.join(str(v) for v in sorted(points['seq_len'].astype(int).unique()))}. "
        f"Batch sizes: {', '.join(str(v) for v in sorted(points['batch_size'].unique()))}. "
        f"Hidden sizes: {', '.join(str(v) for v in sorted(points['hidden_size'].unique()))}. "
        f"Devices: {', '.join(sorted(points['device'].astype(str).unique()))}. "
        f"{len(measure_rows)} points.\n"
    )

    parts.append("\n## Points by status\n\n")
    parts.append(_markdown_table(_status_counts(points)))

    parts.append("\n## Scaling exponents\n\n")
    parts.append("Slope of log cost against log L, with R² in brackets, fitted by least squares "
                 "over the upper half of each series' lengths on a log scale, and over at least "
                 f"{MIN_FIT_LENGTHS} lengths. A series with fewer usable lengths has no "
                 "exponent, because a line through two points fits with R² = 1 whatever the "
                 f"costs. A fit with R² below {LOW_R2} is marked `{LOW_R2_NOTE}`, and its "
                 "slope should not be read as an exponent. Status "
                 f"`{COMBINED_STATUS}` fits the FLOPs and bytes of a series that has lengths "
                 "too large to measure, taking the fake-tensor estimate at those lengths. "
                 "`top` is the slope between the two largest fitted lengths. A cost with a "
                 "fixed part (a + b·L) fits a slope below 1 that rises toward 1 with L, so "
                 "`top` is the closer view of the exponent the cost tends to. ConvRec has "
                 "such a part: the item part of its encoder runs once per distinct item of "
                 "the batch, so the catalogue size bounds it.\n\n")
    parts.append(_markdown_table(_exponent_table(points)))

    parts.append("\n## Crossovers\n\n")
    parts.append("Smallest L at which ConvRec costs less than SASRec, interpolated in log-log "
                 "space between measured lengths; `below range` means ConvRec is already "
                 "cheaper at the smallest measured length. Settings where it is never cheaper "
                 "are left out.\n\n")
    parts.append(_markdown_table(_crossover_table(points)))

    parts.append("\n## Estimate against measurement\n\n")
    checks = _check_table(points)
    ratios = checks[[column for column in checks.columns if column.endswith(" ratio")]]
    differ = ((ratios - 1.0).abs() > CHECK_TOLERANCE).any(axis=1) if not checks.empty else []
    parts.append(f"Each quantity estimated on fake tensors divided by the one measured on real "
                 f"tensors; 1 means they agree exactly. Points with both: {len(checks)}. "
                 f"Points that agree within {CHECK_TOLERANCE:.1%} in every quantity: "
                 f"{len(checks) - int(sum(differ))}. The table lists the others.\n\n")
    parts.append(_markdown_table(checks[differ] if not checks.empty else checks))

    parts.append("\n## Points not measured\n\n")
    parts.append(_markdown_table(_not_measured(points)))

    if accuracy is not None and not accuracy.empty:
        parts.append("\n## Accuracy along the sweep\n\n")
        parts.append("Test metrics averaged over seeds, beside the training step time and peak "
                     "live tensor memory of the same L, measured by the sweep at batch size "
                     "`cost_batch_size`. `train_seconds` is the measured training time of the "
                     "run, `predicted_train_seconds` the time of its training steps predicted "
                     "from the sweep; runs that share the machine take longer than predicted, "
                     "and evaluation is not in the prediction.\n\n")
        parts.append(_markdown_table(_accuracy_table(accuracy)))
        if "status" in accuracy:
            skipped = accuracy[accuracy["status"] == "skipped"]
            if not skipped.empty:
                parts.append("\nRuns not trained, and why:\n\n")
                parts.append(_markdown_table(skipped[["dataset", "model", "seq_len", "seed",
                                                      "reason"]]))

    if figures:
        parts.append("\n## Figures\n\n")
        parts.extend(f"- [{Path(path).name}]({Path(path).name})\n" for path in figures)

    parts.append("\n## Provenance\n\n")
    records = provenance_records(points)
    if records:
        parts.append(_markdown_table(pd.DataFrame(records)))
    else:
        parts.append("(no measured point)\n")
    return "".join(parts)


def _write_text_atomic(path: Path, text: str) -> None:
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text(text, encoding="utf-8")
    os.replace(temporary, path)


def write_report(output_dir: Path, points: pd.DataFrame, accuracy: pd.DataFrame | None = None,
                 figures: Sequence[Path] = ()) -> dict[str, Path]:
    """Write the tidy CSV, the provenance JSON and `summary.md` into `output_dir`.

    Returns the written paths by name: "tidy", "provenance" and "summary".
    """
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    paths = {"tidy": output_dir / TIDY_FILE, "provenance": output_dir / PROVENANCE_FILE,
             "summary": output_dir / SUMMARY_FILE}

    temporary = paths["tidy"].with_name(paths["tidy"].name + ".tmp")
    tidy_frame(points).to_csv(temporary, index=False)
    os.replace(temporary, paths["tidy"])
    _write_text_atomic(paths["provenance"],
                       json.dumps(provenance_records(points), indent=2, default=str) + "\n")
    _write_text_atomic(paths["summary"], render_summary(points, accuracy, figures))
    logger.info("report written to %s", paths["summary"])
    return paths
