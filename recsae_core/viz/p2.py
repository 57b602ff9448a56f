"""P2's figures and tables (RecSAE, papers.md §2.9): SAE training curves per epoch and the reconstruction
table (base vs trained vs untrained SAE spliced in)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from recsae_core.viz.base import table

__all__ = ["plot_confidence_histograms", "plot_p2_training_curves", "reconstruction_table_view"]

DEV_METRIC = "dev_ndcg@5"  # recsae_core.papers.p2.DEV_METRIC (not imported: viz stays light)


def plot_p2_training_curves(
    results: Mapping[str, Any],
    base_dev: Mapping[str, float] | None = None,
    metric: str = DEV_METRIC,
) -> Any:
    """Training loss, dead latents and dev NDCG@5 (SAE spliced in) per epoch, one line per run (papers.md
    §2.9, P2's ``0_analysis_trainLog.py``); ★ marks the epoch kept, a dotted line the base model's dev value.

    Args:
        results: run label (e.g. ``"SASRec k=8"``) -> :class:`~recsae_core.sae.SAETrainResult` with an
            ``epoch_history`` (:func:`recsae_core.papers.p2.train_p2_sae`).
        base_dev: run label -> the base model's dev value of ``metric`` (default: each result's
            ``meta["base_dev_ndcg@5"]`` when present).
        metric: the per-epoch key plotted in the third panel.
    """
    import matplotlib.pyplot as plt

    fig, (ax_l, ax_d, ax_v) = plt.subplots(1, 3, figsize=(13, 3.8))
    for i, (label, res) in enumerate(results.items()):
        h = res.epoch_history
        if not h:
            raise ValueError(f"run {label!r} has no epoch_history (train with epochs and an epoch callback)")
        colour = f"C{i % 10}"
        epochs = [r["epoch"] for r in h]
        ax_l.plot(epochs, [r["loss"] for r in h], color=colour, marker="o", ms=3, label=label)
        ax_d.plot(epochs, [r["dead_latents"] for r in h], color=colour, marker="o", ms=3)
        if all(metric in r for r in h):
            ax_v.plot(epochs, [r[metric] for r in h], color=colour, marker="o", ms=3)
            if res.best_epoch is not None:
                best = h[int(res.best_epoch) - 1][metric]
                ax_v.plot([res.best_epoch], [best], marker="*", ms=11, color=colour, mec="k", mew=0.6)
        base = (base_dev or {}).get(label, res.meta.get(f"base_{metric}"))
        if base is not None:
            ax_v.axhline(float(base), color=colour, ls=":", lw=1.2)
    from matplotlib.ticker import MaxNLocator

    for ax in (ax_l, ax_d, ax_v):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax_l.set_yscale("log")
    ax_v.margins(y=0.1)  # the base model's dotted line is often the highest value: keep it off the frame
    ax_l.set(xlabel="epoch", ylabel="training loss (FVU + AuxK / 32)", title="training loss")
    ax_d.set(xlabel="epoch", ylabel="latents never active in the epoch", title="dead latents")
    name = metric.removeprefix("dev_").upper()
    ax_v.set(
        xlabel="epoch",
        ylabel=f"dev {name}, SAE spliced in",
        title=f"dev {name} (★ epoch kept, ··· base model)",
    )
    handles, labels = ax_l.get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside right center")
    return fig


def reconstruction_table_view(df: Any, *, caption: str | None = None, precision: int = 4) -> Any:
    """The reconstruction table (:func:`recsae_core.papers.p2.reconstruction_table`) styled for the book:
    model display names, "–" for the base rows' k, and a caption stating the pessimistic tie rule."""
    from recsae_core.viz.models import model_label

    out = df.copy()
    out["model"] = [model_label(m) for m in out["model"]]
    out["k"] = out["k"].astype(object).where(out["k"].notna(), "–")
    cap = caption or (
        "Full ranking, seen items masked, ties ranked pessimistically as ReChorus does (P2): base model, "
        "trained SAE spliced in, untrained SAE spliced in."
    )
    return table(out, index=False, caption=cap, precision=precision)


def plot_confidence_histograms(scores: Mapping[str, Any], *, threshold: float = 0.8) -> Any:
    """P2's three histograms per run (papers.md §2.7, §4.5): recall, precision and confidence of every
    described latent, as the share of latents per value (one line per run, e.g. ``"BPR-MF k=8"``); the
    dashed line marks the high-confidence threshold (0.8).

    Args:
        scores: run label -> DataFrame with columns ``recall``, ``precision``, ``confidence``
            (:func:`recsae_core.papers.p2.concept_scores`).
    """
    import matplotlib.pyplot as plt
    import numpy as np

    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6), sharey=True)
    edges = np.linspace(-0.05, 1.05, 12)  # one bin per multiple of 0.1
    centres = (edges[:-1] + edges[1:]) / 2
    for i, (label, df) in enumerate(scores.items()):
        if len(df) == 0:
            continue
        for ax, col in zip(axes, ("recall", "precision", "confidence"), strict=True):
            counts, _ = np.histogram(df[col].to_numpy(float), bins=edges)
            ax.plot(centres, counts / len(df), marker="o", ms=3, color=f"C{i % 10}", label=label)
    for ax, col in zip(axes, ("recall", "precision", "confidence"), strict=True):
        ax.set(xlabel=col, xlim=(-0.05, 1.05), title=f"{col} of the descriptions")
    axes[2].axvline(threshold, color="k", ls="--", lw=1)
    axes[0].set_ylabel("share of described latents")
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside right center")
    return fig
