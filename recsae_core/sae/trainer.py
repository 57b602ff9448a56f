"""ONE trainer for every architecture: losses, optimiser, LR schedule, constraints, bookkeeping.

Objectives (papers.md §1.6, §2.3, §3.3; coefficients live in the architecture config):

| architecture | loss (``x`` and ``x_hat`` in the dictionary's space; ``N`` rows) |
|---|---|
| ``relu_l1`` | ``mean_N ||x - x_hat||^2`` (or unsquared) ``+ l1_coeff * mean_N ||f||_1`` |
| ``topk``, ``batch_topk`` | ``FVU + aux_coeff * min(#dead / aux_k, 1) * ||e_hat - e||^2 / sum ||x - mean(x)||^2``, ``e = x - x_hat`` detached |
| ``p3`` | ``alpha * (MSE_users + MSE_items) + beta * L_pred + l1_coeff * mean_N ||z||_1 + kl_coeff * KL(rho || rho_hat)`` |
| ``matryoshka`` | as ``p3`` with ``alpha * (MSE_full + inner_weight * sum_inner MSE_prefix)`` per side |

FVU = ``sum ||x - x_hat||^2 / sum ||x - mean_batch(x)||^2`` (P2). ``L_pred`` compares the frozen
recommender's logits on original vs reconstructed user and item embeddings; gradients flow through the
frozen scorer into the SAE (P3). MSE terms of P3 are means over entries (``nn.MSELoss``).

Bookkeeping: linear LR warm-up (P1) and optional linear decay; unit-norm decoder atoms for
``relu_l1``/``topk``/``batch_topk`` (parallel gradient removed before the step, renormalised after; or,
with ``decoder_norm="epoch"``, renormalised at the start of every epoch as P2 does); dead latents = no
activation for ``dead_after`` training rows; BatchTopK's inference threshold = EMA of the smallest selected
positive activation; NaN/inf loss -> :class:`SAEDivergenceError` naming the step.

Epochs (P2, papers.md §2.3): with ``TrainConfig.epochs`` set, an epoch is ``ceil(n_rows / batch_size)``
steps whose last batch holds the remaining rows (with ``sampling="epochs"`` one epoch is exactly one
permutation). Per-epoch bookkeeping (``epoch_callback``, ``TrainConfig.selection``, ``aux_start_epoch``,
``decoder_norm="epoch"``) records one row per epoch in :attr:`SAETrainResult.epoch_history`: ``epoch``,
``step``, mean ``loss`` and ``fvu`` over the epoch's steps, ``dead_latents`` (latents that never fired
during the epoch: P2's definition), ``dead_fraction`` (the rolling ``dead_after`` rule), ``seconds``, and
whatever the callback returns (e.g. P2's dev NDCG@5 with the SAE spliced in).

Deviation from P2: AuxK's dead set follows the rolling ``dead_after`` rule (default: one pass of rows
without firing) instead of being frozen at each epoch start to "never fired in the previous epoch".
"""

from __future__ import annotations

import contextlib
import math
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, NamedTuple, Protocol, runtime_checkable

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from recsae_core.errors import RecsaeError
from recsae_core.sae import kernels
from recsae_core.sae.base import SparseAutoencoder
from recsae_core.sae.config import EpochSelection, SAEConfig, TrainConfig
from recsae_core.sae.p3 import P3SAE, call_scorer
from recsae_core.sae.registry import from_config
from recsae_core.sae.topk import BatchTopKSAE, TopKSAE
from recsae_core.utils import resolve_device, torch_threads

__all__ = [
    "RowSampler",
    "SAEDivergenceError",
    "SAETrainResult",
    "TwoTowerBatch",
    "TwoTowerData",
    "init_b_dec_mean",
    "train_sae",
]

MAX_DEAD_AFTER = 10_000_000  # OpenAI / sparsify: 10M tokens


class SAEDivergenceError(RecsaeError, FloatingPointError):
    """The training loss became NaN or infinite."""


@dataclass
class TwoTowerData:
    """User and item embeddings of a frozen two-tower model, the training data of P3's SAE.

    Attributes:
        user_emb: ``(U, D)`` user embeddings (P3: train users only).
        item_emb: ``(I, D)`` item embeddings.
        pairs: ``(P, 2)`` int64 ``(user, item)`` training pairs; a batch is ``batch_size`` of them, its user
            rows and item rows are the pairs' (so users come as often as they interact and items as often as
            they are drawn: P3's batches are the base model's training batches, papers.md §3.3) and an epoch
            is one pass over the pairs. ``None``: every step samples ``batch_size`` users and
            ``batch_size`` items uniformly from the tables and an epoch is one pass over the users.
        all_pairs: where L_pred is computed. ``False``: on the batch's matched pairs (P3 NCF: the observed
            positives). ``True``: on every user x item pair of the batch, ``B x B`` (P3 MF, whose batches
            hold positives and sampled negatives). ``None`` (default): ``True`` without ``pairs``, ``False``
            with them.
    """

    user_emb: torch.Tensor
    item_emb: torch.Tensor
    pairs: torch.Tensor | None = None
    all_pairs: bool | None = None

    def __post_init__(self) -> None:
        if (
            self.user_emb.ndim != 2
            or self.item_emb.ndim != 2
            or self.user_emb.shape[1] != self.item_emb.shape[1]
        ):
            raise ValueError(
                f"TwoTowerData needs (U, D) and (I, D) embeddings, got {tuple(self.user_emb.shape)} and "
                f"{tuple(self.item_emb.shape)}"
            )
        if self.pairs is not None:
            self.pairs = torch.as_tensor(self.pairs, dtype=torch.int64)
            if self.pairs.ndim != 2 or self.pairs.shape[1] != 2 or len(self.pairs) == 0:
                raise ValueError(
                    f"pairs must be a non-empty (P, 2) tensor, got shape {tuple(self.pairs.shape)}"
                )
            if self.pairs[:, 0].max() >= len(self.user_emb) or self.pairs[:, 1].max() >= len(self.item_emb):
                raise ValueError("pairs reference users or items beyond the embedding tables")
            if self.pairs.min() < 0:
                raise ValueError("pairs must be non-negative ids")
        if self.all_pairs is None:
            self.all_pairs = self.pairs is None
        elif not self.all_pairs and self.pairs is None:
            raise ValueError("all_pairs=False (L_pred on matched pairs) needs pairs=(P, 2) (user, item) ids")

    @property
    def pairwise(self) -> bool:
        """L_pred on the batch's matched pairs (``(B,)`` scores) rather than the ``B x B`` grid."""
        return not self.all_pairs

    def __len__(self) -> int:
        return len(self.pairs) if self.pairs is not None else len(self.user_emb)


class TwoTowerBatch(NamedTuple):
    """One P3 batch: embedding rows and the ids behind them."""

    user_emb: torch.Tensor  # (B, D)
    item_emb: torch.Tensor  # (N, D)
    users: torch.Tensor  # (B,)
    items: torch.Tensor  # (N,)
    pairwise: bool


@runtime_checkable
class RowSampler(Protocol):
    """Anything that yields training batches: ``sample(batch_size, generator)`` returns ``(B, d)`` rows
    (or a :class:`TwoTowerBatch`). ``__len__`` (rows per epoch) is optional."""

    def sample(self, batch_size: int, generator: torch.Generator) -> torch.Tensor | TwoTowerBatch: ...


class _IndexStream:
    """Indices ``[0, n)``: uniform with replacement, or concatenated fresh permutations (epochs)."""

    def __init__(self, n: int, mode: str, generator: torch.Generator) -> None:
        self.n, self.mode, self.gen = n, mode, generator
        self.perm = torch.empty(0, dtype=torch.int64)
        self.pos = 0

    def take(self, b: int) -> torch.Tensor:
        if self.mode == "replacement":
            return torch.randint(self.n, (b,), generator=self.gen)
        out = []
        while b > 0:
            if self.pos >= len(self.perm):
                self.perm, self.pos = torch.randperm(self.n, generator=self.gen), 0
            chunk = self.perm[self.pos : self.pos + b]
            self.pos += len(chunk)
            b -= len(chunk)
            out.append(chunk)
        return torch.cat(out)


class _TensorSource:
    def __init__(self, data: torch.Tensor, mode: str, gen: torch.Generator) -> None:
        self.data, self.stream = data, _IndexStream(len(data), mode, gen)

    def next(self, b: int) -> torch.Tensor:
        return self.data.index_select(0, self.stream.take(b).to(self.data.device))


class _TwoTowerSource:
    def __init__(self, data: TwoTowerData, mode: str, gen: torch.Generator) -> None:
        self.data = data
        if data.pairs is not None:
            self.pair_stream = _IndexStream(len(data.pairs), mode, gen)
        else:
            self.user_stream = _IndexStream(len(data.user_emb), mode, gen)
            self.item_stream = _IndexStream(len(data.item_emb), mode, gen)

    def next(self, b: int) -> TwoTowerBatch:
        d = self.data
        dev = d.user_emb.device
        if d.pairs is not None:
            p = d.pairs[self.pair_stream.take(b)].to(dev)
            users, items = p[:, 0], p[:, 1]
        else:
            users = self.user_stream.take(b).to(dev)
            items = self.item_stream.take(b).to(dev)
        return TwoTowerBatch(
            d.user_emb.index_select(0, users), d.item_emb.index_select(0, items), users, items, d.pairwise
        )


class _SamplerSource:
    def __init__(self, sampler: RowSampler, gen: torch.Generator) -> None:
        self.sampler, self.gen = sampler, gen

    def next(self, b: int) -> torch.Tensor | TwoTowerBatch:
        return self.sampler.sample(b, self.gen)


@dataclass
class SAETrainResult:
    """What :func:`train_sae` returns.

    Attributes:
        sae: the trained SAE (eval mode, on the training device); with ``TrainConfig.selection``, the SAE
            of the best epoch.
        history: one dict per logged step (``step``, ``loss``, ``fvu``, ``l0``, ``dead_fraction``, ``lr``
            and the loss terms of the architecture).
        train_config: the settings used; ``steps`` the steps run (fewer than planned after an early stop);
            ``seconds`` wall time of the loop (callbacks included).
        rows_per_second: training rows processed per second.
        rows_since_fired: ``(m,)`` training rows since each latent last fired (at the best epoch's end
            when a best epoch was restored).
        dead_after: the ``dead_after`` rule used (rows).
        dead_fraction: share of latents dead for the returned SAE (``rows_since_fired >= dead_after``).
        epoch_history: one dict per epoch when per-epoch bookkeeping is on (see the module docstring),
            else empty.
        best_epoch: the epoch (1-based) whose SAE was restored by ``TrainConfig.selection``, else ``None``.
        stopped_early: the selection's patience ran out before the last planned epoch.
        meta: provenance (seed, device, fused).
    """

    sae: SparseAutoencoder
    history: list[dict[str, float]]
    train_config: TrainConfig
    steps: int
    seconds: float
    rows_per_second: float
    rows_since_fired: torch.Tensor
    dead_after: int
    dead_fraction: float
    meta: dict[str, Any] = field(default_factory=dict)
    epoch_history: list[dict[str, float]] = field(default_factory=list)
    best_epoch: int | None = None
    stopped_early: bool = False


class _Forward(NamedTuple):
    """Differentiable pieces one step needs, computed by a fused kernel or by the module's autograd ops."""

    xhat_LND: torch.Tensor  # reconstructions in the dictionary's space, one per prefix level
    colsum_M: torch.Tensor | None  # sum over rows of the activations (ReLU dictionaries)
    aux_ND: torch.Tensor | None  # AuxK reconstruction of the residual (TopK family)
    fired_M: torch.Tensor  # (m,) bool, latents active in this batch
    n_active: torch.Tensor | None  # scalar, active entries in the batch (None: count lazily from acts)
    acts_NM: torch.Tensor | None  # dense activations when available (for the lazy L0)
    min_pos: torch.Tensor | None  # smallest selected positive activation (BatchTopK)


def _forward_reference(sae: SparseAutoencoder, xn: torch.Tensor, dead_idx: torch.Tensor | None) -> _Forward:
    pre = sae.pre_activations_normalized(xn)
    acts = sae.activation(pre)
    if isinstance(sae, P3SAE):
        xhat = sae.decode_prefixes_normalized(acts)
    else:
        xhat = sae.decode_normalized(acts).unsqueeze(0)
    aux = None
    if isinstance(sae, TopKSAE | BatchTopKSAE) and dead_idx is not None and dead_idx.numel() > 0:
        kk = min(int(sae.cfg.aux_k), dead_idx.numel())
        av, ai = pre[:, dead_idx].topk(kk, dim=1)
        aux_acts = torch.zeros_like(pre).scatter(1, dead_idx[ai], torch.relu(av))
        aux = aux_acts @ sae.decoder_weight
    with torch.no_grad():
        pos = acts > 0
        fired = pos.any(0)
        min_pos = acts[pos].min() if isinstance(sae, BatchTopKSAE) and bool(pos.any()) else None
    colsum = acts.sum(0) if not isinstance(sae, TopKSAE | BatchTopKSAE) else None
    return _Forward(xhat, colsum, aux, fired, pos.sum(), None, min_pos)


def _forward_fused(
    sae: SparseAutoencoder, xn: torch.Tensor, dead_idx: torch.Tensor | None, ws: kernels.Workspace
) -> _Forward:
    w_dec = sae.decoder_weight
    if isinstance(sae, TopKSAE | BatchTopKSAE):
        k = sae.cfg.k
        if isinstance(sae, BatchTopKSAE):
            fn = {
                "chunked": kernels.select_batch_topk,
                "two_stage": kernels.select_batch_topk_two_stage,
                "flat": kernels.select_batch_topk_flat,
            }[sae.cfg.selection]

            def select(p: torch.Tensor) -> kernels.Selection:
                return fn(p, k)
        else:

            def select(p: torch.Tensor) -> kernels.Selection:
                return kernels.select_topk(p, k)

        xhat, aux, _crow, col, val = kernels.sparse_sae(
            xn, sae.W_enc, sae.b_enc, w_dec, sae.b_dec, select, ws, dead_idx, int(sae.cfg.aux_k)
        )
        with torch.no_grad():
            pos = val > 0
            fired = torch.zeros(sae.n_latents, dtype=torch.bool, device=xn.device)
            fired[col[pos]] = True
            n_active = pos.sum()
            min_pos = val[pos].min() if isinstance(sae, BatchTopKSAE) and bool(n_active > 0) else None
        has_aux = dead_idx is not None and dead_idx.numel() > 0
        return _Forward(xhat.unsqueeze(0), None, aux if has_aux else None, fired, n_active, None, min_pos)
    bounds = sae.prefix_bounds if isinstance(sae, P3SAE) else (sae.n_latents,)
    xhat, colsum, acts = kernels.dense_relu_sae(xn, sae.W_enc, sae.b_enc, w_dec, sae.b_dec, bounds, ws)
    return _Forward(xhat, colsum, None, colsum.detach() > 0, None, acts, None)


def _fvu(x_ND: torch.Tensor, xhat_ND: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    total = (x_ND - x_ND.mean(0)).pow(2).sum().clamp_min(1e-12)
    return (xhat_ND - x_ND).pow(2).sum() / total, total


def _pred_loss(kind: str, logits_new: torch.Tensor, logits_orig: torch.Tensor) -> torch.Tensor:
    if kind == "mse":
        return F.mse_loss(logits_new, logits_orig)
    if kind == "bce":
        return F.binary_cross_entropy_with_logits(logits_new, torch.sigmoid(logits_orig))
    return F.mse_loss(torch.sigmoid(logits_new), torch.sigmoid(logits_orig))


class _Step(NamedTuple):
    loss: torch.Tensor
    terms: dict[str, torch.Tensor]
    fwd: _Forward
    n_rows: int


class _HandGrads(torch.autograd.Function):
    """A loss whose parameter gradients were computed by hand: one autograd node hands them out, scaled by
    the incoming gradient, instead of a graph of a few dozen small ops (see :func:`_p3_two_tower_step`)."""

    @staticmethod
    def forward(ctx, loss, grads, *params):  # type: ignore[override]
        ctx.grads = grads
        return loss.clone()

    @staticmethod
    def backward(ctx, g):  # type: ignore[override]
        need = ctx.needs_input_grad[2:]
        return (None, None, *[gr * g if n else None for gr, n in zip(ctx.grads, need, strict=True)])


def _check_scores(y_new: torch.Tensor, batch: TwoTowerBatch) -> None:
    want = (len(batch.users),) if batch.pairwise else (len(batch.users), len(batch.items))
    if tuple(y_new.shape) != want:
        mode = (
            "pairwise (TwoTowerData.pairs given)" if batch.pairwise else "all-pairs (no TwoTowerData.pairs)"
        )
        raise ValueError(f"the scorer returned shape {tuple(y_new.shape)}; {mode} mode expects {want}")


def _p3_two_tower_step(sae: P3SAE, batch: TwoTowerBatch, scorer: Callable[..., torch.Tensor] | None) -> _Step:
    """P3's loss (trainer docstring) on a batch of user and item rows, one dictionary level, with the SAE's
    gradients written out by hand; only the frozen scorer's part of L_pred goes through autograd (its
    gradient with respect to the reconstructed embeddings). Same loss, terms and gradients as the autograd
    path (``fused=False``; ``tests/test_sae_kernels.py``). Why: at P3's sizes (d = 20, m = 22, 256 rows per
    side) a step is all per-op overhead; measured on one CPU thread (``benchmarks/bench_sae.py --part p3``) the
    whole training loop runs 1.35-1.9x faster than with the autograd graph (MF at P3's beta: 1.9x).

    With ``z = ReLU(W_enc (x_n - b_dec) + b_enc)``, ``x_hat = restore(W_dec^T z + b_dec)`` and
    ``G = dL/dx_hat`` (the MSE terms plus ``beta`` times the scorer's gradient), scaled by each row's std
    when rows are standardised: ``dW_dec = z^T G``, ``dz = G W_dec^T + l1 / N + kl'(rho_hat_side) /
    N_side`` masked where ``z > 0``, ``dW_enc = dz^T (x_n - b_dec)``, ``db_enc = sum dz``,
    ``db_dec = sum G - db_enc W_enc``; tied weights add ``dW_dec`` to ``dW_enc``.
    """
    cfg = sae.cfg
    bu = batch.user_emb.shape[0]
    with torch.no_grad():
        x = torch.cat([batch.user_emb, batch.item_emb])
        n, d = x.shape
        sides = ((slice(0, bu), bu), (slice(bu, n), n - bu))
        xn, stats = sae._prepare(x)
        w_dec = sae.decoder_weight
        xc = xn - sae.b_dec
        pre = torch.addmm(sae.b_enc, xc, sae.W_enc.t())
        z = pre.relu()
        xhat_n = torch.addmm(sae.b_dec, z, w_dec)
        xhat = sae._restore(xhat_n, stats)
        err = xhat - x
        g = torch.empty_like(err)  # dL/dx_hat
        emb = err.new_zeros(())
        for sl, ns in sides:
            emb = emb + err[sl].pow(2).mean()
            torch.mul(err[sl], 2.0 * cfg.alpha / (ns * d), out=g[sl])
        terms: dict[str, torch.Tensor] = {"emb": emb}
        loss = cfg.alpha * emb
        colsums = [z[sl].sum(0) for sl, _ in sides]
        dz_side = [z.new_zeros(z.shape[1]) for _ in sides]  # per-latent dL/dz of the sparsity terms
        if cfg.l1_coeff > 0:
            l1 = (colsums[0] + colsums[1]).sum() / n
            loss = loss + cfg.l1_coeff * l1
            terms["l1"] = l1
            for v in dz_side:
                v += cfg.l1_coeff / n
        if cfg.kl_coeff > 0:
            rho, kl = cfg.rho, err.new_zeros(())
            for (_, ns), c, v in zip(sides, colsums, dz_side, strict=True):
                raw = c / ns
                rh = raw.clamp(1e-6, 1 - 1e-6)
                kl = kl + (rho * torch.log(rho / rh) + (1 - rho) * torch.log((1 - rho) / (1 - rh))).sum()
                inside = (raw >= 1e-6) & (raw <= 1 - 1e-6)  # clamp passes the gradient only there
                v += (cfg.kl_coeff / ns) * ((1 - rho) / (1 - rh) - rho / rh) * inside
            loss = loss + cfg.kl_coeff * kl
            terms["kl"] = kl
        if (
            cfg.beta > 0
            and scorer is not None
            and cfg.pred_loss == "mse"
            and getattr(scorer, "bilinear", False)
        ):
            # logits u . i + c (c without the embeddings, e.g. MF's biases): c cancels in the MSE, whose
            # gradient is 2/n (r i_new, r^T u_new) with r the logit differences
            u_new, i_new = xhat[:bu], xhat[bu:]
            if batch.pairwise:
                r = (u_new * i_new).sum(1) - (batch.user_emb * batch.item_emb).sum(1)
                g_u, g_i = r[:, None] * i_new, r[:, None] * u_new
            else:
                r = u_new @ i_new.t() - batch.user_emb @ batch.item_emb.t()
                g_u, g_i = r @ i_new, r.t() @ u_new
            pred = r.pow(2).mean()
            g[:bu].add_(g_u, alpha=2.0 * cfg.beta / r.numel())
            g[bu:].add_(g_i, alpha=2.0 * cfg.beta / r.numel())
            loss = loss + cfg.beta * pred
            terms["pred"] = pred
        elif cfg.beta > 0 and scorer is not None:
            y = call_scorer(scorer, batch.user_emb, batch.item_emb, batch.users, batch.items)
            with torch.enable_grad():
                u_new = xhat[:bu].detach().requires_grad_(True)
                i_new = xhat[bu:].detach().requires_grad_(True)
                y_new = call_scorer(scorer, u_new, i_new, batch.users, batch.items)
                _check_scores(y_new, batch)
                pred = _pred_loss(cfg.pred_loss, y_new, y)
                g_u, g_i = torch.autograd.grad(pred, (u_new, i_new))
            g[:bu].add_(g_u, alpha=cfg.beta)
            g[bu:].add_(g_i, alpha=cfg.beta)
            pred = pred.detach()
            loss = loss + cfg.beta * pred
            terms["pred"] = pred
        if stats is not None:  # x_hat = x_hat_n * std + mean per row; the statistics are constants
            g.mul_(stats.std)
        grad_w_dec = z.t() @ g
        grad_b_dec = g.sum(0)
        dz = g @ w_dec.t()
        for (sl, _), v in zip(sides, dz_side, strict=True):
            dz[sl] += v
        dz.mul_(pre > 0)
        grad_w_enc = dz.t() @ xc
        grad_b_enc = dz.sum(0)
        grad_b_dec -= grad_b_enc @ sae.W_enc
        terms["fvu"] = _fvu(x, xhat)[0]
    params: list[torch.Tensor] = [sae.W_enc, sae.b_enc]
    grads: list[torch.Tensor] = [grad_w_enc if not sae.tied else grad_w_enc + grad_w_dec, grad_b_enc]
    if not sae.tied:
        params.append(sae.W_dec)
        grads.append(grad_w_dec)
    if isinstance(sae.b_dec, nn.Parameter):
        params.append(sae.b_dec)
        grads.append(grad_b_dec)
    colsum = colsums[0] + colsums[1]
    fwd = _Forward(xhat_n.unsqueeze(0), colsum, None, colsum > 0, None, z, None)
    return _Step(_HandGrads.apply(loss, tuple(grads), *params), terms, fwd, n)


def _step_loss(
    sae: SparseAutoencoder,
    batch: torch.Tensor | TwoTowerBatch,
    dead_idx: torch.Tensor | None,
    scorer: Callable[..., torch.Tensor] | None,
    fused: bool,
    ws: kernels.Workspace,
    ws_items: kernels.Workspace | None = None,
) -> _Step:
    two_tower = isinstance(batch, TwoTowerBatch)
    if fused and two_tower and isinstance(sae, P3SAE) and len(sae.prefix_bounds) == 1:
        return _p3_two_tower_step(sae, batch, scorer)
    x = torch.cat([batch.user_emb, batch.item_emb]) if two_tower else batch
    n_rows = x.shape[0]
    xn, stats = sae._prepare(x)
    side_colsums: list[tuple[torch.Tensor, int]] = []
    if two_tower and isinstance(sae, P3SAE):
        # P3 computes the KL term per side (users, items) and sums them (papers.md §3.3): one forward per
        # side gives each side's activation sums (the fused kernel's buffers are per call: two workspaces).
        bu = batch.user_emb.shape[0]
        ws_items = ws_items if ws_items is not None else kernels.Workspace()
        halves = [(xn[:bu], ws), (xn[bu:], ws_items)]
        parts = [
            _forward_fused(sae, h, dead_idx, w) if fused else _forward_reference(sae, h, dead_idx)
            for h, w in halves
        ]
        side_colsums = [(f.colsum_M, h.shape[0]) for f, (h, _) in zip(parts, halves, strict=True)]
        fwd = _Forward(
            torch.cat([f.xhat_LND for f in parts], dim=1),
            parts[0].colsum_M + parts[1].colsum_M,
            None,
            parts[0].fired_M | parts[1].fired_M,
            sum(f.n_active if f.n_active is not None else torch.count_nonzero(f.acts_NM) for f in parts),
            None,
            None,
        )
    else:
        fwd = _forward_fused(sae, xn, dead_idx, ws) if fused else _forward_reference(sae, xn, dead_idx)
    full = fwd.xhat_LND[-1]
    cfg: Any = sae.cfg
    terms: dict[str, torch.Tensor] = {}

    if isinstance(sae, TopKSAE | BatchTopKSAE):
        fvu, total = _fvu(xn, full)
        loss = fvu
        terms["fvu"] = fvu
        if fwd.aux_ND is not None:
            n_dead = dead_idx.numel() if dead_idx is not None else 0
            scale = min(n_dead / cfg.aux_k, 1.0)
            resid = (xn - full).detach()
            auxk = scale * (fwd.aux_ND - resid).pow(2).sum() / total
            loss = loss + cfg.aux_coeff * auxk
            terms["auxk"] = auxk
        return _Step(loss, terms, fwd, n_rows)

    if not isinstance(sae, P3SAE):  # relu_l1
        err2 = (full - xn).pow(2).sum(1)
        recon = err2.mean() if cfg.recon == "squared" else err2.clamp_min(1e-24).sqrt().mean()
        l1 = fwd.colsum_M.sum() / n_rows
        terms.update(recon=recon, l1=l1)
        with torch.no_grad():
            terms["fvu"] = _fvu(xn, full)[0]
        return _Step(recon + cfg.l1_coeff * l1, terms, fwd, n_rows)

    # P3 / Matryoshka: losses in the embedding space (P3's L_emb and L_pred)
    xhat_L = sae._restore(fwd.xhat_LND, stats)  # (L, N, d); stats broadcast over levels
    if two_tower:
        bu = batch.user_emb.shape[0]
        sides = [(x[:bu], xhat_L[:, :bu]), (x[bu:], xhat_L[:, bu:])]
    else:
        sides = [(x, xhat_L)]
    inner_w = getattr(cfg, "inner_weight", 0.0)
    emb = sum(F.mse_loss(lv[-1], xs) for xs, lv in sides)
    inner = (
        sum(F.mse_loss(lv[i], xs) for xs, lv in sides for i in range(lv.shape[0] - 1))
        if xhat_L.shape[0] > 1
        else None
    )
    loss = cfg.alpha * emb
    terms["emb"] = emb
    if inner is not None:
        loss = loss + cfg.alpha * inner_w * inner
        terms["inner"] = inner
    if cfg.l1_coeff > 0:
        l1 = fwd.colsum_M.sum() / n_rows
        loss = loss + cfg.l1_coeff * l1
        terms["l1"] = l1
    if cfg.kl_coeff > 0:
        rho = cfg.rho
        kl = sum(
            (rho * torch.log(rho / rh) + (1 - rho) * torch.log((1 - rho) / (1 - rh))).sum()
            for rh in ((c / n).clamp(1e-6, 1 - 1e-6) for c, n in (side_colsums or [(fwd.colsum_M, n_rows)]))
        )
        loss = loss + cfg.kl_coeff * kl
        terms["kl"] = kl
    if cfg.beta > 0 and two_tower and scorer is not None:
        bu = batch.user_emb.shape[0]
        u_new, i_new = xhat_L[-1, :bu], xhat_L[-1, bu:]
        with torch.no_grad():
            y = call_scorer(scorer, batch.user_emb, batch.item_emb, batch.users, batch.items)
        y_new = call_scorer(scorer, u_new, i_new, batch.users, batch.items)
        _check_scores(y_new, batch)
        pred = _pred_loss(cfg.pred_loss, y_new, y)
        loss = loss + cfg.beta * pred
        terms["pred"] = pred
    with torch.no_grad():
        terms["fvu"] = _fvu(x, xhat_L[-1])[0]
    return _Step(loss, terms, fwd, n_rows)


@contextlib.contextmanager
def _frozen(scorer: Callable[..., torch.Tensor] | None) -> Iterator[None]:
    """Temporarily set ``requires_grad=False`` on the scorer's module parameters (the recommender is frozen)."""
    module = getattr(scorer, "module", None) or getattr(scorer, "__self__", None)
    if not isinstance(scorer, nn.Module) and not isinstance(module, nn.Module):
        yield
        return
    mod = scorer if isinstance(scorer, nn.Module) else module
    params = [p for p in mod.parameters() if p.requires_grad]
    for p in params:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p in params:
            p.requires_grad_(True)


def _auto_threads(step_size: int, dev: torch.device) -> int | None:
    if dev.type != "cpu" or torch.get_num_threads() == 1:
        return None
    if step_size <= 1 << 20:
        return 1
    try:
        busy = os.getloadavg()[0] >= (os.cpu_count() or 1)
    except OSError:  # not available on this platform
        busy = False
    return 1 if busy else None


def _fit_scalar_norm(
    sae: SparseAutoencoder, data: Any, gen: torch.Generator, sample: Callable[[int], Any]
) -> None:
    if isinstance(data, torch.Tensor):
        rows = data
        max_rows = max(1, (1 << 24) // max(1, data.shape[1]))
        if len(rows) > max_rows:
            rows = rows[torch.randperm(len(rows), generator=gen)[:max_rows].to(rows.device)]
    else:
        parts, n = [], 0
        while n < 65_536:
            b = sample(4096)
            b = torch.cat([b.user_emb, b.item_emb]) if isinstance(b, TwoTowerBatch) else b
            parts.append(b)
            n += len(b)
        rows = torch.cat(parts)
    r = rows.double()
    sae.set_input_normalization(float(r.mean()), float(r.std()))


def _check_finite(x: torch.Tensor, name: str) -> None:
    bad = ~torch.isfinite(x).all(dim=-1)
    if bool(bad.any()):
        row = int(torch.nonzero(bad)[0])
        raise ValueError(
            f"{name} has NaN/inf values (first in row {row}); clean the activations before training"
        )


def _lr_at(step: int, tc: TrainConfig, steps: int) -> float:
    lr = tc.lr
    if tc.warmup_steps > 0:
        lr *= min(1.0, (step + 1) / tc.warmup_steps)
    if tc.decay_fraction > 0:
        start = int(steps * (1 - tc.decay_fraction))
        if step >= start:
            lr *= max(0.0, (steps - step) / max(1, steps - start))
    return lr


def _make_optimizer(params: list[nn.Parameter], tc: TrainConfig) -> torch.optim.Optimizer:
    # The single-tensor Adam: an SAE has 4 parameter tensors, and on a shared 2-core CPU the fused and
    # foreach variants measured slower (their thread-parallel regions stall when other processes
    # hold the cores).
    return torch.optim.Adam(
        params, lr=tc.lr, betas=tc.betas, eps=tc.eps, weight_decay=tc.weight_decay, foreach=False
    )


@torch.no_grad()
def init_b_dec_mean(sae: SparseAutoencoder, rows_ND: torch.Tensor) -> None:
    """Set ``sae.b_dec`` to the mean of ``rows_ND`` in the SAE's input space (after its input
    normalisation, if any): SAELens' ``b_dec_init_method="mean"`` (``TrainConfig.b_dec_init``)."""
    xn, _ = sae._prepare(rows_ND.to(sae.b_dec.device, torch.float32))
    sae.b_dec.copy_(xn.mean(0))


def train_sae(
    sae_or_config: SparseAutoencoder | SAEConfig | dict[str, Any],
    data: torch.Tensor | TwoTowerData | RowSampler,
    train_config: TrainConfig | None = None,
    *,
    scorer: Callable[..., torch.Tensor] | None = None,
    device: str | torch.device | None = None,
    seed: int = 0,
    progress: bool = True,
    callback: Callable[[int, dict[str, float]], None] | None = None,
    epoch_callback: Callable[[int, SparseAutoencoder], dict[str, float] | None] | None = None,
    num_threads: int | str | None = "auto",
) -> SAETrainResult:
    """Train an SAE on activations.

    Args:
        sae_or_config: an SAE to continue training, or a config / config dict (initialised with ``seed``).
        data: ``(N, d)`` activation rows (P1, P2); :class:`TwoTowerData` (P3: user and item embeddings,
            optional positive pairs); or a :class:`RowSampler`.
        train_config: optimisation settings (default :class:`TrainConfig`).
        scorer: P3's frozen recommender, an :class:`~recsae_core.sae.p3.EmbeddingScorer` (e.g.
            :func:`~recsae_core.sae.p3.two_tower_scorer`); required when the config has ``beta > 0`` and
            the data is :class:`TwoTowerData`. Its module's parameters are frozen while training.
        device: ``"cpu"`` (default) or ``"cuda"``; data and SAE are moved there.
        seed: seeds the initialisation and the row sampling (same seed -> same numbers on one machine).
        progress: show a tqdm bar with loss, L0 and FVU.
        callback: called as ``callback(step, record)`` at every logged step.
        epoch_callback: called as ``epoch_callback(epoch, sae)`` at the end of every epoch (1-based) with
            the live SAE in eval mode (put back in train mode afterwards); the metrics it returns join
            that epoch's record (P2: dev NDCG@5 with the SAE spliced in). Needs ``TrainConfig.epochs``.
        num_threads: torch intra-op threads while training (restored afterwards). ``"auto"``: one thread
            when ``batch_size * n_latents <= 2**20`` (small steps gain nothing from threads) or when the
            1-minute load average already reaches the CPU count (other processes hold the cores: OpenMP
            parallel regions then stall, and one thread measured ~2x faster than two), else unchanged;
            ``None``: unchanged; an int: that many.

    Raises:
        SAEDivergenceError: the loss became NaN/inf (the message names the step and suggests a lower LR).
        ValueError: inconsistent inputs (widths, P3's prediction loss without a scorer or on plain rows, a
            folded SAE trained with unit norms, per-epoch options without whole ``epochs``, a selection
            metric missing from the epoch record).
    """
    tc = train_config or TrainConfig()
    dev = resolve_device(device)
    if isinstance(sae_or_config, SparseAutoencoder):
        sae = sae_or_config
    else:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            sae = from_config(sae_or_config)
    sae = sae.to(dev).train()
    gen = torch.Generator().manual_seed(seed)

    # ---- data
    if isinstance(data, torch.Tensor):
        if data.ndim != 2 or data.shape[1] != sae.d_in:
            raise ValueError(f"data must be (N, {sae.d_in}) activation rows, got shape {tuple(data.shape)}")
        if len(data) == 0:
            raise ValueError("data has no rows")
        _check_finite(data, "data")
        data = data.to(dev, torch.float32)
        source: Any = _TensorSource(data, tc.sampling, gen)
    elif isinstance(data, TwoTowerData):
        if data.user_emb.shape[1] != sae.d_in:
            raise ValueError(f"embeddings have width {data.user_emb.shape[1]}, the SAE expects {sae.d_in}")
        _check_finite(data.user_emb, "user_emb")
        _check_finite(data.item_emb, "item_emb")
        data = TwoTowerData(
            data.user_emb.to(dev, torch.float32),
            data.item_emb.to(dev, torch.float32),
            data.pairs,
            data.all_pairs,
        )
        source = _TwoTowerSource(data, tc.sampling, gen)
    elif isinstance(data, RowSampler):
        source = _SamplerSource(data, gen)
    else:
        raise TypeError(
            f"data must be a (N, d) tensor, TwoTowerData or a RowSampler, got {type(data).__name__}"
        )

    cfg: Any = sae.cfg
    if isinstance(sae, P3SAE):
        if cfg.beta > 0 and isinstance(data, torch.Tensor):
            raise ValueError(
                f"{type(cfg).__name__}.beta={cfg.beta} asks for P3's prediction loss, which needs user and item "
                "embeddings and a scorer: pass TwoTowerData(user_emb, item_emb) with scorer=..., or set "
                "beta=0 to train on plain (N, d) rows with the reconstruction loss only"
            )
        if cfg.beta > 0 and scorer is None:
            raise ValueError("P3's prediction loss (beta > 0) needs scorer=...: e.g. two_tower_scorer(model)")
    elif scorer is not None:
        raise ValueError(f"scorer= is only used by P3-style SAEs, not {sae.architecture!r}")

    if tc.b_dec_init == "mean":
        if isinstance(data, RowSampler):
            raise ValueError(
                'TrainConfig.b_dec_init="mean" needs the rows (a tensor or TwoTowerData), not a RowSampler'
            )
        init_b_dec_mean(
            sae, data if isinstance(data, torch.Tensor) else torch.cat([data.user_emb, data.item_emb])
        )

    n_rows = len(data) if hasattr(data, "__len__") else None
    steps = tc.steps
    if tc.epochs is not None:
        if n_rows is None:
            raise ValueError("TrainConfig.epochs needs a dataset with a length; set steps instead")
        steps = max(1, math.ceil(tc.epochs * n_rows / tc.batch_size))
    dead_after = tc.dead_after or (min(n_rows, MAX_DEAD_AFTER) if n_rows else 1_000_000)
    renorm_epoch = sae.unit_norm_decoder and getattr(cfg, "decoder_norm", "step") == "epoch"
    renorm_step = sae.unit_norm_decoder and not renorm_epoch
    epoch_len = None  # steps per epoch when per-epoch bookkeeping is on
    if epoch_callback is not None or tc.selection is not None or tc.aux_start_epoch > 1 or renorm_epoch:
        if tc.epochs is None or tc.epochs != int(tc.epochs):
            raise ValueError(
                "epoch_callback, TrainConfig.selection, aux_start_epoch > 1 and decoder_norm='epoch' work on "
                f"whole epochs: set TrainConfig.epochs to a whole number (got epochs={tc.epochs})"
            )
        epoch_len = math.ceil(n_rows / tc.batch_size)
        steps = int(tc.epochs) * epoch_len

    if sae.has_input_norm and float(sae.input_std) == 1.0 and float(sae.input_mean) == 0.0:
        _fit_scalar_norm(sae, data, gen, source.next)
    if renorm_step:
        norms = sae.decoder_norms()
        if (norms - 1).abs().max() > 1e-3:
            raise ValueError(
                f"{sae.architecture} keeps unit-norm decoder atoms but these have norms in "
                f"[{float(norms.min()):.4g}, {float(norms.max()):.4g}] (a folded export?); continue training "
                "from an unfolded SAE (save_sae(..., fold=False))"
            )

    params = [p for p in sae.parameters() if p.requires_grad]
    opt = _make_optimizer(params, tc)
    ws, ws_items = kernels.Workspace(), kernels.Workspace()
    since_fired = torch.zeros(sae.n_latents, dtype=torch.int64, device=dev)
    threshold_started = isinstance(sae, BatchTopKSAE) and float(sae.threshold) > 0
    history: list[dict[str, float]] = []
    uses_aux = isinstance(sae, TopKSAE | BatchTopKSAE) and cfg.aux_coeff > 0
    rows_seen = 0
    epochs = _EpochLog(sae.n_latents, dev, tc.selection)

    bar = tqdm(total=steps, desc=f"SAE {sae.architecture}", disable=not progress, leave=False)
    if num_threads == "auto":
        num_threads = _auto_threads(tc.batch_size * sae.n_latents, dev)
    t0 = time.perf_counter()
    with _frozen(scorer), torch_threads(num_threads):
        for step in range(steps):
            lr = _lr_at(step, tc, steps)
            for g in opt.param_groups:
                g["lr"] = lr
            b = tc.batch_size
            epoch = 1
            if epoch_len is not None:
                epoch, in_epoch = divmod(step, epoch_len)
                epoch += 1
                b = min(b, n_rows - in_epoch * b)  # the epoch's last batch holds the remaining rows
                if in_epoch == 0 and renorm_epoch:
                    sae.set_decoder_norm_to_unit_norm_()  # P2: at init and at the start of every epoch
            batch = source.next(b)
            aux_on = uses_aux and epoch >= tc.aux_start_epoch
            dead_idx = torch.nonzero(since_fired >= dead_after).squeeze(1) if aux_on else None
            out = _step_loss(sae, batch, dead_idx, scorer, tc.fused, ws, ws_items)
            loss_value = out.loss.detach().item()
            if not math.isfinite(loss_value):
                raise SAEDivergenceError(
                    f"SAE training diverged at step {step} (loss = {loss_value}, lr = {lr:.3g}); "
                    f"lower the learning rate (e.g. lr={tc.lr / 10:.3g}) or set grad_clip"
                )
            opt.zero_grad(set_to_none=True)
            out.loss.backward()
            if renorm_step:
                sae.remove_parallel_decoder_grad_()
            if tc.grad_clip is not None:
                torch.nn.utils.clip_grad_norm_(params, tc.grad_clip)
            opt.step()
            if renorm_step:
                sae.set_decoder_norm_to_unit_norm_()
            with torch.no_grad():
                since_fired += out.n_rows
                since_fired[out.fwd.fired_M] = 0
                rows_seen += out.n_rows
                if isinstance(sae, BatchTopKSAE) and out.fwd.min_pos is not None:
                    mp = out.fwd.min_pos.to(sae.threshold.dtype)
                    if not threshold_started:
                        sae.threshold.copy_(mp)
                        threshold_started = True
                    else:
                        sae.threshold.lerp_(mp, cfg.threshold_rate)
            if (step + 1) % tc.log_every == 0 or step == steps - 1:
                rec = _record(step + 1, loss_value, lr, out, since_fired, dead_after)
                history.append(rec)
                bar.set_postfix(
                    loss=f"{rec['loss']:.4g}", L0=f"{rec['l0']:.1f}", FVU=f"{rec['fvu']:.3f}", refresh=False
                )
                if callback is not None:
                    callback(step + 1, rec)
            bar.update(1)
            if epoch_len is not None:
                epochs.add_step(loss_value, out)
                if (step + 1) % epoch_len == 0:
                    extra = None
                    if epoch_callback is not None:
                        sae.eval()
                        extra = epoch_callback(epoch, sae)
                        sae.train()
                    rec = epochs.end_epoch(
                        epoch, step + 1, since_fired, dead_after, time.perf_counter() - t0, extra
                    )
                    if epochs.should_stop(epoch, sae, since_fired):
                        epochs.stopped_early = step + 1 < steps
                        steps = step + 1
                        break
                    bar.set_postfix(epoch=epoch, **{k: f"{v:.4g}" for k, v in rec.items() if k in _BAR_KEYS})
    bar.close()
    seconds = time.perf_counter() - t0
    ws.clear()
    ws_items.clear()
    if epochs.best_state is not None:
        sae.load_state_dict(epochs.best_state)
        since_fired = epochs.best_since_fired
    sae.eval()
    dead = since_fired >= dead_after
    return SAETrainResult(
        sae=sae,
        history=history,
        train_config=tc,
        steps=steps,
        seconds=seconds,
        rows_per_second=rows_seen / max(seconds, 1e-9),
        rows_since_fired=since_fired.cpu(),
        dead_after=int(dead_after),
        dead_fraction=float(dead.double().mean()),
        meta={"seed": seed, "device": str(dev), "fused": tc.fused},
        epoch_history=epochs.history,
        best_epoch=epochs.best_epoch,
        stopped_early=epochs.stopped_early,
    )


_BAR_KEYS = ("loss", "dead_latents")


class _EpochLog:
    """Per-epoch records, best-epoch snapshot and early stopping (:class:`EpochSelection`; P2)."""

    def __init__(self, n_latents: int, dev: torch.device, selection: EpochSelection | None) -> None:
        self.selection = selection
        self.fired_M = torch.zeros(n_latents, dtype=torch.bool, device=dev)
        self.loss_sum = self.fvu_sum = 0.0
        self.n_steps = 0
        self.history: list[dict[str, float]] = []
        self.best_epoch: int | None = None  # the epoch kept (restored)
        self.top_epoch: int | None = None  # the epoch with the best value (patience counts from it)
        self.top_value = math.nan
        self.top_se = 0.0
        self.best_state: dict[str, torch.Tensor] | None = None
        self.best_since_fired: torch.Tensor | None = None
        self.stopped_early = False

    def add_step(self, loss: float, out: _Step) -> None:
        self.loss_sum += loss
        self.fvu_sum += float(out.terms["fvu"].detach())
        self.n_steps += 1
        self.fired_M |= out.fwd.fired_M

    def end_epoch(
        self,
        epoch: int,
        step: int,
        since_fired: torch.Tensor,
        dead_after: int,
        seconds: float,
        extra: dict[str, float] | None,
    ) -> dict[str, float]:
        rec = {
            "epoch": float(epoch),
            "step": float(step),
            "loss": self.loss_sum / self.n_steps,
            "fvu": self.fvu_sum / self.n_steps,
            "dead_latents": float((~self.fired_M).sum()),
            "dead_fraction": float((since_fired >= dead_after).double().mean()),
            "seconds": seconds,
        }
        if extra:
            rec.update({str(k): float(v) for k, v in extra.items()})
        self.history.append(rec)
        self.fired_M.zero_()
        self.loss_sum = self.fvu_sum = 0.0
        self.n_steps = 0
        return rec

    def should_stop(self, epoch: int, sae: SparseAutoencoder, since_fired: torch.Tensor) -> bool:
        """Keep a snapshot of a strictly better epoch; True when the patience has run out."""
        sel = self.selection
        if sel is None:
            return False
        rec = self.history[-1]
        if sel.metric not in rec:
            raise ValueError(
                f"EpochSelection.metric={sel.metric!r} is not in the epoch record; it has {sorted(rec)} "
                "(return the metric from epoch_callback)"
            )
        if sel.se_metric is not None and sel.se_metric not in rec:
            raise ValueError(
                f"EpochSelection.se_metric={sel.se_metric!r} is not in the epoch record; it has {sorted(rec)} "
                "(return the standard error from epoch_callback)"
            )
        value = rec[sel.metric]
        sign = 1.0 if sel.mode == "max" else -1.0
        keep = False
        if not math.isnan(value) and (self.top_epoch is None or sign * (value - self.top_value) > 0):
            self.top_epoch, self.top_value = epoch, value
            self.top_se = float(rec[sel.se_metric]) if sel.se_metric is not None else 0.0
            keep = True
        elif sel.se_metric is not None and not math.isnan(value):
            # one-standard-error rule: a later epoch the dev set cannot tell from the best is kept
            keep = sign * (value - self.top_value) >= -self.top_se
        if keep:
            self.best_epoch = epoch
            self.best_state = {k: t.detach().clone() for k, t in sae.state_dict().items()}
            self.best_since_fired = since_fired.clone()
        if sel.patience is not None and self.top_epoch is not None and epoch - self.top_epoch >= sel.patience:
            return True
        return False


def _record(
    step: int, loss: float, lr: float, out: _Step, since_fired: torch.Tensor, dead_after: int
) -> dict[str, float]:
    with torch.no_grad():
        fwd = out.fwd
        n_active = fwd.n_active if fwd.n_active is not None else torch.count_nonzero(fwd.acts_NM)
        rec = {
            "step": float(step),
            "loss": loss,
            "lr": lr,
            "l0": float(n_active) / out.n_rows,
            "dead_fraction": float((since_fired >= dead_after).double().mean()),
        }
        rec.update({k: float(v.detach()) for k, v in out.terms.items()})
    return rec
