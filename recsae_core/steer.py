"""Steering: edit SAE features of users or items and score with the frozen recommender (P1 §1.8, P3 §3.7).

Edits (:class:`Steer`): **add** ``alpha`` to a feature (P1), **set** it to a value (P1's "set to 10", P3's
boosting/promotion), **suppress** it by setting a negative value (P3 allows negative activations), or
**scale** it (at an item-table site the one edit that re-ranks a dot-product model: see :class:`Steer`).
Where: user-vector sites (``<model>.user``, ``sasrec.last``), SASRec positions (``sasrec.block0``, by
default the last position, as P1), or rows of an item table (``<model>.item``, P3's item promotion).

With ``keep_error=True`` (default) the site receives ``x + decode(f') - decode(f)``: only the edit reaches
the model, and ``alpha = 0`` returns the base model's scores exactly. ``keep_error=False`` writes
``decode(f')`` (P1's notebooks: "alpha = 0" then already includes the SAE's reconstruction error);
label plots accordingly (engineering.md §2.9).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import pandas as pd
import torch

from recsae_core import metrics
from recsae_core.data.dataset import Split
from recsae_core.evaluate import rank_metrics
from recsae_core.models.base import Recommender, UserBatch
from recsae_core.probe import eval_cases, spliced_scores_fn
from recsae_core.sae.base import SparseAutoencoder
from recsae_core.utils import resolve_device

__all__ = ["Steer", "steer_scores", "steered_scores_fn", "steering_sweep", "suppress"]

MODES = ("add", "set", "scale")


@dataclass(frozen=True)
class Steer:
    """An edit of SAE activations: ``acts[:, features] += value`` (``"add"``), ``= value`` (``"set"``) or
    ``*= value`` (``"scale"``: 1 leaves them, 0 removes the features, negative values invert them).

    At an item-table site (``<model>.item``) ``add`` and ``set`` move every item by the same vector, which
    shifts each user's scores uniformly and leaves the ranking of a dot-product model unchanged; ``scale``
    acts on each item in proportion to its own activation, so it is the edit that re-ranks there."""

    features: int | tuple[int, ...]
    value: float
    mode: str = "add"

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"Steer.mode must be one of {MODES}, got {self.mode!r}")
        feats = (self.features,) if isinstance(self.features, int) else tuple(int(f) for f in self.features)
        if not feats or any(f < 0 for f in feats):
            raise ValueError(f"Steer.features must be non-negative feature ids, got {self.features!r}")
        object.__setattr__(self, "features", feats)

    def __call__(self, acts_NM: torch.Tensor) -> torch.Tensor:
        feats = list(self.features)  # type: ignore[arg-type]
        if max(feats) >= acts_NM.shape[-1]:
            raise ValueError(f"feature {max(feats)} out of range for {acts_NM.shape[-1]} latents")
        out = acts_NM.clone()
        if self.mode == "add":
            out[..., feats] += self.value
        elif self.mode == "scale":
            out[..., feats] *= self.value
        else:
            out[..., feats] = self.value
        return out


def suppress(features: int | Sequence[int], value: float = -1.0) -> Steer:
    """P3's suppression: set the feature(s) to a negative value (its Horror neuron at -0.5 ... -1.5)."""
    if value > 0:
        raise ValueError(f"suppression sets a value <= 0, got {value}")
    return Steer(features if isinstance(features, int) else tuple(features), value, "set")


def steered_scores_fn(
    model: Recommender,
    site: str,
    sae: SparseAutoencoder,
    steer: Steer | Callable[[torch.Tensor], torch.Tensor],
    *,
    keep_error: bool = True,
    positions: str = "last",
    rows: torch.Tensor | Sequence[int] | None = None,
) -> Callable[[UserBatch], torch.Tensor]:
    """``UserBatch -> (B, n_items)`` scores of the frozen model with the edit applied at ``site``.

    Steering is splicing with an edit: this is :func:`recsae_core.probe.spliced_scores_fn` with the
    steering defaults (error term kept, P1's last position).

    Args:
        steer: a :class:`Steer` or any ``acts -> acts`` function.
        keep_error: add only ``decode(f') - decode(f)`` to the original representation (module docstring).
        positions: for ``(B, L, D)`` sites, edit the ``"last"`` position (P1) or ``"all"`` non-padding ones.
        rows: for item-table sites, the items to edit (P3 promotes one item); ``None`` = every row.
    """
    return spliced_scores_fn(
        model, site, sae, edit=steer, keep_error=keep_error, positions=positions, rows=rows
    )


def steer_scores(
    model: Recommender,
    site: str,
    sae: SparseAutoencoder,
    batch: UserBatch,
    steer: Steer | Callable[[torch.Tensor], torch.Tensor],
    **kw: object,
) -> torch.Tensor:
    """Scores ``(B, n_items)`` for one batch (see :func:`steered_scores_fn` for the keyword arguments)."""
    return steered_scores_fn(model, site, sae, steer, **kw)(batch)  # type: ignore[arg-type]


def steering_sweep(
    model: Recommender,
    site: str,
    sae: SparseAutoencoder,
    split: Split,
    part: str = "test",
    features: int | Sequence[int] | None = None,
    values: Sequence[float] | None = None,
    *,
    item_labels: torch.Tensor,
    label_names: Sequence[str] | None = None,
    users: torch.Tensor | Sequence[int] | None = None,
    mode: str = "add",
    keep_error: bool = True,
    k: int = 10,
    positions: str = "last",
    rows: torch.Tensor | Sequence[int] | None = None,
    batch_size: int = 512,
    ties: str = "optimistic",
    device: str | torch.device | None = None,
) -> pd.DataFrame:
    """Steering outcomes as the edit strength varies (P1 §1.8's "proportion of genres" vs alpha; P3 §3.7).

    The users are the evaluation cases of ``part`` (optionally only ``users``), built as
    :func:`recsae_core.probe.splice_accuracy` and :mod:`recsae_core.evaluate` build them: histories from
    ``Split.history_for(part)``, targets from ``Split.targets(part)``, seen items masked. For each value:
    the top-``k`` lists give the share of each label (``share_<name>``: mean over cases of the fraction
    of their top-k carrying it), ``coverage@k`` and ``diversity@k`` (inter-list), and ``hr@k``,
    ``ndcg@k``, ``mrr@k`` of the held-out targets (:func:`recsae_core.evaluate.rank_metrics`, tie rule
    ``ties``). One row per value. Item-table sites (``<model>.item``) edit ``rows`` of the table and score
    the same users.

    Args:
        split, part, users: whose recommendations are steered.
        features, values: the feature(s) to edit and the strengths (required).
        item_labels: ``(n_items,)`` bool (one label) or ``(n_items, g)``.
        Other arguments: see :func:`steered_scores_fn`.
    """
    if not isinstance(part, str):
        raise TypeError(
            f"part must be 'valid' or 'test', got {type(part).__name__}; the signature is "
            "steering_sweep(model, site, sae, split, part, features, values, ...)"
        )
    if features is None or values is None:
        raise TypeError("steering_sweep needs features= and values=")
    labels = torch.as_tensor(item_labels)
    if labels.ndim == 1:
        labels = labels[:, None]
    names = list(label_names) if label_names is not None else [str(j) for j in range(labels.shape[1])]
    if len(names) != labels.shape[1]:
        raise ValueError(f"{len(names)} label names for {labels.shape[1]} labels")
    dev = resolve_device(device)
    model.eval().to(dev)
    sae.eval().to(dev)
    data = eval_cases(model, split, part, users)
    feats = features if isinstance(features, int) else tuple(features)
    out = []
    for v in values:
        fn = steered_scores_fn(
            model,
            site,
            sae,
            Steer(feats, float(v), mode),
            keep_error=keep_error,
            positions=positions,
            rows=rows,
        )
        tops, acc = [], {}
        for eb in data.batches(batch_size):
            scores = fn(eb.batch.to(dev))
            seen = (eb.seen_rows, eb.seen_items)
            tops.append(metrics.top_k_items(scores, k, seen).cpu())
            r = rank_metrics(scores, eb.targets.to(dev), seen, ks=(k,), ties=ties)
            for key in (f"hr@{k}", f"ndcg@{k}", f"mrr@{k}"):
                acc[key] = acc.get(key, 0.0) + r[key] * len(eb.targets)
        top = torch.cat(tops)
        row: dict[str, float] = {"value": float(v)}
        share = metrics.label_share(top, labels)
        row.update({f"share_{nm}": float(s) for nm, s in zip(names, share.reshape(-1), strict=True)})
        row.update({key: val / len(data) for key, val in acc.items()})
        row[f"coverage@{k}"] = metrics.coverage(top, model.n_items)
        row[f"diversity@{k}"] = metrics.inter_list_diversity(top)
        out.append(row)
    return pd.DataFrame(out)
