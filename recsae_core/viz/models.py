"""Plots and tables of the base-models chapter (accuracy, training curves, recommendation views)."""

from __future__ import annotations

from typing import Any

__all__ = [
    "accuracy_table",
    "item_labels_text",
    "model_label",
    "plot_training_curves",
    "recommendation_view",
    "recommendations_frame",
    "sample_users",
    "top_k",
    "training_table",
    "user_history",
]


# ---------------------------------------------------------------------------------------- base-models chapter

#: display names of the base recommenders (registry name → label in tables and legends).
MODEL_LABELS = {
    "pop": "Popularity",
    "bprmf": "BPR-MF",
    "lightgcn": "LightGCN",
    "mf": "MF (P3)",
    "ncf": "NCF (P3)",
    "sasrec": "SASRec+",
    "bert4rec": "BERT4Rec",
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

    from recsae_core.batching import eval_data
    from recsae_core.evaluate import mask_seen

    data = eval_data(split, part, maxlen=getattr(model, "maxlen", None))
    want = torch.as_tensor(np.array(users, dtype=np.int64))  # a copy: the input may be read-only
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
    from recsae_core.batching import history_frame

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
