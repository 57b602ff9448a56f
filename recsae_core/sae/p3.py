"""P3's prediction-aware SAE and its Matryoshka variant (Arviv et al.; papers.md §3.3), plus adaptors
that turn a frozen two-tower recommender into the ``scorer`` the trainer backpropagates through."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Protocol

import torch

from recsae_core.sae.base import RowStats, SparseAutoencoder
from recsae_core.sae.config import MatryoshkaConfig, P3Config
from recsae_core.sae.registry import register_sae

__all__ = [
    "P3SAE",
    "EmbeddingScorer",
    "MatryoshkaSAE",
    "call_scorer",
    "dot_product_scorer",
    "two_tower_scorer",
]

ROW_EPS = 1e-5  # OpenAI ``LN`` epsilon, used by P3's ``normalize=True``


@register_sae("p3", P3Config)
class P3SAE(SparseAutoencoder):
    """``z = ReLU(W (x - b_pre) + b_lat)``, ``x_hat = W^T z + b_pre`` (tied by default; ``b_pre`` = ``b_dec``).

    With ``normalize_rows`` each input row is standardised by its own mean/std first and the output
    de-standardised (P3 ``normalize=True``); :meth:`decode` then needs the ``row_stats`` from
    :meth:`encode_with_stats`.

    Deviation: P3's MF code also min-max normalises every training batch per dimension
    (``normalize_matrix``), which makes an embedding's code depend on its batch; recsae does not.
    """

    cfg: P3Config
    unit_norm_decoder = False  # P3: tied weights, no decoder normalisation

    def activation(self, pre_NM: torch.Tensor) -> torch.Tensor:
        return torch.relu(pre_NM)

    def _prepare(self, x_ND: torch.Tensor) -> tuple[torch.Tensor, RowStats | None]:
        if not self.cfg.normalize_rows:
            return x_ND, None
        mean = x_ND.mean(dim=-1, keepdim=True)
        xc = x_ND - mean
        # = xc.std(dim=-1) (unbiased), ~10x faster on CPU for short rows (P3: d = 20)
        std = torch.linalg.vector_norm(xc, dim=-1, keepdim=True).div_(max(x_ND.shape[-1] - 1, 1) ** 0.5)
        std += ROW_EPS
        return xc / std, RowStats(mean, std)

    def _restore(self, xhat_ND: torch.Tensor, stats: RowStats | None) -> torch.Tensor:
        if not self.cfg.normalize_rows:
            return xhat_ND
        if stats is None:
            raise ValueError(
                "this SAE standardises each row (normalize_rows=True): pass the row_stats from encode_with_stats"
            )
        return xhat_ND * stats.std + stats.mean

    @property
    def prefix_bounds(self) -> tuple[int, ...]:
        """Ends of the nested prefixes (just ``(m,)`` for the plain SAE)."""
        return (self.n_latents,)

    def decode_prefixes_normalized(self, acts_NM: torch.Tensor) -> torch.Tensor:
        """``(L, N, d)`` reconstruction from each prefix of the dictionary, in ONE pass.

        Each block ``[b_{l-1}, b_l)`` is decoded once; a cumulative sum over blocks gives every prefix
        (Nabeshima's trick, engineering.md §2.8). Level ``L - 1`` is the full reconstruction.
        """
        w = self.decoder_weight
        starts = (0, *self.prefix_bounds[:-1])
        parts = torch.stack(
            [acts_NM[:, s:e] @ w[s:e] for s, e in zip(starts, self.prefix_bounds, strict=True)]
        )
        return parts.cumsum(0) + self.b_dec


@register_sae("matryoshka", MatryoshkaConfig)
class MatryoshkaSAE(P3SAE):
    """P3's SAE whose nested prefixes ``cfg.prefixes`` each reconstruct the input (trained jointly)."""

    cfg: MatryoshkaConfig

    @property
    def prefix_bounds(self) -> tuple[int, ...]:
        return tuple(self.cfg.prefixes)


# --------------------------------------------------------------------------------------------- scorers
class EmbeddingScorer(Protocol):
    """The frozen recommender's logits for user and item embeddings (P3's ``g_theta``).

    Called as ``scorer(user_emb, item_emb, users, items)``: in *all-pairs* mode ``user_emb (B, D)`` and
    ``item_emb (N, D)`` give ``(B, N)`` logits (P3 MF: every user-item pair of the batch); in *pairwise*
    mode ``(P, D)`` and ``(P, D)`` give ``(P,)`` (P3 NCF: the batch's observed positive pairs). ``users``
    and ``items`` are the ids behind the rows (for models with per-user/per-item biases). A callable that
    takes only ``(user_emb, item_emb)`` is accepted too.
    """

    def __call__(
        self, user_emb: torch.Tensor, item_emb: torch.Tensor, users: torch.Tensor, items: torch.Tensor
    ) -> torch.Tensor: ...


def call_scorer(
    scorer: Callable[..., torch.Tensor],
    user_emb: torch.Tensor,
    item_emb: torch.Tensor,
    users: torch.Tensor,
    items: torch.Tensor,
) -> torch.Tensor:
    """Call a 4-argument :class:`EmbeddingScorer` or a plain ``(user_emb, item_emb)`` callable."""
    if _n_positional(scorer) == 2:
        return scorer(user_emb, item_emb)
    return scorer(user_emb, item_emb, users, items)


def _n_positional(fn: Callable[..., object]) -> int:
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return 4
    kinds = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    if any(p.kind == inspect.Parameter.VAR_POSITIONAL for p in params):
        return 4
    return sum(p.kind in kinds for p in params)


def dot_product_scorer(pairwise: bool = False) -> Callable[..., torch.Tensor]:
    """``u . i`` logits: ``(B, N)`` for all pairs, or ``(P,)`` for matched pairs.

    For P3's MF with an MSE on logits this is exact: the biases ``g + b_u + b_i`` cancel in
    ``y_hat - y_tilde``.
    """

    def score(user_emb: torch.Tensor, item_emb: torch.Tensor) -> torch.Tensor:
        return (user_emb * item_emb).sum(-1) if pairwise else user_emb @ item_emb.T

    score.bilinear = True  # type: ignore[attr-defined]  # see two_tower_scorer
    return score


def _dot_product_bias(
    model: torch.nn.Module,
) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None:
    """For P3's MF (logit ``g + b_u + b_i + u . i``), the ``(B, N)`` bias grid of a batch; else ``None``.

    All-pairs L_pred on a P3 MF batch (256 users x 256 items) then costs one matmul: measured ~20x faster
    than expanding the grid into 65,536 pair rows on a shared 2-core CPU."""
    from recsae_core.models.twotower import MF  # the models package does not import the SAE package

    if type(model) is not MF:
        return None

    def bias(users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        return model.global_bias + model.user_bias[users].unsqueeze(1) + model.item_bias[items].unsqueeze(0)

    return bias


def two_tower_scorer(model: torch.nn.Module, pairwise: bool = False) -> EmbeddingScorer:
    """An :class:`EmbeddingScorer` over a two-tower recommender's ``pair_scores_from(u, i, users, items)``.

    Works with every model in :mod:`recsae_core.models.twotower` (MF with its biases, NCF's MLP, BPR-MF,
    LightGCN). All-pairs mode evaluates the ``B x N`` grid of pairs. The model's parameters are not
    trained (the trainer freezes them while it runs).
    """
    if not hasattr(model, "pair_scores_from"):
        raise TypeError(
            f"{type(model).__name__} has no pair_scores_from(u, i, users, items); wrap it in a callable"
        )

    grid_bias = _dot_product_bias(model)

    def score(
        user_emb: torch.Tensor, item_emb: torch.Tensor, users: torch.Tensor, items: torch.Tensor
    ) -> torch.Tensor:
        if pairwise:
            return model.pair_scores_from(user_emb, item_emb, users, items)
        if grid_bias is not None:  # dot-product models: one (B, N) matmul instead of B x N pair rows
            return user_emb @ item_emb.T + grid_bias(users, items)
        b, n, d = user_emb.shape[0], item_emb.shape[0], user_emb.shape[1]
        u = user_emb.unsqueeze(1).expand(b, n, d).reshape(-1, d)
        i = item_emb.unsqueeze(0).expand(b, n, d).reshape(-1, d)
        uu = users.unsqueeze(1).expand(b, n).reshape(-1)
        ii = items.unsqueeze(0).expand(b, n).reshape(-1)
        return model.pair_scores_from(u, i, uu, ii).reshape(b, n)

    score.module = model  # type: ignore[attr-defined]  # lets the trainer freeze the parameters
    # logits = u . i + terms without the embeddings (MF's biases): the trainer then computes an MSE on
    # logits, whose bias terms cancel, and its gradient in closed form instead of through autograd
    score.bilinear = grid_bias is not None  # type: ignore[attr-defined]
    return score
