"""Architectures by name, so notebooks, papermill parameters and widgets pick an SAE by a string.

``register_sae(name, config_cls)`` (a class decorator) raises on a duplicate name (SAELens
``register_sae_class``); :func:`from_config` dispatches on the ``"architecture"`` key of a dict, or on a
config object's class.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, TypeVar

from recsae_core.sae.config import SAEConfig

if TYPE_CHECKING:
    from recsae_core.sae.base import SparseAutoencoder

__all__ = ["available_architectures", "config_from_dict", "from_config", "get_sae_class", "register_sae"]

_REGISTRY: dict[str, tuple[type, type[SAEConfig]]] = {}
T = TypeVar("T")


def register_sae(name: str, config_cls: type[SAEConfig]) -> Callable[[type[T]], type[T]]:
    """Class decorator: register an SAE module class under ``name`` with its config class.

    Raises:
        ValueError: ``name`` is already registered, or ``config_cls.architecture`` differs from ``name``.
    """
    if config_cls.architecture != name:
        raise ValueError(
            f"config class {config_cls.__name__} declares architecture {config_cls.architecture!r}, not {name!r}"
        )

    def deco(cls: type[T]) -> type[T]:
        if name in _REGISTRY:
            raise ValueError(
                f"an SAE architecture named {name!r} is already registered ({_REGISTRY[name][0].__name__})"
            )
        _REGISTRY[name] = (cls, config_cls)
        cls.architecture = name  # type: ignore[attr-defined]
        cls.config_cls = config_cls  # type: ignore[attr-defined]
        return cls

    return deco


def available_architectures() -> list[str]:
    """Registered architecture names, sorted."""
    return sorted(_REGISTRY)


def get_sae_class(name: str) -> tuple[type[SparseAutoencoder], type[SAEConfig]]:
    """``(module class, config class)`` registered under ``name``."""
    try:
        return _REGISTRY[name]  # type: ignore[return-value]
    except KeyError:
        raise KeyError(f"unknown SAE architecture {name!r}; known: {available_architectures()}") from None


def config_from_dict(d: Mapping[str, Any]) -> SAEConfig:
    """Build the config named by ``d["architecture"]`` from the remaining keys (unknown keys raise)."""
    if "architecture" not in d:
        raise ValueError(
            f"an SAE config dict needs an 'architecture' key (one of {available_architectures()})"
        )
    _, cfg_cls = get_sae_class(str(d["architecture"]))
    rest = {k: v for k, v in d.items() if k != "architecture"}
    unknown = set(rest) - cfg_cls.field_names()
    if unknown:
        raise ValueError(
            f"{cfg_cls.__name__} has no field(s) {sorted(unknown)}; fields: {sorted(cfg_cls.field_names())}"
        )
    if "prefixes" in rest and rest["prefixes"] is not None:
        rest["prefixes"] = tuple(rest["prefixes"])
    return cfg_cls(**rest)


def from_config(config: SAEConfig | Mapping[str, Any]) -> SparseAutoencoder:
    """A freshly initialised SAE for ``config`` (a config object or a dict with ``"architecture"``).

    Initialisation draws from torch's global RNG; seed it (or use ``train_sae(..., seed=)``) for
    reproducible weights.
    """
    cfg = config_from_dict(config) if isinstance(config, Mapping) else config
    if not isinstance(cfg, SAEConfig):
        raise TypeError(f"expected an SAEConfig or a dict, got {type(config).__name__}")
    cls, cfg_cls = get_sae_class(cfg.architecture)
    if not isinstance(cfg, cfg_cls):
        raise TypeError(
            f"architecture {cfg.architecture!r} expects {cfg_cls.__name__}, got {type(cfg).__name__}"
        )
    return cls(cfg)
