"""Training loops for the base recommenders: plain, readable, one function per kind of loss.

| kind | models | loss (per step) |
|---|---|---|
| sequential | ``sasrec`` | full-softmax cross-entropy over the catalogue at every non-pad position (SASRec+, Klenitskiy & Vasilev 2023) |
| masked | ``bert4rec`` | full-softmax cross-entropy over the catalogue at the masked positions (masked-LM; P1's BERT4Rec, papers.md §1.3) |
| pairwise | ``bprmf``, ``lightgcn`` | BPR, ``-log σ(s_ui - s_uj)``, one sampled negative per training pair (Rendle et al. 2009) |
| pointwise | ``mf``, ``ncf`` | BCE on positives and ``n_neg`` sampled negatives per positive (P3) |
| count | ``pop`` | none: counts |

Every epoch is followed by a validation pass (full ranking, seen items masked, NDCG@10 and HR@10 on
``split.valid``; ``config.valid_users`` users at most, a fixed seeded sample). Training stops after
``config.patience`` epochs without a better validation NDCG@10 and the best epoch's weights are restored;
the test part is never looked at. Negatives are drawn uniformly among the user's unseen items, re-sampled
every epoch, vectorised with NumPy (rejection of seen pairs via ``searchsorted``), from a seeded generator.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from recsae_core.batching import (
    EvalData,
    MaskedSequences,
    TrainSequences,
    eval_data,
    mask_items,
    masked_sequences,
    train_pairs,
    train_sequences,
)
from recsae_core.data.dataset import Split
from recsae_core.evaluate import evaluate_data
from recsae_core.models.base import Recommender
from recsae_core.models.popularity import Popularity
from recsae_core.models.registry import ModelSpec, get_spec, make_config
from recsae_core.models.twotower import LightGCN, edges_from_pairs
from recsae_core.utils import resolve_device, seed_everything, torch_threads

__all__ = ["TrainResult", "build_model", "fit", "linear_cross_entropy", "sample_negatives"]

VALID_KS = (10,)
ONE_THREAD_MODELS = frozenset({"mf", "ncf", "bprmf"})
"""Models :func:`fit` trains on one torch thread on CPU (their steps are too small to gain from more)."""


@dataclass
class TrainResult:
    """A trained model and how it got there.

    Attributes:
        model: the recommender with the best validation epoch's weights, in eval mode.
        history: one row per epoch: ``epoch`` (1-based), ``loss`` (mean training loss), ``valid_ndcg@10``,
            ``valid_hr@10``, ``train_s``, ``valid_s``.
        best_epoch: the epoch whose weights were restored (0 for popularity).
        config: the config dataclass used.
        model_name: registry name.
        seconds: wall time of the whole fit.
        from_cache: True when :func:`recsae_core.cache.cached_fit` loaded it from disk.
        path: the artifact directory when cached.
    """

    model: Recommender
    history: pd.DataFrame
    best_epoch: int
    config: Any
    model_name: str
    seconds: float = 0.0
    from_cache: bool = False
    path: Path | None = None


# ------------------------------------------------------------------------------------------ helpers


def _isin_sorted(query: np.ndarray, sorted_keys: np.ndarray) -> np.ndarray:
    """``query in sorted_keys`` elementwise (both int64)."""
    if len(sorted_keys) == 0:
        return np.zeros(len(query), dtype=bool)
    idx = np.searchsorted(sorted_keys, query).clip(max=len(sorted_keys) - 1)
    return sorted_keys[idx] == query


def sample_negatives(
    users_N: np.ndarray, n_items: int, seen_keys: np.ndarray, rng: np.random.Generator, max_rounds: int = 100
) -> np.ndarray:
    """One uniformly drawn item per entry of ``users_N`` that the user has not interacted with.

    ``seen_keys``: sorted ``user * n_items + item`` keys of the user's positives. Rejected draws are redrawn
    (vectorised) until none collides; raises if a user has seen (almost) every item.
    """
    users_N = np.asarray(users_N, dtype=np.int64)
    neg = rng.integers(0, n_items, size=len(users_N), dtype=np.int64)
    bad = np.flatnonzero(_isin_sorted(users_N * n_items + neg, seen_keys))
    for _ in range(max_rounds):
        if len(bad) == 0:
            return neg
        neg[bad] = rng.integers(0, n_items, size=len(bad), dtype=np.int64)
        bad = bad[_isin_sorted(users_N[bad] * n_items + neg[bad], seen_keys)]
    raise RuntimeError(
        f"could not sample unseen negatives for {len(bad)} pairs: those users have seen nearly all items"
    )


def build_model(model_name: str, split: Split, config: Any = None) -> Recommender:
    """An untrained model for ``split`` (LightGCN gets the training graph; popularity its counts)."""
    spec = get_spec(model_name)
    cfg = make_config(model_name, config)
    ds = split.dataset
    if spec.name == "lightgcn":
        users, items = train_pairs(split)
        return LightGCN(ds.n_users, ds.n_items, cfg, edges=edges_from_pairs(users, items))
    model = spec.model_cls(ds.n_users, ds.n_items, cfg)
    if spec.name == "pop":
        assert isinstance(model, Popularity)
        model.fit_counts(torch.from_numpy(train_pairs(split)[1]))
    return model


def _adam(
    model: torch.nn.Module, lr: float, weight_decay: float, betas: tuple[float, float]
) -> torch.optim.Optimizer:
    """Adam(W); weight decay only on >= 2-D parameters (nanoGPT)."""
    decay = [p for p in model.parameters() if p.requires_grad and p.ndim >= 2]
    no_decay = [p for p in model.parameters() if p.requires_grad and p.ndim < 2]
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    if weight_decay == 0:
        return torch.optim.Adam(model.parameters(), lr=lr, betas=betas, foreach=True)
    return torch.optim.AdamW([g for g in groups if g["params"]], lr=lr, betas=betas, foreach=True)


class _LinearCrossEntropy(torch.autograd.Function):
    """Summed cross-entropy of ``softmax(h @ Wᵀ)`` computed in row chunks, gradients formed in the forward pass.

    The ``(N, n_items)`` logits are never materialised: each chunk's logits and softmax live in two reused
    buffers, the softmax becomes ``softmax - onehot`` in place, and the gradients of ``h`` and ``W`` are
    accumulated right away (the "fused linear cross-entropy" idea of Liger-Kernel / Apple's Cut
    Cross-Entropy). On CPU this is several times faster than ``F.cross_entropy(h @ W.T)`` at SASRec+ sizes:
    no large fresh allocations (page faults) and fewer passes over the logits. The loss of a row is
    ``-log p_target`` with ``p`` clamped at 1e-45 (only the reported value; the gradient is exact).
    """

    @staticmethod
    def forward(ctx, h_ND, w_ID, targets_N, chunk):
        n = h_ND.shape[0]
        need_h, need_w = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        grad_h = torch.empty_like(h_ND) if need_h else None
        grad_w = torch.zeros_like(w_ID) if need_w else None
        total = torch.zeros((), dtype=torch.float64, device=h_ND.device)
        z_buf = torch.empty(min(chunk, n), w_ID.shape[0], dtype=h_ND.dtype, device=h_ND.device)
        p_buf = torch.empty_like(z_buf)
        for s in range(0, n, chunk):
            h_c, t_c = h_ND[s : s + chunk], targets_N[s : s + chunk]
            z, p = z_buf[: len(h_c)], p_buf[: len(h_c)]
            torch.mm(h_c, w_ID.T, out=z)  # logits (c, I)
            torch.ops.aten._softmax.out(z, 1, False, out=p)
            rows = torch.arange(len(t_c), device=p.device)
            p_target = p[rows, t_c]
            total -= p_target.clamp_min(1e-45).log().sum(dtype=torch.float64)
            p[rows, t_c] = p_target - 1.0  # d loss / d logits = softmax - onehot
            if need_h:
                torch.mm(p, w_ID, out=grad_h[s : s + chunk])
            if need_w:
                grad_w.addmm_(p.T, h_c)
        ctx.save_for_backward(grad_h, grad_w)
        return total.to(h_ND.dtype)

    @staticmethod
    def backward(ctx, grad_out):
        grad_h, grad_w = ctx.saved_tensors
        return (
            None if grad_h is None else grad_h * grad_out,
            None if grad_w is None else grad_w * grad_out,
            None,
            None,
        )


def linear_cross_entropy(
    h_ND: torch.Tensor, w_ID: torch.Tensor, targets_N: torch.Tensor, chunk: int = 512
) -> torch.Tensor:
    """``F.cross_entropy(h_ND @ w_ID.T, targets_N, reduction="sum")`` without materialising the logits."""
    if h_ND.shape[0] == 0:
        return (h_ND.sum() + w_ID.sum()) * 0.0
    return _LinearCrossEntropy.apply(h_ND, w_ID, targets_N, chunk)


# ------------------------------------------------------------------------------------------ epochs


def _sequence_batches(
    seqs: TrainSequences | MaskedSequences, batch_size: int, bucket: bool, gen: torch.Generator
) -> list[torch.Tensor]:
    """Index batches for one epoch: shuffled, or (``bucket``) users of similar length together, batch order shuffled."""
    n = len(seqs)
    if bucket:
        noise = torch.rand(n, generator=gen) * 0.2  # jitter so batch composition changes between epochs
        order = torch.argsort(torch.log1p(seqs.lengths.float()) + noise)
    else:
        order = torch.randperm(n, generator=gen)
    batches = list(order.split(batch_size))
    perm = torch.randperm(len(batches), generator=gen).tolist()
    return [batches[i] for i in perm]


class _Stepper:
    """One optimiser step plus the epoch's running mean loss on the progress bar (shared by the epoch loops)."""

    def __init__(self, opt: torch.optim.Optimizer, bar: Any) -> None:
        self.opt, self.bar, self.total, self.count = opt, bar, 0.0, 0

    def step(self, objective: torch.Tensor, loss_sum: float, n: int) -> None:
        """Back-propagate ``objective`` and step; log ``loss_sum``, the data loss summed over ``n`` examples."""
        self.opt.zero_grad(set_to_none=True)
        objective.backward()
        self.opt.step()
        self.total, self.count = self.total + loss_sum, self.count + n
        self.bar.update(1)
        self.bar.set_postfix(loss=f"{self.total / self.count:.4f}")

    @property
    def mean(self) -> float:
        return self.total / max(self.count, 1)


def _epoch_sequential(model, opt, seqs: TrainSequences, cfg, gen, dev, bar) -> float:
    batches = _sequence_batches(seqs, cfg.batch_size, cfg.bucket_by_length, gen)
    norm = float(seqs.lengths.sum()) / len(batches)  # mean labelled positions per batch
    stepper = _Stepper(opt, bar)
    for idx in batches:
        inp, lab = seqs.inputs[idx], seqs.labels[idx]
        first = int((inp != 0).any(0).nonzero()[0])  # drop columns that are padding in every row
        inp, lab = inp[:, first:].to(dev), lab[:, first:].to(dev)
        out = model(inp)
        keep = lab > 0
        h_ND = out.last_hidden[keep]  # gather non-pad positions before the output matmul
        loss_sum = linear_cross_entropy(h_ND, model.output_table, lab[keep] - 1)
        stepper.step(loss_sum / norm, float(loss_sum.detach()), int(keep.sum()))
    return stepper.mean


def _epoch_masked(model, opt, seqs: MaskedSequences, cfg, gen, dev, bar) -> float:
    """One masked-LM epoch (BERT4Rec): masks re-drawn for the whole epoch, CE at masked positions only.

    As :func:`_epoch_sequential`: batches bucketed by length with leading all-pad columns dropped, masked
    positions gathered before the fused linear cross-entropy, and each batch's summed loss divided by the
    epoch's mean masked positions per batch (every masked position weighs the same).
    """
    inputs_UL, labels_UL = mask_items(seqs.items, cfg.mask_prob, model.mask_id, gen, cfg.force_last_mask_prob)
    batches = _sequence_batches(seqs, cfg.batch_size, cfg.bucket_by_length, gen)
    norm = max(float((labels_UL > 0).sum()) / len(batches), 1.0)  # mean masked positions per batch
    stepper = _Stepper(opt, bar)
    for idx in batches:
        inp, lab = inputs_UL[idx], labels_UL[idx]
        first = int((inp != 0).any(0).nonzero()[0])  # drop columns that are padding in every row
        inp, lab = inp[:, first:].to(dev), lab[:, first:].to(dev)
        out = model(inp)
        keep = lab > 0
        h_ND = out.hidden_states[-1][keep]  # gather the masked positions before the output matmul
        loss_sum = linear_cross_entropy(h_ND, model.output_table, lab[keep] - 1)
        stepper.step(loss_sum / norm, float(loss_sum.detach()), int(keep.sum()))
    return stepper.mean


def _epoch_pairwise(model, opt, data: dict, cfg, gen, rng, dev, bar) -> float:
    users, items, keys = data["users"], data["items"], data["keys"]
    users, items = np.tile(users, cfg.n_neg), np.tile(items, cfg.n_neg)  # one triple per (pair, negative)
    neg = sample_negatives(users, model.n_items, keys, rng)
    u_all, i_all, j_all = (torch.from_numpy(a) for a in (users, items, neg))
    perm = torch.randperm(len(u_all), generator=gen)
    stepper = _Stepper(opt, bar)
    for idx in perm.split(cfg.batch_size):
        u, i, j = u_all[idx].to(dev), i_all[idx].to(dev), j_all[idx].to(dev)
        if isinstance(model, LightGCN):
            e = model.propagate()
            eu, ei, ej = e[u], e[model.n_users + i], e[model.n_users + j]
            ego = model.emb.weight
            reg = (
                ego[u].square().sum()
                + ego[model.n_users + i].square().sum()
                + ego[model.n_users + j].square().sum()
            )
            reg = cfg.l2 * reg / (2 * len(u))  # LightGCN paper: decay * ||E0_batch||^2 / 2 / batch
        else:
            eu, ei, ej = model.user_emb(u), model.item_emb(i), model.item_emb(j)
            reg = 0.0  # BPR-MF: weight decay in the optimiser (ReChorus --l2)
        loss = -F.logsigmoid((eu * ei).sum(-1) - (eu * ej).sum(-1)).mean()
        stepper.step(loss + reg, float(loss.detach()) * len(u), len(u))
    return stepper.mean


def _epoch_pointwise(model, opt, data: dict, cfg, gen, rng, dev, bar) -> float:
    users, items, keys = data["users"], data["items"], data["keys"]
    u_neg = np.repeat(users, cfg.n_neg)
    neg = sample_negatives(u_neg, model.n_items, keys, rng)
    u_all = torch.from_numpy(np.concatenate([users, u_neg]))
    i_all = torch.from_numpy(np.concatenate([items, neg]))
    y_all = torch.cat([torch.ones(len(users)), torch.zeros(len(u_neg))])
    perm = torch.randperm(len(u_all), generator=gen)
    stepper = _Stepper(opt, bar)
    for idx in perm.split(cfg.batch_size):
        u, i, y = u_all[idx].to(dev), i_all[idx].to(dev), y_all[idx].to(dev)
        loss = F.binary_cross_entropy_with_logits(model.pair_scores(u, i), y)
        reg = 0.0
        if cfg.l2 > 0:
            sq = model.user_emb(u).square().sum(-1) + model.item_emb(i).square().sum(-1)
            if hasattr(model, "user_bias"):
                sq = sq + model.user_bias[u].square() + model.item_bias[i].square()
            reg = cfg.l2 * sq.mean()
        stepper.step(loss + reg, float(loss.detach()) * len(u), len(u))
    return stepper.mean


# ------------------------------------------------------------------------------------------ fit


def _valid_data(split: Split, spec: ModelSpec, cfg: Any, seed: int, maxlen: int | None) -> EvalData | None:
    """Validation cases; ``maxlen``: the model's history length (``model.maxlen``) for sequential models."""
    if len(split.valid) == 0:
        return None
    data = eval_data(split, "valid", maxlen if spec.sequential else None)
    limit = getattr(cfg, "valid_users", None)
    if limit is not None and len(data) > limit:
        idx = torch.randperm(len(data), generator=torch.Generator().manual_seed(seed + 1))[:limit]
        data = data.subset(idx)
    return data


def _n_steps(spec: ModelSpec, cfg: Any, n_seqs: int, n_pairs: int) -> int:
    if spec.kind in ("sequential", "masked"):
        return math.ceil(n_seqs / cfg.batch_size)
    per_pair = 1 + cfg.n_neg if spec.kind == "pointwise" else cfg.n_neg
    return math.ceil(n_pairs * per_pair / cfg.batch_size)


def fit(
    model_name: str,
    split: Split,
    config: Any = None,
    *,
    device: str | torch.device = "cpu",
    seed: int = 0,
    progress: bool = True,
) -> TrainResult:
    """Train ``model_name`` on ``split.train`` with early stopping on ``split.valid`` (NDCG@10).

    Args:
        model_name: ``"sasrec"``, ``"bert4rec"``, ``"bprmf"``, ``"lightgcn"``, ``"mf"``, ``"ncf"`` or ``"pop"``.
        split: the split; a sequential model needs timestamps (``dataset.require_timestamps``).
        config: the model's config dataclass, a dict of overrides, or ``None`` for the defaults.
        device: ``"cpu"`` (default) or ``"cuda"``.
        seed: seeds initialisation, shuffling, negatives, dropout and the validation sample.
        progress: show tqdm bars (loss and validation NDCG@10).
    """
    t0 = time.perf_counter()
    spec = get_spec(model_name)
    cfg = make_config(model_name, config)
    if spec.sequential:
        split.dataset.require_timestamps(f"{model_name} (a sequential model)")
    dev = resolve_device(device)
    seed_everything(seed)
    model = build_model(model_name, split, cfg).to(dev)
    valid = _valid_data(split, spec, cfg, seed, getattr(model, "maxlen", None))

    def validate() -> dict[str, float]:
        if valid is None:
            return {f"{m}@{k}": float("nan") for m in ("ndcg", "hr") for k in VALID_KS}
        model.eval()
        return evaluate_data(model.score, valid, VALID_KS, device=dev)

    if spec.kind == "count":
        m = validate()
        history = pd.DataFrame(
            [
                {
                    "epoch": 0,
                    "loss": float("nan"),
                    "valid_ndcg@10": m["ndcg@10"],
                    "valid_hr@10": m["hr@10"],
                    "train_s": 0.0,
                    "valid_s": 0.0,
                }
            ]
        )
        return TrainResult(model.eval(), history, 0, cfg, model_name, time.perf_counter() - t0)

    gen = torch.Generator().manual_seed(seed)
    rng = np.random.default_rng(seed)
    if spec.kind == "sequential":
        seqs = train_sequences(split, cfg.maxlen, getattr(cfg, "train_windows", "last"))
        n_steps = _n_steps(spec, cfg, len(seqs), 0)
        opt = _adam(model, cfg.lr, cfg.weight_decay, betas=(0.9, 0.98))  # kang205/SASRec: Adam β2 = 0.98
    elif spec.kind == "masked":
        mseqs = masked_sequences(split, cfg.maxlen)
        n_steps = _n_steps(spec, cfg, len(mseqs), 0)
        opt = _adam(model, cfg.lr, cfg.weight_decay, betas=(0.9, 0.999))  # P1: torch Adam defaults
    else:
        users, items = train_pairs(split)
        data = {"users": users, "items": items, "keys": users * split.dataset.n_items + items}
        n_steps = _n_steps(spec, cfg, 0, len(users))
        # BPR-MF: L2 as Adam weight decay on every parameter (ReChorus --l2); the others regularise the batch.
        wd = cfg.l2 if spec.name == "bprmf" else 0.0
        opt = torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=wd, foreach=True)

    rows: list[dict[str, float]] = []
    best, best_epoch, best_state, bad = -math.inf, 0, None, 0
    epochs = tqdm(range(1, cfg.epochs + 1), desc=f"fit {model_name}", disable=not progress)
    # MF, NCF and BPR-MF steps are small matrices: on CPU each OpenMP parallel region costs more than it saves
    # (ML-100k, 5 epochs: NCF 5.6 s of training on one thread vs 16.4 s on two, MF 3.5 vs 7.8, BPR-MF 2.1 vs
    # 4.4; same validation NDCG): they train on one thread, so a page's numbers and time do not depend on
    # how many threads its process was given.
    threads = 1 if spec.name in ONE_THREAD_MODELS and dev.type == "cpu" else None
    with torch_threads(threads):
        for epoch in epochs:
            t_train = time.perf_counter()
            model.train()
            with tqdm(total=n_steps, desc=f"epoch {epoch}", leave=False, disable=not progress) as bar:
                if spec.kind == "sequential":
                    loss = _epoch_sequential(model, opt, seqs, cfg, gen, dev, bar)
                elif spec.kind == "masked":
                    loss = _epoch_masked(model, opt, mseqs, cfg, gen, dev, bar)
                elif spec.kind == "pairwise":
                    loss = _epoch_pairwise(model, opt, data, cfg, gen, rng, dev, bar)
                else:
                    loss = _epoch_pointwise(model, opt, data, cfg, gen, rng, dev, bar)
            t_valid = time.perf_counter()
            m = validate()
            t_end = time.perf_counter()
            rows.append(
                {
                    "epoch": epoch,
                    "loss": loss,
                    "valid_ndcg@10": m["ndcg@10"],
                    "valid_hr@10": m["hr@10"],
                    "train_s": t_valid - t_train,
                    "valid_s": t_end - t_valid,
                }
            )
            if not math.isfinite(loss):
                raise FloatingPointError(f"{model_name}: training loss became {loss} at epoch {epoch}")
            score = m["ndcg@10"]
            if valid is None or score > best:
                best, best_epoch, bad = score, epoch, 0
                best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
            else:
                bad += 1
            epochs.set_postfix(loss=f"{loss:.4f}", ndcg10=f"{score:.4f}", best=best_epoch)
            if valid is not None and bad >= cfg.patience:
                break
    assert best_state is not None
    model.load_state_dict(best_state)
    model.eval()
    return TrainResult(model, pd.DataFrame(rows), best_epoch, cfg, model_name, time.perf_counter() - t0)
