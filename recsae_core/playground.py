"""The steering playground: pick a dataset, model, SAE, feature and a user or user group, move α, and see
the top-k change, the label shares and NDCG (P1 §1.8's steering, for any SAE of the book).

Two forms of the same computation:

* **live** (Jupyter): :class:`recsae_core.widgets.PlaygroundPanel` calls :func:`steering_grid` for the
  current selection (any feature, any user);
* **static** (the HTML book): :func:`playground_data` precomputes :func:`steering_grid` over a sampled set of
  users and features of each SAE and :func:`recsae_core.viz.playground.playground_html` renders it as
  self-contained HTML + JS (a feature search, a user/group choice and a plotly figure whose slider moves α;
  no kernel, no outside request).

Steering adds α to one feature at the model's site with the SAE's error term kept
(:func:`recsae_core.steer.steered_scores_fn`, ``keep_error=True``), so α = 0 is exactly the base model's list.
For ``(B, L, D)`` sites (SASRec block 0) the last position is edited, as P1 does.

The SAEs are those the paper chapters train, loaded through the same cached calls with the chapters'
settings (:func:`p1_entry`: P1's SASRec block-0 ReLU+L1 SAE on P1's split; :func:`p2_entry`: P2's TopK SAE on
BPR-MF's user vector on P2's split), so a book build reuses them from the artifact cache.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import torch

from recsae_core import metrics
from recsae_core.data.dataset import Split
from recsae_core.evaluate import mask_seen, target_ranks
from recsae_core.models.base import Recommender
from recsae_core.probe import eval_cases
from recsae_core.sae.base import SparseAutoencoder
from recsae_core.steer import Steer, steered_scores_fn
from recsae_core.utils import resolve_device

__all__ = [
    "NO_DESCRIPTION",
    "PlaygroundConfig",
    "PlaygroundSAE",
    "SteeringGrid",
    "describe_features",
    "grid_summary",
    "label_selectivity",
    "p1_entry",
    "p2_entry",
    "pick_features",
    "playground_data",
    "playground_summary",
    "steering_grid",
    "user_groups",
]

#: What the metadata explainer writes when no attribute stands out (such features are not sampled first).
NO_DESCRIPTION = "No metadata attribute stands out"


@dataclass
class PlaygroundConfig:
    """What the static grid holds (its size sets the page weight: about 17 kB of JSON per feature with these
    defaults; the default page, 2 SAEs × 12 features, embeds 0.40 MB)."""

    alphas: tuple[float, ...] = (-10.0, -6.0, -3.0, -1.0, 0.0, 1.0, 3.0, 6.0, 10.0)
    """Strengths added to the feature (must include 0, the base model)."""
    n_features: int = 12
    """Features per SAE in the grid: the best-described live features (:func:`pick_features`)."""
    n_users: int = 300
    """Sampled test users (seeded) the groups are drawn from."""
    n_shown_users: int = 12
    """Of those, users whose own top-k lists the page shows."""
    heavy_labels: tuple[str, ...] | None = None
    """Labels with a "heavy in <label>" group; None = the two labels most frequent in the histories."""
    heavy_share: float = 0.4
    """A user is heavy in a label when at least this share of their history carries it."""
    history_quantile: float = 0.25
    """New users: the shortest-history quarter of the sample; long-history users: the longest quarter."""
    k: int = 10
    """List length (top-k, NDCG@k)."""
    n_changes: int = 8
    """Items entering / leaving most lists of a group, per α."""
    alpha_unit: str = "max_act"
    """``"max_act"``: α counts multiples of the feature's largest activation on the evaluation users (one grid
    suits SAEs whose activations differ in scale; α = 1 adds its strongest natural activation);
    ``"absolute"``: α is added as is (P1 §1.8's α)."""
    seed: int = 0
    """Seeds the user sample."""

    def __post_init__(self) -> None:
        if self.alpha_unit not in ("max_act", "absolute"):
            raise ValueError(
                f"PlaygroundConfig.alpha_unit must be 'max_act' or 'absolute', got {self.alpha_unit!r}"
            )
        self.alphas = tuple(float(a) for a in self.alphas)
        if 0.0 not in self.alphas:
            raise ValueError(f"PlaygroundConfig.alphas must include 0 (the base model), got {self.alphas}")
        if list(self.alphas) != sorted(set(self.alphas)):
            raise ValueError(f"PlaygroundConfig.alphas must be increasing and distinct, got {self.alphas}")
        for name in ("n_features", "n_users", "n_shown_users", "k", "n_changes"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"PlaygroundConfig.{name} must be an int >= 1, got {v!r}")
        if self.n_shown_users > self.n_users:
            raise ValueError(
                f"PlaygroundConfig.n_shown_users ({self.n_shown_users}) must be <= n_users ({self.n_users})"
            )
        if not 0 < self.heavy_share <= 1:
            raise ValueError(f"PlaygroundConfig.heavy_share must be in (0, 1], got {self.heavy_share}")
        if not 0 < self.history_quantile < 0.5:
            raise ValueError(
                f"PlaygroundConfig.history_quantile must be in (0, 0.5), got {self.history_quantile}"
            )


@dataclass
class PlaygroundSAE:
    """One choice of the playground: a dataset, a frozen model, its site and an SAE.

    Attributes:
        name: what the page calls it (e.g. ``"SASRec block 0, ReLU+L1 (P1)"``).
        dataset: the dataset's name; ``model_name``: the model's registry name; ``site``: the steered site.
        model, sae, split: the recommender, the SAE, and the split whose ``part`` users are steered.
        catalog: :func:`describe_features` (filled by :func:`playground_data` when None).
        part: evaluation part (``"test"``).
    """

    name: str
    dataset: str
    model_name: str
    site: str
    model: Any
    sae: Any
    split: Any
    catalog: pd.DataFrame | None = None
    part: str = "test"


# ------------------------------------------------------------------------------------------- SAEs
def p1_entry(
    dataset: Any,
    *,
    model_config: Mapping[str, Any] | None = None,
    sae_steps: int = 5000,
    seed: int = 0,
    device: str = "cpu",
) -> PlaygroundSAE:
    """P1's SAE (papers.md §1.5–1.6): ReLU+L1 on SASRec's block 0, P1's split, :func:`recsae_core.papers.p1.run`
    with the P1 chapter's arguments (``sae_steps`` = its ``sae_steps``), so the chapter's cache entries hit."""
    from recsae_core.papers import p1

    r = p1.run(
        dataset,
        "sasrec",
        model_config=dict(model_config) if model_config else None,
        train_config=p1.p1_train_config(steps=sae_steps),
        seed=seed,
        device=device,
    )
    return PlaygroundSAE(
        "SASRec block 0, ReLU+L1 (P1)", r.dataset.name, "sasrec", r.site, r.model, r.sae, r.split
    )


def p2_entry(
    dataset: Any,
    model: str = "bprmf",
    *,
    config: Mapping[str, Any] | None = None,
    k: int = 8,
    scale: int = 16,
    lr: float = 1e-3,
    batch_users: int = 16,
    weighting: str = "users",
    epochs: int = 50,
    patience: int = 10,
    seed: int = 0,
    device: str = "cpu",
) -> PlaygroundSAE:
    """P2's TopK SAE (papers.md §2.3–2.5) on ``model``'s user representation, P2's split, trained as the P2
    chapter trains it (same defaults: lr 1e-3, 16 users per batch, one sample per user, ≤ 50 epochs with
    dev NDCG@5 selection), so the chapter's cache entries hit."""
    from recsae_core.papers import p2
    from recsae_core.viz import model_label

    bm = p2.p2_base_models(
        dataset, [model], {model: dict(config)} if config else None, seed=seed, device=device, progress=False
    )
    if model not in bm.results:
        raise ValueError(f"P2's {model} is not trained on {bm.dataset}: {bm.skipped.get(model)}")
    rec = bm.results[model].model
    site = p2.p2_site(rec)
    rows = p2.p2_train_activations(rec, site, bm.split, weighting=weighting, device=device, progress=False)
    tc = p2.p2_train_config(
        lr=lr,
        batch_size=batch_users,
        rows_per_sample=p2.p2_rows_per_sample(rows),
        epoch_fraction=p2.p2_epoch_fraction(rows, bm.split),
        epochs=epochs,
        patience=patience,
    )
    res = p2.train_p2_sae(
        rec, site, bm.split, rows, k, train_config=tc, scale=scale, seed=seed, device=device, progress=False
    )
    return PlaygroundSAE(
        f"{model_label(model)} user, TopK k={k} (P2)", bm.dataset, model, site, rec, res.sae, bm.split
    )


# ----------------------------------------------------------------------------------- descriptions
def describe_features(
    model: Recommender,
    site: str,
    sae: SparseAutoencoder,
    split: Split,
    part: str = "test",
    *,
    n_boot: int = 200,
    seed: int = 0,
    device: str | torch.device | None = None,
) -> pd.DataFrame:
    """Every feature's metadata description and P2 confidence (papers.md §2.7; the feature explorer's
    protocol: :func:`recsae_core.concepts.build_pool` on the ``part`` users, the metadata explainer, P2's cases).

    Returns one row per feature: ``feature``, ``description`` (``""`` when it never reaches level 5),
    ``confidence`` (NaN likewise), ``density`` (share of the case rows where it fires), ``max_act``, and
    from its decoder atom (:func:`label_selectivity`) ``steers`` (the label whose items it raises most
    among the items it raises most) and ``selectivity`` (that lift in share).
    """
    from recsae_core import concepts as C

    d = C.describe_sae(model, site, sae, split, part, n_boot=n_boot, seed=seed, device=device)
    pool, scores = d.pool, d.scores
    by = scores.set_index("latent") if len(scores) else None
    M = pool.acts.shape[1]
    desc = [""] * M
    conf = [float("nan")] * M
    if by is not None:
        for j, row in by.iterrows():
            desc[int(j)] = str(row["description"])
            conf[int(j)] = float(row["confidence"])
    return pd.DataFrame(
        {
            "feature": np.arange(M),
            "description": desc,
            "confidence": conf,
            "density": (pool.acts > 0).double().mean(0).numpy(),
            "max_act": pool.acts.max(0).values.clamp_min(0).numpy(),
        }
    ).join(label_selectivity(model, sae, split.dataset.item_labels, split.dataset.label_names))


def label_selectivity(
    model: Recommender,
    sae: SparseAutoencoder,
    item_labels: Any,
    label_names: Sequence[str],
    *,
    n_top: int = 50,
    drop: Sequence[str] = ("unknown", "(no genres listed)"),
) -> pd.DataFrame:
    """Which label each feature steers towards, from its decoder atom alone (P1 §1.7's direct path): the
    ``n_top`` items whose score one unit of the feature raises most (:func:`recsae_core.sae_eval.logit_effects`
    with the model's output item table) and, per label, their share carrying it minus the catalogue's share
    (the lift steering can bring into a top-k list). For a user-vector site of a dot-product model (BPR-MF)
    the effect is exact; for SASRec block 0 it ignores the later block and the final LayerNorm. P1's
    placeholder labels (``drop``, papers.md §1.4) and labels no item carries are skipped.

    Returns one row per feature: ``steers`` (label name of the largest lift) and ``selectivity`` (the lift).
    """
    from recsae_core.explorer import output_table
    from recsae_core.sae_eval import logit_effects

    effect_MI = logit_effects(sae, output_table(model))
    lab_IG = torch.as_tensor(np.asarray(item_labels, dtype=np.float64))
    if lab_IG.ndim != 2 or lab_IG.shape[1] != len(label_names):
        raise ValueError(f"item_labels must be (n_items, {len(label_names)}), got {tuple(lab_IG.shape)}")
    ok = (lab_IG.sum(0) > 0) & torch.tensor([n not in set(drop) for n in label_names])
    if not bool(ok.any()):
        raise ValueError(f"label_selectivity: no label left (all empty or in drop={list(drop)})")
    top_MN = torch.topk(effect_MI, min(n_top, effect_MI.shape[1]), dim=1).indices
    lift_MG = (lab_IG[top_MN].mean(1) - lab_IG.mean(0)).masked_fill(~ok, float("-inf"))
    best, g = lift_MG.max(1)
    return pd.DataFrame({"steers": [label_names[i] for i in g.tolist()], "selectivity": best.numpy()})


def pick_features(catalog: pd.DataFrame, n: int, n_label: int | None = None) -> list[int]:
    """The ``n`` features the static grid holds, live ones only (firing on some evaluation user):

    1. ``n_label`` (default ``n // 2``) **label features**: for each label, the live feature whose decoder
       atom lifts it most among the items it raises most (``steers``/``selectivity`` of
       :func:`describe_features`; P1 §1.7-1.8: a feature steers towards a genre as much as its atom lifts
       that genre's items), labels taken by decreasing selectivity, one feature per label;
    2. then the best-described live features (a description naming an attribute), by confidence then
       density; then any live feature by density to fill up.
    """
    n_label = n // 2 if n_label is None else n_label
    live = catalog[catalog["density"] > 0]
    chosen: list[int] = []
    if n_label > 0 and "steers" in live:
        best = (
            live.sort_values(["selectivity", "feature"], ascending=[False, True])
            .drop_duplicates("steers")
            .head(n_label)
        )
        chosen += [int(f) for f in best["feature"]]
    rest = live[~live["feature"].isin(chosen)]
    named = rest[(rest["description"] != "") & ~rest["description"].str.startswith(NO_DESCRIPTION)]
    first = named.sort_values(["confidence", "density", "feature"], ascending=[False, False, True])
    other = rest[~rest["feature"].isin(first["feature"])].sort_values(
        ["density", "feature"], ascending=[False, True]
    )
    chosen += [int(f) for f in pd.concat([first, other])["feature"]]
    return chosen[:n]


# ---------------------------------------------------------------------------------------- groups
def user_groups(
    split: Split,
    users: Sequence[int],
    part: str = "test",
    *,
    heavy_labels: Sequence[str] | None = None,
    heavy_share: float = 0.4,
    history_quantile: float = 0.25,
) -> dict[str, np.ndarray]:
    """Named groups of ``users`` (sorted user indices): all of them, users heavy in a label (at least
    ``heavy_share`` of their ``Split.history_for(part)`` items carry it), new users (history length in the
    shortest ``history_quantile``) and long-history users (the longest). Empty groups are left out."""
    ds = split.dataset
    users = np.asarray(sorted(int(u) for u in users), dtype=np.int64)
    hist = split.history_for(part)
    hist = hist[hist["user"].isin(users)]
    lab = np.asarray(ds.item_labels, dtype=bool)
    n_hist = hist.groupby("user").size().reindex(users, fill_value=0).to_numpy()
    per_label = (
        pd.DataFrame(lab[hist["item"].to_numpy()], columns=range(lab.shape[1]))
        .assign(user=hist["user"].to_numpy())
        .groupby("user")
        .sum()
        .reindex(users, fill_value=0)
        .to_numpy()
    )  # (U, G) labelled history items per user
    share = per_label / np.maximum(n_hist, 1)[:, None]
    if heavy_labels is None:
        order = np.argsort(-per_label.sum(0), kind="stable")
        heavy_labels = [ds.label_names[g] for g in order[:2]]
    unknown = [h for h in heavy_labels if h not in ds.label_names]
    if unknown:
        raise KeyError(f"heavy_labels {unknown} are not labels of {ds.name}: {ds.label_names}")
    groups: dict[str, np.ndarray] = {f"all {len(users)} sampled users": users}
    for name in heavy_labels:
        sel = users[share[:, ds.label_names.index(name)] >= heavy_share]
        groups[f"heavy in {name} (≥ {heavy_share:.0%} of history)"] = sel
    lo, hi = np.quantile(n_hist, [history_quantile, 1 - history_quantile])
    groups[f"new users (≤ {lo:.0f} history items)"] = users[n_hist <= lo]
    groups[f"long-history users (≥ {hi:.0f} history items)"] = users[n_hist >= hi]
    return {k: v for k, v in groups.items() if len(v)}


# ------------------------------------------------------------------------------------------ grid
@dataclass
class SteeringGrid:
    """Steering outcomes of one feature over the α grid (:func:`steering_grid`).

    Attributes:
        feature, alphas: the steered feature and the strengths (rows of every array).
        users: ``(C,)`` the user of each evaluation case; ``targets``: ``(C,)`` its held-out item.
        top: ``(A, C, k)`` top-k items per α and case (seen items excluded).
        ranks: ``(A, C)`` 0-based rank of the target (seen items masked, ``ties`` rule).
        item_labels: ``(n_items, G)`` bool; ``label_names``.
    """

    feature: int
    alphas: list[float]
    users: np.ndarray
    targets: np.ndarray
    top: np.ndarray
    ranks: np.ndarray
    item_labels: np.ndarray
    label_names: list[str]
    k: int = field(init=False)

    def __post_init__(self) -> None:
        self.k = int(self.top.shape[2])

    def _cases(self, users: Sequence[int] | None) -> np.ndarray:
        if users is None:
            return np.arange(len(self.users))
        rows = np.nonzero(np.isin(self.users, np.asarray(users, dtype=np.int64)))[0]
        if len(rows) == 0:
            raise ValueError("none of the given users is in this grid")
        return rows

    def ndcg(self, users: Sequence[int] | None = None) -> np.ndarray:
        """``(A,)`` mean NDCG@k over the cases of ``users`` (all when None)."""
        r = self.ranks[:, self._cases(users)].astype(np.float64)
        return np.where(r < self.k, 1.0 / np.log2(r + 2.0), 0.0).mean(1)

    def hr(self, users: Sequence[int] | None = None) -> np.ndarray:
        """``(A,)`` mean HR@k over the cases of ``users``."""
        return (self.ranks[:, self._cases(users)] < self.k).mean(1)

    def shares(self, users: Sequence[int] | None = None) -> np.ndarray:
        """``(A, G)`` mean over cases of the share of the top-k carrying each label (P1's genre share)."""
        top = self.top[:, self._cases(users)]  # (A, C', k)
        return self.item_labels[top].mean(axis=(1, 2))

    def changes(self, a: int, users: Sequence[int] | None = None, n: int = 8) -> tuple[list, list]:
        """Items entering and leaving the most top-k lists at α index ``a`` (vs α = 0), as ``[item, lists]``
        pairs, most first (ties by item id); one list per user."""
        base = self.alphas.index(0.0)
        cases = self._cases(users)
        _, first = np.unique(self.users[cases], return_index=True)  # one list per user
        entered: dict[int, int] = {}
        left: dict[int, int] = {}
        for c in cases[first]:
            b, s = set(self.top[base, c].tolist()), set(self.top[a, c].tolist())
            for i in s - b:
                entered[i] = entered.get(i, 0) + 1
            for i in b - s:
                left[i] = left.get(i, 0) + 1

        def most(d: dict[int, int]) -> list[list[int]]:
            return [[int(i), int(c)] for i, c in sorted(d.items(), key=lambda kv: (-kv[1], kv[0]))[:n]]

        return most(entered), most(left)

    def raised_label(self) -> int:
        """The label whose share rises most from α = 0 to the largest α (the feature's label as steering
        shows it; ties: the first)."""
        s = self.shares()
        return int(np.argmax(s[-1] - s[self.alphas.index(0.0)]))


@torch.no_grad()
def steering_grid(
    model: Recommender,
    site: str,
    sae: SparseAutoencoder,
    split: Split,
    feature: int,
    alphas: Sequence[float],
    *,
    users: Sequence[int] | None = None,
    part: str = "test",
    k: int = 10,
    item_labels: Any = None,
    label_names: Sequence[str] | None = None,
    keep_error: bool = True,
    positions: str = "last",
    ties: str = "optimistic",
    batch_size: int = 512,
    device: str | torch.device | None = None,
) -> SteeringGrid:
    """Add each α of ``alphas`` to ``feature`` (error term kept: α = 0 is the base model) and record, for
    every evaluation case of ``part`` (restricted to ``users``), the top-k list and the target's rank — the
    same cases, masking and tie rule as :func:`recsae_core.steer.steering_sweep` (P1 §1.8), kept per case
    so any group's shares and NDCG are means over its cases (:class:`SteeringGrid`).

    ``item_labels`` / ``label_names`` default to the dataset's labels.
    """
    ds = split.dataset
    lab = np.asarray(ds.item_labels if item_labels is None else item_labels, dtype=bool)
    if lab.ndim == 1:
        lab = lab[:, None]
    names = list(ds.label_names if label_names is None else label_names)
    if len(names) != lab.shape[1]:
        raise ValueError(f"{len(names)} label names for {lab.shape[1]} labels")
    if not 0 <= int(feature) < sae.n_latents:
        raise ValueError(f"feature {feature} out of range: the SAE has {sae.n_latents} latents")
    dev = resolve_device(device)
    model.eval().to(dev)
    sae.eval().to(dev)
    data = eval_cases(model, split, part, None if users is None else np.asarray(users, dtype=np.int64))
    tops, ranks = [], []
    for a in alphas:
        fn = steered_scores_fn(
            model, site, sae, Steer(int(feature), float(a)), keep_error=keep_error, positions=positions
        )
        t_a, r_a = [], []
        for eb in data.batches(batch_size):
            scores_BI = fn(eb.batch.to(dev)).float()
            seen = (eb.seen_rows, eb.seen_items)
            t_a.append(metrics.top_k_items(scores_BI, k, seen).cpu())
            tg = eb.targets.to(dev)
            r_a.append(target_ranks(mask_seen(scores_BI.clone(), tg, seen), tg, ties).cpu())
        tops.append(torch.cat(t_a))
        ranks.append(torch.cat(r_a))
    return SteeringGrid(
        int(feature),
        [float(a) for a in alphas],
        data.users.numpy().copy(),
        data.targets.numpy().copy(),
        torch.stack(tops).numpy(),
        torch.stack(ranks).numpy(),
        lab,
        names,
    )


# ------------------------------------------------------------------------------------ page data
def _r(x: float, nd: int = 4) -> float | None:
    x = float(x)
    return None if not math.isfinite(x) else round(x, nd)


def _sae_data(entry: PlaygroundSAE, cfg: PlaygroundConfig, device: Any) -> dict[str, Any]:
    from recsae_core.viz import model_label

    split = entry.split
    ds = split.dataset
    rng = np.random.default_rng(cfg.seed)
    cand = np.unique(split.targets(entry.part)["user"].to_numpy(np.int64))
    sample = np.sort(rng.choice(cand, size=min(cfg.n_users, len(cand)), replace=False))
    shown = np.sort(rng.choice(sample, size=min(cfg.n_shown_users, len(sample)), replace=False))
    groups = user_groups(
        split,
        sample,
        entry.part,
        heavy_labels=cfg.heavy_labels,
        heavy_share=cfg.heavy_share,
        history_quantile=cfg.history_quantile,
    )
    catalog = entry.catalog
    if catalog is None:
        catalog = describe_features(entry.model, entry.site, entry.sae, split, entry.part, device=device)
        entry.catalog = catalog
    feats = pick_features(catalog, cfg.n_features)
    if not feats:
        raise ValueError(f"{entry.name}: no live feature to steer (every feature is dead on the test users)")
    items_used: dict[int, int] = {}

    def ref(i: int) -> int:
        return items_used.setdefault(int(i), len(items_used))

    hist = split.history_for(entry.part)
    ids = ds.users["user_id"].to_numpy()
    user_rows = []
    for u in shown:
        h = hist[hist["user"] == u]
        if "timestamp" in h:
            h = h.sort_values("timestamp", kind="stable")
        user_rows.append(
            {"id": str(ids[u]), "n_hist": len(h), "recent": [ref(i) for i in h["item"].to_numpy()[-5:][::-1]]}
        )
    cards = []
    by = catalog.set_index("feature")
    for j in feats:
        unit = float(by.loc[j, "max_act"]) if cfg.alpha_unit == "max_act" else 1.0
        g = steering_grid(
            entry.model,
            entry.site,
            entry.sae,
            split,
            j,
            [a * unit for a in cfg.alphas],
            users=sample,
            part=entry.part,
            k=cfg.k,
            device=device,
        )
        grp = []
        for members in groups.values():
            changes = [g.changes(a, members, cfg.n_changes) for a in range(len(g.alphas))]
            grp.append(
                {
                    "ndcg": [_r(v) for v in g.ndcg(members)],
                    "hr": [_r(v) for v in g.hr(members)],
                    "share": [[_r(v, 3) for v in row] for row in g.shares(members)],
                    "entered": [[[ref(i), c] for i, c in ent] for ent, _ in changes],
                    "left": [[[ref(i), c] for i, c in lft] for _, lft in changes],
                }
            )
        per_user = []
        for u in shown:
            c = int(np.nonzero(g.users == u)[0][0])  # the user's first case gives their list
            per_user.append(
                {
                    "top": [[ref(i) for i in g.top[a, c]] for a in range(len(g.alphas))],
                    "ndcg": [_r(v) for v in g.ndcg([u])],
                    "target": [ref(t) for t in np.unique(g.targets[g.users == u])],
                }
            )
        row = by.loc[j]
        cards.append(
            {
                "id": int(j),
                "description": row["description"] or "(no description: never reaches level 5)",
                "confidence": _r(row["confidence"], 3),
                "density": _r(row["density"], 4),
                "unit": _r(unit, 4),
                "steers": str(row["steers"]),
                "selectivity": _r(row["selectivity"], 4),
                "label": g.raised_label(),
                "groups": grp,
                "users": per_user,
            }
        )
    inv = sorted(items_used, key=items_used.get)
    lab = np.asarray(ds.item_labels, dtype=bool)
    return {
        "name": entry.name,
        "dataset": entry.dataset,
        "model": model_label(entry.model_name),
        "site": entry.site,
        "n_latents": int(entry.sae.n_latents),
        "n_live": int((catalog["density"] > 0).sum()),
        "groups": [{"name": n, "n": len(v)} for n, v in groups.items()],
        "users": user_rows,
        "items": [str(t) for t in ds.items["title"].to_numpy()[inv]],
        "item_labels": [np.nonzero(lab[i])[0].tolist() for i in inv],
        "features": cards,
    }


def playground_data(
    entries: Sequence[PlaygroundSAE],
    config: PlaygroundConfig | None = None,
    *,
    device: str | torch.device | None = None,
) -> dict[str, Any]:
    """The static playground's JSON (module docstring): per SAE, its sampled users and groups, and for each
    sampled feature (:func:`pick_features`) the label shares, NDCG@k and HR@k of every group and the top-k
    of every shown user at every α of ``config.alphas``; item ids index the SAE's ``items``.

    Label names are per dataset (``label_names`` keyed by dataset name).
    """
    cfg = config or PlaygroundConfig()
    if not entries:
        raise ValueError("playground_data needs at least one PlaygroundSAE")
    saes = [_sae_data(e, cfg, device) for e in entries]
    return {
        "k": cfg.k,
        "alphas": list(cfg.alphas),
        "alpha_unit": cfg.alpha_unit,
        "label_names": {e.dataset: list(e.split.dataset.label_names) for e in entries},
        "saes": saes,
    }


def grid_summary(data: dict[str, Any], group: int = 0) -> pd.DataFrame:
    """One row per sampled feature of :func:`playground_data`: the label its decoder atom favours (``atom
    steers``), the label steering raises most at the largest α (``label``), that label's share of the top-k
    and NDCG@k at α = 0 and at the largest α, for group ``group`` (0 = all sampled users)."""
    alphas = data["alphas"]
    a0, a1 = alphas.index(0.0), len(alphas) - 1
    rows = []
    for s in data["saes"]:
        names = data["label_names"][s["dataset"]]
        for f in s["features"]:
            g = f["groups"][group]
            lab = f["label"]
            rows.append(
                {
                    "SAE": s["name"],
                    "feature": f["id"],
                    "description": f["description"],
                    "confidence": f["confidence"],
                    "atom steers": f["steers"],
                    "label": names[lab],
                    "share α=0": g["share"][a0][lab],
                    f"share α={alphas[a1]:g}": g["share"][a1][lab],
                    "NDCG α=0": g["ndcg"][a0],
                    f"NDCG α={alphas[a1]:g}": g["ndcg"][a1],
                }
            )
    return pd.DataFrame(rows)


def playground_summary(entries: Sequence[PlaygroundSAE]) -> pd.DataFrame:
    """One row per SAE: dataset, split, model site, latents, live latents (firing on a test user), latents
    with a description naming an attribute, and test users (needs each entry's ``catalog``)."""
    rows = []
    for e in entries:
        if e.catalog is None:
            raise ValueError(f"{e.name}: catalog is None; fill it with describe_features first")
        cat = e.catalog
        named = (cat["description"] != "") & ~cat["description"].str.startswith(NO_DESCRIPTION)
        rows.append(
            {
                "SAE": e.name,
                "dataset": e.dataset,
                "split": e.split.name,
                "site": e.site,
                "latents": int(e.sae.n_latents),
                "live": int((cat["density"] > 0).sum()),
                "described": int(named.sum()),
                "test users": int(e.split.targets(e.part)["user"].nunique()),
            }
        )
    return pd.DataFrame(rows)
