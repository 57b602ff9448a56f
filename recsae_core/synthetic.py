"""Planted concepts: recommender-like data whose ground-truth features are known (tests and the book).

Items belong to known groups ("genres"); each group has a random unit direction in ``R^d`` (d = 64 by
default). Two generators:

* :func:`planted_rows` — activation rows that are sparse non-negative sums of the directions of the
  groups of the item behind the row, plus noise: ``x = sum_{g in groups(item)} c_g u_g + b + eps``
  (``c_g`` drawn per row, ``b`` a shared offset). An SAE should recover one latent per group; raw
  coordinates mix all groups.
* :func:`planted_world` — a :class:`PlantedRecommender` (sites ``planted.seq`` ``(B, L, D)``,
  ``planted.user`` ``(B, D)``, ``planted.item`` ``(n_items, D)``) with item embeddings built the same way
  and user histories drawn from per-user group tastes. Its user vector is the mean of the history's item
  embeddings and scores are dot products, so pushing a user vector along ``u_g`` raises group ``g``'s
  items: the steering tests' ground truth.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from recsae_core.data.dataset import RecDataset, Split
from recsae_core.data.splits import leave_one_out
from recsae_core.models.base import Recommender, UserBatch

__all__ = [
    "PlantedRecommender",
    "PlantedRows",
    "PlantedWorld",
    "oracle_sae",
    "planted_rows",
    "planted_split",
    "planted_world",
]


def _directions(n_groups: int, d: int, gen: torch.Generator) -> torch.Tensor:
    u = torch.randn(n_groups, d, generator=gen)
    return u / u.norm(dim=1, keepdim=True)


def _item_groups(n_items: int, n_groups: int, p_second: float, gen: torch.Generator) -> torch.Tensor:
    """``(n_items, G)`` bool: one group per item (round robin, so every group is populated), sometimes two."""
    groups = torch.zeros(n_items, n_groups, dtype=torch.bool)
    first = torch.arange(n_items) % n_groups
    groups[torch.arange(n_items), first] = True
    second = (first + torch.randint(1, n_groups, (n_items,), generator=gen)) % n_groups
    has_second = torch.rand(n_items, generator=gen) < p_second
    groups[torch.arange(n_items)[has_second], second[has_second]] = True
    return groups


@dataclass
class PlantedRows:
    """Activation rows with planted concepts.

    Attributes:
        acts: ``(N, d)`` float32 rows.
        items: ``(N,)`` item behind each row.
        labels: ``(N, G)`` bool, the groups of the row's item (the planted concepts).
        item_groups: ``(n_items, G)`` bool.
        directions: ``(G, d)`` unit direction of each group.
    """

    acts: torch.Tensor
    items: torch.Tensor
    labels: torch.Tensor
    item_groups: torch.Tensor
    directions: torch.Tensor


def planted_rows(
    n_rows: int = 8192,
    d: int = 64,
    n_groups: int = 16,
    n_items: int = 400,
    *,
    p_second: float = 0.3,
    noise: float = 0.05,
    offset: float = 0.5,
    seed: int = 0,
) -> PlantedRows:
    """Rows ``x = sum_{g in groups(item)} c_g u_g + b + eps``, ``c_g ~ U(0.5, 1.5)``, ``eps ~ N(0, noise^2 I)``.

    ``b`` is a fixed random offset of norm ``offset`` (so a decoder bias has something to learn).
    """
    if n_groups < 2 or n_rows < 1 or d < 1 or n_items < n_groups:
        raise ValueError("planted_rows needs n_groups >= 2, n_rows >= 1, d >= 1 and n_items >= n_groups")
    gen = torch.Generator().manual_seed(seed)
    dirs = _directions(n_groups, d, gen)
    groups = _item_groups(n_items, n_groups, p_second, gen)
    items = torch.randint(n_items, (n_rows,), generator=gen)
    labels = groups[items]
    coef = (0.5 + torch.rand(n_rows, n_groups, generator=gen)) * labels
    b = torch.randn(d, generator=gen)
    b = offset * b / b.norm()
    acts = coef @ dirs + b + noise * torch.randn(n_rows, d, generator=gen)
    return PlantedRows(acts.float(), items, labels, groups, dirs)


class PlantedRecommender(Recommender):
    """A frozen toy recommender over planted item embeddings (the :class:`Recommender` interface).

    ``planted.seq`` ``(B, L, D)``: the item embedding at every position (zeros at padding);
    ``planted.user`` ``(B, D)``: the mean over non-padding positions; ``planted.item``: the item table.
    Scores are ``user . item``.
    """

    def __init__(self, item_emb: torch.Tensor, maxlen: int = 20) -> None:
        super().__init__()
        self.n_items = item_emb.shape[0]
        self.maxlen = maxlen  # evaluation code builds histories of this length
        self.item_emb = torch.nn.Parameter(item_emb.clone(), requires_grad=False)
        self.sites = {
            "planted.seq": "(B, L, D) item embedding at every position",
            "planted.user": "(B, D) mean of the history's item embeddings",
            "planted.item": "(n_items, D) item table",
        }

    def _seq_rep(self, seqs_BL: torch.Tensor) -> torch.Tensor:
        table = torch.cat([torch.zeros(1, self.item_emb.shape[1], dtype=self.item_emb.dtype), self.item_emb])
        return table[seqs_BL]

    def _pool(self, rep_BLD: torch.Tensor, seqs_BL: torch.Tensor) -> torch.Tensor:
        mask = (seqs_BL > 0).to(rep_BLD.dtype).unsqueeze(-1)
        return (rep_BLD * mask).sum(1) / mask.sum(1).clamp_min(1.0)

    def representation(self, site: str, batch: UserBatch) -> torch.Tensor:
        self.check_site(site)
        if site == "planted.item":
            return self.item_emb
        if batch.seqs is None:
            raise ValueError("PlantedRecommender needs UserBatch.seqs")
        rep = self._seq_rep(batch.seqs)
        return rep if site == "planted.seq" else self._pool(rep, batch.seqs)

    def score_from(self, site: str, rep: torch.Tensor, batch: UserBatch) -> torch.Tensor:
        self.check_site(site)
        if site == "planted.item":
            return self.representation("planted.user", batch) @ rep.T
        if site == "planted.seq":
            rep = self._pool(rep, batch.seqs)
        return rep @ self.item_emb.T

    def score(self, batch: UserBatch) -> torch.Tensor:
        return self.score_from("planted.user", self.representation("planted.user", batch), batch)


@dataclass
class PlantedWorld:
    """A planted recommender with users, histories and ground truth.

    Attributes:
        model: the :class:`PlantedRecommender`.
        users: ``(U,)`` user ids; ``seqs``: ``(U, L)`` left-padded histories (item ``i`` stored as ``i + 1``).
        targets: ``(U,)`` one held-out item per user, drawn from the user's tastes (for HR/NDCG).
        item_groups: ``(n_items, G)`` bool; ``directions``: ``(G, d)``; ``user_taste``: ``(U, G)`` weights.
    """

    model: PlantedRecommender
    users: torch.Tensor
    seqs: torch.Tensor
    targets: torch.Tensor
    item_groups: torch.Tensor
    directions: torch.Tensor
    user_taste: torch.Tensor

    def batch(self) -> UserBatch:
        return UserBatch(self.users, self.seqs)

    def seen(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(rows, items)`` of every history item (for masking seen items)."""
        rows, cols = torch.nonzero(self.seqs > 0, as_tuple=True)
        return rows, self.seqs[rows, cols] - 1


def planted_world(
    n_users: int = 300,
    n_items: int = 400,
    n_groups: int = 8,
    d: int = 64,
    maxlen: int = 20,
    *,
    p_second: float = 0.3,
    item_noise: float = 0.1,
    seed: int = 0,
) -> PlantedWorld:
    """Users with 1-2 favourite groups; histories of 5..maxlen items drawn mostly (90%) from those groups."""
    if maxlen < 5:
        raise ValueError("planted_world needs maxlen >= 5")
    gen = torch.Generator().manual_seed(seed)
    dirs = _directions(n_groups, d, gen)
    groups = _item_groups(n_items, n_groups, p_second, gen)
    coef = (0.8 + 0.4 * torch.rand(n_items, n_groups, generator=gen)) * groups
    item_emb = coef @ dirs + item_noise * torch.randn(n_items, d, generator=gen) / d**0.5
    taste = torch.zeros(n_users, n_groups)
    fav = torch.randint(n_groups, (n_users, 2), generator=gen)
    taste[torch.arange(n_users), fav[:, 0]] += 0.7
    taste[torch.arange(n_users), fav[:, 1]] += 0.3
    taste = 0.9 * taste + 0.1 / n_groups
    # P(item | user) ∝ sum_g taste[u, g] * [item in g] / |g|
    group_size = groups.sum(0).clamp_min(1).float()
    p_item = taste @ (groups.float() / group_size).T  # (U, n_items)
    rng = np.random.default_rng(seed)
    lengths = rng.integers(5, maxlen + 1, size=n_users)
    seqs = torch.zeros(n_users, maxlen, dtype=torch.int64)
    targets = torch.empty(n_users, dtype=torch.int64)
    draws = torch.multinomial(p_item, maxlen + 1, replacement=False, generator=gen)  # distinct items per user
    for_len = torch.as_tensor(lengths)
    cols = torch.arange(maxlen)
    keep = cols[None, :] >= (maxlen - for_len)[:, None]  # left padding
    seqs[keep] = draws[:, :maxlen][keep] + 1
    targets[:] = draws[:, maxlen]
    model = PlantedRecommender(item_emb.float(), maxlen).eval()
    return PlantedWorld(model, torch.arange(n_users), seqs, targets, groups, dirs, taste)


def planted_split(world: PlantedWorld) -> Split:
    """A leave-one-out :class:`~recsae_core.data.dataset.Split` of the planted world: each user's history
    in order, then its held-out target; test = the target, valid = the last history item (so the test
    history is the user's full ``seqs`` row). Items are labelled by their groups ``g0, g1, ...``."""
    r, c = torch.nonzero(world.seqs > 0, as_tuple=True)
    n_users, n_items = len(world.users), world.model.n_items
    inter = pd.DataFrame(
        {
            "user": torch.cat([r, world.users]).numpy(),
            "item": torch.cat([world.seqs[r, c] - 1, world.targets]).numpy(),
            "rating": np.float32(1.0),
            "timestamp": torch.cat([c, torch.full((n_users,), world.seqs.shape[1])]).numpy().astype(np.int64),
        }
    )
    items = pd.DataFrame(
        {
            "item_id": np.arange(n_items),
            "title": [f"i{i}" for i in range(n_items)],
            "year": pd.array([pd.NA] * n_items, dtype="Int64"),
        }
    )
    names = [f"g{g}" for g in range(world.item_groups.shape[1])]
    ds = RecDataset(
        "planted",
        inter,
        items,
        world.item_groups.numpy().copy(),
        names,
        pd.DataFrame({"user_id": np.arange(n_users)}),
    )
    return leave_one_out(ds)


def oracle_sae(world: PlantedWorld, threshold: float = 0.3) -> object:
    """The known answer for a planted world: a ReLU SAE whose latent g reads planted direction g (encoder =
    decoder = the directions, encoder bias ``-threshold``), in eval mode. Tests compare what a pipeline finds
    with it."""
    from recsae_core.sae import ReluL1Config, from_config

    g, d = world.directions.shape
    sae = from_config(ReluL1Config(d_in=d, n_latents=g, input_norm="none")).eval()
    with torch.no_grad():
        sae.W_enc.copy_(world.directions)
        sae.W_dec.copy_(world.directions)
        sae.b_enc.fill_(-threshold)
        sae.b_dec.zero_()
    return sae
