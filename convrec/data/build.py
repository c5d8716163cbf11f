"""Turn what a format loader read (RawDataset) into a re-indexed, validated InteractionData.

Re-indexing: users and items are numbered 1..U and 1..N in order of first appearance in the
interaction file. Index 0 stays free for padding whatever the original ids are, so an original
item id "0" gets a nonzero index like any other. Each user's interactions are sorted by
timestamp with a stable sort, so that interactions with equal timestamps keep their file order.

Nothing is dropped silently. Every check below adds a FilterCount, even when it hits nothing, so
that the dataset summary shows what was checked:
- duplicate (user, item, timestamp) rows are counted and kept;
- users with fewer than 3 interactions are counted and kept (the split puts them in training only);
- items without an attribute row get a zero vector, are counted and logged as a warning;
- attribute rows of items that never occur in the interactions are counted and dropped.
"""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd

from convrec.data.context import (
    CONTEXT_NAMES,
    GAP_COLUMNS,
    GAP_NAMES,
    MAX_TIMESTAMP,
    MIN_TIMESTAMP,
    timestamp_context,
)
from convrec.data.schema import FilterCount, InteractionData, RawDataset
from convrec.errors import DataError

logger = logging.getLogger(__name__)

# FilterCount names that summary.py looks up.
DUPLICATES = "duplicate (user, item, timestamp) rows"
SHORT_USERS = "users with fewer than 3 interactions"
ITEMS_WITHOUT_ATTRIBUTES = "items without attributes"
UNUSED_ATTRIBUTE_ROWS = "attribute rows of items without interactions"
MIN_SPLIT_LENGTH = 3  # a validation and a test item need at least one training item before them
REQUIRED_COLUMNS = ("user", "item", "timestamp", "line")


def build_dataset(raw: RawDataset) -> InteractionData:
    """Re-index, sort and validate a RawDataset; raise DataError naming the row or item at fault."""
    frame = _checked_interactions(raw)
    filters = list(raw.filters)

    # Re-index in order of first appearance; factorize codes start at 0, so shift by one.
    user_codes, user_ids = pd.factorize(frame["user"], sort=False)
    item_codes, item_ids = pd.factorize(frame["item"], sort=False)
    users = user_codes.astype(np.int64) + 1
    items = item_codes.astype(np.int64) + 1
    timestamps = frame["timestamp"].to_numpy(dtype=np.int64)
    num_users, num_items = len(user_ids), len(item_ids)

    context, context_names, gap_columns = _context(raw, timestamps)

    # Two stable passes give a (user, timestamp) order in which ties keep file order.
    order = np.argsort(timestamps, kind="stable")
    order = order[np.argsort(users[order], kind="stable")]
    lengths = np.bincount(users, minlength=num_users + 1)
    bounds = np.cumsum(lengths)[:-1]
    sequences = np.split(items[order], bounds)
    user_timestamps = np.split(timestamps[order], bounds)
    contexts = np.split(context[order], bounds)

    duplicates = int(frame.duplicated(subset=["user", "item", "timestamp"]).sum())
    filters.append(FilterCount(
        DUPLICATES, duplicates, "kept: each duplicate stays in the sequence as its own interaction"
    ))
    short_users = int(np.count_nonzero(lengths[1:] < MIN_SPLIT_LENGTH))
    filters.append(FilterCount(
        SHORT_USERS, short_users, "kept: the split puts them in training only"
    ))

    item_index = np.concatenate([[""], np.asarray(item_ids, dtype=str)])
    attributes, attribute_names, attribute_filters = _attribute_matrix(raw, item_index)
    filters.extend(attribute_filters)

    logger.info(
        "built %s: %d users, %d items, %d interactions, F=%d, X=%d",
        raw.name, num_users, num_items, len(frame), attributes.shape[1], len(context_names),
    )
    return InteractionData(
        name=raw.name,
        user_ids=np.concatenate([[""], np.asarray(user_ids, dtype=str)]),
        item_ids=item_index,
        sequences=sequences,
        timestamps=user_timestamps,
        contexts=contexts,
        item_attributes=attributes,
        attribute_names=attribute_names,
        context_names=context_names,
        gap_columns=gap_columns,
        filters=filters,
        notes=list(raw.notes),
    )


def _checked_interactions(raw: RawDataset) -> pd.DataFrame:
    frame = raw.interactions
    missing = [column for column in REQUIRED_COLUMNS if column not in frame.columns]
    if missing:
        raise DataError(
            f"the interactions of {raw.name!r} lack the column(s) {', '.join(missing)}; a loader "
            f"must return {', '.join(REQUIRED_COLUMNS)}",
            path=raw.source,
        )
    if len(frame) == 0:
        raise DataError("no interactions found", path=raw.source)

    frame = frame[list(REQUIRED_COLUMNS)].copy()
    for column in ("user", "item"):
        frame[column] = frame[column].astype("str")
        empty = np.flatnonzero((frame[column] == "").to_numpy())
        if empty.size:
            line = int(frame["line"].iloc[empty[0]])
            raise DataError(
                f"{column} id is empty; every row needs an id", path=raw.source, line=line
            )
    frame["timestamp"] = _checked_timestamps(raw, frame)
    return frame


def _checked_timestamps(raw: RawDataset, frame: pd.DataFrame) -> np.ndarray:
    """Return the timestamps as int64, raising DataError at the first one that cannot be used."""
    numbers = pd.to_numeric(frame["timestamp"], errors="coerce").to_numpy(dtype=np.float64)
    finite = np.isfinite(numbers)
    # Calendar context needs dates that pandas can represent. An order index only has to fit
    # int64, with a margin for float rounding.
    if raw.has_calendar_time and raw.context is None:
        low, high = MIN_TIMESTAMP, MAX_TIMESTAMP
        allowed = f"Unix seconds from {low} to {high} (the years 1677 to 2262)"
    else:
        low, high = -(2**62), 2**62
        allowed = "integers from -2**62 to 2**62"
    outside = finite & ((numbers < low) | (numbers > high))

    rows = np.flatnonzero(~finite | outside)
    if rows.size:
        row = rows[0]
        value = frame["timestamp"].iloc[row]
        value = value.item() if isinstance(value, np.generic) else value
        problem = "is out of range" if finite[row] else "is not a finite number"
        raise DataError(
            f"timestamp {value!r} {problem}; timestamps must be {allowed}",
            path=raw.source,
            line=int(frame["line"].iloc[row]),
        )
    column = frame["timestamp"]
    if pd.api.types.is_integer_dtype(column.dtype):
        return column.to_numpy(dtype=np.int64)
    return np.floor(numbers).astype(np.int64)


def _context(
    raw: RawDataset, timestamps: np.ndarray
) -> tuple[np.ndarray, tuple[str, ...], tuple[int, ...]]:
    """Return the (rows, X) float32 context in file order, its names and the gap columns."""
    if raw.context is not None:
        return _given_context(raw)
    if not raw.has_calendar_time:
        return np.zeros((len(timestamps), 0), dtype=np.float32), (), ()
    return timestamp_context(timestamps), CONTEXT_NAMES, GAP_COLUMNS


def _given_context(raw: RawDataset) -> tuple[np.ndarray, tuple[str, ...], tuple[int, ...]]:
    context = raw.context
    if len(context) != len(raw.interactions):
        raise DataError(
            f"the context has {len(context)} rows but there are {len(raw.interactions)} "
            "interactions; a loader must give one context row per interaction",
            path=raw.source,
        )
    names = tuple(str(name) for name in context.columns)
    try:
        values = context.to_numpy(dtype=np.float64)
    except (TypeError, ValueError) as error:
        raise DataError(f"the context columns must be numeric: {error}", path=raw.source) from None
    invalid = ~np.isfinite(values)
    if invalid.any():
        row, column = np.argwhere(invalid)[0]
        raise DataError(
            f"context {names[column]!r} is {values[row, column]}; context values must be finite "
            f"({int(invalid.sum())} non-finite values in all)",
            path=raw.source,
            line=int(raw.interactions["line"].iloc[row]),
        )
    # Time gaps need the year, month and day columns; a context without them has no gaps.
    gap_columns: tuple[int, ...] = ()
    if set(GAP_NAMES) <= set(names):
        gap_columns = tuple(names.index(name) for name in GAP_NAMES)
    return values.astype(np.float32), names, gap_columns


def _attribute_matrix(
    raw: RawDataset, item_index: np.ndarray
) -> tuple[np.ndarray, tuple[str, ...], list[FilterCount]]:
    """Return the (N + 1, F) float32 attributes with row 0 zero, their names and the filters."""
    num_rows = len(item_index)
    table = raw.item_attributes
    if table is None:
        return np.zeros((num_rows, 0), dtype=np.float32), (), []

    names = tuple(str(name) for name in table.columns)
    attribute_items = table.index.astype("str")
    repeated = attribute_items[attribute_items.duplicated()]
    if len(repeated):
        raise DataError(
            f"item {repeated[0]!r} has more than one attribute row in {raw.name!r}; keep one"
        )
    try:
        values = table.to_numpy(dtype=np.float64)
    except (TypeError, ValueError) as error:
        raise DataError(
            f"the item attributes of {raw.name!r} must be numeric: {error}"
        ) from None

    # Every row is checked, including rows of items dropped below, so that a broken attribute file
    # fails the same way whatever the interactions contain.
    invalid = ~np.isfinite(values)
    if invalid.any():
        row, column = np.argwhere(invalid)[0]
        # The loaders that read an attribute file check it with line numbers. This check covers
        # loaders that do not, so it can only name the dataset's source.
        raise DataError(
            f"item {attribute_items[row]!r} has attribute {names[column]!r} = "
            f"{values[row, column]}; attributes must be finite numbers ({int(invalid.sum())} "
            f"non-finite values in the item attributes of {raw.name!r}); fix or remove them in "
            "the attribute file",
            path=raw.source,
        )

    positions = pd.Index(attribute_items).get_indexer(item_index[1:])
    matrix = np.zeros((num_rows, len(names)), dtype=np.float32)
    found = positions >= 0
    matrix[1:][found] = values[positions[found]]

    without = item_index[1:][~found]
    if len(without):
        examples = ", ".join(repr(str(item)) for item in without[:5])
        logger.warning(
            "%d of %d items in %s have no attributes and get a zero vector, e.g. %s",
            len(without), num_rows - 1, raw.name, examples,
        )
    unused = len(attribute_items) - int(found.sum())
    filters = [
        FilterCount(ITEMS_WITHOUT_ATTRIBUTES, int(len(without)), "given an all-zero vector"),
        FilterCount(UNUSED_ATTRIBUTE_ROWS, unused, "dropped: no interaction has these items"),
    ]
    return matrix, names, filters
