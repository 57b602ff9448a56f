"""P2 — RecSAE (Wang et al., arXiv 2411.06112; papers.md §2): TopK SAEs on the user representation
"before the prediction layer" of SASRec, BPR-MF and LightGCN, trained with P2's protocol, and the
reconstruction table (base vs trained vs untrained SAE spliced in).

Protocol (papers.md §2.3–2.5), as :func:`p2_sae_config` and :func:`p2_train_config` set it:

* TopK SAE, ``n_latents = scale * d`` (P2: 16 x 64 = 1,024), ``k`` in {4, 8, 16}; AuxK with weight 1/32
  and ``k_aux = d / 2`` from epoch 2; decoder atoms set to unit norm at initialisation and at the start of
  every epoch (``decoder_norm="epoch"``); Adam with weight decay 1e-6, no warm-up; <= 50 epochs.
* Every epoch the dev part (``split`` part ``"valid"``) is ranked with the SAE reconstruction spliced in;
  the epoch with the best dev NDCG@5 is kept, early stop after 10 epochs without improvement.
* Ranks are pessimistic on ties (ReChorus ``gt_rank`` counts items scoring ``>=`` the target,
  papers.md §4.3, §2.11): ``ties="pessimistic"`` throughout this module.
* SASRec: the SAE trains on the final hidden states at **every** valid position (site ``sasrec.final``)
  and is spliced in at the last position only (the one that is scored).

Deviations (stated where they are used): ``batch_size`` counts rows, not users (P2's 4-16 users bring up
to ``history_max`` = 20 positions each for SASRec); the AuxK dead set follows the trainer's rolling rule
(:mod:`recsae_core.sae.trainer`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import torch

from recsae_core import probe
from recsae_core.batching import eval_data, history_frame, pad_left
from recsae_core.data.dataset import Split
from recsae_core.evaluate import DEFAULT_KS, evaluate_data
from recsae_core.models.base import Recommender, UserBatch
from recsae_core.sae import (
    EpochSelection,
    SAETrainResult,
    SparseAutoencoder,
    TopKConfig,
    TrainConfig,
    from_config,
    train_sae,
)
from recsae_core.utils import resolve_device

__all__ = [
    "DEV_METRIC",
    "INFER_POSITIONS",
    "P2_KS",
    "P2_SITES",
    "TIES",
    "dev_callback",
    "p2_sae_config",
    "p2_site",
    "p2_train_activations",
    "p2_train_config",
    "p2_user_batch",
    "reconstruction_table",
    "train_p2_sae",
    "untrained_sae",
]

#: the probed site per model family (papers.md §2.5: "before the prediction layer").
P2_SITES: dict[str, str] = {"sasrec": "sasrec.final", "bprmf": "bprmf.user", "lightgcn": "lightgcn.user"}
#: P2's grid of active latents (papers.md §2.4; +32 on LastFM).
P2_KS: tuple[int, ...] = (4, 8, 16)
#: P2 ranks ties pessimistically (ReChorus, papers.md §4.3).
TIES = "pessimistic"
#: the per-epoch record key P2 selects on: dev NDCG@5 with the SAE spliced in (papers.md §2.3).
DEV_METRIC = "dev_ndcg@5"
#: P2 trains on every position of ``(B, L, D)`` sites but splices (infers) at the last one (§2.5).
INFER_POSITIONS = "last"


def p2_site(model: Recommender) -> str:
    """The P2 site of ``model`` (``sasrec.final``, ``bprmf.user`` or ``lightgcn.user``; papers.md §2.5)."""
    found = [s for s in P2_SITES.values() if s in model.sites]
    if len(found) != 1:
        raise ValueError(
            f"{type(model).__name__} has none of P2's sites {sorted(P2_SITES.values())}; its sites are "
            f"{sorted(model.sites)}"
        )
    return found[0]


def p2_sae_config(d: int, k: int, scale: int = 16) -> TopKConfig:
    """P2's TopK SAE (papers.md §2.3–2.4): ``scale * d`` latents (16 x 64 = 1,024), ``k`` active, AuxK
    1/32 with ``k_aux = d // 2`` (32 for d = 64), raw inputs, decoder renormalised once per epoch."""
    return TopKConfig(
        d_in=d,
        n_latents=scale * d,
        k=k,
        aux_k=max(1, d // 2),
        aux_coeff=1 / 32,
        input_norm="none",
        decoder_norm="epoch",
    )


def p2_train_config(
    *,
    lr: float = 1e-4,
    batch_size: int = 16,
    epochs: int = 50,
    patience: int = 10,
    weight_decay: float = 1e-6,
) -> TrainConfig:
    """P2's optimisation (papers.md §2.3–2.4): Adam, no warm-up, weight decay 1e-6 (ReChorus ``--l2``),
    a fresh permutation per epoch, <= 50 epochs, AuxK from epoch 2, best dev NDCG@5 kept, early stop 10.

    ``lr`` and ``batch_size`` defaults: the README example (``--sae_lr 1e-4``) and the larger of P2's two
    batch sizes (16; the authors' table picks 1e-5..1e-4 and 4 or 16 per model, dataset and k).
    Deviation: ``batch_size`` counts rows (for SASRec, positions), P2 counts users.
    """
    return TrainConfig(
        epochs=epochs,
        batch_size=batch_size,
        lr=lr,
        warmup_steps=0,
        weight_decay=weight_decay,
        sampling="epochs",
        aux_start_epoch=2,
        selection=EpochSelection(DEV_METRIC, mode="max", patience=patience),
    )


def p2_user_batch(split: Split, maxlen: int | None) -> UserBatch:
    """Every user with training interactions and their training history (left-padded to ``maxlen``; no
    sequences when ``maxlen`` is None): the rows P2's SAE is trained on (papers.md §2.4)."""
    hist = history_frame(split, "train")
    n_users = split.dataset.n_users
    users = np.unique(hist["user"].to_numpy(np.int64))
    seqs = None
    if maxlen is not None:
        all_seqs = pad_left(hist["user"].to_numpy(), hist["item"].to_numpy() + 1, n_users, maxlen)
        seqs = torch.from_numpy(np.ascontiguousarray(all_seqs[users]))
    return UserBatch(torch.from_numpy(users), seqs)


def p2_train_activations(
    model: Recommender,
    site: str,
    split: Split,
    *,
    batch_size: int = 256,
    device: str | torch.device | None = None,
    progress: bool = True,
) -> probe.ActivationSet:
    """The SAE's training rows (papers.md §2.5): for ``(B, L, D)`` sites every valid position of the
    training histories, for user-vector sites one row per training user."""
    batch = p2_user_batch(split, getattr(model, "maxlen", None))
    return probe.collect_activations(
        model, site, batch, positions="all", batch_size=batch_size, device=device, progress=progress
    )


def dev_callback(
    model: Recommender,
    site: str,
    split: Split,
    part: str = "valid",
    ks: Sequence[int] = (5,),
    *,
    batch_size: int = 512,
    device: str | torch.device | None = None,
) -> Callable[[int, SparseAutoencoder], dict[str, float]]:
    """An ``epoch_callback`` for :func:`~recsae_core.sae.train_sae`: HR/NDCG at ``ks`` on ``part`` with the
    SAE reconstruction spliced in at ``site`` (last position), ties pessimistic (papers.md §2.3, §4.3).

    Keys are ``"dev_hr@K"`` and ``"dev_ndcg@K"`` (:data:`DEV_METRIC` = ``"dev_ndcg@5"``). The evaluation
    cases are built once.
    """
    dev = resolve_device(device)
    data = eval_data(split, part, getattr(model, "maxlen", None))
    model.eval().to(dev)

    def callback(epoch: int, sae: SparseAutoencoder) -> dict[str, float]:
        score = probe.spliced_scores_fn(model, site, sae, positions=INFER_POSITIONS)
        m = evaluate_data(score, data, ks, batch_size=batch_size, device=dev, ties=TIES)
        return {f"dev_{name}": v for name, v in m.items() if name.split("@")[0] in ("hr", "ndcg")}

    return callback


def train_p2_sae(
    model: Recommender,
    site: str,
    split: Split,
    train_acts: probe.ActivationSet | torch.Tensor,
    k: int,
    *,
    train_config: TrainConfig | None = None,
    scale: int = 16,
    dev_part: str = "valid",
    seed: int = 0,
    batch_size: int = 512,
    device: str | torch.device | None = None,
    progress: bool = True,
    cache: bool = True,
    cache_dir: str | None = None,
) -> SAETrainResult:
    """Train one P2 SAE (papers.md §2.3): :func:`p2_sae_config` ``(d, k, scale)`` on ``train_acts`` with
    dev NDCG@5 (SAE spliced in at ``site``, pessimistic ties) evaluated every epoch and the best epoch kept.

    Args:
        model, site, split: the frozen base model, its P2 site (:func:`p2_site`) and the split whose
            ``dev_part`` selects the epoch.
        train_acts: the training rows (:func:`p2_train_activations`), ``(N, d)``.
        k: active latents (P2: 4, 8, 16).
        train_config: default :func:`p2_train_config`; its ``selection`` metric must be one the dev
            callback returns (``"dev_ndcg@5"``, ``"dev_hr@5"``) or the trainer's own.
        cache: go through :func:`recsae_core.sae_eval.cached_sae` (keyed by the rows, configs, seed,
            the model, the site, the dev part and this protocol); False trains every time.

    Returns:
        The :class:`~recsae_core.sae.SAETrainResult`; ``epoch_history`` holds per epoch ``loss``, ``fvu``,
        ``dead_latents`` and ``dev_hr@5``/``dev_ndcg@5``; ``best_epoch`` the epoch kept;
        ``meta["base_dev_ndcg@5"]`` the base model's dev NDCG@5 (same cases, same tie rule).
    """
    model.check_site(site)
    rows = train_acts.acts if isinstance(train_acts, probe.ActivationSet) else train_acts
    if rows.ndim != 2:
        raise ValueError(f"train_acts must be (N, d) rows, got shape {tuple(rows.shape)}")
    sae_cfg = p2_sae_config(rows.shape[1], k, scale)
    tc = train_config or p2_train_config()
    callback = dev_callback(model, site, split, dev_part, batch_size=batch_size, device=device)

    def fit() -> SAETrainResult:
        res = train_sae(
            sae_cfg, rows, tc, device=device, seed=seed, progress=progress, epoch_callback=callback
        )
        dev = resolve_device(device)
        data = eval_data(split, dev_part, getattr(model, "maxlen", None))
        base = evaluate_data(model.score, data, (5,), batch_size=batch_size, device=dev, ties=TIES)
        res.meta.update({"protocol": "p2", "site": site, "base_dev_ndcg@5": base["ndcg@5"]})
        return res

    if not cache:
        return fit()
    from recsae_core.sae_eval import cached_sae

    extra = {
        "protocol": "p2",
        "model": probe.model_fingerprint(model),
        "site": site,
        "dev_part": dev_part,
        "split": [split.name, int(split.seed), len(split.train), len(split.valid), len(split.test)],
        "ties": TIES,
    }
    return cached_sae(
        train_acts,
        sae_cfg,
        tc,
        seed=seed,
        key_extra=extra,
        train_fn=fit,
        cache_dir=cache_dir,
        device=device,
        progress=progress,
    )


def untrained_sae(sae_config: TopKConfig | SparseAutoencoder, seed: int = 0) -> SparseAutoencoder:
    """P2's "Init" baseline (``--sae_baseline``, papers.md §2.2, §2.10): the same architecture at its
    random initialisation, never trained (eval mode). Spliced in, accuracy collapses (P2 ML-1M: HR@5
    0.0028)."""
    cfg = sae_config.cfg if isinstance(sae_config, SparseAutoencoder) else sae_config
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return from_config(cfg).eval()


def reconstruction_table(
    models: Mapping[str, Recommender],
    saes: Mapping[tuple[str, int], SparseAutoencoder],
    split: Split,
    part: str = "test",
    ks: Sequence[int] = DEFAULT_KS,
    *,
    sites: Mapping[str, str] | None = None,
    seed: int = 0,
    batch_size: int = 512,
    device: str | torch.device | None = None,
) -> Any:
    """P2's reconstruction table (papers.md §2.9, §2.10): HR/NDCG at ``ks`` of each base model, with its
    trained SAE spliced in, and with an untrained SAE of the same architecture spliced in ("Init").

    Args:
        models: name -> frozen base model (its site is :func:`p2_site`).
        saes: ``(model name, k)`` -> trained SAE.
        split, part: evaluation cases (histories by ``Split.history_for``, seen items masked), ties
            pessimistic.
        sites: model name -> site, for models outside P2's families (default :func:`p2_site`).
        seed: initialisation of the untrained SAEs.

    Returns:
        A DataFrame with one row per (model, k, variant): ``variant`` in ``"base"`` (``k`` = NA; one row
        per model), ``"SAE"``, ``"untrained SAE"``; columns ``HR@K``/``NDCG@K`` and ``users``.
    """
    import pandas as pd

    unknown = {m for m, _ in saes} - set(models)
    if unknown:
        raise ValueError(f"saes name models {sorted(unknown)} that are not in models {sorted(models)}")
    dev = resolve_device(device)
    rows: list[dict[str, Any]] = []
    for name, model in models.items():
        site = (sites or {}).get(name) or p2_site(model)
        model.eval().to(dev)
        data = eval_data(split, part, getattr(model, "maxlen", None))

        def run(score: Callable[[UserBatch], torch.Tensor]) -> dict[str, float]:
            return evaluate_data(score, data, ks, batch_size=batch_size, device=dev, ties=TIES)  # noqa: B023

        entries: list[tuple[Any, str, dict[str, float]]] = [(pd.NA, "base", run(model.score))]
        for (m_name, k), sae in sorted(saes.items(), key=lambda kv: (kv[0][0], kv[0][1])):
            if m_name != name:
                continue
            sae = sae.eval().to(dev)
            init = untrained_sae(sae, seed).to(dev)
            for variant, s in (("SAE", sae), ("untrained SAE", init)):
                fn = probe.spliced_scores_fn(model, site, s, positions=INFER_POSITIONS)
                entries.append((k, variant, run(fn)))
        for k, variant, m in entries:
            row: dict[str, Any] = {"model": name, "k": k, "variant": variant}
            for fam in ("hr", "ndcg"):
                for kk in ks:
                    row[f"{fam.upper()}@{kk}"] = m[f"{fam}@{kk}"]
            row["users"] = int(m["n_cases"])
            rows.append(row)
    out = pd.DataFrame(rows)
    out["k"] = out["k"].astype("Int64")
    return out
