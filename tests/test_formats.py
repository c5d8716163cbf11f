"""Tests for the SASRec text, CARCA, restricted-pickle and CSV/Parquet loaders."""

from __future__ import annotations

import os
import pickle
import subprocess
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from convrec.data.carca import load_carca
from convrec.data.context import CONTEXT_NAMES
from convrec.data.safe_pickle import load_restricted
from convrec.data.sasrec_text import load_sasrec_text
from convrec.data.tabular import load_tabular
from convrec.errors import DataError

REJECTION = "only plain containers and numpy arrays are allowed"


def write_pickle(path: Path, value: object, protocol: int = pickle.DEFAULT_PROTOCOL) -> Path:
    path.write_bytes(pickle.dumps(value, protocol=protocol))
    return path


def error_text(call, *args, **kwargs) -> str:
    with pytest.raises(DataError) as caught:
        call(*args, **kwargs)
    return str(caught.value)


def utc_seconds(*fields: int) -> int:
    return int(datetime(*fields, tzinfo=timezone.utc).timestamp())


# ---------------------------------------------------------------------------------------------
# SASRec text


def test_sasrec_text_columns(tmp_path):
    path = tmp_path / "ml.txt"
    path.write_text("1 10\n1 11\n2 10\r\n2\t12")

    raw = load_sasrec_text(path)

    assert raw.interactions.columns.tolist() == ["user", "item", "timestamp", "line"]
    assert raw.interactions["user"].tolist() == ["1", "1", "2", "2"]
    assert raw.interactions["item"].tolist() == ["10", "11", "10", "12"]
    assert raw.interactions["timestamp"].tolist() == [0, 1, 2, 3]
    assert raw.interactions["timestamp"].dtype == np.int64
    assert raw.interactions["line"].tolist() == [1, 2, 3, 4]


def test_sasrec_text_metadata(tmp_path):
    path = tmp_path / "ml.txt"
    path.write_text("1 10\n")

    raw = load_sasrec_text(path)

    assert raw.name == "ml"
    assert raw.source == str(path)
    assert raw.has_calendar_time is False
    assert raw.item_attributes is None
    assert raw.context is None


def test_sasrec_text_extra_field(tmp_path):
    path = tmp_path / "ml.txt"
    path.write_text("1 10\n1 11 5\n")

    message = error_text(load_sasrec_text, path)

    assert message == (f"{path}, line 2: expected 2 whitespace-separated fields (user item), "
                       "found 3: '1 11 5'")


def test_sasrec_text_comma_separator(tmp_path):
    path = tmp_path / "ml.txt"
    path.write_text("1,10\n")

    message = error_text(load_sasrec_text, path)

    assert message == (f"{path}, line 1: expected 2 whitespace-separated fields (user item), "
                       "found 1: '1,10'")


def test_sasrec_text_blank_line(tmp_path):
    path = tmp_path / "ml.txt"
    path.write_text("1 10\n\n1 11\n")

    message = error_text(load_sasrec_text, path)

    assert message == f"{path}, line 2: blank line; every line must be `user item`"


def test_sasrec_text_undecodable(tmp_path):
    path = tmp_path / "ml.txt"
    path.write_bytes(b"1 10\n1 \xff\n")

    message = error_text(load_sasrec_text, path)

    assert message == (f"{path}, line 2: undecodable bytes b'\\xff' (not UTF-8); "
                       "save the file as UTF-8")


def test_sasrec_text_empty(tmp_path):
    path = tmp_path / "ml.txt"
    path.write_text("")

    message = error_text(load_sasrec_text, path)

    assert message == f"{path}: no interactions; expected lines of `user item`"


@pytest.mark.parametrize(
    ("text", "line", "field", "value"),
    [("1 10\n3 x\n", 2, "item", "x"), ("1 10\n3 -4\n", 2, "item", "-4"),
     ("1 0\n", 1, "item", "0"), ("1.5 10\n", 1, "user", "1.5"),
     ("u 10\n2 y\n", 1, "user", "u"), ("+3 10\n", 1, "user", "+3")],
)
def test_sasrec_text_rejects_id(tmp_path, text, line, field, value):
    path = tmp_path / "ml.txt"
    path.write_text(text)

    message = error_text(load_sasrec_text, path)

    assert message == (f"{path}, line {line}: {field} id {value!r} is not a positive integer; "
                       "SASRec text files hold two positive integer ids per line (`user item`)")


def test_sasrec_text_leading_zeros_same_id(tmp_path):
    path = tmp_path / "ml.txt"
    path.write_text("007 010\n7 10\n")

    raw = load_sasrec_text(path)

    assert raw.interactions["user"].tolist() == ["7", "7"]
    assert raw.interactions["item"].tolist() == ["10", "10"]


def test_sasrec_text_missing_file(tmp_path):
    path = tmp_path / "absent.txt"

    message = error_text(load_sasrec_text, path)

    assert message == f"{path}: file not found"


# ---------------------------------------------------------------------------------------------
# Restricted unpickling


class SystemPayload:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


class EvalPayload:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (eval, (f"open({str(self.marker)!r}, 'w').write('ran')",))


class PopenPayload:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (subprocess.Popen, (["touch", str(self.marker)],))


@pytest.mark.parametrize("protocol", [0, 2, 3, 4, 5])
def test_restricted_pickle_round_trip(tmp_path, protocol):
    value = {
        "features": np.arange(12, dtype=np.float32).reshape(3, 4),
        "fortran": np.asfortranarray(np.arange(6, dtype=np.int64).reshape(2, 3)),
        "names": np.array(["a", "bc"]),
        "scalar": np.float64(2.5),
        (1, 2): [np.float64(0.5), 1.0, {3, 4}, frozenset([5]), b"raw", 1 + 2j],
    }
    path = write_pickle(tmp_path / "data.dat", value, protocol)

    loaded = load_restricted(path)

    assert loaded.keys() == value.keys()
    for key in ("features", "fortran", "names"):
        np.testing.assert_array_equal(loaded[key], value[key])
        assert loaded[key].dtype == value[key].dtype
    assert loaded["scalar"] == np.float64(2.5)
    assert type(loaded["scalar"]) is np.float64
    assert loaded[(1, 2)] == value[(1, 2)]


def test_restricted_pickle_numpy1_names(tmp_path):
    # numpy 1.x wrote `numpy.core.multiarray`; protocol 2 stores module names as plain text.
    data = pickle.dumps({"a": np.arange(3.0), "s": np.float64(1.5)}, protocol=2)
    assert b"numpy._core.multiarray" in data
    path = tmp_path / "old.dat"
    path.write_bytes(data.replace(b"numpy._core.multiarray", b"numpy.core.multiarray"))

    loaded = load_restricted(path)

    np.testing.assert_array_equal(loaded["a"], np.arange(3.0))
    assert loaded["s"] == 1.5


def test_payload_runs_under_plain_pickle(tmp_path):
    # Shows that the payloads below do run when loaded without restriction.
    marker = tmp_path / "ran"

    pickle.loads(pickle.dumps(SystemPayload(marker)))

    assert marker.exists()


def test_restricted_pickle_rejects_os_system(tmp_path):
    marker = tmp_path / "ran"
    path = write_pickle(tmp_path / "evil.dat", SystemPayload(marker))

    message = error_text(load_restricted, path)

    assert message == f"{path}: refusing to load {os.system.__module__}.system: {REJECTION}"
    assert not marker.exists()


def test_restricted_pickle_rejects_eval(tmp_path):
    marker = tmp_path / "ran"
    path = write_pickle(tmp_path / "evil.dat", {"ok": np.zeros(2), "bad": EvalPayload(marker)})

    message = error_text(load_restricted, path)

    assert message == f"{path}: refusing to load builtins.eval: {REJECTION}"
    assert not marker.exists()


def test_restricted_pickle_rejects_popen(tmp_path):
    marker = tmp_path / "ran"
    path = write_pickle(tmp_path / "evil.dat", [PopenPayload(marker)])

    message = error_text(load_restricted, path)

    assert message == f"{path}: refusing to load subprocess.Popen: {REJECTION}"
    assert not marker.exists()


def test_restricted_pickle_rejects_other_codec(tmp_path):
    # `_codecs.encode` is admitted for bytes, but only with the latin1 codec that pickle uses.
    path = tmp_path / "zip.dat"
    path.write_bytes(b"c_codecs\nencode\n(Vx\nVzlib\ntR.")

    message = error_text(load_restricted, path)

    assert message.startswith(f"{path}: not a valid pickle (UnpicklingError: unexpected codec")


def test_restricted_pickle_truncated(tmp_path):
    path = tmp_path / "cut.dat"
    path.write_bytes(pickle.dumps(np.arange(100.0))[:40])

    message = error_text(load_restricted, path)

    assert message.startswith(f"{path}: not a valid pickle (")
    assert message.endswith("); download the file again")


def test_restricted_pickle_missing_file(tmp_path):
    path = tmp_path / "absent.dat"

    message = error_text(load_restricted, path)

    assert message == f"{path}: file not found"


# ---------------------------------------------------------------------------------------------
# CARCA


CARCA_LINES = [
    "1 1 1388534400",  # 2014-01-01
    "1 2 1391212800",  # 2014-02-01
    "1 1 1393632000",  # 2014-03-01, user 1 interacts with item 1 again
    "2 3 1396310400",
    "2 2 1398902400",
]


def carca_context(lines: list[str]) -> dict[tuple[int, int], list[np.float64]]:
    context = {}
    for number, line in enumerate(lines):
        user, item, _ = (int(field) for field in line.split())
        context[(user, item)] = [np.float64(number / 10 + k / 100) for k in range(6)]
    return context


def write_carca(folder: Path, name: str = "Beauty", *, attributes: str | None = "_feat_cat.dat",
                context_name: str | None = None, lines: list[str] = CARCA_LINES) -> Path:
    folder.mkdir(exist_ok=True)
    (folder / f"{name}_cxt.txt").write_text("\n".join(lines) + "\n")
    if attributes is not None:
        features = np.arange(3 * 4, dtype=np.float64).reshape(3, 4)
        write_pickle(folder / f"{name}{attributes}", features, protocol=3)
    if context_name is not None:
        write_pickle(folder / context_name, carca_context(lines), protocol=3)
    return folder


def test_carca_interactions(tmp_path):
    folder = write_carca(tmp_path / "data", context_name="CXTDictSasRec_Beauty.dat")

    raw = load_carca(folder)

    assert raw.name == "Beauty"
    assert raw.source == str(folder / "Beauty_cxt.txt")
    assert raw.interactions["user"].tolist() == ["1", "1", "1", "2", "2"]
    assert raw.interactions["item"].tolist() == ["1", "2", "1", "3", "2"]
    assert raw.interactions["timestamp"].tolist()[0] == utc_seconds(2014, 1, 1)
    assert raw.interactions["timestamp"].dtype == np.int64
    assert raw.interactions["line"].tolist() == [1, 2, 3, 4, 5]
    assert raw.has_calendar_time is True


def test_carca_item_attributes(tmp_path):
    folder = write_carca(tmp_path / "data")

    raw = load_carca(folder)

    assert raw.item_attributes.index.tolist() == ["1", "2", "3"]
    assert raw.item_attributes.loc["2"].tolist() == [4.0, 5.0, 6.0, 7.0]
    assert all(dtype == np.float64 for dtype in raw.item_attributes.dtypes)


def test_carca_context_aligned(tmp_path):
    folder = write_carca(tmp_path / "data", context_name="CXTDictSasRec_Beauty.dat")
    expected = carca_context(CARCA_LINES)

    raw = load_carca(folder)

    assert raw.context.columns.tolist() == list(CONTEXT_NAMES)
    assert len(raw.context) == len(raw.interactions)
    pairs = zip(raw.interactions["user"], raw.interactions["item"], strict=True)
    for row, (user, item) in enumerate(pairs):
        assert raw.context.iloc[row].tolist() == expected[(int(user), int(item))]


def test_carca_context_shared_pair(tmp_path):
    folder = write_carca(tmp_path / "data", context_name="CXTDictSasRec_Beauty.dat")

    raw = load_carca(folder)

    assert raw.context.iloc[0].tolist() == raw.context.iloc[2].tolist()
    assert ("1 interactions repeat an earlier (user, item) pair and share its context, "
            "as in the authors' files") in raw.notes


def test_carca_games_context_name(tmp_path):
    folder = write_carca(tmp_path / "data", name="Video_Games", attributes="_feat.dat",
                         context_name="CXTDictSasRec_Games.dat")

    raw = load_carca(folder)

    assert raw.context is not None
    assert raw.item_attributes.shape == (3, 4)


def test_carca_without_pickles(tmp_path):
    folder = write_carca(tmp_path / "data", name="Men", attributes=None)

    raw = load_carca(folder)

    assert raw.context is None
    assert raw.item_attributes is None


def test_carca_names_one_of_several(tmp_path):
    folder = write_carca(tmp_path / "data", name="Men", attributes="_imgs.dat")
    write_carca(folder, name="Fashion", attributes="_imgs.dat")

    raw = load_carca(folder, name="Fashion")

    assert raw.name == "Fashion"


def test_carca_several_without_name(tmp_path):
    folder = write_carca(tmp_path / "data", name="Men")
    write_carca(folder, name="Fashion")

    message = error_text(load_carca, folder)

    assert message == (f"{folder}: several CARCA datasets in this folder (Fashion, Men); "
                       "pass the name of one")


def test_carca_accepts_file_path(tmp_path):
    folder = write_carca(tmp_path / "data")

    raw = load_carca(folder / "Beauty_cxt.txt")

    assert raw.name == "Beauty"


def test_carca_missing_context_entry(tmp_path):
    folder = write_carca(tmp_path / "data", context_name="CXTDictSasRec_Beauty.dat")
    # The last interaction has no entry in the context pickle.
    (folder / "Beauty_cxt.txt").write_text("\n".join([*CARCA_LINES, "2 1 1400000000"]) + "\n")

    message = error_text(load_carca, folder)

    assert message == (f"{folder / 'CXTDictSasRec_Beauty.dat'}: no context for (user 2, item 1) "
                       "of Beauty_cxt.txt line 6; the context file belongs to another version "
                       "of the dataset")


def test_carca_bad_item_id(tmp_path):
    folder = write_carca(tmp_path / "data", lines=["1 1 1388534400", "1 B00X 1391212800"])

    message = error_text(load_carca, folder)

    assert message == (f"{folder / 'Beauty_cxt.txt'}, line 2: item id 'B00X' is not an integer "
                       "of at least 1; CARCA files number users and items from 1 and store Unix "
                       "times in whole seconds")


def test_carca_missing_timestamp(tmp_path):
    folder = write_carca(tmp_path / "data", lines=["1 1 1388534400", "1 2"])

    message = error_text(load_carca, folder)

    assert message == (f"{folder / 'Beauty_cxt.txt'}, line 2: expected 3 whitespace-separated "
                       "fields (user item timestamp), found 2: '1 2'")


def test_carca_attributes_too_short(tmp_path):
    folder = write_carca(tmp_path / "data", lines=[*CARCA_LINES, "2 4 1400000000"])

    message = error_text(load_carca, folder)

    assert message == (f"{folder / 'Beauty_feat_cat.dat'}: has 3 rows but the interactions refer "
                       "to item 4; row k must hold the attributes of item k + 1")


def test_carca_attributes_not_finite(tmp_path):
    folder = write_carca(tmp_path / "data")
    features = np.ones((3, 2))
    features[1, 1] = np.nan
    write_pickle(folder / "Beauty_feat_cat.dat", features)

    message = error_text(load_carca, folder)

    assert message == (f"{folder / 'Beauty_feat_cat.dat'}: 1 non-finite attribute values, first "
                       "at row 1 (item 2), column 1: nan")


def test_carca_malicious_attributes(tmp_path):
    folder = write_carca(tmp_path / "data")
    marker = tmp_path / "ran"
    write_pickle(folder / "Beauty_feat_cat.dat", SystemPayload(marker))

    message = error_text(load_carca, folder)

    assert message == (f"{folder / 'Beauty_feat_cat.dat'}: refusing to load "
                       f"{os.system.__module__}.system: {REJECTION}")
    assert not marker.exists()


# ---------------------------------------------------------------------------------------------
# CSV and Parquet


def test_tabular_csv_columns(tmp_path):
    path = tmp_path / "log.csv"
    path.write_text("user_id,item_id,timestamp,rating\nu1,007,100,5\nu2,8,200,3\n")

    raw = load_tabular(path)

    assert raw.interactions.columns.tolist() == ["user", "item", "timestamp", "line"]
    assert raw.interactions["user"].tolist() == ["u1", "u2"]
    assert raw.interactions["item"].tolist() == ["007", "8"]
    assert raw.interactions["timestamp"].tolist() == [100, 200]
    assert raw.interactions["timestamp"].dtype == np.int64
    assert raw.interactions["line"].tolist() == [2, 3]
    assert "ignored columns of log.csv: rating" in raw.notes


def test_tabular_iso_dates(tmp_path):
    path = tmp_path / "log.csv"
    path.write_text("user_id,item_id,timestamp\n"
                    "1,1,2020-01-02\n"
                    "1,2,2020-01-02T10:00:00Z\n"
                    "1,3,2020-01-02 12:00:00+02:00\n"
                    "1,4,2020-01-02T10:00:00.75\n")

    raw = load_tabular(path)

    assert raw.interactions["timestamp"].tolist() == [
        utc_seconds(2020, 1, 2),
        utc_seconds(2020, 1, 2, 10),
        utc_seconds(2020, 1, 2, 10),
        utc_seconds(2020, 1, 2, 10),
    ]


def test_tabular_float_seconds(tmp_path):
    path = tmp_path / "log.csv"
    path.write_text("user_id,item_id,timestamp\n1,1,100.9\n1,2,1.5e2\n")

    raw = load_tabular(path)

    assert raw.interactions["timestamp"].tolist() == [100, 150]


def test_tabular_custom_columns(tmp_path):
    path = tmp_path / "log.tsv"
    path.write_text("who\twhat\twhen\nann\tbook\t5\n")

    raw = load_tabular(path, user_column="who", item_column="what", time_column="when")

    assert raw.interactions[["user", "item", "timestamp"]].values.tolist() == [["ann", "book", 5]]


def test_tabular_parquet(tmp_path):
    path = tmp_path / "log.parquet"
    frame = pd.DataFrame({
        "user_id": [10, 11],
        "item_id": [1.0, 2.0],
        "timestamp": pd.to_datetime(["2021-05-01 00:00", "2021-05-02 06:00"]),
    })
    frame.to_parquet(path)

    raw = load_tabular(path)

    assert raw.interactions["user"].tolist() == ["10", "11"]
    assert raw.interactions["item"].tolist() == ["1", "2"]
    assert raw.interactions["timestamp"].tolist() == [utc_seconds(2021, 5, 1),
                                                      utc_seconds(2021, 5, 2, 6)]
    assert raw.interactions["line"].tolist() == [1, 2]


def test_tabular_parquet_zoned_time(tmp_path):
    path = tmp_path / "log.pq"
    times = pd.to_datetime(["2021-05-01 02:00"]).tz_localize("Europe/Berlin")
    pd.DataFrame({"user_id": ["a"], "item_id": ["b"], "timestamp": times}).to_parquet(path)

    raw = load_tabular(path)

    assert raw.interactions["timestamp"].tolist() == [utc_seconds(2021, 5, 1)]


def test_tabular_missing_column(tmp_path):
    path = tmp_path / "log.csv"
    path.write_text("user,item_id,timestamp\n1,2,3\n")

    message = error_text(load_tabular, path)

    assert message == (f"{path}: missing user column 'user_id'; found columns: 'user', "
                       "'item_id', 'timestamp'. Rename the column that holds the users to "
                       "'user_id' in the file (from Python, load_tabular(user_column=...) also "
                       "accepts another name)")


def test_tabular_missing_time_column(tmp_path):
    path = tmp_path / "log.csv"
    path.write_text("user_id,item_id,time\n1,2,3\n")

    message = error_text(load_tabular, path)

    assert message == (f"{path}: missing time column 'timestamp'; found columns: 'user_id', "
                       "'item_id', 'time'. Rename the column that holds the times to "
                       "'timestamp' in the file (from Python, load_tabular(time_column=...) also "
                       "accepts another name)")


def test_tabular_wrong_separator(tmp_path):
    path = tmp_path / "log.csv"
    path.write_text("user_id;item_id;timestamp\n1;2;3\n")

    message = error_text(load_tabular, path)

    assert message == (f"{path}: missing user column 'user_id'; found columns: "
                       "'user_id;item_id;timestamp'. The header looks like one column: check "
                       "the separator")


def test_tabular_bad_timestamp(tmp_path):
    path = tmp_path / "log.csv"
    path.write_text("user_id,item_id,timestamp\n1,2,2020-01-01\n1,3,yesterday\n")

    message = error_text(load_tabular, path)

    assert message == (f"{path}, line 3: timestamp 'yesterday' in column 'timestamp' is neither "
                       "a number of seconds nor an ISO-8601 date")


def test_tabular_mixed_timestamps(tmp_path):
    path = tmp_path / "log.csv"
    path.write_text("user_id,item_id,timestamp\n1,2,2020-01-01\n1,3,1577836800\n")

    message = error_text(load_tabular, path)

    assert message == (f"{path}, line 3: timestamp '1577836800' in column 'timestamp' is a "
                       "number, but line 2 has the date '2020-01-01'; use one kind per column")


def test_tabular_timestamp_milliseconds(tmp_path):
    path = tmp_path / "log.csv"
    path.write_text("user_id,item_id,timestamp\n1,2,1577836800000000\n")

    message = error_text(load_tabular, path)

    assert message.startswith(f"{path}, line 2: timestamp 1577836800000000 is out of range")
    assert message.endswith("convert milliseconds or nanoseconds to seconds")


def test_tabular_float_timestamp_out_of_range(tmp_path):
    path = tmp_path / "log.csv"
    path.write_text("user_id,item_id,timestamp\n1,2,3.5\n1,3,1e20\n")

    message = error_text(load_tabular, path)

    assert message == (f"{path}, line 3: timestamp 1e20 is out of range; timestamps must be Unix "
                       "seconds from -9223372036 to 9223372036 (the years 1677 to 2262), so "
                       "convert milliseconds or nanoseconds to seconds")


def test_tabular_parquet_timestamp_out_of_range(tmp_path):
    path = tmp_path / "log.parquet"
    frame = pd.DataFrame({"user_id": [1, 1], "item_id": [2, 3], "timestamp": [3.5, -1e20]})
    frame.to_parquet(path)

    message = error_text(load_tabular, path)

    assert message.startswith(f"{path}, line 2: timestamp -1e+20 is out of range; timestamps "
                              "must be Unix seconds from -9223372036 to 9223372036")


def test_tabular_missing_user(tmp_path):
    path = tmp_path / "log.csv"
    path.write_text("user_id,item_id,timestamp\n1,2,3\n,2,4\n")

    message = error_text(load_tabular, path)

    assert message == f"{path}, line 3: missing user id in column 'user_id'"


def test_tabular_extra_field(tmp_path):
    path = tmp_path / "log.csv"
    path.write_text("user_id,item_id,timestamp\n1,2,3\n1,2,3,4\n")

    with pytest.raises(DataError) as caught:
        load_tabular(path)

    assert caught.value.line == 3
    assert "Expected 3 fields in line 3, saw 4" in str(caught.value)


def test_tabular_blank_line(tmp_path):
    path = tmp_path / "log.csv"
    path.write_text("user_id,item_id,timestamp\n1,2,3\n\n1,3,4\n")

    message = error_text(load_tabular, path)

    assert message == f"{path}, line 3: blank line; remove it"


def test_tabular_duplicate_header(tmp_path):
    path = tmp_path / "log.csv"
    path.write_text("user_id,item_id,item_id,timestamp\n1,2,2,3\n")

    message = error_text(load_tabular, path)

    assert message == f"{path}, line 1: duplicate column name 'item_id' in the header"


def test_tabular_undecodable(tmp_path):
    path = tmp_path / "log.csv"
    path.write_bytes(b"user_id,item_id,timestamp\n1,2,3\n1,\xe9,4\n")

    message = error_text(load_tabular, path)

    assert message == (f"{path}, line 3: undecodable bytes b'\\xe9' (not UTF-8); "
                       "save the file as UTF-8")


def test_tabular_unsupported_suffix(tmp_path):
    path = tmp_path / "log.xlsx"
    path.write_text("x")

    message = error_text(load_tabular, path)

    assert message == (f"{path}: unsupported file type '.xlsx'; expected one of .csv, .tsv, "
                       ".parquet, .pq")


def test_tabular_attributes_csv(tmp_path):
    path = tmp_path / "log.csv"
    path.write_text("user_id,item_id,timestamp\n1,a,3\n1,b,4\n")
    attributes = tmp_path / "items.csv"
    attributes.write_text("item_id,price,is_new\na,1.5,True\nb,2,false\n")

    raw = load_tabular(path, item_attributes_path=attributes)

    assert raw.item_attributes.index.tolist() == ["a", "b"]
    assert raw.item_attributes.columns.tolist() == ["price", "is_new"]
    assert raw.item_attributes.to_numpy().tolist() == [[1.5, 1.0], [2.0, 0.0]]
    assert all(dtype == np.float64 for dtype in raw.item_attributes.dtypes)


def test_tabular_attributes_parquet_index(tmp_path):
    path = tmp_path / "log.csv"
    path.write_text("user_id,item_id,timestamp\n1,5,3\n")
    attributes = tmp_path / "items.parquet"
    pd.DataFrame({"sku": [5, 6], "weight": [0.5, 1.0]}).set_index("sku").to_parquet(attributes)

    raw = load_tabular(path, item_attributes_path=attributes, item_id_column="sku")

    assert raw.item_attributes.index.tolist() == ["5", "6"]
    assert raw.item_attributes["weight"].tolist() == [0.5, 1.0]


def test_tabular_attributes_duplicate_item(tmp_path):
    path = tmp_path / "log.csv"
    path.write_text("user_id,item_id,timestamp\n1,a,3\n")
    attributes = tmp_path / "items.csv"
    attributes.write_text("item_id,price\na,1\nb,2\na,3\n")

    message = error_text(load_tabular, path, item_attributes_path=attributes)

    assert message == (f"{attributes}, line 4: item 'a' already has attributes on line 2; "
                       "keep one row per item")


def test_tabular_attributes_text_value(tmp_path):
    path = tmp_path / "log.csv"
    path.write_text("user_id,item_id,timestamp\n1,a,3\n")
    attributes = tmp_path / "items.csv"
    attributes.write_text("item_id,price\na,1\nb,cheap\n")

    message = error_text(load_tabular, path, item_attributes_path=attributes)

    assert message == (f"{attributes}, line 3: attribute 'cheap' in column 'price' is not a "
                       "number; encode it as numbers or drop the column")


def test_tabular_attributes_not_finite(tmp_path):
    path = tmp_path / "log.csv"
    path.write_text("user_id,item_id,timestamp\n1,a,3\n")
    attributes = tmp_path / "items.csv"
    attributes.write_text("item_id,price\na,1\nb,inf\n")

    message = error_text(load_tabular, path, item_attributes_path=attributes)

    assert message == f"{attributes}, line 3: non-finite attribute 'inf' in column 'price'"


def test_tabular_attributes_missing_value(tmp_path):
    path = tmp_path / "log.csv"
    path.write_text("user_id,item_id,timestamp\n1,a,3\n")
    attributes = tmp_path / "items.csv"
    attributes.write_text("item_id,price\na,\n")

    message = error_text(load_tabular, path, item_attributes_path=attributes)

    assert message == f"{attributes}, line 2: missing value in attribute column 'price'"
