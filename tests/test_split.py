"""Tests of the leave-one-out split, the evaluation candidates and the stored split file."""

from __future__ import annotations

import numpy as np
import pytest

from convrec.data.schema import InteractionData
from convrec.data.split import (
    dataset_fingerprint,
    load_or_make_split,
    load_split,
    make_split,
    save_split,
)
from convrec.errors import ConvbenchError


def make_data(sequences: list[list[int]], num_items: int,
              timestamps: list[list[int]] | None = None) -> InteractionData:
    """Build an InteractionData whose context rows are [item, position], to check alignment."""
    if timestamps is None:
        timestamps = [list(range(len(sequence))) for sequence in sequences]
    contexts = [
        np.stack([np.asarray(sequence, dtype=np.float32),
                  np.arange(len(sequence), dtype=np.float32)], axis=1).reshape(-1, 2)
        for sequence in sequences
    ]
    return InteractionData(
        name="hand",
        user_ids=np.array([""] + [f"u{u}" for u in range(1, len(sequences) + 1)]),
        item_ids=np.array([""] + [f"i{i}" for i in range(1, num_items + 1)]),
        sequences=[np.zeros(0, dtype=np.int64)]
        + [np.asarray(sequence, dtype=np.int64) for sequence in sequences],
        timestamps=[np.zeros(0, dtype=np.int64)]
        + [np.asarray(times, dtype=np.int64) for times in timestamps],
        contexts=[np.zeros((0, 2), dtype=np.float32)] + contexts,
        item_attributes=np.zeros((num_items + 1, 3), dtype=np.float32),
        attribute_names=("a", "b", "c"),
        context_names=("item", "position"),
        gap_columns=(1,),
    )


def random_data(num_users: int = 30, num_items: int = 200, seed: int = 0) -> InteractionData:
    rng = np.random.default_rng(seed)
    sequences = [list(rng.choice(num_items, size=rng.integers(3, 40), replace=False) + 1)
                 for _ in range(num_users)]
    return make_data(sequences, num_items)


def test_split_leave_one_out():
    split = make_split(make_data([[5, 3, 9, 1, 7]], num_items=120), num_eval_negatives=10)
    assert split.train_items[1].tolist() == [5, 3, 9]
    assert split.valid_item[1] == 1
    assert split.test_item[1] == 7


def test_split_contexts_follow_items():
    split = make_split(make_data([[5, 3, 9, 1, 7]], num_items=120), num_eval_negatives=10)
    assert split.train_context[1].tolist() == [[5, 0], [3, 1], [9, 2]]
    assert split.valid_context[1].tolist() == [1, 3]
    assert split.test_context[1].tolist() == [7, 4]


def test_split_equal_timestamps_keep_order():
    data = make_data([[4, 2, 3, 1]], num_items=120, timestamps=[[10, 10, 10, 10]])
    split = make_split(data, num_eval_negatives=10)
    assert split.train_items[1].tolist() == [4, 2]
    assert split.valid_item[1] == 3
    assert split.test_item[1] == 1


def test_split_short_users_train_only():
    data = make_data([[1], [2, 3], [4, 5, 6]], num_items=120)
    split = make_split(data, num_eval_negatives=10)
    assert split.train_items[1].tolist() == [1]
    assert split.train_items[2].tolist() == [2, 3]
    assert split.valid_item[1:3].tolist() == [0, 0]
    assert split.test_item[1:3].tolist() == [0, 0]
    assert not split.valid_candidates[1:3].any()
    assert not split.test_candidates[1:3].any()
    assert split.eval_users("valid").tolist() == [3]
    assert split.eval_users("test").tolist() == [3]


def test_split_index_zero_unused():
    split = make_split(make_data([[1, 2, 3]], num_items=120), num_eval_negatives=10)
    assert len(split.train_items[0]) == 0
    assert split.valid_item[0] == 0
    assert not split.test_candidates[0].any()


def test_split_user_items_cover_all_splits():
    split = make_split(make_data([[9, 3, 9, 5, 1]], num_items=120), num_eval_negatives=10)
    assert split.user_items[1].tolist() == [1, 3, 5, 9]


def test_split_rejects_unknown_eval_name():
    split = make_split(make_data([[1, 2, 3]], num_items=120), num_eval_negatives=10)
    with pytest.raises(ConvbenchError, match="'train'"):
        split.eval_users("train")


@pytest.mark.parametrize("which", ["valid", "test"])
def test_candidates_exclude_user_items(which):
    split = make_split(random_data(), seed=3)
    candidates = getattr(split, f"{which}_candidates")
    targets = getattr(split, f"{which}_item")
    for u in split.eval_users(which):
        negatives = candidates[u, 1:]
        assert candidates[u, 0] == targets[u]
        assert len(negatives) == 100
        assert len(np.unique(negatives)) == 100, f"user {u} has repeated negatives"
        assert not np.isin(negatives, split.user_items[u]).any(), f"user {u}"
        assert negatives.min() >= 1
        assert negatives.max() <= split.num_items


def test_candidates_dense_user_use_exact_path():
    # 150 touched of 260 items leaves 110 untouched, so the complement is drawn exactly.
    sequence = list(range(1, 151))
    split = make_split(make_data([sequence], num_items=260), seed=1)
    negatives = split.test_candidates[1, 1:]
    assert len(np.unique(negatives)) == 100
    assert negatives.min() > 150


def test_candidates_same_seed_identical():
    data = random_data()
    first = make_split(data, seed=7)
    second = make_split(data, seed=7)
    assert np.array_equal(first.valid_candidates, second.valid_candidates)
    assert np.array_equal(first.test_candidates, second.test_candidates)


def test_candidates_other_seed_differ():
    data = random_data()
    first = make_split(data, seed=7)
    second = make_split(data, seed=8)
    assert not np.array_equal(first.test_candidates, second.test_candidates)


def test_candidates_too_few_untouched_items():
    data = make_data([[1, 2, 3], list(range(1, 31))], num_items=40)
    with pytest.raises(ConvbenchError, match=r"user 2 \('u2'\).*30 of 40 items.*leaves 10"):
        make_split(data, num_eval_negatives=20)


def test_candidates_too_few_untouched_fix():
    data = make_data([[1, 2, 3], list(range(1, 31))], num_items=40)
    with pytest.raises(ConvbenchError) as error:
        make_split(data, num_eval_negatives=20)
    assert str(error.value) == (
        "user 2 ('u2') of dataset 'hand' interacted with 30 of 40 items, which leaves 10 "
        "never-touched items for 20 evaluation negatives (1 evaluated users have too few). "
        "Remove from the data the users who interacted with more than 20 distinct items, or use "
        "a dataset with more items. (Library callers of make_split can instead pass "
        "num_eval_negatives of at most 10.)"
    )


def test_candidates_fewer_items_than_negatives():
    data = make_data([[1, 2, 3]], num_items=3)
    with pytest.raises(ConvbenchError) as error:
        make_split(data, num_eval_negatives=100)
    assert str(error.value).endswith(
        "(1 evaluated users have too few). Use a dataset with more than 100 items."
    )


def test_split_rejects_item_out_of_range():
    data = make_data([[1, 2, 300]], num_items=120)
    with pytest.raises(ConvbenchError, match="outside 1..120"):
        make_split(data)


def test_fingerprint_tracks_timestamps():
    data = random_data()
    changed = random_data()
    changed.timestamps[4] = changed.timestamps[4] + 1
    assert dataset_fingerprint(data) != dataset_fingerprint(changed)


def test_save_load_round_trip(tmp_path):
    data = random_data()
    data.sequences.append(np.array([7], dtype=np.int64))
    data.timestamps.append(np.array([0], dtype=np.int64))
    data.contexts.append(np.array([[7.0, 0.0]], dtype=np.float32))
    data.user_ids = np.append(data.user_ids, "short")
    split = make_split(data, seed=5)
    path = tmp_path / "splits" / "hand.npz"
    save_split(split, path)
    loaded = load_split(path, data)

    for name in ("dataset_name", "num_users", "num_items", "seed", "fingerprint"):
        assert getattr(loaded, name) == getattr(split, name), name
    for name in ("valid_item", "test_item", "valid_context", "test_context",
                 "valid_candidates", "test_candidates"):
        assert np.array_equal(getattr(loaded, name), getattr(split, name)), name
        assert getattr(loaded, name).dtype == getattr(split, name).dtype, name
    for name in ("train_items", "train_context", "user_items"):
        stored, original = getattr(loaded, name), getattr(split, name)
        assert len(stored) == len(original), name
        for u in range(len(original)):
            assert np.array_equal(stored[u], original[u]), f"{name}[{u}]"


def test_save_leaves_no_temporary_file(tmp_path):
    split = make_split(random_data(), seed=5)
    save_split(split, tmp_path / "hand.npz")
    assert [p.name for p in tmp_path.iterdir()] == ["hand.npz"]


def test_saved_file_has_no_object_arrays(tmp_path):
    split = make_split(random_data(), seed=5)
    save_split(split, tmp_path / "hand.npz")
    with np.load(tmp_path / "hand.npz", allow_pickle=False) as stored:
        for name in stored.files:
            assert stored[name].dtype != object, name


def test_load_rejects_changed_dataset(tmp_path):
    data = random_data()
    split = make_split(data, seed=5)
    save_split(split, tmp_path / "hand.npz")
    changed = random_data()
    changed.sequences[2] = changed.sequences[2][::-1].copy()
    expected = dataset_fingerprint(changed)
    with pytest.raises(ConvbenchError, match="hand.npz") as error:
        load_split(tmp_path / "hand.npz", changed)
    assert split.fingerprint in str(error.value)
    assert expected in str(error.value)


def test_load_missing_file(tmp_path):
    with pytest.raises(ConvbenchError, match="not found"):
        load_split(tmp_path / "absent.npz")


def test_load_corrupt_file(tmp_path):
    path = tmp_path / "broken.npz"
    path.write_bytes(b"not a zip archive")
    with pytest.raises(ConvbenchError, match="broken.npz"):
        load_split(path)


def test_load_or_make_reuses_file(tmp_path):
    data = random_data()
    path = tmp_path / "hand.npz"
    created = load_or_make_split(data, path, seed=2, num_eval_negatives=100)
    loaded = load_or_make_split(data, path, seed=2, num_eval_negatives=100)
    assert path.is_file()
    assert np.array_equal(created.test_candidates, loaded.test_candidates)


def test_load_or_make_rejects_other_seed(tmp_path):
    data = random_data()
    path = tmp_path / "hand.npz"
    load_or_make_split(data, path, seed=2, num_eval_negatives=100)
    with pytest.raises(ConvbenchError, match="seed 2"):
        load_or_make_split(data, path, seed=3, num_eval_negatives=100)
