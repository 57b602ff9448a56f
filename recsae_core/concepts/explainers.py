"""The describe/simulate protocol (P2 §2.7, OpenAI's explain → simulate → score) and the built-in metadata
explainer, which needs no language model.

**Protocol** (:class:`Explainer`): ``describe(cases) -> Description`` writes a description from a latent's
describe cases; ``simulate(description, case) -> level`` predicts the latent's level (0–10) on a case from the
description alone, or ``None`` when the explainer's answer cannot be read (see :mod:`.scores` for how that
counts). Any explainer with these two methods plugs into the scorers: :class:`MetadataExplainer` here, the
optional language-model one in :mod:`.llm`.

**Metadata explainer.** Every case row gets binary attributes (:func:`attribute_table`): the labels of its
item (genres, tags), its decade, its popularity band (share of training interactions, by rank), the labels
that make up most of the user's recent history, and the user's gender and age band where the dataset has
them (ML-100k, ML-1M). :func:`enrichment` compares a set of rows with the whole pool (for item sites the
pool is the catalogue; for user rows it is every user's case — comparing a user's top-1 with the catalogue
would call every latent "popular"): rate in the rows, background rate, lift, smoothed log-odds ratio and a
one-sided hypergeometric test (the rows are a draw without replacement from the pool), Bonferroni-adjusted
over the attributes. Of the attributes that are over-represented (lift >= ``min_lift``), present in at least
``min_rate`` of the rows and significant (p < ``alpha``; ``correction="bonferroni"`` tests the adjusted p),
the description keeps the one that best separates the latent's cases from the rest — the largest estimated
balanced accuracy, (rate + 1 − background) / 2, the quantity P2's confidence scores on held-out cases — and,
when present in >= 80% of the rows too, a second one from another group. (Ranking by log-odds instead picks
the rarest attribute, which three of five describe cases happen to share and held-out cases rarely do;
with Bonferroni over ~40–100 attributes, five cases almost never pass: on Last.fm BPR-MF, k = 8, 92% of the
latents got no description.) Its predicate simulates: level = round(10 × share of the description's
attributes the case has), so a case is "active" (> 5) when it has more than half of them. Deterministic (no
sampling, ties by attribute order). The shuffled-label control of :func:`recsae_core.papers.p2.shuffled_table`
measures how often such a description scores high by chance.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import numpy as np
import pandas as pd
import torch
from scipy.stats import hypergeom

from recsae_core.concepts.cases import Case, CasePool
from recsae_core.data.dataset import RecDataset, Split

__all__ = [
    "AGE_BANDS",
    "AttributeTable",
    "Description",
    "Explainer",
    "MetadataExplainer",
    "attribute_table",
    "enrichment",
    "popularity_bands",
]

#: ML-1M's age codes (1, 18, 25, 35, 45, 50, 56) as bands; ML-100k ages in years fall in the same bands.
AGE_BANDS: tuple[tuple[int, str], ...] = (
    (0, "under 18"),
    (18, "18–24"),
    (25, "25–34"),
    (35, "35–44"),
    (45, "45–49"),
    (50, "50–55"),
    (56, "56+"),
)
#: popularity bands by the item's rank among all items (share of the catalogue, most popular first).
POPULARITY_BANDS: tuple[tuple[float, str], ...] = (
    (0.01, "top 1% most popular"),
    (0.10, "top 1–10% popular"),
    (0.50, "mid-popularity (top 10–50%)"),
    (1.00, "long-tail (bottom 50%)"),
)


@dataclass(frozen=True)
class Description:
    """A latent's description.

    Attributes:
        text: one sentence for a reader (and for a language model to simulate with).
        attributes: the metadata attributes the predicate checks (empty for language-model descriptions).
        evidence: one dict per attribute considered (:func:`enrichment` columns), most over-represented first.
        explainer: who wrote it (``"metadata"``, ``"llm:<model>"``).
    """

    text: str
    attributes: tuple[str, ...] = ()
    evidence: tuple[dict[str, Any], ...] = ()
    explainer: str = "metadata"


@runtime_checkable
class Explainer(Protocol):
    """What the scorers need from an explainer (module docstring)."""

    name: str

    def describe(self, cases: Sequence[Case]) -> Description: ...

    def simulate(self, description: Description, case: Case) -> int | None: ...


@dataclass
class AttributeTable:
    """``(N, K)`` bool attributes of the pool's rows, with each attribute's group and reader's phrase."""

    values: torch.Tensor
    names: list[str]
    groups: list[str]
    phrases: list[str]
    index: dict[str, int] = field(init=False)

    def __post_init__(self) -> None:
        if self.values.ndim != 2 or self.values.shape[1] != len(self.names):
            raise ValueError(f"values must be (N, {len(self.names)}), got {tuple(self.values.shape)}")
        if not len(self.names) == len(self.groups) == len(self.phrases):
            raise ValueError("names, groups and phrases must have one entry per attribute")
        self.values = self.values.bool()
        self.index = {n: i for i, n in enumerate(self.names)}


def popularity_bands(item_counts: np.ndarray) -> np.ndarray:
    """``(n_items,)`` index into :data:`POPULARITY_BANDS` by popularity rank (ties by lower item id)."""
    counts = np.asarray(item_counts)
    order = np.argsort(-counts, kind="stable")
    rank_share = np.empty(len(counts))
    rank_share[order] = (np.arange(len(counts)) + 1) / len(counts)
    cuts = np.array([c for c, _ in POPULARITY_BANDS])
    return np.minimum(np.searchsorted(cuts, rank_share, side="left"), len(cuts) - 1)


def _nouns(ds: RecDataset) -> tuple[str, str]:
    name = ds.name.lower()
    if name.startswith("ml-") or "movielens" in name:
        return "genre", "movie"
    if "lastfm" in name or "last.fm" in name:
        return "tag", "artist"
    return "label", "item"


def _a(word: str) -> str:
    """The indefinite article for ``word`` ("an Animation movie", "a Western movie")."""
    return "an" if word[:1].lower() in "aeiou" else "a"


def attribute_table(pool: CasePool, split: Split, *, history_majority: float = 0.5) -> AttributeTable:
    """The metadata attributes of every pool row (module docstring); popularity from ``split.train``."""
    ds = split.dataset
    label_word, noun = _nouns(ds)
    user_rows = pool.kind == "user"
    items = pool.items.numpy()
    cols: list[np.ndarray] = []
    names: list[str] = []
    groups: list[str] = []
    phrases: list[str] = []

    def add(col: np.ndarray, name: str, group: str, phrase: str) -> None:
        if col.any():
            cols.append(col.astype(bool))
            names.append(name)
            groups.append(group)
            phrases.append(phrase)

    lab = np.asarray(ds.item_labels, dtype=bool)
    for g, lname in enumerate(ds.label_names):
        what = (
            f"users whose top recommendation is {_a(lname)} {lname} {noun}"
            if user_rows
            else f"{lname} {noun}s"
        )
        add(lab[items, g], f"{label_word}: {lname}", label_word, what)
    years = pd.to_numeric(ds.items["year"], errors="coerce").to_numpy(dtype=float)
    if np.isfinite(years).any():
        dec = np.floor(years[items] / 10) * 10
        for d in np.unique(dec[np.isfinite(dec)]):
            what = f"a {noun} from the {int(d)}s"
            add(
                dec == d,
                f"decade: {int(d)}s",
                "decade",
                f"users whose top recommendation is {what}" if user_rows else f"{noun}s from the {int(d)}s",
            )
    counts = np.bincount(split.train["item"].to_numpy(), minlength=ds.n_items)
    band = popularity_bands(counts)[items]
    for b, (_, bname) in enumerate(POPULARITY_BANDS):
        what = (
            f"users whose top recommendation is {_a(bname)} {bname} {noun}"
            if user_rows
            else f"{bname} {noun}s"
        )
        add(band == b, f"popularity: {bname}", "popularity", what)
    if user_rows and pool.history.shape[1]:
        h = pool.history.numpy()
        valid = h >= 0
        hl = lab[np.where(valid, h, 0)] & valid[..., None]  # (N, H, G)
        share = hl.sum(1) / np.maximum(valid.sum(1), 1)[:, None]
        for g, lname in enumerate(ds.label_names):
            add(
                share[:, g] > history_majority,
                f"history: mostly {lname}",
                "history",
                f"users whose recent {noun}s are mostly {lname}",
            )
    if user_rows and len(ds.users):
        users = pool.users.numpy()
        meta = ds.users
        if "gender" in meta.columns:
            gender = meta["gender"].astype(str).to_numpy()[users]
            for gv, word in (("F", "female"), ("M", "male")):
                add(gender == gv, f"gender: {word}", "gender", f"{word} users")
        if "age" in meta.columns:
            age = pd.to_numeric(meta["age"], errors="coerce").to_numpy(dtype=float)[users]
            starts = np.array([s for s, _ in AGE_BANDS])
            idx = np.searchsorted(starts, age, side="right") - 1
            for b, (_, bname) in enumerate(AGE_BANDS):
                add((idx == b) & np.isfinite(age), f"age: {bname}", "age", f"users aged {bname}")
    values = torch.from_numpy(np.stack(cols, 1)) if cols else torch.zeros(len(pool), 0, dtype=torch.bool)
    return AttributeTable(values, names, groups, phrases)


def enrichment(table: AttributeTable, rows: Sequence[int] | torch.Tensor) -> pd.DataFrame:
    """Over-representation of each attribute among ``rows`` against the whole pool (module docstring).

    Columns: ``attribute``, ``group``, ``count`` (rows having it), ``n``, ``rate``, ``background``,
    ``lift``, ``log_odds`` (0.5-smoothed log odds ratio, rows vs pool), ``p_value`` (one-sided
    hypergeometric), ``p_adjusted`` (Bonferroni over the attributes), ``balanced_accuracy`` ((rate + 1 −
    background) / 2: the attribute as a classifier of these rows against the pool). Sorted by ``log_odds``,
    descending.
    """
    idx = torch.as_tensor(rows, dtype=torch.int64)
    A = table.values
    N, K = A.shape
    n = len(idx)
    if n == 0:
        raise ValueError("enrichment needs at least one row")
    total = A.sum(0).double().numpy()
    count = A[idx].sum(0).double().numpy()
    rate, bg = count / n, total / N
    odds_in = (count + 0.5) / (n - count + 0.5)
    odds_bg = (total + 0.5) / (N - total + 0.5)
    p = hypergeom.sf(count - 1, N, total, n)
    out = pd.DataFrame(
        {
            "attribute": table.names,
            "group": table.groups,
            "count": count.astype(int),
            "n": n,
            "rate": rate,
            "background": bg,
            "lift": np.where(bg > 0, rate / np.maximum(bg, 1e-12), 0.0),
            "log_odds": np.log(odds_in / odds_bg),
            "p_value": p,
            "p_adjusted": np.minimum(p * max(K, 1), 1.0),
            "balanced_accuracy": (rate + 1.0 - bg) / 2.0,
        }
    )
    return out.sort_values(["log_odds", "attribute"], ascending=[False, True], kind="stable").reset_index(
        drop=True
    )


class MetadataExplainer:
    """Describes a latent by the metadata attributes over-represented among its cases (module docstring).

    Args:
        table: :func:`attribute_table` of the pool the cases come from.
        alpha: significance level of the one-sided test; ``correction``: ``"none"`` (default: each attribute's
            own p, the choice being checked on held-out cases and against the shuffled-label control) or
            ``"bonferroni"`` (over the attributes); ``min_lift``: smallest lift kept; ``min_rate``: smallest
            share of the describe cases that must have the attribute; ``max_attributes``: 1 or 2.
    """

    name = "metadata"

    def __init__(
        self,
        table: AttributeTable,
        *,
        alpha: float = 0.05,
        correction: str = "none",
        min_lift: float = 1.5,
        min_rate: float = 0.5,
        max_attributes: int = 2,
    ) -> None:
        if not 0 < alpha < 1 or min_lift < 1 or not 0 < min_rate <= 1 or max_attributes not in (1, 2):
            raise ValueError(
                "MetadataExplainer needs 0 < alpha < 1, min_lift >= 1, 0 < min_rate <= 1, max_attributes in {1, 2}"
            )
        if correction not in ("none", "bonferroni"):
            raise ValueError(
                f"MetadataExplainer correction must be 'none' or 'bonferroni', got {correction!r}"
            )
        self.table, self.alpha, self.min_lift, self.min_rate = table, alpha, min_lift, min_rate
        self.correction, self.max_attributes = correction, max_attributes

    def describe(self, cases: Sequence[Case]) -> Description:
        rows = [c.row for c in cases]
        ev = enrichment(self.table, rows)
        p = ev["p_adjusted"] if self.correction == "bonferroni" else ev["p_value"]
        ok = ev[(p < self.alpha) & (ev["lift"] >= self.min_lift) & (ev["rate"] >= self.min_rate)]
        ok = ok.sort_values(["balanced_accuracy", "attribute"], ascending=[False, True], kind="stable")
        evidence = tuple(ev.head(8).to_dict("records"))
        if ok.empty:
            return Description(
                "No metadata attribute stands out among its top cases.", (), evidence, self.name
            )
        chosen = [ok.iloc[0]]
        if self.max_attributes > 1:
            more = ok[(ok["group"] != chosen[0]["group"]) & (ok["rate"] >= 0.8)]
            if not more.empty:
                chosen.append(more.iloc[0])
        phrases = [self.table.phrases[self.table.index[r["attribute"]]] for r in chosen]
        first = chosen[0]
        text = (
            f"Fires on {' and on '.join(phrases)} ({int(first['count'])}/{int(first['n'])} of its top cases "
            f"vs {first['background']:.0%} of all)."
        )
        return Description(text, tuple(r["attribute"] for r in chosen), evidence, self.name)

    def simulate(self, description: Description, case: Case) -> int | None:
        if not description.attributes:
            return 0
        missing = [a for a in description.attributes if a not in self.table.index]
        if missing:
            raise KeyError(f"the description names attributes this table lacks: {missing}")
        have = self.table.values[case.row, [self.table.index[a] for a in description.attributes]]
        return round(10 * float(have.double().mean()))
