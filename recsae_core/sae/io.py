"""Save and load SAEs: ``<stem>.safetensors`` (tensors) + ``<stem>.json`` (config and metadata), atomic writes."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from recsae_core.sae.base import SparseAutoencoder
from recsae_core.sae.registry import config_from_dict, from_config
from recsae_core.utils import atomic_path, atomic_write_json, resolve_device

__all__ = ["FORMAT_VERSION", "load_sae", "sae_paths", "save_sae"]

FORMAT_VERSION = 1


def sae_paths(path: str | os.PathLike) -> tuple[Path, Path]:
    """``(tensors, config)`` paths for ``path`` given with or without a ``.safetensors``/``.json`` suffix."""
    p = Path(path)
    stem = p.with_suffix("") if p.suffix in (".safetensors", ".json") else p
    return stem.with_name(stem.name + ".safetensors"), stem.with_name(stem.name + ".json")


def save_sae(
    sae: SparseAutoencoder, path: str | os.PathLike, *, fold: bool = True, meta: dict[str, Any] | None = None
) -> tuple[Path, Path]:
    """Write ``sae`` as safetensors + JSON config side by side (each file atomically).

    Args:
        fold: fold a scalar input normalisation into the weights first (the saved SAE takes raw inputs
            with no normalisation step; decoder atoms then have norm = the std). The SAE passed in is not
            modified. ``fold=False`` keeps the normalisation buffers (to continue training later).
        meta: extra JSON-serialisable provenance (dataset, site, training history summary, ...).

    Returns:
        The two paths written.
    """
    tensors_path, json_path = sae_paths(path)
    to_save = sae.folded_copy() if fold and sae.has_input_norm else sae
    state = {k: v.detach().cpu().contiguous() for k, v in to_save.state_dict().items()}
    info = {
        "format_version": FORMAT_VERSION,
        "architecture": to_save.architecture,
        "config": to_save.config_dict(),
        "folded_input_norm": (
            {"mean": float(sae.input_mean), "std": float(sae.input_std)}
            if fold and sae.has_input_norm
            else None
        ),
        "dtype": str(next(iter(state.values())).dtype).replace("torch.", ""),
        "meta": meta or {},
    }
    with atomic_path(tensors_path) as tmp:
        save_file(
            state,
            str(tmp),
            metadata={"architecture": to_save.architecture, "format_version": str(FORMAT_VERSION)},
        )
    atomic_write_json(json_path, info)
    return tensors_path, json_path


def load_sae(path: str | os.PathLike, *, device: str | torch.device | None = None) -> SparseAutoencoder:
    """Load an SAE written by :func:`save_sae` (in eval mode, on ``device``, dtype as stored)."""
    tensors_path, json_path = sae_paths(path)
    for p in (tensors_path, json_path):
        if not p.exists():
            raise FileNotFoundError(
                f"{p} does not exist (an SAE is saved as <stem>.safetensors + <stem>.json)"
            )
    info = json.loads(json_path.read_text())
    version = info.get("format_version")
    if version != FORMAT_VERSION:
        raise ValueError(
            f"{json_path}: unsupported SAE format_version {version!r} (this code reads {FORMAT_VERSION})"
        )
    cfg = config_from_dict(info["config"])
    sae = from_config(cfg)
    state = load_file(str(tensors_path))
    dtype = next(iter(state.values())).dtype
    sae = sae.to(dtype)
    sae.load_state_dict(state, strict=True)
    return sae.to(resolve_device(device)).eval()
