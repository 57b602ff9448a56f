"""Dataset statistics: the numbers ``recsae stats`` prints and the book's datasets chapter shows."""

from __future__ import annotations

import os

import numpy as np
import pandas as pd

from .dataset import RecDataset
from .loaders import load_dataset

__all__ = ["dataset_stats", "interaction_counts", "label_frequencies"]


def dataset_stats(dataset: str | RecDataset, data_dir: str | os.PathLike | None = None) -> dict:
    """Headline statistics of a dataset (by registry name or an already loaded :class:`RecDataset`).

    Keys: name, n_users, n_items (items with at least one interaction), n_items_metadata, n_interactions,
    density, has_timestamps, time_start/time_end (ISO dates, when timestamped), rating_kind, n_labels,
    items_with_label, per-user and per-item interaction counts (min / median / mean / max).
    """
    ds = load_dataset(dataset, data_dir, progress=False) if isinstance(dataset, str) else dataset
    inter = ds.interactions
    per_user, per_item = interaction_counts(ds)
    out: dict = {
        "name": ds.name,
        "n_users": int(ds.n_users),
        "n_items": int(ds.n_items),
        "n_items_metadata": int(ds.meta.get("n_items_metadata", ds.n_items)),
        "n_interactions": len(inter),
        "n_unique_pairs": len(inter[["user", "item"]].drop_duplicates()),
        "density": len(inter) / (ds.n_users * ds.n_items),
        "has_timestamps": ds.has_timestamps,
        "rating_kind": ds.meta.get("rating_kind", ""),
        "n_labels": len(ds.label_names),
        "items_with_label": int(ds.item_labels.any(axis=1).sum()),
    }
    if ds.has_timestamps:
        ts = inter["timestamp"]
        out["time_start"] = pd.Timestamp(int(ts.min()), unit="s").date().isoformat()
        out["time_end"] = pd.Timestamp(int(ts.max()), unit="s").date().isoformat()
    for who, counts in (("user", per_user), ("item", per_item)):
        out[f"per_{who}_min"] = int(counts.min())
        out[f"per_{who}_median"] = float(np.median(counts))
        out[f"per_{who}_mean"] = float(counts.mean())
        out[f"per_{who}_max"] = int(counts.max())
    return out


def interaction_counts(ds: RecDataset) -> tuple[np.ndarray, np.ndarray]:
    """Interactions per user ``(n_users,)`` and per item ``(n_items,)``."""
    inter = ds.interactions
    return (
        np.bincount(inter["user"].to_numpy(), minlength=ds.n_users),
        np.bincount(inter["item"].to_numpy(), minlength=ds.n_items),
    )


def label_frequencies(ds: RecDataset) -> pd.DataFrame:
    """Per label: items carrying it, their share of the catalogue, and interactions with them; most frequent first."""
    _, per_item = interaction_counts(ds)
    labels = ds.item_labels
    return (
        pd.DataFrame(
            {
                "label": ds.label_names,
                "items": labels.sum(0).astype(int),
                "share_of_items": labels.sum(0) / max(ds.n_items, 1),
                "interactions": (labels * per_item[:, None]).sum(0).astype(int),
            }
        )
        .sort_values("items", ascending=False, kind="stable")
        .reset_index(drop=True)
    )
