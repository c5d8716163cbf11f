"""Interaction context derived from Unix timestamps: six calendar features, each in [0, 1].

The year is min-max scaled over the dataset. Month, day of month, day of week, day of year and
ISO week of year are offsets from their first value divided by the largest offset. All dates are
taken in UTC.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

CONTEXT_NAMES = ("year", "month", "day", "weekday", "day_of_year", "week_of_year")
# Context columns whose differences between consecutive interactions are ConvRec's time gaps.
GAP_NAMES = ("year", "month", "day")
GAP_COLUMNS = tuple(CONTEXT_NAMES.index(name) for name in GAP_NAMES)

# Unix seconds that pandas can convert to a datetime64[ns] date (years 1677 to 2262).
MIN_TIMESTAMP = pd.Timestamp.min.value // 10**9 + 1
MAX_TIMESTAMP = pd.Timestamp.max.value // 10**9


def timestamp_context(timestamps: np.ndarray) -> np.ndarray:
    """Compute the calendar context of Unix timestamps in seconds, float32 (n, 6).

    Columns are CONTEXT_NAMES: (year - min year) / (max year - min year), or 0 when every
    interaction falls in one year; (month - 1) / 11; (day - 1) / 30; weekday / 6 with Monday 0;
    (day of year - 1) / 365; (ISO week - 1) / 52. Timestamps must lie within MIN_TIMESTAMP and
    MAX_TIMESTAMP; the loaders check that and name the line.
    """
    seconds = np.asarray(timestamps, dtype=np.int64)
    dates = pd.DatetimeIndex(pd.to_datetime(seconds, unit="s", utc=True))
    year = dates.year.to_numpy(dtype=np.float64)
    span = year.max() - year.min() if len(year) else 0.0
    scaled_year = (year - year.min()) / span if span > 0 else np.zeros_like(year)

    columns = (
        scaled_year,
        (dates.month.to_numpy(dtype=np.float64) - 1) / 11,
        (dates.day.to_numpy(dtype=np.float64) - 1) / 30,
        dates.day_of_week.to_numpy(dtype=np.float64) / 6,
        (dates.day_of_year.to_numpy(dtype=np.float64) - 1) / 365,
        (dates.isocalendar().week.to_numpy(dtype=np.float64) - 1) / 52,
    )
    context = np.stack(columns, axis=1).astype(np.float32, copy=False)
    return context.reshape(len(dates), len(columns))
