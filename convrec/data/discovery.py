"""Find a dataset by name or path, detect its format, and load it as InteractionData.

A known name ("ml-100k", "ml-1m", any case) is searched in this order:
1. `data_dir/<name>`, the directory the user names (or `data_dir` itself when its name is the
   dataset's name);
2. the cache, `cache_dir/datasets/<name>`, where cache_dir defaults to `$CONVBENCH_CACHE` or
   `~/.cache/convbench`;
3. for ml-100k only, the RecBole atomic copy inside an installed `recbole` package
   (`recbole/dataset_example/ml-100k/`), located with importlib.util.find_spec so that recbole is
   never imported and `pip install --no-deps recbole` is enough;
4. a download of the GroupLens zip, checked against its published MD5 and unpacked atomically
   into the cache.
Any other name is looked up in steps 1 and 2 only.

A path (a directory or a file) is loaded with the format its files show; see detect_format.
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import os
import shutil
import tempfile
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import BinaryIO

from convrec.data.atomic import load_atomic
from convrec.data.build import build_dataset
from convrec.data.movielens import load_ml1m, load_ml100k
from convrec.data.schema import InteractionData, RawDataset
from convrec.errors import DataError, DatasetNotFoundError

logger = logging.getLogger(__name__)

CACHE_ENV = "CONVBENCH_CACHE"
DOWNLOAD_TIMEOUT_S = 60.0  # per blocking socket operation (urllib), not for the whole file
DOWNLOAD_CHUNK_BYTES = 1 << 20


@dataclass(frozen=True)
class GroupLensArchive:
    """A MovieLens zip on files.grouplens.org and the folder it unpacks to."""

    url: str
    md5: str
    folder: str


# MD5 digests from eli-osherovich/papers_with_code, datasets/movielens/dl_config.py; no SHA-256
# of these zips was found published, so MD5 is the digest checked.
# NOTE: the digests have not been checked against a real download; the tests serve local zips.
GROUPLENS_ARCHIVES = {
    "ml-100k": GroupLensArchive(
        url="https://files.grouplens.org/datasets/movielens/ml-100k.zip",
        md5="0e33842e24a9c977be4e0107933c0723",
        folder="ml-100k",
    ),
    "ml-1m": GroupLensArchive(
        url="https://files.grouplens.org/datasets/movielens/ml-1m.zip",
        md5="c4d9eecfca2ab87c1945afe126590906",
        folder="ml-1m",
    ),
}

# Format kinds, as detect_format names them.
ATOMIC = "RecBole atomic"
ML_100K_RAW = "MovieLens-100K raw"
ML_1M_RAW = "MovieLens-1M raw"
CARCA = "CARCA"
SASREC_TEXT = "SASRec text"
TABULAR = "CSV/Parquet table"
TABLE_SUFFIXES = (".csv", ".parquet")
LOOKED_FOR = (
    "*.inter (+ *.item) for RecBole atomic files, u.data (+ u.item) for MovieLens-100K, "
    "ratings.dat (+ movies.dat) for MovieLens-1M, *_cxt.txt for CARCA, a .txt of 'user item' "
    "lines for SASRec, or one .csv/.parquet table"
)


@dataclass(frozen=True)
class DetectedFormat:
    """A format and the path its loader takes: a directory or a file, as the loader expects."""

    kind: str
    path: Path
    item_path: Path | None = None


# ---------------------------------------------------------------------------------------------
# Format detection
# ---------------------------------------------------------------------------------------------


def _single(candidates: list[Path], kind: str, directory: Path) -> Path | None:
    """Return the only candidate, or None for none. Raise when several make the choice ambiguous."""
    if len(candidates) > 1:
        names = ", ".join(path.name for path in candidates)
        raise DatasetNotFoundError(
            f"{directory} contains several {kind} files ({names}); pass the path of the one to load"
        )
    return candidates[0] if candidates else None


def _format_of_directory(directory: Path) -> DetectedFormat | None:
    """Detect the format of a directory; the first match in LOOKED_FOR order wins."""
    inter_files = sorted(directory.glob("*.inter"))
    preferred = directory / f"{directory.name}.inter"
    if preferred in inter_files:
        inter_files = [preferred]
    inter = _single(inter_files, ".inter", directory)
    if inter is not None:
        return _format_of_file(inter)
    if (directory / "u.data").is_file():
        return DetectedFormat(ML_100K_RAW, directory)
    if (directory / "ratings.dat").is_file():
        return DetectedFormat(ML_1M_RAW, directory)
    if any(directory.glob("*_cxt.txt")):
        return DetectedFormat(CARCA, directory)
    text = _single(sorted(directory.glob("*.txt")), ".txt", directory)
    if text is not None:
        return DetectedFormat(SASREC_TEXT, text)
    tables = sorted(path for path in directory.iterdir() if path.suffix.lower() in TABLE_SUFFIXES)
    table = _single(tables, ".csv/.parquet", directory)
    if table is not None:
        return DetectedFormat(TABULAR, table)
    return None


def _format_of_file(path: Path) -> DetectedFormat | None:
    suffix = path.suffix.lower()
    if suffix in (".inter", ".item"):
        inter, item = path.with_suffix(".inter"), path.with_suffix(".item")
        if not inter.is_file():
            return None
        return DetectedFormat(ATOMIC, inter, item if item.is_file() else None)
    if path.name in ("u.data", "u.item"):
        return DetectedFormat(ML_100K_RAW, path.parent)
    if path.name in ("ratings.dat", "movies.dat"):
        return DetectedFormat(ML_1M_RAW, path.parent)
    if path.name.endswith("_cxt.txt"):
        return DetectedFormat(CARCA, path)
    if suffix == ".txt":
        return DetectedFormat(SASREC_TEXT, path)
    if suffix in TABLE_SUFFIXES:
        return DetectedFormat(TABULAR, path)
    return None


def detect_format(path: Path) -> DetectedFormat:
    """Detect the dataset format of a directory or file from the files present.

    Raises DatasetNotFoundError when the path does not exist or contains no recognised format
    (the message lists what was looked for), and when a directory contains several files of one
    kind.
    """
    path = Path(path)
    if path.is_dir():
        detected = _format_of_directory(path)
    elif path.is_file():
        detected = _format_of_file(path)
    else:
        raise DatasetNotFoundError(f"no file or directory at {path}")
    if detected is None:
        raise DatasetNotFoundError(
            f"no recognised dataset files in {path}; looked for {LOOKED_FOR}"
        )
    return detected


def _try_format(directory: Path) -> DetectedFormat | None:
    """Detect the format of a directory that may not exist; None when it contains no known files."""
    if not directory.is_dir():
        return None
    return _format_of_directory(directory)


def load_raw(detected: DetectedFormat) -> RawDataset:
    """Run the loader of a detected format."""
    # The CARCA, SASRec-text and table loaders are imported on use, so that this module works
    # without them.
    if detected.kind == ATOMIC:
        return load_atomic(detected.path, detected.item_path)
    if detected.kind == ML_100K_RAW:
        return load_ml100k(detected.path)
    if detected.kind == ML_1M_RAW:
        return load_ml1m(detected.path)
    if detected.kind == CARCA:
        from convrec.data.carca import load_carca

        return load_carca(detected.path)
    if detected.kind == SASREC_TEXT:
        from convrec.data.sasrec_text import load_sasrec_text

        return load_sasrec_text(detected.path)
    if detected.kind == TABULAR:
        from convrec.data.tabular import load_tabular

        return load_tabular(detected.path)
    raise ValueError(f"unknown format kind {detected.kind!r}")


# ---------------------------------------------------------------------------------------------
# Search by name
# ---------------------------------------------------------------------------------------------


def default_cache_dir() -> Path:
    """Return `$CONVBENCH_CACHE`, or `~/.cache/convbench` when it is unset or empty."""
    configured = os.environ.get(CACHE_ENV)
    return Path(configured).expanduser() if configured else Path.home() / ".cache" / "convbench"


def recbole_example_dir() -> Path | None:
    """Return the ml-100k folder of an installed recbole package, without importing recbole."""
    spec = importlib.util.find_spec("recbole")
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        folder = Path(location) / "dataset_example" / "ml-100k"
        if (folder / "ml-100k.inter").is_file():
            return folder
    return None


def _named_directories(data_dir: Path, name: str) -> list[Path]:
    """Return data_dir's sub-directories called `name` in any case, then data_dir if it is one."""
    if not data_dir.is_dir():
        return []
    matches = sorted(
        child for child in data_dir.iterdir() if child.is_dir() and child.name.lower() == name
    )
    if data_dir.name.lower() == name:
        matches.append(data_dir)
    return matches


def resolve_dataset(
    name: str,
    *,
    data_dir: Path | None = None,
    cache_dir: Path | None = None,
    download: bool = True,
) -> tuple[Path, str]:
    """Find a dataset by name or path; return where it is and how it was found.

    The second value is "path" (an existing file or directory, which wins over a name of the
    same spelling), "directory", "cache", "recbole wheel" or "download". Raises
    DatasetNotFoundError naming every place searched.
    """
    path = Path(name).expanduser()
    if path.exists():
        return path, "path"
    if _looks_like_path(name):
        raise DatasetNotFoundError(f"no file or directory at {path}")

    key = name.strip().lower()
    looked: list[str] = []

    if data_dir is not None:
        for directory in _named_directories(Path(data_dir).expanduser(), key):
            if _try_format(directory) is not None:
                return directory, "directory"
        looked.append(f"{Path(data_dir) / key} (the data directory)")

    cache = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    cached = cache / "datasets" / key
    if _try_format(cached) is not None:
        return cached, "cache"
    looked.append(f"{cached} (the cache)")

    if key == "ml-100k":
        wheel = recbole_example_dir()
        if wheel is not None:
            return wheel, "recbole wheel"
        looked.append("recbole/dataset_example/ml-100k (no installed recbole package has it; "
                      "pip install --no-deps recbole provides it)")

    archive = GROUPLENS_ARCHIVES.get(key)
    if archive is not None and download:
        try:
            return download_dataset(key, cache), "download"
        except DatasetNotFoundError as error:
            looked.append(str(error))
    elif archive is not None:
        looked.append(f"{archive.url} (downloads are turned off)")

    known = ", ".join(GROUPLENS_ARCHIVES)
    raise DatasetNotFoundError(
        f"dataset {name!r} not found; searched: {'; '.join(looked)}. Known names are {known}; "
        "other datasets must be a sub-directory of the data directory or a path"
    )


def available_datasets(*, data_dir: Path | None = None, cache_dir: Path | None = None) -> list[str]:
    """List the datasets that can be loaded without a download.

    Known names come first (ml-100k through the recbole wheel or a directory, ml-1m from the
    data directory or the cache), then every sub-directory of data_dir that contains a recognised
    format, by directory name. A sub-directory whose format is unclear is skipped with a warning.
    """
    found: list[str] = []
    for name in GROUPLENS_ARCHIVES:
        try:
            resolve_dataset(name, data_dir=data_dir, cache_dir=cache_dir, download=False)
        except DatasetNotFoundError:
            continue
        found.append(name)

    if data_dir is None or not Path(data_dir).is_dir():
        return found
    for child in sorted(Path(data_dir).iterdir()):
        if not child.is_dir() or child.name.lower() in found:
            continue
        try:
            detected = _try_format(child)
        except DatasetNotFoundError as error:
            logger.warning("skipping %s: %s", child, error)
            continue
        if detected is not None:
            found.append(child.name)
    return found


def _looks_like_path(text: str) -> bool:
    path = Path(text)
    return "/" in text or os.sep in text or path.suffix.lower() in (
        ".inter", ".item", ".data", ".dat", ".txt", *TABLE_SUFFIXES
    )


def load_dataset(
    name_or_path: str,
    *,
    data_dir: Path | None = None,
    cache_dir: Path | None = None,
    download: bool = True,
) -> InteractionData:
    """Load a dataset by name or path (see resolve_dataset), in the format detect_format finds.

    An existing path wins over a name, so that a folder `ml-100k` in the working directory is
    read from there. A dataset found by name takes that name in lower case. A dataset loaded
    from a path keeps the name its loader gives it.
    """
    location, how = resolve_dataset(
        name_or_path, data_dir=data_dir, cache_dir=cache_dir, download=download
    )
    detected = detect_format(location)
    logger.info("loading %s from %s (%s, %s)", name_or_path, detected.path, how, detected.kind)
    raw = load_raw(detected)
    if how != "path":
        raw.name = name_or_path.strip().lower()
    return build_dataset(raw)


# ---------------------------------------------------------------------------------------------
# Download
# ---------------------------------------------------------------------------------------------


def open_url(url: str, timeout: float) -> BinaryIO:
    """Open a URL for reading; tests replace this function to serve a local archive."""
    return urllib.request.urlopen(url, timeout=timeout)


def _fetch(url: str, out: BinaryIO, timeout: float) -> str:
    """Stream a URL into `out` and return the MD5 hex digest of what was written."""
    md5 = hashlib.md5(usedforsecurity=False)
    try:
        with open_url(url, timeout) as response:
            while chunk := response.read(DOWNLOAD_CHUNK_BYTES):
                md5.update(chunk)
                out.write(chunk)
    except OSError as error:  # URLError and TimeoutError are both OSErrors
        raise DatasetNotFoundError(
            f"downloading {url} failed ({error}); download and unzip it by hand and pass the "
            "folder as the data directory"
        ) from None
    return md5.hexdigest()


def _extract(zip_path: Path, folder: str, target: Path) -> None:
    """Unpack `folder/` of a zip into `target`, which appears complete or not at all."""
    staging = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}-unpack-"))
    try:
        try:
            with zipfile.ZipFile(zip_path) as archive:
                members = archive.namelist()
                for member in members:
                    parts = PurePosixPath(member.replace("\\", "/")).parts
                    if member.startswith(("/", "\\")) or ".." in parts or ":" in member:
                        raise DataError(f"unsafe member {member!r} in the archive; not unpacked")
                selected = [member for member in members if member.split("/", 1)[0] == folder]
                if not selected:
                    raise DataError(f"the archive has no {folder}/ folder; not unpacked")
                for member in selected:
                    archive.extract(member, staging)
        except zipfile.BadZipFile as error:
            raise DataError(f"the download is not a valid zip archive ({error})") from None
        os.replace(staging / folder, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def download_dataset(
    name: str, cache_dir: Path | None = None, *, timeout: float = DOWNLOAD_TIMEOUT_S
) -> Path:
    """Download a GroupLens dataset into `cache_dir/datasets/<name>` and return that folder.

    The zip goes to a temporary file in the cache, its MD5 is checked, and it is unpacked into a
    temporary folder that is then renamed into place, so that an interrupted download leaves no
    half-written dataset. Raises DataError when the checksum does not match, naming both digests.
    """
    key = name.lower()
    archive = GROUPLENS_ARCHIVES.get(key)
    if archive is None:
        known = ", ".join(GROUPLENS_ARCHIVES)
        raise DatasetNotFoundError(f"no download known for {name!r}; known names are {known}")
    datasets_dir = (Path(cache_dir) if cache_dir is not None else default_cache_dir()) / "datasets"
    target = datasets_dir / key
    if target.exists():
        raise DataError(
            f"{target} exists but contains no recognised dataset files; delete it and retry"
        )
    datasets_dir.mkdir(parents=True, exist_ok=True)

    handle, temporary = tempfile.mkstemp(dir=datasets_dir, prefix=f".{key}-", suffix=".zip")
    zip_path = Path(temporary)
    try:
        logger.info("downloading %s to %s", archive.url, datasets_dir)
        with os.fdopen(handle, "wb") as out:
            found = _fetch(archive.url, out, timeout)
        if found != archive.md5:
            raise DataError(
                f"MD5 checksum mismatch for {archive.url}: expected {archive.md5}, found {found}; "
                "the download is incomplete or the file changed upstream. Nothing was unpacked; "
                "retry, or download it by hand and pass the folder as the data directory"
            )
        _extract(zip_path, archive.folder, target)
    finally:
        zip_path.unlink(missing_ok=True)
    logger.info("unpacked %s into %s", archive.url, target)
    return target
