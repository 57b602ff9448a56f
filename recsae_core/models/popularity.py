"""Popularity baseline: every user gets the items ranked by their number of training interactions."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from recsae_core.models.base import Recommender, UserBatch

__all__ = ["Popularity", "PopularityConfig"]


@dataclass
class PopularityConfig:
    """No settings: popularity = count of distinct training users per item (ties: same score)."""

    def __post_init__(self) -> None:
        pass


class Popularity(Recommender):
    """Scores ``(B, n_items)`` = the item's training count, the same for every user. No sites."""

    def __init__(self, n_users: int, n_items: int, config: PopularityConfig | None = None) -> None:
        super().__init__()
        self.config = config or PopularityConfig()
        self.n_users, self.n_items = n_users, n_items
        self.sites = {}
        self.register_buffer("counts", torch.zeros(n_items))

    def fit_counts(self, items_N: torch.Tensor) -> Popularity:
        """Set the counts from the training items (one entry per distinct user-item pair)."""
        self.counts = torch.bincount(
            torch.as_tensor(items_N, dtype=torch.int64), minlength=self.n_items
        ).float()
        return self

    def score(self, batch: UserBatch) -> torch.Tensor:
        return self.counts.unsqueeze(0).expand(len(batch.users), -1).clone()

    def representation(self, site: str, batch: UserBatch) -> torch.Tensor:
        self.check_site(site)
        raise AssertionError("unreachable")

    def score_from(self, site: str, rep: torch.Tensor, batch: UserBatch) -> torch.Tensor:
        self.check_site(site)
        raise AssertionError("unreachable")
