"""Small synthetic datasets built through the real loader path (RawDataset -> build_dataset)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from convrec.data.build import build_dataset
from convrec.data.schema import InteractionData, RawDataset


def cyclic_dataset(num_users: int = 60, num_items: int = 150, length: int = 20,
                   seed: int = 0) -> InteractionData:
    """Users walk the item ids in steps of one from a random start, so the next item is learnable.

    Timestamps are one day apart; every item has two random attributes.
    """
    rng = np.random.default_rng(seed)
    rows = []
    start_time = 1_000_000_000
    for user in range(num_users):
        first = int(rng.integers(num_items))
        for position in range(length):
            item = (first + position) % num_items + 1
            rows.append((f"u{user}", f"i{item}", start_time + 86_400 * position))
    interactions = pd.DataFrame(rows, columns=["user", "item", "timestamp"])
    interactions["line"] = np.arange(1, len(interactions) + 1)
    attributes = pd.DataFrame(rng.random((num_items, 2)), columns=["a", "b"],
                              index=[f"i{item}" for item in range(1, num_items + 1)])
    raw = RawDataset(name="cyclic", source="generated", interactions=interactions,
                     item_attributes=attributes)
    return build_dataset(raw)


def clustered_dataset(num_users: int = 90, num_groups: int = 6, items_per_group: int = 25,
                      length: int = 15, seed: int = 0) -> InteractionData:
    """Each user draws all items from one group, so a model that learns groups ranks well.

    The group is also each item's attribute vector (one-hot).

    Among the evaluation negatives about one in `num_groups` share the target's group, so a
    model that ranks the user's group first reaches HR@10 near 1 with 30 negatives.
    """
    rng = np.random.default_rng(seed)
    num_items = num_groups * items_per_group
    rows = []
    for user in range(num_users):
        group = user % num_groups
        items = rng.choice(items_per_group, size=length, replace=False) + group * items_per_group
        for position, item in enumerate(items):
            rows.append((f"u{user}", f"i{item + 1}", 1_000_000_000 + 3_600 * position))
    interactions = pd.DataFrame(rows, columns=["user", "item", "timestamp"])
    interactions["line"] = np.arange(1, len(interactions) + 1)
    # Attributes: the item's group, one-hot, so attribute-aware models can share it across items.
    groups = np.arange(num_items) // items_per_group
    attributes = pd.DataFrame(np.eye(num_groups)[groups],
                              columns=[f"group_{g}" for g in range(num_groups)],
                              index=[f"i{item}" for item in range(1, num_items + 1)])
    raw = RawDataset(name="clustered", source="generated", interactions=interactions,
                     item_attributes=attributes)
    return build_dataset(raw)
