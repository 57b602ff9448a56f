"""Configuration dataclasses: one per SAE architecture, plus :class:`TrainConfig` for the optimiser.

An architecture config fixes the dictionary *and its objective* (sparsity mechanism, loss weights), so
a saved SAE carries everything needed to say what it was trained for. :class:`TrainConfig` holds what
only matters while fitting (steps, batch size, learning rate, warm-up, ...).

Conventions (papers.md §1.6, §2.3, §3.3): ``d_in`` is the width of the probed representation and
``n_latents`` the dictionary size; the decoder is stored as ``W_dec`` of shape ``(n_latents, d_in)``
whose **rows** are the dictionary atoms (P1 calls them the columns of its ``(d, m)`` decoder).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields
from typing import Any, ClassVar

__all__ = [
    "BatchTopKConfig",
    "EpochSelection",
    "MatryoshkaConfig",
    "P3Config",
    "ReluL1Config",
    "SAEConfig",
    "TopKConfig",
    "TrainConfig",
]

INPUT_NORMS = ("none", "scalar")
RECON_LOSSES = ("squared", "unsquared")
PRED_LOSSES = ("mse", "bce", "mse_prob")
SAMPLINGS = ("replacement", "epochs")
DECODER_NORMS = ("step", "epoch")
SELECTION_MODES = ("max", "min")
B_DEC_INITS = ("init", "mean")


def _positive_int(obj: object, name: str) -> None:
    value = getattr(obj, name)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{type(obj).__name__}.{name} must be a positive int, got {value!r}")


def _non_negative(obj: object, name: str) -> None:
    value = getattr(obj, name)
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not value >= 0 or math.isinf(value):
        raise ValueError(f"{type(obj).__name__}.{name} must be a finite number >= 0, got {value!r}")


def _choice(obj: object, name: str, allowed: tuple[str, ...]) -> None:
    value = getattr(obj, name)
    if value not in allowed:
        raise ValueError(f"{type(obj).__name__}.{name} must be one of {allowed}, got {value!r}")


@dataclass
class SAEConfig:
    """Fields every architecture shares. Use a subclass; ``architecture`` names the registry entry."""

    architecture: ClassVar[str] = ""

    d_in: int = 64
    """Width of the probed representation (P1: SASRec hidden 64; P2: emb 64; P3: 20 on ML-1M, 100 on Last.FM)."""
    n_latents: int = 512
    """Dictionary size m (P1: 512 = 8x on ML-20M; P2: 16 x 64 = 1,024; P3: 22 / 70 / 80)."""
    input_norm: str = "none"
    """``"scalar"``: standardise inputs by ONE scalar mean and std over all entries of the training data
    (P1 ``activation_normed``, papers.md §1.5); stored in the SAE and folded into the weights on export.
    ``"none"``: raw inputs."""

    def __post_init__(self) -> None:
        _positive_int(self, "d_in")
        _positive_int(self, "n_latents")
        _choice(self, "input_norm", INPUT_NORMS)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict with the ``architecture`` key that :func:`~recsae_core.sae.from_config` reads."""
        out = {"architecture": self.architecture}
        for k, v in asdict(self).items():
            out[k] = list(v) if isinstance(v, tuple) else v
        return out

    @classmethod
    def field_names(cls) -> set[str]:
        return {f.name for f in fields(cls)}


@dataclass
class ReluL1Config(SAEConfig):
    """P1's vanilla SAE (``dictionary_learning`` ``AutoEncoder`` + ``StandardTrainer``, papers.md §1.6).

    ``f = ReLU(W_enc (x - b_dec) + b_enc)``, ``x_hat = W_dec f + b_dec``; unit-norm decoder atoms
    (gradient component parallel to each atom removed before the step, atoms renormalised after it);
    loss = reconstruction + ``l1_coeff`` * mean over the batch of ``||f||_1``.
    """

    architecture: ClassVar[str] = "relu_l1"

    n_latents: int = 512
    """Dictionary size (P1 ``l1_sae_ml-20m.yaml`` ``dict_size`` 512)."""
    input_norm: str = "scalar"
    """P1 normalises with one scalar mean/std (``activation_normed``); ``"none"`` = P1's ML-1M dev run."""
    l1_coeff: float = 0.1
    """Weight of mean_batch ||f||_1 (P1 ``l1_penalty`` 0.1)."""
    recon: str = "squared"
    """``"squared"``: mean_batch ||x - x_hat||_2^2 (``dictionary_learning`` from 2024-12-26; recsae's choice,
    as papers.md §1.6 recommends). ``"unsquared"``: mean_batch ||x - x_hat||_2, the variant before that
    change; P1's code predates 2024-12-29, so which one the paper used is ambiguous."""

    def __post_init__(self) -> None:
        super().__post_init__()
        _non_negative(self, "l1_coeff")
        _choice(self, "recon", RECON_LOSSES)


@dataclass
class TopKConfig(SAEConfig):
    """P2's TopK SAE (RecSAE ``sae.py``, Gao et al. 2024; papers.md §2.3).

    ``pre = ReLU(W_enc (x - b_dec) + b_enc)``, keep the ``k`` largest per row; loss = FVU +
    ``aux_coeff`` * AuxK, where the ``aux_k`` largest pre-activations of dead latents reconstruct the
    (detached) residual, scaled by ``min(#dead / aux_k, 1)``. Decoder atoms kept at unit norm
    (``decoder_norm`` says when).
    """

    architecture: ClassVar[str] = "topk"

    n_latents: int = 1024
    """Dictionary size (P2: ``sae_scale_size`` 16 x emb 64 = 1,024)."""
    k: int = 8
    """Active latents per row (P2 README default 8; the grid is {4, 8, 16, 32})."""
    aux_k: int | None = None
    """Dead latents used by AuxK; ``None`` = ``d_in // 2`` (Gao et al. App. B.1 heuristic; P2: 32)."""
    aux_coeff: float = 1 / 32
    """AuxK weight (P2 and Gao et al.: 1/32)."""
    decoder_norm: str = "step"
    """When decoder atoms are brought back to unit norm. ``"step"`` (default): the gradient component
    parallel to each atom is removed before every optimiser step and the atoms are renormalised after it
    (Gao et al./OpenAI, sparsify, P1's ``dictionary_learning``): the atoms are exactly unit norm whenever
    the SAE is read, which the default keeps for every architecture alike. ``"epoch"``: P2's schedule
    (RecSAE ``sae.py``, papers.md §2.3): atoms set to unit norm at initialisation and at the start of every
    epoch, with no gradient projection, so norms drift within an epoch (needs ``TrainConfig.epochs``)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        _choice(self, "decoder_norm", DECODER_NORMS)
        _positive_int(self, "k")
        if self.k > self.n_latents:
            raise ValueError(f"{type(self).__name__}.k={self.k} exceeds n_latents={self.n_latents}")
        if self.aux_k is None:
            self.aux_k = max(1, self.d_in // 2)
        _positive_int(self, "aux_k")
        _non_negative(self, "aux_coeff")


@dataclass
class BatchTopKConfig(TopKConfig):
    """BatchTopK (Bussmann et al. 2024; engineering.md §2.7): the ``k * B`` largest activations over the
    whole training batch are kept; at inference a learned threshold replaces the batch selection
    (``acts = ReLU(pre) * (pre > threshold)``), so encoding never depends on the batch composition
    (saved as a JumpReLU-style SAE with one threshold, as SAELens does)."""

    architecture: ClassVar[str] = "batch_topk"

    threshold_rate: float = 0.01
    """EMA rate of the inference threshold towards the batch's minimum selected positive activation
    (Bussmann / SAELens ``lr 0.01``; dictionary_learning uses 0.001 from step 1000)."""
    selection: str = "chunked"
    """Training selection, all exact: ``"chunked"`` (chunk maxima bound the batch threshold, then a
    top-(k*B) over the candidate chunks; the fast path), ``"two_stage"`` (engineering.md §4: per-row
    top-4k then top-(k*B), flat fallback when a row saturates) or ``"flat"`` (``topk`` over the batch)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 0.0 < self.threshold_rate <= 1.0:
            raise ValueError(f"BatchTopKConfig.threshold_rate must be in (0, 1], got {self.threshold_rate}")
        _choice(self, "selection", ("chunked", "two_stage", "flat"))


@dataclass
class P3Config(SAEConfig):
    """P3's prediction-aware SAE (Arviv et al., ``Monosemanticity4Rec``; papers.md §3.3).

    ``z = ReLU(W (x - b_pre) + b_lat)``, ``x_hat = W^T z + b_pre`` (tied weights by default);
    loss = ``alpha`` * L_emb + ``beta`` * L_pred + ``l1_coeff`` * L1 + ``kl_coeff`` * KL(rho || rho_hat), where
    L_emb is the user MSE + item MSE, L_pred compares the frozen recommender's scores on original vs
    reconstructed embeddings (gradients flow through the frozen scorer), rho_hat_j is latent j's batch-mean
    activation clamped to [1e-6, 1 - 1e-6]. Defaults: the ML-1M MF column of papers.md §3.4.
    """

    architecture: ClassVar[str] = "p3"

    d_in: int = 20
    """Embedding size of the two-tower model (P3 ML-1M MF/NCF: 20; Last.FM: 100)."""
    n_latents: int = 22
    """Latents (P3 ML-1M: 22; Last.FM: 70)."""
    tied: bool = True
    """Decoder = encoder transpose (P3 ``Autoencoder``, OpenAI style; no decoder normalisation)."""
    pre_bias: bool = True
    """Subtract/add a learned pre-bias ``b_pre`` (P3 MF ``Autoencoder``; False = P3 ``SparseAutoencoderNCF``)."""
    normalize_rows: bool = False
    """Standardise each input vector by its own mean/std and de-standardise the output (P3
    ``normalize=True``: LayerNorm without affine). Not to be combined with ``input_norm="scalar"``."""
    alpha: float = 0.1
    """Weight of L_emb = MSE(users) + MSE(items), each the mean over entries (P3 ML-1M MF: mse 0.1)."""
    beta: float = 1.0
    """Weight of L_pred (P3 ML-1M MF: pred 1; beta = 0 gives a plain reconstruction SAE)."""
    l1_coeff: float = 0.0
    """Weight of mean over rows of ||z||_1 (P3 ML-1M MF: 0; Last.FM MF: 0.3)."""
    kl_coeff: float = 0.01
    """Weight of KL(rho || rho_hat) summed over latents (P3 ML-1M MF: 0.01)."""
    rho: float = 0.05
    """Target mean activation rho (P3 ML-1M: 0.05; Last.FM MF and Matryoshka: 0.1)."""
    pred_loss: str = "mse"
    """L_pred: ``"mse"`` on logits (P3 MF), ``"bce"`` of reconstructed logits against the original
    probabilities as soft targets (P3 ML-1M NCF), ``"mse_prob"`` on probabilities (P3 Last.FM NCF)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        for name in ("alpha", "beta", "l1_coeff", "kl_coeff"):
            _non_negative(self, name)
        if not 0.0 < self.rho < 1.0:
            raise ValueError(f"{type(self).__name__}.rho must be in (0, 1), got {self.rho}")
        _choice(self, "pred_loss", PRED_LOSSES)
        if self.input_norm != "none":
            raise ValueError(
                f"{type(self).__name__} does not support input_norm={self.input_norm!r} (tied weights cannot "
                "absorb a folded scale); use normalize_rows=True for P3's per-vector standardisation"
            )


@dataclass
class MatryoshkaConfig(P3Config):
    """P3's Matryoshka variant (Last.FM; papers.md §3.3, engineering.md §2.8): nested prefixes of the
    dictionary each reconstruct the input; all prefix reconstructions come from ONE pass (each block is
    decoded once and a cumulative sum gives every prefix). With a single prefix it is exactly
    :class:`P3Config`'s SAE. Defaults: P3 Last.FM Matryoshka (K = 80, [20, 40, 80])."""

    architecture: ClassVar[str] = "matryoshka"

    d_in: int = 100
    """Embedding size (P3 Last.FM: 100)."""
    n_latents: int = 80
    """Latents K (P3 Matryoshka: 80)."""
    prefixes: tuple[int, ...] = field(default_factory=tuple)
    """Strictly increasing prefix sizes ending at ``n_latents``; empty = ``(K/4, K/2, K)`` (P3: [20, 40, 80])."""
    alpha: float = 8.0
    """Weight of the full-dictionary reconstruction L_emb (P3 Matryoshka defaults: mse 8)."""
    inner_weight: float = 5.0
    """Weight of each inner prefix's reconstruction MSE, relative to ``alpha``'s unit: the loss adds
    ``alpha * inner_weight * MSE(prefix)`` per inner prefix (P3 Matryoshka defaults: inner 5)."""
    l1_coeff: float = 0.3
    """Weight of the L1 on the full z (P3 Matryoshka defaults: L1 0.3)."""
    kl_coeff: float = 0.003
    """Weight of the KL on the full z (P3 Matryoshka defaults: KL 0.003)."""
    rho: float = 0.1
    """Target mean activation (P3 Matryoshka: 0.1)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        _non_negative(self, "inner_weight")
        m = self.n_latents
        if not self.prefixes:
            self.prefixes = tuple(sorted({max(1, m // 4), max(1, m // 2), m}))
        self.prefixes = tuple(int(p) for p in self.prefixes)
        if any(p < 1 for p in self.prefixes) or any(
            b <= a for a, b in zip(self.prefixes, self.prefixes[1:], strict=False)
        ):
            raise ValueError(
                f"MatryoshkaConfig.prefixes must be strictly increasing positive ints, got {self.prefixes}"
            )
        if self.prefixes[-1] != m:
            raise ValueError(
                f"MatryoshkaConfig.prefixes must end at n_latents={m} (the full dictionary), got {self.prefixes}"
            )


@dataclass
class EpochSelection:
    """Best-epoch selection and early stopping for :func:`~recsae_core.sae.trainer.train_sae` (P2: dev
    NDCG@5 with the SAE spliced in, best epoch kept, early stop 10; papers.md §2.3).

    After every epoch the trainer records one row of per-epoch metrics (its own, plus those returned by
    ``epoch_callback``); the SAE of the epoch with the best ``metric`` is restored when training ends.
    Only a *strictly* better value replaces the best epoch, so among equal values the earliest is kept.

    With ``se_metric`` the one-standard-error rule decides instead: the SAE kept is that of the **latest**
    epoch whose value lies within one standard error (the best epoch's ``se_metric``) of the best value so
    far — among epochs the dev set cannot tell apart, the longest-trained one. A plain "best dev value"
    picks dev noise when the per-epoch differences are smaller than the metric's standard error (issue 10:
    P2's dev NDCG@5 on ~1,300 cases kept SASRec SAEs from epoch 1–9 of 50, FVU 0.1–0.8 against 0.02–0.04
    at epoch 50). Patience still counts epochs since the best value.
    """

    metric: str
    """Key of the per-epoch record to select on, e.g. ``"dev_ndcg@5"`` from the callback, or the
    trainer's own ``"loss"``, ``"fvu"``, ``"dead_latents"``."""
    mode: str = "max"
    """``"max"``: larger is better (accuracy); ``"min"``: smaller is better (loss)."""
    patience: int | None = None
    """Stop after this many epochs in a row without a strictly better value (P2 ``--early_stop`` 10:
    the run stops at epoch ``best + patience``); ``None`` runs every epoch."""
    se_metric: str | None = None
    """Key of the per-epoch record holding the standard error of ``metric`` (e.g. ``"dev_ndcg@5_se"``):
    switches on the one-standard-error rule (class docstring); ``None`` keeps the best epoch."""

    def __post_init__(self) -> None:
        if not isinstance(self.metric, str) or not self.metric:
            raise ValueError(f"EpochSelection.metric must be a non-empty metric name, got {self.metric!r}")
        if self.se_metric is not None and (not isinstance(self.se_metric, str) or not self.se_metric):
            raise ValueError(
                f"EpochSelection.se_metric must be a metric name or None, got {self.se_metric!r}"
            )
        _choice(self, "mode", SELECTION_MODES)
        if self.patience is not None:
            _positive_int(self, "patience")


@dataclass
class TrainConfig:
    """Optimisation settings shared by every architecture (:func:`~recsae_core.sae.trainer.train_sae`)."""

    steps: int = 10_000
    """Optimiser steps (P1 ``steps`` 10,000). Ignored when ``epochs`` is set."""
    epochs: float | None = None
    """Passes over the data instead of ``steps`` (P2: <= 50 epochs; P3: 18 / 30); needs a sized dataset."""
    batch_size: int = 256
    """Rows per step (P1: 256 sampled uniformly with replacement; P3: 256 users and 256 items)."""
    lr: float = 1e-3
    """Adam learning rate (P1 and P3: 1e-3; P2: 1e-5 - 1e-4 with tiny batches)."""
    warmup_steps: int = 1000
    """Linear LR warm-up from 0 (P1 ``warmup_steps`` 1000; 0 disables)."""
    decay_fraction: float = 0.0
    """Linear LR decay to 0 over this final fraction of the steps (Anthropic-style 0.2; P1: none)."""
    betas: tuple[float, float] = (0.9, 0.999)
    """Adam betas (torch defaults, as in P1/P2/P3)."""
    eps: float = 1e-8
    """Adam epsilon."""
    weight_decay: float = 0.0
    """Adam L2 weight decay (P2 ``--l2`` 1e-6)."""
    grad_clip: float | None = None
    """Clip the global gradient norm to this value (dictionary_learning / SAELens: 1.0); None = off."""
    sampling: str = "replacement"
    """``"replacement"``: rows drawn uniformly with replacement each step (P1 ``SAEIterableDataset``);
    ``"epochs"``: a fresh permutation per pass (P2, P3)."""
    dead_after: int | None = None
    """A latent is dead after this many training rows without firing (OpenAI / sparsify count tokens);
    None = one pass over the data (P2: never active during the previous epoch), capped at 10M."""
    log_every: int = 100
    """Steps between history records and progress-bar updates."""
    fused: bool = True
    """Use the fused training kernels (:mod:`recsae_core.sae.kernels`); False = the modules' autograd
    forward (the reference the kernels are tested against)."""
    aux_start_epoch: int = 1
    """First epoch (1-based) whose loss includes AuxK (P2: 2, after one epoch has shown which latents are
    dead). 1 = from the first step (default; with the default ``dead_after`` of one pass no latent can be
    dead before epoch 2 anyway). Values above 1 need ``epochs``."""
    selection: EpochSelection | None = None
    """Best-epoch selection and early stopping (P2); needs ``epochs``. ``None``: the last step's SAE."""
    b_dec_init: str = "init"
    """The decoder bias before the first step: ``"init"`` — as the SAE comes (zeros from a config, as in
    P1's, P2's and P3's code); ``"mean"`` — the mean of the training rows in the SAE's input space (SAELens
    ``b_dec_init_method="mean"``; :func:`~recsae_core.sae.trainer.init_b_dec_mean`). From zeros a TopK SAE on
    rows with a large shared component (SASRec's LayerNorm'd states: mean norm 5.1 of 6.3 on ML-100k) never
    learns it into ``b_dec`` and spends latents carrying it (issue 10: 2 of k = 8 latents fire on > 50 % of
    the rows after 50 epochs, ``b_dec`` norm 0.9)."""

    def __post_init__(self) -> None:
        _positive_int(self, "steps")
        _positive_int(self, "batch_size")
        _positive_int(self, "log_every")
        if self.epochs is not None and not (self.epochs > 0 and math.isfinite(self.epochs)):
            raise ValueError(f"TrainConfig.epochs must be > 0 or None, got {self.epochs}")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise ValueError(f"TrainConfig.lr must be > 0, got {self.lr}")
        if (
            isinstance(self.warmup_steps, bool)
            or not isinstance(self.warmup_steps, int)
            or self.warmup_steps < 0
        ):
            raise ValueError(f"TrainConfig.warmup_steps must be an int >= 0, got {self.warmup_steps!r}")
        if not 0.0 <= self.decay_fraction <= 1.0:
            raise ValueError(f"TrainConfig.decay_fraction must be in [0, 1], got {self.decay_fraction}")
        self.betas = tuple(float(b) for b in self.betas)  # type: ignore[assignment]
        if len(self.betas) != 2 or not all(0.0 <= b < 1.0 for b in self.betas):
            raise ValueError(f"TrainConfig.betas must be two numbers in [0, 1), got {self.betas}")
        if not self.eps > 0:
            raise ValueError(f"TrainConfig.eps must be > 0, got {self.eps}")
        _non_negative(self, "weight_decay")
        if self.grad_clip is not None and not self.grad_clip > 0:
            raise ValueError(f"TrainConfig.grad_clip must be > 0 or None, got {self.grad_clip}")
        _choice(self, "sampling", SAMPLINGS)
        _choice(self, "b_dec_init", B_DEC_INITS)
        if self.dead_after is not None:
            _positive_int(self, "dead_after")
        _positive_int(self, "aux_start_epoch")
        if isinstance(self.selection, dict):
            self.selection = EpochSelection(**self.selection)
        if self.selection is not None and not isinstance(self.selection, EpochSelection):
            raise ValueError(
                f"TrainConfig.selection must be an EpochSelection or None, got {self.selection!r}"
            )
