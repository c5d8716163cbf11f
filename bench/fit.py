"""Scaling fits of a sweep: exponents of cost against sequence length, and crossover lengths.

A cost that grows like a * L^k is a straight line of slope k on log-log axes, so the exponent is
the least-squares slope of log cost against log L. Linear growth (ConvRec) gives k close to 1,
self-attention k close to 2 once the quadratic term dominates. Small lengths are dominated by
fixed costs (parameters, kernel launches, the Python interpreter), so exponents are fitted over
the upper half of the measured length range, on a logarithmic scale.

A cost with a fixed part, a + b * L, has a fitted slope below 1 that rises toward 1 as L grows.
ConvRec has such a part: the item part of its encoder runs once per distinct item of the batch,
so the catalogue size bounds it, whatever L is. So every fit with a slope also reports
`top_slope`, the slope between the two largest lengths, the closest view of the exponent that
the cost tends to.

A line through two points always fits exactly (R^2 = 1), so a fit over fewer than three lengths
cannot show whether the cost follows a power law. Such series are reported without an
exponent, and fits with a low R^2 are flagged.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pandas as pd

from convrec.errors import ConvbenchError

# Columns that identify one series: the lengths of a series vary, everything else is fixed.
SERIES_COLUMNS = ("model", "phase", "batch_size", "hidden_size", "device")

# Cost columns of the sweep table that are fitted, in the order the summary lists them.
FIT_METRICS = (
    "time_median_s",
    "rss_growth_bytes",
    "cuda_peak_bytes",
    "saved_bytes",
    "peak_live_bytes",
    "flops",
)

# Minimum number of distinct lengths of a reported exponent, because with two R^2 is always 1.
MIN_FIT_LENGTHS = 3
# Below this R^2 a slope does not describe the costs well enough to be read as an exponent.
# 0.9 is a judgement call, not a statistical test.
LOW_R2 = 0.9
LOW_R2_NOTE = "low R²: noisy or not a power law"

# Sums of squared log costs below this (per point) count as zero: the costs are equal.
_FLAT_TOLERANCE = 1e-20

# Returned by crossover_length when ConvRec is already cheaper at the smallest shared length,
# so the crossover lies somewhere below the measured range.
BELOW_RANGE = "below range"


def fit_exponent(lengths: Sequence[float], costs: Sequence[float]) -> tuple[float, float, float]:
    """Fit log(cost) = slope * log(L) + intercept by least squares.

    Returns (slope, intercept, r2), with natural logarithms, so cost = exp(intercept) * L^slope.
    R^2 is 1.0 when the costs lie exactly on the line, including the case of constant costs,
    and so always with two lengths. Raises ConvbenchError unless there are at least two
    distinct positive lengths and every cost is positive and finite.
    """
    x = np.asarray(lengths, dtype=float)
    y = np.asarray(costs, dtype=float)
    if x.shape != y.shape or x.ndim != 1:
        raise ConvbenchError(
            f"fit_exponent needs two 1-D sequences of equal length; got {x.shape} lengths "
            f"and {y.shape} costs"
        )
    if not (np.all(np.isfinite(x)) and np.all(x > 0)):
        raise ConvbenchError(f"every length must be positive and finite to fit an exponent; "
                             f"got {x.tolist()}")
    if not (np.all(np.isfinite(y)) and np.all(y > 0)):
        raise ConvbenchError(f"every cost must be positive and finite to fit an exponent; "
                             f"got {y.tolist()}")
    if np.unique(x).size < 2:
        raise ConvbenchError(f"an exponent needs at least two distinct lengths; got {x.tolist()}")

    log_x = np.log(x)
    log_y = np.log(y)
    design = np.stack([log_x, np.ones_like(log_x)], axis=1)
    (slope, intercept), *_ = np.linalg.lstsq(design, log_y, rcond=None)

    residual = log_y - (slope * log_x + intercept)
    ss_res = float(residual @ residual)
    centred = log_y - log_y.mean()
    ss_tot = float(centred @ centred)
    # Equal costs can leave a rounding residue in both sums, so compare with a tolerance.
    if ss_tot <= _FLAT_TOLERANCE * log_y.size:
        r2 = 1.0 if ss_res <= _FLAT_TOLERANCE * log_y.size else 0.0
    else:
        r2 = 1.0 - ss_res / ss_tot
    return float(slope), float(intercept), float(r2)


def upper_half(lengths: Sequence[int]) -> list[int]:
    """Return the distinct lengths in the upper half of their range on a log scale.

    The cut is the geometric mean of the smallest and largest length. The largest
    MIN_FIT_LENGTHS lengths are kept whenever that many exist, so that a short sweep still
    gets a fit whose R^2 means something.
    """
    distinct = sorted(set(int(length) for length in lengths))
    if len(distinct) <= MIN_FIT_LENGTHS:
        return distinct
    cut = math.sqrt(distinct[0] * distinct[-1])
    upper = [length for length in distinct if length >= cut]
    if len(upper) < MIN_FIT_LENGTHS:
        upper = distinct[-MIN_FIT_LENGTHS:]
    return upper


def scaling_exponents(frame: pd.DataFrame, metrics: Sequence[str] = FIT_METRICS,
                      statuses: Sequence[str] = ("measured",)) -> pd.DataFrame:
    """Fit one exponent per series, status and metric over the upper half of its lengths.

    `frame` is the wide sweep table (one row per point, with the columns of SERIES_COLUMNS,
    `seq_len`, `status` and one column per metric). Rows whose metric is missing or not positive
    are left out, and a series without a usable row gets no row. Passing
    statuses=("measured", "estimated") also fits the estimated FLOPs and bytes, which reach
    lengths that were too large to measure.

    `top_slope` is the log-log slope between the two largest fitted lengths.

    The `note` column is empty for a usable fit. A series with fewer than MIN_FIT_LENGTHS usable
    lengths gets NaN slope, r2 and intercept, and a note saying why. A fit with R^2 below LOW_R2
    keeps its numbers and gets LOW_R2_NOTE.
    """
    columns = [*SERIES_COLUMNS, "status", "metric", "slope", "r2", "intercept", "top_slope",
               "n_points", "min_len", "max_len", "note"]
    rows = []
    for status in statuses:
        subset = frame[frame["status"] == status]
        for key, series in subset.groupby(list(SERIES_COLUMNS), sort=True):
            for metric in metrics:
                if metric not in series.columns:
                    continue
                values = pd.to_numeric(series[metric], errors="coerce")
                usable = series.assign(_value=values)
                usable = usable[np.isfinite(usable["_value"]) & (usable["_value"] > 0)]
                fitted_lengths = upper_half(usable["seq_len"].astype(int).tolist())
                if not fitted_lengths:
                    continue
                usable = usable[usable["seq_len"].astype(int).isin(fitted_lengths)]
                # A length measured twice (for example on resume) contributes its mean.
                by_length = usable.groupby("seq_len")["_value"].mean()
                span = [len(by_length), int(by_length.index.min()), int(by_length.index.max())]
                if len(by_length) < MIN_FIT_LENGTHS:
                    note = (f"not available: {len(by_length)} length(s), a fit needs at least "
                            f"{MIN_FIT_LENGTHS}")
                    rows.append([*key, status, metric, math.nan, math.nan, math.nan, math.nan,
                                 *span, note])
                    continue
                slope, intercept, r2 = fit_exponent(by_length.index.to_numpy(dtype=float),
                                                    by_length.to_numpy())
                top = by_length.iloc[-2:]
                top_slope = math.log(top.iloc[1] / top.iloc[0]) / math.log(top.index[1]
                                                                            / top.index[0])
                note = LOW_R2_NOTE if r2 < LOW_R2 else ""
                rows.append([*key, status, metric, slope, r2, intercept, top_slope, *span,
                             note])
    return pd.DataFrame(rows, columns=columns)


# Quantities that `estimate_point` computes as well as `measure_deterministic`.
DETERMINISTIC_METRICS = ("params", "flops", "saved_bytes", "peak_live_bytes")
COMBINED_STATUS = "measured + estimated"


def fill_with_estimates(frame: pd.DataFrame) -> pd.DataFrame:
    """Return the deterministic costs of each series over every length it has a value for.

    A length keeps its measured row where one exists and takes its estimated row otherwise. Only
    series with at least one estimated-only length are returned, so the fit of the result reaches
    lengths the measured fit cannot. Rows get the status COMBINED_STATUS.
    """
    measured = frame[frame["status"] == "measured"]
    estimated = frame[frame["status"] == "estimated"]
    keys = [*SERIES_COLUMNS, "seq_len"]
    measured_keys = set(measured[keys].itertuples(index=False, name=None))
    extra = estimated[[key not in measured_keys
                       for key in estimated[keys].itertuples(index=False, name=None)]]
    if extra.empty:
        return frame.iloc[0:0].assign(status=COMBINED_STATUS)
    series = set(extra[list(SERIES_COLUMNS)].itertuples(index=False, name=None))
    combined = pd.concat([measured, extra], ignore_index=True)
    in_series = [key in series
                 for key in combined[list(SERIES_COLUMNS)].itertuples(index=False, name=None)]
    columns = [column for column in (*keys, *DETERMINISTIC_METRICS) if column in combined]
    return combined.loc[in_series, columns].assign(status=COMBINED_STATUS)


def crossover_length(frame: pd.DataFrame, metric: str, *, model: str = "convrec",
                     reference: str = "sasrec") -> float | str | None:
    """Return the smallest length L at which `model` costs less than `reference` in `metric`.

    `frame` contains the measured rows of one series setting (one phase, batch size, width and
    device) for both models. Between the last shared length where `model` is not cheaper and the
    first where it is, the crossover is interpolated linearly in log-log space. Returns
    BELOW_RANGE when `model` is already cheaper at the smallest shared length, and None when it is
    never cheaper or the two models share no length with a positive value.
    """
    settings = [column for column in SERIES_COLUMNS if column != "model" and column in frame]
    mixed = [column for column in settings if frame[column].nunique() > 1]
    if mixed:
        raise ConvbenchError(
            f"crossover_length needs one phase, batch size, width and device; the frame mixes "
            f"several values of {', '.join(mixed)}; filter it first"
        )

    def costs_of(name: str) -> pd.Series:
        rows = frame[frame["model"] == name]
        values = pd.to_numeric(rows[metric], errors="coerce")
        values.index = rows["seq_len"].astype(int)
        values = values[np.isfinite(values) & (values > 0)]
        return values.groupby(level=0).mean()

    ours = costs_of(model)
    theirs = costs_of(reference)
    shared = sorted(set(ours.index) & set(theirs.index))
    if not shared:
        return None

    log_lengths = np.log(np.asarray(shared, dtype=float))
    gap = np.log(ours.loc[shared].to_numpy()) - np.log(theirs.loc[shared].to_numpy())
    cheaper = np.flatnonzero(gap < 0)
    if cheaper.size == 0:
        return None
    first = int(cheaper[0])
    if first == 0:
        return BELOW_RANGE
    # gap[first - 1] >= 0 > gap[first]: the zero of the line through both lies in between.
    weight = gap[first - 1] / (gap[first - 1] - gap[first])
    log_length = log_lengths[first - 1] + weight * (log_lengths[first] - log_lengths[first - 1])
    return float(math.exp(log_length))


def crossovers(frame: pd.DataFrame, metrics: Sequence[str] = FIT_METRICS, *,
               model: str = "convrec", reference: str = "sasrec") -> pd.DataFrame:
    """Tabulate crossover_length for every setting and metric of the measured rows of `frame`."""
    measured = frame[frame["status"] == "measured"]
    settings = [column for column in SERIES_COLUMNS if column != "model"]
    columns = [*settings, "metric", "crossover"]
    names = set(measured["model"]) if "model" in measured else set()
    if not {model, reference} <= names:
        return pd.DataFrame(columns=columns)

    rows = []
    for key, group in measured.groupby(settings, sort=True):
        for metric in metrics:
            if metric not in group.columns:
                continue
            found = crossover_length(group, metric, model=model, reference=reference)
            rows.append([*key, metric, found])
    return pd.DataFrame(rows, columns=columns)
