"""Full-ranking evaluation: every item is scored, the user's seen items are masked (papers.md §4.3).

Rank convention: the 0-based rank ``r`` of the target is the number of items scoring **strictly
higher** than it (``ties="optimistic"``, the default: a tie with the target does not push it down; used
by Klenitskiy & Vasilev's and RecBole's comparison-based ranking). ``ties="pessimistic"`` counts every
*other* item scoring **≥** the target, i.e. ReChorus' ``gt_rank = #(score >= target) - 1`` used by P2
(RecSAE). With the 1-based rank ``r + 1``:

* ``HR@K = mean 1[r < K]`` (= Recall@K with one held-out item),
* ``NDCG@K = mean 1[r < K] / log2(r + 2)``,
* ``MRR@K = mean 1[r < K] / (r + 1)`` (= MAP@K with one held-out item),
* ``coverage@K`` = distinct items in the union of all top-K lists / number of items.

Seen items are set to ``-inf`` (``index_put_``); the target itself is never masked, even when the user
saw it before. Scores must be finite or ``-inf`` (a NaN target score raises). Metric names are lower
case: ``"hr@10"``, ``"ndcg@10"``, ``"mrr@10"``, ``"coverage@10"`` (plus ``"n_cases"``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

import torch
from tqdm.auto import tqdm

from recsae_core.batching import EvalData, eval_data
from recsae_core.data.dataset import Split
from recsae_core.models.base import Recommender, UserBatch
from recsae_core.utils import resolve_device

__all__ = ["DEFAULT_KS", "evaluate", "evaluate_data", "evaluate_scores_fn", "rank_metrics", "target_ranks"]

DEFAULT_KS: tuple[int, ...] = (5, 10, 20, 50)
TIES = ("optimistic", "pessimistic")
SeenSpec = torch.Tensor | tuple[torch.Tensor, torch.Tensor] | None


def _check_ks(ks: Iterable[int]) -> tuple[int, ...]:
    ks = tuple(int(k) for k in ks)
    if not ks or any(k < 1 for k in ks):
        raise ValueError(f"ks must be a non-empty sequence of positive ints, got {ks}")
    return ks


def mask_seen(scores_BI: torch.Tensor, targets_B: torch.Tensor, seen: SeenSpec) -> torch.Tensor:
    """Set seen items to ``-inf`` **in place** and restore the targets' scores; returns ``scores_BI``.

    ``seen``: a ``(B, I)`` bool mask, a pair ``(rows_S, items_S)`` of flat indices, or ``None``.
    """
    if seen is None:
        return scores_BI
    rows_B = torch.arange(len(targets_B), device=scores_BI.device)
    target_scores = scores_BI[rows_B, targets_B].clone()
    if isinstance(seen, torch.Tensor):
        if seen.shape != scores_BI.shape or seen.dtype != torch.bool:
            raise ValueError(
                f"a seen mask must be bool of shape {tuple(scores_BI.shape)}, got {seen.dtype} {tuple(seen.shape)}"
            )
        scores_BI.masked_fill_(seen, float("-inf"))
    else:
        rows, items = seen
        scores_BI.index_put_(
            (rows.to(scores_BI.device), items.to(scores_BI.device)),
            torch.tensor(float("-inf"), device=scores_BI.device),
        )
    scores_BI[rows_B, targets_B] = target_scores
    return scores_BI


def target_ranks(scores_BI: torch.Tensor, targets_B: torch.Tensor, ties: str = "optimistic") -> torch.Tensor:
    """0-based rank ``(B,)`` of each target: items scoring strictly higher (optimistic) or ``>=``, target excluded (pessimistic)."""
    if ties not in TIES:
        raise ValueError(f"ties must be one of {TIES}, got {ties!r}")
    target_scores_B1 = scores_BI.gather(1, targets_B.view(-1, 1))
    if torch.isnan(target_scores_B1).any():
        raise ValueError("a target item has a NaN score; the model produced NaN")
    if ties == "optimistic":
        return (scores_BI > target_scores_B1).sum(1)
    return (scores_BI >= target_scores_B1).sum(1) - 1


class _Accumulator:
    """Sums of per-case metrics and the union of top-K items, over batches."""

    def __init__(self, n_items: int, ks: tuple[int, ...], device: torch.device) -> None:
        self.ks, self.n_items = ks, n_items
        self.sums = {f"{m}@{k}": 0.0 for k in ks for m in ("hr", "ndcg", "mrr")}
        self.covered = torch.zeros(len(ks), n_items, dtype=torch.bool, device=device)
        self.n = 0

    def add(self, scores_BI: torch.Tensor, targets_B: torch.Tensor, ties: str) -> None:
        r_B = target_ranks(scores_BI, targets_B, ties).to(torch.float64)
        for k in self.ks:
            hit = r_B < k
            self.sums[f"hr@{k}"] += float(hit.sum())
            self.sums[f"ndcg@{k}"] += float((hit / torch.log2(r_B + 2)).sum())
            self.sums[f"mrr@{k}"] += float((hit / (r_B + 1)).sum())
        kmax = min(max(self.ks), scores_BI.shape[1])
        top_BK = scores_BI.topk(kmax, dim=1).indices
        for j, k in enumerate(self.ks):
            self.covered[j, top_BK[:, :k].reshape(-1)] = True
        self.n += len(targets_B)

    def result(self) -> dict[str, float]:
        if self.n == 0:
            raise ValueError("no evaluation cases")
        out = {name: s / self.n for name, s in self.sums.items()}
        for j, k in enumerate(self.ks):
            out[f"coverage@{k}"] = float(self.covered[j].sum()) / self.n_items
        out["n_cases"] = float(self.n)
        return dict(sorted(out.items(), key=lambda kv: _metric_order(kv[0])))


def _metric_order(name: str) -> tuple[int, int]:
    if "@" not in name:
        return (99, 0)
    m, k = name.split("@")
    return (("hr", "ndcg", "mrr", "coverage").index(m), int(k))


def rank_metrics(
    scores_BI: torch.Tensor,
    targets_B: torch.Tensor,
    seen: SeenSpec = None,
    ks: Sequence[int] = DEFAULT_KS,
    ties: str = "optimistic",
) -> dict[str, float]:
    """HR, NDCG, MRR and coverage at each K for one batch of scores (pure: ``scores_BI`` is not modified).

    Args:
        scores_BI: ``(B, I)`` scores over all items.
        targets_B: ``(B,)`` int64 target item per row.
        seen: items to mask per row: ``(B, I)`` bool mask, ``(rows_S, items_S)`` pair, or ``None``.
        ks: cut-offs.
        ties: ``"optimistic"`` (strictly higher) or ``"pessimistic"`` (ReChorus ``>=``); see the module docstring.
    """
    ks = _check_ks(ks)
    targets_B = torch.as_tensor(targets_B, dtype=torch.int64, device=scores_BI.device)
    if scores_BI.ndim != 2 or targets_B.shape != (scores_BI.shape[0],):
        raise ValueError(
            f"expected scores (B, I) and targets (B,), got {tuple(scores_BI.shape)} and {tuple(targets_B.shape)}"
        )
    scores = mask_seen(scores_BI.detach().clone().float(), targets_B, seen)
    acc = _Accumulator(scores.shape[1], ks, scores.device)
    acc.add(scores, targets_B, ties)
    return acc.result()


@torch.no_grad()
def evaluate_data(
    score_fn: Callable[[UserBatch], torch.Tensor],
    data: EvalData,
    ks: Sequence[int] = DEFAULT_KS,
    *,
    batch_size: int = 128,
    device: str | torch.device | None = None,
    ties: str = "optimistic",
    progress: bool = False,
) -> dict[str, float]:
    """Evaluate ``score_fn(UserBatch) -> (B, n_items)`` on prebuilt :class:`EvalData` (used by ``fit`` each epoch)."""
    ks = _check_ks(ks)
    dev = resolve_device(device)
    acc = _Accumulator(data.n_items, ks, dev)
    n_batches = (len(data) + batch_size - 1) // batch_size
    for eb in tqdm(
        data.batches(batch_size), total=n_batches, desc=f"eval {data.part}", disable=not progress, leave=False
    ):
        scores_BI = score_fn(eb.batch.to(dev)).float()
        if scores_BI.shape != (len(eb.targets), data.n_items):
            raise ValueError(
                f"score_fn returned shape {tuple(scores_BI.shape)}, expected ({len(eb.targets)}, {data.n_items})"
            )
        targets_B = eb.targets.to(dev)
        mask_seen(scores_BI, targets_B, (eb.seen_rows, eb.seen_items))
        acc.add(scores_BI, targets_B, ties)
    return acc.result()


def evaluate_scores_fn(
    score_fn: Callable[[UserBatch], torch.Tensor],
    split: Split,
    part: str = "test",
    ks: Sequence[int] = DEFAULT_KS,
    *,
    maxlen: int | None = None,
    batch_size: int = 128,
    device: str | torch.device | None = None,
    ties: str = "optimistic",
    progress: bool = False,
) -> dict[str, float]:
    """Full-ranking metrics of any scorer, e.g. a model with an SAE spliced in at a site.

    Args:
        score_fn: maps a :class:`UserBatch` (on ``device``) to ``(B, n_items)`` scores; called under ``no_grad``.
        split: the split; ``part`` is ``"valid"`` (history = train) or ``"test"`` (history = train + valid).
        maxlen: build left-padded histories of this length into ``UserBatch.seqs`` (sequential scorers), or ``None``.
        batch_size, device, ties, progress: see :func:`evaluate_data` and the module docstring.
    """
    return evaluate_data(
        score_fn,
        eval_data(split, part, maxlen),
        ks,
        batch_size=batch_size,
        device=device,
        ties=ties,
        progress=progress,
    )


def evaluate(
    model: Recommender,
    split: Split,
    part: str = "test",
    ks: Sequence[int] = DEFAULT_KS,
    *,
    batch_size: int = 128,
    device: str | torch.device | None = None,
    ties: str = "optimistic",
    progress: bool = False,
) -> dict[str, float]:
    """Full-ranking HR/NDCG/MRR/coverage of ``model`` on ``part`` of ``split`` with seen items masked.

    Sequential models (attribute ``maxlen``) get histories of that length. The model is put in eval mode
    and moved to ``device`` (default: where its parameters are).
    """
    dev = resolve_device(device) if device is not None else _model_device(model)
    model.eval().to(dev)
    return evaluate_scores_fn(
        model.score,
        split,
        part,
        ks,
        maxlen=getattr(model, "maxlen", None),
        batch_size=batch_size,
        device=dev,
        ties=ties,
        progress=progress,
    )


def _model_device(model: torch.nn.Module) -> torch.device:
    for t in model.parameters():
        return t.device
    for t in model.buffers():
        return t.device
    return torch.device("cpu")
