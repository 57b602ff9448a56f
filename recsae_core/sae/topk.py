"""P2's TopK SAE (RecSAE; Gao et al. 2024) and BatchTopK (Bussmann et al. 2024); papers.md §2.3,
engineering.md §2.5, §2.7."""

from __future__ import annotations

import torch

from recsae_core.sae.base import SparseAutoencoder
from recsae_core.sae.config import BatchTopKConfig, TopKConfig
from recsae_core.sae.registry import register_sae

__all__ = ["BatchTopKSAE", "TopKSAE", "batch_topk_acts", "topk_acts"]


def topk_acts(pre_NM: torch.Tensor, k: int) -> torch.Tensor:
    """``(N, m)``: per row, the ``k`` largest ``ReLU(pre)`` kept, the rest zero (P2 ``z = TopK_k(pre)``)."""
    vals_NK, idx_NK = pre_NM.topk(k, dim=-1)
    return torch.zeros_like(pre_NM).scatter(-1, idx_NK, torch.relu(vals_NK))


def batch_topk_acts(pre_NM: torch.Tensor, k: int) -> torch.Tensor:
    """``(N, m)``: the ``k * N`` largest ``ReLU(pre)`` entries over the whole batch kept (flat reference)."""
    flat = torch.relu(pre_NM).reshape(-1)
    vals, idx = flat.topk(min(k * pre_NM.shape[0], flat.numel()))
    return torch.zeros_like(flat).scatter(0, idx, vals).view_as(pre_NM)


@register_sae("topk", TopKConfig)
class TopKSAE(SparseAutoencoder):
    """``z = TopK_k(ReLU(W_enc (x - b_dec) + b_enc))``, ``x_hat = W_dec z + b_dec``; unit-norm atoms."""

    cfg: TopKConfig

    def activation(self, pre_NM: torch.Tensor) -> torch.Tensor:
        return topk_acts(pre_NM, self.cfg.k)


@register_sae("batch_topk", BatchTopKConfig)
class BatchTopKSAE(SparseAutoencoder):
    """BatchTopK: top-(k*B) over the batch while training; ``ReLU(pre) * (pre > threshold)`` otherwise.

    The selection depends on ``self.training``: call ``.eval()`` before probing or steering so each row is
    encoded on its own (the learned ``threshold`` buffer; 0 until training sets it, i.e. plain ReLU).
    """

    cfg: BatchTopKConfig

    def __init__(self, cfg: BatchTopKConfig) -> None:
        super().__init__(cfg)
        self.register_buffer("threshold", torch.zeros(()))

    def activation(self, pre_NM: torch.Tensor) -> torch.Tensor:
        if self.training:
            return batch_topk_acts(pre_NM, self.cfg.k)
        return torch.relu(pre_NM) * (pre_NM > self.threshold)
