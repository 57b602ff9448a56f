"""The one in-memory form every dataset takes, whatever file it came from.

Ids are remapped to contiguous 0-based integers: ``user`` in ``[0, n_users)`` and ``item`` in
``[0, n_items)``. The original ids stay in ``users.user_id`` and ``items.item_id``. The item
catalogue holds the items that occur in the interactions (models score exactly these); metadata-only
items are counted in ``meta['n_items_metadata']`` but not kept.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

__all__ = ["RecDataset", "Split"]


@dataclass
class RecDataset:
    """Interactions, item metadata (with multi-hot labels) and optional user metadata.

    Attributes:
        name: registry name (``"ml-100k"``, ``"ml-1m"``, ``"lastfm-2k"``, or a user-chosen name).
        interactions: one row per (user, item) event with columns ``user`` (int64), ``item`` (int64),
            ``rating`` (float32: explicit rating, play count for Last.fm, 1.0 when implicit) and, only
            when the source has them, ``timestamp`` (int64, seconds since the epoch). Row order is the
            source file's order.
        items: indexed by ``item`` (0..n_items-1); columns ``item_id`` (original id), ``title`` (str),
            ``year`` (pandas ``Int64``, missing when unknown).
        item_labels: ``(n_items, n_labels)`` bool multi-hot matrix: genres, or Last.fm tags.
        label_names: the ``n_labels`` column names of ``item_labels``.
        users: indexed by ``user``; column ``user_id`` plus whatever the source provides (gender, age, ...).
        meta: provenance: files read, label rule, counts before filtering.
    """

    name: str
    interactions: pd.DataFrame
    items: pd.DataFrame
    item_labels: np.ndarray
    label_names: list[str]
    users: pd.DataFrame
    meta: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        need = {"user", "item", "rating"}
        missing = need - set(self.interactions.columns)
        if missing:
            raise ValueError(f"{self.name}: interactions lack column(s) {sorted(missing)}")
        if self.item_labels.shape != (len(self.items), len(self.label_names)):
            raise ValueError(
                f"{self.name}: item_labels has shape {self.item_labels.shape}, expected "
                f"({len(self.items)}, {len(self.label_names)}) = (n_items, n_labels)"
            )

    @property
    def n_users(self) -> int:
        return len(self.users)

    @property
    def n_items(self) -> int:
        return len(self.items)

    @property
    def has_timestamps(self) -> bool:
        return "timestamp" in self.interactions.columns

    def require_timestamps(self, what: str = "a sequential model") -> None:
        """Raise a clear error when ``what`` needs event order and the data has no timestamps."""
        if not self.has_timestamps:
            raise ValueError(
                f"{what} needs the order of events, but dataset {self.name!r} has no timestamps. Use data "
                "with timestamps (for MovieLens-1M: 'ml-1m-prefix' or the official ratings.dat as 'ml-1m') "
                "or a non-sequential model (BPR-MF, LightGCN, MF, NCF)."
            )


@dataclass
class Split:
    """A seeded split of a :class:`RecDataset`, named after the paper protocol that uses it.

    Every frame has the interactions' columns. ``train`` is what models fit on; ``valid`` and ``test``
    hold the targets (for leave-one-out: exactly one row per user). When a model is evaluated on
    ``valid``, a user's history is its ``train`` rows; on ``test``, its ``train`` + ``valid`` rows
    (in time order when timestamps exist). ``extra`` carries protocol-specific parts, e.g. P1's
    ``"sae"`` users (interactions never seen by the recommender).
    """

    name: str
    dataset: RecDataset
    train: pd.DataFrame
    valid: pd.DataFrame
    test: pd.DataFrame
    extra: dict[str, pd.DataFrame] = field(default_factory=dict)
    seed: int = 0
    context: dict[str, pd.DataFrame] = field(default_factory=dict)
    """Explicit history rows per part, for protocols where the default rule does not hold (P1's new users)."""
    case_histories: bool = False
    """ReChorus' rule (P2's global temporal split, where a user has several valid/test rows): each target row
    is read with **its own** history, the user's events before it in time across train, valid and test, and
    every item the user has in any part is masked except the target (ReChorus masks ``train_clicked_set |
    residual_clicked_set``). ``False``: one history per user (:meth:`history_for`), its items masked."""

    def history_for(self, part: str) -> pd.DataFrame:
        """The rows that form each user's history when evaluating ``part`` ("valid" or "test").

        Default: ``train`` for valid, ``train`` + ``valid`` for test; a protocol may override per part via
        ``context`` (e.g. P1's test users' histories are their own earlier events, never in ``train``).
        Always use this method rather than re-deriving the rule.
        """
        if part in self.context:
            return self.context[part]
        if part == "valid":
            return self.train
        if part == "test":
            return pd.concat([self.train, self.valid], ignore_index=True)
        if part == "train":
            return self.train
        raise ValueError(f"unknown split part {part!r}; expected 'train', 'valid' or 'test'")

    def targets(self, part: str) -> pd.DataFrame:
        """The target rows of ``part``."""
        try:
            return {"train": self.train, "valid": self.valid, "test": self.test}[part]
        except KeyError:
            raise ValueError(f"unknown split part {part!r}; expected 'train', 'valid' or 'test'") from None
