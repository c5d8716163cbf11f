"""Restricted unpickling for dataset files that are published as pickles (the CARCA Amazon files).

`pickle.load` on a downloaded file runs whatever callable the file names, so a data file can
execute code. `load_restricted` resolves every global the pickle refers to through a fixed table
that contains only what plain containers, numpy arrays, numpy dtypes and numpy scalars need, and
rejects every other global before it is imported or called.

The table was checked against numpy 2.4, pickling arrays (C and Fortran order, object and
structured dtypes, 0-d), dtypes and scalars with protocols 0 to 5. Those pickles refer to
`numpy.ndarray`, `numpy.dtype`, `numpy._core.multiarray._reconstruct`,
`numpy._core.multiarray.scalar`, `numpy._core.numeric._frombuffer` (protocol 5) and
`_codecs.encode` (bytes under protocols 0 to 2). Files written by numpy 1.x name the same
functions under `numpy.core`, so both spellings resolve to the current objects without importing
the deprecated `numpy.core` package.

NOTE: no admitted callable runs code named by the file, but a crafted file can still request a
large allocation (an array with a huge shape). Load files only from sources you would also give
that much memory to.
"""

from __future__ import annotations

import logging
import pickle
from pathlib import Path
from typing import Any

import numpy as np

from convrec.errors import DataError

try:
    from numpy._core import multiarray as _multiarray
    from numpy._core import numeric as _numeric
except ImportError:  # numpy < 2 has no numpy._core
    from numpy.core import multiarray as _multiarray
    from numpy.core import numeric as _numeric

logger = logging.getLogger(__name__)


def _numpy_globals() -> dict[tuple[str, str], Any]:
    table: dict[tuple[str, str], Any] = {
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
    }
    for package in ("numpy._core", "numpy.core"):
        table[(f"{package}.multiarray", "_reconstruct")] = _multiarray._reconstruct
        table[(f"{package}.multiarray", "scalar")] = _multiarray.scalar
        table[(f"{package}.numeric", "_frombuffer")] = _numeric._frombuffer
    return table


def _builtin_globals() -> dict[tuple[str, str], Any]:
    # Protocols below 4 build sets, frozensets and bytearrays by calling the type, and every
    # protocol does so for complex numbers. Python 2 and `fix_imports` pickles spell the module
    # `__builtin__`. The base class would rename it, but `find_class` here never calls it.
    table: dict[tuple[str, str], Any] = {("_codecs", "encode"): _encode_latin1}
    for module in ("builtins", "__builtin__"):
        for value in (set, frozenset, bytearray, complex):
            table[(module, value.__name__)] = value
    return table


def _encode_latin1(text: str, encoding: str = "latin1") -> bytes:
    # Protocols 0 to 2 store bytes as `_codecs.encode(text, "latin1")`. Admitting only that
    # encoding keeps the rest of the codec registry, compressors included, out of reach.
    if encoding not in ("latin1", "latin-1"):
        raise pickle.UnpicklingError(f"unexpected codec {encoding!r} in _codecs.encode")
    return text.encode("latin1")


_ALLOWED_GLOBALS: dict[tuple[str, str], Any] = {**_numpy_globals(), **_builtin_globals()}


class RestrictedUnpickler(pickle.Unpickler):
    """An unpickler that resolves globals only from a fixed table of containers and numpy types.

    Every opcode that names a global (GLOBAL, STACK_GLOBAL, INST, EXT*) goes through `find_class`,
    so a global outside the table raises DataError before its module is imported.
    """

    def __init__(self, file, *, path: Path):
        # `numpy.load` documents latin1 for reading Python 2 pickles of arrays. Python 3 pickles
        # store text as UTF-8 and are unaffected.
        super().__init__(file, encoding="latin1")
        self._path = path

    def find_class(self, module: str, name: str) -> Any:
        found = _ALLOWED_GLOBALS.get((module, name))
        if found is None:
            raise DataError(
                f"refusing to load {module}.{name}: only plain containers and numpy arrays "
                "are allowed",
                path=self._path,
            )
        return found

    def persistent_load(self, pid: Any) -> Any:
        raise DataError(
            f"refusing to load persistent id {pid!r}: only plain containers and numpy arrays "
            "are allowed",
            path=self._path,
        )


def load_restricted(path: Path) -> object:
    """Unpickle `path`, admitting only plain containers, numpy arrays, dtypes and scalars.

    Raises DataError naming the file when it is missing, unreadable, not a pickle, or refers to
    any other global.
    """
    path = Path(path)
    try:
        with path.open("rb") as handle:
            loaded = RestrictedUnpickler(handle, path=path).load()
    except DataError:
        raise
    except FileNotFoundError as error:
        raise DataError("file not found", path=path) from error
    except OSError as error:
        raise DataError(f"failed to read the file: {error}", path=path) from error
    except Exception as error:
        # A truncated or corrupt pickle surfaces as UnpicklingError, EOFError, ValueError,
        # TypeError and more, depending on the opcode where it breaks.
        raise DataError(
            f"not a valid pickle ({type(error).__name__}: {error}); download the file again",
            path=path,
        ) from error

    logger.debug("unpickled %s (%s)", path, type(loaded).__name__)
    return loaded
