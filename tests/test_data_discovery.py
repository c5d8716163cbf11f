"""Dataset discovery: format detection, search order, download with checksum, the real ML-100K."""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.util
import io
import logging
import sys
import time
import urllib.error
import zipfile
from pathlib import Path

import pytest

from convrec.data import discovery
from convrec.data.discovery import (
    ATOMIC,
    CARCA,
    GROUPLENS_ARCHIVES,
    ML_1M_RAW,
    ML_100K_RAW,
    SASREC_TEXT,
    TABULAR,
    available_datasets,
    default_cache_dir,
    detect_format,
    download_dataset,
    load_dataset,
    resolve_dataset,
)
from convrec.errors import DataError, DatasetNotFoundError

HAS_RECBOLE = importlib.util.find_spec("recbole") is not None
U_DATA = "1\t10\t5\t881250949\n1\t20\t4\t881250950\n2\t10\t3\t881250951\n"
U_ITEM = (
    "10|A (1995)|01-Jan-1995||url|0|1|0|0|0|0|0|0|0|0|0|0|0|0|0|0|0|0|0\n"
    "20|B (1990)|01-Jan-1990||url|0|0|0|0|0|0|0|0|1|0|0|0|0|0|0|0|0|0|0\n"
)
ML_100K_URL = "https://files.grouplens.org/datasets/movielens/ml-100k.zip"


def make_ml100k(directory: Path) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "u.data").write_text(U_DATA)
    (directory / "u.item").write_text(U_ITEM, encoding="latin-1")
    return directory


def make_ml1m(directory: Path) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "ratings.dat").write_text("1::5::3::978300760\n")
    return directory


def make_atomic(directory: Path, stem: str) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    header = "user_id:token\titem_id:token\ttimestamp:float\n"
    (directory / f"{stem}.inter").write_text(header + "1\t2\t978300760\n")
    return directory


def grouplens_zip(members: dict[str, str]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, text in members.items():
            archive.writestr(name, text)
    return buffer.getvalue()


@pytest.fixture
def no_wheel(monkeypatch):
    """Hide the recbole copy of ML-100K so that the search reaches the download."""
    monkeypatch.setattr(discovery, "recbole_example_dir", lambda: None)


@pytest.fixture
def serve(monkeypatch):
    """Serve `payload` for every URL instead of the network; record the requests."""
    requests: list[tuple[str, float]] = []

    def install(payload: bytes | Exception):
        def fake_open_url(url: str, timeout: float):
            requests.append((url, timeout))
            if isinstance(payload, Exception):
                raise payload
            return io.BytesIO(payload)

        monkeypatch.setattr(discovery, "open_url", fake_open_url)
        return requests

    return install


def expect_md5(monkeypatch, name: str, payload: bytes) -> None:
    archive = dataclasses.replace(GROUPLENS_ARCHIVES[name], md5=hashlib.md5(payload).hexdigest())
    monkeypatch.setitem(GROUPLENS_ARCHIVES, name, archive)


# ---------------------------------------------------------------------------------------------
# Format detection
# ---------------------------------------------------------------------------------------------


def test_detect_atomic_directory(tmp_path):
    folder = make_atomic(tmp_path / "shop", "shop")
    (folder / "shop.item").write_text("item_id:token\n2\n")
    (folder / "other.inter").write_text("")
    detected = detect_format(folder)
    assert detected.kind == ATOMIC
    assert detected.path == folder / "shop.inter"
    assert detected.item_path == folder / "shop.item"


def test_detect_movielens_directories(tmp_path):
    assert detect_format(make_ml100k(tmp_path / "a")).kind == ML_100K_RAW
    assert detect_format(make_ml1m(tmp_path / "b")).kind == ML_1M_RAW


def test_detect_files(tmp_path):
    # The MovieLens loaders take the directory; the others take the file.
    cases = {
        "Beauty_cxt.txt": (CARCA, tmp_path / "Beauty_cxt.txt"),
        "seq.txt": (SASREC_TEXT, tmp_path / "seq.txt"),
        "log.csv": (TABULAR, tmp_path / "log.csv"),
        "log.parquet": (TABULAR, tmp_path / "log.parquet"),
        "u.data": (ML_100K_RAW, tmp_path),
        "ratings.dat": (ML_1M_RAW, tmp_path),
    }
    for name, (kind, loader_path) in cases.items():
        (tmp_path / name).write_text("")
        detected = detect_format(tmp_path / name)
        assert detected.kind == kind, name
        assert detected.path == loader_path, name


def test_detect_carca_directory(tmp_path):
    (tmp_path / "Men_cxt.txt").write_text("")
    (tmp_path / "notes.txt").write_text("")
    assert detect_format(tmp_path).kind == CARCA


def test_detect_several_text_files(tmp_path):
    (tmp_path / "a.txt").write_text("")
    (tmp_path / "b.txt").write_text("")
    with pytest.raises(DatasetNotFoundError) as error:
        detect_format(tmp_path)
    assert str(error.value) == (
        f"{tmp_path} contains several .txt files (a.txt, b.txt); pass the path of the one to load"
    )


def test_detect_unrecognised_directory(tmp_path):
    (tmp_path / "README").write_text("")
    with pytest.raises(DatasetNotFoundError) as error:
        detect_format(tmp_path)
    assert str(error.value) == (
        f"no recognised dataset files in {tmp_path}; looked for *.inter (+ *.item) for RecBole "
        "atomic files, u.data (+ u.item) for MovieLens-100K, ratings.dat (+ movies.dat) for "
        "MovieLens-1M, *_cxt.txt for CARCA, a .txt of 'user item' lines for SASRec, or one "
        ".csv/.parquet table"
    )


def test_detect_missing_path(tmp_path):
    with pytest.raises(DatasetNotFoundError) as error:
        detect_format(tmp_path / "nope")
    assert str(error.value) == f"no file or directory at {tmp_path / 'nope'}"


# ---------------------------------------------------------------------------------------------
# Search order
# ---------------------------------------------------------------------------------------------


def test_resolve_data_dir_first(tmp_path):
    data_dir = tmp_path / "data"
    make_ml100k(data_dir / "ML-100K")
    make_ml100k(tmp_path / "cache" / "datasets" / "ml-100k")
    found = resolve_dataset("ml-100k", data_dir=data_dir, cache_dir=tmp_path / "cache")
    assert found == (data_dir / "ML-100K", "directory")


def test_resolve_data_dir_is_dataset(tmp_path):
    folder = make_ml1m(tmp_path / "ml-1m")
    found = resolve_dataset("ML-1M", data_dir=folder, cache_dir=tmp_path, download=False)
    assert found == (folder, "directory")


def test_resolve_cache_before_wheel(tmp_path):
    cached = make_ml100k(tmp_path / "datasets" / "ml-100k")
    found = resolve_dataset("ml-100k", data_dir=tmp_path / "empty", cache_dir=tmp_path)
    assert found == (cached, "cache")


def test_resolve_cache_from_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("CONVBENCH_CACHE", str(tmp_path))
    cached = make_ml1m(tmp_path / "datasets" / "ml-1m")
    assert default_cache_dir() == tmp_path
    assert resolve_dataset("ml-1m", download=False) == (cached, "cache")


@pytest.mark.skipif(not HAS_RECBOLE, reason="recbole is not installed")
def test_resolve_wheel_without_import(tmp_path, monkeypatch):
    monkeypatch.delitem(sys.modules, "recbole", raising=False)
    location, how = resolve_dataset("ml-100k", cache_dir=tmp_path, download=False)
    assert how == "recbole wheel"
    assert location.parts[-2:] == ("dataset_example", "ml-100k")
    assert "recbole" not in sys.modules


def test_resolve_not_found(tmp_path, no_wheel):
    with pytest.raises(DatasetNotFoundError) as error:
        resolve_dataset("ml-100k", data_dir=tmp_path / "data", cache_dir=tmp_path, download=False)
    assert str(error.value) == (
        f"dataset 'ml-100k' not found; searched: {tmp_path / 'data' / 'ml-100k'} (the data "
        f"directory); {tmp_path / 'datasets' / 'ml-100k'} (the cache); "
        "recbole/dataset_example/ml-100k (no installed recbole package has it; pip install "
        f"--no-deps recbole provides it); {ML_100K_URL} (downloads are turned off). Known "
        "names are ml-100k, ml-1m; other datasets must be a sub-directory of the data directory "
        "or a path"
    )


def test_resolve_existing_path(tmp_path):
    folder = make_ml1m(tmp_path / "ml-100k")
    assert resolve_dataset(str(folder), cache_dir=tmp_path) == (folder, "path")


def test_resolve_missing_path(tmp_path):
    with pytest.raises(DatasetNotFoundError) as error:
        resolve_dataset(str(tmp_path / "nope" / "u.data"))
    assert str(error.value) == f"no file or directory at {tmp_path / 'nope' / 'u.data'}"


def test_resolve_other_name_in_data_dir(tmp_path):
    folder = tmp_path / "Beauty"
    folder.mkdir()
    (folder / "Beauty_cxt.txt").write_text("")
    assert resolve_dataset("beauty", data_dir=tmp_path, cache_dir=tmp_path) == (folder, "directory")


def test_available_datasets(tmp_path, caplog):
    make_ml1m(tmp_path / "ml-1m")
    make_atomic(tmp_path / "shop", "shop")
    (tmp_path / "empty").mkdir()
    (tmp_path / "two").mkdir()
    (tmp_path / "two" / "a.txt").write_text("")
    (tmp_path / "two" / "b.txt").write_text("")
    with caplog.at_level(logging.WARNING, logger="convrec.data.discovery"):
        names = available_datasets(data_dir=tmp_path, cache_dir=tmp_path / "cache")
    expected = ["ml-100k", "ml-1m", "shop"] if HAS_RECBOLE else ["ml-1m", "shop"]
    assert names == expected
    assert f"skipping {tmp_path / 'two'}: " in caplog.text


def test_available_datasets_none(tmp_path, no_wheel):
    assert available_datasets(cache_dir=tmp_path) == []


# ---------------------------------------------------------------------------------------------
# Download
# ---------------------------------------------------------------------------------------------


def test_download_good_checksum(tmp_path, monkeypatch, serve, no_wheel):
    payload = grouplens_zip({"ml-100k/u.data": U_DATA, "ml-100k/u.item": U_ITEM})
    expect_md5(monkeypatch, "ml-100k", payload)
    requests = serve(payload)
    found = resolve_dataset("ml-100k", cache_dir=tmp_path)
    assert found == (tmp_path / "datasets" / "ml-100k", "download")
    assert requests == [(ML_100K_URL, discovery.DOWNLOAD_TIMEOUT_S)]
    assert (tmp_path / "datasets" / "ml-100k" / "u.data").read_text() == U_DATA
    assert sorted(path.name for path in (tmp_path / "datasets").iterdir()) == ["ml-100k"]


def test_download_then_load(tmp_path, monkeypatch, serve, no_wheel):
    payload = grouplens_zip({"ml-100k/u.data": U_DATA, "ml-100k/u.item": U_ITEM})
    expect_md5(monkeypatch, "ml-100k", payload)
    serve(payload)
    data = load_dataset("ml-100k", cache_dir=tmp_path)
    assert data.name == "ml-100k"
    assert data.num_users == 2
    assert data.item_attributes.shape == (3, 20)


def test_download_bad_checksum(tmp_path, serve):
    payload = grouplens_zip({"ml-100k/u.data": U_DATA})
    serve(payload)
    with pytest.raises(DataError) as error:
        download_dataset("ml-100k", tmp_path)
    found = hashlib.md5(payload).hexdigest()
    assert str(error.value) == (
        f"MD5 checksum mismatch for {ML_100K_URL}: expected 0e33842e24a9c977be4e0107933c0723, "
        f"found {found}; the download is incomplete or the file changed upstream. Nothing was "
        "unpacked; retry, or download it by hand and pass the folder as the data directory"
    )
    assert list((tmp_path / "datasets").iterdir()) == []


def test_download_network_error(tmp_path, serve, no_wheel):
    serve(urllib.error.URLError("network is unreachable"))
    with pytest.raises(DatasetNotFoundError) as error:
        resolve_dataset("ml-1m", cache_dir=tmp_path)
    assert str(error.value) == (
        f"dataset 'ml-1m' not found; searched: {tmp_path / 'datasets' / 'ml-1m'} (the cache); "
        "downloading https://files.grouplens.org/datasets/movielens/ml-1m.zip failed (<urlopen "
        "error network is unreachable>); download and unzip it by hand and pass the folder as "
        "the data directory. Known names are ml-100k, ml-1m; other datasets must be a "
        "sub-directory of the data directory or a path"
    )
    assert list((tmp_path / "datasets").iterdir()) == []


def test_download_unsafe_member(tmp_path, monkeypatch, serve):
    payload = grouplens_zip({"ml-100k/u.data": U_DATA, "ml-100k/../../evil.txt": "x"})
    expect_md5(monkeypatch, "ml-100k", payload)
    serve(payload)
    with pytest.raises(DataError) as error:
        download_dataset("ml-100k", tmp_path)
    assert str(error.value) == "unsafe member 'ml-100k/../../evil.txt' in the archive; not unpacked"
    assert list((tmp_path / "datasets").iterdir()) == []
    assert not (tmp_path / "evil.txt").exists()


def test_download_existing_unrecognised_folder(tmp_path, serve):
    target = tmp_path / "datasets" / "ml-1m"
    target.mkdir(parents=True)
    requests = serve(b"")
    with pytest.raises(DataError) as error:
        download_dataset("ml-1m", tmp_path)
    assert str(error.value) == (
        f"{target} exists but contains no recognised dataset files; delete it and retry"
    )
    assert requests == []


# ---------------------------------------------------------------------------------------------
# load_dataset
# ---------------------------------------------------------------------------------------------


def test_load_dataset_by_file_path(tmp_path):
    folder = make_atomic(tmp_path / "shop", "shop")
    data = load_dataset(str(folder / "shop.inter"))
    assert data.name == "shop"
    assert data.num_users == 1


def test_load_dataset_by_directory(tmp_path):
    data = load_dataset(str(make_ml1m(tmp_path / "anything")))
    assert data.name == "ml-1m"
    assert data.item_attributes.shape == (2, 0)


def test_load_dataset_missing_path(tmp_path):
    with pytest.raises(DatasetNotFoundError) as error:
        load_dataset(str(tmp_path / "ratings.dat"))
    assert str(error.value) == f"no file or directory at {tmp_path / 'ratings.dat'}"


@pytest.mark.skipif(not HAS_RECBOLE, reason="recbole is not installed")
def test_real_ml100k_from_wheel(tmp_path):
    started = time.perf_counter()
    data = load_dataset("ML-100K", cache_dir=tmp_path, download=False)
    seconds = time.perf_counter() - started
    assert data.name == "ml-100k"
    assert data.num_users == 943
    assert data.num_items == 1682
    assert sum(len(sequence) for sequence in data.sequences) == 100_000
    assert data.item_attributes.shape == (1683, 20)
    assert data.attribute_names[0] == "class=unknown"
    assert data.attribute_names[-1] == "release_year"
    assert len(data.context_names) == 6
    assert not data.item_attributes[0].any()
    assert seconds < 10, f"loading ML-100K took {seconds:.1f} s"
