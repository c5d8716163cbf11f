"""RecBole atomic files (`.inter`, `.item`) and the line-checked text parsing the loaders share.

A RecBole atomic file is UTF-8, tab-separated, with one header line of `name:type` fields, for
example `user_id:token	item_id:token	rating:float	timestamp:float`. The types are `token`,
`token_seq` (space-separated tokens), `float` and `float_seq`. The types are those of
recbole.utils.enum_type.FeatureType, and the separators those of
recbole/properties/dataset/ml-100k.yaml (RecBole 1.2.1).

Every check runs on whole columns first. Only when a check fails is the first offending line
looked up, so that a 1M-row file costs a few vectorised passes and errors still name the line.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from convrec.data.context import MAX_TIMESTAMP, MIN_TIMESTAMP
from convrec.data.schema import FilterCount, RawDataset
from convrec.errors import DataError

logger = logging.getLogger(__name__)

ATOMIC_TYPES = ("token", "token_seq", "float", "float_seq")
USER_FIELD = "user_id"
ITEM_FIELD = "item_id"
TIME_FIELD = "timestamp"
# `.item` fields read as multi-hot categories and as a release year. Other token fields (titles,
# brands) would need a vocabulary per dataset, so they are skipped and listed in the notes.
CATEGORY_FIELDS = ("class", "genre", "genres", "categories", "category")
YEAR_FIELDS = ("release_year", "year")
UTF8_FIX = "convert the file to UTF-8 (e.g. iconv -f latin1 -t utf-8)"


# ---------------------------------------------------------------------------------------------
# Text parsing shared with the MovieLens loaders
# ---------------------------------------------------------------------------------------------


def read_text(path: Path, encoding: str) -> str:
    """Read a whole file, raising DataError at the first undecodable byte with its line."""
    data = path.read_bytes()
    try:
        return data.decode(encoding)
    except UnicodeDecodeError as error:
        line = data.count(b"\n", 0, error.start) + 1
        found = data[error.start:error.end]
        is_utf8 = encoding.lower().startswith("utf-8")
        label = "UTF-8" if is_utf8 else encoding
        fix = UTF8_FIX if is_utf8 else f"re-encode the file as {encoding}"
        raise DataError(
            f"invalid {label} byte(s) {found!r} at byte offset {error.start}; {fix}",
            path=path,
            line=line,
        ) from None


def split_lines(text: str) -> list[str]:
    """Split text into lines on '\\n' only, so that line numbers match what an editor shows.

    Windows line endings are accepted. One final newline does not make an extra empty line.
    """
    if "\r" in text:
        text = text.replace("\r\n", "\n")
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return lines


def first_true(mask: np.ndarray) -> int:
    """Return the index of the first True entry of a boolean array, or -1 when there is none."""
    hits = np.flatnonzero(mask)
    return int(hits[0]) if hits.size else -1


def check_field_counts(
    lines: Sequence[str],
    separator: str,
    width: int,
    *,
    path: Path,
    first_line: int,
    hint: str,
) -> None:
    """Raise DataError at the first line that does not split into `width` fields.

    `first_line` is the 1-based line number of `lines[0]`; `hint` ends the message and should
    name the format's separator.
    """
    if not lines:
        return
    # pyarrow counts a literal substring in C; pandas' str.count runs a regex per line.
    counts = pc.count_substring(pa.array(lines, type=pa.large_string()), separator).to_numpy()
    bad = first_true(counts != width - 1)
    if bad < 0:
        return
    text = lines[bad]
    if text == "":
        found = "an empty line"
    else:
        found = f"{counts[bad] + 1} field(s): {text!r}"
    raise DataError(
        f"expected {width} fields separated by {separator!r}, found {found}; {hint}",
        path=path,
        line=first_line + bad,
    )


def split_fields(lines: Sequence[str], separator: str, width: int) -> np.ndarray:
    """Split lines already checked by check_field_counts into an object array (rows, width)."""
    if not lines:
        return np.empty((0, width), dtype=object)
    body = "\n".join(lines)
    if len(separator) == 1:
        tokens = body.replace("\n", separator).split(separator)
    else:
        # A multi-character separator cannot be joined the same way: "a:" + "::" + "b" would read
        # as "a", ":b". Splitting on either the separator or a newline keeps line boundaries.
        tokens = re.split(f"{re.escape(separator)}|\n", body)
    return np.array(tokens, dtype=object).reshape(len(lines), width)


def check_not_empty(values: np.ndarray, *, field: str, path: Path, first_line: int) -> None:
    """Raise DataError at the first empty value of an id column."""
    bad = first_true(values == "")
    if bad >= 0:
        raise DataError(
            f"{field} is empty; every row needs an id", path=path, line=first_line + bad
        )


def parse_numbers(values: np.ndarray, *, field: str, path: Path, first_line: int) -> np.ndarray:
    """Parse a column of strings as float64, raising DataError at the first unparseable value.

    'nan' and 'inf' parse, as they do in Python, so that callers decide whether they are allowed.
    """
    strings = pd.Series(values, dtype=object).astype("str")
    numbers = pd.to_numeric(strings, errors="coerce").to_numpy(dtype=np.float64)
    literal_nan = strings.str.strip().str.lower().isin(("nan", "+nan", "-nan")).to_numpy()
    bad = first_true(np.isnan(numbers) & ~literal_nan)
    if bad >= 0:
        raise DataError(
            f"{field} {values[bad]!r} is not a number", path=path, line=first_line + bad
        )
    return numbers


def parse_timestamps(values: np.ndarray, *, path: Path, first_line: int) -> np.ndarray:
    """Parse Unix timestamps in seconds to int64, truncating fractional seconds.

    Raises DataError at the first value that is not a finite number, or that lies outside the
    range pandas can turn into a date (years 1677 to 2262).
    """
    numbers = parse_numbers(values, field=TIME_FIELD, path=path, first_line=first_line)
    finite = np.isfinite(numbers)
    bad = first_true(~finite)
    if bad >= 0:
        raise DataError(
            f"timestamp {values[bad]!r} is not a finite number", path=path, line=first_line + bad
        )
    bad = first_true((numbers < MIN_TIMESTAMP) | (numbers > MAX_TIMESTAMP))
    if bad >= 0:
        raise DataError(
            f"timestamp {values[bad]!r} is out of range; timestamps must be Unix seconds from "
            f"{MIN_TIMESTAMP} to {MAX_TIMESTAMP} (the years 1677 to 2262), so divide "
            "milliseconds by 1000",
            path=path,
            line=first_line + bad,
        )
    return np.floor(numbers).astype(np.int64)


def check_unique_ids(ids: np.ndarray, *, field: str, path: Path, first_line: int) -> None:
    """Raise DataError at the second occurrence of a repeated id, naming the first line too."""
    repeated = pd.Series(ids, dtype=object).duplicated(keep="first").to_numpy()
    bad = first_true(repeated)
    if bad >= 0:
        first = first_true(ids == ids[bad])
        raise DataError(
            f"{field} {ids[bad]!r} is repeated (first on line {first_line + first}); "
            "keep one row per id",
            path=path,
            line=first_line + bad,
        )


# ---------------------------------------------------------------------------------------------
# Attribute encoding shared with the MovieLens loaders
# ---------------------------------------------------------------------------------------------


def multi_hot(
    values: np.ndarray,
    separator: str,
    *,
    prefix: str,
    known_order: Sequence[str] = (),
) -> pd.DataFrame:
    """Encode separator-joined tokens as 0/1 columns named `prefix=token`.

    Tokens in `known_order` come first in that order, so that both copies of MovieLens-100K give
    the same columns. Other tokens follow in sorted order. An empty value is an all-zero row.
    """
    dummies = pd.Series(values, dtype=object).astype("str").str.get_dummies(sep=separator)
    dummies = dummies.drop(columns=[""], errors="ignore")
    known = [token for token in known_order if token in dummies.columns]
    extra = sorted(token for token in dummies.columns if token not in set(known_order))
    ordered = dummies[known + extra].astype(np.float64)
    ordered.columns = [f"{prefix}={token}" for token in ordered.columns]
    return ordered


def scale_years(years: np.ndarray) -> np.ndarray:
    """Min-max scale years (float, NaN where missing) into [0, 1], with missing years at 0.

    NOTE: a missing year reads the same as the oldest year. Callers count these items in a
    FilterCount so that the summary shows how many there are.
    """
    known = ~np.isnan(years)
    scaled = np.zeros(len(years), dtype=np.float64)
    if not known.any():
        return scaled
    low = years[known].min()
    span = years[known].max() - low
    if span > 0:
        scaled[known] = (years[known] - low) / span
    return scaled


def missing_year_filter(item_ids: np.ndarray, years: np.ndarray, field: str) -> FilterCount:
    """Describe the items whose year could not be read, naming up to five of them."""
    missing = item_ids[np.isnan(years)]
    shown = ", ".join(repr(str(item)) for item in missing[:5])
    more = f" and {len(missing) - 5} more" if len(missing) > 5 else ""
    examples = f"; items {shown}{more}" if len(missing) else ""
    return FilterCount(
        what=f"items without a {field}",
        count=int(len(missing)),
        reason=f"{field} set to 0, the value of the oldest year{examples}",
    )


# ---------------------------------------------------------------------------------------------
# RecBole atomic files
# ---------------------------------------------------------------------------------------------


def _read_atomic_table(path: Path) -> tuple[list[tuple[str, str]], np.ndarray]:
    """Read one atomic file into its (name, type) header and an object array (rows, fields)."""
    lines = split_lines(read_text(path, "utf-8-sig"))
    if not lines:
        raise DataError("the file is empty; expected a header line of name:type fields", path=path)

    header = lines[0]
    if "\t" not in header:
        for separator in (",", ";", "::", "|", " "):
            if separator in header:
                raise DataError(
                    f"the header {header!r} contains {separator!r} but no tab; RecBole atomic "
                    "files are tab-separated",
                    path=path,
                    line=1,
                )
    fields: list[tuple[str, str]] = []
    for text in header.split("\t"):
        name, colon, kind = text.partition(":")
        if not colon or kind not in ATOMIC_TYPES:
            raise DataError(
                f"header field {text!r} is not name:type with a type in {', '.join(ATOMIC_TYPES)}; "
                f"found the header {header!r}",
                path=path,
                line=1,
            )
        fields.append((name, kind))

    body = lines[1:]
    repeated = first_true(np.array(body, dtype=object) == header)
    if repeated >= 0:
        raise DataError(
            f"the header line is repeated here ({header!r}); remove it (joining atomic files "
            "with cat keeps every file's header)",
            path=path,
            line=repeated + 2,
        )
    check_field_counts(
        body,
        "\t",
        len(fields),
        path=path,
        first_line=2,
        hint=f"RecBole atomic files are tab-separated with the {len(fields)} fields of the header",
    )
    return fields, split_fields(body, "\t", len(fields))


def _column(fields: list[tuple[str, str]], name: str) -> int:
    names = [field_name for field_name, _ in fields]
    return names.index(name) if name in names else -1


def _read_interactions(path: Path) -> tuple[pd.DataFrame, bool, list[str]]:
    fields, table = _read_atomic_table(path)
    notes: list[str] = []
    columns = {name: _column(fields, name) for name in (USER_FIELD, ITEM_FIELD, TIME_FIELD)}
    for name in (USER_FIELD, ITEM_FIELD):
        if columns[name] < 0:
            found = ", ".join(f"{n}:{k}" for n, k in fields)
            raise DataError(
                f"the header has no {name} field (found {found}); rename the column to {name}",
                path=path,
                line=1,
            )

    users = table[:, columns[USER_FIELD]]
    items = table[:, columns[ITEM_FIELD]]
    check_not_empty(users, field=USER_FIELD, path=path, first_line=2)
    check_not_empty(items, field=ITEM_FIELD, path=path, first_line=2)

    if columns[TIME_FIELD] >= 0:
        timestamps = parse_timestamps(table[:, columns[TIME_FIELD]], path=path, first_line=2)
        has_calendar_time = True
    else:
        # Without a time field, file order is the only order there is.
        timestamps = np.arange(len(table), dtype=np.int64)
        has_calendar_time = False
        notes.append(f"{path.name} has no timestamp field; file order is used as time order")

    unused = [name for name, _ in fields if name not in columns]
    if unused:
        notes.append(f"{path.name}: fields not used: {', '.join(unused)}")
    interactions = pd.DataFrame(
        {
            "user": pd.array(users, dtype="str"),
            "item": pd.array(items, dtype="str"),
            "timestamp": timestamps,
            "line": np.arange(2, len(table) + 2, dtype=np.int64),
        }
    )
    return interactions, has_calendar_time, notes


def _read_item_attributes(path: Path) -> tuple[pd.DataFrame, list[FilterCount], list[str]]:
    # Imported here because movielens imports this module's parsing helpers.
    from convrec.data.movielens import ML_100K_GENRES

    fields, table = _read_atomic_table(path)
    item_column = _column(fields, ITEM_FIELD)
    if item_column < 0:
        raise DataError(f"the header has no {ITEM_FIELD} field", path=path, line=1)
    item_ids = table[:, item_column]
    check_not_empty(item_ids, field=ITEM_FIELD, path=path, first_line=2)
    check_unique_ids(item_ids, field=ITEM_FIELD, path=path, first_line=2)

    # Columns go in the order categories, float fields, years, whatever the file's field order,
    # so that ML-100K from RecBole lists its attributes like ML-100K from u.item.
    categories: list[pd.DataFrame] = []
    numbers: list[pd.DataFrame] = []
    years: list[pd.DataFrame] = []
    filters: list[FilterCount] = []
    skipped: list[str] = []
    for index, (name, kind) in enumerate(fields):
        values = table[:, index]
        if index == item_column:
            continue
        if kind == "token_seq" and name in CATEGORY_FIELDS:
            categories.append(multi_hot(values, " ", prefix=name, known_order=ML_100K_GENRES))
        elif name in YEAR_FIELDS:
            # RecBole's ml-100k.item spells a missing year "unkonwn"; any non-number is missing.
            year = pd.to_numeric(pd.Series(values, dtype=object), errors="coerce")
            year = year.to_numpy(dtype=np.float64)
            _check_finite_attribute(np.isinf(year), values, item_ids, name, path)
            years.append(pd.DataFrame({name: scale_years(year)}))
            filters.append(missing_year_filter(item_ids, year, name))
        elif kind == "float":
            parsed = parse_numbers(values, field=name, path=path, first_line=2)
            _check_finite_attribute(~np.isfinite(parsed), values, item_ids, name, path)
            numbers.append(pd.DataFrame({name: _min_max_scale(parsed)}))
        else:
            skipped.append(f"{name}:{kind}")

    notes = [f"{path.name}: fields not used as attributes: {', '.join(skipped)}"] if skipped else []
    parts = categories + numbers + years
    attributes = pd.concat(parts, axis=1) if parts else pd.DataFrame(index=range(len(table)))
    attributes.index = pd.Index(item_ids.astype(str), name="item")
    return attributes, filters, notes


def _check_finite_attribute(
    invalid: np.ndarray, values: np.ndarray, item_ids: np.ndarray, field: str, path: Path
) -> None:
    """Raise DataError at the first `.item` row flagged in `invalid`, naming its item and value."""
    bad = first_true(invalid)
    if bad < 0:
        return
    raise DataError(
        f"item {item_ids[bad]!r} has attribute {field!r} = {values[bad]!r}, which is not a "
        f"finite number ({int(np.count_nonzero(invalid))} such values in {field!r}); "
        "replace it with a finite number",
        path=path,
        line=2 + bad,
    )


def _min_max_scale(values: np.ndarray) -> np.ndarray:
    """Min-max scale finite values into [0, 1]; a constant column becomes all zeros."""
    if values.size == 0:
        return values.copy()
    low = values.min()
    span = values.max() - low
    if span > 0:
        return (values - low) / span
    return np.zeros_like(values)


def load_atomic(inter_path: Path, item_path: Path | None = None) -> RawDataset:
    """Load a RecBole `.inter` file and, when given, its `.item` file.

    Uses the fields `user_id`, `item_id` and `timestamp` of the `.inter` file; other fields
    (such as `rating`) are ignored, so every row counts as one interaction. From the `.item`
    file, token_seq category fields (`class`, `genre`, ...) become multi-hot attributes, a
    `release_year` or `year` field is min-max scaled with missing years at 0, and float fields
    are min-max scaled. Other fields are skipped and listed in the notes. A float value of nan
    or inf, or an infinite year, raises DataError with the `.item` line.
    """
    inter_path = Path(inter_path)
    interactions, has_calendar_time, notes = _read_interactions(inter_path)
    attributes = None
    filters: list[FilterCount] = []
    if item_path is not None:
        attributes, filters, item_notes = _read_item_attributes(Path(item_path))
        notes.extend(item_notes)
    logger.info(
        "read %d interactions from %s%s",
        len(interactions),
        inter_path,
        "" if item_path is None else f" and {attributes.shape[1]} attributes from {item_path}",
    )
    return RawDataset(
        name=inter_path.stem,
        source=str(inter_path),
        interactions=interactions,
        item_attributes=attributes,
        has_calendar_time=has_calendar_time,
        notes=notes,
        filters=filters,
    )
