"""The small interface every base recommender offers to the SAE work.

A *site* is a named place where a representation can be read and replaced:

| site | shape of the representation | what it is |
|---|---|---|
| ``sasrec.block0`` | ``(B, L, D)`` | output of transformer block 0 at every position (P1 probes this) |
| ``sasrec.final`` | ``(B, L, D)`` | final hidden states (after the last LayerNorm) at every position; scored from the last (P2 trains on all positions) |
| ``sasrec.last`` | ``(B, D)`` | final hidden state at the last position, the user vector dotted with item embeddings (P2) |
| ``mf.user`` / ``bprmf.user`` / ``lightgcn.user`` / ``ncf.user`` | ``(B, D)`` | user vector before the prediction layer (P2, P3) |
| ``mf.item`` / ``bprmf.item`` / ``lightgcn.item`` / ``ncf.item`` | ``(n_items, D)`` | the item table (P3 edits item embeddings) |

``score_from(site, rep, batch)`` runs the rest of the model from that site with ``rep`` in place of the
original representation and returns scores over the whole catalogue, ``(B, n_items)``. Reading and then
scoring an unchanged representation reproduces ``score(batch)`` exactly.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

__all__ = ["Recommender", "UserBatch"]


@dataclass
class UserBatch:
    """What a model needs to score a batch of users.

    Attributes:
        users: ``(B,)`` int64 user indices.
        seqs: ``(B, L)`` int64 left-padded histories (pad 0, item ``i`` stored as ``i + 1``), or ``None``
            for models that do not read sequences.
    """

    users: torch.Tensor
    seqs: torch.Tensor | None = None

    def to(self, device: torch.device | str) -> UserBatch:
        return UserBatch(self.users.to(device), None if self.seqs is None else self.seqs.to(device))


class Recommender(nn.Module):
    """Base class: ``score`` for recommendation, ``representation``/``score_from`` for probing."""

    n_items: int
    sites: ClassVar[dict[str, str]] = {}

    def score(self, batch: UserBatch) -> torch.Tensor:
        """Scores over all items, ``(B, n_items)``."""
        raise NotImplementedError

    def representation(self, site: str, batch: UserBatch) -> torch.Tensor:
        """The representation at ``site`` for this batch (see the module docstring for shapes)."""
        raise NotImplementedError

    def score_from(self, site: str, rep: torch.Tensor, batch: UserBatch) -> torch.Tensor:
        """Scores ``(B, n_items)`` with ``rep`` substituted at ``site``."""
        raise NotImplementedError

    def check_site(self, site: str) -> None:
        if site not in self.sites:
            raise KeyError(f"{type(self).__name__} has no site {site!r}; its sites are {sorted(self.sites)}")
