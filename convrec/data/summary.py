"""Dataset summary: sizes, sequence lengths, widths and every filter, as a dict and as text."""

from __future__ import annotations

import numpy as np
import pandas as pd

from convrec.data.build import ITEMS_WITHOUT_ATTRIBUTES, MIN_SPLIT_LENGTH
from convrec.data.schema import InteractionData

LENGTH_PERCENTILES = (25, 50, 75, 90, 99)
NAMES_SHOWN = 12  # longer name lists are cut in the text form, never in the dict


def summarize(data: InteractionData) -> dict:
    """Summarise a dataset in plain Python values (JSON-serialisable).

    Users with fewer than 3 interactions, users left with at least 2 training interactions by
    the leave-one-out split, and duplicate (user, item, timestamp) rows are counted from the
    sequences themselves. Items without attributes come from the build filters.
    """
    lengths = np.array([len(sequence) for sequence in data.sequences[1:]], dtype=np.int64)
    sequence_length = {"min": 0, **{f"p{q}": 0.0 for q in LENGTH_PERCENTILES}, "max": 0}
    if lengths.size:
        percentiles = np.percentile(lengths, LENGTH_PERCENTILES)
        sequence_length = {"min": int(lengths.min())}
        for q, value in zip(LENGTH_PERCENTILES, percentiles, strict=True):
            sequence_length[f"p{q}"] = float(value)
        sequence_length["max"] = int(lengths.max())

    # The leave-one-out split keeps n - 2 training interactions of a user with n >= 3, and all
    # n otherwise. Training needs at least 2 (an input item and a target).
    train_lengths = np.where(lengths >= MIN_SPLIT_LENGTH, lengths - 2, lengths)
    without_attributes = sum(
        entry.count for entry in data.filters if entry.what == ITEMS_WITHOUT_ATTRIBUTES
    )
    return {
        "name": data.name,
        "users": data.num_users,
        "items": data.num_items,
        "interactions": int(lengths.sum()),
        "sequence_length": sequence_length,
        "attribute_width": int(data.item_attributes.shape[1]),
        "attribute_names": list(data.attribute_names),
        "context_width": len(data.context_names),
        "context_names": list(data.context_names),
        "users_below_3": int(np.count_nonzero(lengths < MIN_SPLIT_LENGTH)),
        "users_with_2_training_interactions": int(np.count_nonzero(train_lengths >= 2)),
        "duplicates": _count_duplicates(data),
        "items_without_attributes": int(without_attributes),
        "filters": [
            {"what": entry.what, "count": int(entry.count), "reason": entry.reason}
            for entry in data.filters
        ],
        "notes": list(data.notes),
    }


def _count_duplicates(data: InteractionData) -> int:
    users = np.repeat(np.arange(len(data.sequences)), [len(s) for s in data.sequences])
    if users.size == 0:
        return 0
    rows = pd.DataFrame({
        "user": users,
        "item": np.concatenate(data.sequences),
        "timestamp": np.concatenate(data.timestamps),
    })
    return int(rows.duplicated().sum())


def _names(names: list[str]) -> str:
    if not names:
        return "none"
    shown = ", ".join(names[:NAMES_SHOWN])
    if len(names) > NAMES_SHOWN:
        shown += f", ... ({len(names) - NAMES_SHOWN} more)"
    return shown


def format_summary(summary: dict) -> str:
    """Render a summarize() dict as a few lines of text for the terminal or a report."""
    lengths = summary["sequence_length"]
    trainable = summary["users_with_2_training_interactions"]
    percentiles = ", ".join(f"p{q} {lengths[f'p{q}']:g}" for q in LENGTH_PERCENTILES)
    lines = [
        f"dataset {summary['name']}: {summary['users']:,} users, {summary['items']:,} items, "
        f"{summary['interactions']:,} interactions",
        f"sequence length: min {lengths['min']}, {percentiles}, max {lengths['max']}",
        f"attributes (F={summary['attribute_width']}): {_names(summary['attribute_names'])}",
        f"context (X={summary['context_width']}): {_names(summary['context_names'])}",
        f"users with fewer than 3 interactions: {summary['users_below_3']:,} "
        "(kept, in training only)",
        f"users with at least 2 training interactions after the leave-one-out split: "
        f"{trainable:,} of {summary['users']:,}",
    ]
    if trainable == 0:
        lines.append(
            "WARNING: no user has at least 2 training interactions after the leave-one-out "
            "split, so training on this dataset will fail. A user needs 2, or at least 4, "
            "interactions, because the last 2 of a user with 3 or more are held out."
        )
    lines += [
        f"duplicate (user, item, timestamp) rows: {summary['duplicates']:,} (kept)",
        f"items without attributes: {summary['items_without_attributes']:,} (zero vector)",
        "filters and repairs:",
    ]
    if not summary["filters"]:
        lines.append("  none")
    for entry in summary["filters"]:
        lines.append(f"  {entry['what']}: {entry['count']:,} ({entry['reason']})")
    if summary["notes"]:
        lines.append("notes:")
        lines.extend(f"  {note}" for note in summary["notes"])
    return "\n".join(lines)
