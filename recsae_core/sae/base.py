"""The dictionary every architecture shares: encoder, decoder, input normalisation, decoder constraints.

Shapes: ``W_enc`` ``(m, d)`` (row j = encoder direction of latent j), ``b_enc`` ``(m,)``, ``W_dec``
``(m, d)`` (row j = decoder atom of latent j; P1's ``(d, m)`` decoder columns), ``b_dec`` ``(d,)`` (the
pre-bias subtracted before encoding and added after decoding; P3's ``b_pre``). With tied weights (P3)
the decoder *is* ``W_enc`` (no separate parameter).

``encode``/``decode``/``forward`` accept any leading shape ``(..., d)``. Losses and optimisers live in
:mod:`recsae_core.sae.trainer`, never here.
"""

from __future__ import annotations

import copy
import dataclasses
from typing import Any, ClassVar, NamedTuple

import torch
from torch import nn

from recsae_core.sae.config import SAEConfig

__all__ = ["RowStats", "SAEOutput", "SparseAutoencoder"]


class RowStats(NamedTuple):
    """Per-row mean and std ``(..., 1)`` of a per-vector standardised input (P3 ``normalize=True``)."""

    mean: torch.Tensor
    std: torch.Tensor


class SAEOutput(NamedTuple):
    """What :meth:`SparseAutoencoder.forward` returns.

    Attributes:
        x_hat: ``(..., d)`` reconstruction in the input's space.
        acts: ``(..., m)`` latent activations (after the nonlinearity / selection).
        pre_acts: ``(..., m)`` encoder pre-activations ``W_enc (x_n - b_dec) + b_enc``.
        row_stats: per-row statistics when the SAE standardises each row (P3), else ``None``.
    """

    x_hat: torch.Tensor
    acts: torch.Tensor
    pre_acts: torch.Tensor
    row_stats: RowStats | None = None


class SparseAutoencoder(nn.Module):
    """Base class; subclasses define :meth:`activation` and are registered by name."""

    architecture: ClassVar[str] = ""
    config_cls: ClassVar[type] = SAEConfig
    unit_norm_decoder: ClassVar[bool] = True
    """Decoder atoms are kept at unit L2 norm by the trainer (P1 ConstrainedAdam; P2)."""

    def __init__(self, cfg: SAEConfig) -> None:
        super().__init__()
        self.cfg = cfg
        d, m = cfg.d_in, cfg.n_latents
        self.d_in, self.n_latents = d, m
        self.tied = bool(getattr(cfg, "tied", False))
        self.W_enc = nn.Parameter(torch.empty(m, d))
        self.b_enc = nn.Parameter(torch.zeros(m))
        if not self.tied:
            self.W_dec = nn.Parameter(torch.empty(m, d))
        if getattr(cfg, "pre_bias", True):
            self.b_dec = nn.Parameter(torch.zeros(d))
        else:
            self.register_buffer("b_dec", torch.zeros(d))
        # One scalar mean/std (P1 ``activation_normed``); identity until the trainer fits them.
        self.register_buffer("input_mean", torch.zeros(()))
        self.register_buffer("input_std", torch.ones(()))
        self.reset_parameters()

    # ----------------------------------------------------------------------------------------- weights
    @property
    def decoder_weight(self) -> torch.Tensor:
        """``(m, d)`` decoder atoms (``W_enc`` itself when tied)."""
        return self.W_enc if self.tied else self.W_dec

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """Random unit-norm atoms; the encoder starts as the decoder's transpose (dictionary_learning,
        sparsify, OpenAI: engineering.md §2.2); biases 0."""
        w = torch.randn(self.n_latents, self.d_in)
        w /= w.norm(dim=1, keepdim=True).clamp_min(1e-12)
        self.W_enc.copy_(w)
        if not self.tied:
            self.W_dec.copy_(w)
        self.b_enc.zero_()
        self.b_dec.zero_()

    def decoder_norms(self) -> torch.Tensor:
        """``(m,)`` L2 norms of the decoder atoms."""
        return self.decoder_weight.detach().norm(dim=1)

    @torch.no_grad()
    def set_decoder_norm_to_unit_norm_(self) -> None:
        """Renormalise every decoder atom to unit L2 norm (after each optimiser step)."""
        w = self.decoder_weight
        w /= w.norm(dim=1, keepdim=True).clamp_min(1e-12)

    @torch.no_grad()
    def remove_parallel_decoder_grad_(self) -> None:
        """Remove from ``W_dec.grad`` its component parallel to each (unit) atom (before each step).

        With unit-norm atoms, only the tangential part of the gradient changes an atom's direction; the
        parallel part would only be undone by the renormalisation (P1 ``ConstrainedAdam``, sparsify,
        OpenAI ``unit_norm_decoder_grad_adjustment_``).
        """
        w = self.decoder_weight
        if w.grad is None:
            return
        parallel_M1 = (w.grad * w).sum(dim=1, keepdim=True)
        w.grad.sub_(parallel_M1 * w)

    # ----------------------------------------------------------------------------- input normalisation
    @property
    def has_input_norm(self) -> bool:
        return self.cfg.input_norm == "scalar"

    @torch.no_grad()
    def set_input_normalization(self, mean: float, std: float) -> None:
        """Store the one scalar mean/std the inputs are standardised by (P1)."""
        if not self.has_input_norm:
            raise ValueError(
                f"this SAE has input_norm={self.cfg.input_norm!r}; build it with input_norm='scalar'"
            )
        if not std > 0:
            raise ValueError(f"input std must be > 0, got {std}")
        self.input_mean.fill_(float(mean))
        self.input_std.fill_(float(std))

    @torch.no_grad()
    def fold_input_normalization_(self) -> SparseAutoencoder:
        """Fold the scalar mean/std into the weights so the SAE takes raw inputs with no normalisation step.

        ``W_enc <- W_enc / s``, ``W_dec <- s W_dec``, ``b_dec <- s b_dec + mu``; pre-activations, activations
        and reconstructions are unchanged (up to rounding), decoder atoms then have norm ``s`` instead of
        1. Afterwards ``input_norm`` is ``"none"``. Returns ``self``.
        """
        if not self.has_input_norm:
            return self
        mu, s = self.input_mean.clone(), self.input_std.clone()
        self.W_enc /= s
        self.W_dec *= s
        self.b_dec.mul_(s).add_(mu)
        self.input_mean.zero_()
        self.input_std.fill_(1.0)
        self.cfg = dataclasses.replace(self.cfg, input_norm="none")
        return self

    def folded_copy(self) -> SparseAutoencoder:
        """A deep copy with the input normalisation folded in (see :meth:`fold_input_normalization_`)."""
        return copy.deepcopy(self).fold_input_normalization_()

    def _prepare(self, x_ND: torch.Tensor) -> tuple[torch.Tensor, RowStats | None]:
        """Map raw inputs to the space the dictionary works in; returns the statistics needed to map back."""
        if self.has_input_norm:
            return (x_ND - self.input_mean) / self.input_std, None
        return x_ND, None

    def _restore(self, xhat_ND: torch.Tensor, stats: RowStats | None) -> torch.Tensor:
        if self.has_input_norm:
            return xhat_ND * self.input_std + self.input_mean
        return xhat_ND

    # ---------------------------------------------------------------------------- encode / decode
    def _flat(self, x: torch.Tensor, width: int, what: str) -> torch.Tensor:
        if x.shape[-1] != width:
            raise ValueError(f"{what} must have last dimension {width}, got shape {tuple(x.shape)}")
        return x.reshape(-1, width)

    def pre_activations_normalized(self, xn_ND: torch.Tensor) -> torch.Tensor:
        """``(N, m)`` ``W_enc (x_n - b_dec) + b_enc`` for inputs already in the dictionary's space."""
        return torch.addmm(self.b_enc, xn_ND - self.b_dec, self.W_enc.t())

    def activation(self, pre_NM: torch.Tensor) -> torch.Tensor:
        """Latent activations from pre-activations (the architecture's nonlinearity / selection)."""
        raise NotImplementedError

    def decode_normalized(self, acts_NM: torch.Tensor) -> torch.Tensor:
        """``(N, d)`` ``W_dec f + b_dec`` in the dictionary's space."""
        return torch.addmm(self.b_dec, acts_NM, self.decoder_weight)

    def encode_with_stats(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, RowStats | None]:
        """``(acts, pre_acts, row_stats)`` for inputs of shape ``(..., d)``."""
        lead = x.shape[:-1]
        xn, stats = self._prepare(self._flat(x, self.d_in, "input"))
        pre = self.pre_activations_normalized(xn)
        acts = self.activation(pre)
        m = self.n_latents
        if stats is not None:
            stats = RowStats(stats.mean.reshape(*lead, 1), stats.std.reshape(*lead, 1))
        return acts.reshape(*lead, m), pre.reshape(*lead, m), stats

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """``(..., m)`` latent activations of inputs ``(..., d)``."""
        return self.encode_with_stats(x)[0]

    def decode(self, acts: torch.Tensor, row_stats: RowStats | None = None) -> torch.Tensor:
        """``(..., d)`` reconstruction from activations ``(..., m)``.

        ``row_stats`` (from :meth:`encode_with_stats`) is required when the SAE standardises each row.
        """
        lead = acts.shape[:-1]
        f = self._flat(acts, self.n_latents, "activations")
        stats = None
        if row_stats is not None:
            stats = RowStats(row_stats.mean.reshape(-1, 1), row_stats.std.reshape(-1, 1))
        return self._restore(self.decode_normalized(f), stats).reshape(*lead, self.d_in)

    def forward(self, x: torch.Tensor) -> SAEOutput:
        """Encode then decode; ``forward(x).x_hat == decode(encode(x))``."""
        acts, pre, stats = self.encode_with_stats(x)
        return SAEOutput(self.decode(acts, stats), acts, pre, stats)

    def extra_repr(self) -> str:
        return f"architecture={self.architecture!r}, d_in={self.d_in}, n_latents={self.n_latents}, tied={self.tied}"

    def config_dict(self) -> dict[str, Any]:
        return self.cfg.to_dict()
