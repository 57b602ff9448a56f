"""Exposure and popularity de-biasing (P2's de-biasing use case, papers.md §2.1, §2.8; also for P1 and P3).

* :func:`exposure_metrics` — list statistics of top-K lists beside accuracy: **average recommended-item
  popularity** (training interactions of the recommended items, mean over all slots), **long-tail share**
  (share of slots holding an item outside the head, the most popular ``head_share`` of the catalogue by
  training interactions; 20% as Abdollahpouri et al.), **catalogue coverage**
  (:func:`recsae_core.metrics.coverage`) and the **Gini coefficient of exposure** (how unequally the
  slots are spread over *all* items, never-recommended ones included: 0 = every item equally often, → 1 =
  every slot to one item).
* :func:`popularity_latents` — each latent's Pearson correlation with popularity on the case rows: item
  popularity (log training interactions) for item rows, the mean log popularity of the user's history for
  user rows (:func:`recsae_core.metrics.pearson_matrix`).
* :func:`steered_lists` and :func:`popularity_tradeoff` — top-K lists of the evaluation cases with an edit
  of SAE latents applied (:func:`recsae_core.steer.steered_scores_fn`, i.e. ``probe.spliced_scores_fn`` with
  ``edit``), and the accuracy/popularity trade-off as the strength of the edit varies (e.g. suppressing a
  popularity latent: ``mode="add"`` with negative values, or ``mode="set"``; at an item-table site
  ``mode="scale"`` with values below 1, since adding to every item's code moves all scores of a user alike).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import pandas as pd
import torch

from recsae_core import metrics
from recsae_core.batching import EvalData
from recsae_core.data.dataset import Split
from recsae_core.evaluate import rank_metrics
from recsae_core.models.base import Recommender
from recsae_core.probe import eval_cases
from recsae_core.sae.base import SparseAutoencoder
from recsae_core.steer import Steer, steered_scores_fn
from recsae_core.utils import resolve_device

__all__ = [
    "exposure_metrics",
    "gini",
    "item_popularity",
    "popularity_latents",
    "popularity_tradeoff",
    "steered_lists",
    "suppress_popularity",
]


def item_popularity(split: Split) -> np.ndarray:
    """``(n_items,)`` training interactions per item (the popularity every function here uses)."""
    return np.bincount(split.train["item"].to_numpy(), minlength=split.dataset.n_items)


def gini(exposure: np.ndarray | torch.Tensor) -> float:
    """Gini coefficient of non-negative exposure counts (0 = equal; all zero gives 0)."""
    x = np.sort(np.asarray(exposure, dtype=float))
    n, total = len(x), x.sum()
    if n == 0 or total <= 0:
        return 0.0
    return float(2 * np.sum(np.arange(1, n + 1) * x) / (n * total) - (n + 1) / n)


def exposure_metrics(
    top_BK: torch.Tensor | np.ndarray, item_counts: np.ndarray, *, head_share: float = 0.2
) -> dict[str, float]:
    """``avg_popularity``, ``long_tail_share``, ``coverage``, ``gini`` of top-K lists (module docstring)."""
    if not 0 < head_share < 1:
        raise ValueError(f"head_share must be in (0, 1), got {head_share}")
    top = torch.as_tensor(np.asarray(top_BK), dtype=torch.int64)
    counts = np.asarray(item_counts)
    n_items = len(counts)
    if top.numel() == 0:
        raise ValueError("exposure_metrics needs non-empty top-K lists")
    order = np.argsort(-counts, kind="stable")
    head = np.zeros(n_items, dtype=bool)
    head[order[: max(1, round(head_share * n_items))]] = True
    flat = top.reshape(-1).numpy()
    return {
        "avg_popularity": float(counts[flat].mean()),
        "long_tail_share": float((~head[flat]).mean()),
        "coverage": metrics.coverage(top, n_items),
        "gini": gini(np.bincount(flat, minlength=n_items)),
    }


def popularity_latents(
    acts_NM: torch.Tensor,
    items_N: torch.Tensor,
    item_counts: np.ndarray,
    history_NH: torch.Tensor | None = None,
) -> pd.DataFrame:
    """Each latent's correlation with popularity on the case rows (module docstring).

    Args:
        acts_NM: SAE activations of the rows; ``items_N``: the row's item (item rows).
        history_NH: for user rows, their history items (-1 = none): the row's popularity is the mean log
            popularity of the history instead of the item's.

    Returns:
        ``latent``, ``corr``, ``fires`` (share of rows where it is active), sorted by ``corr`` descending.
    """
    logp = np.log1p(np.asarray(item_counts, dtype=float))
    if history_NH is not None and history_NH.shape[1]:
        h = history_NH.numpy()
        ok = h >= 0
        pop = (logp[np.where(ok, h, 0)] * ok).sum(1) / np.maximum(ok.sum(1), 1)
    else:
        pop = logp[items_N.numpy()]
    r = metrics.pearson_matrix(acts_NM, torch.from_numpy(pop))[:, 0]
    out = pd.DataFrame(
        {
            "latent": np.arange(acts_NM.shape[1]),
            "corr": r.numpy(),
            "fires": metrics.firing_rates(acts_NM).numpy(),
        }
    )
    return out.sort_values("corr", ascending=False, kind="stable").reset_index(drop=True)


@torch.no_grad()
def steered_lists(
    model: Recommender,
    site: str,
    sae: SparseAutoencoder | None,
    split: Split,
    part: str = "test",
    edit: Steer | Callable[[torch.Tensor], torch.Tensor] | None = None,
    *,
    k: int = 10,
    users: torch.Tensor | Sequence[int] | None = None,
    positions: str = "last",
    ties: str = "optimistic",
    batch_size: int = 512,
    cases: EvalData | None = None,
    device: str | torch.device | None = None,
) -> tuple[torch.Tensor, torch.Tensor, dict[str, float]]:
    """``(users (B,), top_BK, {"hr@k", "ndcg@k"})`` of the evaluation cases of ``part`` (seen items masked)
    with ``edit`` applied at ``site`` (error term kept, so ``edit=None`` is the base model exactly).
    ``cases``: :func:`recsae_core.probe.eval_cases` built once by a caller that steers many times."""
    dev = resolve_device(device)
    model.eval().to(dev)
    data = cases if cases is not None else eval_cases(model, split, part, users)
    if edit is None:
        fn = model.score
    else:
        if sae is None:
            raise ValueError("an edit needs the SAE")
        fn = steered_scores_fn(model, site, sae.eval().to(dev), edit, positions=positions)
    tops, us, acc = [], [], {f"hr@{k}": 0.0, f"ndcg@{k}": 0.0}
    for eb in data.batches(batch_size):
        scores = fn(eb.batch.to(dev))
        seen = (eb.seen_rows, eb.seen_items)
        tops.append(metrics.top_k_items(scores, k, seen).cpu())
        us.append(eb.batch.users.cpu())
        r = rank_metrics(scores, eb.targets.to(dev), seen, ks=(k,), ties=ties)
        for key in acc:
            acc[key] += r[key] * len(eb.targets)
    return torch.cat(us), torch.cat(tops), {key: v / len(data) for key, v in acc.items()}


def popularity_tradeoff(
    model: Recommender,
    site: str,
    sae: SparseAutoencoder,
    split: Split,
    part: str = "test",
    features: int | Sequence[int] = (),
    values: Sequence[float] = (),
    *,
    mode: str = "add",
    k: int = 10,
    users: torch.Tensor | Sequence[int] | None = None,
    head_share: float = 0.2,
    ties: str = "optimistic",
    device: str | torch.device | None = None,
) -> pd.DataFrame:
    """Accuracy and exposure as the edit of ``features`` varies: one row per value with ``value``,
    ``hr@k``, ``ndcg@k`` and :func:`exposure_metrics`' columns; a first row ``value = NaN`` is the base
    model (no edit)."""
    feats = (features,) if isinstance(features, int) else tuple(features)
    if not feats or not len(values):
        raise ValueError("popularity_tradeoff needs features and values")
    counts = item_popularity(split)
    cases = eval_cases(model, split, part, users)
    rows = []
    for v in [None, *values]:
        edit = None if v is None else Steer(feats, float(v), mode)
        _, top, acc = steered_lists(
            model, site, sae, split, part, edit, k=k, ties=ties, cases=cases, device=device
        )
        rows.append(
            {
                "value": np.nan if v is None else float(v),
                **acc,
                **exposure_metrics(top, counts, head_share=head_share),
            }
        )
    return pd.DataFrame(rows)


def suppress_popularity(
    model: Recommender,
    site: str,
    sae: SparseAutoencoder,
    split: Split,
    pool: Any,
    values: Sequence[float],
    *,
    mode: str = "add",
    part: str = "test",
    ties: str = "optimistic",
    device: str | torch.device | None = None,
) -> tuple[int, float, pd.DataFrame]:
    """De-biasing in one call (P2's use case, papers.md §2.8): the live latent of ``pool`` (a
    :class:`recsae_core.concepts.CasePool` of ``sae`` at ``site``) most correlated with popularity
    (:func:`popularity_latents`) and its :func:`popularity_tradeoff` over ``values``.

    Returns ``(latent, corr, curve)``. ``mode="add"`` with negative values at user and position sites;
    ``mode="scale"`` with factors below 1 at item-table sites (see :class:`~recsae_core.steer.Steer`).
    Raises ``ValueError`` when no latent fires on the pool.
    """
    pop = popularity_latents(pool.acts, pool.items, item_popularity(split), pool.history)
    live = pop[pop["fires"] > 0]
    if live.empty:
        raise ValueError(f"no latent of the SAE at {site!r} fires on the {len(pool.acts)} case rows")
    j, corr = int(live["latent"].iloc[0]), float(live["corr"].iloc[0])
    curve = popularity_tradeoff(model, site, sae, split, part, j, values, mode=mode, ties=ties, device=device)
    return j, corr, curve
