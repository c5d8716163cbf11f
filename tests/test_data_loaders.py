"""Format loaders: RecBole atomic files, GroupLens MovieLens raw files, timestamp context."""

from __future__ import annotations

import calendar
from pathlib import Path

import numpy as np
import pytest

from convrec.data.atomic import load_atomic
from convrec.data.context import CONTEXT_NAMES, GAP_COLUMNS, timestamp_context
from convrec.data.movielens import ML_100K_GENRES, load_ml1m, load_ml100k
from convrec.errors import DataError

INTER_HEADER = "user_id:token\titem_id:token\trating:float\ttimestamp:float\n"
ITEM_HEADER = "item_id:token\tmovie_title:token_seq\trelease_year:token\tclass:token_seq\n"


def write(path: Path, text: str | bytes, encoding: str = "utf-8") -> Path:
    path.write_bytes(text if isinstance(text, bytes) else text.encode(encoding))
    return path


def u_item_line(item: str, title: str, date: str, genres: tuple[str, ...]) -> str:
    flags = "|".join("1" if genre in genres else "0" for genre in ML_100K_GENRES)
    return f"{item}|{title}|{date}||http://example.invalid/{item}|{flags}\n"


# ---------------------------------------------------------------------------------------------
# RecBole atomic files
# ---------------------------------------------------------------------------------------------


def test_atomic_reads_interactions(tmp_path):
    inter = write(tmp_path / "toy.inter", INTER_HEADER + "u1\ti9\t4\t100\nu2\ti0\t3\t50.7\n")
    raw = load_atomic(inter)
    assert raw.name == "toy"
    assert raw.interactions["user"].tolist() == ["u1", "u2"]
    assert raw.interactions["item"].tolist() == ["i9", "i0"]
    assert raw.interactions["timestamp"].tolist() == [100, 50]
    assert raw.interactions["line"].tolist() == [2, 3]
    assert raw.has_calendar_time
    assert raw.item_attributes is None
    assert raw.notes == ["toy.inter: fields not used: rating"]


def test_atomic_item_attributes(tmp_path):
    inter = write(tmp_path / "toy.inter", INTER_HEADER + "1\t1\t4\t100\n")
    item = write(
        tmp_path / "toy.item",
        ITEM_HEADER
        + "1\tToy Story\t1995\tAnimation Comedy\n"
        + "2\tHeat\t1975\tAction Zombie\n"
        + "3\tLost\tunkonwn\tunknown\n",
    )
    raw = load_atomic(inter, item)
    attributes = raw.item_attributes
    assert attributes.columns.tolist() == [
        "class=unknown", "class=Action", "class=Animation", "class=Comedy", "class=Zombie",
        "release_year",
    ]
    assert attributes.index.tolist() == ["1", "2", "3"]
    assert attributes.loc["1"].tolist() == [0.0, 0.0, 1.0, 1.0, 0.0, 1.0]
    assert attributes.loc["2"].tolist() == [0.0, 1.0, 0.0, 0.0, 1.0, 0.0]
    assert attributes.loc["3"].tolist() == [1.0, 0.0, 0.0, 0.0, 0.0, 0.0]
    assert raw.filters[0].what == "items without a release_year"
    assert raw.filters[0].count == 1
    assert raw.filters[0].reason == "release_year set to 0, the value of the oldest year; items '3'"
    assert raw.notes[-1] == "toy.item: fields not used as attributes: movie_title:token_seq"


def test_atomic_float_attribute_scaled(tmp_path):
    inter = write(tmp_path / "toy.inter", INTER_HEADER + "1\t1\t4\t100\n")
    item = write(tmp_path / "toy.item", "item_id:token\tprice:float\n1\t10\n2\t30\n3\t20\n")
    attributes = load_atomic(inter, item).item_attributes
    assert attributes.loc["1", "price"] == 0.0
    assert attributes.loc["2", "price"] == 1.0
    assert attributes.loc["3", "price"] == 0.5


@pytest.mark.parametrize("value", ["nan", "inf", "-inf", "1e999"])
def test_atomic_nonfinite_attribute_line(tmp_path, value):
    inter = write(tmp_path / "toy.inter", INTER_HEADER + "1\t1\t4\t100\n")
    item = write(
        tmp_path / "toy.item",
        f"item_id:token\tprice:float\n3\t10\n7\t{value}\n8\t20\n9\tnan\n",
    )
    with pytest.raises(DataError) as error:
        load_atomic(inter, item)
    assert str(error.value) == (
        f"{item}, line 3: item '7' has attribute 'price' = {value!r}, which is not a finite "
        "number (2 such values in 'price'); replace it with a finite number"
    )


def test_atomic_infinite_year_line(tmp_path):
    inter = write(tmp_path / "toy.inter", INTER_HEADER + "1\t1\t4\t100\n")
    item = write(tmp_path / "toy.item", "item_id:token\tyear:token\n1\t1990\n2\tinf\n")
    with pytest.raises(DataError) as error:
        load_atomic(inter, item)
    assert str(error.value) == (
        f"{item}, line 3: item '2' has attribute 'year' = 'inf', which is not a finite "
        "number (1 such values in 'year'); replace it with a finite number"
    )


def test_atomic_unparseable_float_attribute(tmp_path):
    inter = write(tmp_path / "toy.inter", INTER_HEADER + "1\t1\t4\t100\n")
    item = write(tmp_path / "toy.item", "item_id:token\tprice:float\n1\t10\n2\tcheap\n")
    with pytest.raises(DataError) as error:
        load_atomic(inter, item)
    assert str(error.value) == f"{item}, line 3: price 'cheap' is not a number"


def test_atomic_repeated_header(tmp_path):
    inter = write(
        tmp_path / "toy.inter", INTER_HEADER + "1\t1\t4\t100\n" + INTER_HEADER + "2\t1\t4\t100\n"
    )
    with pytest.raises(DataError) as error:
        load_atomic(inter)
    header = INTER_HEADER.rstrip("\n")
    assert str(error.value) == (
        f"{inter}, line 3: the header line is repeated here ({header!r}); remove it (joining "
        "atomic files with cat keeps every file's header)"
    )
    assert error.value.line == 3


def test_atomic_latin1_bytes(tmp_path):
    body = b"1\t1\t4\t100\ncaf\xe9\t1\t4\t9\n"
    inter = write(tmp_path / "toy.inter", INTER_HEADER.encode() + body)
    with pytest.raises(DataError) as error:
        load_atomic(inter)
    offset = len(INTER_HEADER) + len("1\t1\t4\t100\ncaf")
    assert str(error.value) == (
        f"{inter}, line 3: invalid UTF-8 byte(s) b'\\xe9' at byte offset {offset}; convert the "
        "file to UTF-8 (e.g. iconv -f latin1 -t utf-8)"
    )


def test_atomic_wrong_field_count(tmp_path):
    inter = write(tmp_path / "toy.inter", INTER_HEADER + "1\t1\t4\t100\n2,1,4,100\n")
    with pytest.raises(DataError) as error:
        load_atomic(inter)
    assert str(error.value) == (
        f"{inter}, line 3: expected 4 fields separated by '\\t', found 1 field(s): "
        "'2,1,4,100'; RecBole atomic files are tab-separated with the 4 fields of the header"
    )


def test_atomic_empty_line(tmp_path):
    inter = write(tmp_path / "toy.inter", INTER_HEADER + "1\t1\t4\t100\n\n2\t1\t4\t100\n")
    with pytest.raises(DataError) as error:
        load_atomic(inter)
    assert str(error.value) == (
        f"{inter}, line 3: expected 4 fields separated by '\\t', found an empty line; RecBole "
        "atomic files are tab-separated with the 4 fields of the header"
    )


def test_atomic_comma_header(tmp_path):
    inter = write(tmp_path / "toy.inter", "user_id:token,item_id:token\n1,1\n")
    with pytest.raises(DataError) as error:
        load_atomic(inter)
    assert str(error.value) == (
        f"{inter}, line 1: the header 'user_id:token,item_id:token' contains ',' but no tab; "
        "RecBole atomic files are tab-separated"
    )


def test_atomic_untyped_header(tmp_path):
    inter = write(tmp_path / "toy.inter", "user_id\titem_id:token\n1\t1\n")
    with pytest.raises(DataError) as error:
        load_atomic(inter)
    assert str(error.value) == (
        f"{inter}, line 1: header field 'user_id' is not name:type with a type in token, "
        "token_seq, float, float_seq; found the header 'user_id\\titem_id:token'"
    )


def test_atomic_bad_timestamp(tmp_path):
    inter = write(tmp_path / "toy.inter", INTER_HEADER + "1\t1\t4\t100\n1\t2\t4\t2020-01-01\n")
    with pytest.raises(DataError) as error:
        load_atomic(inter)
    assert str(error.value) == f"{inter}, line 3: timestamp '2020-01-01' is not a number"


def test_atomic_millisecond_timestamp(tmp_path):
    inter = write(tmp_path / "toy.inter", INTER_HEADER + "1\t1\t4\t1600000000000000\n")
    with pytest.raises(DataError) as error:
        load_atomic(inter)
    assert str(error.value) == (
        f"{inter}, line 2: timestamp '1600000000000000' is out of range; timestamps must be Unix "
        "seconds from -9223372036 to 9223372036 (the years 1677 to 2262), so divide milliseconds "
        "by 1000"
    )


def test_atomic_empty_item_id(tmp_path):
    inter = write(tmp_path / "toy.inter", INTER_HEADER + "1\t1\t4\t100\n1\t\t4\t100\n")
    with pytest.raises(DataError) as error:
        load_atomic(inter)
    assert str(error.value) == f"{inter}, line 3: item_id is empty; every row needs an id"


def test_atomic_missing_user_field(tmp_path):
    inter = write(tmp_path / "toy.inter", "uid:token\titem_id:token\n1\t1\n")
    with pytest.raises(DataError) as error:
        load_atomic(inter)
    assert str(error.value) == (
        f"{inter}, line 1: the header has no user_id field (found uid:token, item_id:token); "
        "rename the column to user_id"
    )


def test_atomic_without_timestamp(tmp_path):
    inter = write(tmp_path / "toy.inter", "user_id:token\titem_id:token\n1\t5\n1\t6\n")
    raw = load_atomic(inter)
    assert not raw.has_calendar_time
    assert raw.interactions["timestamp"].tolist() == [0, 1]


def test_atomic_repeated_item_row(tmp_path):
    inter = write(tmp_path / "toy.inter", INTER_HEADER + "1\t1\t4\t100\n")
    item = write(tmp_path / "toy.item", ITEM_HEADER + "7\tA\t1990\tDrama\n7\tB\t1991\tDrama\n")
    with pytest.raises(DataError) as error:
        load_atomic(inter, item)
    assert str(error.value) == (
        f"{item}, line 3: item_id '7' is repeated (first on line 2); keep one row per id"
    )


# ---------------------------------------------------------------------------------------------
# MovieLens raw files
# ---------------------------------------------------------------------------------------------


def test_ml100k_reads_latin1_items(tmp_path):
    write(tmp_path / "u.data", "1\t10\t5\t881250949\r\n2\t20\t3\t881250950\r\n")
    write(
        tmp_path / "u.item",
        u_item_line("10", "Misérables, Les (1995)", "01-Jan-1995", ("Drama", "Musical"))
        + u_item_line("20", "Old (1935)", "15-Mar-1935", ("Comedy",))
        + u_item_line("30", "unknown", "", ("unknown",)),
        encoding="latin-1",
    )
    raw = load_ml100k(tmp_path)
    attributes = raw.item_attributes
    assert raw.interactions["timestamp"].tolist() == [881250949, 881250950]
    assert raw.interactions["line"].tolist() == [1, 2]
    assert attributes.shape == (3, 20)
    assert attributes.columns[-1] == "release_year"
    assert attributes.loc["10", "genre=Musical"] == 1.0
    assert attributes.loc["10", "genre=Comedy"] == 0.0
    assert attributes.loc["10", "release_year"] == 1.0
    assert attributes.loc["20", "release_year"] == 0.0
    assert attributes.loc["30", "release_year"] == 0.0
    assert raw.filters[0].count == 1


def test_u_data_double_colon(tmp_path):
    u_data = write(tmp_path / "u.data", "1\t10\t5\t881250949\n1::20::3::881250950\n")
    with pytest.raises(DataError) as error:
        load_ml100k(tmp_path)
    assert str(error.value) == (
        f"{u_data}, line 2: found '::' separators in '1::20::3::881250950'; u.data is "
        "tab-separated ('::' is the ML-1M ratings.dat format, so load that directory as ML-1M)"
    )


def test_u_item_bad_genre_flag(tmp_path):
    write(tmp_path / "u.data", "1\t10\t5\t881250949\n")
    line = u_item_line("10", "A (1995)", "01-Jan-1995", ("Drama",)).replace("|1|", "|yes|")
    u_item = write(tmp_path / "u.item", line, encoding="latin-1")
    with pytest.raises(DataError) as error:
        load_ml100k(tmp_path)
    assert str(error.value) == (
        f"{u_item}, line 1: genre flag 'Drama' is 'yes'; flags must be 0 or 1"
    )


def test_ml100k_without_u_item(tmp_path):
    write(tmp_path / "u.data", "1\t10\t5\t881250949\n")
    raw = load_ml100k(tmp_path)
    assert raw.item_attributes is None
    assert raw.notes[-1] == "u.item not found: the dataset has no item attributes"


def test_ml1m_reads_titles_and_genres(tmp_path):
    write(tmp_path / "ratings.dat", "1::1193::5::978300760\n1::661::3::978302109\n")
    write(
        tmp_path / "movies.dat",
        "1193::One Flew Over the Cuckoo's Nest (1975)::Drama\n"
        "661::James and the Giant Peach (1996)::Animation|Children's|Musical\n"
        "7::Café (no year)::Comedy\n",
        encoding="latin-1",
    )
    raw = load_ml1m(tmp_path)
    attributes = raw.item_attributes
    assert raw.name == "ml-1m"
    assert raw.interactions["item"].tolist() == ["1193", "661"]
    assert attributes.columns.tolist() == [
        "genre=Animation", "genre=Children's", "genre=Comedy", "genre=Drama", "genre=Musical",
        "release_year",
    ]
    assert attributes.loc["661"].tolist() == [1.0, 1.0, 0.0, 0.0, 1.0, 1.0]
    assert attributes.loc["1193", "release_year"] == 0.0
    assert raw.filters[0].reason == "release_year set to 0, the value of the oldest year; items '7'"


def test_ratings_dat_tabs(tmp_path):
    ratings = write(tmp_path / "ratings.dat", "1\t1193\t5\t978300760\n")
    with pytest.raises(DataError) as error:
        load_ml1m(tmp_path)
    assert str(error.value) == (
        f"{ratings}, line 1: expected 4 fields separated by '::', found 1 field(s): "
        "'1\\t1193\\t5\\t978300760'; ratings.dat is '::'-separated: "
        "UserID::MovieID::Rating::Timestamp (a tab-separated file is the ML-100K u.data format)"
    )


def test_ratings_dat_colon_in_field(tmp_path):
    # "5:" followed by "::" must not shift the fields of the line.
    write(tmp_path / "ratings.dat", "1::7::5:::978300760\n")
    with pytest.raises(DataError) as error:
        load_ml1m(tmp_path)
    assert str(error.value).endswith("timestamp ':978300760' is not a number")


# ---------------------------------------------------------------------------------------------
# Timestamp context
# ---------------------------------------------------------------------------------------------


def test_context_calendar_values():
    # 2000-01-01 was a Saturday in ISO week 52 of 1999; 2004-12-31 a Friday in ISO week 53.
    first = calendar.timegm((2000, 1, 1, 0, 0, 0))
    last = calendar.timegm((2004, 12, 31, 23, 59, 59))
    context = timestamp_context(np.array([first, last]))
    assert context.dtype == np.float32
    np.testing.assert_allclose(context[0], [0.0, 0.0, 0.0, 5 / 6, 0.0, 51 / 52], rtol=1e-6)
    np.testing.assert_allclose(context[1], [1.0, 1.0, 1.0, 4 / 6, 365 / 365, 1.0], rtol=1e-6)


def test_context_single_year_is_zero():
    context = timestamp_context(np.array([calendar.timegm((1998, 3, 1, 0, 0, 0))] * 2))
    assert context[:, 0].tolist() == [0.0, 0.0]


def test_context_names_and_gaps():
    assert CONTEXT_NAMES == ("year", "month", "day", "weekday", "day_of_year", "week_of_year")
    assert GAP_COLUMNS == (0, 1, 2)
