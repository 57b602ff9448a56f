"""P1's figures (papers.md §1.9): the sweeps (Fig. 3), features vs neurons (Fig. 4), activations split by
genre presence (Fig. 5). Inputs are :mod:`recsae_core.papers.p1`'s frames; these functions only draw."""

from __future__ import annotations

import warnings
from typing import Any

__all__ = ["plot_activation_split", "plot_features_vs_neurons", "plot_sweep", "plot_users_curve"]

_SWEEP_METRICS = {
    "mean_max_corr": "mean max correlation",
    "explained_variance": "explained variance",
    "l0": "L0 (active per row)",
    "dead_fraction": "dead features (share)",
}
_SWEEP_X = {"l1": ("l1_coeff", "L1 coefficient"), "dict_size": ("n_latents", "dictionary size")}


def plot_sweep(sweep: Any, metrics: tuple[str, ...] = tuple(_SWEEP_METRICS)) -> Any:
    """P1 Fig. 3: one row per sweep present (L1 coefficient, dictionary size), one column per metric,
    log x. The raw neurons' mean max correlation, when the frame has it, is a dotted reference line."""
    import matplotlib.pyplot as plt

    sweeps = [s for s in _SWEEP_X if (sweep["sweep"] == s).any()]
    if not sweeps:
        raise ValueError(f"no sweep rows; expected 'sweep' in {list(_SWEEP_X)}")
    fig, axes = plt.subplots(
        len(sweeps), len(metrics), figsize=(3.3 * len(metrics), 3.0 * len(sweeps)), squeeze=False
    )
    for r, s in enumerate(sweeps):
        xcol, xlabel = _SWEEP_X[s]
        sub = sweep[sweep["sweep"] == s].sort_values(xcol)
        fixed = sub["n_latents"].iloc[0] if s == "l1" else sub["l1_coeff"].iloc[0]
        fixed_text = f"dictionary {fixed:g}" if s == "l1" else f"L1 {fixed:g}"
        for c, m in enumerate(metrics):
            ax = axes[r, c]
            ax.plot(sub[xcol], sub[m], marker="o", color=f"C{c}")
            if m == "mean_max_corr" and "neuron_mean_max_corr" in sub:
                ax.axhline(
                    float(sub["neuron_mean_max_corr"].iloc[0]), ls=":", color="grey", label="raw neurons"
                )
                ax.legend(fontsize="x-small")
            ax.set_xscale("log", base=2 if s == "dict_size" else 10)
            ax.set_xlabel(xlabel)
            ax.set_ylabel(_SWEEP_METRICS.get(m, m))
            ax.set_title(f"{'L1' if s == 'l1' else 'size'} sweep, {fixed_text}", fontsize="small")
    with warnings.catch_warnings():  # the reference line's legend: tight_layout's harmless warning
        warnings.simplefilter("ignore", UserWarning)
        fig.tight_layout()
    return fig


def plot_features_vs_neurons(table: Any, metric: str = "corr") -> Any:
    """P1 Fig. 4: per genre, paired horizontal bars of the best SAE feature and the best raw neuron.

    Args:
        table: :func:`recsae_core.papers.p1.features_vs_neurons`.
        metric: ``"corr"`` (Pearson) or ``"auc"`` (ROC-AUC).
    """
    import matplotlib.pyplot as plt
    import numpy as np

    if metric not in ("corr", "auc"):
        raise ValueError(f"metric must be 'corr' or 'auc', got {metric!r}")
    t = table.sort_values(f"sae_{metric}", ascending=True, kind="stable")
    y = np.arange(len(t))
    fig, ax = plt.subplots(figsize=(7.5, max(3.0, 0.28 * len(t) + 1.2)))
    means = table.attrs
    ax.barh(
        y + 0.2,
        t[f"sae_{metric}"],
        height=0.4,
        color="C0",
        label=f"best SAE feature (mean {means.get(f'sae_mean_max_{metric}', t[f'sae_{metric}'].mean()):.3f})",
    )
    ax.barh(
        y - 0.2,
        t[f"neuron_{metric}"],
        height=0.4,
        color="C7",
        label=f"best raw neuron (mean {means.get(f'neuron_mean_max_{metric}', t[f'neuron_{metric}'].mean()):.3f})",
    )
    ax.set_yticks(y, t["label"])
    name = "Pearson correlation" if metric == "corr" else "ROC-AUC"
    ax.set_xlabel(f"max {name} over features / neurons")
    ax.set_ylabel("genre")
    if metric == "auc":
        ax.set_xlim(0.5, 1.0)
    ax.set_title(f"SAE features vs raw neurons, per genre ({name})")
    ax.legend(loc="lower right", fontsize="small")
    return fig


def plot_activation_split(split: Any, *, bins: int = 50, log: bool = True) -> Any:
    """P1 Fig. 5: one feature's activation histogram with the genre present vs absent (density, each side
    normalised; log counts by default since most activations are 0), and the two ECDFs.

    Args:
        split: :func:`recsae_core.papers.p1.activation_split` (``attrs`` name the feature and the genre).
    """
    import matplotlib.pyplot as plt
    import numpy as np

    feat, lab = split.attrs.get("feature", "?"), split.attrs.get("label", "?")
    a = split["activation"].to_numpy()
    edges = np.linspace(
        float(a.min()), float(a.max()) if a.max() > a.min() else float(a.min()) + 1.0, bins + 1
    )
    fig, (ax_h, ax_e) = plt.subplots(1, 2, figsize=(10, 3.6))
    for present, colour, text in ((True, "C1", f"{lab} present"), (False, "C0", f"{lab} absent")):
        v = split.loc[split["present"] == present, "activation"].to_numpy()
        if len(v) == 0:
            continue
        ax_h.hist(
            v, bins=edges, density=True, alpha=0.55, color=colour, label=f"{text} (n = {len(v):,})", log=log
        )
        xs = np.sort(v)
        ax_e.step(xs, np.arange(1, len(xs) + 1) / len(xs), where="post", color=colour, label=text)
    ax_h.set_xlabel(f"activation of feature {feat}")
    ax_h.set_ylabel("density" + (" (log)" if log else ""))
    ax_h.set_title(f"feature {feat} by {lab} presence")
    ax_h.legend(fontsize="small")
    ax_e.set_xlabel(f"activation of feature {feat}")
    ax_e.set_ylabel("share of rows ≤ x (ECDF)")
    ax_e.set_title("ECDF")
    ax_e.legend(fontsize="small", loc="lower right")
    return fig


def plot_users_curve(
    curve: Any,
    fit: dict[str, Any],
    paper_users: int,
    paper_value: float,
    dataset: str,
    column: str = "mean_max_corr",
) -> Any:
    """The mean max correlation against the base model's training users (:func:`recsae_core.papers.p1.\
training_users_curve`), the saturating fit ``a - b·n^(-c)`` (:func:`~recsae_core.papers.p1.extrapolate_users`)
    drawn out to the paper's users, and the paper's point (P1's GPT4Rec on ML-1M) as a star."""
    import matplotlib.pyplot as plt
    import numpy as np

    n = np.linspace(float(curve["train_users"].min()), float(paper_users), 200)
    fig, ax = plt.subplots(figsize=(6.5, 3.6))
    ax.plot(n, fit["a"] - fit["b"] * n ** -fit["c"], "--", color="0.55", label="fit a − b·n^(−c)")
    ax.plot(curve["train_users"], curve[column], "o", label=f"recsae: SASRec+ on {dataset}")
    ax.plot(paper_users, paper_value, "*", ms=13, color="C3", label="P1: GPT4Rec on ML-1M")
    ax.set_xlabel("users the base model was trained on")
    ax.set_ylabel("mean max correlation (SAE)")
    ax.set_title("SAE–genre alignment vs the base model's training data")
    ax.legend(loc="lower right")
    return fig
