"""Plots and tables of the datasets chapter (statistics, interaction counts, ratings over time, labels)."""

from __future__ import annotations

from typing import Any

__all__ = [
    "k_core",
    "label_frequency_table",
    "plot_interaction_counts",
    "plot_label_frequencies",
    "plot_ratings_and_time",
    "popularity_concentration",
    "protocol_variants",
    "stats_table",
]


# ------------------------------------------------------------------------------------------ datasets chapter

_STAT_LABELS = {
    "n_users": "users",
    "n_items": "items (with at least one interaction)",
    "n_items_metadata": "items in the metadata file",
    "n_interactions": "interactions",
    "n_unique_pairs": "distinct (user, item) pairs",
    "density": "density (interactions / users × items)",
    "has_timestamps": "timestamps",
    "time_start": "first interaction",
    "time_end": "last interaction",
    "rating_kind": "rating column",
    "n_labels": "labels (genres / tags)",
    "items_with_label": "items with at least one label",
    "per_user_min": "interactions per user: min",
    "per_user_median": "interactions per user: median",
    "per_user_mean": "interactions per user: mean",
    "per_user_max": "interactions per user: max",
    "per_item_min": "interactions per item: min",
    "per_item_median": "interactions per item: median",
    "per_item_mean": "interactions per item: mean",
    "per_item_max": "interactions per item: max",
}


def _fmt(v: Any) -> str:
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, int):
        return f"{v:,}"
    if isinstance(v, float):
        return f"{v:.4f}" if abs(v) < 1 else f"{v:,.1f}"
    return str(v)


def stats_table(stats: dict[str, Any]) -> Any:
    """``dataset_stats(...)`` as a two-column table (statistic, value) with readable names and numbers."""
    import pandas as pd

    rows = [(_STAT_LABELS.get(k, k.replace("_", " ")), _fmt(v)) for k, v in stats.items() if k != "name"]
    return pd.DataFrame(rows, columns=["statistic", "value"]).set_index("statistic")


def _log_bins(counts: Any, n: int = 40) -> Any:
    import numpy as np

    hi = max(int(counts.max()), 2)
    return np.unique(np.round(np.logspace(0, np.log10(hi + 1), n)).astype(int))


def plot_interaction_counts(ds: Any) -> Any:
    """Two panels: histograms of interactions per user and per item, logarithmic on both axes."""
    import matplotlib.pyplot as plt
    import numpy as np

    from recsae_core.data.stats import interaction_counts

    per_user, per_item = interaction_counts(ds)
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    for ax, counts, who, colour in ((axes[0], per_user, "user", "C0"), (axes[1], per_item, "item", "C1")):
        counts = counts[counts > 0]
        ax.hist(counts, bins=_log_bins(counts), color=colour, alpha=0.85)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.axvline(np.median(counts), color="k", ls="--", lw=1, label=f"median {np.median(counts):g}")
        ax.set_xlabel(f"interactions per {who}")
        ax.set_ylabel(f"number of {who}s")
        ax.set_title(f"{len(counts):,} {who}s")
        ax.legend(loc="best")  # Last.fm users pile up at the 50-artist cap on the right
    fig.suptitle(f"{ds.name}: how interactions are spread (log–log)")
    return fig


def popularity_concentration(ds: Any, shares: tuple[float, ...] = (0.01, 0.05, 0.1, 0.2, 0.5)) -> Any:
    """Share of all interactions that go to the most popular ``share`` of items (a long-tail summary)."""
    import numpy as np
    import pandas as pd

    from recsae_core.data.stats import interaction_counts

    _, per_item = interaction_counts(ds)
    srt = np.sort(per_item)[::-1]
    cum = np.cumsum(srt) / max(srt.sum(), 1)
    rows = []
    for s in shares:
        k = max(round(s * len(srt)), 1)
        rows.append(
            {"most popular items": f"top {s:.0%} ({k:,} items)", "share of interactions": f"{cum[k - 1]:.1%}"}
        )
    return pd.DataFrame(rows).set_index("most popular items")


def plot_ratings_and_time(ds: Any) -> Any:
    """Rating (or play-count) distribution, and interactions per month when the data has timestamps."""
    import matplotlib.pyplot as plt
    import numpy as np
    import pandas as pd
    from matplotlib.ticker import FuncFormatter

    inter = ds.interactions
    timed = ds.has_timestamps
    fig, axes = plt.subplots(1, 2 if timed else 1, figsize=(10 if timed else 5.5, 3.6), squeeze=False)
    ax = axes[0, 0]
    r = inter["rating"].to_numpy()
    if np.allclose(r, np.round(r)) and r.max() <= 10:
        vals, cnt = np.unique(r.astype(int), return_counts=True)
        ax.bar(vals, cnt, color="C2")
        ax.set_xticks(vals)
        ax.set_xlabel("rating")
    else:
        ax.hist(r[r > 0], bins=_log_bins(r[r > 0]), color="C2")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel(str(ds.meta.get("rating_kind", "rating")))
    ax.set_ylabel("interactions")
    if ax.get_yscale() == "linear":
        ax.yaxis.set_major_formatter(FuncFormatter(lambda x, _: f"{x:,.0f}"))
    ax.set_title("rating column")
    if timed:
        ax = axes[0, 1]
        month = pd.to_datetime(inter["timestamp"], unit="s").dt.to_period("M")
        per = month.value_counts().sort_index()
        ax.bar(per.index.to_timestamp(), per.to_numpy(), width=25, color="C4")
        ax.set_yscale("log")
        ax.set_xlabel("month")
        ax.set_ylabel("interactions")
        ax.set_title("interactions per month")
        for lab in ax.get_xticklabels():
            lab.set_rotation(30)
            lab.set_horizontalalignment("right")
    fig.suptitle(f"{ds.name}: ratings" + (" and time" if timed else ""))
    return fig


def label_frequency_table(ds: Any, top: int = 20) -> Any:
    """The ``top`` most common labels: items carrying each, their share of the catalogue (as a percentage) and
    interactions with them (``label_frequencies`` with readable headers; show it with ``index=False``)."""
    from recsae_core.data.stats import label_frequencies

    freq = label_frequencies(ds).head(top)
    freq["share_of_items"] = freq["share_of_items"].map("{:.1%}".format)
    return freq.rename(columns=lambda c: c.replace("_", " "))


def plot_label_frequencies(ds: Any, top: int = 20) -> Any:
    """Horizontal bars: items per label and interactions with those items, for the ``top`` most common labels."""
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter, MaxNLocator

    from recsae_core.data.stats import label_frequencies

    freq = label_frequencies(ds).head(top).iloc[::-1]
    h = max(2.5, 0.28 * len(freq) + 1.2)
    fig, axes = plt.subplots(1, 2, figsize=(10, h), sharey=True)
    axes[0].barh(freq["label"], freq["items"], color="C0")
    axes[0].set_xlabel("items carrying the label")
    axes[1].barh(freq["label"], freq["interactions"], color="C1")
    axes[1].set_xlabel("interactions with those items")
    for ax in axes:
        ax.xaxis.set_major_locator(MaxNLocator(nbins=5, integer=True))
        ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _: f"{x:,.0f}"))
    kind = (
        "tags"
        if "tag" in str(ds.meta.get("label_rule", "")).lower() or ds.name.startswith("lastfm")
        else "genres"
    )
    axes[0].set_ylabel(kind)
    fig.suptitle(f"{ds.name}: the {len(freq)} most frequent {kind} (an item can carry several)")
    return fig


def k_core(inter: Any, k: int) -> Any:
    """Iteratively drop users and items with fewer than ``k`` interactions (vectorised; P2's 5-core)."""
    import numpy as np

    df = inter
    while True:
        u = np.bincount(df["user"].to_numpy())
        i = np.bincount(df["item"].to_numpy())
        keep = (u[df["user"].to_numpy()] >= k) & (i[df["item"].to_numpy()] >= k)
        if keep.all():
            return df
        df = df[keep]


def protocol_variants(ds: Any) -> Any:
    """How the papers' preprocessing would shrink this dataset: users, items, interactions per variant.

    Rows (only those that apply): as loaded here (every rating an interaction, as P1 does); P2's
    ``ML_1MTOPK`` recipe (ratings ≥ 4 are positives; iterative 5-core on the positives; on ML-1M this gives
    the 6,034 users, 3,125 items and 994,338 rows recorded from P2's code); P3's binarisation (all ratings kept; P3
    also drops one ML-1M user, id 4170); P3's Last.fm filters (artists with > 50 listeners, users with > 50
    rows, artists with > 40 listeners).
    """
    import numpy as np
    import pandas as pd

    inter = ds.interactions

    def row(name: str, df: Any) -> dict[str, Any]:
        return {
            "variant": name,
            "users": int(df["user"].nunique()),
            "items": int(df["item"].nunique()),
            "interactions": len(df),
            "share of interactions kept": f"{len(df) / max(len(inter), 1):.1%}",
        }

    rows = [row("as loaded here (every rating an interaction, as in P1)", inter)]
    explicit = str(ds.meta.get("rating_kind", "")).startswith(("explicit", "rating"))
    if explicit:
        core = k_core(inter[inter["rating"] >= 4], 5)
        rows.append(row("P2: ratings ≥ 4, iterative 5-core", core))
        kept = inter[inter["user"].isin(core["user"].unique()) & inter["item"].isin(core["item"].unique())]
        rows.append(row("P2: all ratings of those users and items", kept))
        if ds.name.startswith("ml-1m"):
            drop = ds.users.index[ds.users["user_id"] == 4170].to_numpy()
            rows.append(row("P3: binarised, user 4170 dropped", inter[~inter["user"].isin(drop)]))
        else:
            rows.append(row("P3: all ratings, binarised", inter))
    elif ds.name.startswith("lastfm"):
        df = inter
        for who, limit in (("item", 50), ("user", 50), ("item", 40)):
            cnt = np.bincount(df[who].to_numpy(), minlength=1)
            df = df[cnt[df[who].to_numpy()] > limit]
        rows.append(row("P3 Last.fm filters (see above)", df))
    return pd.DataFrame(rows).set_index("variant")
