"""SAE plots any chapter uses: feature × label heatmaps, steering curves, and the static steering slider.

Inputs are the DataFrames / matrices of the analysis modules (:mod:`recsae_core.papers`,
:mod:`recsae_core.metrics`); these functions only draw.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

__all__ = [
    "heatmap_order",
    "plot_feature_label_heatmap",
    "plot_steering_curves",
    "steering_slider_figure",
]

#: line style per meaning of α = 0 (:data:`recsae_core.papers.p1.MEANINGS`).
_MEANING_STYLE = {"p1": "--", "ours": "-"}


def heatmap_order(corr_MG: Any, n_features: int = 24) -> tuple[list[int], list[int]]:
    """Labels ordered by their best correlation (descending) and the features to show.

    Features: each label's best feature, in the labels' order (duplicates once), then the remaining
    features with the highest max correlation over labels, up to ``n_features``. Returns
    ``(label_order, feature_order)`` as index lists.
    """
    import torch

    c = torch.as_tensor(corr_MG).double()
    if c.ndim != 2 or c.shape[0] == 0:
        raise ValueError(f"expected a (features, labels) matrix, got shape {tuple(c.shape)}")
    best_v, best_j = c.max(0)
    labels = torch.argsort(-best_v, stable=True).tolist()
    feats: list[int] = []
    for g in labels:
        j = int(best_j[g])
        if j not in feats:
            feats.append(j)
    for j in torch.argsort(-c.max(1).values, stable=True).tolist():
        if len(feats) >= n_features:
            break
        if j not in feats:
            feats.append(int(j))
    return labels, feats[: max(n_features, 1)]


def plot_feature_label_heatmap(
    corr_MG: Any,
    label_names: Sequence[str],
    *,
    n_features: int = 24,
    title: str = "Pearson correlation of SAE features with genres",
    what: str = "feature",
) -> Any:
    """Feature × label correlation heatmap (P1 Fig. 2): labels ordered by best correlation, the most aligned
    features (:func:`heatmap_order`); the subtitle gives the mean over labels of the max correlation."""
    import matplotlib.pyplot as plt
    import numpy as np
    import torch

    c = torch.as_tensor(corr_MG).double()
    if c.shape[1] != len(label_names):
        raise ValueError(f"{len(label_names)} label names for {c.shape[1]} labels")
    labels, feats = heatmap_order(c, n_features)
    data = c[feats][:, labels].T.numpy()  # (labels, features)
    fig, ax = plt.subplots(figsize=(max(6.0, 0.32 * len(feats) + 2.5), max(3.0, 0.3 * len(labels) + 1.2)))
    lim = float(np.abs(data).max()) or 1.0
    im = ax.imshow(data, cmap="RdBu_r", vmin=-lim, vmax=lim, aspect="auto")
    ax.set_yticks(range(len(labels)), [label_names[g] for g in labels])
    ax.set_xticks(range(len(feats)), [str(j) for j in feats], rotation=90, fontsize="small")
    ax.set_xlabel(f"{what} id (each genre's best first)")
    ax.set_ylabel("genre (best aligned on top)")
    ax.grid(False)
    mean_max = float(c.max(0).values.mean())
    ax.set_title(f"{title}\nmean over genres of the max correlation: {mean_max:.3f}")
    fig.colorbar(im, ax=ax, label="Pearson r", shrink=0.8)
    return fig


def plot_steering_curves(curves: Any, *, labels: Sequence[str] | None = None, k: int = 10) -> Any:
    """Steering outcomes (P1 §1.8) from :func:`recsae_core.papers.p1.steering_curves`.

    One row per steered label: left, the label's share of the top-``k`` (left axis) and NDCG@k (right
    axis) against α; right, share against the NDCG drop from α = 0 (α's scale depends on the SAE's
    normalisation; this panel does not). Dashed: P1's meaning of α = 0 (SAE spliced in), solid: ours
    (exact base model); one legend above the panels says which.
    """
    import matplotlib.pyplot as plt

    labs = list(labels) if labels is not None else list(dict.fromkeys(curves["label"]))
    if not labs:
        raise ValueError("no steered labels to plot")
    ndcg = f"ndcg@{k}"
    fig, axes = plt.subplots(len(labs), 2, figsize=(11, 3.4 * len(labs)), squeeze=False)
    for r, lab in enumerate(labs):
        ax, ax_t, ax_d = axes[r, 0], axes[r, 0].twinx(), axes[r, 1]
        sub = curves[curves["label"] == lab]
        if sub.empty:
            raise KeyError(f"no curve for label {lab!r}")
        for meaning, g in sub.groupby("meaning", sort=False):
            ls = _MEANING_STYLE.get(str(meaning), ":")
            text = str(g["alpha0"].iloc[0])
            g = g.sort_values("alpha")
            ax.plot(g["alpha"], g["share"], ls=ls, color="C0", marker="o", ms=3, label=f"share — {text}")
            if ndcg in g:
                ax_t.plot(
                    g["alpha"], g[ndcg], ls=ls, color="C3", marker="s", ms=3, label=f"NDCG@{k} — {text}"
                )
                ax_d.plot(100 * g["ndcg_drop"], g["share"], ls=ls, color="C2", marker="o", ms=3)
                for a, x, y in zip(g["alpha"], 100 * g["ndcg_drop"], g["share"], strict=True):
                    if a in (g["alpha"].min(), 0.0, g["alpha"].max()):
                        ax_d.annotate(
                            f"α={a:g}", (x, y), fontsize="x-small", xytext=(3, 3), textcoords="offset points"
                        )
        feat = int(sub["feature"].iloc[0])
        ax.set_xlabel("α (added to the feature)")
        ax.set_ylabel(f"{lab} share of top-{k}", color="C0")
        ax_t.set_ylabel(f"NDCG@{k}", color="C3")
        ax_t.grid(False)
        ax.set_title(f"{lab}: feature {feat}")
        ax_d.set_xlabel(f"NDCG@{k} drop from α = 0 (%)")
        ax_d.set_ylabel(f"{lab} share of top-{k}")
        ax_d.set_title(f"{lab}: share vs accuracy cost")
        if r == 0:
            h1, l1 = ax.get_legend_handles_labels()
            h2, l2 = ax_t.get_legend_handles_labels()
            handles, names = h1 + h2, l1 + l2
    # one legend above the panels, so no curve is hidden behind it
    top = 1 - 0.55 / fig.get_figheight()
    fig.legend(handles, names, loc="upper center", ncol=2, fontsize="small", bbox_to_anchor=(0.5, 1.0))
    with warnings.catch_warnings():  # twin axes: matplotlib warns that tight_layout may not fit them
        warnings.simplefilter("ignore", UserWarning)
        fig.tight_layout(rect=(0, 0, 1, top - 0.35 / fig.get_figheight()))
    return fig


def steering_slider_figure(
    curve: Any,
    lists: Any,
    dataset: Any,
    *,
    label: str,
    k: int = 10,
    title: str | None = None,
) -> Any:
    """A plotly figure that works without a kernel: a slider moves α (P1 §1.8's steering, precomputed).

    Top: the label's share of the top-``k`` against α, with a marker at the chosen α (and NDCG@k when the
    curve has it). Below: one user's top-``k`` before steering (α = 0) and at the chosen α, items carrying
    the label shaded. Every α's traces are built up front and the slider only toggles visibility, so it
    works in the static HTML book.

    Args:
        curve: one label and one meaning of :func:`recsae_core.papers.p1.steering_curves` (``alpha``, ``share``).
        lists: :func:`recsae_core.papers.p1.steered_top_k` for ONE user over the same α values (must include 0).
        dataset: the :class:`RecDataset` (titles, labels).
        label: the steered label's name (one of ``dataset.label_names``).
    """
    import numpy as np
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    from recsae_core.viz.models import _short, item_labels_text

    if label not in dataset.label_names:
        raise KeyError(f"{label!r} is not a label of {dataset.name}")
    if lists["user"].nunique() != 1:
        raise ValueError("steering_slider_figure shows one user's lists; filter `lists` to one user")
    g = dataset.label_names.index(label)
    alphas = sorted(float(a) for a in curve["alpha"].unique())
    if 0.0 not in set(lists["alpha"]):
        raise ValueError("lists must include α = 0 (the 'before' list)")
    missing = [a for a in alphas if a not in set(lists["alpha"])]
    if missing:
        raise ValueError(f"lists lack α values {missing} of the curve")
    curve = curve.sort_values("alpha")
    # the curve above, the before/after table below at full width (a book page is ~700 px wide)
    fig = make_subplots(
        rows=2,
        cols=1,
        row_heights=[0.3, 0.7],
        specs=[[{"type": "xy", "secondary_y": True}], [{"type": "table"}]],
        subplot_titles=[f"{label} share of top-{k} (all test users)", f"top-{k}: before (α = 0) → after"],
        vertical_spacing=0.13,
    )
    fig.add_trace(
        go.Scatter(
            x=curve["alpha"],
            y=curve["share"],
            mode="lines+markers",
            name=f"{label} share",
            line={"color": "#1f77b4"},
        ),
        row=1,
        col=1,
    )
    ndcg = f"ndcg@{k}"
    if ndcg in curve:
        fig.add_trace(
            go.Scatter(
                x=curve["alpha"],
                y=curve[ndcg],
                mode="lines+markers",
                name=f"NDCG@{k}",
                line={"color": "#d62728", "dash": "dot"},
            ),
            row=1,
            col=1,
            secondary_y=True,
        )
    n_fixed = len(fig.data)

    def rows(a: float) -> tuple[list[str], list[str], list[str]]:
        r = lists[lists["alpha"] == a].sort_values("rank").head(k)
        items = r["item"].to_numpy()
        has = np.asarray(dataset.item_labels)[items, g]
        titles = [_short(str(t), 40) for t in dataset.items["title"].to_numpy()[items]]
        labs = [_short(t, 26) for t in item_labels_text(dataset, items, max_labels=2)]
        fill = ["#fde2b8" if h else "white" for h in has]
        return titles, labs, fill

    t0, l0, f0 = rows(0.0)
    share_at = dict(zip(curve["alpha"].astype(float), curve["share"], strict=True))
    for i, a in enumerate(alphas):
        t1, l1, f1 = rows(a)
        fig.add_trace(
            go.Scatter(
                x=[a],
                y=[share_at[a]],
                mode="markers",
                marker={"size": 14, "color": "#ff7f0e"},
                name=f"α = {a:g}",
                showlegend=False,
                visible=i == 0,
            ),
            row=1,
            col=1,
        )
        fig.add_trace(
            go.Table(
                columnwidth=[0.5, 3.4, 2.7, 3.4, 2.7],
                header={
                    "values": ["#", "before: title", "labels", f"α = {a:g}: title", "labels"],
                    "fill_color": "#e8eef7",
                    "align": "left",
                    "font": {"size": 11},
                },
                cells={
                    "values": [list(range(1, len(t1) + 1)), t0, l0, t1, l1],
                    "fill_color": [["white"] * len(t1), f0, f0, f1, f1],
                    "align": "left",
                    "font": {"size": 10},
                    "height": 22,
                },
                visible=i == 0,
                name=f"top-{k} at α = {a:g}",
            ),
            row=2,
            col=1,
        )
    steps = []
    for i, a in enumerate(alphas):
        vis = [True] * n_fixed + [j // 2 == i for j in range(2 * len(alphas))]
        steps.append({"label": f"{a:g}", "method": "update", "args": [{"visible": vis}]})
    start = alphas.index(0.0) if 0.0 in alphas else 0
    for j in range(2 * len(alphas)):
        fig.data[n_fixed + j].visible = j // 2 == start
    fig.update_xaxes(title_text="α", row=1, col=1)
    fig.update_yaxes(title_text="share", row=1, col=1)
    fig.update_yaxes(title_text=f"NDCG@{k}", row=1, col=1, secondary_y=True)
    user = int(lists["user"].iloc[0])
    fig.update_layout(
        title={
            "text": title or f"steering {label} (user {dataset.users['user_id'].iloc[user]})",
            "font": {"size": 13},
        },
        height=770,
        margin={"l": 60, "r": 60, "t": 70, "b": 90},
        legend={"orientation": "h", "x": 1, "xanchor": "right", "y": 1.1},
        sliders=[{"active": start, "currentvalue": {"prefix": "α = "}, "steps": steps, "pad": {"t": 20}}],
    )
    return fig
