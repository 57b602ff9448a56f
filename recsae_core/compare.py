"""Every SAE architecture side by side, at the site of each paper (issue 13; papers.md §1.6, §2.3, §3.3).

The registry's five architectures (``relu_l1``, ``topk``, ``batch_topk``, ``p3``, ``matryoshka``;
:mod:`recsae_core.sae`) trained on the same rows, with the same dictionary size and optimiser budget, at
matched sparsity, then evaluated alike:

| step | function | papers.md |
|---|---|---|
| a paper's site: base model, split, rows (the paper chapters' cached models) | :func:`p1_site`, :func:`p2_site`, :func:`p3_site` → :class:`Site` | §1.4-1.5, §2.5-2.6, §3.3-3.5 |
| one config per architecture at dictionary size ``m`` | :func:`arch_config` | §1.6, §2.3, §3.3 |
| matched L0: TopK's ``k``; for L1-type SAEs a log-space search of the coefficient | :func:`match_l0` | §4.4 |
| train (SAE cache) and evaluate one SAE | :func:`evaluate_one` | §4.1-4.4, §4.7, §4.9, §4.5 |
| every architecture x seed at one site | :func:`compare_site` | |
| mean and t-interval over seeds per architecture | :func:`summarise` | |
| the measured conclusion (winner per metric, margin, whether intervals separate) | :func:`conclusion` | |

Metrics per SAE (:class:`~recsae_core.sae_eval.SAEReport` plus the P3 and concept measures): explained
variance, L0 and dead share on held-out rows (P1 §4.4); NDCG@10 with the reconstruction spliced in and the
error term dropped (P2 §2.5; the MF site reconstructs users **and** items, as P3 §3.6 does); RBO of top-30
lists (P3 fidelity, §3.6, MF site only); mean max Pearson correlation of features with the genres of the
row's item (P1 §4.1-4.2); purity@10 of one feature per genre over item activation profiles (P3 Table 1,
§4.7); the metadata explainer's description confidence (P2 §2.7, :mod:`recsae_core.concepts`); training
seconds and rows/s.

Matched sparsity: ``topk`` keeps ``k`` latents per row by construction (fewer where ReLU leaves fewer positive), ``batch_topk`` fixes the batch mean at ``k`` (its
inference threshold gives about ``k``); ``relu_l1``, ``p3`` and ``matryoshka`` reach a target L0 only
through their L1 coefficient, which :func:`match_l0` searches (on training rows, seed 0; the other seeds reuse
the coefficient). P3-style SAEs keep their KL term (ρ, weight) and, on the MF site only, P3's prediction loss
through the frozen model; on SASRec sites there is no two-tower scorer and they train on reconstruction
(β = 0), a stated difference from P3.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import torch

from recsae_core import metrics, probe, sae_eval
from recsae_core.data.dataset import RecDataset, Split
from recsae_core.models.base import Recommender, UserBatch
from recsae_core.sae import (
    BatchTopKConfig,
    MatryoshkaConfig,
    P3Config,
    ReluL1Config,
    SAEConfig,
    SAETrainResult,
    SparseAutoencoder,
    TopKConfig,
    TrainConfig,
    TwoTowerData,
)
from recsae_core.utils import resolve_device

__all__ = [
    "ARCHITECTURES",
    "COEFF_ARCHITECTURES",
    "METRICS",
    "SITES",
    "SITE_DEFAULTS",
    "CompareConfig",
    "L0Match",
    "Site",
    "SiteResult",
    "arch_config",
    "compare_site",
    "conclusion",
    "evaluate_one",
    "find_coeffs",
    "item_profiles",
    "match_l0",
    "p1_site",
    "p2_site",
    "p3_site",
    "pareto_front",
    "run_site",
    "site_config",
    "site_dataset",
    "summarise",
    "t_interval",
]

#: The registry's architectures, in the order tables list them.
ARCHITECTURES: tuple[str, ...] = ("relu_l1", "topk", "batch_topk", "p3", "matryoshka")
#: Architectures whose sparsity is set by an L1 coefficient (matched by :func:`match_l0`).
COEFF_ARCHITECTURES: tuple[str, ...] = ("relu_l1", "p3", "matryoshka")
#: Starting L1 coefficient of the search per architecture (P1's 0.1; P3's Last.fm MF / Matryoshka 0.3).
START_COEFF: dict[str, float] = {"relu_l1": 0.1, "p3": 0.3, "matryoshka": 0.3}

#: metric column → (label, higher is better). ``l0`` and the costs have no winner.
METRICS: dict[str, tuple[str, bool]] = {
    "explained_variance": ("EV", True),
    "spliced_ndcg@10": ("spliced NDCG@10", True),
    "rbo": ("RBO (top-30)", True),
    "mean_max_corr": ("mean max corr", True),
    "purity@10": ("purity@10", True),
    "description_confidence": ("description confidence", True),
    "dead_fraction": ("dead share", False),
    "train_seconds": ("train s", False),
}


# ------------------------------------------------------------------------------------------------ config
@dataclass
class CompareConfig:
    """How one site's comparison is run (matched dictionary, sparsity and optimiser for all architectures)."""

    n_latents: int = 512
    """Dictionary size, the same for every architecture (P1: 512; P2: 16 x 64 = 1,024; P3: 22)."""
    k: int = 32
    """Target L0: TopK's and BatchTopK's ``k``; the L1-type SAEs' coefficient is searched to reach it."""
    architectures: tuple[str, ...] = ARCHITECTURES
    """Which architectures to train (default all five)."""
    seeds: tuple[int, ...] = (0, 1, 2)
    """SAE seeds (initialisation and row sampling); intervals are over these (at least 3 for an interval)."""
    train: TrainConfig = field(
        default_factory=lambda: TrainConfig(steps=3000, batch_size=1024, warmup_steps=100)
    )
    """Optimiser settings shared by every architecture (default: P1's Adam 1e-3, 100 warm-up steps)."""
    search_evals: int = 6
    """At most this many training runs per L1-type architecture to reach the target L0 (:func:`match_l0`)."""
    search_tolerance: float = 0.15
    """Stop the search when the L0 is within this relative distance of the target (0.15: ±15 %)."""
    search_steps: int | None = None
    """Optimiser steps of the search runs (``None``: ``train.steps``; the chosen coefficient is retrained
    with ``train`` for every seed, so the reported SAEs all have the same budget)."""
    n_concept_latents: int = 64
    """Latents described and scored by the metadata explainer per SAE (a seeded sample of the live ones)."""
    max_rows: int = 200_000
    """Held-out rows behind EV, L0 and correlations (P1: 200,000, seed 42)."""

    def __post_init__(self) -> None:
        for name in ("n_latents", "k", "search_evals", "n_concept_latents", "max_rows"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"CompareConfig.{name} must be a positive int, got {v!r}")
        if self.k > self.n_latents:
            raise ValueError(f"CompareConfig.k={self.k} exceeds n_latents={self.n_latents}")
        self.architectures = tuple(self.architectures)
        bad = [a for a in self.architectures if a not in ARCHITECTURES]
        if bad or not self.architectures:
            raise ValueError(
                f"CompareConfig.architectures must be some of {ARCHITECTURES}, got {bad or '[]'}"
            )
        self.seeds = tuple(int(s) for s in self.seeds)
        if not self.seeds or len(set(self.seeds)) != len(self.seeds):
            raise ValueError(f"CompareConfig.seeds must be distinct ints, got {self.seeds}")
        if not 0 < self.search_tolerance < 1:
            raise ValueError(f"CompareConfig.search_tolerance must be in (0, 1), got {self.search_tolerance}")
        if isinstance(self.train, Mapping):
            self.train = TrainConfig(**self.train)
        if self.search_steps is not None and self.search_steps < 1:
            raise ValueError(f"CompareConfig.search_steps must be >= 1 or None, got {self.search_steps}")


def arch_config(
    architecture: str,
    d_in: int,
    n_latents: int,
    k: int,
    coeff: float | None = None,
    *,
    p3_recipe: Mapping[str, Any] | None = None,
) -> SAEConfig:
    """The config of one architecture at dictionary size ``n_latents`` (papers.md §1.6, §2.3, §3.3).

    * ``relu_l1``: P1's ML-1M run (raw inputs, unsquared reconstruction, :func:`recsae_core.papers.p1.p1_sae_config`)
      with L1 ``coeff``;
    * ``topk`` / ``batch_topk``: ``k`` active, AuxK 1/32 with ``d_in // 2`` dead latents (P2; Bussmann et al.);
    * ``p3`` / ``matryoshka``: P3's recipe (``p3_recipe``: :data:`recsae_core.papers.p3.P3_SAE_RECIPES` of the
      base model on the MF site) with L1 ``coeff``; elsewhere no prediction loss (``beta = 0``: there is no
      two-tower scorer) and reconstruction weight ``alpha = 1`` (P3's 0.1 was set beside its prediction
      loss; with β = 0 and 512 latents its KL sum, 0.01 per latent, swamps a 0.1-weighted MSE: EV 0.1 at
      L0 35 on ML-100k block 0, measured). Matryoshka keeps its own weights (mse 8, inner 5, KL 0.003) and
      prefixes ``m/4, m/2, m``.
    """
    if architecture in COEFF_ARCHITECTURES and coeff is None:
        raise ValueError(f"{architecture} needs its L1 coefficient (coeff=...); see match_l0")
    if architecture == "relu_l1":
        return ReluL1Config(
            d_in=d_in, n_latents=n_latents, l1_coeff=float(coeff), input_norm="none", recon="unsquared"
        )
    if architecture == "topk":
        return TopKConfig(d_in=d_in, n_latents=n_latents, k=k)
    if architecture == "batch_topk":
        return BatchTopKConfig(d_in=d_in, n_latents=n_latents, k=k)
    if architecture in ("p3", "matryoshka"):
        recipe = dict(p3_recipe) if p3_recipe is not None else {"beta": 0.0, "alpha": 1.0}
        cls = P3Config if architecture == "p3" else MatryoshkaConfig
        if architecture == "matryoshka":
            recipe.pop("alpha", None)  # Matryoshka keeps its own reconstruction weight (P3: mse 8)
        return cls(d_in=d_in, n_latents=n_latents, **{**recipe, "l1_coeff": float(coeff)})
    raise ValueError(f"unknown architecture {architecture!r}; known: {ARCHITECTURES}")


# --------------------------------------------------------------------------------------------------- site
@dataclass
class Site:
    """One paper's site of one base model, with everything the comparison reads.

    Attributes:
        paper, title: e.g. ``"P1"``, ``"SASRec block 0"``.
        dataset, split, model, site: the data, the paper's split, the frozen base model and the probed site.
        train_rows: the SAE's training rows (``(N, d)`` :class:`~recsae_core.probe.ActivationSet`, or P3's
            :class:`~recsae_core.sae.TwoTowerData`).
        eval_acts: held-out rows for EV, L0, dead share and label alignment (``items`` names each row's
            item; ``-1`` rows are left out of the label statistics).
        item_labels, label_names: ``(n_items, G)`` genres.
        part, positions, ties: the accuracy protocol (:func:`recsae_core.sae_eval.evaluate_sae`).
        scorer, p3_recipe: P3's frozen scorer and loss weights on the MF site (``None`` elsewhere).
        fidelity_users: held-out users of P3's fidelity (MF site only); ``history`` their masked items.
        concept_site, concept_split: where the metadata explainer reads cases (the user site's last
            position for SASRec, the item table for MF) and the split whose test part it reads.
        times: seconds per set-up step.
    """

    paper: str
    title: str
    dataset: RecDataset
    split: Split
    model: Recommender
    site: str
    train_rows: Any
    eval_acts: probe.ActivationSet
    item_labels: torch.Tensor
    label_names: list[str]
    part: str = "test"
    positions: str = "last"
    ties: str = "optimistic"
    scorer: Callable[..., torch.Tensor] | None = None
    p3_recipe: dict[str, Any] | None = None
    fidelity_users: torch.Tensor | None = None
    history: pd.DataFrame | None = None
    concept_site: str | None = None
    concept_split: Split | None = None
    times: dict[str, float] = field(default_factory=dict)

    @property
    def d_in(self) -> int:
        rows = self.train_rows
        return int(rows.user_emb.shape[1] if isinstance(rows, TwoTowerData) else rows.acts.shape[1])

    @property
    def label(self) -> str:
        return f"{self.paper}: {self.title}"

    def training_rows_matrix(self) -> torch.Tensor:
        """``(N, d)`` the rows an SAE sees in training (for P3's data: the users and items of the pairs)."""
        rows = self.train_rows
        if isinstance(rows, TwoTowerData):
            if rows.pairs is None:
                return torch.cat([rows.user_emb, rows.item_emb])
            return torch.cat([rows.user_emb[rows.pairs[:, 0]], rows.item_emb[rows.pairs[:, 1]]])
        return rows.acts


def _load(dataset: str | RecDataset) -> RecDataset:
    if isinstance(dataset, RecDataset):
        return dataset
    from recsae_core.data.loaders import load_dataset

    return load_dataset(dataset, download=False, progress=False)


def _tick(times: dict[str, float], name: str, t0: float) -> float:
    t = time.perf_counter()
    times[name] = times.get(name, 0.0) + t - t0
    return t


def p1_site(
    dataset: str | RecDataset,
    *,
    model_config: Mapping[str, Any] | None = None,
    seed: int = 0,
    device: Any = "cpu",
    cache_dir: Any = None,
) -> Site:
    """P1's site (papers.md §1.4-1.5): SASRec with :data:`~recsae_core.papers.p1.P1_MODEL_CONFIG` on P1's
    new-users split (seed 42), ``sasrec.block0`` at every non-padding position of the SAE users (training)
    and of the test users (held out) — the same cached model and activations as :func:`recsae_core.papers.p1.run`.
    Spliced at the last position, the one scored."""
    from recsae_core.cache import cached_fit
    from recsae_core.data.splits import p1_new_users
    from recsae_core.papers import p1

    times: dict[str, float] = {}
    t0 = time.perf_counter()
    ds = _load(dataset)
    split = p1_new_users(ds, seed=42)
    labels, names = p1.genre_labels(ds)
    t0 = _tick(times, "data + split", t0)
    fit = cached_fit(
        "sasrec",
        split,
        {**p1.P1_MODEL_CONFIG, **(model_config or {})},
        seed=seed,
        device=device,
        progress=False,
    )
    model = fit.model.eval()
    t0 = _tick(times, "base model (cached_fit)", t0)
    kw = dict(positions="all", device=device, progress=False, cache_dir=cache_dir)
    train = sae_eval.cached_activations(
        model, "sasrec.block0", p1.sequences(split, "sae", model.maxlen), **kw
    )
    held = sae_eval.cached_activations(
        model, "sasrec.block0", p1.sequences(split, "test_full", model.maxlen), **kw
    )
    _tick(times, "activations", t0)
    return Site(
        "P1",
        "SASRec block 0",
        ds,
        split,
        model,
        "sasrec.block0",
        train,
        held,
        labels,
        names,
        concept_site="sasrec.block0",
        concept_split=split,
        times=times,
    )


def p2_site(
    dataset: str | RecDataset,
    *,
    model_config: Mapping[str, Any] | None = None,
    seed: int = 0,
    device: Any = "cpu",
    cache_dir: Any = None,
) -> Site:
    """P2's site (papers.md §2.5-2.6): SASRec with :data:`~recsae_core.papers.p2.P2_SASREC` on P2's split
    (:func:`~recsae_core.papers.p2.p2_split`, the model of :func:`~recsae_core.papers.p2.p2_base_models`),
    the final hidden states at every valid position of the training histories (training rows) and of the
    test users (held out); spliced at the last position, ranks pessimistic on ties (P2 §4.3)."""
    from recsae_core.papers import p1, p2

    times: dict[str, float] = {}
    t0 = time.perf_counter()
    bm = p2.p2_base_models(
        _load(dataset),
        ["sasrec"],
        {"sasrec": dict(model_config or {})},
        seed=seed,
        device=device,
        progress=False,
    )
    split, model = bm.split, bm.results["sasrec"].model.eval()
    labels, names = p1.genre_labels(split.dataset)
    site = p2.p2_site(model)
    t0 = _tick(times, "data, split and base model (p2_base_models)", t0)
    kw = dict(positions="all", device=device, progress=False, cache_dir=cache_dir)
    train = sae_eval.cached_activations(model, site, p2.p2_user_batch(split, model.maxlen), **kw)
    held = sae_eval.cached_activations(model, site, probe.part_batch(model, split, "test"), **kw)
    _tick(times, "activations", t0)
    return Site(
        "P2",
        "SASRec final states",
        split.dataset,
        split,
        model,
        site,
        train,
        held,
        labels,
        names,
        ties=p2.TIES,
        concept_site=site,
        concept_split=p2.p2_concept_split(split),
        times=times,
    )


def p3_site(
    dataset: str | RecDataset,
    *,
    model_config: Mapping[str, Any] | None = None,
    seed: int = 0,
    device: Any = "cpu",
    cache_dir: Any = None,
) -> Site:
    """P3's site (papers.md §3.3-3.5): MF on P3's hold-out split (:func:`recsae_core.papers.p3.p3_setup`, the
    P3 chapter's cached model, trained with P3's SGD recipe), user **and** item embeddings; training data P3's
    pairs of the SAE users (:func:`~recsae_core.papers.p3.p3_training_data`, raw embeddings: P3's per-batch
    min-max scaling, :data:`~recsae_core.papers.p3.P3_BATCH_MINMAX`, is not applied, so every architecture
    sees the same rows), P3-style SAEs with P3's MF loss (prediction loss through the frozen model);
    held-out rows: the held-out users' vectors and the item table. ``model_config``: :class:`P3MFConfig`
    fields."""
    from recsae_core.papers import p3
    from recsae_core.sae import two_tower_scorer

    setup = p3.p3_setup(
        dataset, ("mf",), {"mf": dict(model_config or {})} if model_config else None, seed=seed, device=device
    )
    times = dict(setup.times)
    t0 = time.perf_counter()
    model = setup.models["mf"]
    data = p3.p3_training_data(model, setup.split, setup.users.train, seed=seed)
    scorer = two_tower_scorer(model, pairwise=data.pairwise)
    with torch.no_grad():
        users_UD = model.representation("mf.user", UserBatch(setup.users.test)).float()
        items_ID = model.representation("mf.item", UserBatch(setup.users.test[:1])).float()
    n_u, n_i = len(users_UD), len(items_ID)
    held = probe.ActivationSet(
        torch.cat([users_UD, items_ID]),
        torch.cat([setup.users.test, torch.full((n_i,), -1)]),
        torch.cat([torch.full((n_u,), -1), torch.arange(n_i)]),
        None,
        "mf.user+mf.item",
        {"rows": "held-out users, then the item table"},
    )
    labels = torch.as_tensor(setup.labels).bool()
    _tick(times, "rows", t0)
    return Site(
        "P3",
        "MF user + item embeddings",
        setup.dataset,
        setup.split,
        model,
        "mf.user",
        data,
        held,
        labels,
        list(setup.label_names),
        scorer=scorer,
        p3_recipe=dict(p3.P3_SAE_RECIPES["mf"]),
        fidelity_users=setup.users.test,
        history=setup.split.history_for("test"),
        concept_site="mf.item",
        concept_split=setup.split,
        times=times,
    )


# ----------------------------------------------------------------------------------------------- L0 match
@dataclass
class L0Match:
    """The result of :func:`match_l0`: the chosen coefficient, its L0 and every try (``coeff``, ``l0``)."""

    coeff: float
    l0: float
    target: float
    tries: list[tuple[float, float]]
    matched: bool

    @property
    def relative_error(self) -> float:
        return abs(self.l0 - self.target) / self.target


def match_l0(
    l0_of: Callable[[float], float],
    target: float,
    start: float,
    *,
    max_evals: int = 6,
    tolerance: float = 0.15,
    factor: float = 4.0,
    lo: float = 1e-6,
    hi: float = 1e4,
) -> L0Match:
    """The L1 coefficient whose SAE has L0 closest to ``target`` (papers.md §4.4: L0 = mean active latents).

    L0 falls as the coefficient grows. From ``start`` the search steps by ``factor`` until the target is
    bracketed, then interpolates in log-log space (regula falsi, safeguarded by bisection) between the
    bracket's ends; it stops at ``tolerance`` (relative) or after ``max_evals`` evaluations and returns the
    closest try (in log L0). ``matched`` is False when the target was not reached within ``tolerance`` (e.g.
    an SAE whose other sparsity terms already keep L0 below the target at coefficient ``lo``).
    """
    if target <= 0 or start <= 0 or max_evals < 1:
        raise ValueError(
            f"match_l0 needs target > 0, start > 0 and max_evals >= 1, got {target}, {start}, {max_evals}"
        )
    tries: list[tuple[float, float]] = []

    def ev(c: float) -> float:
        v = float(l0_of(c))
        tries.append((c, v))
        return v

    def dist(v: float) -> float:
        return abs(math.log(max(v, 1e-9) / target))

    c, v = start, ev(start)
    below: tuple[float, float] | None = None  # (coeff, l0) with l0 <= target: coefficient too high
    above: tuple[float, float] | None = None
    (below, above) = ((c, v), None) if v <= target else (None, (c, v))
    while len(tries) < max_evals and dist(v) > math.log1p(tolerance):
        if below is None:  # L0 too high: raise the coefficient
            if c >= hi:
                break
            c = min(c * factor, hi)
        elif above is None:  # L0 too low: lower it
            if c <= lo:
                break
            c = max(c / factor, lo)
        else:
            (ca, va), (cb, vb) = above, below  # ca < cb, va > target >= vb
            la, lb = math.log(ca), math.log(cb)
            ya, yb = math.log(max(va, 1e-9)), math.log(max(vb, 1e-9))
            t = (ya - math.log(target)) / (ya - yb) if ya != yb else 0.5
            t = min(max(t, 0.1), 0.9)  # safeguard: stay inside the bracket
            c = math.exp(la + t * (lb - la))
        v = ev(c)
        if v <= target:
            below = (c, v) if below is None or c < below[0] else below
        else:
            above = (c, v) if above is None or c > above[0] else above
    best_c, best_v = min(tries, key=lambda cv: dist(cv[1]))
    return L0Match(best_c, best_v, float(target), tries, dist(best_v) <= math.log1p(tolerance))


# ----------------------------------------------------------------------------------------------- training
def _train(
    site: Site, cfg: SAEConfig, tc: TrainConfig, seed: int, *, device: Any, cache_dir: Any
) -> SAETrainResult:
    """One SAE through the SAE cache, its decoder bias started at the mean of the training rows (SAELens
    ``b_dec_init_method="mean"``) for every architecture; P3-style SAEs get P3's scorer on the MF site (β > 0).

    Why the mean start: P2's final states are LayerNorm outputs whose column mean holds ~73 % of their
    energy (ML-100k); from ``b_dec = 0`` a ReLU+L1 SAE there never leaves the trivial solution (EV 0.04 at
    L0 63, 600 steps, measured) while TopK does (EV 0.83); started at the mean, ReLU+L1 reaches EV 0.64 at
    L0 34. Every architecture gets the same start, so the comparison stays matched.
    """
    from recsae_core.sae import from_config, init_b_dec_mean, train_sae

    scorer = site.scorer if getattr(cfg, "beta", 0) > 0 else None
    data = site.train_rows

    def fit() -> SAETrainResult:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            sae = from_config(cfg)
        init_b_dec_mean(sae, site.training_rows_matrix().float())
        rows = data.acts if isinstance(data, probe.ActivationSet) else data
        return train_sae(sae, rows, tc, scorer=scorer, device=device, seed=seed, progress=False)

    return sae_eval.cached_sae(
        data,
        cfg,
        tc,
        seed=seed,
        scorer=scorer,
        key_extra={"protocol": "compare", "b_dec_init": "mean"},
        train_fn=fit,
        cache_dir=cache_dir,
        device=device,
        progress=False,
    )


@torch.no_grad()
def _row_l0(sae: SparseAutoencoder, rows_ND: torch.Tensor, n: int = 20_000, seed: int = 0) -> float:
    idx = metrics.sample_rows(len(rows_ND), n, seed)
    acts = sae.eval().encode(rows_ND[idx].to(sae.W_enc.device, torch.float32))
    return float(metrics.l0(acts).double().mean())


def find_coeffs(
    site: Site,
    cfg: CompareConfig,
    *,
    device: Any = "cpu",
    cache_dir: Any = None,
    log: Callable[[str], None] | None = None,
) -> dict[str, L0Match]:
    """:func:`match_l0` for every L1-type architecture of ``cfg`` at ``site`` (seed ``cfg.seeds[0]``, L0 on a
    20,000-row sample of the training rows, each try through the SAE cache)."""
    rows = site.training_rows_matrix()
    tc = cfg.train if cfg.search_steps is None else dataclasses.replace(cfg.train, steps=cfg.search_steps)
    out = {}
    for arch in cfg.architectures:
        if arch not in COEFF_ARCHITECTURES:
            continue

        def l0_of(c: float, arch: str = arch) -> float:
            sc = arch_config(arch, site.d_in, cfg.n_latents, cfg.k, c, p3_recipe=site.p3_recipe)
            res = _train(site, sc, tc, cfg.seeds[0], device=device, cache_dir=cache_dir)
            return _row_l0(res.sae, rows)

        out[arch] = match_l0(
            l0_of, cfg.k, START_COEFF[arch], max_evals=cfg.search_evals, tolerance=cfg.search_tolerance
        )
        if log:
            m = out[arch]
            log(
                f"{site.paper} {arch}: L1 {m.coeff:.3g} -> L0 {m.l0:.1f} (target {cfg.k}, {len(m.tries)} tries)"
            )
    return out


# --------------------------------------------------------------------------------------------- evaluation
def item_profiles(
    acts_NM: torch.Tensor, items_N: torch.Tensor, n_items: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """``((I', m) mean activation per item, (I',) item ids)`` over the rows that name an item, for items with
    at least one row: the item activation profile purity@K reads (P3 §4.7; for a sequence site the rows of
    an item are the positions where it is the input item)."""
    keep = items_N >= 0
    a, it = acts_NM[keep].double(), items_N[keep].long()
    sums = torch.zeros(n_items, a.shape[1], dtype=torch.float64).index_add_(0, it, a)
    counts = torch.bincount(it, minlength=n_items)
    has = counts > 0
    return (sums[has] / counts[has, None]).float(), torch.nonzero(has).squeeze(1)


def _purity(
    item_acts: torch.Tensor, item_ids: torch.Tensor, labels_IG: torch.Tensor, k: int = 10, min_items: int = 10
) -> float:
    """Mean over genres (with at least ``min_items`` items) of purity@k of one feature per genre (P3 Table 1)."""
    from recsae_core.papers.p3 import purity_table

    lab = labels_IG[item_ids].bool()
    keep = lab.sum(0) >= min_items
    if not bool(keep.any()):
        return float("nan")
    tab = purity_table(item_acts, lab[:, keep].numpy(), ks=(k,))
    return float(tab[f"purity@{k}"].mean())


@torch.no_grad()
def _two_tower_accuracy(
    site: Site, sae: SparseAutoencoder, k: int = 10, device: Any = "cpu"
) -> dict[str, float]:
    """NDCG@k and HR@k with users **and** items reconstructed, error dropped (P3 §3.6's setting, §4.3)."""
    from recsae_core.evaluate import evaluate_scores_fn

    model = site.model
    prefix = site.site.split(".")[0]
    items = model.representation(f"{prefix}.item", UserBatch(torch.zeros(1, dtype=torch.long)))
    items_hat = sae(items.float()).x_hat.to(items.dtype)

    def score(batch: UserBatch) -> torch.Tensor:
        u = model.representation(f"{prefix}.user", batch)
        return model.score_vectors(sae(u.float()).x_hat.to(u.dtype), items_hat, batch.users)

    return evaluate_scores_fn(score, site.split, site.part, (k,), device=device, ties=site.ties)


def _concepts(site: Site, sae: SparseAutoencoder, n_latents: int, seed: int, device: Any) -> dict[str, float]:
    """Mean description confidence of the metadata explainer (P2 §2.7, papers.md §4.5) over a seeded sample
    of ``n_latents`` live latents, and the share at confidence >= 0.8."""
    from recsae_core import concepts as C

    def sample_live(pool: C.CasePool) -> list[int]:
        live = torch.nonzero((pool.acts > 0).any(0)).squeeze(1).numpy()
        rng = np.random.default_rng(seed)
        return np.sort(rng.choice(live, size=min(n_latents, len(live)), replace=False)).tolist()

    scores = C.describe_sae(
        site.model,
        site.concept_site or site.site,
        sae,
        site.concept_split or site.split,
        latents=sample_live,
        hard=False,
        n_boot=20,
        seed=seed,
        device=device,
    ).scores
    if scores.empty:
        return {"description_confidence": float("nan"), "described": 0, "share_conf>=0.8": float("nan")}
    c = scores["confidence"].to_numpy(float)
    return {
        "description_confidence": float(np.nanmean(c)),
        "described": len(c),
        "share_conf>=0.8": float((c >= 0.8 - 1e-9).mean()),
    }


def evaluate_one(
    site: Site,
    result: SAETrainResult,
    *,
    k: int = 10,
    concept_latents: int = 64,
    seed: int = 0,
    max_rows: int = 200_000,
    device: Any = "cpu",
    describe: bool = True,
) -> dict[str, Any]:
    """Every measure of one trained SAE at ``site`` as one row (module docstring; papers.md §4.1-4.5, §4.7, §4.9).

    :func:`recsae_core.sae_eval.evaluate_sae` gives EV, L0, dead share, spliced NDCG (error dropped) and the
    mean max correlation; on the MF site the spliced NDCG reconstructs users and items and P3's fidelity
    (:func:`recsae_core.papers.p3.fidelity`) gives RBO; purity@10 reads the item activation profiles
    (:func:`item_profiles`); the description confidence comes from :func:`_concepts` (``describe=False``
    skips it).
    """
    dev = resolve_device(device)
    sae = result.sae.eval().to(dev)
    rep = sae_eval.evaluate_sae(
        sae,
        site.model,
        site.site,
        site.split,
        acts=site.eval_acts,
        part=site.part,
        ks=(k,),
        ties=site.ties,
        positions=site.positions,
        keep_error_too=False,
        item_labels=site.item_labels,
        label_names=site.label_names,
        train_result=result,
        max_rows=max_rows,
        device=dev,
    )
    row = rep.to_frame().iloc[0].to_dict()
    row = {
        c: row[c]
        for c in (
            "explained_variance",
            "fvu",
            "l0",
            "dead_fraction",
            "dense_fraction",
            "mean_max_corr",
            "neuron_mean_max_corr",
            f"base_ndcg@{k}",
            f"spliced_ndcg@{k}",
            "train_seconds",
            "rows_per_second",
        )
    }
    row["rbo"] = float("nan")
    if site.fidelity_users is not None:
        from recsae_core.papers.p3 import fidelity

        two = _two_tower_accuracy(site, sae, k, dev)
        row[f"spliced_ndcg@{k}"] = two[f"ndcg@{k}"]
        row["rbo"] = fidelity(site.model, sae, site.fidelity_users, history=site.history).rbo
    with torch.no_grad():
        acts = torch.cat(
            [
                sae.encode(site.eval_acts.acts[s : s + 65_536].to(dev, torch.float32)).float().cpu()
                for s in range(0, len(site.eval_acts), 65_536)
            ]
        )
    prof, ids = item_profiles(acts, site.eval_acts.items, site.dataset.n_items)
    row["purity@10"] = _purity(prof, ids, site.item_labels)
    if describe:
        row.update(_concepts(site, sae, concept_latents, seed, dev))
    return row


def compare_site(
    site: Site,
    cfg: CompareConfig,
    *,
    device: Any = "cpu",
    cache_dir: Any = None,
    log: Callable[[str], None] | None = None,
) -> pd.DataFrame:
    """Every architecture of ``cfg`` x every seed at ``site``: matched dictionary (``cfg.n_latents``), matched
    L0 (``cfg.k``; :func:`find_coeffs` for the L1-type SAEs), the same optimiser (``cfg.train``), each SAE
    through the SAE cache and evaluated by :func:`evaluate_one`.

    Returns one row per (architecture, seed) with ``run = "matched"``, plus one ``run = "search"`` row per
    other coefficient the L0 search tried (seed ``cfg.seeds[0]``, no description scores): ``site``, ``paper``,
    ``run``, ``architecture``, ``seed``, ``coeff`` (the
    matched L1 coefficient, NaN for TopK-type), ``l0_matched`` (whether the search met its tolerance),
    ``cache_hit``, :func:`evaluate_one`'s columns. ``attrs["matches"]`` holds the :class:`L0Match` per
    architecture.
    """
    matches = find_coeffs(site, cfg, device=device, cache_dir=cache_dir, log=log)
    tc_search = (
        cfg.train if cfg.search_steps is None else dataclasses.replace(cfg.train, steps=cfg.search_steps)
    )
    rows = []
    plan: list[tuple[str, str, float | None, int, TrainConfig]] = []
    for arch in cfg.architectures:
        m = matches.get(arch)
        plan += [("matched", arch, None if m is None else m.coeff, seed, cfg.train) for seed in cfg.seeds]
        if m is not None:  # the search's other coefficients: the L1 architectures' L0 sweep (Pareto plots)
            plan += [("search", arch, c, cfg.seeds[0], tc_search) for c, _ in m.tries if c != m.coeff]
    for run, arch, coeff, seed, tc in plan:
        m = matches.get(arch)
        sc = arch_config(arch, site.d_in, cfg.n_latents, cfg.k, coeff, p3_recipe=site.p3_recipe)
        res = _train(site, sc, tc, seed, device=device, cache_dir=cache_dir)
        row = evaluate_one(
            site,
            res,
            concept_latents=cfg.n_concept_latents,
            seed=seed,
            max_rows=cfg.max_rows,
            device=device,
            describe=run == "matched",
        )
        rows.append(
            {
                "site": site.label,
                "paper": site.paper,
                "run": run,
                "architecture": arch,
                "seed": seed,
                "n_latents": cfg.n_latents,
                "k": cfg.k,
                "coeff": float("nan") if coeff is None else coeff,
                "l0_matched": True if m is None else m.matched,
                "cache_hit": bool(res.meta.get("cache_hit")),
                **row,
            }
        )
        if log:
            log(
                f"{site.paper} {arch} {run} seed {seed}: EV {row['explained_variance']:.3f}, L0 {row['l0']:.1f}"
            )
    out = pd.DataFrame(rows)
    out.attrs["matches"] = matches
    return out


def matched_sae(
    site: Site,
    cfg: CompareConfig,
    runs: pd.DataFrame,
    architecture: str,
    seed: int | None = None,
    *,
    device: Any = "cpu",
    cache_dir: Any = None,
) -> SparseAutoencoder:
    """The matched SAE of ``architecture`` and ``seed`` (default ``cfg.seeds[0]``) that :func:`compare_site`
    trained at ``site`` — rebuilt with the coefficient recorded in ``runs`` and reloaded from the SAE cache
    (trained again only when the cache lost it), in eval mode. For the feature explorer of every
    architecture (issue 9)."""
    seed = cfg.seeds[0] if seed is None else int(seed)
    sel = runs[(runs["run"] == "matched") & (runs["architecture"] == architecture) & (runs["seed"] == seed)]
    if sel.empty:
        raise ValueError(
            f"no matched run of {architecture!r} with seed {seed} in runs; "
            f"architectures {sorted(set(runs['architecture']))}, seeds {sorted(set(runs['seed']))}"
        )
    coeff = float(sel["coeff"].iloc[0])
    sc = arch_config(
        architecture,
        site.d_in,
        cfg.n_latents,
        cfg.k,
        None if math.isnan(coeff) else coeff,
        p3_recipe=site.p3_recipe,
    )
    return _train(site, sc, cfg.train, seed, device=device, cache_dir=cache_dir).sae.eval()


# ------------------------------------------------------------------------------------------------ summary
def t_interval(values: Sequence[float], level: float = 0.95) -> tuple[float, float, float]:
    """``(mean, low, high)``: Student-t interval of the mean over seeds (NaN bounds with fewer than 2 values)."""
    from scipy import stats

    v = np.asarray([x for x in values if x is not None and np.isfinite(x)], dtype=float)
    if len(v) == 0:
        return float("nan"), float("nan"), float("nan")
    m = float(v.mean())
    if len(v) < 2:
        return m, float("nan"), float("nan")
    half = float(stats.t.ppf(0.5 + level / 2, len(v) - 1) * v.std(ddof=1) / math.sqrt(len(v)))
    return m, m - half, m + half


def summarise(runs: pd.DataFrame, columns: Sequence[str] | None = None, level: float = 0.95) -> pd.DataFrame:
    """Per architecture (the ``run == "matched"`` rows): mean, and ``<col>_lo`` / ``<col>_hi`` (t-interval
    over seeds) of each column, plus ``seeds`` and ``coeff``. Rows in :data:`ARCHITECTURES` order."""
    cols = list(
        columns
        or [
            c
            for c in (
                "explained_variance",
                "l0",
                "dead_fraction",
                "spliced_ndcg@10",
                "rbo",
                "mean_max_corr",
                "purity@10",
                "description_confidence",
                "train_seconds",
                "rows_per_second",
            )
            if c in runs
        ]
    )
    if "run" in runs:
        runs = runs[runs["run"] == "matched"]
    out = []
    for arch, g in runs.groupby("architecture", sort=False):
        row: dict[str, Any] = {"architecture": arch, "seeds": len(g), "coeff": float(g["coeff"].iloc[0])}
        if "l0_matched" in g:
            row["l0_matched"] = bool(g["l0_matched"].all())
        for c in cols:
            row[c], row[f"{c}_lo"], row[f"{c}_hi"] = t_interval(g[c].astype(float).tolist(), level)
        out.append(row)
    df = pd.DataFrame(out)
    order = {a: i for i, a in enumerate(ARCHITECTURES)}
    return df.sort_values("architecture", key=lambda s: s.map(order)).reset_index(drop=True)


def pareto_front(points: pd.DataFrame, x: str, y: str, higher_y: bool = True) -> pd.Series:
    """Bool per row: on the Pareto front of (lower ``x`` = sparser, better ``y``): no other row has ``x`` <=
    and ``y`` at least as good with one of them strictly better."""
    xs, ys = points[x].to_numpy(float), points[y].to_numpy(float) * (1 if higher_y else -1)
    on = []
    for i in range(len(points)):
        dom = (xs <= xs[i]) & (ys >= ys[i]) & ((xs < xs[i]) | (ys > ys[i]))
        on.append(not bool(dom.any()) and np.isfinite(ys[i]))
    return pd.Series(on, index=points.index)


def _fmt(v: float) -> str:
    return "n/a" if not np.isfinite(v) else (f"{v:.3f}" if abs(v) < 10 else f"{v:.0f}")


def conclusion(summary: pd.DataFrame, metrics_: Sequence[str] | None = None) -> list[str]:
    """The measured conclusion of one site, one sentence per metric, computed from :func:`summarise`.

    For each metric (:data:`METRICS`, those present with a finite mean): the best architecture (highest, or
    lowest for dead share and training time), its mean and interval, the runner-up, the margin, and whether
    the two intervals are disjoint ("clear") or overlap ("within the seeds' spread"). Unmatched L0s are named.
    """
    lines = []
    for col in metrics_ or list(METRICS):
        if col not in summary or not summary[col].notna().any():
            continue
        label, higher = METRICS[col]
        s = summary[summary[col].notna()].sort_values(col, ascending=not higher, kind="stable")
        best = s.iloc[0]
        text = f"**{label}**: `{best['architecture']}` {_fmt(best[col])} [{_fmt(best[col + '_lo'])}, {_fmt(best[col + '_hi'])}]"
        if len(s) > 1 and abs(best[col] - s.iloc[1][col]) <= 1e-12:
            ties = s[(s[col] - best[col]).abs() <= 1e-12]["architecture"]
            lines.append(f"**{label}**: {', '.join(f'`{a}`' for a in ties)} tie at {_fmt(best[col])}.")
            continue
        if len(s) > 1:
            second = s.iloc[1]
            margin = abs(best[col] - second[col])
            disjoint = (
                (best[col + "_lo"] > second[col + "_hi"])
                if higher
                else (best[col + "_hi"] < second[col + "_lo"])
            )
            how = (
                "clear: the intervals do not overlap"
                if disjoint
                else "within the seeds' spread: the intervals overlap"
            )
            rel = (
                f" ({margin / abs(second[col]):.0%})"
                if second[col] not in (0, 0.0) and np.isfinite(second[col])
                else ""
            )
            text += f" beats `{second['architecture']}` {_fmt(second[col])} by {_fmt(margin)}{rel} — {how}"
        lines.append(text + ".")
    if "l0_matched" in summary and not summary["l0_matched"].all():
        missed = ", ".join(f"`{a}`" for a in summary.loc[~summary["l0_matched"].astype(bool), "architecture"])
        lines.append(f"**L0 not matched** within the search's tolerance: {missed} (compare their L0 column).")
    return lines


# ------------------------------------------------------------------------------------------------- a page
#: paper -> site builder.
SITES: dict[str, Callable[..., Site]] = {"p1": p1_site, "p2": p2_site, "p3": p3_site}

#: Per site: dictionary size and target L0 from its paper, and the shared optimiser budget of the CPU book.
#: P1: P1's 512 latents (§1.10); k = 32 lies between P1's 10 latents above 0.1 and 88.5 above 0 (ML-1M dev).
#: P2: 16 x 64 = 1,024 latents, k = 8 (P2's middle k, §2.4). P3: 22 latents (ML-1M, §3.4), k = 5 (P3's
#: 5.38 active latents per item, §3.9). Steps x batch: every architecture sees the same rows.
SITE_DEFAULTS: dict[str, dict[str, Any]] = {
    "p1": {"n_latents": 512, "k": 32, "steps": 500, "batch_size": 1024},
    "p2": {"n_latents": 1024, "k": 8, "steps": 500, "batch_size": 1024},
    "p3": {"n_latents": 22, "k": 5, "steps": 2000, "batch_size": 256},
}


def site_config(paper: str, settings: Mapping[str, Any] | None = None, **fields: Any) -> CompareConfig:
    """:class:`CompareConfig` of ``paper``'s site: :data:`SITE_DEFAULTS` updated by ``settings`` (keys
    ``n_latents``, ``k``, ``steps``, ``batch_size``, ``lr``, ``warmup_steps``), other fields as keywords."""
    if paper not in SITE_DEFAULTS:
        raise ValueError(f"unknown paper {paper!r}; the sites are {sorted(SITE_DEFAULTS)}")
    s = {**SITE_DEFAULTS[paper], **dict(settings or {})}
    unknown = set(s) - {"n_latents", "k", "steps", "batch_size", "lr", "warmup_steps"}
    if unknown:
        raise ValueError(f"settings for {paper} have unknown keys {sorted(unknown)}")
    tc = TrainConfig(
        steps=int(s["steps"]),
        batch_size=int(s["batch_size"]),
        lr=float(s.get("lr", 1e-3)),
        warmup_steps=int(s.get("warmup_steps", min(100, int(s["steps"]) // 10))),
    )
    return CompareConfig(n_latents=int(s["n_latents"]), k=int(s["k"]), train=tc, **fields)


#: MovieLens-1M's variants (contracts in CONTRIBUTING.md): a sequential site needs the timestamped one.
ML1M_NAMES: tuple[str, ...] = ("ml-1m", "ml-1m-prefix", "ml-1m-notime")


def site_dataset(paper: str, dataset: str | RecDataset) -> str | RecDataset:
    """The dataset ``paper``'s site loads for a page's ``dataset``: on MovieLens-1M, the SASRec sites (P1, P2)
    need timestamps (:func:`recsae_core.data.registry.resolve_variant`: ``ml-1m`` or ``ml-1m-prefix``) and
    P3's MF takes ``ml-1m-notime`` (P3's own, every rating, binarised); other names pass unchanged."""
    if not isinstance(dataset, str) or dataset not in ML1M_NAMES:
        return dataset
    from recsae_core.data.registry import resolve_variant

    if paper in ("p1", "p2"):
        return resolve_variant("ml-1m", need_timestamps=True)
    return "ml-1m-notime" if dataset != "ml-1m" else resolve_variant("ml-1m")


@dataclass
class SiteResult:
    """One site's comparison (:func:`run_site`): the site, the runs, the summary with intervals, the
    conclusion sentences and the seconds it took (``times``: set-up steps and ``"SAEs"``)."""

    site: Site
    config: CompareConfig
    runs: pd.DataFrame
    summary: pd.DataFrame
    conclusion: list[str]
    times: dict[str, float]


def run_site(
    paper: str,
    dataset: str | RecDataset,
    settings: Mapping[str, Any] | None = None,
    *,
    architectures: Sequence[str] = ARCHITECTURES,
    seeds: Sequence[int] = (0, 1, 2),
    search_evals: int = 6,
    concept_latents: int = 64,
    model_config: Mapping[str, Any] | None = None,
    device: Any = "cpu",
    cache_dir: Any = None,
    log: Callable[[str], None] | None = None,
) -> SiteResult:
    """Build ``paper``'s site on ``dataset`` (:data:`SITES`), compare every architecture there
    (:func:`compare_site` with :func:`site_config`), summarise and conclude."""
    cfg = site_config(
        paper,
        settings,
        architectures=tuple(architectures),
        seeds=tuple(seeds),
        search_evals=search_evals,
        n_concept_latents=concept_latents,
    )
    site = SITES[paper](
        site_dataset(paper, dataset), model_config=model_config, device=device, cache_dir=cache_dir
    )
    t0 = time.perf_counter()
    runs = compare_site(site, cfg, device=device, cache_dir=cache_dir, log=log)
    times = {**site.times, "SAEs (train or reload, evaluate)": time.perf_counter() - t0}
    summary = summarise(runs)
    return SiteResult(site, cfg, runs, summary, conclusion(summary), times)
