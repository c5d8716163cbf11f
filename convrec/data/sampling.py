"""Negative sampling and the batch iterators for training and evaluation.

- `PrefixSampler`: ConvRec's training, one random prefix per user and epoch, scored against
  K sampled negatives (ScoringBatch, positive in candidate column 0).
- `PositionSampler`: SASRec's and CARCA's per-position training, every position predicts the
  next item against one sampled negative (PositionBatch).
- `eval_batches`: validation or test profiles, scored against the stored candidates or against
  every item with a mask of the user's other interactions (EvalBatch).

Profiles always have width L = max_len, left-padded with item 0 and zero context rows.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import numpy as np
import torch

from convrec.data.batches import PositionBatch, ScoringBatch
from convrec.errors import ConvbenchError

if TYPE_CHECKING:
    from convrec.data.split import Split

# Rejection rounds before the remaining draws of PositionSampler fall back to exact sampling.
_MAX_REJECTION_ROUNDS = 20


class ItemExclusions:
    """Per-user item sets with a vectorised membership test.

    Stores the sorted keys user * (N + 1) + item, so one `np.searchsorted` tests the membership of
    a whole (B, M) array of draws.
    """

    def __init__(self, user_items: list[np.ndarray], num_items: int):
        self.num_items = num_items
        self._items = [np.unique(np.asarray(items, dtype=np.int64)) for items in user_items]
        self.counts = np.array([len(items) for items in self._items], dtype=np.int64)
        # Users ascend and items ascend within a user, so the concatenated keys are sorted.
        keys = [u * (num_items + 1) + items for u, items in enumerate(self._items)]
        self._keys = np.concatenate(keys) if keys else np.zeros(0, dtype=np.int64)

    def items_of(self, user: int) -> np.ndarray:
        """Return the sorted unique items excluded for `user`."""
        return self._items[user]

    def contains(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        """Return a bool array, broadcast from `users` and `items`, true at excluded items."""
        keys = np.asarray(users, dtype=np.int64) * (self.num_items + 1) + items
        if len(self._keys) == 0:
            return np.zeros(keys.shape, dtype=bool)
        positions = np.searchsorted(self._keys, keys)
        found = self._keys[np.minimum(positions, len(self._keys) - 1)]
        return found == keys


def sample_distinct_negatives(rng: np.random.Generator, users: np.ndarray, k: int,
                              exclusions: ItemExclusions, pool: np.ndarray) -> np.ndarray:
    """Draw k distinct items per user, uniformly from `pool` minus the user's exclusions.

    Returns int64 (B, k) in draw order. Each user's exclusions must be a subset of `pool` (sorted,
    unique). Users with plenty of allowed items are served by vectorised rejection sampling: the
    first k distinct allowed values of an i.i.d. uniform stream are a uniform k-subset. The other
    users, and the rare rows where the stream came up short, draw exactly from the complement.
    """
    users = np.asarray(users, dtype=np.int64)
    available = len(pool) - exclusions.counts[users]
    if len(users) and available.min() < k:
        short = int(np.argmin(available))
        raise ConvbenchError(
            f"user {users[short]} has {available[short]} items to draw {k} negatives from. "
            "Lower the number of negatives."
        )

    result = np.zeros((len(users), k), dtype=np.int64)
    fast = (available >= 2 * k) & (2 * available >= len(pool))
    done = np.zeros(len(users), dtype=bool)
    if fast.any() and k > 0:
        rows = np.flatnonzero(fast)
        min_fraction = available[rows].min() / len(pool)
        num_draws = int(math.ceil(2 * k / min_fraction)) + 16
        draws = pool[rng.integers(0, len(pool), size=(len(rows), num_draws))]
        keep = ~exclusions.contains(users[rows, None], draws) & ~_later_repeats(draws)
        kept_so_far = np.cumsum(keep, axis=1)
        complete = kept_so_far[:, -1] >= k
        chosen = keep & (kept_so_far <= k) & complete[:, None]
        result[rows[complete]] = draws[chosen].reshape(-1, k)
        done[rows[complete]] = True

    for row in np.flatnonzero(~done):
        allowed = np.setdiff1d(pool, exclusions.items_of(users[row]), assume_unique=True)
        result[row] = rng.choice(allowed, size=k, replace=False)
    return result


def _later_repeats(draws: np.ndarray) -> np.ndarray:
    """Mark every entry of each row that repeats a value seen earlier in that row."""
    # A stable sort keeps equal values in column order, so in each run of equal values
    # everything after the first element is a later repeat.
    order = np.argsort(draws, axis=1, kind="stable")
    ordered = np.take_along_axis(draws, order, axis=1)
    repeats = np.zeros(draws.shape, dtype=bool)
    np.put_along_axis(repeats, order[:, 1:], ordered[:, 1:] == ordered[:, :-1], axis=1)
    return repeats


def sample_negatives_with_repeats(rng: np.random.Generator, users: np.ndarray,
                                  mask: np.ndarray, exclusions: ItemExclusions) -> np.ndarray:
    """Draw one item from 1..N per true entry of `mask` (B, L), avoiding the user's exclusions.

    Returns int64 (B, L) with 0 where `mask` is false. Draws of one user may repeat, as in
    SASRec's per-position sampling. Every user needs at least one allowed item.
    """
    users = np.asarray(users, dtype=np.int64)
    N = exclusions.num_items
    row_users = np.broadcast_to(users[:, None], mask.shape)
    result = np.zeros(mask.shape, dtype=np.int64)
    pending = mask.copy()

    for _ in range(_MAX_REJECTION_ROUNDS):
        if not pending.any():
            return result
        draws = rng.integers(1, N + 1, size=int(pending.sum()))
        accepted = ~exclusions.contains(row_users[pending], draws)
        rows, cols = np.nonzero(pending)
        result[rows[accepted], cols[accepted]] = draws[accepted]
        pending[rows[accepted], cols[accepted]] = False

    # Users who touched almost every item would need many more rounds.
    for row in np.flatnonzero(pending.any(axis=1)):
        allowed = np.setdiff1d(np.arange(1, N + 1), exclusions.items_of(users[row]),
                               assume_unique=True)
        result[row, pending[row]] = rng.choice(allowed, size=int(pending[row].sum()))
    return result


class PrefixSampler:
    """ConvRec's training examples: one random prefix of each user's training history per epoch.

    Each user with at least 2 training interactions gives one example per epoch, users in random
    order. For a random end position t in [1, n - 1] the positive is train_items[t], the profile
    is the up to `max_len` items before it, and the candidates are [positive, K negatives] with
    the context of the positive interaction. Negatives are distinct items that occur in the
    training split and that the user never interacted with in training.
    """

    def __init__(self, split: Split, *, max_len: int, num_negatives: int, batch_size: int,
                 rng: np.random.Generator):
        _check_positive(max_len=max_len, num_negatives=num_negatives, batch_size=batch_size)
        self.max_len = max_len
        self.num_negatives = num_negatives
        self.batch_size = batch_size
        self.rng = rng
        self._items, self._context, self._offsets = split.flat_train()
        self._users = _users_with_two_training_items(split, self._offsets)

        self._pool = np.unique(self._items)
        self._exclusions = ItemExclusions(split.train_items, split.num_items)
        available = len(self._pool) - self._exclusions.counts[self._users]
        if available.min() < num_negatives:
            short = int(np.argmin(available))
            fix = "use a dataset with more distinct training items"
            if available[short] >= 1:
                fix = f"lower num_negatives to at most {available[short]}, or " + fix
            raise ConvbenchError(
                f"user {self._users[short]} of {split.dataset_name!r} leaves only "
                f"{available[short]} of the {len(self._pool)} training items as negatives, "
                f"but num_negatives is {num_negatives}. To fix it, {fix}."
            )

    def __len__(self) -> int:
        return math.ceil(len(self._users) / self.batch_size)

    def __iter__(self) -> Iterator[ScoringBatch]:
        order = self.rng.permutation(self._users)
        for start in range(0, len(order), self.batch_size):
            yield self._batch(order[start:start + self.batch_size])

    def _batch(self, users: np.ndarray) -> ScoringBatch:
        starts = self._offsets[users]
        lengths = self._offsets[users + 1] - starts
        targets = starts + self.rng.integers(1, lengths)
        profile_items, profile_context = _gather_windows(
            self._items, self._context, starts, targets, self.max_len
        )
        negatives = sample_distinct_negatives(
            self.rng, users, self.num_negatives, self._exclusions, self._pool
        )
        candidates = np.concatenate([self._items[targets, None], negatives], axis=1)
        return ScoringBatch(
            users=torch.from_numpy(users.astype(np.int64)),
            profile_items=torch.from_numpy(profile_items),
            profile_context=torch.from_numpy(profile_context),
            candidate_items=torch.from_numpy(candidates),
            candidate_context=torch.from_numpy(self._context[targets]),
        )


class PositionSampler:
    """SASRec's and CARCA's training examples: every position predicts the item after it.

    Per user with at least 2 training interactions, the input is the training sequence without
    its last item and the positives are the sequence shifted by one, both cut to the last
    `max_len` positions and left-padded. Each position gets one negative from the items outside
    the user's training items, and `target_context` is the context of each positive interaction.
    Users come in random order, one row each per epoch.
    """

    def __init__(self, split: Split, *, max_len: int, batch_size: int,
                 rng: np.random.Generator):
        _check_positive(max_len=max_len, batch_size=batch_size)
        self.max_len = max_len
        self.batch_size = batch_size
        self.rng = rng
        self._items, self._context, self._offsets = split.flat_train()
        self._users = _users_with_two_training_items(split, self._offsets)

        self._exclusions = ItemExclusions(split.train_items, split.num_items)
        covered = self._exclusions.counts[self._users] >= split.num_items
        if covered.any():
            user = int(self._users[np.argmax(covered)])
            raise ConvbenchError(
                f"user {user} of {split.dataset_name!r} interacted with all {split.num_items} "
                "items in training, so no negative can be drawn; filter out such users."
            )

    def __len__(self) -> int:
        return math.ceil(len(self._users) / self.batch_size)

    def __iter__(self) -> Iterator[PositionBatch]:
        order = self.rng.permutation(self._users)
        for start in range(0, len(order), self.batch_size):
            yield self._batch(order[start:start + self.batch_size])

    def _batch(self, users: np.ndarray) -> PositionBatch:
        starts = self._offsets[users]
        # Inputs end before the last training item, which only serves as a positive.
        input_ends = self._offsets[users + 1] - 1
        profile_items, profile_context = _gather_windows(
            self._items, self._context, starts, input_ends, self.max_len
        )
        positive_items, target_context = _gather_windows(
            self._items, self._context, starts + 1, input_ends + 1, self.max_len
        )
        negatives = sample_negatives_with_repeats(
            self.rng, users, positive_items > 0, self._exclusions
        )
        return PositionBatch(
            users=torch.from_numpy(users.astype(np.int64)),
            profile_items=torch.from_numpy(profile_items),
            profile_context=torch.from_numpy(profile_context),
            positive_items=torch.from_numpy(positive_items),
            negative_items=torch.from_numpy(negatives),
            target_context=torch.from_numpy(target_context),
        )


@dataclass
class EvalBatch:
    """One batch of evaluation profiles with the held-out items they should rank first.

    `users` and `targets` are int64 (B,). For sampled evaluation `batch.candidate_items` contains
    the stored candidates, target in column 0, and `exclude` is None. For full ranking
    `batch.candidate_items` is None and `exclude` is a (B, N + 1) bool mask of the items to leave
    out of the ranking. The mask covers padding column 0 and the user's interactions in any
    split, except the target.
    """

    batch: ScoringBatch
    users: np.ndarray
    targets: np.ndarray
    exclude: torch.Tensor | None = None


def eval_batches(split: Split, which: Literal["valid", "test"], *, max_len: int,
                 batch_size: int, full: bool = False) -> Iterator[EvalBatch]:
    """Yield the validation or test batches of every evaluated user, in ascending user order.

    The validation profile is the training history. The test profile is the training history
    followed by the validation interaction, with its context. Raises ConvbenchError when no user
    has a held-out item, because metrics over zero users are undefined.
    """
    _check_positive(max_len=max_len, batch_size=batch_size)
    users_all = split.eval_users(which)
    if len(users_all) == 0:
        raise ConvbenchError(
            f"no user of {split.dataset_name!r} has a {which} item (every user has fewer than 3 "
            "interactions), so there is nothing to evaluate."
        )

    items, context, offsets = split.flat_train()
    if which == "valid":
        targets_all, target_context, candidates = (
            split.valid_item, split.valid_context, split.valid_candidates)
    else:
        targets_all, target_context, candidates = (
            split.test_item, split.test_context, split.test_candidates)

    for start in range(0, len(users_all), batch_size):
        users = users_all[start:start + batch_size]
        profile_items, profile_context = _gather_windows(
            items, context, offsets[users], offsets[users + 1], max_len
        )
        if which == "test":
            # Shift the training window left by one and append the validation interaction.
            profile_items = np.concatenate(
                [profile_items[:, 1:], split.valid_item[users, None]], axis=1)
            profile_context = np.concatenate(
                [profile_context[:, 1:], split.valid_context[users, None]], axis=1)

        targets = targets_all[users]
        batch = ScoringBatch(
            users=torch.from_numpy(users.astype(np.int64)),
            profile_items=torch.from_numpy(profile_items),
            profile_context=torch.from_numpy(np.ascontiguousarray(profile_context)),
            candidate_items=None if full else torch.from_numpy(candidates[users]),
            candidate_context=torch.from_numpy(target_context[users]),
        )
        exclude = _exclusion_mask(split, users, targets) if full else None
        yield EvalBatch(batch=batch, users=users, targets=targets, exclude=exclude)


def _exclusion_mask(split: Split, users: np.ndarray, targets: np.ndarray) -> torch.Tensor:
    mask = np.zeros((len(users), split.num_items + 1), dtype=bool)
    touched = [split.user_items[u] for u in users]
    rows = np.repeat(np.arange(len(users)), [len(items) for items in touched])
    mask[rows, np.concatenate(touched)] = True
    mask[:, 0] = True
    mask[np.arange(len(users)), targets] = False
    return torch.from_numpy(mask)


def _gather_windows(items: np.ndarray, context: np.ndarray, starts: np.ndarray,
                    ends: np.ndarray, width: int) -> tuple[np.ndarray, np.ndarray]:
    """Cut rows [max(start, end - width), end) of the flat arrays, left-padded to `width`.

    Returns items (B, width) int64 with 0 at padding and context (B, width, X) float32 with zero
    rows at padding.
    """
    indices = ends[:, None] - width + np.arange(width)
    valid = indices >= starts[:, None]
    safe = np.where(valid, indices, 0)
    window_items = np.where(valid, items[safe], 0).astype(np.int64)
    window_context = np.where(valid[..., None], context[safe], 0.0).astype(np.float32)
    return window_items, window_context


def _users_with_two_training_items(split: Split, offsets: np.ndarray) -> np.ndarray:
    lengths = np.diff(offsets)
    users = np.flatnonzero(lengths >= 2)
    if len(users) == 0:
        raise ConvbenchError(
            f"no user has at least 2 training interactions; {split.dataset_name!r} has "
            f"{split.num_users} users and the longest training history has "
            f"{int(lengths.max(initial=0))} items. Training needs users with 2 interactions "
            "(kept whole) or at least 4 (2 are held out for evaluation)."
        )
    return users


def _check_positive(**values: int) -> None:
    for name, value in values.items():
        if value < 1:
            raise ConvbenchError(f"{name} must be at least 1, got {value}.")
