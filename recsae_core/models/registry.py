"""Base recommenders by name: ``"sasrec"``, ``"bert4rec"``, ``"bprmf"``, ``"lightgcn"``, ``"mf"``, ``"ncf"``, ``"pop"``."""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

from recsae_core.models.base import Recommender
from recsae_core.models.bert4rec import BERT4Rec, BERT4RecConfig
from recsae_core.models.popularity import Popularity, PopularityConfig
from recsae_core.models.sasrec import SASRec, SASRecConfig
from recsae_core.models.twotower import (
    BPRMF,
    MF,
    NCF,
    BPRMFConfig,
    LightGCN,
    LightGCNConfig,
    MFConfig,
    NCFConfig,
)

__all__ = ["MODELS", "ModelSpec", "config_from_dict", "get_spec", "make_config", "model_from_state"]


@dataclass(frozen=True)
class ModelSpec:
    """A model class, its config class, and how :mod:`recsae_core.train` trains it."""

    name: str
    model_cls: type[Recommender]
    config_cls: type
    kind: str  # "sequential" (full CE), "masked" (masked-LM full CE), "pairwise" (BPR), "pointwise" (BCE + negatives), "count"
    sequential: bool = False


MODELS: dict[str, ModelSpec] = {
    "sasrec": ModelSpec("sasrec", SASRec, SASRecConfig, "sequential", sequential=True),
    "bert4rec": ModelSpec("bert4rec", BERT4Rec, BERT4RecConfig, "masked", sequential=True),
    "bprmf": ModelSpec("bprmf", BPRMF, BPRMFConfig, "pairwise"),
    "lightgcn": ModelSpec("lightgcn", LightGCN, LightGCNConfig, "pairwise"),
    "mf": ModelSpec("mf", MF, MFConfig, "pointwise"),
    "ncf": ModelSpec("ncf", NCF, NCFConfig, "pointwise"),
    "pop": ModelSpec("pop", Popularity, PopularityConfig, "count"),
}


def get_spec(name: str) -> ModelSpec:
    """The :class:`ModelSpec` registered under ``name`` (clear error listing the known names)."""
    try:
        return MODELS[name]
    except KeyError:
        raise KeyError(f"unknown model {name!r}; known models: {sorted(MODELS)}") from None


def make_config(name: str, config: Any = None, **overrides: Any) -> Any:
    """The config for ``name``: ``None`` → defaults, a dict → built from it, a config → checked; plus overrides."""
    spec = get_spec(name)
    if config is None:
        config = spec.config_cls()
    elif isinstance(config, dict):
        config = config_from_dict(name, config)
    elif not isinstance(config, spec.config_cls):
        raise TypeError(f"model {name!r} takes a {spec.config_cls.__name__}, got {type(config).__name__}")
    if overrides:
        config = config_from_dict(name, {**_as_dict(config), **overrides})
    return config


def _as_dict(config: Any) -> dict[str, Any]:
    return {f.name: getattr(config, f.name) for f in fields(config)}


def config_from_dict(name: str, values: dict[str, Any]) -> Any:
    """Build ``name``'s config from a dict (e.g. read from JSON); unknown keys raise."""
    cls = get_spec(name).config_cls
    known = {f.name for f in fields(cls)}
    unknown = set(values) - known
    if unknown:
        raise ValueError(f"{cls.__name__} has no field(s) {sorted(unknown)}; fields: {sorted(known)}")
    values = {k: tuple(v) if isinstance(v, list) else v for k, v in values.items()}
    return cls(**values)


def model_from_state(name: str, n_users: int, n_items: int, config: Any, state: dict) -> Recommender:
    """Rebuild a trained model from its config and state dict (as saved by :mod:`recsae_core.cache`)."""
    spec = get_spec(name)
    from_state = getattr(spec.model_cls, "from_state", None)
    if from_state is not None:
        return from_state(n_users, n_items, config, state)
    model = spec.model_cls(n_users, n_items, config)
    model.load_state_dict(state)
    return model
