"""Artifact cache for trained base recommenders: train once, reload everywhere (book chapters, tests).

An artifact is keyed by a hash of everything that determines it:

* the dataset name and a fingerprint of its interactions (content hash, so a changed file misses),
* the split's name, seed and a fingerprint of its train/valid/test rows,
* the model name and its full config, and the training seed,
* the source of the modules that load, split, train and store models (:data:`TRAINING_MODULES`): a change to
  any of them invalidates every artifact; editing plots, widgets, SAEs or the book runner keeps them.

Layout: ``<cache_dir>/<model>/<dataset>-<split>-s<seed>-<key>/`` holding ``model.safetensors`` (the state
dict), ``config.json`` (model name, config, sizes, provenance) and ``history.csv`` (per-epoch log).
``cache_dir`` is the argument, else ``$RECSAE_CACHE``, else ``$RECSAE_HOME/artifacts`` (default
``~/.cache/recsae/artifacts``). Writes are atomic: files are written to temporary names and renamed
(:func:`recsae_core.utils.atomic_path`), and a cached artifact is assembled in a temporary directory that is
renamed into place only when complete, so an interrupted run never leaves a half artifact behind.
Processes that miss the same key at once take turns (:func:`key_lock`): one trains, the others wait and
load its artifact, so chapters can run side by side without training a model twice.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import importlib
import json
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from safetensors.torch import load_file, save_file

import recsae_core
from recsae_core.data.dataset import RecDataset, Split
from recsae_core.data.registry import cache_home
from recsae_core.models.base import Recommender
from recsae_core.models.registry import config_from_dict, get_spec, make_config, model_from_state
from recsae_core.train import TrainResult, fit
from recsae_core.utils import atomic_path, atomic_write_json, resolve_device, sources_sha256, stable_hash

__all__ = [
    "TRAINING_MODULES",
    "artifact_key",
    "cached_fit",
    "dataset_fingerprint",
    "default_cache_dir",
    "key_lock",
    "load_model",
    "save_model",
    "source_fingerprint",
    "split_fingerprint",
]

WEIGHTS, CONFIG, HISTORY = "model.safetensors", "config.json", "history.csv"


def default_cache_dir() -> Path:
    """``$RECSAE_CACHE``, else ``$RECSAE_HOME/artifacts`` (default ``~/.cache/recsae/artifacts``)."""
    env = os.environ.get("RECSAE_CACHE")
    return Path(env) if env else cache_home() / "artifacts"


def _frame_digest(df: pd.DataFrame) -> str:
    h = hashlib.sha256(",".join(map(str, df.columns)).encode())
    h.update(pd.util.hash_pandas_object(df, index=False).to_numpy().tobytes())
    return h.hexdigest()[:16]


def dataset_fingerprint(ds: RecDataset) -> str:
    """Content hash of the interactions plus the catalogue sizes."""
    return stable_hash([ds.name, ds.n_users, ds.n_items, _frame_digest(ds.interactions)])


def split_fingerprint(split: Split) -> str:
    """Content hash of a split's parts (train, valid, test, and any evaluation contexts)."""
    parts = [
        split.name,
        split.seed,
        _frame_digest(split.train),
        _frame_digest(split.valid),
        _frame_digest(split.test),
    ]
    context = getattr(split, "context", {}) or {}
    parts += [[k, _frame_digest(v)] for k, v in sorted(context.items())]
    return stable_hash(parts)


#: The modules whose code can change a trained artifact: exactly what ``import recsae_core.cache`` loads in a
#: fresh interpreter (tests/test_train_cache.py checks that nothing outside this list is loaded).
TRAINING_MODULES: tuple[str, ...] = (
    "recsae_core",
    "recsae_core.batching",
    "recsae_core.cache",
    "recsae_core.data",
    "recsae_core.data.dataset",
    "recsae_core.data.registry",
    "recsae_core.evaluate",
    "recsae_core.models",
    "recsae_core.models.base",
    "recsae_core.models.bert4rec",
    "recsae_core.models.popularity",
    "recsae_core.models.registry",
    "recsae_core.models.sasrec",
    "recsae_core.models.twotower",
    "recsae_core.train",
    "recsae_core.utils",
)


@functools.lru_cache(maxsize=1)
def source_fingerprint() -> str:
    """sha256 over the source files of :data:`TRAINING_MODULES` (paths relative to the package, and bytes).

    Read once per process: the key describes the code this process runs, so a module edited on disk while a
    long build is training (its old code still loaded) cannot label the old code's artifacts with the new
    code's key."""
    root = Path(recsae_core.__file__).resolve().parent
    files = [Path(importlib.import_module(name).__file__).resolve() for name in TRAINING_MODULES]
    return sources_sha256(root, files)[:16]


def _config_dict(config: Any) -> dict[str, Any]:
    return json.loads(json.dumps(asdict(config)))  # tuples → lists, as stored in config.json


def artifact_key(model_name: str, split: Split, config: Any = None, seed: int = 0) -> str:
    """The cache key of ``fit(model_name, split, config, seed=seed)`` (see the module docstring)."""
    cfg = make_config(model_name, config)
    return stable_hash(
        {
            "dataset": [split.dataset.name, dataset_fingerprint(split.dataset)],
            "split": [split.name, split.seed, split_fingerprint(split)],
            "model": model_name,
            "config": _config_dict(cfg),
            "seed": seed,
            "source": source_fingerprint(),
        }
    )


def save_model(
    model: Recommender,
    directory: str | os.PathLike,
    *,
    model_name: str,
    config: Any,
    history: pd.DataFrame | None = None,
    meta: dict[str, Any] | None = None,
) -> Path:
    """Write ``model`` as ``model.safetensors`` + ``config.json`` (+ ``history.csv``) into ``directory``.

    Each file is written atomically; ``config.json`` goes last, so a directory with a ``config.json`` is
    complete. Returns the directory.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    with atomic_path(directory / WEIGHTS) as tmp:
        save_file(state, str(tmp), metadata={"model": model_name})
    if history is not None:
        with atomic_path(directory / HISTORY) as tmp:
            history.to_csv(tmp, index=False)
    info = {
        "model": model_name,
        "config": _config_dict(config),
        "n_users": int(model.n_users),
        "n_items": int(model.n_items),
        "recsae_version": recsae_core.__version__,
        "torch_version": torch.__version__,
        **(meta or {}),
    }
    atomic_write_json(directory / CONFIG, info)
    return directory


def load_model(
    directory: str | os.PathLike, device: str | torch.device = "cpu"
) -> tuple[Recommender, dict[str, Any]]:
    """Load a model written by :func:`save_model`; returns ``(model in eval mode, config.json contents)``."""
    directory = Path(directory)
    cfg_path = directory / CONFIG
    if not cfg_path.is_file():
        raise FileNotFoundError(f"{directory} is not a saved model: {CONFIG} is missing")
    info = json.loads(cfg_path.read_text())
    name = info["model"]
    get_spec(name)
    config = config_from_dict(name, info["config"])
    state = load_file(str(directory / WEIGHTS))
    model = model_from_state(name, info["n_users"], info["n_items"], config, state)
    return model.to(resolve_device(device)).eval(), info


def _artifact_dir(root: Path, model_name: str, split: Split, seed: int, key: str) -> Path:
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in f"{split.dataset.name}-{split.name}")
    return root / model_name / f"{safe}-s{seed}-{key}"


@contextlib.contextmanager
def key_lock(final: Path, what: str = "") -> Iterator[None]:
    """Hold an exclusive lock on the cache entry ``final`` (an empty hidden ``.<name>.lock`` file beside it,
    POSIX ``flock``; released when the block ends or the process dies; the file stays, as lock files must for
    ``flock`` to be race-free). A caller that finds the entry missing takes the lock, checks again, and only
    then trains. Without ``fcntl`` (Windows) it does not lock."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        yield
        return
    final.parent.mkdir(parents=True, exist_ok=True)
    with open(final.parent / f".{final.name}.lock", "a+") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            print(
                f"recsae: waiting for another process that is training {what or final.name} ...", flush=True
            )
            fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _load_result(final: Path, cfg: Any, model_name: str, device: str | torch.device) -> TrainResult:
    model, info = load_model(final, device)
    hist_path = final / HISTORY
    history = pd.read_csv(hist_path) if hist_path.is_file() else pd.DataFrame()
    return TrainResult(
        model,
        history,
        int(info.get("best_epoch", 0)),
        cfg,
        model_name,
        float(info.get("seconds", 0.0)),
        True,
        final,
    )


def cached_fit(
    model_name: str,
    split: Split,
    config: Any = None,
    *,
    device: str | torch.device = "cpu",
    seed: int = 0,
    progress: bool = True,
    cache_dir: str | os.PathLike | None = None,
) -> TrainResult:
    """:func:`recsae_core.train.fit` with an on-disk cache: load the artifact if present, else train and store it.

    Same arguments as ``fit`` plus ``cache_dir`` (see the module docstring). ``result.from_cache`` tells
    which happened; ``result.path`` is the artifact directory.
    """
    cfg = make_config(model_name, config)
    root = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    key = artifact_key(model_name, split, cfg, seed)
    final = _artifact_dir(root, model_name, split, seed, key)
    if (final / CONFIG).is_file():
        return _load_result(final, cfg, model_name, device)
    with key_lock(final, f"{model_name} on {split.dataset.name}"):
        if (final / CONFIG).is_file():  # trained by the process we waited for
            return _load_result(final, cfg, model_name, device)
        return _fit_and_store(model_name, split, cfg, key, final, device=device, seed=seed, progress=progress)


def _fit_and_store(
    model_name: str,
    split: Split,
    cfg: Any,
    key: str,
    final: Path,
    *,
    device: str | torch.device,
    seed: int,
    progress: bool,
) -> TrainResult:
    result = fit(model_name, split, cfg, device=device, seed=seed, progress=progress)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".partial", dir=final.parent))
    os.chmod(tmp, 0o755)  # mkdtemp makes it owner-only; an artifact gets ordinary directory permissions
    try:
        meta = {
            "key": key,
            "dataset": split.dataset.name,
            "split": split.name,
            "split_seed": split.seed,
            "seed": seed,
            "best_epoch": result.best_epoch,
            "seconds": result.seconds,
            "trained_on": str(device),
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }
        save_model(result.model, tmp, model_name=model_name, config=cfg, history=result.history, meta=meta)
        try:
            os.rename(tmp, final)
        except OSError:
            if not (final / CONFIG).is_file():  # not a concurrent writer's complete artifact: a real error
                raise
    finally:
        with contextlib.suppress(FileNotFoundError):
            shutil.rmtree(tmp)
    result.from_cache, result.path = False, final
    return result
