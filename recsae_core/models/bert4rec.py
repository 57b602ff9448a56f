"""BERT4Rec (Sun et al. 2019, arXiv 1904.06690) as P1 trains it (papers.md §1.3, §1.10).

Layout (HF ``BertModel`` fed through ``inputs_embeds``, as P1's and Klenitskiy & Vasilev's ``BERT4Rec``):
item embedding (row 0 = padding, rows ``1..n_items`` = items, row ``n_items + 1`` = ``[MASK]``) plus learned
positional embeddings, LayerNorm and dropout; ``n_blocks`` **bidirectional** Post-LN blocks
(``x = LN(x + Attn(x))``, ``x = LN(x + FFN(x))``, GELU, inner size ``ffn_mult · d``; no causal mask, padded
keys masked out); scores ``h · W_outᵀ`` over the catalogue with ``W_out`` tied to the item rows of the
embedding table. Two details differ from HF BERT: BERT's token-type embedding (one learned vector added
everywhere, redundant with the learned positions) is left out, and the softmax runs over the catalogue only
(P1's head also scores the pad and mask ids, and its mask id 1 is also an item id; see below).

Training (:mod:`recsae_core.train`, kind ``"masked"``): the last ``maxlen`` training items of each user;
every item is replaced by ``[MASK]`` with probability ``mask_prob`` (P1 0.2), re-drawn every epoch;
full-softmax cross-entropy over all items at the masked positions only. ``force_last_mask_prob`` (also mask
the most recent item) is 0 by default, as P1's ``force_last_item_masking_prob=0`` and Klenitskiy & Vasilev's
``BERT4Rec.yaml``.

Evaluation: ``[MASK]`` is appended after the (at most ``maxlen - 1``) most recent history items and the
model scores at that position (P1's ``MaskedLMPredictionDataset``, used for its validation). Note: P1's
ML-20M notebook computed its *test* NDCG@10 (0.0876) and ran its steering with ``CausalLMPredictionDataset``,
i.e. without the ``[MASK]``, scoring at the last history item's position; its validation, with the ``[MASK]``,
reached 0.145. recsae always appends the ``[MASK]``.

Left padding, positions counted from the right (as :mod:`recsae_core.models.sasrec`): the appended
``[MASK]`` always has the last position, so a history scores the same with or without extra left padding.

Sites (``recsae_core.models.base``):

* ``bert4rec.block{i}`` ``(B, L + 1, D)``: the output of block ``i`` at every column of the model's input,
  i.e. the ``L`` history columns of ``batch.seqs`` (aligned with them; pad columns hold 0) **plus the
  appended ``[MASK]`` as the last column**. P1 probes ``block0``. :mod:`recsae_core.probe` reads rows at the
  non-padding *item* columns for ``positions="all"`` (P1's SAE rows) and the last column — the ``[MASK]``, the
  scoring position — for ``positions="last"``; so steering "last" edits the position the model scores from.
* ``bert4rec.last`` ``(B, D)``: the final block's output at the ``[MASK]`` position (the user vector dotted
  with the output table).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from recsae_core.models.base import Recommender, UserBatch
from recsae_core.models.sasrec import SASRecBlock, dropout

__all__ = ["BERT4Rec", "BERT4RecConfig", "BERT4RecOutput"]


@dataclass
class BERT4RecConfig:
    """BERT4Rec architecture and masked-LM training settings (defaults: P1's BERT4Rec, papers.md §1.3, §1.10)."""

    d: int = 64
    """Hidden size (P1 ``hidden_size`` 64; Klenitskiy & Vasilev ``BERT4Rec.yaml`` 64)."""
    n_blocks: int = 2
    """Transformer blocks (P1 ``num_hidden_layers`` 2; Klenitskiy 2)."""
    n_heads: int = 2
    """Attention heads (P1 and Klenitskiy ``num_attention_heads`` 2)."""
    maxlen: int = 64
    """Positions, the ``[MASK]`` included: training reads the last ``maxlen`` items, evaluation the last
    ``maxlen - 1`` plus the appended ``[MASK]`` (P1 ``max_length`` = ``max_position_embeddings`` = 64)."""
    ffn_mult: int = 4
    """Feed-forward inner size as a multiple of ``d`` (Klenitskiy ``intermediate_size`` 256 = 4 × 64; BERT's 4×)."""
    dropout: float = 0.1
    """Dropout on embeddings, attention probabilities and residual branches (HF BERT defaults 0.1, used by P1)."""
    mask_prob: float = 0.2
    """Probability that a training item is replaced by ``[MASK]`` (P1 ``mlm_probability`` 0.2; Klenitskiy 0.2)."""
    force_last_mask_prob: float = 0.0
    """Probability of also masking the most recent item of a training sequence (P1 and Klenitskiy:
    ``force_last_item_masking_prob=0``; some BERT4Rec recipes raise it to train the inference task more)."""
    tied_output: bool = True
    """Score with the input item table (P1 ``tie_weights=True``); False = a separate output table."""
    lr: float = 1e-3
    """Adam learning rate (P1, Klenitskiy: 1e-3; Adam betas (0.9, 0.999), Lightning/torch defaults)."""
    weight_decay: float = 0.0
    """AdamW weight decay on >= 2-D weights (none in P1)."""
    batch_size: int = 128
    """Users per batch (Klenitskiy's ML-1M BERT4Rec 128; P1's ML-20M run 512)."""
    epochs: int = 200
    """Maximum epochs (Klenitskiy ML-1M 200, best epoch 197; BERT4Rec converges slowly)."""
    patience: int = 20
    """Epochs without a better validation NDCG@10 before stopping (Klenitskiy's BERT4Rec: 20; P1 ML-20M: 10)."""
    bucket_by_length: bool = True
    """Group users of similar history length into batches (as :class:`~recsae_core.models.sasrec.SASRecConfig`)."""
    valid_users: int | None = 10_000
    """Validation users per epoch (sampled once, seeded; Klenitskiy and P1: 10,000); None = all."""

    def __post_init__(self) -> None:
        for name in ("d", "n_blocks", "n_heads", "ffn_mult", "batch_size", "epochs", "patience"):
            if getattr(self, name) < 1:
                raise ValueError(f"BERT4RecConfig.{name} must be >= 1, got {getattr(self, name)}")
        if self.maxlen < 2:
            raise ValueError(
                f"BERT4RecConfig.maxlen must be >= 2 (history items + the appended [MASK]), got {self.maxlen}"
            )
        if self.d % self.n_heads:
            raise ValueError(f"BERT4RecConfig.d={self.d} must be divisible by n_heads={self.n_heads}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"BERT4RecConfig.dropout must be in [0, 1), got {self.dropout}")
        if not 0.0 < self.mask_prob < 1.0:
            raise ValueError(f"BERT4RecConfig.mask_prob must be in (0, 1), got {self.mask_prob}")
        if not 0.0 <= self.force_last_mask_prob <= 1.0:
            raise ValueError(
                f"BERT4RecConfig.force_last_mask_prob must be in [0, 1], got {self.force_last_mask_prob}"
            )
        if self.lr <= 0 or self.weight_decay < 0:
            raise ValueError(
                f"BERT4RecConfig needs lr > 0 and weight_decay >= 0, got {self.lr}, {self.weight_decay}"
            )
        if self.valid_users is not None and self.valid_users < 1:
            raise ValueError(f"BERT4RecConfig.valid_users must be >= 1 or None, got {self.valid_users}")


class BERT4RecOutput(NamedTuple):
    """What :meth:`BERT4Rec.forward` returns."""

    hidden_states: list[torch.Tensor]  # n_blocks x (B, T, D): output of each block (the last one is scored)
    keep: torch.Tensor  # (B, T) bool: non-pad positions


class BERT4RecBlock(SASRecBlock):
    """Post-LN BERT layer: ``x = LN(x + Attn(x))``, ``x = LN(x + FFN(x))`` (GELU); pad positions reset to 0.

    Reuses :class:`~recsae_core.models.sasrec.SASRecBlock`'s parameters (fused ``qkv``, ``proj``, ``ff_in``,
    ``ff_out``; ``ln_attn`` / ``ln_ffn`` are the LayerNorms *after* each residual add) and its attention
    (SDPA in evaluation; ``baddbmm`` + byte-mask dropout in training). Dropout placement as HF BERT: attention
    probabilities, after ``proj`` and after ``ff_out``; none after the activation.
    """

    def forward(
        self, x_BTD: torch.Tensor, mask_B11T: torch.Tensor, keep_BQ1: torch.Tensor, last_only: bool = False
    ) -> torch.Tensor:
        """One block. ``mask_B11T``: additive key mask; ``last_only``: compute only the last query ``(B, 1, D)``."""
        B, _, D = x_BTD.shape
        p, train = self.dropout, self.training
        if last_only:
            q = F.linear(x_BTD[:, -1:], self.qkv.weight[:D], self.qkv.bias[:D])
            k, v = F.linear(x_BTD, self.qkv.weight[D:], self.qkv.bias[D:]).split(D, dim=-1)
            x_BTD = x_BTD[:, -1:]
        else:
            q, k, v = self.qkv(x_BTD).split(D, dim=-1)
        a = self._attend(self._heads(q), self._heads(k), self._heads(v), mask_B11T)  # (B, nh, Q, hd)
        a = a.transpose(1, 2).reshape(B, -1, D)
        x_BTD = self.ln_attn(x_BTD + dropout(self.proj(a), p, train))
        f = self.ff_out(F.gelu(self.ff_in(x_BTD)))
        x_BTD = self.ln_ffn(x_BTD + dropout(f, p, train))
        return x_BTD * keep_BQ1


class BERT4Rec(Recommender):
    """BERT4Rec with named sites ``bert4rec.block{i}`` and ``bert4rec.last`` (see the module docstring).

    Attributes:
        maxlen: the **history** length evaluation builds (``config.maxlen - 1``: one position is the
            appended ``[MASK]``); :mod:`recsae_core.evaluate` and :mod:`recsae_core.probe` read it.
        n_positions: positional embeddings (``config.maxlen``).
        mask_id: the ``[MASK]`` token's row in the embedding table (``n_items + 1``).
    """

    def __init__(self, n_users: int, n_items: int, config: BERT4RecConfig | None = None) -> None:
        super().__init__()
        cfg = config or BERT4RecConfig()
        self.config, self.n_users, self.n_items = cfg, n_users, n_items
        self.n_positions, self.maxlen, self.mask_id = cfg.maxlen, cfg.maxlen - 1, n_items + 1
        self.item_emb = nn.Embedding(n_items + 2, cfg.d, padding_idx=0)
        self.pos_emb = nn.Embedding(cfg.maxlen, cfg.d)
        self.emb_ln = nn.LayerNorm(cfg.d, eps=1e-12)
        self.blocks = nn.ModuleList(
            BERT4RecBlock(cfg.d, cfg.n_heads, cfg.dropout, cfg.ffn_mult) for _ in range(cfg.n_blocks)
        )
        for block in self.blocks:  # HF BERT LayerNorm eps
            block.ln_attn.eps = block.ln_ffn.eps = 1e-12
        self.out_emb = None if cfg.tied_output else nn.Embedding(n_items, cfg.d)
        self.sites = {
            **{
                f"bert4rec.block{i}": f"(B, L + 1, D) output of block {i}: history columns + appended [MASK] last"
                for i in range(cfg.n_blocks)
            },
            "bert4rec.last": "(B, D) final block output at the appended [MASK] (the user vector)",
        }
        self.apply(self._init_weights)

    @staticmethod
    def _init_weights(m: nn.Module) -> None:
        """N(0, 0.02) weights, zero biases, zero pad row; LayerNorms (1, 0) (HF BERT, P1's BERT4Rec)."""
        if isinstance(m, (nn.Linear, nn.Embedding)):
            nn.init.normal_(m.weight, 0.0, 0.02)
            if isinstance(m, nn.Linear) and m.bias is not None:
                nn.init.zeros_(m.bias)
            if isinstance(m, nn.Embedding) and m.padding_idx is not None:
                with torch.no_grad():
                    m.weight[m.padding_idx].zero_()

    @property
    def output_table(self) -> torch.Tensor:
        """``(n_items, D)``: the table scores are dotted with (item ``i`` in row ``i``; no pad, no ``[MASK]``)."""
        return self.item_emb.weight[1 : self.n_items + 1] if self.out_emb is None else self.out_emb.weight

    # --- pieces -------------------------------------------------------------------------------------
    def _masks(self, tokens_BT: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Additive ``(B, 1, 1, T)`` key mask (bidirectional: no causal part) and ``(B, T)`` keep mask.

        Pad keys get the dtype's most negative finite number: exactly zero weight for every query, and
        finite rows for pad queries (as ``SASRec._masks``).
        """
        B, T = tokens_BT.shape
        if T > self.n_positions:
            raise ValueError(f"sequence length {T} exceeds the model's {self.n_positions} positions")
        keep_BT = tokens_BT != 0
        dtype = self.pos_emb.weight.dtype
        pad_BT = torch.zeros(B, T, dtype=dtype, device=tokens_BT.device)
        pad_BT.masked_fill_(~keep_BT, torch.finfo(dtype).min)
        return pad_BT[:, None, None, :], keep_BT

    def embed(self, tokens_BT: torch.Tensor) -> torch.Tensor:
        """LayerNorm(item + position) then dropout, ``(B, T, D)``; positions counted from the right, pads zeroed."""
        T = tokens_BT.shape[1]
        x = self.emb_ln(self.item_emb(tokens_BT) + self.pos_emb.weight[self.n_positions - T :])
        return dropout(x, self.config.dropout, self.training) * (tokens_BT != 0).unsqueeze(-1)

    def tokens(self, seqs_BL: torch.Tensor) -> torch.Tensor:
        """The evaluation input ``(B, L + 1)``: the left-padded history with ``[MASK]`` appended."""
        if seqs_BL.shape[1] > self.maxlen:
            raise ValueError(
                f"BERT4Rec reads at most maxlen - 1 = {self.maxlen} history items (one of its "
                f"{self.n_positions} positions is the appended [MASK]); got histories of length "
                f"{seqs_BL.shape[1]}: build them with the model's `maxlen` attribute"
            )
        mask_col = torch.full((seqs_BL.shape[0], 1), self.mask_id, dtype=seqs_BL.dtype, device=seqs_BL.device)
        return torch.cat([seqs_BL, mask_col], dim=1)

    def _run(
        self, x_BTD: torch.Tensor, tokens_BT: torch.Tensor, start: int, stop: int, last_only_final: bool
    ) -> torch.Tensor:
        """Blocks ``start..stop-1``; with ``last_only_final`` the model's final block computes only the last query."""
        mask, keep = self._masks(tokens_BT)
        for i in range(start, stop):
            if last_only_final and i == len(self.blocks) - 1:
                x_BTD = self.blocks[i](x_BTD, mask, keep[:, -1:, None], last_only=True)
            else:
                x_BTD = self.blocks[i](x_BTD, mask, keep[:, :, None])
        return x_BTD

    def forward(self, tokens_BT: torch.Tensor) -> BERT4RecOutput:
        """Every block's output (training and probing). ``tokens_BT``: left-padded, item ``i`` as ``i + 1``,
        ``[MASK]`` as :attr:`mask_id` (training inputs are masked sequences; evaluation uses :meth:`tokens`)."""
        mask, keep = self._masks(tokens_BT)
        x = self.embed(tokens_BT)
        hidden = []
        for block in self.blocks:
            x = block(x, mask, keep[:, :, None])
            hidden.append(x)
        return BERT4RecOutput(hidden, keep)

    def logits(self, h_ND: torch.Tensor) -> torch.Tensor:
        """Scores ``(N, n_items)`` of hidden states ``h_ND``."""
        return h_ND @ self.output_table.T

    # --- the Recommender interface --------------------------------------------------------------------
    def _tokens(self, batch: UserBatch) -> torch.Tensor:
        if batch.seqs is None:
            raise ValueError(
                "BERT4Rec needs UserBatch.seqs (left-padded histories); build them with recsae_core.batching"
            )
        return self.tokens(batch.seqs)

    def _block_index(self, site: str) -> int:
        return int(site.removeprefix("bert4rec.block"))

    def representation(self, site: str, batch: UserBatch) -> torch.Tensor:
        self.check_site(site)
        tokens = self._tokens(batch)
        n = len(self.blocks)
        if site == "bert4rec.last":
            return self._run(self.embed(tokens), tokens, 0, n, last_only_final=True)[:, -1]
        i = self._block_index(site)
        x = self._run(self.embed(tokens), tokens, 0, i, last_only_final=False)
        mask, keep = self._masks(tokens)
        out = self.blocks[i](x, mask, keep[:, :, None])
        if i == n - 1:
            # score() runs the final block for the [MASK] query only; use that very computation for the last
            # column so that score_from(site, representation(site)) reproduces score() bit for bit.
            out[:, -1:] = self.blocks[i](x, mask, keep[:, -1:, None], last_only=True)
        return out

    def score_from(self, site: str, rep: torch.Tensor, batch: UserBatch) -> torch.Tensor:
        self.check_site(site)
        if site == "bert4rec.last":
            return self.logits(rep)
        tokens = self._tokens(batch)
        if rep.ndim != 3 or rep.shape[:2] != tokens.shape:
            raise ValueError(
                f"{site} takes a (B, L + 1, D) representation with B, L + 1 = {tuple(tokens.shape)} (the history "
                f"columns plus the appended [MASK]), got {tuple(rep.shape)}"
            )
        x = self._run(rep, tokens, self._block_index(site) + 1, len(self.blocks), last_only_final=True)
        return self.logits(x[:, -1].contiguous())

    def score(self, batch: UserBatch) -> torch.Tensor:
        """Scores ``(B, n_items)`` at the appended ``[MASK]``; the final block runs only for that position."""
        return self.score_from("bert4rec.last", self.representation("bert4rec.last", batch), batch)

    def config_dict(self) -> dict:
        return asdict(self.config)
