"""Fused training kernels: custom autograd Functions with hand-written backward passes.

Why (measured in ``benchmarks/bench_sae.py`` on 2 CPU cores, d = 64, m = 2048, B = 4096): a plain
autograd SAE step materialises several fresh ``B x m`` tensors (32 MB each); on CPU every fresh tensor of
that size is a new ``mmap`` whose page faults cost about as much as a matmul. These kernels

* write every ``B x m`` intermediate into buffers of a :class:`Workspace` reused across steps;
* for ReLU dictionaries (``relu_l1``, ``p3``, ``matryoshka``): keep ONE activation buffer, apply ReLU in
  place, fold the L1/KL gradient into the bias of the ``grad_f`` matmul and the ReLU mask into an in-place
  ``threshold_backward``; Matryoshka prefixes are decoded block by block and summed cumulatively, so all
  prefix reconstructions cost one decoder matmul;
* for TopK / BatchTopK: after the dense encoder matmul and the selection, everything is sparse — the
  selected activations form a CSR matrix; decoding is ``CSR @ W_dec``, the gradient of the selected
  activations a sampled dense-dense product (``torch.sparse.sampled_addmm``), the gradients of
  ``W_dec``/``W_enc`` transposed CSR products; AuxK shares the same machinery.

Every kernel is tested against the modules' autograd forward (``tests/test_sae_kernels.py``): same
outputs, same gradients.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable

import numpy as np
import torch

__all__ = [
    "Selection",
    "Workspace",
    "dense_relu_sae",
    "select_batch_topk",
    "select_batch_topk_flat",
    "select_batch_topk_two_stage",
    "select_topk",
    "sparse_sae",
]

# (crow (N+1,), col (nnz,), val (nnz,)): a row-compressed selection of activations, val = ReLU(pre) >= 0.
Selection = tuple[torch.Tensor, torch.Tensor, torch.Tensor]


class Workspace:
    """Named buffers reused from step to step (a fresh 32 MB CPU tensor costs ~15 ms of page faults).

    A buffer handed out for a name is overwritten the next time that name is requested: tensors a kernel
    returns from the workspace (e.g. the activations) are valid until the next kernel call.
    """

    def __init__(self) -> None:
        self._bufs: dict[str, torch.Tensor] = {}

    def get(
        self, name: str, shape: tuple[int, ...], dtype: torch.dtype, device: torch.device
    ) -> torch.Tensor:
        buf = self._bufs.get(name)
        if buf is None or buf.shape != shape or buf.dtype != dtype or buf.device != device:
            buf = torch.empty(shape, dtype=dtype, device=device)
            self._bufs[name] = buf
        return buf

    def clear(self) -> None:
        self._bufs.clear()


# ------------------------------------------------------------------------------------------ dense ReLU
class _DenseReluSAE(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x_ND, W_enc, b_enc, W_dec, b_dec, bounds, ws):  # type: ignore[override]
        n, m = x_ND.shape[0], W_enc.shape[0]
        xc_ND = x_ND - b_dec
        acts_NM = ws.get("acts", (n, m), x_ND.dtype, x_ND.device)
        torch.addmm(b_enc, xc_ND, W_enc.t(), out=acts_NM)
        acts_NM.relu_()
        if len(bounds) == 1:
            xhat = torch.addmm(b_dec, acts_NM, W_dec).unsqueeze(0)  # (1, N, d)
        else:
            starts = (0, *bounds[:-1])
            parts = torch.stack([acts_NM[:, s:e] @ W_dec[s:e] for s, e in zip(starts, bounds, strict=True)])
            xhat = parts.cumsum_(0).add_(b_dec)  # (L, N, d): prefix reconstructions
        ones_N = ws.get("ones", (n,), x_ND.dtype, x_ND.device).fill_(1.0)
        colsum_M = torch.mv(acts_NM.t(), ones_N)  # a GEMV beats a dim-0 reduction on CPU
        ctx.save_for_backward(xc_ND, acts_NM, W_enc, W_dec, ones_N)
        ctx.bounds, ctx.ws = bounds, ws
        ctx.mark_non_differentiable(acts_NM)
        # unused outputs get None, not a zero-filled B x m tensor (a fresh 32 MB fill costs ~25 ms on CPU)
        ctx.set_materialize_grads(False)
        return xhat, colsum_M, acts_NM

    @staticmethod
    def backward(ctx, g_xhat, g_colsum, _g_acts):  # type: ignore[override]
        xc_ND, acts_NM, W_enc, W_dec, ones_N = ctx.saved_tensors
        bounds, ws = ctx.bounds, ctx.ws
        n, m = acts_NM.shape
        if g_xhat is None:
            g_xhat = torch.zeros(len(bounds), n, xc_ND.shape[1], dtype=xc_ND.dtype, device=xc_ND.device)
        if g_colsum is None:
            g_colsum = torch.zeros(m, dtype=xc_ND.dtype, device=xc_ND.device)
        # block l's output enters every prefix level >= l
        g_blocks = g_xhat if len(bounds) == 1 else g_xhat.flip(0).cumsum(0).flip(0)
        grad_W_dec = torch.empty_like(W_dec)
        grad_W_enc = torch.empty_like(W_enc)
        grad_b_enc = torch.empty(m, dtype=W_enc.dtype, device=W_enc.device)
        need_x = ctx.needs_input_grad[0]
        grad_x = torch.zeros_like(xc_ND) if need_x else None
        starts = (0, *bounds[:-1])
        for level, (s, e) in enumerate(zip(starts, bounds, strict=True)):
            g_ND = g_blocks[level]
            a_NM = acts_NM[:, s:e]
            torch.mm(a_NM.t(), g_ND, out=grad_W_dec[s:e])
            gp_NM = ws.get(f"grad_pre{level}", (n, e - s), xc_ND.dtype, xc_ND.device)
            # d loss / d f = g W_dec^T + d loss / d colsum (L1 and KL terms), then the ReLU mask in place
            torch.addmm(g_colsum[s:e], g_ND, W_dec[s:e].t(), out=gp_NM)
            torch.ops.aten.threshold_backward.grad_input(gp_NM, a_NM, 0.0, grad_input=gp_NM)
            torch.mv(gp_NM.t(), ones_N, out=grad_b_enc[s:e])
            torch.mm(gp_NM.t(), xc_ND, out=grad_W_enc[s:e])
            if need_x:
                grad_x.addmm_(gp_NM, W_enc[s:e])
        grad_b_dec = g_xhat.sum((0, 1)) - grad_b_enc @ W_enc
        return grad_x, grad_W_enc, grad_b_enc, grad_W_dec, grad_b_dec, None, None


def dense_relu_sae(
    x_ND: torch.Tensor,
    W_enc: torch.Tensor,
    b_enc: torch.Tensor,
    W_dec: torch.Tensor,
    b_dec: torch.Tensor,
    bounds: tuple[int, ...],
    ws: Workspace,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Fused ReLU SAE forward with a hand-written backward.

    Args:
        x_ND: inputs in the dictionary's space (already normalised).
        W_enc, b_enc, W_dec, b_dec: ``(m, d)``, ``(m,)``, ``(m, d)`` (may be ``W_enc`` itself: tied), ``(d,)``.
        bounds: prefix ends (``(m,)`` for a plain SAE; Matryoshka ``(m/4, m/2, m)``).
        ws: buffers reused across calls.

    Returns:
        ``xhat_LND`` (one reconstruction per prefix, differentiable), ``colsum_M`` = activations summed
        over the batch (differentiable: L1 = ``colsum.sum()``, KL uses ``colsum / N``), ``acts_NM`` (a
        workspace buffer, not differentiable; valid until the next call).
    """
    return _DenseReluSAE.apply(x_ND, W_enc, b_enc, W_dec, b_dec, tuple(int(b) for b in bounds), ws)


# ------------------------------------------------------------------------------------------ selections
def select_topk(pre_NM: torch.Tensor, k: int) -> Selection:
    """Per-row top-``k`` of ``pre`` as a CSR selection (values ReLU'd)."""
    n = pre_NM.shape[0]
    vals_NK, idx_NK = torch.topk(pre_NM, k, dim=1, sorted=False)
    crow = torch.arange(0, n * k + 1, k, device=pre_NM.device)
    return crow, idx_NK.reshape(-1), vals_NK.reshape(-1).relu_()


def _argsort(keys: torch.Tensor, bound: int) -> torch.Tensor:
    """A permutation sorting integer ``keys`` in ``[0, bound)`` (stable on CPU).

    On CPU, NumPy's stable sort of 16-bit keys is a radix sort: ~2 ms for 131k keys, whereas
    ``torch.sort`` measured 3 ms on one thread but over 100 ms with 2 threads on a loaded machine.
    """
    if keys.device.type != "cpu":
        return torch.argsort(keys)
    k = keys.numpy().astype(np.int16 if bound <= 32767 else np.int32)
    return torch.from_numpy(np.argsort(k, kind="stable"))


def _to_csr(flat_idx: torch.Tensor, vals: torch.Tensor, n: int, m: int) -> Selection:
    """Row-compressed selection from flat indices ``row * m + col`` in any order."""
    rows = torch.div(flat_idx, m, rounding_mode="floor")
    order = _argsort(rows, n)
    rows, flat_idx = rows.index_select(0, order), flat_idx.index_select(0, order)
    crow = torch.zeros(n + 1, dtype=torch.int64, device=flat_idx.device)
    torch.cumsum(torch.bincount(rows, minlength=n), 0, out=crow[1:])
    return crow, flat_idx - rows * m, vals.index_select(0, order).relu_()


def select_batch_topk_flat(pre_NM: torch.Tensor, k: int) -> Selection:
    """The ``k * N`` largest entries of the whole batch (reference selection: one flat ``topk``)."""
    n, m = pre_NM.shape
    vals, idx = torch.topk(pre_NM.reshape(-1), min(k * n, n * m), sorted=False)
    return _to_csr(idx, vals, n, m)


def select_batch_topk_two_stage(pre_NM: torch.Tensor, k: int, factor: int = 4) -> Selection:
    """engineering.md §4's two-stage selection: per-row ``topk(factor * k)``, then a ``topk(k N)`` over
    those candidates; exact unless some row contributes all its candidates (it might hold more of the
    batch's top entries), in which case it falls back to the flat selection."""
    n, m = pre_NM.shape
    per_row = min(factor * k, m)
    if per_row == m:
        return select_batch_topk_flat(pre_NM, k)
    cand_vals, cand_idx = torch.topk(pre_NM, per_row, dim=1, sorted=False)
    vals, pos = torch.topk(cand_vals.reshape(-1), min(k * n, n * per_row), sorted=False)
    rows = torch.div(pos, per_row, rounding_mode="floor")
    if int(torch.bincount(rows, minlength=n).max()) >= per_row:  # a saturated row: not provably exact
        return select_batch_topk_flat(pre_NM, k)
    return _to_csr(rows * m + cand_idx.reshape(-1).index_select(0, pos), vals, n, m)


def _chunk_size(m: int, k: int) -> int:
    for s in (8, 4, 2):
        if m % s == 0 and m // s >= 2 * k:
            return s
    return 1


def select_batch_topk(pre_NM: torch.Tensor, k: int) -> Selection:
    """The ``k * N`` largest entries of the batch, exactly, without a flat ``topk`` over all ``N m`` entries.

    Split each row into chunks of ``s`` adjacent columns and take the chunk maxima (``max_pool1d``). The
    ``k N`` largest chunk maxima are ``k N`` distinct entries, so the batch threshold (the ``k N``-th
    largest entry) is at least the smallest of them; any entry above the threshold therefore lies in one
    of those chunks (a chunk outside them has a maximum no larger than that bound). A ``topk`` over their
    ``k N s`` entries is then exact (ties at the threshold may be broken differently from a flat ``topk``;
    that selects equal values). Replaces engineering.md §4's two-stage per-row ``topk(4k)`` selection,
    which needs an exactness fallback and measured slower here.
    """
    n, m = pre_NM.shape
    total = min(k * n, n * m)
    s = _chunk_size(m, k)
    if s == 1:
        return select_batch_topk_flat(pre_NM, k)
    chunk_max = torch.nn.functional.max_pool1d(pre_NM.view(n, 1, m), s, s).reshape(-1)  # (N C,) ids b C + j
    _, top_chunks = torch.topk(chunk_max, total, sorted=False)
    cand_vals = pre_NM.reshape(-1, s).index_select(0, top_chunks).reshape(-1)  # contiguous chunk rows
    vals, pos = torch.topk(cand_vals, total, sorted=False)
    chunk_of = torch.div(pos, s, rounding_mode="floor")
    flat = top_chunks.index_select(0, chunk_of) * s + (pos - chunk_of * s)
    return _to_csr(flat, vals, n, m)


# ---------------------------------------------------------------------------------------- sparse TopK
def _csr(crow: torch.Tensor, col: torch.Tensor, val: torch.Tensor, shape: tuple[int, int]) -> torch.Tensor:
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*Sparse CSR tensor support is in beta.*")
        return torch.sparse_csr_tensor(crow, col, val, shape, check_invariants=False)


def _row_ids(crow: torch.Tensor) -> torch.Tensor:
    n = crow.numel() - 1
    return torch.repeat_interleave(
        torch.arange(n, device=crow.device), crow.diff(), output_size=int(crow[-1])
    )


def _sddmm(
    crow: torch.Tensor, col: torch.Tensor, val: torch.Tensor, a_ND: torch.Tensor, W_MD: torch.Tensor, m: int
) -> torch.Tensor:
    """Values ``(a W^T)[row, col]`` at a CSR pattern: the gradient of selected activations.

    ``val`` only provides the pattern's storage (``beta = 0`` ignores it).
    """
    n = crow.numel() - 1
    return torch.sparse.sampled_addmm(_csr(crow, col, val, (n, m)), a_ND, W_MD.t(), beta=0.0).values()


class _SparseSAE(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x_ND, W_enc, b_enc, W_dec, b_dec, select, dead_idx, k_aux, ws):  # type: ignore[override]
        n, m = x_ND.shape[0], W_enc.shape[0]
        xc_ND = x_ND - b_dec
        pre_NM = ws.get("pre", (n, m), x_ND.dtype, x_ND.device)
        torch.addmm(b_enc, xc_ND, W_enc.t(), out=pre_NM)
        crow, col, val = select(pre_NM)
        xhat_ND = torch.addmm(b_dec, _csr(crow, col, val, (n, m)), W_dec)
        has_aux = dead_idx is not None and dead_idx.numel() > 0 and k_aux > 0
        if has_aux:
            kk = min(int(k_aux), dead_idx.numel())
            sub_NK = pre_NM.index_select(1, dead_idx)
            av, ai = torch.topk(sub_NK, kk, dim=1, sorted=False)
            a_crow = torch.arange(0, n * kk + 1, kk, device=x_ND.device)
            a_col, a_val = dead_idx.index_select(0, ai.reshape(-1)), av.reshape(-1).relu_()
            aux_ND = _csr(a_crow, a_col, a_val, (n, m)) @ W_dec
        else:
            a_crow = a_col = a_val = None
            aux_ND = torch.zeros_like(xhat_ND)
        ctx.has_aux, ctx.m = has_aux, m
        ctx.save_for_backward(xc_ND, W_enc, W_dec, crow, col, val, a_crow, a_col, a_val)
        ctx.mark_non_differentiable(crow, col, val)
        ctx.set_materialize_grads(False)
        return xhat_ND, aux_ND, crow, col, val

    @staticmethod
    def backward(ctx, g_xhat, g_aux, _c, _i, _v):  # type: ignore[override]
        xc_ND, W_enc, W_dec, crow, col, val, a_crow, a_col, a_val = ctx.saved_tensors
        n, m = xc_ND.shape[0], ctx.m
        if g_xhat is None:
            g_xhat = torch.zeros_like(xc_ND)
        rows = _row_ids(crow)
        gpre = _sddmm(crow, col, val, g_xhat, W_dec, m).mul_(
            val > 0
        )  # d loss / d pre at the selected entries
        if ctx.has_aux and g_aux is not None:
            a_rows = _row_ids(a_crow)
            gpre_aux = _sddmm(a_crow, a_col, a_val, g_aux, W_dec, m).mul_(a_val > 0)
            cols = torch.cat([col, a_col])
            dec_rows, dec_vals = torch.cat([rows, a_rows + n]), torch.cat([val, a_val])
            enc_rows, enc_vals = torch.cat([rows, a_rows]), torch.cat([gpre, gpre_aux])
            dec_rhs = torch.cat([g_xhat, g_aux])
        else:
            cols, dec_rows, dec_vals, enc_rows, enc_vals, dec_rhs = col, rows, val, rows, gpre, g_xhat
        # transpose the pattern once (sort entries by latent) and reuse it for W_dec and W_enc
        order = _argsort(cols, m)
        sorted_cols = cols.index_select(0, order)
        crow_t = torch.zeros(m + 1, dtype=torch.int64, device=xc_ND.device)
        torch.cumsum(torch.bincount(sorted_cols, minlength=m), 0, out=crow_t[1:])
        grad_W_dec = (
            _csr(
                crow_t,
                dec_rows.index_select(0, order),
                dec_vals.index_select(0, order),
                (m, dec_rhs.shape[0]),
            )
            @ dec_rhs
        )
        enc_sorted = enc_vals.index_select(0, order)
        grad_W_enc = _csr(crow_t, enc_rows.index_select(0, order), enc_sorted, (m, n)) @ xc_ND
        grad_b_enc = torch.zeros(m, dtype=xc_ND.dtype, device=xc_ND.device).index_add_(
            0, sorted_cols, enc_sorted
        )
        grad_b_dec = g_xhat.sum(0) - grad_b_enc @ W_enc
        grad_x = None
        if ctx.needs_input_grad[0]:
            grad_x = _csr(crow, col, gpre, (n, m)) @ W_enc
            if ctx.has_aux and g_aux is not None:
                grad_x += _csr(a_crow, a_col, gpre_aux, (n, m)) @ W_enc
        return grad_x, grad_W_enc, grad_b_enc, grad_W_dec, grad_b_dec, None, None, None, None


def sparse_sae(
    x_ND: torch.Tensor,
    W_enc: torch.Tensor,
    b_enc: torch.Tensor,
    W_dec: torch.Tensor,
    b_dec: torch.Tensor,
    select: Callable[[torch.Tensor], Selection],
    ws: Workspace,
    dead_idx: torch.Tensor | None = None,
    k_aux: int = 0,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Fused TopK-family SAE forward (dense encoder, sparse everything else) with AuxK.

    Args:
        x_ND: inputs in the dictionary's space; ``W_enc``/``b_enc``/``W_dec``/``b_dec`` as in :func:`dense_relu_sae`.
        select: ``pre_NM -> (crow, col, val)``, e.g. ``lambda p: select_topk(p, k)``.
        dead_idx: ``(n_dead,)`` ids of dead latents for AuxK (None or empty: no AuxK).
        k_aux: how many dead latents per row reconstruct the residual.

    Returns:
        ``xhat_ND`` (differentiable), ``aux_ND`` = the dead latents' reconstruction without bias
        (differentiable; zeros without AuxK), and the selection ``crow, col, val`` (not differentiable).
    """
    return _SparseSAE.apply(x_ND, W_enc, b_enc, W_dec, b_dec, select, dead_idx, int(k_aux), ws)
