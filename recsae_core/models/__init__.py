"""Base recommenders (SASRec, BERT4Rec, BPR-MF, LightGCN, MF, NCF, popularity) behind the :class:`Recommender` interface."""

from recsae_core.models.base import Recommender, UserBatch
from recsae_core.models.bert4rec import BERT4Rec, BERT4RecConfig
from recsae_core.models.popularity import Popularity, PopularityConfig
from recsae_core.models.registry import MODELS, get_spec, make_config
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

__all__ = [
    "BPRMF",
    "MF",
    "MODELS",
    "NCF",
    "BERT4Rec",
    "BERT4RecConfig",
    "BPRMFConfig",
    "LightGCN",
    "LightGCNConfig",
    "MFConfig",
    "NCFConfig",
    "Popularity",
    "PopularityConfig",
    "Recommender",
    "SASRec",
    "SASRecConfig",
    "UserBatch",
    "get_spec",
    "make_config",
]
