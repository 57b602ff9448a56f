"""Train an SAE once, report on it once: the trained-SAE cache and SAELens-style evaluation.

* :func:`cached_activations` — :func:`recsae_core.probe.collect_activations` stored under the artifact
  cache (``<cache_dir>/activations/<site>-<positions>-<key>``).
* :func:`cached_sae` — :func:`recsae_core.sae.train_sae` (or any zero-argument training function) with an
  on-disk cache, the counterpart of :func:`recsae_core.cache.cached_fit`. The key hashes everything that
  determines the trained SAE (see :func:`sae_cache_key`): the rows (the base model's fingerprint, the site,
  the positions mode and the users' histories when the rows come from :func:`cached_activations` /
  ``collect_activations``, else a content hash), the SAE and train configs, the seed, P3's scorer (its
  recommender's fingerprint), a fingerprint of the SAE-training source (:data:`SAE_TRAINING_MODULES`) and a
  caller's ``key_extra`` (e.g. a dev-selection protocol, P2 §2.4).
* :func:`evaluate_sae` → :class:`SAEReport` — reconstruction (P1 §4.4: explained variance, FVU), sparsity
  (L0, dead and dense latents), full-ranking accuracy with the SAE spliced in (P2 §2.5, papers.md §4.3) and
  label alignment of features vs raw neurons (P1 §4.1-4.2), as SAELens's ``run_evals`` does for LMs.

Layout of a cached SAE, ``<cache_dir>/sae/<architecture>-<key>/``: ``sae.safetensors`` + ``sae.json``
(:func:`recsae_core.sae.save_sae`, unfolded so the reloaded SAE is the trained one bit for bit),
``rows_since_fired.safetensors``, ``history.json`` and ``result.json`` (the other result fields; written
last, so its presence marks a complete entry). An entry is assembled in a temporary directory and renamed
into place; an entry that fails to load (corrupt or partial) is deleted and retrained, never half-loaded.
``cache_dir`` defaults to :func:`recsae_core.cache.default_cache_dir`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import hashlib
import importlib
import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from safetensors.torch import load_file, save_file

import recsae_core
from recsae_core import metrics, probe
from recsae_core.cache import default_cache_dir, key_lock
from recsae_core.data.dataset import Split
from recsae_core.models.base import Recommender, UserBatch
from recsae_core.sae import (
    SAEConfig,
    SAETrainResult,
    SparseAutoencoder,
    TrainConfig,
    TwoTowerData,
    config_from_dict,
    load_sae,
    save_sae,
    train_sae,
)
from recsae_core.utils import atomic_write_json, resolve_device, sources_sha256, stable_hash

__all__ = [
    "DENSE_RATE",
    "SAE_TRAINING_MODULES",
    "SAEReport",
    "cached_activations",
    "cached_sae",
    "evaluate_sae",
    "logit_effects",
    "sae_cache_key",
    "sae_source_fingerprint",
]

#: The modules whose code can change a trained SAE: exactly what training an SAE loads in a fresh
#: interpreter (``import recsae_core.sae`` and a ``train_sae`` call of every architecture;
#: tests/test_sae_eval.py checks that nothing outside this list is loaded). The counterpart of
#: :data:`recsae_core.cache.TRAINING_MODULES`; editing this module, plots or probes keeps cached SAEs.
SAE_TRAINING_MODULES: tuple[str, ...] = (
    "recsae_core",
    "recsae_core.errors",
    "recsae_core.sae",
    "recsae_core.sae.base",
    "recsae_core.sae.config",
    "recsae_core.sae.io",
    "recsae_core.sae.kernels",
    "recsae_core.sae.p3",
    "recsae_core.sae.registry",
    "recsae_core.sae.relu_l1",
    "recsae_core.sae.topk",
    "recsae_core.sae.trainer",
    "recsae_core.utils",
)

#: Version of the on-disk layout of a cached SAE (part of the key: a new layout misses old entries).
CACHE_FORMAT = 1
SAE_STEM, RESULT, HISTORY, SINCE_FIRED = "sae", "result.json", "history.json", "rows_since_fired.safetensors"


@functools.lru_cache(maxsize=1)
def sae_source_fingerprint() -> str:
    """sha256 (16 hex) over the source files of :data:`SAE_TRAINING_MODULES`, read once per process (see
    :func:`recsae_core.cache.source_fingerprint`)."""
    root = Path(recsae_core.__file__).resolve().parent
    files = [Path(importlib.import_module(name).__file__).resolve() for name in SAE_TRAINING_MODULES]
    return sources_sha256(root, files)[:16]


# ------------------------------------------------------------------------------------------ activations
def cached_activations(
    model: Recommender,
    site: str,
    data: UserBatch | Iterable[UserBatch],
    *,
    positions: str = "all",
    batch_size: int = 256,
    device: str | torch.device | None = None,
    progress: bool = True,
    cache_dir: str | os.PathLike | None = None,
) -> probe.ActivationSet:
    """:func:`recsae_core.probe.collect_activations` stored under ``<cache_dir>/activations/``.

    The file stem is ``<site>-<positions>-<key>`` with ``key`` a hash of
    :func:`recsae_core.probe.activation_cache_key` (site, positions, model state, users' histories), so
    different models or users never overwrite each other. ``meta["cache_key"]`` of the result is what
    :func:`cached_sae` keys its rows by.
    """
    batches = data if isinstance(data, UserBatch) else list(data)
    key = probe.activation_cache_key(model, site, batches, positions=positions, batch_size=batch_size)
    root = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    stem = root / "activations" / f"{_safe(site)}-{positions}-{stable_hash(key)}"
    return probe.collect_activations(
        model,
        site,
        batches,
        positions=positions,
        batch_size=batch_size,
        device=device,
        progress=progress,
        cache=stem,
    )


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)


# --------------------------------------------------------------------------------------------- SAE key
def _tensor_digest(t: torch.Tensor | None) -> str | None:
    if t is None:
        return None
    t = t.detach().cpu().contiguous()
    h = hashlib.sha256(f"{t.dtype}|{tuple(t.shape)}".encode())
    h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()[:16]


def _rows_key(data: probe.ActivationSet | torch.Tensor | TwoTowerData) -> dict[str, Any]:
    if isinstance(data, probe.ActivationSet):
        key = data.meta.get("cache_key")
        shape = list(data.acts.shape)
        if key:  # site, positions, model fingerprint and the users' histories (probe.activation_cache_key)
            return {"activations": key, "shape": shape}
        return {"tensor": _tensor_digest(data.acts), "shape": shape}
    if isinstance(data, TwoTowerData):
        return {
            "user_emb": _tensor_digest(data.user_emb),
            "item_emb": _tensor_digest(data.item_emb),
            "pairs": _tensor_digest(data.pairs),
            "all_pairs": bool(data.all_pairs),
        }
    if isinstance(data, torch.Tensor):
        return {"tensor": _tensor_digest(data)}
    key_fn = getattr(data, "cache_key", None)
    if callable(key_fn):  # a RowSampler that names its batches (e.g. papers.p3.MinMaxBatches)
        parts = key_fn()
        return {"sampler": type(data).__name__} | {
            k: _rows_key(v) if isinstance(v, torch.Tensor | TwoTowerData) else v for k, v in parts.items()
        }
    raise TypeError(
        "cached_sae trains on an ActivationSet, a (N, d) tensor, TwoTowerData or a RowSampler with "
        f"cache_key(), got {type(data).__name__}"
    )


def _scorer_key(scorer: Callable[..., torch.Tensor] | None) -> dict[str, Any] | None:
    """What determines a P3 scorer: its recommender's state (``probe.model_fingerprint`` of the module
    :func:`recsae_core.sae.two_tower_scorer` attaches, or the scorer itself when it is a module), its
    function's name and the simple values it closes over (e.g. ``pairwise``)."""
    if scorer is None:
        return None
    module = scorer if isinstance(scorer, torch.nn.Module) else getattr(scorer, "module", None)
    module = module if module is not None else getattr(scorer, "__self__", None)
    closure = getattr(scorer, "__closure__", None) or ()
    names = getattr(getattr(scorer, "__code__", None), "co_freevars", ())
    simple = {
        n: c.cell_contents
        for n, c in zip(names, closure, strict=False)
        if isinstance(c.cell_contents, bool | int | float | str)
    }
    return {
        "module": probe.model_fingerprint(module) if isinstance(module, torch.nn.Module) else None,
        "function": getattr(scorer, "__qualname__", type(scorer).__qualname__),
        "closure": simple,
    }


def _sae_config_dict(sae_config: SAEConfig | Mapping[str, Any]) -> dict[str, Any]:
    cfg = config_from_dict(dict(sae_config)) if isinstance(sae_config, Mapping) else sae_config
    if not isinstance(cfg, SAEConfig):
        raise TypeError(f"sae_config must be an SAE config or its dict, got {type(sae_config).__name__}")
    return cfg.to_dict()


def _train_config_dict(tc: TrainConfig) -> dict[str, Any]:
    return json.loads(json.dumps(dataclasses.asdict(tc)))  # tuples -> lists, as stored


def sae_cache_key(
    data: probe.ActivationSet | torch.Tensor | TwoTowerData,
    sae_config: SAEConfig | Mapping[str, Any],
    train_config: TrainConfig | None = None,
    *,
    seed: int = 0,
    scorer: Callable[..., torch.Tensor] | None = None,
    key_extra: Mapping[str, Any] | None = None,
) -> str:
    """The key of :func:`cached_sae` (16 hex): rows, SAE config, train config, seed, scorer, source, extra.

    The rows of an :class:`~recsae_core.probe.ActivationSet` are named by ``meta["cache_key"]`` (site,
    positions, model fingerprint, users' histories) when it has one, else hashed by content, as are plain
    tensors and :class:`~recsae_core.sae.TwoTowerData` (embeddings and pairs). A set derived from another
    (a subset, edited rows) must drop ``meta["cache_key"]``.
    """
    return stable_hash(
        {
            "format": CACHE_FORMAT,
            "rows": _rows_key(data),
            "sae": _sae_config_dict(sae_config),
            "train": _train_config_dict(train_config or TrainConfig()),
            "seed": int(seed),
            "scorer": _scorer_key(scorer),
            "source": sae_source_fingerprint(),
            "extra": json.loads(json.dumps(dict(key_extra or {}), sort_keys=True)),
        }
    )


# ------------------------------------------------------------------------------------------- SAE cache
_SEPARATE = ("sae", "rows_since_fired", "history", "train_config", "meta")


def _store(result: SAETrainResult, directory: Path, key: str) -> None:
    """Every field of ``result``: the SAE (unfolded), ``rows_since_fired``, the history, and the rest
    (steps, seconds, rows/s, dead_after, dead_fraction, train_config, meta, per-epoch fields) as JSON."""
    save_sae(result.sae, directory / SAE_STEM, fold=False)
    since = result.rows_since_fired.detach().cpu().contiguous()
    save_file({"rows_since_fired": since}, str(directory / SINCE_FIRED))
    atomic_write_json(directory / HISTORY, result.history)
    fields = {f.name: getattr(result, f.name) for f in dataclasses.fields(result) if f.name not in _SEPARATE}
    info = {
        "key": key,
        "fields": fields,
        "train_config": _train_config_dict(result.train_config),
        "meta": {k: v for k, v in result.meta.items() if k not in ("cache_hit", "cache_key", "cache_path")},
        "recsae_version": recsae_core.__version__,
        "torch_version": torch.__version__,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    atomic_write_json(directory / RESULT, info)  # last: marks the entry complete


def _load(directory: Path, device: str | torch.device | None) -> SAETrainResult:
    info = json.loads((directory / RESULT).read_text())
    history = json.loads((directory / HISTORY).read_text())
    since = load_file(str(directory / SINCE_FIRED))["rows_since_fired"]
    sae = load_sae(directory / SAE_STEM, device=device)
    return SAETrainResult(
        sae=sae,
        history=history,
        train_config=TrainConfig(**info["train_config"]),
        rows_since_fired=since,
        meta=dict(info["meta"]),
        **info["fields"],
    )


def cached_sae(
    data: probe.ActivationSet | torch.Tensor | TwoTowerData,
    sae_config: SAEConfig | Mapping[str, Any],
    train_config: TrainConfig | None = None,
    *,
    seed: int = 0,
    scorer: Callable[..., torch.Tensor] | None = None,
    key_extra: Mapping[str, Any] | None = None,
    train_fn: Callable[[], SAETrainResult] | None = None,
    cache_dir: str | os.PathLike | None = None,
    device: str | torch.device | None = None,
    progress: bool = True,
) -> SAETrainResult:
    """:func:`recsae_core.sae.train_sae` with an on-disk cache: reload the SAE if trained before, else train
    and store it (module docstring: key and layout).

    Args:
        data: the training rows: an :class:`~recsae_core.probe.ActivationSet` (P1, P2), a ``(N, d)`` tensor,
            or :class:`~recsae_core.sae.TwoTowerData` (P3, §3.3).
        sae_config, train_config, seed, scorer, device, progress: as :func:`~recsae_core.sae.train_sae`.
        key_extra: JSON-able dict added to the key, e.g. ``{"protocol": "p2", "dev_metric": "ndcg@5"}``.
        train_fn: on a miss, call this instead of ``train_sae`` (e.g. P2's per-epoch dev selection, §2.4);
            it must return an :class:`~recsae_core.sae.SAETrainResult` and be determined by the arguments
            that are keyed (pass its configs and ``key_extra`` here).
        cache_dir: root of the cache (default :func:`recsae_core.cache.default_cache_dir`).

    Returns:
        The result; ``meta["cache_hit"]`` says whether it was loaded, ``meta["cache_key"]`` and
        ``meta["cache_path"]`` where it lives. A hit has the same weights (bit for bit), history and fields
        as the run that stored it (``meta`` values that are not JSON come back as strings).
    """
    cfg = _sae_config_dict(sae_config)
    key = sae_cache_key(data, cfg, train_config, seed=seed, scorer=scorer, key_extra=key_extra)
    root = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    final = root / "sae" / f"{_safe(cfg['architecture'])}-{key}"
    hit = _cached_entry(final, key, device)
    if hit is not None:
        return hit
    with key_lock(final, f"a {cfg['architecture']} SAE"):
        hit = _cached_entry(final, key, device)  # stored by the process we waited for
        if hit is not None:
            return hit
        return _train_and_store(data, cfg, train_config, key, final, seed, scorer, device, progress, train_fn)


def _cached_entry(final: Path, key: str, device: str | torch.device | None) -> SAETrainResult | None:
    """The stored result at ``final``, or None (a corrupt or incomplete entry is removed)."""
    if (final / RESULT).is_file():
        try:
            result = _load(final, device)
        except Exception:  # a corrupt or partial entry: retrain, never half-load
            shutil.rmtree(final, ignore_errors=True)
        else:
            result.meta.update(cache_hit=True, cache_key=key, cache_path=str(final))
            return result
    elif final.exists():  # no result.json: an incomplete entry
        shutil.rmtree(final, ignore_errors=True)
    return None


def _train_and_store(
    data, cfg, train_config, key, final, seed, scorer, device, progress, train_fn
) -> SAETrainResult:
    if train_fn is not None:
        result = train_fn()
        if not isinstance(result, SAETrainResult):
            raise TypeError(f"train_fn must return an SAETrainResult, got {type(result).__name__}")
    else:
        rows = data.acts if isinstance(data, probe.ActivationSet) else data
        result = train_sae(
            cfg, rows, train_config, scorer=scorer, device=device, seed=seed, progress=progress
        )
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".partial", dir=final.parent))
    os.chmod(tmp, 0o755)
    try:
        _store(result, tmp, key)
        try:
            os.rename(tmp, final)
        except OSError:
            if not (final / RESULT).is_file():  # not a concurrent writer's complete entry: a real error
                raise
    finally:
        with contextlib.suppress(FileNotFoundError):
            shutil.rmtree(tmp)
    result.meta.update(cache_hit=False, cache_key=key, cache_path=str(final))
    return result


# ------------------------------------------------------------------------------------------ evaluation
#: A latent is **dense** when it fires (activation > 0) on more than this share of the evaluated rows
#: (SAELens's feature-density histogram flags features above 10 %); it is **dead** when it fires on none
#: of them (P1 §4.4: "never > 0 on test").
DENSE_RATE = 0.1


@dataclass
class SAEReport:
    """One SAE's evaluation (:func:`evaluate_sae`): reconstruction, sparsity, accuracy, label alignment.

    Attributes:
        architecture, site, part, positions, ties: what was evaluated and how.
        d_in, n_latents: the SAE's sizes; ``n_rows``: held-out rows behind the row statistics.
        explained_variance, fvu, mse: reconstruction (P1 §4.4; FVU as P2 §2.3).
        l0: mean number of active latents per row; ``dead_fraction``: share of latents that never fire on
            these rows; ``dense_fraction``: share firing on more than :data:`DENSE_RATE` of them.
        accuracy: ``{"base": m, "spliced": m[, "spliced_keep_error": m]}``, full-ranking metrics
            (:func:`recsae_core.probe.splice_accuracy`, P2 §2.5).
        mean_max_corr, neuron_mean_max_corr, mean_max_auc, neuron_mean_max_auc: label alignment of SAE
            features vs raw neurons (P1 §4.1-4.2), ``None`` without labels.
        per_label: one row per label (``label``, ``max_corr``, ``best_feature``, ``max_auc``, ...,
            ``neuron_max_corr``, ``neuron_max_auc``), or ``None``.
        train_seconds, rows_per_second: from the training result, when given.
    """

    architecture: str
    site: str
    part: str
    positions: str
    ties: str
    d_in: int
    n_latents: int
    n_rows: int
    explained_variance: float
    fvu: float
    mse: float
    l0: float
    dead_fraction: float
    dense_fraction: float
    accuracy: dict[str, dict[str, float]]
    mean_max_corr: float | None = None
    neuron_mean_max_corr: float | None = None
    mean_max_auc: float | None = None
    neuron_mean_max_auc: float | None = None
    per_label: pd.DataFrame | None = None
    train_seconds: float | None = None
    rows_per_second: float | None = None

    def to_frame(self) -> pd.DataFrame:
        """One row: the scalar fields and ``<variant>_<metric>`` accuracy columns (``base_ndcg@10``,
        ``spliced_ndcg@10``, ...), so reports of several SAEs stack with ``pd.concat``."""
        row: dict[str, Any] = {
            f.name: getattr(self, f.name)
            for f in dataclasses.fields(self)
            if f.name not in ("accuracy", "per_label")
        }
        for variant, m in self.accuracy.items():
            row.update({f"{variant}_{k}": v for k, v in m.items() if k != "n_cases"})
        row["n_cases"] = self.accuracy["base"].get("n_cases")
        return pd.DataFrame([row])


@torch.no_grad()
def _encode_rows(
    sae: SparseAutoencoder, x_ND: torch.Tensor, dev: torch.device, chunk: int = 8192
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(x_hat (N, d), acts (N, m))`` on CPU, encoded in chunks on ``dev``."""
    xh, acts = [], []
    for s in range(0, len(x_ND), chunk):
        out = sae(x_ND[s : s + chunk].to(dev, sae.W_enc.dtype))
        xh.append(out.x_hat.float().cpu())
        acts.append(out.acts.float().cpu())
    return torch.cat(xh), torch.cat(acts)


def evaluate_sae(
    sae: SparseAutoencoder,
    model: Recommender,
    site: str,
    split: Split,
    *,
    acts: probe.ActivationSet | None = None,
    part: str = "test",
    ks: Sequence[int] = (10,),
    ties: str = "optimistic",
    positions: str = "last",
    keep_error_too: bool = True,
    item_labels: torch.Tensor | None = None,
    label_names: Sequence[str] | None = None,
    train_result: SAETrainResult | None = None,
    max_rows: int | None = 200_000,
    seed: int = 42,
    device: str | torch.device | None = None,
    batch_size: int = 512,
) -> SAEReport:
    """Evaluate one SAE at ``site`` of ``model`` on held-out data, as SAELens's ``run_evals`` does for LMs.

    Row statistics (reconstruction P1 §4.4, sparsity, label alignment P1 §4.1-4.2) use ``acts``, the
    activations of the ``part`` users (collected here when ``None``: every non-padding position of a
    ``(B, L, D)`` site, one row per user of a ``(B, D)`` site, the table of an item site), subsampled to
    ``max_rows`` with ``seed`` (P1: 200,000 rows, seed 42). Accuracy is full-ranking HR/NDCG/MRR/coverage
    at ``ks`` (papers.md §4.3) of the base model and of the model with the SAE spliced in at ``positions``
    (for ``(B, L, D)`` sites; P2 splices every position of its final states: ``"all"``), with the error
    term dropped and, if ``keep_error_too``, kept (which must give the base numbers); ``ties`` is the
    rank rule of :mod:`recsae_core.evaluate` (P2: ``"pessimistic"``).

    Label alignment (``item_labels``: ``(n_items, G)``): each row is labelled by its ``items`` entry (the
    input item of a sequence position, the user's last item, the table's item; rows without an item are
    left out); :func:`recsae_core.metrics.per_label_summary` of the SAE features and of the raw neurons.
    """
    dev = resolve_device(device)
    sae = sae.eval().to(dev)
    model.eval().to(dev)
    if acts is None:
        acts = probe.collect_activations(
            model, site, probe.part_batch(model, split, part), positions="all", device=dev, progress=False
        )
    if acts.acts.shape[1] != sae.d_in:
        raise ValueError(f"the activations have width {acts.acts.shape[1]}, the SAE expects {sae.d_in}")
    idx = metrics.sample_rows(len(acts), max_rows, seed) if max_rows is not None else torch.arange(len(acts))
    x = acts.acts[idx].float()
    x_hat, f = _encode_rows(sae, x, dev)
    rec = metrics.reconstruction_stats(x, x_hat)
    rates = metrics.firing_rates(f)

    accuracy = probe.splice_accuracy(
        model,
        site,
        sae,
        split,
        part,
        ks,
        positions=positions,
        batch_size=batch_size,
        device=dev,
        ties=ties,
        keep_error_too=keep_error_too,
    )
    align: dict[str, Any] = {}
    if item_labels is not None:
        labels = torch.as_tensor(item_labels)
        labels = labels[:, None] if labels.ndim == 1 else labels
        items = acts.items[idx]
        has = items >= 0
        if not bool(has.any()):
            raise ValueError(f"the rows of {site} name no item: label alignment needs rows with items")
        row_labels = labels[items[has]]
        sae_tab = metrics.per_label_summary(f[has], row_labels, label_names, max_rows=None)
        raw_tab = metrics.per_label_summary(x[has], row_labels, label_names, max_rows=None)
        per_label = sae_tab.assign(neuron_max_corr=raw_tab["max_corr"], neuron_max_auc=raw_tab["max_auc"])
        align = {
            "mean_max_corr": float(sae_tab["max_corr"].mean()),
            "neuron_mean_max_corr": float(raw_tab["max_corr"].mean()),
            "mean_max_auc": float(sae_tab["max_auc"].mean()),
            "neuron_mean_max_auc": float(raw_tab["max_auc"].mean()),
            "per_label": per_label,
        }
    return SAEReport(
        architecture=sae.architecture,
        site=site,
        part=part,
        positions=positions,
        ties=ties,
        d_in=sae.d_in,
        n_latents=sae.n_latents,
        n_rows=len(x),
        explained_variance=rec["explained_variance"],
        fvu=rec["fvu"],
        mse=rec["mse"],
        l0=float(metrics.l0(f).double().mean()),
        dead_fraction=float((rates == 0).double().mean()),
        dense_fraction=float((rates > DENSE_RATE).double().mean()),
        accuracy=accuracy,
        train_seconds=None if train_result is None else float(train_result.seconds),
        rows_per_second=None if train_result is None else float(train_result.rows_per_second),
        **align,
    )


def logit_effects(sae: SparseAutoencoder, output_table_ID: torch.Tensor) -> torch.Tensor:
    """``(m, n_items)`` direct effect of each feature on each item's logit: ``W_unembed · d_j`` (P1 §1.7).

    ``d_j`` is decoder atom ``j`` in the site's raw space (the scalar input normalisation folded in, so a
    unit of activation moves the representation by ``d_j``); ``output_table_ID`` the item table scores are
    dotted with (SASRec: :attr:`~recsae_core.models.sasrec.SASRec.output_table`, the tied item embeddings).
    As in P1 this is the *direct* path: later blocks and the final LayerNorm between block 0 and the
    output are ignored.
    """
    atoms_MD = sae.folded_copy().decoder_weight.detach().float().cpu()
    table = torch.as_tensor(output_table_ID).detach().float().cpu()
    if table.ndim != 2 or table.shape[1] != atoms_MD.shape[1]:
        raise ValueError(f"output table must be (n_items, {atoms_MD.shape[1]}), got {tuple(table.shape)}")
    return atoms_MD @ table.T
