"""Tests of the training samplers, the evaluation batches and the negative samplers."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from convrec.data.sampling import (
    ItemExclusions,
    PositionSampler,
    PrefixSampler,
    eval_batches,
    sample_distinct_negatives,
)
from convrec.data.schema import InteractionData
from convrec.data.split import make_split
from convrec.errors import ConvbenchError


def make_data(sequences: list[list[int]], num_items: int) -> InteractionData:
    """Build an InteractionData whose context rows are [item, position], to check alignment."""
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
        + [np.arange(len(sequence), dtype=np.int64) for sequence in sequences],
        contexts=[np.zeros((0, 2), dtype=np.float32)] + contexts,
        item_attributes=np.zeros((num_items + 1, 3), dtype=np.float32),
        attribute_names=("a", "b", "c"),
        context_names=("item", "position"),
        gap_columns=(1,),
    )


def random_split(num_users: int = 25, num_items: int = 120, seed: int = 0):
    """Split users with distinct items each, lengths 1..30, so positions can be recovered."""
    rng = np.random.default_rng(seed)
    sequences = [list(rng.choice(num_items, size=rng.integers(1, 31), replace=False) + 1)
                 for _ in range(num_users)]
    return make_split(make_data(sequences, num_items), num_eval_negatives=20)


def left_padded(values: list, width: int) -> list:
    kept = values[-width:] if width else []
    return [0] * (width - len(kept)) + kept


def collect(sampler) -> list:
    return list(iter(sampler))


def test_prefix_one_example_per_user():
    split = random_split()
    sampler = PrefixSampler(split, max_len=6, num_negatives=5, batch_size=4,
                            rng=np.random.default_rng(0))
    batches = collect(sampler)
    users = torch.cat([batch.users for batch in batches]).tolist()
    eligible = [u for u in range(1, split.num_users + 1) if len(split.train_items[u]) >= 2]
    assert sorted(users) == eligible
    assert len(batches) == len(sampler)
    assert len(sampler) == -(-len(eligible) // 4)


def test_prefix_profile_left_padded():
    split = random_split()
    sampler = PrefixSampler(split, max_len=6, num_negatives=5, batch_size=8,
                            rng=np.random.default_rng(1))
    for batch in collect(sampler):
        for row, user in enumerate(batch.users.tolist()):
            train = split.train_items[user].tolist()
            t = train.index(batch.candidate_items[row, 0].item())
            expected = left_padded(train[:t], 6)
            assert batch.profile_items[row].tolist() == expected, f"user {user}"


def test_prefix_context_matches_items():
    split = random_split()
    sampler = PrefixSampler(split, max_len=6, num_negatives=5, batch_size=8,
                            rng=np.random.default_rng(2))
    for batch in collect(sampler):
        # Context column 0 repeats the item id, and is 0 at padding.
        assert torch.equal(batch.profile_context[..., 0].long(), batch.profile_items)
        assert torch.equal(batch.candidate_context[:, 0].long(), batch.candidate_items[:, 0])
        assert batch.profile_context.dtype == torch.float32
        assert batch.profile_items.dtype == torch.int64


def test_prefix_padding_context_zero():
    split = random_split()
    sampler = PrefixSampler(split, max_len=30, num_negatives=5, batch_size=64,
                            rng=np.random.default_rng(3))
    batch = next(iter(sampler))
    padding = batch.profile_items == 0
    assert padding.any()
    assert not batch.profile_context[padding].any()


def test_prefix_end_position_range():
    data = make_data([[1, 2, 3, 4, 5, 6], [10, 11, 12, 13, 14]], num_items=40)
    split = make_split(data, num_eval_negatives=5)
    sampler = PrefixSampler(split, max_len=3, num_negatives=3, batch_size=2,
                            rng=np.random.default_rng(4))
    positives = {
        batch.candidate_items[row, 0].item()
        for _ in range(200)
        for batch in sampler
        for row in range(len(batch.users))
        if batch.users[row] == 1
    }
    # Training history [1, 2, 3, 4]: the positive is never the first item.
    assert positives == {2, 3, 4}


def test_prefix_negatives_valid():
    split = random_split()
    pool = np.unique(np.concatenate(split.train_items))
    sampler = PrefixSampler(split, max_len=6, num_negatives=10, batch_size=8,
                            rng=np.random.default_rng(5))
    for batch in collect(sampler):
        for row, user in enumerate(batch.users.tolist()):
            positive = batch.candidate_items[row, 0].item()
            negatives = batch.candidate_items[row, 1:].numpy()
            assert positive not in negatives, f"user {user}"
            assert len(np.unique(negatives)) == 10, f"user {user} has repeated negatives"
            assert not np.isin(negatives, split.train_items[user]).any(), f"user {user}"
            assert np.isin(negatives, pool).all(), f"user {user}"


def test_prefix_same_seed_same_batches():
    split = random_split()
    runs = [
        collect(PrefixSampler(split, max_len=6, num_negatives=5, batch_size=8,
                              rng=np.random.default_rng(9)))
        for _ in range(2)
    ]
    for first, second in zip(*runs, strict=True):
        assert torch.equal(first.users, second.users)
        assert torch.equal(first.candidate_items, second.candidate_items)


def test_prefix_too_few_negatives():
    split = make_split(make_data([[1, 2, 3, 4, 5], [6, 7]], num_items=40), num_eval_negatives=5)
    # Training items are {1, 2, 3, 6, 7}: user 1 can draw only 6 and 7.
    with pytest.raises(ConvbenchError, match="user 1 .* only 2 of the 5 training items"):
        PrefixSampler(split, max_len=3, num_negatives=3, batch_size=2,
                      rng=np.random.default_rng(0))


@pytest.mark.parametrize("sampler_class", [PrefixSampler, PositionSampler])
def test_sampler_no_user_with_two_items(sampler_class):
    split = make_split(make_data([[1], [2, 3, 4]], num_items=40), num_eval_negatives=5)
    options = {"num_negatives": 3} if sampler_class is PrefixSampler else {}
    with pytest.raises(ConvbenchError, match="no user has at least 2 training interactions"):
        sampler_class(split, max_len=3, batch_size=2, rng=np.random.default_rng(0), **options)


def test_sampler_rejects_zero_batch_size():
    split = random_split()
    with pytest.raises(ConvbenchError, match="batch_size must be at least 1"):
        PositionSampler(split, max_len=3, batch_size=0, rng=np.random.default_rng(0))


def test_position_positives_shifted():
    split = random_split()
    sampler = PositionSampler(split, max_len=8, batch_size=8, rng=np.random.default_rng(6))
    for batch in collect(sampler):
        for row, user in enumerate(batch.users.tolist()):
            train = split.train_items[user].tolist()
            assert batch.profile_items[row].tolist() == left_padded(train[:-1], 8), f"user {user}"
            assert batch.positive_items[row].tolist() == left_padded(train[1:], 8), f"user {user}"


def test_position_inputs_shift_into_positives():
    split = random_split()
    batch = next(iter(PositionSampler(split, max_len=8, batch_size=32,
                                      rng=np.random.default_rng(7))))
    # Where input j is an item, the positive at j is input j + 1.
    both = batch.profile_items[:, :-1] > 0
    assert both.any()
    assert torch.equal(batch.positive_items[:, :-1][both], batch.profile_items[:, 1:][both])


def test_position_padding_aligned():
    split = random_split()
    batch = next(iter(PositionSampler(split, max_len=30, batch_size=32,
                                      rng=np.random.default_rng(7))))
    padding = batch.profile_items == 0
    assert padding.any()
    assert torch.equal(padding, batch.positive_items == 0)
    assert torch.equal(padding, batch.negative_items == 0)
    assert not batch.target_context[padding].any()
    assert not batch.profile_context[padding].any()


def test_position_target_context_of_positive():
    split = random_split()
    batch = next(iter(PositionSampler(split, max_len=8, batch_size=32,
                                      rng=np.random.default_rng(8))))
    assert torch.equal(batch.target_context[..., 0].long(), batch.positive_items)
    assert torch.equal(batch.profile_context[..., 0].long(), batch.profile_items)


def test_position_negatives_outside_training():
    split = random_split()
    for batch in collect(PositionSampler(split, max_len=8, batch_size=8,
                                         rng=np.random.default_rng(9))):
        for row, user in enumerate(batch.users.tolist()):
            negatives = batch.negative_items[row]
            negatives = negatives[negatives > 0].numpy()
            assert not np.isin(negatives, split.train_items[user]).any(), f"user {user}"
            assert negatives.max() <= split.num_items


def test_position_user_covering_all_items():
    split = make_split(make_data([[1, 2], [2]], num_items=2), num_eval_negatives=1)
    with pytest.raises(ConvbenchError, match="user 1 .* all 2 items"):
        PositionSampler(split, max_len=3, batch_size=2, rng=np.random.default_rng(0))


def test_eval_valid_profile_is_training():
    split = random_split()
    for evaluation in eval_batches(split, "valid", max_len=8, batch_size=8):
        for row, user in enumerate(evaluation.users.tolist()):
            expected = left_padded(split.train_items[user].tolist(), 8)
            assert evaluation.batch.profile_items[row].tolist() == expected, f"user {user}"
        assert np.array_equal(evaluation.targets, split.valid_item[evaluation.users])


def test_eval_test_profile_ends_with_valid():
    split = random_split()
    for evaluation in eval_batches(split, "test", max_len=8, batch_size=8):
        for row, user in enumerate(evaluation.users.tolist()):
            history = split.train_items[user].tolist() + [int(split.valid_item[user])]
            profile = evaluation.batch.profile_items[row]
            assert profile.tolist() == left_padded(history, 8), f"user {user}"
            assert torch.equal(evaluation.batch.profile_context[row, -1],
                               torch.from_numpy(split.valid_context[user]))
        assert np.array_equal(evaluation.targets, split.test_item[evaluation.users])


def test_eval_context_of_target():
    split = random_split()
    for which in ("valid", "test"):
        for evaluation in eval_batches(split, which, max_len=8, batch_size=8):
            context = evaluation.batch.candidate_context[:, 0].long().numpy()
            assert np.array_equal(context, evaluation.targets), which


def test_eval_sampled_uses_stored_candidates():
    split = random_split()
    for evaluation in eval_batches(split, "test", max_len=8, batch_size=8):
        stored = torch.from_numpy(split.test_candidates[evaluation.users])
        assert torch.equal(evaluation.batch.candidate_items, stored)
        assert evaluation.exclude is None


def test_eval_order_deterministic():
    split = random_split()
    users = [np.concatenate([e.users for e in eval_batches(split, "valid", max_len=8,
                                                           batch_size=3)])
             for _ in range(2)]
    assert users[0].tolist() == split.eval_users("valid").tolist()
    assert users[1].tolist() == users[0].tolist()


def test_eval_full_exclude_mask():
    # User 1 repeats the test item 5 in training. User 2 has no repeats.
    data = make_data([[5, 2, 8, 3, 5], [1, 4, 6, 7]], num_items=10)
    split = make_split(data, num_eval_negatives=3)
    (evaluation,) = eval_batches(split, "test", max_len=4, batch_size=8, full=True)
    exclude = evaluation.exclude
    assert evaluation.batch.candidate_items is None
    assert exclude.shape == (2, 11)
    assert exclude.dtype == torch.bool
    assert torch.nonzero(exclude[0]).flatten().tolist() == [0, 2, 3, 8]
    assert torch.nonzero(exclude[1]).flatten().tolist() == [0, 1, 4, 6]


def test_eval_full_keeps_target_valid():
    data = make_data([[5, 2, 8, 3, 5], [1, 4, 6, 7]], num_items=10)
    split = make_split(data, num_eval_negatives=3)
    (evaluation,) = eval_batches(split, "valid", max_len=4, batch_size=8, full=True)
    assert torch.nonzero(evaluation.exclude[0]).flatten().tolist() == [0, 2, 5, 8]
    assert torch.nonzero(evaluation.exclude[1]).flatten().tolist() == [0, 1, 4, 7]


def test_eval_without_evaluated_users():
    split = make_split(make_data([[1, 2], [3]], num_items=20), num_eval_negatives=3)
    with pytest.raises(ConvbenchError, match="nothing to evaluate"):
        next(eval_batches(split, "valid", max_len=4, batch_size=8))


def test_eval_max_len_one_test_profile():
    split = random_split()
    evaluation = next(eval_batches(split, "test", max_len=1, batch_size=8))
    expected = split.valid_item[evaluation.users]
    assert evaluation.batch.profile_items[:, 0].tolist() == expected.tolist()


def test_distinct_negatives_uniform():
    # 3 allowed items of 6, k = 1: each must come up about a third of the time.
    exclusions = ItemExclusions([np.zeros(0, dtype=np.int64), np.array([1, 2, 3])], 6)
    rng = np.random.default_rng(0)
    users = np.ones(3000, dtype=np.int64)
    draws = sample_distinct_negatives(rng, users, 1, exclusions, np.arange(1, 7))
    counts = np.bincount(draws.ravel(), minlength=7)
    assert counts[:4].sum() == 0
    assert counts[4:].min() > 900


def test_distinct_negatives_exact_fallback():
    # 2 allowed items for k = 2 is below the rejection threshold, so each row is exact.
    exclusions = ItemExclusions([np.zeros(0, dtype=np.int64), np.array([1, 2, 3])], 5)
    draws = sample_distinct_negatives(np.random.default_rng(0), np.array([1, 1]), 2,
                                      exclusions, np.arange(1, 6))
    assert np.sort(draws, axis=1).tolist() == [[4, 5], [4, 5]]


def test_exclusions_contains():
    exclusions = ItemExclusions([np.zeros(0, dtype=np.int64), np.array([3, 1]),
                                 np.array([2])], 4)
    users = np.array([[1], [2]])
    items = np.array([[1, 2, 3, 4], [1, 2, 3, 4]])
    assert exclusions.contains(users, items).tolist() == [
        [True, False, True, False], [False, True, False, False]]
