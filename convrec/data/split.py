"""Leave-one-out split with fixed evaluation candidates, stored so every model and run shares them.

Each user's sequence is already in a stable time order (ties keep file order). The last
interaction is the test item, the second last the validation item and the rest is training.
Users with fewer than 3 interactions stay in training only and are not evaluated.

Sampled evaluation scores the held-out item against 100 negatives drawn once per split from items
the user never interacted with in any split, with a fixed seed and without repeats. The split is
stored as an .npz file together with a fingerprint of the dataset it came from, so a stale file is
detected instead of silently pairing new data with old candidates.
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from convrec.data.sampling import ItemExclusions, sample_distinct_negatives
from convrec.data.schema import InteractionData
from convrec.errors import ConvbenchError, DataError

logger = logging.getLogger(__name__)

EvalSplitName = Literal["valid", "test"]

# Users with fewer interactions than this keep all of them for training.
MIN_INTERACTIONS_TO_EVALUATE = 3
SPLIT_FORMAT_VERSION = 1
# Users whose candidates are drawn in one vectorised call; bounds the (users, draws) work array.
_CANDIDATE_CHUNK = 1024


@dataclass
class Split:
    """A leave-one-out split of one dataset, with the sampled evaluation candidates.

    Index 0 of every per-user field is unused, so row u is user u. `train_items[u]` (int64) and
    `train_context[u]` (float32 (len, X)) are the training interactions in time order.
    `valid_item` and `test_item` are int64 (U + 1,), 0 for users without held-out items, and
    `valid_context` and `test_context` (float32 (U + 1, X)) are the contexts of those
    interactions. `valid_candidates` and `test_candidates` are int64
    (U + 1, 1 + num_eval_negatives) with the target in column 0, all zeros for users without
    held-out items. `user_items[u]` are the sorted unique items user u touched in any split.
    `fingerprint` is the SHA-256 of the dataset's item count, sequences, timestamps and contexts
    (see `dataset_fingerprint`).
    """

    dataset_name: str
    num_users: int
    num_items: int
    seed: int
    fingerprint: str
    train_items: list[np.ndarray]
    train_context: list[np.ndarray]
    valid_item: np.ndarray
    test_item: np.ndarray
    valid_context: np.ndarray
    test_context: np.ndarray
    valid_candidates: np.ndarray
    test_candidates: np.ndarray
    user_items: list[np.ndarray]

    @property
    def context_width(self) -> int:
        return int(self.valid_context.shape[1])

    @property
    def num_eval_negatives(self) -> int:
        return int(self.valid_candidates.shape[1]) - 1

    def eval_users(self, which: EvalSplitName) -> np.ndarray:
        """Return the ascending ids of the users that have a `which` ("valid" or "test") item."""
        held_out = self.valid_item if _check_which(which) == "valid" else self.test_item
        return np.flatnonzero(held_out > 0)

    def flat_train(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Concatenate the training histories for vectorised indexing.

        Returns items (T,) int64, context (T, X) float32 and offsets (U + 2,) int64, where user
        u's interactions are rows offsets[u]:offsets[u + 1].
        """
        items, offsets = _flatten(self.train_items, np.int64, ())
        context, _ = _flatten(self.train_context, np.float32, (self.context_width,))
        return items, context, offsets


def dataset_fingerprint(data: InteractionData) -> str:
    """Hash everything a split is derived from: item count, sequences, timestamps and contexts.

    Integer timestamps are hashed as int64 and float ones as float64, so the fingerprint does
    not depend on which integer width a loader chose.
    """
    digest = hashlib.sha256()
    lengths = np.array([len(sequence) for sequence in data.sequences[1:]], dtype=np.int64)
    digest.update(np.int64(data.num_items).tobytes())
    digest.update(lengths.tobytes())

    for u in range(1, data.num_users + 1):
        digest.update(np.ascontiguousarray(data.sequences[u], dtype=np.int64).tobytes())
        timestamps = np.asarray(data.timestamps[u])
        time_type = np.int64 if np.issubdtype(timestamps.dtype, np.integer) else np.float64
        digest.update(np.ascontiguousarray(timestamps, dtype=time_type).tobytes())
        digest.update(np.ascontiguousarray(data.contexts[u], dtype=np.float32).tobytes())

    return digest.hexdigest()


def make_split(data: InteractionData, *, seed: int = 0, num_eval_negatives: int = 100) -> Split:
    """Split every user leave-one-out and draw the sampled evaluation candidates.

    Raises ConvbenchError when an evaluated user has fewer than `num_eval_negatives` items they
    never touched, and DataError when a sequence, its timestamps and its contexts disagree in
    length or an item id lies outside 1..N.
    """
    if num_eval_negatives < 1:
        raise ConvbenchError(
            f"num_eval_negatives must be at least 1, got {num_eval_negatives}."
        )
    _validate_sequences(data)

    U, N = data.num_users, data.num_items
    X = len(data.context_names)
    train_items = [np.zeros(0, dtype=np.int64)]
    train_context = [np.zeros((0, X), dtype=np.float32)]
    user_items = [np.zeros(0, dtype=np.int64)]
    valid_item = np.zeros(U + 1, dtype=np.int64)
    test_item = np.zeros(U + 1, dtype=np.int64)
    valid_context = np.zeros((U + 1, X), dtype=np.float32)
    test_context = np.zeros((U + 1, X), dtype=np.float32)

    # Hold out the last two interactions of every user who has at least 3.
    for u in range(1, U + 1):
        sequence = np.asarray(data.sequences[u], dtype=np.int64)
        context = np.asarray(data.contexts[u], dtype=np.float32).reshape(len(sequence), X)
        n = len(sequence)
        num_train = n - 2 if n >= MIN_INTERACTIONS_TO_EVALUATE else n
        train_items.append(sequence[:num_train].copy())
        train_context.append(context[:num_train].copy())
        user_items.append(np.unique(sequence))
        if num_train < n:
            valid_item[u], test_item[u] = sequence[n - 2], sequence[n - 1]
            valid_context[u], test_context[u] = context[n - 2], context[n - 1]

    eval_users = np.flatnonzero(valid_item > 0)
    _check_enough_untouched_items(data, user_items, eval_users, num_eval_negatives)

    # One generator draws validation then test negatives, user chunk by user chunk, so the
    # candidates depend only on the data and the seed.
    rng = np.random.default_rng(seed)
    exclusions = ItemExclusions(user_items, N)
    all_items = np.arange(1, N + 1, dtype=np.int64)
    valid_candidates = np.zeros((U + 1, 1 + num_eval_negatives), dtype=np.int64)
    test_candidates = np.zeros((U + 1, 1 + num_eval_negatives), dtype=np.int64)
    for candidates, targets in ((valid_candidates, valid_item), (test_candidates, test_item)):
        for start in range(0, len(eval_users), _CANDIDATE_CHUNK):
            users = eval_users[start:start + _CANDIDATE_CHUNK]
            candidates[users, 0] = targets[users]
            candidates[users, 1:] = sample_distinct_negatives(
                rng, users, num_eval_negatives, exclusions, all_items
            )

    logger.info(
        "split %s: %d users evaluated, %d in training only (fewer than %d interactions), "
        "%d evaluation negatives per user, seed %d",
        data.name, len(eval_users), U - len(eval_users), MIN_INTERACTIONS_TO_EVALUATE,
        num_eval_negatives, seed,
    )
    return Split(
        dataset_name=data.name,
        num_users=U,
        num_items=N,
        seed=seed,
        fingerprint=dataset_fingerprint(data),
        train_items=train_items,
        train_context=train_context,
        valid_item=valid_item,
        test_item=test_item,
        valid_context=valid_context,
        test_context=test_context,
        valid_candidates=valid_candidates,
        test_candidates=test_candidates,
        user_items=user_items,
    )


def save_split(split: Split, path: Path) -> None:
    """Write the split to an .npz file atomically, without pickled objects.

    The ragged per-user lists are stored as one flat array plus CSR offsets. The file is written
    next to `path` under a temporary name and then renamed, so `path` never contains a partly
    written file.
    """
    path = Path(path)
    train_items, train_context, train_offsets = split.flat_train()
    user_items, user_offsets = _flatten(split.user_items, np.int64, ())
    arrays = {
        "format_version": np.array(SPLIT_FORMAT_VERSION, dtype=np.int64),
        "dataset_name": np.array(split.dataset_name, dtype=np.str_),
        "num_users": np.array(split.num_users, dtype=np.int64),
        "num_items": np.array(split.num_items, dtype=np.int64),
        "seed": np.array(split.seed, dtype=np.int64),
        "fingerprint": np.array(split.fingerprint, dtype=np.str_),
        "train_items": train_items,
        "train_context": train_context,
        "train_offsets": train_offsets,
        "valid_item": split.valid_item,
        "test_item": split.test_item,
        "valid_context": split.valid_context,
        "test_context": split.test_context,
        "valid_candidates": split.valid_candidates,
        "test_candidates": split.test_candidates,
        "user_items": user_items,
        "user_items_offsets": user_offsets,
    }

    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "wb") as file:
            np.savez_compressed(file, **arrays)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    logger.info("saved split of %s to %s", split.dataset_name, path)


def load_split(path: Path, data: InteractionData | None = None) -> Split:
    """Read a split written by `save_split`, and check it against `data` when given.

    Raises DataError naming the file when it is missing, unreadable, of another format version,
    or when its fingerprint differs from that of `data`.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError("split file not found. Create it with make_split and save_split.",
                        path=path)

    try:
        with np.load(path, allow_pickle=False) as stored:
            arrays = {name: stored[name] for name in stored.files}
    except (OSError, ValueError, zipfile.BadZipFile) as error:
        raise DataError(
            f"failed to read the split file ({error}). Delete it so that the split is made again.",
            path=path,
        ) from error

    version = int(arrays.get("format_version", -1))
    if version != SPLIT_FORMAT_VERSION:
        raise DataError(
            f"split format version {version} is not supported (expected "
            f"{SPLIT_FORMAT_VERSION}). Delete the file so that the split is made again.",
            path=path,
        )
    try:
        split = _split_from_arrays(arrays)
    except KeyError as error:
        raise DataError(
            f"split file is missing the array {error}. Delete it so that the split is made again.",
            path=path,
        ) from error

    if data is not None:
        expected = dataset_fingerprint(data)
        if split.fingerprint != expected:
            raise DataError(
                f"split was made from different data: stored fingerprint {split.fingerprint}, "
                f"dataset {data.name!r} has fingerprint {expected}. Delete the file so that the "
                "split is made again, or load the dataset it was made from.",
                path=path,
            )
    return split


def load_or_make_split(data: InteractionData, path: Path, seed: int = 0,
                       num_eval_negatives: int = 100) -> Split:
    """Load the split stored at `path`, or make and save it when the file does not exist.

    A stored split is never overwritten: a changed dataset, seed or number of evaluation
    negatives raises ConvbenchError, because results computed on the old candidates would no
    longer be comparable with new ones.
    """
    path = Path(path)
    if not path.exists():
        split = make_split(data, seed=seed, num_eval_negatives=num_eval_negatives)
        save_split(split, path)
        return split

    split = load_split(path, data)
    if split.seed != seed or split.num_eval_negatives != num_eval_negatives:
        raise DataError(
            f"stored split has seed {split.seed} and {split.num_eval_negatives} evaluation "
            f"negatives, but seed {seed} and {num_eval_negatives} were requested. Use another "
            "path or delete the file so that the split is made again.",
            path=path,
        )
    logger.info("loaded split of %s from %s", split.dataset_name, path)
    return split


def _check_which(which: str) -> str:
    if which not in ("valid", "test"):
        raise ConvbenchError(f"unknown evaluation split {which!r}, expected 'valid' or 'test'.")
    return which


def _validate_sequences(data: InteractionData) -> None:
    """Raise DataError where a user's arrays disagree in length or an item id is out of range."""
    X = len(data.context_names)
    N = data.num_items
    for u in range(1, data.num_users + 1):
        n = len(data.sequences[u])
        context_shape = np.shape(data.contexts[u])
        if len(data.timestamps[u]) != n or context_shape != (n, X):
            raise DataError(
                f"user {u} ({str(data.user_ids[u])!r}) has {n} items, {len(data.timestamps[u])} "
                f"timestamps and contexts of shape {context_shape}, expected ({n}, {X}). "
                "The dataset loader produced inconsistent arrays."
            )
        if n and (data.sequences[u].min() < 1 or data.sequences[u].max() > N):
            raise DataError(
                f"user {u} ({str(data.user_ids[u])!r}) has item ids outside 1..{N} "
                f"(min {data.sequences[u].min()}, max {data.sequences[u].max()}). "
                "The dataset loader produced an invalid re-indexing."
            )


def _check_enough_untouched_items(data: InteractionData, user_items: list[np.ndarray],
                                  eval_users: np.ndarray, num_eval_negatives: int) -> None:
    """Raise ConvbenchError when an evaluated user touched too many items to draw negatives."""
    touched = np.array([len(user_items[u]) for u in eval_users], dtype=np.int64)
    untouched = data.num_items - touched
    short = np.flatnonzero(untouched < num_eval_negatives)
    if len(short) == 0:
        return

    first = int(eval_users[short[0]])
    # The CLI always draws 100 negatives (the evaluation protocol), so its users can only change
    # the data. A smaller num_eval_negatives is an option for library callers alone.
    aside = ""
    if untouched.min() >= 1:
        aside = (
            f" (Library callers of make_split can instead pass num_eval_negatives of at most "
            f"{int(untouched.min())}.)"
        )
    max_touched = data.num_items - num_eval_negatives
    if max_touched >= 1:
        fix = (
            f"Remove from the data the users who interacted with more than {max_touched} "
            "distinct items, or use a dataset with more items."
        )
    else:
        fix = f"Use a dataset with more than {num_eval_negatives} items."
    raise ConvbenchError(
        f"user {first} ({str(data.user_ids[first])!r}) of dataset {data.name!r} interacted "
        f"with {touched[short[0]]} of {data.num_items} items, which leaves "
        f"{untouched[short[0]]} never-touched items for {num_eval_negatives} evaluation "
        f"negatives ({len(short)} evaluated users have too few). {fix}{aside}"
    )


def _flatten(arrays: list[np.ndarray], dtype, row_shape: tuple[int, ...]
             ) -> tuple[np.ndarray, np.ndarray]:
    """Concatenate ragged per-user arrays and return them with (len(arrays) + 1,) CSR offsets."""
    lengths = np.array([len(array) for array in arrays], dtype=np.int64)
    offsets = np.zeros(len(arrays) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    if offsets[-1] == 0:
        return np.zeros((0, *row_shape), dtype=dtype), offsets
    flat = np.concatenate([np.asarray(array, dtype=dtype).reshape(len(array), *row_shape)
                           for array in arrays])
    return flat, offsets


def _unflatten(flat: np.ndarray, offsets: np.ndarray) -> list[np.ndarray]:
    return [flat[offsets[u]:offsets[u + 1]] for u in range(len(offsets) - 1)]


def _split_from_arrays(arrays: dict[str, np.ndarray]) -> Split:
    return Split(
        dataset_name=str(arrays["dataset_name"]),
        num_users=int(arrays["num_users"]),
        num_items=int(arrays["num_items"]),
        seed=int(arrays["seed"]),
        fingerprint=str(arrays["fingerprint"]),
        train_items=_unflatten(arrays["train_items"], arrays["train_offsets"]),
        train_context=_unflatten(arrays["train_context"], arrays["train_offsets"]),
        valid_item=arrays["valid_item"],
        test_item=arrays["test_item"],
        valid_context=arrays["valid_context"],
        test_context=arrays["test_context"],
        valid_candidates=arrays["valid_candidates"],
        test_candidates=arrays["test_candidates"],
        user_items=_unflatten(arrays["user_items"], arrays["user_items_offsets"]),
    )
