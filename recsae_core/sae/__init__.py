"""Sparse autoencoders for recommender representations: architectures, one trainer, save/load.

Architectures (by name, :func:`from_config`): ``relu_l1`` (P1), ``topk`` and ``batch_topk`` (P2,
Bussmann et al.), ``p3`` and ``matryoshka`` (P3). Train with :func:`train_sae`; persist with
:func:`save_sae` / :func:`load_sae`.
"""

from recsae_core.sae.base import RowStats, SAEOutput, SparseAutoencoder
from recsae_core.sae.config import (
    BatchTopKConfig,
    EpochSelection,
    MatryoshkaConfig,
    P3Config,
    ReluL1Config,
    SAEConfig,
    TopKConfig,
    TrainConfig,
)
from recsae_core.sae.io import load_sae, save_sae
from recsae_core.sae.p3 import P3SAE, EmbeddingScorer, MatryoshkaSAE, dot_product_scorer, two_tower_scorer
from recsae_core.sae.registry import (
    available_architectures,
    config_from_dict,
    from_config,
    get_sae_class,
    register_sae,
)
from recsae_core.sae.relu_l1 import ReluL1SAE
from recsae_core.sae.topk import BatchTopKSAE, TopKSAE
from recsae_core.sae.trainer import (
    RowSampler,
    SAEDivergenceError,
    SAETrainResult,
    TwoTowerBatch,
    TwoTowerData,
    init_b_dec_mean,
    train_sae,
)

__all__ = [
    "P3SAE",
    "BatchTopKConfig",
    "BatchTopKSAE",
    "EmbeddingScorer",
    "EpochSelection",
    "MatryoshkaConfig",
    "MatryoshkaSAE",
    "P3Config",
    "ReluL1Config",
    "ReluL1SAE",
    "RowSampler",
    "RowStats",
    "SAEConfig",
    "SAEDivergenceError",
    "SAEOutput",
    "SAETrainResult",
    "SparseAutoencoder",
    "TopKConfig",
    "TopKSAE",
    "TrainConfig",
    "TwoTowerBatch",
    "TwoTowerData",
    "available_architectures",
    "config_from_dict",
    "dot_product_scorer",
    "from_config",
    "get_sae_class",
    "init_b_dec_mean",
    "load_sae",
    "register_sae",
    "save_sae",
    "train_sae",
    "two_tower_scorer",
]
