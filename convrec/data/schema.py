"""Data containers shared by the loaders, the split, the samplers and the models.

Shape legend used across the project: B batch, L profile length, C candidates, D hidden width,
F item-attribute width, X context width, N number of items (item ids run 1..N, 0 is padding).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd


@dataclass
class RawDataset:
    """Output of a format loader, before re-indexing and validation.

    `interactions` has the columns `user`, `item` (original ids, as strings), `timestamp`
    (int64 seconds since the epoch, or a monotone order index where the format has no time) and
    `line` (1-based line number in `source`, used in error messages). Rows are in file order.
    `item_attributes` is indexed by original item id (string) with one float column per
    attribute, or None when the format has none. `context` is an optional float frame aligned
    row-for-row with `interactions`; when None the context is derived from `timestamp`.
    """

    name: str
    source: str
    interactions: pd.DataFrame
    item_attributes: pd.DataFrame | None = None
    context: pd.DataFrame | None = None
    has_calendar_time: bool = True
    notes: list[str] = field(default_factory=list)
    # Repairs the loader made (for example a missing release year set to 0); build_dataset copies
    # them into InteractionData.filters so that the summary lists them.
    filters: list[FilterCount] = field(default_factory=list)


@dataclass
class FilterCount:
    """One filter or repair applied while building a dataset, with how many rows or users it hit."""

    what: str
    count: int
    reason: str


@dataclass
class InteractionData:
    """A re-indexed, validated dataset: one time-ordered sequence per user.

    Users are 1..U and items 1..N; index 0 of `sequences` and `contexts` is unused (an empty
    array) so that `sequences[u]` is user u. `sequences[u]` contains item ids in a stable time order
    (ties keep file order); `contexts[u]` is float32 (len, X). `item_attributes` is float32
    (N + 1, F) with row 0 all zeros.
    """

    name: str
    user_ids: np.ndarray  # (U + 1,) original user id per index, entry 0 is ""
    item_ids: np.ndarray  # (N + 1,) original item id per index, entry 0 is ""
    sequences: list[np.ndarray]
    timestamps: list[np.ndarray]
    contexts: list[np.ndarray]
    item_attributes: np.ndarray
    attribute_names: tuple[str, ...]
    context_names: tuple[str, ...]
    gap_columns: tuple[int, ...]  # context columns whose differences are ConvRec's time gaps
    filters: list[FilterCount] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def num_users(self) -> int:
        return len(self.sequences) - 1

    @property
    def num_items(self) -> int:
        return len(self.item_ids) - 1

    def meta(self) -> DatasetMeta:
        return DatasetMeta(
            name=self.name,
            num_users=self.num_users,
            num_items=self.num_items,
            item_attributes=self.item_attributes,
            context_names=self.context_names,
            gap_columns=self.gap_columns,
        )


@dataclass(frozen=True)
class DatasetMeta:
    """Dataset facts a model needs to be built: sizes, attributes and context columns."""

    name: str
    num_users: int
    num_items: int
    item_attributes: np.ndarray  # float32 (N + 1, F), row 0 zeros
    context_names: tuple[str, ...]
    gap_columns: tuple[int, ...]

    @property
    def attribute_width(self) -> int:
        return int(self.item_attributes.shape[1])

    @property
    def context_width(self) -> int:
        return len(self.context_names)


def synthetic_meta(num_items: int = 50, attribute_width: int = 8, context_width: int = 6,
                   seed: int = 0, name: str = "synthetic") -> DatasetMeta:
    """Build a DatasetMeta with random attributes, for tests and for profiling at any size."""
    rng = np.random.default_rng(seed)
    attributes = rng.random((num_items + 1, attribute_width), dtype=np.float32)
    attributes[0] = 0.0
    names = tuple(f"context_{i}" for i in range(context_width))
    return DatasetMeta(
        name=name,
        num_users=0,
        num_items=num_items,
        item_attributes=attributes,
        context_names=names,
        gap_columns=tuple(range(min(3, context_width))),
    )
