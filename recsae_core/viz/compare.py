"""The side-by-side chapter's figures and tables (issue 13): every SAE architecture at one paper's site.

The numbers come from :mod:`recsae_core.compare` (``compare_site`` runs, ``summarise`` intervals); these
functions only draw them.
"""

from __future__ import annotations

from typing import Any

from recsae_core.viz.base import table

__all__ = ["ARCH_COLOURS", "comparison_table", "plot_pareto"]

#: one colour per architecture, the same on every page.
ARCH_COLOURS: dict[str, str] = {
    "relu_l1": "C0",
    "topk": "C1",
    "batch_topk": "C2",
    "p3": "C3",
    "matryoshka": "C4",
}

#: metric column -> axis / column label.
LABELS: dict[str, str] = {
    "explained_variance": "explained variance (held out)",
    "mean_max_corr": "mean max corr with genres",
    "spliced_ndcg@10": "NDCG@10, SAE spliced in",
    "l0": "L0 (active latents per row)",
}


def plot_pareto(
    runs: Any,
    metrics: tuple[str, ...] = ("explained_variance", "mean_max_corr", "spliced_ndcg@10"),
    title: str | None = None,
) -> Any:
    """One panel per metric against L0: each matched SAE as a dot (one per seed), the seeds' mean with its
    interval as a large marker with error bars, and for the L1-type SAEs the coefficient search's other runs
    (seed 0) as crosses joined in L0 order — their L0 sweep. Dashed lines: the base model's NDCG and the raw
    neurons' mean max correlation.

    Args:
        runs: :func:`recsae_core.compare.compare_site`'s frame (``run``, ``architecture``, ``l0`` and the metrics).
    """
    import matplotlib.pyplot as plt
    import numpy as np

    fig, axes = plt.subplots(1, len(metrics), figsize=(4.6 * len(metrics), 3.9), squeeze=False)
    for ax, col in zip(axes[0], metrics, strict=True):
        for arch, g in runs.groupby("architecture", sort=False):
            c = ARCH_COLOURS.get(arch, "C7")
            matched = g[g["run"] == "matched"]
            search = g[g["run"] == "search"]
            if len(search):
                line = (
                    np.concatenate(
                        [search[["l0", col]].to_numpy(float), matched.iloc[:1][["l0", col]].to_numpy(float)]
                    )
                    if len(matched)
                    else search[["l0", col]].to_numpy(float)
                )
                line = line[np.argsort(line[:, 0])]
                ax.plot(line[:, 0], line[:, 1], color=c, lw=1, alpha=0.6, marker="x", ms=5)
            ax.scatter(matched["l0"], matched[col], color=c, s=14, alpha=0.6)
            x, y = matched["l0"].to_numpy(float), matched[col].to_numpy(float)
            if len(y) and np.isfinite(y).any():
                sd = np.nanstd(y, ddof=1) if len(y) > 1 else 0.0
                ax.errorbar(
                    np.nanmean(x), np.nanmean(y), yerr=sd, color=c, marker="o", ms=8, capsize=3, label=arch
                )
        if col == "spliced_ndcg@10" and "base_ndcg@10" in runs:
            ax.axhline(float(runs["base_ndcg@10"].iloc[0]), color="k", ls="--", lw=1, label="base model")
        if col == "mean_max_corr" and "neuron_mean_max_corr" in runs:
            ax.axhline(
                float(runs["neuron_mean_max_corr"].iloc[0]), color="k", ls="--", lw=1, label="raw neurons"
            )
        ax.set_xscale("log")
        ax.set_xlabel(LABELS["l0"])
        ax.set_ylabel(LABELS.get(col, col))
        ax.set_title(f"{LABELS.get(col, col)} vs L0")
    handles, labels = axes[0][0].get_legend_handles_labels()
    extra = [(h, lab) for ax in axes[0][1:] for h, lab in zip(*ax.get_legend_handles_labels(), strict=True)]
    for h, lab in extra:
        if lab not in labels:
            handles.append(h)
            labels.append(lab)
    fig.legend(handles, labels, loc="outside right center")
    if title:
        fig.suptitle(title)
    return fig


#: summary columns shown, in order, with their headers.
TABLE_COLUMNS: dict[str, str] = {
    "explained_variance": "EV",
    "l0": "L0",
    "dead_fraction": "dead share",
    "spliced_ndcg@10": "spliced NDCG@10",
    "rbo": "RBO@30",
    "mean_max_corr": "mean max corr",
    "purity@10": "purity@10",
    "description_confidence": "description conf.",
    "train_seconds": "train s",
    "rows_per_second": "rows/s",
}


def comparison_table(summary: Any, caption: str | None = None) -> Any:
    """The per-site table: one row per architecture, each cell ``mean [low, high]`` (95 % t-interval over
    seeds; :func:`recsae_core.compare.summarise`), plus the matched L1 coefficient. Columns whose values are
    all missing (RBO away from the MF site) are left out."""
    import numpy as np
    import pandas as pd

    def cell(m: float, lo: float, hi: float, big: bool) -> str:
        if not np.isfinite(m):
            return "–"
        f = "{:,.0f}" if big else "{:.3f}"
        if not (np.isfinite(lo) and np.isfinite(hi)):
            return f.format(m)
        return f"{f.format(m)} [{f.format(lo)}, {f.format(hi)}]"

    out = pd.DataFrame({"architecture": summary["architecture"]})
    out["L1 coeff"] = [("–" if not np.isfinite(c) else f"{c:.3g}") for c in summary["coeff"]]
    for col, name in TABLE_COLUMNS.items():
        if col not in summary or not summary[col].notna().any():
            continue
        big = col in ("rows_per_second",)
        out[name] = [
            cell(m, lo, hi, big)
            for m, lo, hi in zip(summary[col], summary[f"{col}_lo"], summary[f"{col}_hi"], strict=True)
        ]
    out["seeds"] = summary["seeds"].to_numpy()
    return table(out, index=False, caption=caption)
