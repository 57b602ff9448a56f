"""Metrics for SAEs on recommender representations (papers.md §4).

Conventions and rules for degenerate cases (no silent NaN):

* Inputs may be torch tensors or NumPy arrays; results are float64 tensors (or Python floats).
* **Pearson correlation** of a constant column (zero variance, feature or label) is defined as **0**: a
  constant carries no linear information about the other variable. SciPy/NumPy would return NaN.
* **ROC-AUC** uses average ranks for ties (a constant feature scores 0.5); a label with no positive or no
  negative row has no AUC and is assigned **0.5** (chance).
* **Precision** P(g = 1 | f > t) of a latent that never fires, and **fraction fired** / **mean activation**
  given a label with no positive row, are **0**.
* **Top-K lists** of a neuron (purity, monosemanticity, popularity) break ties by the lower item id.
* **RBO** is truncated, not extrapolated (P3): identical lists of depth 30 with p = 0.9 score
  ``1 - 0.9**30 ~ 0.958`` (:func:`rbo_ceiling`), never 1; empty lists score 0.
* **Kendall tau-b** over the union of two top lists; when a ranking has no untied pair (e.g. a union of
  fewer than 2 items) tau-b is undefined: identical lists then get 1.0, others 0.0.

Ranking accuracy (HR/NDCG/MRR) is :mod:`recsae_core.evaluate`'s; this module only adds list statistics
(label share, coverage, inter-list diversity) used by steering.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np
import pandas as pd
import torch
from scipy.stats import rankdata

__all__ = [
    "ConfidenceScores",
    "active_per_row",
    "confidence_scores",
    "coverage",
    "dead_fraction",
    "explained_variance",
    "firing_rates",
    "fvu",
    "inter_list_diversity",
    "kendall_tau_union",
    "l0",
    "label_conditional_stats",
    "label_share",
    "max_over_features",
    "mean_max",
    "mean_max_correlation",
    "monosemanticity_scores",
    "pearson_matrix",
    "per_label_summary",
    "popularity_ranks",
    "popularity_scores",
    "purity_at_k",
    "rbo",
    "rbo_ceiling",
    "reconstruction_stats",
    "roc_auc_matrix",
    "sample_rows",
    "top_items_per_neuron",
    "top_k_items",
]


def _t(a: Any, dtype: torch.dtype | None = None) -> torch.Tensor:
    t = a if isinstance(a, torch.Tensor) else torch.as_tensor(np.asarray(a))
    t = t.detach()
    return t.to(dtype) if dtype is not None else t


def _pair(x: Any, x_hat: Any) -> tuple[torch.Tensor, torch.Tensor]:
    x, x_hat = _t(x, torch.float64), _t(x_hat, torch.float64)
    if x.shape != x_hat.shape:
        raise ValueError(
            f"x and x_hat must have the same shape, got {tuple(x.shape)} and {tuple(x_hat.shape)}"
        )
    return x.reshape(-1, x.shape[-1]), x_hat.reshape(-1, x.shape[-1])


# ------------------------------------------------------------------------------------ reconstruction
def fvu(x: Any, x_hat: Any) -> float:
    """Fraction of variance unexplained ``sum ||x - x_hat||^2 / sum ||x - mean(x)||^2`` (P2; mean over rows).

    A constant ``x`` (zero denominator) gives 0.0 when reconstructed exactly, else ``inf``.
    """
    x, x_hat = _pair(x, x_hat)
    num = float((x - x_hat).pow(2).sum())
    den = float((x - x.mean(0)).pow(2).sum())
    if den == 0.0:
        return 0.0 if num == 0.0 else float("inf")
    return num / den


def explained_variance(x: Any, x_hat: Any) -> float:
    """sklearn ``explained_variance_score`` (``multioutput="uniform_average"``), as P1 reports it.

    Per dimension ``1 - Var(x - x_hat) / Var(x)``, averaged; a constant dimension scores 1 when its
    residual variance is 0 and 0 otherwise (sklearn's ``force_finite``).
    """
    x, x_hat = _pair(x, x_hat)
    r = x - x_hat
    num = (r - r.mean(0)).pow(2).mean(0)
    den = (x - x.mean(0)).pow(2).mean(0)
    scores = torch.ones_like(num)
    ok = (num != 0) & (den != 0)
    scores[ok] = 1 - num[ok] / den[ok]
    scores[(num != 0) & (den == 0)] = 0.0
    return float(scores.mean())


def reconstruction_stats(x: Any, x_hat: Any) -> dict[str, float]:
    """``mse``, ``mae``, ``rmse`` (over all entries), ``fvu`` and ``explained_variance`` (P1 §4.4, P2)."""
    xx, xh = _pair(x, x_hat)
    d = xx - xh
    mse = float(d.pow(2).mean())
    return {
        "mse": mse,
        "mae": float(d.abs().mean()),
        "rmse": mse**0.5,
        "fvu": fvu(xx, xh),
        "explained_variance": explained_variance(xx, xh),
    }


# ------------------------------------------------------------------------------------------ sparsity
def _acts(acts: Any) -> torch.Tensor:
    a = _t(acts)
    return a.reshape(-1, a.shape[-1])


def l0(acts: Any, threshold: float = 0.0) -> torch.Tensor:
    """``(N,)`` number of latents above ``threshold`` in each row."""
    return (_acts(acts) > threshold).sum(1)


def firing_rates(acts: Any, threshold: float = 0.0) -> torch.Tensor:
    """``(m,)`` fraction of rows in which each latent is above ``threshold`` (float64)."""
    a = _acts(acts)
    if a.shape[0] == 0:
        raise ValueError("firing_rates needs at least one row")
    return (a > threshold).sum(0).double() / a.shape[0]


def dead_fraction(acts: Any, threshold: float = 0.0) -> float:
    """Share of latents never above ``threshold`` on these rows (P1: "never > 0 on test")."""
    return float((firing_rates(acts, threshold) == 0).double().mean())


def active_per_row(acts: Any, thresholds: Sequence[float] = (0.0, 0.1, 0.3, 0.5, 1.0)) -> dict[float, float]:
    """Mean number of active latents per row at each threshold (P1 §1.10: 88.5 (>0), 10.0 (>0.1), ...)."""
    a = _acts(acts)
    return {float(t): float((a > t).sum(1).double().mean()) for t in thresholds}


# ----------------------------------------------------------------------- feature x label statistics
def _labels(G: Any, n: int) -> torch.Tensor:
    g = _t(G)
    if g.ndim == 1:
        g = g.reshape(-1, 1)
    if g.shape[0] != n:
        raise ValueError(f"labels have {g.shape[0]} rows, activations {n}")
    return g.to(torch.float64)


def pearson_matrix(H: Any, G: Any, chunk: int = 65_536) -> torch.Tensor:
    """``(m, g)`` Pearson correlation of every feature column of ``H (N, m)`` with every label of ``G (N, g)``.

    Vectorised, two passes over row chunks in float64 (means, then centred products). A constant column
    gives 0 (module docstring). P1 §4.1: ``r_jg = 1 - cdist(H.T, G.T, 'correlation')``.
    """
    h = _acts(H)
    n = h.shape[0]
    g = _labels(G, n)
    if n < 2:
        raise ValueError("pearson_matrix needs at least 2 rows")
    mh = torch.zeros(h.shape[1], dtype=torch.float64)
    for s in range(0, n, chunk):
        mh += h[s : s + chunk].double().sum(0)
    mh /= n
    mg = g.mean(0)
    sxy = torch.zeros(h.shape[1], g.shape[1], dtype=torch.float64)
    sxx = torch.zeros(h.shape[1], dtype=torch.float64)
    for s in range(0, n, chunk):
        hc = h[s : s + chunk].double() - mh
        gc = g[s : s + chunk] - mg
        sxy += hc.T @ gc
        sxx += hc.pow(2).sum(0)
    syy = (g - mg).pow(2).sum(0)
    den = torch.sqrt(sxx[:, None] * syy[None, :])
    out = torch.zeros_like(sxy)
    ok = den > 0
    out[ok] = sxy[ok] / den[ok]
    return out.clamp_(-1.0, 1.0)


def roc_auc_matrix(H: Any, G: Any, feature_chunk: int = 64) -> torch.Tensor:
    """``(m, g)`` ROC-AUC of each feature as a score for each label (P1 §4.2), vectorised via ranks.

    ``AUC = (sum of positives' ranks - n_pos (n_pos + 1) / 2) / (n_pos n_neg)`` with average ranks for ties
    (equal to sklearn ``roc_auc_score``). Labels without positives or negatives get 0.5.
    """
    h = _acts(H)
    n = h.shape[0]
    g = _labels(G, n)
    n_pos = g.sum(0)
    n_neg = n - n_pos
    gn = g.numpy()
    out = torch.empty(h.shape[1], g.shape[1], dtype=torch.float64)
    for s in range(0, h.shape[1], feature_chunk):
        block = h[:, s : s + feature_chunk].double().numpy()
        ranks = rankdata(block, axis=0, method="average")
        out[s : s + feature_chunk] = torch.from_numpy(ranks.T @ gn)
    degenerate = (n_pos == 0) | (n_neg == 0)
    auc = (out - (n_pos * (n_pos + 1) / 2)) / (n_pos * n_neg).clamp_min(1)
    auc[:, degenerate] = 0.5
    return auc


def label_conditional_stats(H: Any, G: Any, threshold: float = 0.0) -> dict[str, torch.Tensor]:
    """P1's companion ``(m, g)`` statistics (§4.1):

    ``fraction_fired`` P(f_j > t | g = 1), ``mean_activation`` E[f_j | g = 1], ``precision`` P(g = 1 | f_j > t).
    Zero where the conditioning event never happens.
    """
    h = _acts(H)
    g = _labels(G, h.shape[0])
    fired = (h > threshold).double()
    n_pos = g.sum(0)
    n_fired = fired.sum(0)
    both = fired.T @ g
    act_sum = h.double().T @ g
    safe_pos = n_pos.clamp_min(1)
    return {
        "fraction_fired": torch.where(n_pos > 0, both / safe_pos, torch.zeros_like(both)),
        "mean_activation": torch.where(n_pos > 0, act_sum / safe_pos, torch.zeros_like(act_sum)),
        "precision": torch.where(
            n_fired[:, None] > 0, both / n_fired.clamp_min(1)[:, None], torch.zeros_like(both)
        ),
    }


def max_over_features(M: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """Per label (column) the max over features (rows) and the feature attaining it: ``(values, argmax)``."""
    m = _t(M, torch.float64)
    if m.ndim != 2 or m.shape[0] == 0:
        raise ValueError(f"expected a non-empty (features, labels) matrix, got shape {tuple(m.shape)}")
    return m.max(0)


def mean_max(M: Any) -> float:
    """Mean over labels of the max over features (P1's ``max_by_feature.mean()``)."""
    return float(max_over_features(M)[0].mean())


def sample_rows(n: int, max_rows: int = 200_000, seed: int = 42) -> torch.Tensor:
    """Sorted row ids of a seeded random sample of at most ``max_rows`` of ``n`` rows (P1: 200,000, seed 42)."""
    if n <= max_rows:
        return torch.arange(n)
    g = torch.Generator().manual_seed(seed)
    return torch.randperm(n, generator=g)[:max_rows].sort().values


def _label_rows(H: Any, G: Any, max_rows: int | None, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(H, G)`` as 2-D tensors, subsampled by P1's rule (§4.1: at most ``max_rows`` = 200,000 rows, a
    seeded sample, seed 42); the ONE row rule of every label statistic here."""
    h = _acts(H)
    g = _labels(G, h.shape[0])
    if max_rows is not None and h.shape[0] > max_rows:
        idx = sample_rows(h.shape[0], max_rows, seed)
        h, g = h[idx], g[idx]
    return h, g


def mean_max_correlation(H: Any, G: Any, *, max_rows: int | None = 200_000, seed: int = 42) -> float:
    """P1's headline: mean over labels of the max over features of the Pearson correlation (§4.1).

    Rows are subsampled as P1 does (at most ``max_rows``, seeded; ``None``: every row), the same rule as
    :func:`per_label_summary`, whose ``max_corr`` column this averages.
    """
    h, g = _label_rows(H, G, max_rows, seed)
    return mean_max(pearson_matrix(h, g))


def per_label_summary(
    H: Any,
    G: Any,
    label_names: Sequence[str] | None = None,
    *,
    max_rows: int | None = 200_000,
    seed: int = 42,
    auc: bool = True,
    threshold: float = 0.0,
) -> pd.DataFrame:
    """One row per label: P1's max-over-features statistics (§4.1-4.2) and the feature attaining each.

    Columns: ``max_corr``/``best_feature`` (Pearson), ``max_auc``/``best_auc_feature`` (if ``auc``),
    ``max_fraction_fired``, ``max_mean_activation``, ``max_precision``. Call it on SAE activations and on
    the raw neurons for P1's "SAE vs Original" bars; the mean of ``max_corr`` is :func:`mean_max_correlation`
    with the same ``max_rows`` and ``seed``. Rows are subsampled to ``max_rows`` (seeded) as P1 does (§4.1).
    """
    h, g = _label_rows(H, G, max_rows, seed)
    names = list(label_names) if label_names is not None else [str(j) for j in range(g.shape[1])]
    if len(names) != g.shape[1]:
        raise ValueError(f"{len(names)} label names for {g.shape[1]} labels")
    corr_v, corr_j = max_over_features(pearson_matrix(h, g))
    out = pd.DataFrame({"label": names, "max_corr": corr_v.numpy(), "best_feature": corr_j.numpy()})
    if auc:
        auc_v, auc_j = max_over_features(roc_auc_matrix(h, g))
        out["max_auc"], out["best_auc_feature"] = auc_v.numpy(), auc_j.numpy()
    stats = label_conditional_stats(h, g, threshold)
    for key in ("fraction_fired", "mean_activation", "precision"):
        out[f"max_{key}"] = max_over_features(stats[key])[0].numpy()
    return out


# ------------------------------------------------------------------------------ item-level (P3)
def top_items_per_neuron(item_acts: Any, k: int) -> torch.Tensor:
    """``(m, k)`` item ids with the largest activation per neuron (``item_acts`` is ``(n_items, m)``).

    Ties go to the lower item id (stable sort).
    """
    a = _acts(item_acts)
    if not 1 <= k <= a.shape[0]:
        raise ValueError(f"k must be in [1, n_items={a.shape[0]}], got {k}")
    order = torch.sort(-a.T.double(), dim=1, stable=True).indices
    return order[:, :k]


def purity_at_k(item_acts: Any, item_labels: Any, k: int) -> torch.Tensor:
    """``(m, g)`` share of each neuron's top-``k`` items carrying each label (P3 §4.7).

    For a tag *set* T (P3's Last.FM purity), pass ``item_labels[:, T].any(1)`` as a single column.
    """
    a = _acts(item_acts)
    lab = _labels(item_labels, a.shape[0])
    top = top_items_per_neuron(a, k)
    return lab[top].mean(1)


def monosemanticity_scores(item_acts: Any, item_emb: Any, top: int = 30) -> torch.Tensor:
    """``(m,)`` monosemanticity score per neuron (P3 §4.8, after Pach et al. 2025).

    Min-max normalise each neuron's activations over items; take its ``top`` items; ``R`` = outer
    product of their normalised activations, ``S`` = cosine similarities of their embeddings, both with
    the diagonal zeroed; ``MS = sum(R * S) / sum(R)`` (0 when ``sum(R) = 0``, e.g. a constant neuron).
    """
    a = _acts(item_acts).double()
    e = _t(item_emb, torch.float64)
    if e.shape[0] != a.shape[0]:
        raise ValueError(f"item_emb has {e.shape[0]} rows, item_acts {a.shape[0]}")
    lo, hi = a.min(0).values, a.max(0).values
    span = hi - lo
    an = torch.where(
        span > 0, (a - lo) / torch.where(span > 0, span, torch.ones_like(span)), torch.zeros_like(a)
    )
    idx = top_items_per_neuron(a, top)  # (m, T)
    acts_MT = an.T.gather(1, idx)
    en = e / e.norm(dim=1, keepdim=True).clamp_min(1e-12)
    emb_MTD = en[idx]
    eye = torch.eye(idx.shape[1], dtype=torch.bool)
    R = (acts_MT[:, :, None] * acts_MT[:, None, :]).masked_fill(eye, 0.0)
    S = (emb_MTD @ emb_MTD.transpose(1, 2)).masked_fill(eye, 0.0)
    num, den = (R * S).sum((1, 2)), R.sum((1, 2))
    return torch.where(den > 0, num / den.clamp_min(1e-300), torch.zeros_like(num))


def popularity_ranks(item_counts: Any) -> torch.Tensor:
    """``(n_items,)`` popularity rank, 1 = most users; ties share the average rank."""
    c = _t(item_counts, torch.float64).numpy()
    return torch.from_numpy(rankdata(-c, method="average"))


def popularity_scores(item_acts: Any, item_counts: Any, top: int = 500) -> torch.Tensor:
    """``(m,)`` mean popularity rank of each neuron's ``top`` items (P3 §3.6: top-500 on ML-1M, 50 on Last.FM).

    The "popularity neuron" is the argmin (P3 dev: ML-1M MF neuron 2 at 595 of 3,706).
    """
    ranks = popularity_ranks(item_counts)
    idx = top_items_per_neuron(item_acts, top)
    return ranks[idx].mean(1)


# ---------------------------------------------------------------------------------------- fidelity
def rbo_ceiling(p: float = 0.9, depth: int = 30) -> float:
    """Score of two identical lists under truncated RBO: ``1 - p**depth`` (0.958 for p = 0.9, depth 30)."""
    return 1.0 - p**depth


def _lists(A: Any, B: Any, depth: int | None) -> tuple[torch.Tensor, torch.Tensor]:
    a, b = _t(A, torch.int64), _t(B, torch.int64)
    if a.ndim == 1:
        a, b = a[None], b[None]
    if a.shape != b.shape or a.ndim != 2:
        raise ValueError(
            f"expected two (U, K) lists of equal shape, got {tuple(a.shape)} and {tuple(b.shape)}"
        )
    if depth is not None:
        a, b = a[:, :depth], b[:, :depth]
    return a, b


def rbo(A: Any, B: Any, p: float = 0.9, depth: int = 30, pad: int = -1) -> torch.Tensor:
    """``(U,)`` truncated rank-biased overlap of two top lists per user (P3 §4.9), no extrapolation.

    ``RBO = (1 - p) sum_{d=1..D} p^(d-1) |A_d ∩ B_d| / d`` with ``D = min(depth, K)``; entries equal to
    ``pad`` (short lists) never match. Items within a list are assumed distinct.
    """
    if not 0 < p < 1:
        raise ValueError(f"p must be in (0, 1), got {p}")
    a, b = _lists(A, B, depth)
    u, k = a.shape
    if k == 0:
        return torch.zeros(u, dtype=torch.float64)
    eq = (a[:, :, None] == b[:, None, :]) & (a != pad)[:, :, None]  # (U, K, K)
    pos = torch.arange(k)
    deepest = torch.maximum(pos[:, None], pos[None, :]).reshape(-1)  # 0-based depth where a match counts
    onehot = torch.nn.functional.one_hot(deepest, k).double()  # (K*K, K)
    overlap = (eq.reshape(u, k * k).double() @ onehot).cumsum(1)  # |A_d ∩ B_d|, d = 1..K
    d = torch.arange(1, k + 1, dtype=torch.float64)
    weights = (1 - p) * p ** (d - 1) / d
    return overlap @ weights


def kendall_tau_union(A: Any, B: Any, depth: int | None = 30, pad: int = -1) -> torch.Tensor:
    """``(U,)`` Kendall tau-b between two top lists over their union (P3 §4.10), vectorised over users.

    Each union item's rank is its 1-based position in A, or ``len(A) + 1`` when absent; likewise for B;
    tau-b of the two rank vectors (as ``scipy.stats.kendalltau``). Undefined cases: module docstring.
    """
    a, b = _lists(A, B, depth)
    u, k = a.shape
    if k == 0:
        return torch.ones(u, dtype=torch.float64)
    va, vb = a != pad, b != pad
    len_a, len_b = va.sum(1, keepdim=True), vb.sum(1, keepdim=True)
    pos = torch.arange(1, k + 1).expand(u, k)
    eq = (a[:, :, None] == b[:, None, :]) & va[:, :, None] & vb[:, None, :]  # (U, K, K)
    # union = A's items, then B's items not in A
    in_a_of_b = eq.any(1)  # (U, K): B item present in A
    pos_in_b_of_a = torch.where(eq.any(2), (eq.long() * pos[:, None, :]).sum(2), len_b + 1)
    r_a = torch.cat([torch.where(va, pos, len_a + 1), (len_a + 1).expand(u, k)], 1).double()
    r_b = torch.cat([pos_in_b_of_a, pos], 1).double()
    valid = torch.cat([va, vb & ~in_a_of_b], 1)  # (U, 2K)
    sa = torch.sign(r_a[:, :, None] - r_a[:, None, :])
    sb = torch.sign(r_b[:, :, None] - r_b[:, None, :])
    upper = torch.triu(torch.ones(2 * k, 2 * k, dtype=torch.bool), diagonal=1)
    pair = valid[:, :, None] & valid[:, None, :] & upper
    n_pairs = pair.sum((1, 2)).double()
    s = (sa * sb * pair).sum((1, 2))
    tied_a = ((sa == 0) & pair).sum((1, 2)).double()
    tied_b = ((sb == 0) & pair).sum((1, 2)).double()
    den = torch.sqrt((n_pairs - tied_a) * (n_pairs - tied_b))
    identical = ((a == b) | (~va & ~vb)).all(1)
    fallback = torch.where(identical, 1.0, 0.0).double()
    return torch.where(den > 0, s / den.clamp_min(1e-300), fallback)


# ----------------------------------------------------------------------------------------- P2 (LLM)
class ConfidenceScores(NamedTuple):
    """Per-latent recall, precision and confidence of a concept description (P2 §4.5)."""

    recall: torch.Tensor
    precision: torch.Tensor
    confidence: torch.Tensor


def confidence_scores(
    test_pred: Any, random_pred: Any, threshold: float = 5.0, valid_range: tuple[float, float] = (0.0, 10.0)
) -> ConfidenceScores:
    """P2's confidence from LLM-predicted activations (a pure function of the predictions).

    Args:
        test_pred: ``(L, n_test)`` predicted activation levels for held-out *active* cases.
        random_pred: ``(L, n_random)`` predictions for random *inactive* cases.
        threshold: a prediction counts as "active" when ``> threshold`` (P2: 5).
        valid_range: predictions outside it, or NaN, become -1 (P2's rule for unparseable answers).

    Returns:
        recall = share of test cases predicted > threshold; precision = share of random cases predicted
        <= threshold (so an invalid -1 counts as "inactive", as in P2); confidence = (hits on test + hits on
        random) / (n_test + n_random) = (recall + precision) / 2 for 5 + 5 cases. High confidence: >= 0.8.
    """
    t, r = _t(test_pred, torch.float64), _t(random_pred, torch.float64)
    if t.ndim == 1:
        t, r = t[None], r[None]
    if t.shape[0] != r.shape[0] or t.shape[1] == 0 or r.shape[1] == 0:
        raise ValueError(
            f"need (L, n_test) and (L, n_random) with n > 0, got {tuple(t.shape)} and {tuple(r.shape)}"
        )
    lo, hi = valid_range

    def clean(x: torch.Tensor) -> torch.Tensor:
        bad = torch.isnan(x) | (x < lo) | (x > hi)
        return torch.where(bad, torch.full_like(x, -1.0), x)

    t, r = clean(t), clean(r)
    hit_t, hit_r = (t > threshold).sum(1).double(), (r <= threshold).sum(1).double()
    return ConfidenceScores(
        hit_t / t.shape[1], hit_r / r.shape[1], (hit_t + hit_r) / (t.shape[1] + r.shape[1])
    )


# ------------------------------------------------------------------------------- steering outcomes
def top_k_items(
    scores_BI: torch.Tensor, k: int, seen: torch.Tensor | tuple[torch.Tensor, torch.Tensor] | None = None
) -> torch.Tensor:
    """``(B, k)`` highest-scoring items per row, seen items excluded (``(B, I)`` bool mask or ``(rows, items)``).

    Ties: ``torch.topk`` order (sorted by score).
    """
    s = scores_BI.detach().float().clone()
    if seen is not None:
        if isinstance(seen, torch.Tensor):
            s.masked_fill_(seen.to(s.device), float("-inf"))
        else:
            rows, items = seen
            s.index_put_(
                (rows.to(s.device), items.to(s.device)), torch.tensor(float("-inf"), device=s.device)
            )
    if not 1 <= k <= s.shape[1]:
        raise ValueError(f"k must be in [1, n_items={s.shape[1]}], got {k}")
    return s.topk(k, dim=1).indices


def label_share(top_BK: Any, item_labels: Any) -> torch.Tensor:
    """Mean over users of the share of their top-K items carrying each label (P1 "genre share").

    ``item_labels``: ``(n_items,)`` bool (one label; returns a 0-d tensor) or ``(n_items, g)`` (returns ``(g,)``).
    """
    top = _t(top_BK, torch.int64)
    lab = _t(item_labels)
    if top.numel() == 0:
        raise ValueError("label_share needs non-empty top-K lists")
    return lab[top].double().mean((0, 1))


def coverage(top_BK: Any, n_items: int) -> float:
    """Distinct items in the union of all top-K lists / ``n_items`` (RePlay Coverage@K)."""
    top = _t(top_BK, torch.int64)
    return float(torch.unique(top).numel()) / n_items


def inter_list_diversity(top_BK: Any) -> float:
    """Mean over all user pairs of ``1 - |L_u ∩ L_v| / K`` (jurity inter-list diversity with binary lists).

    Exact over all pairs in O(B K): ``sum_{u<v} |L_u ∩ L_v| = sum_i c_i (c_i - 1) / 2`` with ``c_i`` the number
    of lists containing item ``i`` (items within a list are assumed distinct). Fewer than 2 lists: 0.0.
    """
    top = _t(top_BK, torch.int64)
    b, k = top.shape
    if b < 2 or k == 0:
        return 0.0
    c = torch.bincount(top.reshape(-1)).double()
    shared = float((c * (c - 1) / 2).sum())
    pairs = b * (b - 1) / 2
    return 1.0 - shared / pairs / k
