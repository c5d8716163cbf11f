"""Loader for a generic interaction table in CSV or Parquet, with named columns.

The interaction table needs a user, an item and a time column; other columns are ignored and
listed in the notes. Timestamps may be integer or float seconds since the Unix epoch (floats are
rounded down to the second), or ISO-8601 date strings, which are converted to seconds in UTC
(strings without an offset are read as UTC). A column must use one kind: a value made only of
digits is always seconds, never a basic-format date such as 20200102.

An optional attribute table has one row per item: an item id column plus numeric attribute
columns. Values may be numbers or, for whole columns, true/false. Missing, non-numeric and
non-finite values are errors.

Line numbers in errors and in the `line` column: in CSV the header is line 1, so data row i
(0-based) is line i + 2. In Parquet, which has no lines, `line` is the 1-based row number.
NOTE: the CSV numbering assumes one row per line. A quoted field that contains a newline shifts
the numbers of every later row.
"""

from __future__ import annotations

import csv
import io
import logging
import re
from pathlib import Path

import numpy as np
import pandas as pd

from convrec.data.context import MAX_TIMESTAMP, MIN_TIMESTAMP
from convrec.data.schema import RawDataset
from convrec.errors import DataError

logger = logging.getLogger(__name__)

CSV_SEPARATORS = {".csv": ",", ".tsv": "\t"}
PARQUET_SUFFIXES = (".parquet", ".pq")
_UTF8_BOM = "\ufeff"
_INTEGER_PATTERN = r"[+-]?\d+"
_EPOCH = pd.Timestamp(0, tz="UTC")


class _Table:
    """A frame read from CSV or Parquet, with the source line of each row."""

    def __init__(self, path: Path, frame: pd.DataFrame, first_line: int):
        self.path = path
        self.frame = frame
        self.lines = np.arange(first_line, first_line + len(frame), dtype=np.int64)

    def column(self, name: str, role: str, parameter: str) -> pd.Series:
        if name not in self.frame.columns:
            found = ", ".join(repr(str(column)) for column in self.frame.columns)
            message = f"missing {role} column {name!r}; found columns: {found}. "
            if len(self.frame.columns) == 1 and re.search(r"[;,\t|]", str(self.frame.columns[0])):
                message += "The header looks like one column: check the separator"
            else:
                # The CLI has no option for column names, so renaming in the file is the fix
                # that works everywhere.
                message += (
                    f"Rename the column that holds the {role}s to {name!r} in the file "
                    f"(from Python, load_tabular({parameter}=...) also accepts another name)"
                )
            raise DataError(message, path=self.path)
        return self.frame[name]

    def fail(self, row: int, message: str) -> DataError:
        return DataError(message, path=self.path, line=int(self.lines[row]))


def load_tabular(path: Path, *, user_column: str = "user_id", item_column: str = "item_id",
                 time_column: str = "timestamp", item_attributes_path: Path | None = None,
                 item_id_column: str = "item_id") -> RawDataset:
    """Load interactions from a CSV or Parquet table, and item attributes from an optional second.

    The file type follows the suffix: `.csv` (comma), `.tsv` (tab), `.parquet` or `.pq`.
    """
    path = Path(path)
    table = _read_table(path)
    if table.frame.empty:
        raise DataError("no interactions; the table has a header but no rows", path=path)

    users = _id_values(table, table.column(user_column, "user", "user_column"), "user id")
    items = _id_values(table, table.column(item_column, "item", "item_column"), "item id")
    timestamps = _timestamp_values(table, table.column(time_column, "time", "time_column"))
    check_timestamp_range(timestamps, path=path, lines=table.lines)
    interactions = pd.DataFrame(
        {"user": users, "item": items, "timestamp": timestamps, "line": table.lines}
    )
    logger.info("read %d interactions from %s", len(interactions), path)

    notes = []
    used = (user_column, item_column, time_column)
    ignored = [str(column) for column in table.frame.columns if column not in used]
    if ignored:
        notes.append(f"ignored columns of {path.name}: {', '.join(ignored)}")

    item_attributes = None
    if item_attributes_path is not None:
        item_attributes = _read_item_attributes(Path(item_attributes_path), item_id_column)
        notes.append(f"item attributes from {Path(item_attributes_path).name}")

    return RawDataset(
        name=path.stem,
        source=str(path),
        interactions=interactions,
        item_attributes=item_attributes,
        context=None,
        has_calendar_time=True,
        notes=notes,
    )


def check_timestamp_range(timestamps: np.ndarray, *, path: Path, lines: np.ndarray) -> None:
    """Raise DataError at the first timestamp that calendar context cannot convert to a date."""
    outside = (timestamps < MIN_TIMESTAMP) | (timestamps > MAX_TIMESTAMP)
    if outside.any():
        row = _first(outside)
        raise DataError(_out_of_range(str(int(timestamps[row]))), path=path, line=int(lines[row]))


def _out_of_range(value_text: str) -> str:
    return (
        f"timestamp {value_text} is out of range; timestamps must be Unix seconds from "
        f"{MIN_TIMESTAMP} to {MAX_TIMESTAMP} (the years 1677 to 2262), so convert milliseconds "
        "or nanoseconds to seconds"
    )


def _read_table(path: Path) -> _Table:
    suffix = path.suffix.lower()
    if suffix in PARQUET_SUFFIXES:
        return _read_parquet(path)
    if suffix in CSV_SEPARATORS:
        return _read_csv(path, CSV_SEPARATORS[suffix])
    supported = ", ".join([*CSV_SEPARATORS, *PARQUET_SUFFIXES])
    raise DataError(f"unsupported file type {path.suffix!r}; expected one of {supported}",
                    path=path)


def _read_bytes(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError as error:
        raise DataError("file not found", path=path) from error
    except OSError as error:
        raise DataError(f"failed to read the file: {error}", path=path) from error


def _read_parquet(path: Path) -> _Table:
    _read_bytes(path)  # for the same not-found message as CSV
    try:
        frame = pd.read_parquet(path)
    except (OSError, ValueError) as error:
        # pyarrow reports a corrupt file as ArrowInvalid, a ValueError.
        raise DataError(f"failed to read as Parquet: {error}", path=path) from error
    # A frame written with a named index (`df.set_index("item_id").to_parquet()`) keeps that
    # column in the index. Moving it back lets callers find it by name.
    named_index = any(name is not None for name in frame.index.names)
    frame = frame.reset_index(drop=not named_index)
    return _Table(path, frame, first_line=1)


def _read_csv(path: Path, separator: str) -> _Table:
    data = _read_bytes(path)
    try:
        text = data.decode("utf-8").removeprefix(_UTF8_BOM)
    except UnicodeDecodeError as error:
        line = data.count(b"\n", 0, error.start) + 1
        raise DataError(
            f"undecodable bytes {data[error.start:error.end]!r} (not UTF-8); "
            "save the file as UTF-8",
            path=path,
            line=line,
        ) from error
    if not text.strip():
        raise DataError("empty file; expected a header line with column names", path=path)

    header = next(csv.reader([text.split("\n", 1)[0].rstrip("\r")], delimiter=separator))
    seen: set[str] = set()
    for name in header:
        if name in seen:
            raise DataError(f"duplicate column name {name!r} in the header", path=path, line=1)
        seen.add(name)

    try:
        # Everything is read as text, so ids keep leading zeros and "NA" stays an id. Blank
        # lines are kept as rows, so row i stays line i + 2.
        frame = pd.read_csv(io.StringIO(text), sep=separator, dtype=str, keep_default_na=False,
                            skip_blank_lines=False)
    except pd.errors.ParserError as error:
        found = re.search(r"line (\d+)", str(error))
        line = int(found.group(1)) if found else None
        raise DataError(f"malformed row: {error}", path=path, line=line) from error

    table = _Table(path, frame, first_line=2)
    blank = (frame == "").all(axis=1).to_numpy()
    if len(frame.columns) > 1 and blank.any():
        raise table.fail(int(np.argmax(blank)), "blank line; remove it")
    return table


def _first(mask: np.ndarray) -> int:
    return int(np.argmax(mask))


def _show(value: object) -> str:
    """Quote text values and print numbers plainly (numpy 2 reprs read `np.float64(nan)`)."""
    return repr(value) if isinstance(value, str) else str(value)


def _id_values(table: _Table, series: pd.Series, field: str) -> np.ndarray:
    """Convert an id column to strings; integral floats (from Parquet) lose their `.0`."""
    if pd.api.types.is_bool_dtype(series.dtype):
        raise table.fail(0, f"{field} column {series.name!r} contains booleans; expected ids")
    if pd.api.types.is_integer_dtype(series.dtype):
        return series.astype(np.int64).astype(str).to_numpy(dtype=object)
    if pd.api.types.is_float_dtype(series.dtype):
        values = series.to_numpy(dtype=np.float64)
        invalid = ~np.isfinite(values) | (values != np.round(values))
        if invalid.any():
            row = _first(invalid)
            raise table.fail(row, f"{field} {values[row]} in column {series.name!r} is not "
                                  "an integer or a string")
        return values.astype(np.int64).astype(str).astype(object)

    text = series.astype(str).str.strip().to_numpy(dtype=object)
    missing = series.isna().to_numpy() | (text == "")
    if missing.any():
        raise table.fail(_first(missing), f"missing {field} in column {series.name!r}")
    return text


def _timestamp_values(table: _Table, series: pd.Series) -> np.ndarray:
    """Convert a time column to int64 seconds since the epoch (UTC), rounding down."""
    column = series.name
    if isinstance(series.dtype, pd.DatetimeTZDtype) or pd.api.types.is_datetime64_dtype(
        series.dtype
    ):
        dates = series if isinstance(series.dtype, pd.DatetimeTZDtype) else (
            series.dt.tz_localize("UTC")
        )
        missing = dates.isna().to_numpy()
        if missing.any():
            raise table.fail(_first(missing), f"missing timestamp in column {column!r}")
        return _seconds(dates)
    if pd.api.types.is_bool_dtype(series.dtype):
        raise table.fail(0, f"time column {column!r} contains booleans; expected timestamps")
    if pd.api.types.is_integer_dtype(series.dtype):
        return series.to_numpy(dtype=np.int64)
    if pd.api.types.is_float_dtype(series.dtype):
        return _floor_seconds(table, series.to_numpy(dtype=np.float64), series)
    return _parse_time_strings(table, series)


def _seconds(dates: pd.Series) -> np.ndarray:
    return ((dates - _EPOCH) // pd.Timedelta(seconds=1)).to_numpy(dtype=np.int64)


def _floor_seconds(table: _Table, values: np.ndarray, original: pd.Series) -> np.ndarray:
    finite = np.isfinite(values)
    if not finite.all():
        row = _first(~finite)
        raise table.fail(row, f"timestamp {_show(original.iloc[row])} in column "
                              f"{original.name!r} is not a finite number of seconds")
    # Checked here, before the cast to int64 can overflow; check_timestamp_range repeats it.
    outside = (values < MIN_TIMESTAMP) | (values > MAX_TIMESTAMP)
    if outside.any():
        row = _first(outside)
        raise table.fail(row, _out_of_range(str(original.iloc[row])))
    return np.floor(values).astype(np.int64)


def _parse_time_strings(table: _Table, series: pd.Series) -> np.ndarray:
    column = series.name
    text = series.astype(str).str.strip().where(series.notna(), "")
    missing = (text == "").to_numpy()
    if missing.any():
        raise table.fail(_first(missing), f"missing timestamp in column {column!r}")

    integral = text.str.fullmatch(_INTEGER_PATTERN).to_numpy(dtype=bool)
    if integral.all():
        numbers = [int(value) for value in text]
        outside = np.array([not MIN_TIMESTAMP <= number <= MAX_TIMESTAMP for number in numbers])
        if outside.any():
            row = _first(outside)
            raise table.fail(row, _out_of_range(text.iloc[row]))
        return np.array(numbers, dtype=np.int64)

    numbers = pd.to_numeric(text, errors="coerce").to_numpy(dtype=np.float64)
    numeric = np.isfinite(numbers)
    if numeric.all():
        return _floor_seconds(table, numbers, text)

    dates = pd.to_datetime(text.where(~numeric), format="ISO8601", utc=True, errors="coerce")
    dated = dates.notna().to_numpy()
    invalid = ~(numeric | dated)
    if invalid.any():
        row = _first(invalid)
        raise table.fail(
            row,
            f"timestamp {text.iloc[row]!r} in column {column!r} is neither a number of seconds "
            "nor an ISO-8601 date",
        )
    if numeric.any():
        number_row, date_row = _first(numeric), _first(dated)
        raise table.fail(
            number_row,
            f"timestamp {text.iloc[number_row]!r} in column {column!r} is a number, but line "
            f"{table.lines[date_row]} has the date {text.iloc[date_row]!r}; "
            "use one kind per column",
        )
    return _seconds(dates)


def _read_item_attributes(path: Path, id_column: str) -> pd.DataFrame:
    """Read one row of numeric attributes per item, indexed by the item id string."""
    table = _read_table(path)
    ids = _id_values(table, table.column(id_column, "item id", "item_id_column"), "item id")

    duplicated = pd.Series(ids).duplicated().to_numpy()
    if duplicated.any():
        row = _first(duplicated)
        earlier = _first(ids == ids[row])
        raise table.fail(row, f"item {ids[row]!r} already has attributes on line "
                              f"{table.lines[earlier]}; keep one row per item")

    names = [column for column in table.frame.columns if column != id_column]
    if not names:
        raise DataError(f"no attribute columns besides {id_column!r}", path=path)
    columns = {str(name): _attribute_values(table, table.frame[name]) for name in names}

    index = pd.Index(ids, name="item", dtype=object)
    return pd.DataFrame(columns, index=index, dtype=np.float64)


def _attribute_values(table: _Table, series: pd.Series) -> np.ndarray:
    column = series.name
    if pd.api.types.is_bool_dtype(series.dtype) or pd.api.types.is_numeric_dtype(series.dtype):
        values = series.to_numpy(dtype=np.float64, na_value=np.nan)
    else:
        text = series.astype(str).str.strip().where(series.notna(), "")
        lowered = text.str.lower()
        if lowered.isin(["true", "false"]).all():
            return (lowered == "true").to_numpy(dtype=np.float64)

        missing = (text == "").to_numpy()
        if missing.any():
            raise table.fail(_first(missing), f"missing value in attribute column {column!r}")
        values = pd.to_numeric(text, errors="coerce").to_numpy(dtype=np.float64)
        not_numbers = np.isnan(values) & ~lowered.isin(["nan"]).to_numpy()
        if not_numbers.any():
            row = _first(not_numbers)
            raise table.fail(row, f"attribute {text.iloc[row]!r} in column {column!r} is not a "
                                  "number; encode it as numbers or drop the column")

    invalid = ~np.isfinite(values)
    if invalid.any():
        row = _first(invalid)
        raise table.fail(row, f"non-finite attribute {_show(series.iloc[row])} in column "
                              f"{column!r}")
    return values
