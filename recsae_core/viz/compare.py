"""The side-by-side chapter's figures and tables (issue 13): every SAE architecture at one paper's site.

The numbers come from :mod:`recsae_core.compare` (``compare_site`` runs, ``summarise`` intervals); these
functions only draw them.
"""

from __future__ import annotations

from typing import Any

from recsae_core.viz.base import table

__all__ = ["ARCH_COLOURS", "TABLE_COLUMNS", "TABLE_COLUMNS_2", "comparison_table", "plot_pareto"]

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
    summary: Any,
    metrics: tuple[str, ...] = ("explained_variance", "mean_max_corr", "spliced_ndcg@10"),
    title: str | None = None,
) -> Any:
    """One panel per metric against L0 (log scale), the fourth cell of the 2 x 2 grid holds the legend: each
    matched SAE as a small dot (one per seed), the seeds' mean with its 95 % interval (``summary``'s
    ``<col>_lo``/``_hi``) as a large marker with error bars, and for the L1-type SAEs the coefficient search's
    other runs (seed 0) as crosses joined in L0 order — their L0 sweep. Dashed lines: the base model's NDCG and
    the raw neurons' mean max correlation.

    Args:
        runs: :func:`recsae_core.compare.compare_site`'s frame (``run``, ``architecture``, ``l0``, the metrics).
        summary: :func:`recsae_core.compare.summarise` of ``runs``.
    """
    import matplotlib.pyplot as plt
    import numpy as np
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    fig, grid = plt.subplots(2, 2, figsize=(9.5, 7.2))
    axes = grid.ravel()
    for ax, col in zip(axes, metrics, strict=False):
        for arch, g in runs.groupby("architecture", sort=False):
            c = ARCH_COLOURS.get(arch, "C7")
            matched = g[g["run"] == "matched"]
            search = g[g["run"] == "search"]
            if len(search):
                pts = [search[["l0", col]].to_numpy(float), matched.iloc[:1][["l0", col]].to_numpy(float)]
                line = np.concatenate(pts)
                line = line[np.argsort(line[:, 0])]
                ax.plot(line[:, 0], line[:, 1], color=c, lw=1, alpha=0.6, marker="x", ms=6)
            ax.scatter(matched["l0"], matched[col], color=c, s=14, alpha=0.6)
            s = summary[summary["architecture"] == arch]
            if len(s) and np.isfinite(float(s[col].iloc[0])):
                m, lo, hi = (float(s[k].iloc[0]) for k in (col, f"{col}_lo", f"{col}_hi"))
                err = [[m - lo], [hi - m]] if np.isfinite(lo) and np.isfinite(hi) else None
                ax.errorbar(
                    float(s["l0"].iloc[0]), m, yerr=err, color=c, marker="o", ms=8, capsize=3, label=arch
                )
        if col == "spliced_ndcg@10" and "base_ndcg@10" in runs:
            ax.axhline(float(runs["base_ndcg@10"].iloc[0]), color="k", ls="--", lw=1, label="base model")
        if col == "mean_max_corr" and "neuron_mean_max_corr" in runs:
            ax.axhline(
                float(runs["neuron_mean_max_corr"].iloc[0]), color="0.4", ls=":", lw=1.5, label="raw neurons"
            )
        ax.set_xscale("log")
        ax.xaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_xlabel(LABELS["l0"])
        ax.set_ylabel(LABELS.get(col, col))
        ax.set_title(f"{LABELS.get(col, col)} vs L0")
    handles, labels = [], []
    for ax in axes[: len(metrics)]:
        for h, lab in zip(*ax.get_legend_handles_labels(), strict=True):
            if lab not in labels:
                handles.append(h)
                labels.append(lab)
    for ax in axes[len(metrics) :]:
        ax.axis("off")
    legend_ax = axes[len(metrics)] if len(metrics) < len(axes) else axes[-1]
    legend_ax.legend(
        handles, labels, loc="center", title="mean ± 95 % interval;\n× = L1 search runs (seed 0)"
    )
    if title:
        fig.suptitle(title)
    return fig


#: the first table's columns (reconstruction and accuracy), in order, with their headers.
TABLE_COLUMNS: dict[str, str] = {
    "coeff": "L1 coeff",
    "l0": "L0",
    "explained_variance": "EV",
    "dead_fraction": "dead share",
    "spliced_ndcg@10": "spliced NDCG@10",
    "rbo": "RBO@30",
}
#: decimals per column (3 for the others).
DECIMALS: dict[str, int] = {"l0": 1, "train_seconds": 1, "rows_per_second": 0}
#: the second table's columns (interpretability and cost).
TABLE_COLUMNS_2: dict[str, str] = {
    "mean_max_corr": "mean max corr",
    "purity@10": "purity@10",
    "description_confidence": "description conf.",
    "train_seconds": "train s",
    "rows_per_second": "rows/s",
}


def comparison_table(summary: Any, columns: dict[str, str] | None = None, caption: str | None = None) -> Any:
    """A per-site table: one row per architecture, each cell ``mean ± half-width`` of the 95 % t-interval over
    seeds (:func:`recsae_core.compare.summarise`; asymmetric intervals do not occur, the t-interval is
    symmetric). ``columns`` (default :data:`TABLE_COLUMNS`) maps summary columns to headers; columns whose
    values are all missing (RBO away from the MF site) are left out."""
    import numpy as np
    import pandas as pd

    def cell(m: float, lo: float, hi: float, decimals: int) -> str:
        if not np.isfinite(m):
            return "–"
        f = f"{{:,.{decimals}f}}"
        if not (np.isfinite(lo) and np.isfinite(hi)):
            return f.format(m)
        return f"{f.format(m)} ± {f.format((hi - lo) / 2)}"

    out = pd.DataFrame({"architecture": summary["architecture"].to_numpy()})
    for col, name in (columns or TABLE_COLUMNS).items():
        if col == "coeff":
            out[name] = [("–" if not np.isfinite(c) else f"{c:.3g}") for c in summary["coeff"]]
            continue
        if col not in summary or not summary[col].notna().any():
            continue
        decimals = DECIMALS.get(col, 3)
        out[name] = [
            cell(m, lo, hi, decimals)
            for m, lo, hi in zip(summary[col], summary[f"{col}_lo"], summary[f"{col}_hi"], strict=True)
        ]
    return table(out, index=False, caption=caption)
