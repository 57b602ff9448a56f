"""P3's figures and tables (papers.md §3.8), drawn from the DataFrames of :mod:`recsae_core.papers.p3`.

| figure | function | input |
|---|---|---|
| Table 1 (purity@K, one neuron per label) | :func:`purity_styler` | ``p3.purity_table`` |
| Figs. 2-3 genre activation profiles | :func:`plot_genre_profiles` | ``p3.genre_profiles`` |
| popularity neuron | :func:`plot_popularity` | ``p3.popularity_neuron(...).table`` |
| temporal neurons | :func:`plot_decade_profiles` | ``p3.decade_profiles`` |
| Fig. 4 β ablation (RBO with its ceiling, Kendall τ, MS) | :func:`plot_beta_curves` | ``p3.beta_ablation`` |
| Matryoshka hierarchy | :func:`plot_matryoshka` | ``p3.prefix_summaries`` |
| Fig. 5 interventions | :func:`plot_intervention` | ``p3.promote_item`` / ``p3.steer_users`` |

Plots draw; they compute nothing (the numbers come from ``papers.p3``). Each returns its matplotlib figure.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pandas as pd

from recsae_core.viz.base import LABEL_PALETTE, set_style, table

__all__ = [
    "plot_beta_curves",
    "plot_decade_profiles",
    "plot_genre_profiles",
    "plot_intervention",
    "plot_matryoshka",
    "plot_popularity",
    "purity_styler",
]

HIGHLIGHT, MUTED = "#d55e00", "#9e9e9e"


def purity_styler(
    df: pd.DataFrame, *, caption: str | None = None, columns: Sequence[Any] | None = None
) -> Any:
    """Table 1 (P3): the purity columns coloured by value on a fixed 0-1 scale (so tables compare).

    ``columns`` names them (e.g. ``("MF", "@10")`` in a two-level header); default: those whose name holds
    ``purity@`` (``purity@10``, ``MF purity@10``, ...)."""
    cols = list(columns) if columns is not None else [c for c in df.columns if "purity@" in str(c)]
    if not cols:
        raise ValueError(f"no purity@K column in {list(df.columns)}")
    sty = table(df, caption=caption, precision=2)
    return sty.background_gradient(cmap="Greens", subset=cols, vmin=0.0, vmax=1.0)


def plot_genre_profiles(
    profiles: pd.DataFrame, neurons: Sequence[int], *, names: Sequence[str] | None = None, ncols: int = 2
) -> Any:
    """Figs. 2-3 (P3): per neuron, its mean activation over each label's items (bars) against the
    all-item mean (dashed line). ``profiles`` from ``p3.genre_profiles``; ``names`` titles the panels."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    if "all items" not in profiles.columns:
        raise ValueError("profiles need the 'all items' column of p3.genre_profiles")
    set_style()
    labels = [c for c in profiles.columns if c != "all items"]
    n = len(neurons)
    ncols = max(1, min(ncols, n))
    nrows = -(-n // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(5.0 * ncols, 2.8 * nrows), squeeze=False)
    colours = sns.color_palette(LABEL_PALETTE, len(labels))
    for k, j in enumerate(neurons):
        ax = axes[k // ncols][k % ncols]
        ax.bar(range(len(labels)), profiles.loc[j, labels].to_numpy(float), color=colours)
        ax.axhline(float(profiles.loc[j, "all items"]), ls="--", color="black", lw=1, label="all items")
        ax.set_xticks(range(len(labels)), labels, rotation=90, fontsize="x-small")
        ax.set_ylabel("mean activation")
        ax.set_title(names[k] if names is not None else f"neuron {j}")
    for k in range(n, nrows * ncols):
        axes[k // ncols][k % ncols].remove()
    axes[0][0].legend(loc="upper right")
    return fig


def plot_popularity(table: pd.DataFrame, *, n_items: int | None = None) -> Any:
    """Popularity neuron (P3 §3.6): mean popularity rank of each neuron's top items (lower = more popular);
    the popularity neuron highlighted, the other neurons' mean dashed. ``table`` from
    ``p3.popularity_neuron(...).table``."""
    import matplotlib.pyplot as plt

    set_style()
    fig, ax = plt.subplots(figsize=(min(12.0, max(6.0, 0.3 * len(table))), 3.5))
    colours = [HIGHLIGHT if hit else MUTED for hit in table["is_popularity"]]
    ax.bar(table.index.to_numpy(), table["mean_rank"].to_numpy(), color=colours)
    for j, r in table[table["is_popularity"]].iterrows():  # the lowest bar: name it, it can be tiny
        ax.annotate(
            f"neuron {j}: {r['mean_rank']:,.0f}",
            (j, r["mean_rank"]),
            xytext=(0, 40),
            textcoords="offset points",
            ha="center",
            color=HIGHLIGHT,
            arrowprops={"arrowstyle": "-", "color": HIGHLIGHT},
        )
    others = table.loc[~table["is_popularity"], "mean_rank"]
    if len(others):
        ax.axhline(float(others.mean()), ls="--", color="black", lw=1, label="other neurons' mean")
        ax.legend(loc="upper right")
    ax.set_xlabel("neuron")
    ax.set_ylabel("mean popularity rank of top items" + (f" (of {n_items:,})" if n_items else ""))
    ax.set_title("Popularity neuron")
    return fig


def plot_decade_profiles(
    profiles: pd.DataFrame, neurons: Sequence[int], *, names: Sequence[str] | None = None
) -> Any:
    """Temporal neurons (P3 §3.6): share of each decade among a neuron's top items, one line per neuron;
    the catalogue's decade shares (``profiles.attrs["catalogue"]``) dashed. ``profiles`` from
    ``p3.decade_profiles``."""
    import matplotlib.pyplot as plt

    set_style()
    decades = [c for c in profiles.columns if isinstance(c, int | float) and not isinstance(c, bool)]
    fig, ax = plt.subplots()
    for k, j in enumerate(neurons):
        label = names[k] if names is not None else f"neuron {j}"
        ax.plot(decades, profiles.loc[j, decades].to_numpy(float), marker="o", label=label)
    cat = profiles.attrs.get("catalogue")
    if cat:
        ax.plot(decades, [cat.get(d, 0.0) for d in decades], ls="--", color="black", label="all items")
    ax.set_xticks(decades, [f"{int(d)}s" for d in decades])
    ax.set_xlabel("decade")
    ax.set_ylabel("share of top items")
    ax.set_title("Decade profile of top items")
    ax.legend()
    return fig


def plot_beta_curves(df: pd.DataFrame, *, hue: str | None = None, ceiling: float | None = None) -> Any:
    """Fig. 4 (P3): RBO, Kendall τ and MS against the prediction-loss weight β, one line per ``hue``
    value (e.g. a ``model`` column: MF, NCF). The RBO ceiling (``ceiling`` or the ``rbo_ceiling``
    column; 0.958 for p = 0.9, depth 30) is drawn dashed: identical lists score it, not 1."""
    import matplotlib.pyplot as plt

    set_style()
    fig, axes = plt.subplots(1, 3, figsize=(12.0, 3.8), sharex=True)
    groups = [(None, df)] if hue is None else list(df.groupby(hue, sort=False))
    # one colour per model family ("MF (P3)" and "P3 MF (paper)" share MF's), the paper's values dashed
    families: list[str] = []
    for key, _ in groups:
        fam = str(key).replace("P3 ", "").split()[0] if key is not None else ""
        families += [fam] if fam not in families else []
    colours = dict(zip(families, plt.rcParams["axes.prop_cycle"].by_key()["color"], strict=False))
    for key, g in groups:
        g = g.sort_values("beta")
        quoted = key is not None and "paper" in str(key)  # a paper's own values: dashed, hollow markers
        fam = str(key).replace("P3 ", "").split()[0] if key is not None else ""
        style = {"ls": "--", "mfc": "white"} if quoted else {"ls": "-"}
        style["color"] = colours.get(fam)
        for ax, col in zip(axes, ("rbo", "kendall_tau", "ms"), strict=True):
            ax.plot(g["beta"], g[col], marker="o", label=None if key is None else str(key), **style)
    top = (
        ceiling
        if ceiling is not None
        else (float(df["rbo_ceiling"].iloc[0]) if "rbo_ceiling" in df else None)
    )
    if top is not None:
        axes[0].axhline(top, ls="--", color="black", lw=1, label=f"ceiling {top:.3f}")
    for ax, title in zip(axes, ("RBO (p = 0.9, depth 30)", "Kendall τ-b", "monosemanticity"), strict=True):
        ax.set_xlabel("β (prediction-loss weight)")
        ax.set_title(title)
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncol=min(len(labels), 5))  # below, off the curves
    return fig


def plot_matryoshka(summary: pd.DataFrame) -> Any:
    """Matryoshka hierarchy (P3 §3.9): per block of latents, label breadth (entropy, distinct labels) and
    the mean popularity rank of the top items. ``summary`` from ``p3.prefix_summaries``."""
    import matplotlib.pyplot as plt

    set_style()
    cols = [
        ("entropy", "label entropy of top items"),
        ("distinct_labels", "distinct labels"),
        ("mean_pop_rank", "mean popularity rank"),
    ]
    fig, axes = plt.subplots(1, 3, figsize=(12.0, 3.5))
    ticks = [f"{lat}\n(prefix {p})" for lat, p in zip(summary["latents"], summary["prefix"], strict=True)]
    for ax, (col, title) in zip(axes, cols, strict=True):
        ax.bar(range(len(summary)), summary[col].to_numpy(float), color=MUTED)
        ax.set_xticks(range(len(summary)), ticks)
        ax.set_title(title)
    axes[0].set_ylabel("mean over the block's live latents")
    return fig


def plot_intervention(
    df: pd.DataFrame,
    *,
    measure: str = "share",
    ylabel: str = "label share of top-30",
    xlabel: str = "neuron value",
    title: str | None = None,
    accuracy: str | None = "ndcg@10",
) -> Any:
    """Fig. 5 (P3 §3.7): the measure per setting as bars (the unedited model first, greyed), and the
    accuracy cost (``accuracy``, e.g. NDCG@10 of the edited users) as a line on a second axis when that
    column exists. ``df`` from ``p3.promote_item`` or ``p3.steer_users``."""
    import matplotlib.pyplot as plt

    set_style()
    fig, ax = plt.subplots()
    x = range(len(df))
    colours = [MUTED if s == "original" else HIGHLIGHT for s in df["setting"]]
    pct = 100 * df[measure].to_numpy(float)
    ax.bar(x, pct, color=colours)
    ax.set_ylim(
        0, max(1.0, 1.15 * float(pd.Series(pct).max(skipna=True) or 0.0))
    )  # an all-zero bar reads as 0
    ax.set_xticks(x, df["setting"].tolist())
    ax.set_xlabel(xlabel)
    ax.set_ylabel(f"{ylabel} (%)")
    ax.set_title(title or ylabel)
    if accuracy is not None and accuracy in df.columns:
        ax2 = ax.twinx()
        acc = df[accuracy].to_numpy(float)
        ax2.plot(x, acc, color="black", marker="o", label=accuracy)
        ax2.set_ylim(0, 1.3 * float(pd.Series(acc).max(skipna=True) or 1.0))  # from 0: costs read at scale
        ax2.set_ylabel(accuracy.upper())
        ax2.grid(False)
        ax2.legend(loc="upper left")
    return fig
