"""Loader for SASRec-style text files: one `user item` pair per line, in time order per user.

This is the format of the data files that ship with SASRec (Kang and McAuley, ICDM 2018) and
that CARCA reads as `<Name>.txt`: two whitespace-separated ids per line and nothing else, with no
header, no timestamps and no item attributes. Each user's lines are in time order, so the position
of a line in the file serves as its time.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd

from convrec.data.schema import RawDataset
from convrec.errors import DataError

logger = logging.getLogger(__name__)

SASREC_COLUMNS = ("user", "item")
_UTF8_BOM = b"\xef\xbb\xbf"


def read_whitespace_table(path: Path, columns: tuple[str, ...]) -> list[list[str]]:
    """Read a headerless text file with exactly `len(columns)` whitespace-separated fields a line.

    Returns one list of fields per line; line n of the file is entry n - 1. A final newline is
    optional, and `\\r\\n` line ends are accepted. Raises DataError with the line number for
    undecodable bytes, a blank line or a wrong number of fields.
    """
    try:
        data = path.read_bytes()
    except FileNotFoundError as error:
        raise DataError("file not found", path=path) from error
    except OSError as error:
        raise DataError(f"failed to read the file: {error}", path=path) from error

    data = data.removeprefix(_UTF8_BOM)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as error:
        line = data.count(b"\n", 0, error.start) + 1
        raise DataError(
            f"undecodable bytes {data[error.start:error.end]!r} (not UTF-8); "
            "save the file as UTF-8",
            path=path,
            line=line,
        ) from error

    lines = text.split("\n")
    if lines[-1] == "":
        lines.pop()
    rows = [line.split() for line in lines]

    expected = len(columns)
    for number, fields in enumerate(rows, start=1):
        if len(fields) == expected:
            continue
        layout = " ".join(columns)
        if not fields:
            raise DataError(f"blank line; every line must be `{layout}`", path=path, line=number)
        raise DataError(
            f"expected {expected} whitespace-separated fields ({layout}), found {len(fields)}: "
            f"{lines[number - 1].strip()!r}",
            path=path,
            line=number,
        )
    return rows


def load_sasrec_text(path: Path) -> RawDataset:
    """Load a SASRec-style `user item` file.

    The timestamp of each interaction is its 0-based position in the file, a monotone order index
    rather than a time, so `has_calendar_time` is False and there are no item attributes. Ids
    must be positive integers; any other id raises DataError with its line.
    """
    path = Path(path)
    rows = read_whitespace_table(path, SASREC_COLUMNS)
    if not rows:
        raise DataError("no interactions; expected lines of `user item`", path=path)

    table = np.array(rows, dtype=object).reshape(len(rows), len(SASREC_COLUMNS))
    users, items = _positive_ids(table, path)
    interactions = pd.DataFrame(
        {
            "user": users,
            "item": items,
            "timestamp": np.arange(len(rows), dtype=np.int64),
            "line": np.arange(1, len(rows) + 1, dtype=np.int64),
        }
    )
    logger.info("read %d interactions from %s", len(interactions), path)

    return RawDataset(
        name=path.stem,
        source=str(path),
        interactions=interactions,
        item_attributes=None,
        context=None,
        has_calendar_time=False,
        notes=["SASRec text has no timestamps: the timestamp is the line's position in the file"],
    )


def _positive_ids(table: np.ndarray, path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Check that every id is a positive integer and return the user and item ids in plain form.

    SASRec's reader (data_partition in kang205/SASRec util.py) converts both fields with int(),
    so "007" and "7" are the same id and leading zeros are dropped here. Only ASCII digits are
    accepted, because int() also reads digits of other scripts.
    """
    columns = [pd.Series(table[:, index], dtype=object) for index in range(len(SASREC_COLUMNS))]
    invalid = np.stack(
        [~column.str.fullmatch(r"0*[1-9][0-9]*").to_numpy(dtype=bool) for column in columns],
        axis=1,
    )
    if invalid.any():
        # The first bad line, and on that line the first bad field.
        row, field = (int(index) for index in np.argwhere(invalid)[0])
        raise DataError(
            f"{SASREC_COLUMNS[field]} id {table[row, field]!r} is not a positive integer; SASRec "
            "text files hold two positive integer ids per line (`user item`)",
            path=path,
            line=row + 1,
        )
    users, items = (column.str.lstrip("0").to_numpy(dtype=object) for column in columns)
    return users, items
