"""Scores of a latent's description, each with a bootstrap interval over its cases.

* **P2 confidence** (papers.md §4.5): on ``n`` held-out active cases (level >= 5) and ``n`` random inactive
  ones, the simulated level ``a``; recall = share of held-out cases with ``a > 5``, precision = share of random
  cases with ``a <= 5``, confidence = (recall + precision) / 2 (:func:`recsae_core.metrics.confidence_scores`
  gives recall and precision). With 5 + 5 cases this is P2's count (hits / 10); when a latent has fewer
  active cases and P2 reuses them, the balanced form keeps one missed case from scoring 0.83 (5/6).
  **Unparseable answers.** P2 maps an answer it cannot read (or out of 0–10) to −1, which is ``<= 5``: it
  counts as a *miss* on a held-out case but as a *hit* on a random case, so a model that answers nothing
  readable scores 0.5 and every unreadable random-case answer raises precision. We report P2's number
  (``confidence``), the strict one where an unreadable answer is wrong on both sides
  (``confidence_strict``), and how many answers were unreadable (``unparseable``); the two agree when all
  answers parse (the metadata explainer always answers). High confidence: >= 0.8; counts at = 1.0, >= 0.9,
  > 0.8, >= 0.8 (:func:`high_confidence_counts`, P2 §2.7).
* **Detection** (balanced accuracy and F1 of "level > 5" as a classifier of active vs inactive cases), once
  with the random negatives and once with *hard* negatives: the inactive rows nearest (cosine of the base
  model's vectors) to the centroid of the latent's active cases (:func:`hard_negatives`). Unreadable
  answers count as wrong.
* **Simulation** (OpenAI's scorer): Pearson correlation of simulated and real levels over the 1:1 set of
  held-out and random cases; an unreadable answer is replaced by the level farthest from the truth (0 for
  an active case, 10 for an inactive one); constant predictions correlate 0.
* **Coherence** (papers.md §4.6, :func:`coherence`): mean pairwise cosine of the base model's vectors over a
  latent's top cases with distinct top-1 items (up to 5, the first 2 used), for the raw dimensions, an
  untrained SAE and the trained SAE.

Intervals: percentile bootstrap (default 1,000 resamples, 95%), resampling held-out, random and hard cases
independently (stratified), seeded.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch

from recsae_core import metrics
from recsae_core.concepts.cases import Case, CaseConfig, CasePool, LatentCases, build_pool, sample_cases
from recsae_core.concepts.explainers import (
    AttributeTable,
    Description,
    Explainer,
    MetadataExplainer,
    attribute_table,
)

__all__ = [
    "DescribedSAE",
    "LatentSimulation",
    "bootstrap_interval",
    "coherence",
    "coherence_summary",
    "describe_sae",
    "hard_negatives",
    "high_confidence_counts",
    "score_latents",
    "score_simulation",
    "simulate_latents",
]

THRESHOLD = 5
HIGH_CONFIDENCE = 0.8


@dataclass
class LatentSimulation:
    """A latent's description and the simulated vs real levels of its scoring cases (``None`` = unreadable)."""

    latent: int
    description: Description
    heldout: list[tuple[int, int | None]]
    random: list[tuple[int, int | None]]
    hard: list[tuple[int, int | None]]
    reused: bool = False
    """The held-out cases are the describe cases (P2 reuses them when a latent has <= 5 active cases): its
    recall is then measured in-sample."""


def hard_negatives(pool: CasePool, cases: LatentCases, n: int = 5, exclude: Sequence[int] = ()) -> list[Case]:
    """``n`` inactive rows nearest (cosine of ``pool.reps``) to the centroid of the latent's active cases."""
    j = cases.latent
    active = [c.row for c in cases.describe + cases.heldout]
    reps = torch.nn.functional.normalize(pool.reps.float(), dim=1)
    centroid = torch.nn.functional.normalize(reps[active].mean(0, keepdim=True), dim=1)
    sim = (reps @ centroid.T).squeeze(1)
    bad = pool.acts[:, j] > 0
    bad[list(exclude)] = True
    sim = sim.masked_fill(bad, float("-inf"))
    n = min(n, int((~bad).sum()))
    rows = torch.topk(sim, n).indices.tolist() if n > 0 else []
    return [Case(j, int(r), "hard", 0.0, 0) for r in rows]


def simulate_latents(
    explainer: Explainer,
    cases: Mapping[int, LatentCases],
    pool: CasePool | None = None,
    *,
    n_hard: int = 5,
) -> dict[int, LatentSimulation]:
    """Describe every latent from its describe cases, then simulate its held-out, random and (with a
    ``pool``) hard-negative cases."""
    out = {}
    for j, lc in cases.items():
        d = explainer.describe(lc.describe)
        hard = (
            hard_negatives(pool, lc, n_hard, exclude=[c.row for c in lc.random]) if pool is not None else []
        )

        def sim(cs: Sequence[Case], d: Description = d) -> list[tuple[int, int | None]]:
            return [(c.level, _check_level(explainer.simulate(d, c))) for c in cs]

        out[j] = LatentSimulation(j, d, sim(lc.heldout), sim(lc.random), sim(hard), lc.reused)
    return out


def _check_level(a: int | None) -> int | None:
    if a is None:
        return None
    if not 0 <= a <= 10:
        return None  # out of range: unreadable, as P2 (-1)
    return int(a)


# ------------------------------------------------------------------------------------------ bootstrap
def bootstrap_interval(
    stat, groups: Sequence[np.ndarray], *, n_boot: int = 1000, level: float = 0.95, seed: int = 0
) -> tuple[float, float, float]:
    """``(estimate, low, high)``: ``stat(*groups)`` and its percentile bootstrap interval.

    ``stat`` must accept arrays with a leading resample axis: each group ``(n_i, ...)`` is resampled to
    ``(n_boot, n_i, ...)`` with replacement, independently per group (stratified).
    """
    rng = np.random.default_rng(seed)
    est = float(stat(*[g[None] for g in groups])[0])
    boots = []
    for g in groups:
        idx = rng.integers(0, len(g), size=(n_boot, len(g))) if len(g) else np.zeros((n_boot, 0), int)
        boots.append(g[idx])
    vals = np.asarray(stat(*boots), dtype=float)
    a = (1 - level) / 2
    return est, float(np.nanquantile(vals, a)), float(np.nanquantile(vals, 1 - a))


def _hits(pairs: list[tuple[int, int | None]], active: bool, strict: bool) -> np.ndarray:
    """1.0 where the simulation says what the truth is (active: > 5; inactive: <= 5)."""
    out = []
    for _, a in pairs:
        if a is None:
            out.append(0.0 if (strict or active) else 1.0)  # P2: -1 <= 5 counts as "inactive"
        else:
            out.append(float((a > THRESHOLD) == active))
    return np.asarray(out)


def _balanced(pos: np.ndarray, neg: np.ndarray) -> np.ndarray:
    return (pos.mean(-1) + neg.mean(-1)) / 2


def _f1(pos: np.ndarray, neg: np.ndarray) -> np.ndarray:
    tp = pos.sum(-1)
    fn = pos.shape[-1] - tp
    fp = neg.shape[-1] - neg.sum(-1)
    den = 2 * tp + fp + fn
    return np.where(den > 0, 2 * tp / np.maximum(den, 1), 0.0)


def _pearson(xy: np.ndarray) -> np.ndarray:
    """Row-wise Pearson of ``xy[..., 0]`` (real) and ``xy[..., 1]`` (simulated); constant -> 0."""
    x, y = xy[..., 0].astype(float), xy[..., 1].astype(float)
    x = x - x.mean(-1, keepdims=True)
    y = y - y.mean(-1, keepdims=True)
    den = np.sqrt((x * x).sum(-1) * (y * y).sum(-1))
    return np.where(den > 0, (x * y).sum(-1) / np.where(den > 0, den, 1), 0.0)


def score_simulation(sim: LatentSimulation, *, n_boot: int = 1000, seed: int = 0) -> dict[str, float]:
    """Every score of one latent with its interval (module docstring); keys ``<score>``, ``<score>_lo``,
    ``<score>_hi``, plus ``recall``, ``precision``, ``unparseable`` and the case counts."""
    row: dict[str, float] = {}

    def put(name: str, stat, groups: Sequence[np.ndarray]) -> None:
        if any(len(g) == 0 for g in groups):
            row[name] = row[f"{name}_lo"] = row[f"{name}_hi"] = float("nan")
            return
        row[name], row[f"{name}_lo"], row[f"{name}_hi"] = bootstrap_interval(
            stat, groups, n_boot=n_boot, seed=seed
        )

    held = [(t, np.nan if a is None else a) for t, a in sim.heldout]
    rand = [(t, np.nan if a is None else a) for t, a in sim.random]
    cs = metrics.confidence_scores(
        torch.tensor([[a for _, a in held]], dtype=torch.float64),
        torch.tensor([[a for _, a in rand]], dtype=torch.float64),
        threshold=THRESHOLD,
    )
    row["recall"], row["precision"] = float(cs.recall[0]), float(cs.precision[0])
    hp, rp = _hits(sim.heldout, True, False), _hits(sim.random, False, False)
    hs, rs = _hits(sim.heldout, True, True), _hits(sim.random, False, True)
    put("confidence", _balanced, [hp, rp])
    if (
        abs(row["confidence"] - (row["recall"] + row["precision"]) / 2) > 1e-9
    ):  # one rule, two implementations
        raise AssertionError("P2 confidence disagrees with metrics.confidence_scores")
    put("confidence_strict", _balanced, [hs, rs])
    put("balanced_accuracy_random", _balanced, [hs, rs])
    put("f1_random", _f1, [hs, rs])
    hh = _hits(sim.hard, False, True)
    put("balanced_accuracy_hard", _balanced, [hs, hh])
    put("f1_hard", _f1, [hs, hh])
    pairs = [(t, (0 if t > 0 else 10) if a is None else a) for t, a in sim.heldout + sim.random]
    xy = np.asarray(pairs, dtype=float).reshape(-1, 2)
    put("simulation", _pearson, [xy])
    row["unparseable"] = sum(a is None for _, a in sim.heldout + sim.random + sim.hard)
    row["n_heldout"], row["n_random"], row["n_hard"] = len(sim.heldout), len(sim.random), len(sim.hard)
    return row


def score_latents(sims: Mapping[int, LatentSimulation], *, n_boot: int = 1000, seed: int = 0) -> pd.DataFrame:
    """One row per latent: ``latent``, ``description``, ``attributes``, ``reused`` (held-out cases = describe
    cases, :class:`LatentSimulation`) and :func:`score_simulation`'s columns, sorted by latent."""
    rows = []
    for j in sorted(sims):
        s = sims[j]
        rows.append(
            {
                "latent": j,
                "description": s.description.text,
                "attributes": "; ".join(s.description.attributes),
                "reused": bool(s.reused),
                **score_simulation(s, n_boot=n_boot, seed=seed + j),
            }
        )
    if not rows:  # no latent had cases (e.g. every one fires on every row): same columns, no rows
        scored = [f"{k}{s}" for k in _SCORES for s in ("", "_lo", "_hi")]
        cols = ["latent", "description", "attributes", "reused", "recall", "precision", *scored]
        return pd.DataFrame(columns=[*cols, "unparseable", "n_heldout", "n_random", "n_hard"])
    return pd.DataFrame(rows)


_SCORES = (
    "confidence",
    "confidence_strict",
    "balanced_accuracy_random",
    "f1_random",
    "balanced_accuracy_hard",
    "f1_hard",
    "simulation",
)


def high_confidence_counts(
    confidence: Sequence[float] | pd.Series, n_latents: int | None = None
) -> pd.DataFrame:
    """P2's counts (papers.md §2.7): latents with confidence = 1.0, >= 0.9, > 0.8, >= 0.8, and their share of
    ``n_latents`` (default: the latents scored)."""
    c = np.asarray(confidence, dtype=float)
    total = len(c) if n_latents is None else n_latents
    rules = {
        "= 1.0": c >= 1.0 - 1e-9,
        "≥ 0.9": c >= 0.9 - 1e-9,
        "> 0.8": c > 0.8 + 1e-9,
        "≥ 0.8": c >= 0.8 - 1e-9,
    }
    return pd.DataFrame(
        [
            {"confidence": k, "latents": int(v.sum()), "share": v.sum() / max(total, 1)}
            for k, v in rules.items()
        ]
    )


# ------------------------------------------------------------------------------------------ coherence
def coherence(
    acts_NM: torch.Tensor,
    reps_ND: torch.Tensor,
    items_N: torch.Tensor,
    *,
    n_top: int = 5,
    n_use: int = 2,
    latents: Sequence[int] | None = None,
) -> torch.Tensor:
    """``(M,)`` P2's latent coherence (papers.md §4.6): for each latent the top activating rows with
    **distinct** items (up to ``n_top``; the first ``n_use`` used), mean pairwise cosine of their base-model
    vectors ``reps_ND``. NaN for latents with fewer than 2 distinct active rows (or not in ``latents``).

    For the raw dimensions pass ``acts_NM = reps_ND`` (P2 scales them by their global maximum, which does
    not change the order). Only positive activations count as active.
    """
    acts = torch.as_tensor(acts_NM).float()
    reps = torch.nn.functional.normalize(torch.as_tensor(reps_ND).float(), dim=1)
    items = torch.as_tensor(items_N)
    out = torch.full((acts.shape[1],), float("nan"))
    ids = range(acts.shape[1]) if latents is None else latents
    for j in ids:
        col = acts[:, j]
        order = torch.argsort(-col, stable=True)
        picked: list[int] = []
        seen: set[int] = set()
        for r in order.tolist():
            if col[r] <= 0 or len(picked) >= n_top:
                break
            it = int(items[r])
            if it not in seen:
                seen.add(it)
                picked.append(r)
        use = picked[:n_use]
        if len(use) < 2:
            continue
        v = reps[use]
        sim = v @ v.T
        k = len(use)
        out[j] = (sim.sum() - sim.diagonal().sum()) / (k * (k - 1))
    return out


def coherence_summary(
    pool: CasePool,
    untrained_acts_NM: torch.Tensor,
    confident: Sequence[int] | None = None,
    confident_untrained: Sequence[int] | None = None,
) -> pd.DataFrame:
    """P2's coherence table (papers.md §4.6): mean :func:`coherence` over latents for the raw dimensions
    of the base model, an untrained SAE and the trained SAE (``pool.acts``); with ``confident`` (and
    ``confident_untrained``) also over the latents with confidence >= 0.8 only, as P2 counts them.

    Columns ``variant``, ``latents`` (with >= 2 distinct active cases), ``coherence``, ``active cases
    (median)``: how many cases those latents fire on. The metric rewards rare firing: a latent active on two
    cases only has the two most extreme rows along its direction as its top cases, and they resemble each
    other whatever the direction means (issue 10, ML-100k: an untrained TopK SAE's latents fire on a median
    of 2 of ~760 cases — the k slots of most rows go to a few latents — and score 0.83 where random directions
    without TopK score 0.71).
    """
    rows = []

    def add(name: str, acts: torch.Tensor, ids: Sequence[int] | None) -> None:
        c = coherence(acts, pool.reps, pool.items, latents=ids)
        ok = ~torch.isnan(c)
        n_active = (torch.as_tensor(acts) > 0).sum(0).double()[ok]
        rows.append(
            {
                "variant": name,
                "latents": int(ok.sum()),
                "coherence": float(c[ok].mean()) if ok.any() else float("nan"),
                "active cases (median)": float(np.median(n_active.numpy())) if ok.any() else float("nan"),
            }
        )

    add("raw dimensions", pool.reps, None)
    add("untrained SAE", untrained_acts_NM, None)
    add("trained SAE", pool.acts, None)
    if confident_untrained is not None:
        add("untrained SAE, confidence ≥ 0.8", untrained_acts_NM, list(confident_untrained))
    if confident is not None:
        add("trained SAE, confidence ≥ 0.8", pool.acts, list(confident))
    return pd.DataFrame(rows)


@dataclass
class DescribedSAE:
    """What :func:`describe_sae` computed: the case ``pool``, its attribute ``table`` and one ``scores`` row
    per described latent (:func:`score_latents`)."""

    pool: CasePool
    table: AttributeTable
    scores: pd.DataFrame


def describe_sae(
    model: Any,
    site: str,
    sae: Any,
    split: Any,
    part: str = "test",
    *,
    latents: Sequence[int] | Callable[[CasePool], Sequence[int]] | None = None,
    table_fn: Callable[[AttributeTable], AttributeTable] | None = None,
    explainer: Explainer | None = None,
    hard: bool = True,
    case_config: CaseConfig | None = None,
    n_boot: int = 1000,
    seed: int = 0,
    device: Any = None,
) -> DescribedSAE:
    """P2's describe → simulate → score for one SAE (papers.md §2.7, §4.5), the one pipeline the P2 chapter,
    the feature explorer, the playground and the side-by-side comparison share: :func:`build_pool` on the
    ``part`` cases of ``split``, :func:`attribute_table` (through ``table_fn`` if given, e.g. the P2
    chapter's shuffled-label control), P2's cases (``case_config``, default ``CaseConfig(seed=seed)``) of
    ``latents`` (ids, a function of the pool, or every latent), the ``explainer`` (default the
    :class:`MetadataExplainer` of the table), simulated on held-out and random cases and, with ``hard``, on
    hard negatives (:func:`hard_negatives`), scored with ``n_boot`` bootstrap resamples."""
    pool = build_pool(model, site, sae, split, part, device=device)
    table = attribute_table(pool, split)
    if table_fn is not None:
        table = table_fn(table)
    ids = latents(pool) if callable(latents) else latents
    cases = sample_cases(pool, ids, case_config or CaseConfig(seed=seed))
    ex = explainer if explainer is not None else MetadataExplainer(table)
    sims = simulate_latents(ex, cases, pool if hard else None)
    return DescribedSAE(pool, table, score_latents(sims, n_boot=n_boot, seed=seed))
