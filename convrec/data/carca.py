"""Loader for the preprocessed Amazon files published with CARCA.

CARCA (Rashed, Elsayed, Schmidt-Thieme, "CARCA: Context and Attribute-Aware Next-Item
Recommendation via Cross-Attention", RecSys 2022) ships its Amazon datasets (Beauty, Fashion, Men,
Video_Games) as files in one folder. The layout below was read from the authors' repository
github.com/ahmedrashed-ml/CARCA: `RawData/DataProcessing.py` writes the files and `CARCA.py` reads
them.

- `<Name>_cxt.txt`: one interaction per line, `user item timestamp`, separated by single spaces
  and written as `'%d %d %s\\n'`. Users and items are numbered from 1 in order of first
  appearance. Lines are grouped by user, and each user's lines are sorted by the Unix review time
  in seconds. `<Name>.txt` contains the same lines without the time.
- Item attributes, a pickled 2-D numpy array (items, F) whose row k belongs to item k + 1 (the
  authors stack a zero row on top for padding after loading): `Beauty_feat_cat.dat` (category,
  price and brand one-hot columns), `Men_imgs.dat` and `Fashion_imgs.dat` (image features), and
  `Video_Games_feat.dat`. They are looked for in that suffix order: `_feat_cat`, `_imgs`, `_feat`.
- Interaction context, a pickled dict `CXTDictSasRec_<Name>.dat` (`CXTDictSasRec_Games.dat` for
  Video_Games) mapping the tuple `(user, item)` of ints to six numbers: year (min-max scaled over
  the dataset), month / 12, day of month / 31, day of week / 7, day of year / 365 and week of
  year / 4, computed from the review time.

Both pickles are read with `convrec.data.safe_pickle.load_restricted`, which admits only
containers and numpy types.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd

from convrec.data.context import CONTEXT_NAMES
from convrec.data.safe_pickle import load_restricted
from convrec.data.sasrec_text import read_whitespace_table
from convrec.data.schema import RawDataset
from convrec.data.tabular import check_timestamp_range
from convrec.errors import DataError

logger = logging.getLogger(__name__)

INTERACTIONS_SUFFIX = "_cxt.txt"
CARCA_COLUMNS = ("user", "item", "timestamp")
ATTRIBUTE_SUFFIXES = ("_feat_cat.dat", "_imgs.dat", "_feat.dat")
# The authors' six context values come in the order of the derived calendar context, so they
# share its names (and its time-gap columns year, month and day).
CARCA_CONTEXT_NAMES = CONTEXT_NAMES


def load_carca(directory: Path, *, name: str | None = None) -> RawDataset:
    """Load one CARCA Amazon dataset from `directory` (or from its `<Name>_cxt.txt` file).

    `name` picks the dataset (`Beauty`, `Men`, ...) when the folder contains several. Context comes
    from the context pickle when present, aligned row for row with the interactions; otherwise it
    is left to be derived from the timestamps.

    NOTE: the authors key context by `(user, item)`, so a user who interacts with an item twice
    gets one context for both interactions. This loader keeps that, and counts such pairs in
    the notes.
    NOTE: the pickled context is kept as published, so that the models see what the authors'
    models saw. Its scaling differs from `convrec.data.context` (month / 12 rather than
    (month - 1) / 11, and so on), and its week of year is divided by 4, so it reaches about 13.
    """
    interactions_path = _find_interactions_file(Path(directory), name)
    folder = interactions_path.parent
    name = interactions_path.name.removesuffix(INTERACTIONS_SUFFIX)
    notes: list[str] = []

    interactions = _read_interactions(interactions_path)
    logger.info("read %d interactions from %s", len(interactions), interactions_path)

    attributes_path = _first_existing(folder, [name + suffix for suffix in ATTRIBUTE_SUFFIXES])
    item_attributes = None
    if attributes_path is None:
        notes.append(f"no item attribute file ({', '.join(name + s for s in ATTRIBUTE_SUFFIXES)})")
    else:
        largest_item = int(interactions["item"].astype(np.int64).max())
        item_attributes = _read_item_attributes(attributes_path, largest_item)
        notes.append(f"item attributes from {attributes_path.name}")

    context_path = _first_existing(folder, _context_file_names(name))
    context = None
    if context_path is None:
        notes.append(f"no context file ({' or '.join(_context_file_names(name))}): "
                     "context is derived from the timestamps")
    else:
        context, shared = _read_context(context_path, interactions, interactions_path)
        notes.append(f"context from {context_path.name}")
        if shared:
            notes.append(f"{shared} interactions repeat an earlier (user, item) pair and share "
                         "its context, as in the authors' files")

    return RawDataset(
        name=name,
        source=str(interactions_path),
        interactions=interactions,
        item_attributes=item_attributes,
        context=context,
        has_calendar_time=True,
        notes=notes,
    )


def _find_interactions_file(location: Path, name: str | None) -> Path:
    if location.is_file():
        if not location.name.endswith(INTERACTIONS_SUFFIX):
            raise DataError(f"expected a file named <Name>{INTERACTIONS_SUFFIX}", path=location)
        return location
    if not location.is_dir():
        raise DataError("folder not found", path=location)

    if name is not None:
        path = location / f"{name}{INTERACTIONS_SUFFIX}"
        if not path.is_file():
            raise DataError(f"no {path.name} in this folder", path=location)
        return path

    found = sorted(location.glob(f"*{INTERACTIONS_SUFFIX}"))
    if not found:
        raise DataError(f"no <Name>{INTERACTIONS_SUFFIX} file in this folder", path=location)
    if len(found) > 1:
        names = ", ".join(path.name.removesuffix(INTERACTIONS_SUFFIX) for path in found)
        raise DataError(f"several CARCA datasets in this folder ({names}); pass the name of one",
                        path=location)
    return found[0]


def _context_file_names(name: str) -> list[str]:
    names = [f"CXTDictSasRec_{name}.dat"]
    # The authors name the Video_Games context file after "Games".
    if name.startswith("Video_"):
        names.append(f"CXTDictSasRec_{name.removeprefix('Video_')}.dat")
    return names


def _first_existing(folder: Path, names: list[str]) -> Path | None:
    for file_name in names:
        if (folder / file_name).is_file():
            return folder / file_name
    return None


def _parse_integers(values: np.ndarray, field: str, path: Path, minimum: int) -> np.ndarray:
    """Parse decimal strings into int64, naming the first line whose value is not one."""
    try:
        parsed = values.astype(np.int64)
    except (ValueError, OverflowError):
        parsed = None
    if parsed is not None and bool((parsed >= minimum).all()):
        return parsed

    for index, value in enumerate(values):
        try:
            number = int(value)
        except ValueError:
            number = None
        if number is None or not minimum <= number < 2**63:
            raise DataError(
                f"{field} {value!r} is not an integer of at least {minimum}; CARCA files number "
                "users and items from 1 and store Unix times in whole seconds",
                path=path,
                line=index + 1,
            )
    return np.array([int(value) for value in values], dtype=np.int64)


def _read_interactions(path: Path) -> pd.DataFrame:
    rows = read_whitespace_table(path, CARCA_COLUMNS)
    if not rows:
        raise DataError("no interactions; expected lines of `user item timestamp`", path=path)

    table = np.array(rows, dtype=object).reshape(len(rows), len(CARCA_COLUMNS))
    users = _parse_integers(table[:, 0], "user id", path, minimum=1)
    items = _parse_integers(table[:, 1], "item id", path, minimum=1)
    timestamps = _parse_integers(table[:, 2], "timestamp", path, minimum=0)

    # Ids are rewritten from their parsed value so that "07" and "7" cannot name two items.
    lines = np.arange(1, len(rows) + 1, dtype=np.int64)
    check_timestamp_range(timestamps, path=path, lines=lines)
    return pd.DataFrame(
        {
            "user": users.astype(str).astype(object),
            "item": items.astype(str).astype(object),
            "timestamp": timestamps,
            "line": lines,
        }
    )


def _read_item_attributes(path: Path, largest_item: int) -> pd.DataFrame:
    loaded = load_restricted(path)
    try:
        array = np.asarray(loaded, dtype=np.float64)
    except (TypeError, ValueError) as error:
        raise DataError(
            f"expected a 2-D numeric array (items, F), found {type(loaded).__name__} that does not "
            f"convert to numbers: {error}",
            path=path,
        ) from error
    if array.ndim != 2:
        raise DataError(f"expected a 2-D array (items, F), found shape {array.shape}", path=path)
    if array.shape[0] < largest_item:
        raise DataError(
            f"has {array.shape[0]} rows but the interactions refer to item {largest_item}; "
            "row k must hold the attributes of item k + 1",
            path=path,
        )

    bad_rows, bad_columns = np.nonzero(~np.isfinite(array))
    if len(bad_rows):
        row, column = int(bad_rows[0]), int(bad_columns[0])
        raise DataError(
            f"{len(bad_rows)} non-finite attribute values, first at row {row} (item {row + 1}), "
            f"column {column}: {array[row, column]}",
            path=path,
        )

    return pd.DataFrame(
        array,
        index=pd.Index([str(row + 1) for row in range(array.shape[0])], name="item"),
        columns=[f"attribute_{column}" for column in range(array.shape[1])],
    )


def _read_context(path: Path, interactions: pd.DataFrame,
                  interactions_path: Path) -> tuple[pd.DataFrame, int]:
    """Align the `(user, item)` context dict with the interactions and count shared entries."""
    loaded = load_restricted(path)
    if not isinstance(loaded, dict):
        raise DataError(f"expected a dict keyed by (user, item), found {type(loaded).__name__}",
                        path=path)

    users = interactions["user"].astype(np.int64).tolist()
    items = interactions["item"].astype(np.int64).tolist()
    values = [loaded.get(key) for key in zip(users, items, strict=True)]
    try:
        array = np.array(values, dtype=np.float64)
    except (TypeError, ValueError):
        array = None
    if array is None or array.ndim != 2:
        _raise_first_bad_context(path, values, users, items, interactions, interactions_path)

    bad_rows = np.nonzero(~np.isfinite(array).all(axis=1))[0]
    if len(bad_rows):
        row = int(bad_rows[0])
        raise DataError(
            f"non-finite context value for (user {users[row]}, item {items[row]}): "
            f"{array[row].tolist()}",
            path=path,
        )

    width = array.shape[1]
    if width == 0:
        raise DataError("every context vector is empty; expected X > 0 values each", path=path)
    names = CARCA_CONTEXT_NAMES if width == len(CARCA_CONTEXT_NAMES) else tuple(
        f"context_{column}" for column in range(width)
    )
    context = pd.DataFrame(array, columns=list(names))

    shared = int(pd.DataFrame({"user": users, "item": items}).duplicated().sum())
    return context, shared


def _raise_first_bad_context(path: Path, values: list, users: list[int], items: list[int],
                             interactions: pd.DataFrame, interactions_path: Path) -> None:
    """Raise DataError for the first interaction whose context is missing or malformed."""
    lines = interactions["line"].tolist()
    width = None
    for value, user, item, line in zip(values, users, items, lines, strict=True):
        if value is None:
            raise DataError(
                f"no context for (user {user}, item {item}) of {interactions_path.name} line "
                f"{line}; the context file belongs to another version of the dataset",
                path=path,
            )
        try:
            vector = np.asarray(value, dtype=np.float64)
        except (TypeError, ValueError) as error:
            raise DataError(
                f"context of (user {user}, item {item}) is not a vector of numbers: {value!r}",
                path=path,
            ) from error
        if vector.ndim != 1 or (width is not None and len(vector) != width):
            raise DataError(
                f"context of (user {user}, item {item}) has shape {vector.shape}, but earlier "
                f"entries have shape ({width},)",
                path=path,
            )
        width = len(vector)
    raise DataError("context values do not form a (interactions, X) table", path=path)
