"""SASRec (Kang & McAuley 2018, arXiv 1808.09781) trained as SASRec+ (Klenitskiy & Vasilev, RecSys 2023).

Layout: item embedding (pad row 0) times ``sqrt(d)`` plus learned positional embeddings, ``n_blocks``
Pre-LN transformer blocks (causal ``F.scaled_dot_product_attention``; the Pre-LN variant of
pmixer/SASRec.pytorch ``--norm_first``, GPT-2 style as in P1's GPT4Rec), a final LayerNorm, and scores
``h · W_outᵀ`` over the catalogue (``W_out`` tied to the item table or separate). The loss (full-softmax
cross-entropy at every non-pad position) lives in :mod:`recsae_core.train`.

Left padding: the last column is the most recent item; positions are counted from the right, so a
history scores the same with or without extra left padding. Padded keys are masked out of attention
(weight exactly 0) and fully padded rows stay finite (no NaN); see ``SASRec._masks``.

Sites (``recsae_core.models.base``): ``sasrec.block{i}`` ``(B, L, D)``, the residual stream after block
``i`` at every position (P1 probes ``block0``), ``sasrec.final`` ``(B, L, D)``, the final-norm output at
every position (P2 trains its SAE on all valid positions and infers on the last; pad positions hold
``LN(0)``), and ``sasrec.last`` ``(B, D)``, the final-norm output at the last position, i.e. the user
vector dotted with the output table (P2).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from recsae_core.models.base import Recommender, UserBatch

__all__ = ["SASRec", "SASRecConfig", "SASRecOutput"]


@dataclass
class SASRecConfig:
    """SASRec+ architecture and training settings (defaults: Klenitskiy & Vasilev's SASRec+ on ML-1M)."""

    d: int = 64
    """Hidden size (Klenitskiy & Vasilev ``SASRec.yaml`` hidden 64; P1 n_embd 64)."""
    n_blocks: int = 2
    """Transformer blocks (SASRec paper and Klenitskiy: 2; P1 n_layer 2)."""
    n_heads: int = 1
    """Attention heads (kang205/SASRec and Klenitskiy: 1; P1 uses 2)."""
    maxlen: int = 200
    """History length (kang205 README for ML-1M ``--maxlen=200``; Klenitskiy ``max_length=200``)."""
    dropout: float = 0.2
    """Dropout on embeddings, attention and residual branches (kang205 README ML-1M ``--dropout_rate=0.2``)."""
    ffn_mult: int = 1
    """Feed-forward inner size as a multiple of ``d`` (SASRec's point-wise FFN is d → d; GPT-2 uses 4)."""
    tied_output: bool = True
    """Score with the input item table (SASRec, P1 GPT4Rec); False = separate output table (gSASRec)."""
    lr: float = 1e-3
    """Adam learning rate (kang205, Klenitskiy, P1: 1e-3)."""
    weight_decay: float = 0.0
    """AdamW weight decay on >= 2-D weights (none in SASRec; nanoGPT applies it to matrices only)."""
    batch_size: int = 128
    """Users per batch (kang205 and Klenitskiy: 128)."""
    epochs: int = 200
    """Maximum epochs (kang205 trains 201; early stopping usually ends much sooner)."""
    patience: int = 10
    """Epochs without a better validation NDCG@10 before stopping (Klenitskiy and P1: 10)."""
    bucket_by_length: bool = True
    """Group users of similar history length into batches (shuffled order) so batches carry less padding.

    Each batch's loss is the sum over its positions divided by the epoch's mean positions per batch, so
    every position keeps the same weight as without bucketing (a CPU speed-up; recsae's choice)."""
    valid_users: int | None = 10_000
    """Validation users per epoch (sampled once, seeded; Klenitskiy: 10,000); None = all."""
    train_windows: str = "last"
    """Training sequences (:func:`recsae_core.batching.train_sequences`): ``"last"`` = each user's last
    ``maxlen + 1`` items (SASRec+, P1); ``"all"`` = every training interaction a target once, in windows of
    ``maxlen + 1`` (ReChorus, P2: with ``history_max`` 20, "last" would drop most of ML-1M's training data)."""

    def __post_init__(self) -> None:
        for name in ("d", "n_blocks", "n_heads", "maxlen", "ffn_mult", "batch_size", "epochs", "patience"):
            if getattr(self, name) < 1:
                raise ValueError(f"SASRecConfig.{name} must be >= 1, got {getattr(self, name)}")
        if self.d % self.n_heads:
            raise ValueError(f"SASRecConfig.d={self.d} must be divisible by n_heads={self.n_heads}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"SASRecConfig.dropout must be in [0, 1), got {self.dropout}")
        if self.lr <= 0 or self.weight_decay < 0:
            raise ValueError(
                f"SASRecConfig needs lr > 0 and weight_decay >= 0, got {self.lr}, {self.weight_decay}"
            )
        if self.train_windows not in ("last", "all"):
            raise ValueError(
                f"SASRecConfig.train_windows must be 'last' or 'all', got {self.train_windows!r}"
            )
        if self.valid_users is not None and self.valid_users < 1:
            raise ValueError(f"SASRecConfig.valid_users must be >= 1 or None, got {self.valid_users}")


class SASRecOutput(NamedTuple):
    """What :meth:`SASRec.forward` returns."""

    hidden_states: list[torch.Tensor]  # n_blocks x (B, L, D): residual stream after each block
    last_hidden: torch.Tensor  # (B, L, D): final LayerNorm output at every position
    keep: torch.Tensor  # (B, L) bool: non-pad positions


class _FastDropout(torch.autograd.Function):
    """Inverted dropout whose keep mask comes from 8 random bits per element (CPU).

    ``F.dropout`` draws one Bernoulli sample per element, which dominates a SASRec step on CPU; here one
    64-bit draw serves 8 elements (bytes compared with ``round(p * 256)``, so the drop rate is ``p`` rounded
    to a multiple of 1/256, e.g. 0.1992 for 0.2) and the mask is kept as bytes for the backward pass.
    Seeded by torch's default generator, like ``F.dropout``.
    """

    @staticmethod
    def forward(ctx, x, p):
        n = x.numel()
        bits = torch.empty((n + 7) // 8, dtype=torch.int64, device=x.device).random_(-(2**63), 2**63 - 1)
        threshold = round(p * 256)
        keep = bits.view(torch.uint8)[:n].view(x.shape) >= threshold
        scale = 256.0 / (256 - threshold)
        ctx.save_for_backward(keep)
        ctx.scale = scale
        return x * keep * scale

    @staticmethod
    def backward(ctx, grad):
        (keep,) = ctx.saved_tensors
        return grad * keep * ctx.scale, None


def dropout(x: torch.Tensor, p: float, training: bool) -> torch.Tensor:
    """Inverted dropout: the byte-mask version on CPU (:class:`_FastDropout`), ``F.dropout`` elsewhere."""
    if not training or p == 0.0:
        return x
    if x.device.type == "cpu" and round(p * 256) < 256:
        return _FastDropout.apply(x, p)
    return F.dropout(x, p, True)


class SASRecBlock(nn.Module):
    """Pre-LN block: ``x + Attn(LN(x))`` then ``x + FFN(LN(x))``; pad positions reset to zero."""

    def __init__(self, d: int, n_heads: int, dropout: float, ffn_mult: int) -> None:
        super().__init__()
        self.n_heads, self.dropout = n_heads, dropout
        self.ln_attn = nn.LayerNorm(d)
        self.qkv = nn.Linear(d, 3 * d)
        self.proj = nn.Linear(d, d)
        self.ln_ffn = nn.LayerNorm(d)
        self.ff_in = nn.Linear(d, ffn_mult * d)
        self.ff_out = nn.Linear(ffn_mult * d, d)

    def _heads(self, t_BLD: torch.Tensor) -> torch.Tensor:
        B, L, D = t_BLD.shape
        return t_BLD.view(B, L, self.n_heads, D // self.n_heads).transpose(1, 2)  # (B, nh, L, hd)

    def _attend(
        self, q_BhQd: torch.Tensor, k_BhLd: torch.Tensor, v_BhLd: torch.Tensor, mask_B1QL: torch.Tensor
    ) -> torch.Tensor:
        """Softmax attention with an additive mask; with dropout on the probabilities while training."""
        if not (self.training and self.dropout > 0):
            return F.scaled_dot_product_attention(q_BhQd, k_BhLd, v_BhLd, attn_mask=mask_B1QL)
        B, h, Q, hd = q_BhQd.shape
        L = k_BhLd.shape[2]
        mask = mask_B1QL.expand(B, h, Q, L).reshape(B * h, Q, L)
        scores = torch.baddbmm(
            mask, q_BhQd.reshape(B * h, Q, hd), k_BhLd.reshape(B * h, L, hd).transpose(1, 2), alpha=hd**-0.5
        )
        probs = dropout(torch.softmax(scores, -1), self.dropout, True)
        return torch.bmm(probs, v_BhLd.reshape(B * h, L, hd)).view(B, h, Q, hd)

    def forward(
        self, x_BLD: torch.Tensor, mask_B1QL: torch.Tensor, keep_BQ1: torch.Tensor, last_only: bool = False
    ) -> torch.Tensor:
        """One block. ``mask_B1QL``: additive attention mask (``SASRec._masks``); ``keep_BQ1``: 1 at non-pad queries.

        ``last_only``: compute the block only for the last query (the output is ``(B, 1, D)``).
        """
        B, _, D = x_BLD.shape
        p, train = self.dropout, self.training
        h = self.ln_attn(x_BLD)
        if last_only:
            q = F.linear(h[:, -1:], self.qkv.weight[:D], self.qkv.bias[:D])
            k, v = F.linear(h, self.qkv.weight[D:], self.qkv.bias[D:]).split(D, dim=-1)
            x_BLD = x_BLD[:, -1:]
        else:
            q, k, v = self.qkv(h).split(D, dim=-1)
        a = self._attend(self._heads(q), self._heads(k), self._heads(v), mask_B1QL)  # (B, nh, Q, hd)
        a = a.transpose(1, 2).reshape(B, -1, D)
        x_BLD = x_BLD + dropout(self.proj(a), p, train)
        f = self.ff_out(dropout(F.relu(self.ff_in(self.ln_ffn(x_BLD))), p, train))
        x_BLD = x_BLD + dropout(f, p, train)
        return x_BLD * keep_BQ1


class SASRec(Recommender):
    """SASRec with named sites ``sasrec.block{i}``, ``sasrec.final`` and ``sasrec.last`` (see the module docstring)."""

    def __init__(self, n_users: int, n_items: int, config: SASRecConfig | None = None) -> None:
        super().__init__()
        cfg = config or SASRecConfig()
        self.config, self.n_users, self.n_items, self.maxlen = cfg, n_users, n_items, cfg.maxlen
        self.item_emb = nn.Embedding(n_items + 1, cfg.d, padding_idx=0)
        self.pos_emb = nn.Embedding(cfg.maxlen, cfg.d)
        self.blocks = nn.ModuleList(
            SASRecBlock(cfg.d, cfg.n_heads, cfg.dropout, cfg.ffn_mult) for _ in range(cfg.n_blocks)
        )
        self.final_ln = nn.LayerNorm(cfg.d)
        self.out_emb = None if cfg.tied_output else nn.Embedding(n_items, cfg.d)
        self.sites = {
            **{f"sasrec.block{i}": f"(B, L, D) residual stream after block {i}" for i in range(cfg.n_blocks)},
            "sasrec.final": "(B, L, D) final-norm output at every position (P2 trains on all, scores the last)",
            "sasrec.last": "(B, D) final-norm output at the last position (the user vector)",
        }
        self.apply(self._init_weights)

    @staticmethod
    def _init_weights(m: nn.Module) -> None:
        """N(0, 0.02) weights, zero biases, zero pad row (RecBole, Klenitskiy, P1 GPT4Rec)."""
        if isinstance(m, (nn.Linear, nn.Embedding)):
            nn.init.normal_(m.weight, 0.0, 0.02)
            if isinstance(m, nn.Linear) and m.bias is not None:
                nn.init.zeros_(m.bias)
            if isinstance(m, nn.Embedding) and m.padding_idx is not None:
                with torch.no_grad():
                    m.weight[m.padding_idx].zero_()

    @property
    def output_table(self) -> torch.Tensor:
        """``(n_items, D)``: the table scores are dotted with (item ``i`` in row ``i``)."""
        return self.item_emb.weight[1:] if self.out_emb is None else self.out_emb.weight

    # --- pieces -------------------------------------------------------------------------------------
    def _masks(self, seqs_BL: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Additive ``(B, 1, L, L)`` attention mask and ``(B, L)`` bool keep mask (non-pad positions).

        mask = causal part (``-inf`` above the diagonal) + pad part (the dtype's most negative finite
        number on pad keys). A real query's weights on pad keys are exactly 0 (``exp`` underflows), as with
        ``-inf``; a pad query, whose visible keys are all padding, gets finite uniform weights instead of
        NaN (RePlay uses ``finfo.min`` the same way). One broadcast add, shared by all blocks.
        """
        B, L = seqs_BL.shape
        if L > self.maxlen:
            raise ValueError(f"sequence length {L} exceeds maxlen={self.maxlen}")
        dtype, dev = self.pos_emb.weight.dtype, seqs_BL.device
        keep_BL = seqs_BL != 0
        causal_LL = torch.full((L, L), float("-inf"), dtype=dtype, device=dev).triu_(1)
        pad_BL = torch.zeros(B, L, dtype=dtype, device=dev).masked_fill_(~keep_BL, torch.finfo(dtype).min)
        return causal_LL + pad_BL[:, None, None, :], keep_BL

    def embed(self, seqs_BL: torch.Tensor) -> torch.Tensor:
        """Item + positional embeddings ``(B, L, D)``, positions counted from the right, pads zeroed."""
        L = seqs_BL.shape[1]
        x = self.item_emb(seqs_BL) * math.sqrt(self.config.d) + self.pos_emb.weight[self.maxlen - L :]
        return dropout(x, self.config.dropout, self.training) * (seqs_BL != 0).unsqueeze(-1)

    def _run_blocks(
        self, x_BLD: torch.Tensor, seqs_BL: torch.Tensor, start: int, last_only_final: bool
    ) -> torch.Tensor:
        """Blocks ``start..n_blocks-1``; with ``last_only_final`` the final block computes only the last query."""
        mask, keep = self._masks(seqs_BL)
        for i in range(start, len(self.blocks)):
            if last_only_final and i == len(self.blocks) - 1:
                x_BLD = self.blocks[i](x_BLD, mask[:, :, -1:], keep[:, -1:, None], last_only=True)
            else:
                x_BLD = self.blocks[i](x_BLD, mask, keep[:, :, None])
        return x_BLD

    def forward(self, seqs_BL: torch.Tensor) -> SASRecOutput:
        """All hidden states (training and probing). ``seqs_BL``: left-padded, item ``i`` as ``i + 1``."""
        mask, keep = self._masks(seqs_BL)
        x = self.embed(seqs_BL)
        hidden = []
        for block in self.blocks:
            x = block(x, mask, keep[:, :, None])
            hidden.append(x)
        return SASRecOutput(hidden, self.final_ln(x), keep)

    def logits(self, h_ND: torch.Tensor) -> torch.Tensor:
        """Scores ``(N, n_items)`` of hidden states ``h_ND``."""
        return h_ND @ self.output_table.T

    # --- the Recommender interface --------------------------------------------------------------------
    def _seqs(self, batch: UserBatch) -> torch.Tensor:
        if batch.seqs is None:
            raise ValueError(
                "SASRec needs UserBatch.seqs (left-padded histories); build them with recsae_core.batching"
            )
        return batch.seqs

    def _block_index(self, site: str) -> int:
        return int(site.removeprefix("sasrec.block"))

    def representation(self, site: str, batch: UserBatch) -> torch.Tensor:
        self.check_site(site)
        seqs = self._seqs(batch)
        if site == "sasrec.last":
            x = self._run_blocks(self.embed(seqs), seqs, 0, last_only_final=True)
            return self.final_ln(x[:, -1])
        if site == "sasrec.final":
            # the last block's site computes its last position as score() does: bit-exact score_from
            return self.final_ln(self.representation(f"sasrec.block{len(self.blocks) - 1}", batch))
        x = self.embed(seqs)
        mask, keep = self._masks(seqs)
        i = self._block_index(site)
        for block in self.blocks[:i]:
            x = block(x, mask, keep[:, :, None])
        out = self.blocks[i](x, mask, keep[:, :, None])
        if i == len(self.blocks) - 1:
            # score() runs the final block for the last query only; use that very computation for the last
            # position so that score_from(site, representation(site)) reproduces score() bit for bit.
            out[:, -1:] = self.blocks[i](x, mask[:, :, -1:], keep[:, -1:, None], last_only=True)
        return out

    def score_from(self, site: str, rep: torch.Tensor, batch: UserBatch) -> torch.Tensor:
        self.check_site(site)
        if site == "sasrec.last":
            return self.logits(rep)
        if site == "sasrec.final":
            return self.logits(rep[:, -1].contiguous())
        seqs = self._seqs(batch)
        x = self._run_blocks(rep, seqs, self._block_index(site) + 1, last_only_final=True)
        return self.logits(self.final_ln(x[:, -1]))

    def score(self, batch: UserBatch) -> torch.Tensor:
        """Scores ``(B, n_items)`` at the last position; the final block runs only for that position."""
        return self.score_from("sasrec.last", self.representation("sasrec.last", batch), batch)

    def config_dict(self) -> dict:
        return asdict(self.config)
