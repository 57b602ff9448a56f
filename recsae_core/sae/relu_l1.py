"""P1's ReLU + L1 SAE (``dictionary_learning`` ``AutoEncoder``; papers.md §1.6)."""

from __future__ import annotations

import torch

from recsae_core.sae.base import SparseAutoencoder
from recsae_core.sae.config import ReluL1Config
from recsae_core.sae.registry import register_sae

__all__ = ["ReluL1SAE"]


@register_sae("relu_l1", ReluL1Config)
class ReluL1SAE(SparseAutoencoder):
    """``f = ReLU(W_enc (x - b_dec) + b_enc)``, ``x_hat = W_dec f + b_dec``, unit-norm decoder atoms.

    Inputs are standardised by one scalar mean/std (``cfg.input_norm="scalar"``, P1) inside
    ``encode``/``decode``; :meth:`fold_input_normalization_` moves them into the weights for export.
    """

    cfg: ReluL1Config

    def activation(self, pre_NM: torch.Tensor) -> torch.Tensor:
        return torch.relu(pre_NM)
