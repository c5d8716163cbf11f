"""The one exception family of convbench; the CLI turns it into an exit code without a traceback."""

from __future__ import annotations

from pathlib import Path


class ConvbenchError(Exception):
    """An error the user can fix: bad input, a missing dataset, an invalid option."""

    exit_code = 1


class DataError(ConvbenchError):
    """Invalid input data, located by file and (where known) 1-based line number."""

    exit_code = 2

    def __init__(self, message: str, *, path: str | Path | None = None, line: int | None = None):
        self.path = None if path is None else Path(path)
        self.line = line
        where = ""
        if self.path is not None:
            where = f"{self.path}"
            if line is not None:
                where += f", line {line}"
            where += ": "
        super().__init__(where + message)


class DatasetNotFoundError(ConvbenchError):
    """No copy of a requested dataset could be found or downloaded."""

    exit_code = 3


class TrainingError(ConvbenchError):
    """Training or evaluation produced a non-finite value; no metric is written."""

    exit_code = 4
