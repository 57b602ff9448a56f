"""Two-tower recommenders: BPR-MF and LightGCN (P2's general and graph models), MF and NCF (P3).

Every model here is a user vector and an item table combined by a scorer:

| model | user vector (site ``<m>.user``, ``(B, D)``) | item table (site ``<m>.item``, ``(n_items, D)``) | score |
|---|---|---|---|
| ``bprmf`` | ``P[u]`` | ``Q`` | ``P[u] · Q[i]`` (Rendle et al. 2009; ReChorus BPRMF) |
| ``lightgcn`` | propagated, mean of layers | propagated, mean of layers | dot product (He et al. 2020) |
| ``mf`` | ``P[u]`` | ``Q`` | logit ``g + b_u + b_i + P[u] · Q[i]``; probability = sigmoid (P3) |
| ``ncf`` | ``P[u]`` | ``Q`` | logit of ``MLP([e_u; e_i])``, MLP 64-32-16 → 1; probability = sigmoid (P3) |

``score``/``score_from`` return **logits** (ranking is the same as for the sigmoid). ``score_from`` with
an edited item table scores the batch users against the edited catalogue (P3 interventions). Losses
(BPR, BCE with sampled negatives) and optimisers live in :mod:`recsae_core.train`.
"""

from __future__ import annotations

import itertools
import warnings
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from recsae_core.models.base import Recommender, UserBatch

__all__ = [
    "BPRMF",
    "MF",
    "NCF",
    "BPRMFConfig",
    "LightGCN",
    "LightGCNConfig",
    "MFConfig",
    "NCFConfig",
    "TwoTower",
]


def _check_common(cfg: object, name: str) -> None:
    for field_name in ("d", "batch_size", "epochs", "patience"):
        if getattr(cfg, field_name) < 1:
            raise ValueError(f"{name}.{field_name} must be >= 1, got {getattr(cfg, field_name)}")
    if cfg.lr <= 0:  # type: ignore[attr-defined]
        raise ValueError(f"{name}.lr must be > 0, got {cfg.lr}")  # type: ignore[attr-defined]
    if cfg.l2 < 0:  # type: ignore[attr-defined]
        raise ValueError(f"{name}.l2 must be >= 0, got {cfg.l2}")  # type: ignore[attr-defined]
    if getattr(cfg, "n_neg", 1) < 1:
        raise ValueError(f"{name}.n_neg must be >= 1, got {cfg.n_neg}")  # type: ignore[attr-defined]
    if getattr(cfg, "valid_users", None) is not None and cfg.valid_users < 1:  # type: ignore[attr-defined]
        raise ValueError(f"{name}.valid_users must be >= 1 or None")


@dataclass
class BPRMFConfig:
    """BPR-MF (P2's general model; ReChorus ``BPRMF`` defaults unless noted)."""

    d: int = 64
    """Embedding size (P2: emb 64)."""
    lr: float = 1e-3
    """Adam learning rate (P2/ReChorus: 1e-3)."""
    l2: float = 1e-6
    """Adam weight decay (P2/ReChorus ``--l2 1e-6``)."""
    batch_size: int = 1024
    """Training triples per step (ReChorus: 256; 1024 is recsae's CPU choice, same epochs to converge within ~2x)."""
    n_neg: int = 4
    """Sampled negatives per training pair and epoch, each its own BPR triple (standard BPR and ReChorus: 1;
    4 here: ML-100k test NDCG@10 0.066 vs 0.057 with 1, at the same learning rate)."""
    epochs: int = 200
    """Maximum epochs (ReChorus default 200); early stopping ends sooner."""
    patience: int = 10
    """Epochs without a better validation NDCG@10 before stopping (ReChorus ``--early_stop 10``)."""
    valid_users: int | None = 10_000
    """Validation users per epoch (sampled once, seeded); None = all."""

    def __post_init__(self) -> None:
        _check_common(self, "BPRMFConfig")


@dataclass
class LightGCNConfig:
    """LightGCN (P2's graph model; He et al. 2020, ReChorus ``LightGCN``)."""

    d: int = 64
    """Embedding size (P2: emb 64)."""
    n_layers: int = 3
    """Propagation layers (P2: 3; LightGCN paper's best on most data)."""
    lr: float = 1e-2
    """Adam learning rate (P2: 1e-3; 1e-2 here reaches a better validation NDCG@10 on ML-100k in ~45 epochs
    instead of > 150: test NDCG@10 0.074 vs 0.073 at 5e-3 and 0.046 at 1e-3 after 40 epochs)."""
    l2: float = 1e-4
    """L2 coefficient on the batch's layer-0 embeddings, divided by the batch size (LightGCN paper ``decay 1e-4``; P2's ReChorus run: weight decay 1e-8)."""
    batch_size: int = 2048
    """Training triples per step (LightGCN paper ``bpr_batch 2048``; one graph propagation per step)."""
    n_neg: int = 1
    """Sampled negatives per training pair and epoch, each its own BPR triple (standard BPR: 1)."""
    epochs: int = 200
    """Maximum epochs."""
    patience: int = 10
    """Epochs without a better validation NDCG@10 before stopping."""
    valid_users: int | None = 10_000
    """Validation users per epoch (sampled once, seeded); None = all."""

    def __post_init__(self) -> None:
        _check_common(self, "LightGCNConfig")
        if self.n_layers < 0:
            raise ValueError(f"LightGCNConfig.n_layers must be >= 0, got {self.n_layers}")


@dataclass
class MFConfig:
    """P3's MF: ``sigmoid(g + b_u + b_i + p·q)`` trained with BCE on positives and sampled negatives."""

    d: int = 20
    """Embedding size (P3 ML-1M: 20; Last.FM: 100)."""
    lr: float = 2e-3
    """Adam learning rate (P3 uses minibatch SGD with α = 0.05; Adam converges in fewer epochs on CPU)."""
    l2: float = 1e-5
    """L2 on the batch's embeddings and biases, per example (P3: β = 0.01 with SGD)."""
    n_neg: int = 4
    """Negatives per positive, re-sampled uniformly from unseen items every epoch (P3: 1, i.e. as many as
    positives; 4 as in the NCF paper: NDCG@10 on ML-100k 0.071 vs 0.054 with 1)."""
    batch_size: int = 1024
    """Examples per step (P3: 256; recsae's CPU choice)."""
    epochs: int = 100
    """Maximum epochs (P3: 10 iterations)."""
    patience: int = 10
    """Epochs without a better validation NDCG@10 before stopping (as ReChorus ``--early_stop 10``)."""
    valid_users: int | None = 10_000
    """Validation users per epoch (sampled once, seeded); None = all."""

    def __post_init__(self) -> None:
        _check_common(self, "MFConfig")
        if self.n_neg < 1:
            raise ValueError(f"MFConfig.n_neg must be >= 1, got {self.n_neg}")


@dataclass
class NCFConfig:
    """P3's NCF: ``sigmoid(MLP([e_u; e_i]))``, MLP 64-32-16 → 1, BCE with sampled negatives."""

    d: int = 20
    """Embedding size (P3 ML-1M: 20; Last.FM: 100)."""
    hidden: tuple[int, ...] = (64, 32, 16)
    """MLP layer sizes (P3: [64, 32, 16] then 1)."""
    lr: float = 3e-3
    """Adam learning rate (P3: 0.05 on ML-1M, 1e-3 on Last.FM; 3e-3 chosen on ML-100k: NDCG@10 0.072 vs 0.055)."""
    l2: float = 0.0
    """L2 on the batch's embeddings, per example (P3: none)."""
    n_neg: int = 4
    """Negatives per positive, re-sampled uniformly from unseen items every epoch (P3: 1; NCF paper: 4)."""
    batch_size: int = 1024
    """Examples per step (P3: 256; recsae's CPU choice)."""
    epochs: int = 100
    """Maximum epochs (P3: 30)."""
    patience: int = 10
    """Epochs without a better validation NDCG@10 before stopping (as ReChorus ``--early_stop 10``)."""
    valid_users: int | None = 10_000
    """Validation users per epoch (sampled once, seeded); None = all."""
    score_chunk: int = 1 << 15
    """``users x items`` pairs per chunk when scoring whole catalogues (at least one user per chunk): bounds
    memory, and small chunks keep the ``(pairs, 64)`` MLP activations in cache (2^15 scored Last.fm's 17,632
    items ~10x faster than 2^22)."""

    def __post_init__(self) -> None:
        _check_common(self, "NCFConfig")
        if self.n_neg < 1:
            raise ValueError(f"NCFConfig.n_neg must be >= 1, got {self.n_neg}")
        if not self.hidden or any(h < 1 for h in self.hidden):
            raise ValueError(f"NCFConfig.hidden must be non-empty positive sizes, got {self.hidden}")
        self.hidden = tuple(int(h) for h in self.hidden)
        if self.score_chunk < 1:
            raise ValueError("NCFConfig.score_chunk must be >= 1")


class TwoTower(Recommender):
    """Shared plumbing: sites ``<prefix>.user`` and ``<prefix>.item`` on top of three methods."""

    prefix: str = ""

    def __init__(self, n_users: int, n_items: int) -> None:
        super().__init__()
        self.n_users, self.n_items = n_users, n_items
        self.sites = {
            f"{self.prefix}.user": "(B, D) user vector before the prediction layer",
            f"{self.prefix}.item": "(n_items, D) item table",
        }

    def user_vectors(self, users_B: torch.Tensor) -> torch.Tensor:
        """``(B, D)`` user vectors."""
        raise NotImplementedError

    def item_table(self) -> torch.Tensor:
        """``(n_items, D)`` item vectors."""
        raise NotImplementedError

    def score_vectors(
        self, u_BD: torch.Tensor, items_ID: torch.Tensor, users_B: torch.Tensor
    ) -> torch.Tensor:
        """Scores ``(B, I)`` of user vectors against an item table (``users_B`` for user-side biases)."""
        return u_BD @ items_ID.T

    def pair_scores_from(
        self, u_ND: torch.Tensor, i_ND: torch.Tensor, users_N: torch.Tensor, items_N: torch.Tensor
    ) -> torch.Tensor:
        """Scores ``(N,)`` of matched (user vector, item vector) pairs."""
        return (u_ND * i_ND).sum(-1)

    def pair_scores(self, users_N: torch.Tensor, items_N: torch.Tensor) -> torch.Tensor:
        """Scores ``(N,)`` of (user, item) pairs (training)."""
        return self.pair_scores_from(self.user_vectors(users_N), self.item_table()[items_N], users_N, items_N)

    def representation(self, site: str, batch: UserBatch) -> torch.Tensor:
        self.check_site(site)
        return self.user_vectors(batch.users) if site.endswith(".user") else self.item_table()

    def score_from(self, site: str, rep: torch.Tensor, batch: UserBatch) -> torch.Tensor:
        self.check_site(site)
        if site.endswith(".user"):
            return self.score_vectors(rep, self.item_table(), batch.users)
        if rep.shape[0] != self.n_items:
            raise ValueError(f"{site} expects an item table of {self.n_items} rows, got {tuple(rep.shape)}")
        return self.score_vectors(self.user_vectors(batch.users), rep, batch.users)

    def score(self, batch: UserBatch) -> torch.Tensor:
        return self.score_vectors(self.user_vectors(batch.users), self.item_table(), batch.users)


def _normal_embedding(n: int, d: int, std: float = 0.1) -> nn.Embedding:
    emb = nn.Embedding(n, d)
    nn.init.normal_(emb.weight, 0.0, std)
    return emb


class BPRMF(TwoTower):
    """Matrix factorisation scored by a dot product, trained with BPR (P2, ReChorus ``BPRMF``)."""

    prefix = "bprmf"

    def __init__(self, n_users: int, n_items: int, config: BPRMFConfig | None = None) -> None:
        super().__init__(n_users, n_items)
        self.config = config or BPRMFConfig()
        self.user_emb = _normal_embedding(n_users, self.config.d, 0.01)
        self.item_emb = _normal_embedding(n_items, self.config.d, 0.01)

    def user_vectors(self, users_B: torch.Tensor) -> torch.Tensor:
        return self.user_emb(users_B)

    def item_table(self) -> torch.Tensor:
        return self.item_emb.weight

    def pair_scores(self, users_N: torch.Tensor, items_N: torch.Tensor) -> torch.Tensor:
        return (self.user_emb(users_N) * self.item_emb(items_N)).sum(-1)


class _SymmetricSpMM(torch.autograd.Function):
    """``A @ X`` for a symmetric sparse ``A``: the backward is ``A @ grad`` (``Aᵀ = A``).

    torch's own backward for a CSR product transposes the matrix on every call, which made a LightGCN
    step on ML-1M ~4x slower on CPU.
    """

    @staticmethod
    def forward(ctx, adj, x):
        ctx.adj = adj
        return adj @ x

    @staticmethod
    def backward(ctx, grad):
        return None, ctx.adj @ grad


class LightGCN(TwoTower):
    """LightGCN (He et al. 2020): ``E = mean_k Â^k E0`` with ``Â = D^-1/2 A D^-1/2`` of the user-item graph.

    The training edges are stored as a buffer (``edges``, ``(2, E)`` user and item ids) so a checkpoint is
    self-contained. In eval mode the propagated table is cached until the parameters change.
    """

    prefix = "lightgcn"

    def __init__(
        self,
        n_users: int,
        n_items: int,
        config: LightGCNConfig | None = None,
        edges: torch.Tensor | None = None,
    ) -> None:
        super().__init__(n_users, n_items)
        self.config = config or LightGCNConfig()
        self.emb = _normal_embedding(n_users + n_items, self.config.d, 0.1)  # LightGCN paper init std 0.1
        if edges is None:
            edges = torch.zeros(2, 0, dtype=torch.int64)
        self.register_buffer("edges", torch.as_tensor(edges, dtype=torch.int64))
        self._adj: torch.Tensor | None = None
        self._cache: tuple[tuple, torch.Tensor] | None = None

    def _adjacency(self) -> torch.Tensor:
        if self._adj is None or self._adj.device != self.edges.device:
            u, i = self.edges[0], self.edges[1] + self.n_users
            n = self.n_users + self.n_items
            rows, cols = torch.cat([u, i]), torch.cat([i, u])
            deg = torch.bincount(rows, minlength=n).float()
            inv_sqrt = deg.pow(-0.5)
            inv_sqrt[deg == 0] = 0.0
            vals = inv_sqrt[rows] * inv_sqrt[cols]
            adj = torch.sparse_coo_tensor(torch.stack([rows, cols]), vals, (n, n), check_invariants=False)
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")
                self._adj = adj.coalesce().to_sparse_csr()
        return self._adj

    def propagate(self) -> torch.Tensor:
        """``(n_users + n_items, D)`` mean of the layer embeddings (users first)."""
        key = (self.emb.weight._version, self.emb.weight.data_ptr(), self.edges.data_ptr())
        if (
            not self.training
            and not torch.is_grad_enabled()
            and self._cache is not None
            and self._cache[0] == key
        ):
            return self._cache[1]
        adj = self._adjacency()
        e = self.emb.weight
        total = e
        for _ in range(self.config.n_layers):
            e = _SymmetricSpMM.apply(adj, e)
            total = total + e
        out = total / (self.config.n_layers + 1)
        if not self.training and not torch.is_grad_enabled():
            self._cache = (key, out)
        return out

    def train(self, mode: bool = True) -> LightGCN:
        self._cache = None
        return super().train(mode)

    def _apply(self, fn, recurse=True):
        self._adj, self._cache = None, None
        return super()._apply(fn, recurse)

    def user_vectors(self, users_B: torch.Tensor) -> torch.Tensor:
        return self.propagate()[: self.n_users][users_B]

    def item_table(self) -> torch.Tensor:
        return self.propagate()[self.n_users :]

    def pair_scores(self, users_N: torch.Tensor, items_N: torch.Tensor) -> torch.Tensor:
        e = self.propagate()
        return (e[users_N] * e[self.n_users + items_N]).sum(-1)

    @classmethod
    def from_state(cls, n_users: int, n_items: int, config: LightGCNConfig, state: dict) -> LightGCN:
        model = cls(n_users, n_items, config, edges=state["edges"])
        model.load_state_dict(state)
        return model


class MF(TwoTower):
    """P3's MF: logit ``g + b_u + b_i + P[u] · Q[i]``, probability ``sigmoid(logit)``."""

    prefix = "mf"

    def __init__(self, n_users: int, n_items: int, config: MFConfig | None = None) -> None:
        super().__init__(n_users, n_items)
        self.config = config or MFConfig()
        self.user_emb = _normal_embedding(n_users, self.config.d, 0.1)
        self.item_emb = _normal_embedding(n_items, self.config.d, 0.1)
        self.user_bias = nn.Parameter(torch.zeros(n_users))
        self.item_bias = nn.Parameter(torch.zeros(n_items))
        self.global_bias = nn.Parameter(torch.zeros(()))

    def user_vectors(self, users_B: torch.Tensor) -> torch.Tensor:
        return self.user_emb(users_B)

    def item_table(self) -> torch.Tensor:
        return self.item_emb.weight

    def score_vectors(
        self, u_BD: torch.Tensor, items_ID: torch.Tensor, users_B: torch.Tensor
    ) -> torch.Tensor:
        bias_B1 = (self.global_bias + self.user_bias[users_B]).unsqueeze(1)
        return u_BD @ items_ID.T + self.item_bias + bias_B1

    def pair_scores_from(
        self, u_ND: torch.Tensor, i_ND: torch.Tensor, users_N: torch.Tensor, items_N: torch.Tensor
    ) -> torch.Tensor:
        return self.global_bias + self.user_bias[users_N] + self.item_bias[items_N] + (u_ND * i_ND).sum(-1)

    def pair_scores(self, users_N: torch.Tensor, items_N: torch.Tensor) -> torch.Tensor:
        return self.pair_scores_from(self.user_emb(users_N), self.item_emb(items_N), users_N, items_N)


class NCF(TwoTower):
    """P3's NCF: logit of ``MLP([e_u; e_i])`` with ReLU layers ``hidden`` then 1; probability = sigmoid.

    The first layer is applied as ``W_u e_u + W_i e_i + b`` (the same linear map as on the concatenation), so
    whole-catalogue scoring computes each half once and broadcasts, in user chunks of at most
    ``config.score_chunk`` user-item pairs.
    """

    prefix = "ncf"

    def __init__(self, n_users: int, n_items: int, config: NCFConfig | None = None) -> None:
        super().__init__(n_users, n_items)
        self.config = cfg = config or NCFConfig()
        self.user_emb = _normal_embedding(n_users, cfg.d, 0.1)
        self.item_emb = _normal_embedding(n_items, cfg.d, 0.1)
        sizes = [2 * cfg.d, *cfg.hidden]
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in itertools.pairwise(sizes))
        self.out = nn.Linear(sizes[-1], 1)

    def user_vectors(self, users_B: torch.Tensor) -> torch.Tensor:
        return self.user_emb(users_B)

    def item_table(self) -> torch.Tensor:
        return self.item_emb.weight

    def _first(self, u: torch.Tensor, i: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        w, d = self.layers[0].weight, self.config.d
        return F.linear(u, w[:, :d], self.layers[0].bias), F.linear(i, w[:, d:])

    def _mlp_rest(self, h: torch.Tensor) -> torch.Tensor:
        # in place: h is a fresh sum, and backward needs neither it nor the linear outputs
        h = F.relu(h, inplace=True)
        for layer in self.layers[1:]:
            h = F.relu(layer(h), inplace=True)
        return self.out(h).squeeze(-1)

    def pair_scores_from(
        self, u_ND: torch.Tensor, i_ND: torch.Tensor, users_N: torch.Tensor, items_N: torch.Tensor
    ) -> torch.Tensor:
        a_u, a_i = self._first(u_ND, i_ND)
        return self._mlp_rest(a_u + a_i)

    def score_vectors(
        self, u_BD: torch.Tensor, items_ID: torch.Tensor, users_B: torch.Tensor
    ) -> torch.Tensor:
        a_u_BH, a_i_IH = self._first(u_BD, items_ID)
        n_items = items_ID.shape[0]
        chunk = max(1, self.config.score_chunk // max(n_items, 1))
        parts = [
            self._mlp_rest(a_u_BH[s : s + chunk, None, :] + a_i_IH[None, :, :])
            for s in range(0, u_BD.shape[0], chunk)
        ]
        return torch.cat(parts, 0) if parts else u_BD.new_zeros(0, n_items)


def edges_from_pairs(users_N: np.ndarray, items_N: np.ndarray) -> torch.Tensor:
    """``(2, E)`` int64 edge tensor for :class:`LightGCN`."""
    return torch.from_numpy(np.stack([np.asarray(users_N, np.int64), np.asarray(items_N, np.int64)]))
