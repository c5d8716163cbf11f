"""build_dataset (re-indexing, stable time order, validation, filters) and the dataset summary."""

from __future__ import annotations

import calendar
import logging

import numpy as np
import pandas as pd
import pytest

from convrec.data.build import build_dataset
from convrec.data.context import CONTEXT_NAMES
from convrec.data.schema import FilterCount, RawDataset
from convrec.data.summary import format_summary, summarize
from convrec.errors import DataError

DAY = 86_400
START = calendar.timegm((2001, 6, 1, 0, 0, 0))


def make_raw(
    rows: list[tuple[str, str, int]],
    attributes: pd.DataFrame | None = None,
    **fields,
) -> RawDataset:
    interactions = pd.DataFrame(rows, columns=["user", "item", "timestamp"])
    interactions["line"] = np.arange(1, len(rows) + 1)
    return RawDataset(
        name="toy",
        source="toy.csv",
        interactions=interactions,
        item_attributes=attributes,
        **fields,
    )


def sequence_of(data, user_id: str) -> list[str]:
    user = data.user_ids.tolist().index(user_id)
    return data.item_ids[data.sequences[user]].tolist()


def filter_named(data, what: str) -> FilterCount:
    return next(entry for entry in data.filters if entry.what == what)


# ---------------------------------------------------------------------------------------------
# Re-indexing and order
# ---------------------------------------------------------------------------------------------


def test_build_item_zero_gets_nonzero_index():
    data = build_dataset(make_raw([("u", "0", START), ("u", "5", START + 1), ("v", "0", START)]))
    assert data.item_ids.tolist() == ["", "0", "5"]
    assert data.sequences[1].tolist() == [1, 2]
    assert data.sequences[2].tolist() == [1]


def test_build_string_ids_first_appearance():
    rows = [("bob", "tt-9", START), ("alice", "tt-1", START), ("bob", "tt-1", START + 5)]
    data = build_dataset(make_raw(rows))
    assert data.user_ids.tolist() == ["", "bob", "alice"]
    assert data.item_ids.tolist() == ["", "tt-9", "tt-1"]
    assert data.num_users == 2
    assert data.num_items == 2


def test_build_sparse_ids_are_contiguous():
    rows = [("1000000", "999999", START), ("7", "42", START), ("1000000", "3", START + 1)]
    data = build_dataset(make_raw(rows))
    indexes = np.concatenate(data.sequences[1:])
    assert sorted(set(indexes.tolist())) == [1, 2, 3]
    assert 0 not in indexes
    assert len(data.sequences) == 3
    assert data.sequences[0].size == 0


def test_build_sorts_each_user_by_time():
    rows = [("u", "c", START + 30), ("u", "a", START + 10), ("u", "b", START + 20)]
    data = build_dataset(make_raw(rows))
    assert sequence_of(data, "u") == ["a", "b", "c"]
    assert data.timestamps[1].tolist() == [START + 10, START + 20, START + 30]


def test_build_equal_timestamps_keep_file_order():
    items = ["z", "y", "x", "w", "v", "u", "t", "s", "r", "q", "p", "o", "n", "m", "l", "k", "j"]
    rows = [("u", item, START) for item in items] + [("u", "first", START - 1)]
    data = build_dataset(make_raw(rows))
    assert sequence_of(data, "u") == ["first", *items]


def test_build_contexts_follow_the_sort():
    rows = [("u", "late", START + 40 * DAY), ("u", "early", START)]
    data = build_dataset(make_raw(rows))
    month = CONTEXT_NAMES.index("month")
    assert data.contexts[1][:, month].tolist() == pytest.approx([5 / 11, 6 / 11])


# ---------------------------------------------------------------------------------------------
# Counted filters
# ---------------------------------------------------------------------------------------------


def test_build_duplicates_counted_and_kept():
    rows = [("u", "a", START), ("u", "a", START), ("u", "a", START + 1), ("u", "a", START)]
    data = build_dataset(make_raw(rows))
    assert filter_named(data, "duplicate (user, item, timestamp) rows").count == 2
    assert len(data.sequences[1]) == 4


def test_build_short_users_counted_and_kept():
    rows = [("one", "a", START), ("two", "a", START), ("two", "b", START + 1)]
    rows += [("three", item, START + k) for k, item in enumerate("abc")]
    data = build_dataset(make_raw(rows))
    assert filter_named(data, "users with fewer than 3 interactions").count == 2
    assert data.num_users == 3


def test_build_items_without_attributes(caplog):
    attributes = pd.DataFrame({"genre=Drama": [1.0]}, index=pd.Index(["a"]))
    with caplog.at_level(logging.WARNING, logger="convrec.data.build"):
        data = build_dataset(make_raw([("u", "a", START), ("u", "b", START)], attributes))
    assert data.item_attributes.tolist() == [[0.0], [1.0], [0.0]]
    assert filter_named(data, "items without attributes").count == 1
    assert "1 of 2 items in toy have no attributes and get a zero vector, e.g. 'b'" in caplog.text


def test_build_drops_unused_attribute_rows():
    attributes = pd.DataFrame({"price": [0.5, 0.25, 1.0]}, index=pd.Index(["a", "b", "c"]))
    data = build_dataset(make_raw([("u", "b", START)], attributes))
    assert data.item_attributes.tolist() == [[0.0], [0.25]]
    assert data.item_attributes.dtype == np.float32
    assert filter_named(data, "attribute rows of items without interactions").count == 2


def test_build_nan_attribute_names_item():
    attributes = pd.DataFrame(
        {"genre=Drama": [1.0, 0.0], "price": [0.5, np.nan]}, index=pd.Index(["a", "b"])
    )
    with pytest.raises(DataError) as error:
        build_dataset(make_raw([("u", "a", START)], attributes))
    assert str(error.value) == (
        "toy.csv: item 'b' has attribute 'price' = nan; attributes must be finite numbers (1 "
        "non-finite values in the item attributes of 'toy'); fix or remove them in the "
        "attribute file"
    )


def test_build_inf_attribute_names_item():
    attributes = pd.DataFrame({"price": [np.inf, -np.inf]}, index=pd.Index(["0", "1"]))
    with pytest.raises(DataError) as error:
        build_dataset(make_raw([("u", "0", START)], attributes))
    assert str(error.value) == (
        "toy.csv: item '0' has attribute 'price' = inf; attributes must be finite numbers (2 "
        "non-finite values in the item attributes of 'toy'); fix or remove them in the "
        "attribute file"
    )


def test_build_repeated_attribute_row():
    attributes = pd.DataFrame({"price": [1.0, 2.0]}, index=pd.Index(["a", "a"]))
    with pytest.raises(DataError) as error:
        build_dataset(make_raw([("u", "a", START)], attributes))
    assert str(error.value) == "item 'a' has more than one attribute row in 'toy'; keep one"


def test_build_keeps_loader_filters_first():
    repair = FilterCount("items without a release_year", 4, "set to 0")
    data = build_dataset(make_raw([("u", "a", START)], filters=[repair]))
    assert data.filters[0] == repair


# ---------------------------------------------------------------------------------------------
# Context and timestamps
# ---------------------------------------------------------------------------------------------


def test_build_derived_context_shape():
    data = build_dataset(make_raw([("u", "a", START), ("u", "b", START + DAY)]))
    assert data.context_names == CONTEXT_NAMES
    assert data.gap_columns == (0, 1, 2)
    assert data.contexts[1].shape == (2, 6)
    assert data.contexts[1].dtype == np.float32


def test_build_without_calendar_time():
    data = build_dataset(make_raw([("u", "a", 0), ("u", "b", 1)], has_calendar_time=False))
    assert data.context_names == ()
    assert data.gap_columns == ()
    assert data.contexts[1].shape == (2, 0)


def test_build_uses_given_context():
    context = pd.DataFrame({"year": [0.1, 0.2], "month": [0.3, 0.4], "day": [0.5, 0.6]})
    data = build_dataset(make_raw([("u", "a", START + 9), ("u", "b", START)], context=context))
    assert data.context_names == ("year", "month", "day")
    assert data.gap_columns == (0, 1, 2)
    np.testing.assert_allclose(data.contexts[1], [[0.2, 0.4, 0.6], [0.1, 0.3, 0.5]], rtol=1e-6)


def test_build_rejects_nonfinite_context():
    context = pd.DataFrame({"season": [0.1, np.nan]})
    with pytest.raises(DataError) as error:
        build_dataset(make_raw([("u", "a", START), ("u", "b", START)], context=context))
    assert str(error.value) == (
        "toy.csv, line 2: context 'season' is nan; context values must be finite (1 non-finite "
        "values in all)"
    )


def test_build_rejects_out_of_range_timestamp():
    rows = [("u", "a", START), ("u", "b", 10**13)]
    with pytest.raises(DataError) as error:
        build_dataset(make_raw(rows))
    assert str(error.value) == (
        "toy.csv, line 2: timestamp 10000000000000 is out of range; timestamps must be Unix "
        "seconds from -9223372036 to 9223372036 (the years 1677 to 2262)"
    )


def test_build_float_timestamp_out_of_range():
    rows = [("u", "a", START), ("u", "b", 1e20)]
    with pytest.raises(DataError) as error:
        build_dataset(make_raw(rows))
    assert str(error.value) == (
        "toy.csv, line 2: timestamp 1e+20 is out of range; timestamps must be Unix seconds "
        "from -9223372036 to 9223372036 (the years 1677 to 2262)"
    )


def test_build_order_index_out_of_range():
    rows = [("u", "a", 0), ("u", "b", 1e20)]
    with pytest.raises(DataError) as error:
        build_dataset(make_raw(rows, has_calendar_time=False))
    assert str(error.value) == (
        "toy.csv, line 2: timestamp 1e+20 is out of range; timestamps must be integers from "
        "-2**62 to 2**62"
    )


def test_build_rejects_nan_timestamp():
    rows = [("u", "a", START), ("u", "b", np.nan)]
    with pytest.raises(DataError) as error:
        build_dataset(make_raw(rows))
    assert str(error.value) == (
        "toy.csv, line 2: timestamp nan is not a finite number; timestamps must be Unix seconds "
        "from -9223372036 to 9223372036 (the years 1677 to 2262)"
    )


def test_build_rejects_empty_user_id():
    with pytest.raises(DataError) as error:
        build_dataset(make_raw([("u", "a", START), ("", "b", START)]))
    assert str(error.value) == "toy.csv, line 2: user id is empty; every row needs an id"


def test_build_rejects_no_interactions():
    with pytest.raises(DataError) as error:
        build_dataset(make_raw([]))
    assert str(error.value) == "toy.csv: no interactions found"


# ---------------------------------------------------------------------------------------------
# Summary
# ---------------------------------------------------------------------------------------------


def small_dataset():
    attributes = pd.DataFrame({"genre=Drama": [1.0, 0.0]}, index=pd.Index(["a", "b"]))
    rows = [("u", "a", START), ("u", "a", START), ("u", "b", START + 1), ("u", "c", START + 2)]
    rows += [("v", "a", START)]
    return build_dataset(make_raw(rows, attributes))


def test_summary_counts():
    summary = summarize(small_dataset())
    assert summary["users"] == 2
    assert summary["items"] == 3
    assert summary["interactions"] == 5
    assert summary["users_below_3"] == 1
    assert summary["duplicates"] == 1
    assert summary["items_without_attributes"] == 1
    assert summary["attribute_width"] == 1
    assert summary["context_width"] == 6


def test_summary_length_percentiles():
    lengths = summarize(small_dataset())["sequence_length"]
    assert lengths == {
        "min": 1, "p25": 1.75, "p50": 2.5, "p75": 3.25, "p90": 3.7, "p99": pytest.approx(3.97),
        "max": 4,
    }


def test_format_summary_lines():
    text = format_summary(summarize(small_dataset()))
    lines = text.splitlines()
    assert lines[0] == "dataset toy: 2 users, 3 items, 5 interactions"
    assert lines[1] == (
        "sequence length: min 1, p25 1.75, p50 2.5, p75 3.25, p90 3.7, p99 3.97, max 4"
    )
    assert lines[2] == "attributes (F=1): genre=Drama"
    assert "  items without attributes: 1 (given an all-zero vector)" in lines


def test_summary_training_users():
    # Lengths 1, 2, 3, 4 and 5 leave 1, 2, 1, 2 and 3 training interactions.
    rows = [(user, f"i{index}", START + index) for user, length in
            [("a", 1), ("b", 2), ("c", 3), ("d", 4), ("e", 5)] for index in range(length)]
    summary = summarize(build_dataset(make_raw(rows)))
    assert summary["users_with_2_training_interactions"] == 3


def test_format_summary_warns_no_training_users():
    rows = [(user, f"i{index}", START + index) for user in ("a", "b") for index in range(3)]
    lines = format_summary(summarize(build_dataset(make_raw(rows)))).splitlines()
    count = lines.index(
        "users with at least 2 training interactions after the leave-one-out split: 0 of 2"
    )
    assert lines[count + 1] == (
        "WARNING: no user has at least 2 training interactions after the leave-one-out split, "
        "so training on this dataset will fail. A user needs 2, or at least 4, interactions, "
        "because the last 2 of a user with 3 or more are held out."
    )


def test_format_summary_no_warning_when_trainable():
    text = format_summary(summarize(small_dataset()))
    assert "users with at least 2 training interactions after the leave-one-out split: 1 of 2" in (
        text.splitlines()
    )
    assert "WARNING" not in text
