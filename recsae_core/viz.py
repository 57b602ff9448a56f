"""Plotting helpers shared by the book's chapters: one matplotlib/seaborn style, and plotly figures shown as a
two-mimetype bundle that renders both in Jupyter and in the static Jupyter Book HTML.

Why the bundle (``../shared/reference/toolchain.md`` §3): under papermill, ``fig.show()`` emits only the
``application/vnd.plotly.v1+json`` mimetype, which myst-nb cannot render; the book needs a ``text/html`` part
that uses the page's vendored ``plotly.min.js`` (``include_plotlyjs=False``) and loads no MathJax from a CDN
(``include_mathjax=False``). JupyterLab picks the plotly JSON (rendered by the extension in the plotly wheel).
"""

from __future__ import annotations

import json
from typing import Any

__all__ = [
    "LABEL_PALETTE",
    "accuracy_table",
    "item_labels_text",
    "k_core",
    "label_frequency_table",
    "model_label",
    "plot_interaction_counts",
    "plot_label_frequencies",
    "plot_ratings_and_time",
    "plotly_bundle",
    "popularity_concentration",
    "protocol_variants",
    "recommendation_view",
    "recommendations_frame",
    "sample_users",
    "set_style",
    "show_plotly",
    "stats_table",
    "table",
    "top_k",
    "training_table",
    "user_history",
]

#: qualitative palette used for labels (genres / tags) across chapters, so a genre keeps its colour.
LABEL_PALETTE = "tab20"


def set_style(context: str = "notebook") -> None:
    """The book's matplotlib/seaborn look: white grid, readable fonts, a dpi that keeps PNGs sharp but small."""
    import matplotlib as mpl
    import seaborn as sns

    sns.set_theme(context=context, style="whitegrid", palette="colorblind")
    mpl.rcParams.update(
        {
            "figure.dpi": 100,
            "savefig.dpi": 100,
            "figure.figsize": (8.0, 4.0),
            "figure.autolayout": False,
            "figure.constrained_layout.use": True,
            "axes.titlesize": "medium",
            "axes.titleweight": "bold",
            "axes.labelsize": "medium",
            "legend.fontsize": "small",
            "legend.frameon": False,
        }
    )


def table(df: Any, *, index: bool = True, caption: str | None = None, precision: int = 4) -> Any:
    """A pandas ``Styler`` for the book: thousands separators, fixed precision, no index-name header row.

    ``index=False`` hides the index (use it for tables whose first column already names the rows).
    """
    sty = df.style.format(precision=precision, thousands=",", na_rep="–")
    sty = sty.hide(axis="index") if not index else sty.hide(axis="index", names=True)
    if caption:
        sty = sty.set_caption(caption)
    return sty.set_table_attributes('class="dataframe recsae-table"')


def plotly_bundle(fig: Any, *, div_id: str | None = None) -> dict[str, Any]:
    """The mimebundle for a plotly figure: plotly JSON (Jupyter) + ``text/html`` without plotly.js or MathJax.

    Args:
        fig: a ``plotly.graph_objects.Figure``.
        div_id: optional fixed HTML id (makes the output deterministic and lets tests find the figure).
    """
    html = fig.to_html(full_html=False, include_plotlyjs=False, include_mathjax=False, div_id=div_id)
    return {"application/vnd.plotly.v1+json": json.loads(fig.to_json()), "text/html": html}


def show_plotly(fig: Any, *, div_id: str | None = None) -> None:
    """Display a plotly figure so that it renders in JupyterLab and in the static book (see module docstring)."""
    from IPython.display import display

    display(plotly_bundle(fig, div_id=div_id), raw=True)


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

    from .data.stats import interaction_counts

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

    from .data.stats import interaction_counts

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
    from .data.stats import label_frequencies

    freq = label_frequencies(ds).head(top)
    freq["share_of_items"] = freq["share_of_items"].map("{:.1%}".format)
    return freq.rename(columns=lambda c: c.replace("_", " "))


def plot_label_frequencies(ds: Any, top: int = 20) -> Any:
    """Horizontal bars: items per label and interactions with those items, for the ``top`` most common labels."""
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter, MaxNLocator

    from .data.stats import label_frequencies

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


# ---------------------------------------------------------------------------------------- base-models chapter

#: display names of the base recommenders (registry name → label in tables and legends).
MODEL_LABELS = {
    "pop": "Popularity",
    "bprmf": "BPR-MF",
    "lightgcn": "LightGCN",
    "mf": "MF (P3)",
    "ncf": "NCF (P3)",
    "sasrec": "SASRec+",
}


def model_label(name: str) -> str:
    """The display name of a registered model (the name itself when unknown)."""
    return MODEL_LABELS.get(name, name)


def accuracy_table(
    metrics: dict[str, dict[str, float]], columns: tuple[str, ...] = ("ndcg", "hr"), coverage: bool = True
) -> Any:
    """One row per model: test metrics (full ranking, seen items masked) at every cut-off evaluated.

    Args:
        metrics: model name → ``evaluate(...)`` output on the test part.
        columns: metric families to show (``"ndcg"``, ``"hr"``, ``"mrr"``), each at every cut-off present.
        coverage: add coverage at the smallest cut-off.
    """
    import pandas as pd

    rows = []
    for name, m in metrics.items():
        ks = sorted({int(key.split("@")[1]) for key in m if "@" in key})
        row: dict[str, Any] = {"model": model_label(name)}
        for fam in columns:
            for k in ks:
                if f"{fam}@{k}" in m:
                    row[f"{fam.upper()}@{k}"] = float(m[f"{fam}@{k}"])
        if coverage and ks and f"coverage@{ks[0]}" in m:
            row[f"coverage@{ks[0]}"] = float(m[f"coverage@{ks[0]}"])
        row["test users"] = int(m.get("n_cases", 0))
        rows.append(row)
    return pd.DataFrame(rows)


def training_table(results: dict[str, Any]) -> Any:
    """One row per model: epoch kept, epochs run, training time, and whether it came from the cache."""
    import pandas as pd

    rows = []
    for name, res in results.items():
        trained = res.best_epoch > 0
        rows.append(
            {
                "model": model_label(name),
                "epoch kept": int(res.best_epoch) if trained else "–",
                "epochs run": len(res.history) if trained else "–",
                "best validation NDCG@10": float(res.history["valid_ndcg@10"].max())
                if len(res.history)
                else float("nan"),
                "training time (s)": f"{float(res.seconds):,.1f}",
                "from the cache": "yes" if res.from_cache else "no",
            }
        )
    return pd.DataFrame(rows)


def plot_training_curves(results: dict[str, Any]) -> Any:
    """Validation NDCG@10 per epoch, and the training loss relative to its first epoch, for every trained model.

    Losses are on different scales (full cross-entropy, BPR, BCE), so each is divided by its epoch-1 value.
    Models without epochs (popularity) appear as a horizontal line in the validation panel.
    """
    import matplotlib.pyplot as plt

    fig, (ax_v, ax_l) = plt.subplots(1, 2, figsize=(10, 3.8))
    for i, (name, res) in enumerate(results.items()):
        h = res.history
        colour = f"C{i % 10}"
        if h.empty:
            continue
        if res.best_epoch == 0:  # popularity: no training
            ax_v.axhline(float(h["valid_ndcg@10"].iloc[0]), color=colour, ls=":", label=model_label(name))
            continue
        ax_v.plot(h["epoch"], h["valid_ndcg@10"], color=colour, marker="o", ms=3, label=model_label(name))
        best = h.loc[h["epoch"] == res.best_epoch, "valid_ndcg@10"]
        if len(best):
            ax_v.plot(
                [res.best_epoch], [float(best.iloc[0])], marker="*", ms=11, color=colour, mec="k", mew=0.6
            )
        loss = h["loss"] / float(h["loss"].iloc[0])
        ax_l.plot(h["epoch"], loss, color=colour, marker="o", ms=3, label=model_label(name))
    ax_v.set_xlabel("epoch")
    ax_v.set_ylabel("validation NDCG@10")
    ax_v.set_title("validation NDCG@10 (★ = epoch kept)")
    ax_l.set_xlabel("epoch")
    ax_l.set_ylabel("training loss / epoch-1 loss")
    ax_l.set_title("training loss, relative")
    handles, labels = ax_v.get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside right center")
    return fig


def item_labels_text(ds: Any, items: Any, max_labels: int = 3) -> list[str]:
    """For each item index, its labels joined by ", " (at most ``max_labels``; "+n" says how many more)."""
    import numpy as np

    out = []
    names = np.asarray(ds.label_names, dtype=object)
    for it in np.asarray(items, dtype=np.int64):
        labs = names[ds.item_labels[it]] if len(names) else []
        text = ", ".join(labs[:max_labels]) + (
            f" +{len(labs) - max_labels}" if len(labs) > max_labels else ""
        )
        out.append(text)
    return out


def sample_users(split: Any, n: int, seed: int = 0, part: str = "test") -> Any:
    """``n`` users drawn (seeded, without replacement) among those with a target in ``part``; sorted indices."""
    import numpy as np

    users = np.unique(split.targets(part)["user"].to_numpy(np.int64))
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(users, size=min(n, len(users)), replace=False))


def top_k(model: Any, split: Any, users: Any, k: int = 10, part: str = "test", device: Any = None) -> Any:
    """Top-``k`` recommendations for ``users`` with their history items masked (as the evaluation does).

    Returns a long DataFrame: ``user``, ``rank`` (1-based), ``item``, ``score``, ``is_target`` (the held-out
    item of ``part``). Users without a target in ``part`` are skipped.
    """
    import numpy as np
    import pandas as pd
    import torch

    from .batching import eval_data
    from .evaluate import mask_seen

    data = eval_data(split, part, maxlen=getattr(model, "maxlen", None))
    want = torch.as_tensor(np.asarray(users, dtype=np.int64))
    pos = torch.nonzero(torch.isin(data.users, want)).flatten()
    sub = data.subset(pos)
    dev = next((p.device for p in model.parameters()), torch.device("cpu")) if device is None else device
    frames = []
    model.eval()
    with torch.no_grad():
        for eb in sub.batches(256):
            scores_BI = model.score(eb.batch.to(dev)).float().cpu()
            mask_seen(scores_BI, eb.targets, (eb.seen_rows, eb.seen_items))
            val, idx = torch.topk(scores_BI, k, dim=1)  # (B, k)
            b = len(eb.targets)
            frames.append(
                pd.DataFrame(
                    {
                        "user": np.repeat(eb.batch.users.numpy(), k),
                        "rank": np.tile(np.arange(1, k + 1), b),
                        "item": idx.numpy().ravel(),
                        "score": val.numpy().ravel(),
                        "is_target": (idx == eb.targets[:, None]).numpy().ravel(),
                    }
                )
            )
    if not frames:
        return pd.DataFrame(columns=["user", "rank", "item", "score", "is_target"])
    return (
        pd.concat(frames, ignore_index=True)
        .sort_values(["user", "rank"], kind="stable")
        .reset_index(drop=True)
    )


def user_history(split: Any, user: int, last: int = 10, part: str = "test") -> Any:
    """The ``last`` most recent history items of ``user`` when evaluating ``part`` (most recent first)."""
    from .batching import history_frame

    hist = history_frame(split, part)
    rows = hist[hist["user"] == user]
    n = len(rows)
    rows = rows.iloc[::-1].head(last)
    ds = split.dataset
    out = rows[["item"]].copy()
    out.insert(0, "#", range(n, n - len(rows), -1))
    out["title"] = ds.items["title"].to_numpy()[rows["item"].to_numpy()]
    out["labels"] = item_labels_text(ds, rows["item"].to_numpy())
    if "rating" in rows.columns:
        out["rating"] = rows["rating"].to_numpy()
    return out.reset_index(drop=True)


def recommendations_frame(split: Any, recs: Any, user: int, part: str = "test") -> Any:
    """One user's rows of :func:`top_k` with titles and labels; the held-out item is marked."""
    ds = split.dataset
    r = recs[recs["user"] == user]
    target = split.targets(part)
    held = target.loc[target["user"] == user, "item"].to_numpy()
    out = r[["rank", "item"]].copy()
    out["title"] = ds.items["title"].to_numpy()[r["item"].to_numpy()]
    out["labels"] = item_labels_text(ds, r["item"].to_numpy())
    out["held out"] = ["✓" if t else "" for t in r["is_target"].to_numpy()]
    out.attrs["held_out"] = [ds.items["title"].iloc[int(i)] for i in held]
    return out.reset_index(drop=True)


def _short(text: str, n: int) -> str:
    return text if len(text) <= n else text[: n - 1] + "…"


def recommendation_view(
    split: Any,
    recs: dict[str, Any],
    users: Any,
    *,
    history: int = 10,
    part: str = "test",
) -> Any:
    """A plotly figure that works without a kernel: a dropdown over ``users`` switches the tables shown.

    For the chosen user: the ``history`` most recent history items (top), and one top-k table per model
    (two per row), the held-out item highlighted in green. Everything is precomputed; the dropdown only
    toggles trace visibility (and the heading), so it works in the static HTML book.

    Args:
        split: the split the models were trained on.
        recs: model name → :func:`top_k` output covering ``users``.
        users: user indices (e.g. :func:`sample_users`).
    """
    import math

    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    ds = split.dataset
    names = list(recs)
    n_model_rows = math.ceil(len(names) / 2)
    n_rows = 1 + n_model_rows
    row_px, top_px, gap_px = 285, 80, 36
    height = top_px + n_rows * row_px + (n_rows - 1) * gap_px + 10
    specs = [[{"type": "table", "colspan": 2}, None]] + [
        [{"type": "table"}, {"type": "table"}]
    ] * n_model_rows
    titles = ["history (most recent first)"] + [f"top-{_k(recs[n])} of {model_label(n)}" for n in names]
    titles += [""] * (1 + 2 * n_model_rows - len(titles))
    fig = make_subplots(
        rows=n_rows,
        cols=2,
        specs=specs,
        subplot_titles=titles,
        vertical_spacing=gap_px / (height - top_px - 10),
        horizontal_spacing=0.03,
    )
    header = {"fill_color": "#e8eef7", "font": {"size": 12}, "align": "left", "height": 24}
    cell = {"align": "left", "font": {"size": 11}, "height": 22}
    per_user = 1 + len(names)
    user_ids = ds.users["user_id"].to_numpy()
    buttons = []
    for j, u in enumerate(users):
        u = int(u)
        hist = user_history(split, u, last=history, part=part)
        fig.add_trace(
            go.Table(
                columnwidth=[0.6, 5, 4],
                header={**header, "values": ["#", "title", "labels"]},
                cells={
                    **cell,
                    "values": [
                        hist["#"].tolist(),
                        [_short(t, 58) for t in hist["title"]],
                        [_short(t, 44) for t in hist["labels"]],
                    ],
                },
                visible=j == 0,
                name=f"user {user_ids[u]}: history",
            ),
            row=1,
            col=1,
        )
        held: list[str] = []
        for m, name in enumerate(names):
            rec = recommendations_frame(split, recs[name], u, part=part)
            held = rec.attrs["held_out"]
            fill = ["#b8e0b0" if h else "white" for h in rec["held out"]]
            fig.add_trace(
                go.Table(
                    columnwidth=[0.5, 4.3, 2.6],
                    header={**header, "values": ["#", "title", "labels"]},
                    cells={
                        **cell,
                        "values": [
                            rec["rank"].tolist(),
                            [_short(t, 30) for t in rec["title"]],
                            [
                                _short(t, 16)
                                for t in item_labels_text(ds, rec["item"].to_numpy(), max_labels=2)
                            ],
                        ],
                        "fill_color": [fill] * 3,
                    },
                    visible=j == 0,
                    name=f"user {user_ids[u]}: {model_label(name)}",
                ),
                row=2 + m // 2,
                col=1 + m % 2,
            )
        n_hist = int((split.history_for(part)["user"] == u).sum())
        heading = (
            f"user {user_ids[u]}: {n_hist} history items; held out: {_short(', '.join(held) or '–', 48)}"
        )
        visible = [j * per_user <= t < (j + 1) * per_user for t in range(len(users) * per_user)]
        buttons.append(
            {
                "label": f"user {user_ids[u]}",
                "method": "update",
                "args": [{"visible": visible}, {"title.text": heading}],
            }
        )
    for ann in fig.layout.annotations:
        ann.font.size = 12
    fig.update_layout(
        title={
            "text": buttons[0]["args"][1]["title.text"] if buttons else "",
            "x": 0.17,
            "xanchor": "left",
            "y": 1 - 40 / height,
            "yanchor": "middle",
            "font": {"size": 13},
        },
        height=height,
        margin={"l": 8, "r": 8, "t": top_px, "b": 10},
        updatemenus=[
            {
                "buttons": buttons,
                "direction": "down",
                "x": 0.0,
                "xanchor": "left",
                "y": 1.0,
                "yanchor": "bottom",
                "pad": {"b": 28},
                "showactive": True,
                "active": 0,
            }
        ],
    )
    return fig


def _k(recs: Any) -> int:
    return int(recs["rank"].max()) if len(recs) else 0
