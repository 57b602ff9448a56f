"""Read activations at a named site of a frozen recommender, and splice an SAE into it.

Sites are those of :class:`recsae_core.models.base.Recommender` (``sasrec.block0`` ``(B, L, D)``,
``sasrec.last``/``<model>.user`` ``(B, D)``, ``<model>.item`` ``(n_items, D)``). Every collected row keeps
the user and the item behind it:

| site shape | rows | ``users`` | ``items`` | ``positions`` |
|---|---|---|---|---|
| ``(B, L, D)`` | every non-padding position (P1), or the last position only | the user | the **input item at that position** (P1 correlates with its genres) | column index (``L - 1`` = most recent) |
| ``(B, L + 1, D)`` (BERT4Rec: history + appended ``[MASK]``) | ``"all"``: the non-padding item columns; ``"last"``: the ``[MASK]`` column (where it scores) | the user | as above; the last history item for the ``[MASK]`` row | column index (``L`` = the ``[MASK]``) |
| ``(B, D)`` user vector | one per user | the user | the last history item when ``seqs`` exist, else -1 | ``None`` |
| ``(n_items, D)`` item table | one per item | -1 | the item | ``None`` |

Splicing (P2): the site's representation is replaced by the SAE reconstruction, optionally keeping the
SAE's error term (``x' = x + decode(f') - decode(f)``, which with unedited ``f' = f`` returns ``x``).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm

from recsae_core.batching import EvalData, eval_data
from recsae_core.data.dataset import Split
from recsae_core.evaluate import evaluate_scores_fn
from recsae_core.models.base import Recommender, UserBatch
from recsae_core.sae.base import SparseAutoencoder
from recsae_core.utils import atomic_path, atomic_write_json, resolve_device

__all__ = [
    "ActivationSet",
    "activation_cache_key",
    "apply_to_site",
    "collect_activations",
    "eval_cases",
    "model_fingerprint",
    "part_batch",
    "splice_accuracy",
    "spliced_scores_fn",
]

POSITIONS = ("all", "last")
CACHE_VERSION = 1


@dataclass
class ActivationSet:
    """Activations collected at one site, with the user and item behind each row.

    Attributes:
        acts: ``(N, D)`` float32 (on CPU).
        users: ``(N,)`` int64 user id (-1 for item-table rows).
        items: ``(N,)`` int64 item id (module table; -1 when there is none).
        positions: ``(N,)`` int64 sequence column for ``(B, L, D)`` sites, else ``None``.
        site: the site name; ``meta``: provenance (model class, positions mode, cache key, ...).
    """

    acts: torch.Tensor
    users: torch.Tensor
    items: torch.Tensor
    positions: torch.Tensor | None
    site: str
    meta: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return self.acts.shape[0]

    def save(self, path: str | os.PathLike) -> None:
        """``<path>.safetensors`` + ``<path>.json``, each written atomically."""
        tensors = {"acts": self.acts.contiguous(), "users": self.users, "items": self.items}
        if self.positions is not None:
            tensors["positions"] = self.positions
        base = Path(path)
        with atomic_path(base.with_name(base.name + ".safetensors")) as tmp:
            save_file(tensors, str(tmp))
        atomic_write_json(
            base.with_name(base.name + ".json"),
            {"version": CACHE_VERSION, "site": self.site, "meta": self.meta},
        )

    @classmethod
    def load(cls, path: str | os.PathLike) -> ActivationSet:
        base = Path(path)
        info = json.loads(base.with_name(base.name + ".json").read_text())
        t = load_file(str(base.with_name(base.name + ".safetensors")))
        return cls(t["acts"], t["users"], t["items"], t.get("positions"), info["site"], info["meta"])


def model_fingerprint(model: torch.nn.Module) -> str:
    """sha256 (16 hex) of the model's class and state (parameters and buffers), for cache keys."""
    h = hashlib.sha256(type(model).__name__.encode())
    for name, t in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def _batches(data: UserBatch | Iterable[UserBatch], batch_size: int) -> tuple[list[UserBatch], int]:
    if isinstance(data, UserBatch):
        n = len(data.users)
        out = [
            UserBatch(
                data.users[s : s + batch_size], None if data.seqs is None else data.seqs[s : s + batch_size]
            )
            for s in range(0, n, batch_size)
        ]
        return out, n
    out = list(data)
    return out, sum(len(b.users) for b in out)


def eval_cases(
    model: Recommender, split: Split, part: str = "test", users: torch.Tensor | Sequence[int] | None = None
) -> EvalData:
    """The evaluation cases of ``part`` as :mod:`recsae_core.evaluate` builds them (histories from
    ``Split.history_for(part)``, targets from ``Split.targets(part)``, seen items; sequences of the model's
    ``maxlen`` when it has one), restricted to ``users`` when given."""
    data = eval_data(split, part, getattr(model, "maxlen", None))
    if users is not None:
        want = torch.as_tensor(users, dtype=torch.int64).reshape(-1)
        keep = torch.isin(data.users, want)
        if not bool(keep.any()):
            raise ValueError(
                f"none of the {len(want)} requested users has a {part!r} case in split {split.name!r}"
            )
        data = data.subset(torch.nonzero(keep).squeeze(1))
    return data


def part_batch(
    model: Recommender, split: Split, part: str = "test", users: torch.Tensor | Sequence[int] | None = None
) -> UserBatch:
    """A :class:`UserBatch` of the users of ``part`` (each once, with the history :func:`eval_cases` gives
    them), e.g. to collect held-out activations of the test users."""
    data = eval_cases(model, split, part, users)
    uniq, inv = torch.unique(data.users, return_inverse=True)
    first = torch.full((len(uniq),), len(data), dtype=torch.int64)
    first.scatter_reduce_(0, inv, torch.arange(len(data)), reduce="amin")
    return UserBatch(data.users[first], None if data.seqs is None else data.seqs[first])


def _data_hash(batches: Sequence[UserBatch]) -> str:
    h = hashlib.sha256()
    for b in batches:
        h.update(b.users.cpu().numpy().tobytes())
        if b.seqs is not None:
            h.update(b.seqs.cpu().numpy().tobytes())
    return h.hexdigest()[:16]


def _activation_key(model: Recommender, site: str, batches: Sequence[UserBatch], positions: str) -> str:
    return f"{site}|{positions}|{model_fingerprint(model)}|{_data_hash(batches)}"


def activation_cache_key(
    model: Recommender,
    site: str,
    data: UserBatch | Iterable[UserBatch],
    *,
    positions: str = "all",
    batch_size: int = 256,
) -> str:
    """The key :func:`collect_activations` stores in ``meta["cache_key"]``: site, positions mode, model
    state and the users' histories (what determines the rows)."""
    return _activation_key(model, site, _batches(data, batch_size)[0], positions)


@torch.no_grad()
def collect_activations(
    model: Recommender,
    site: str,
    data: UserBatch | Iterable[UserBatch],
    *,
    positions: str = "all",
    batch_size: int = 256,
    device: str | torch.device | None = None,
    progress: bool = True,
    cache: str | os.PathLike | None = None,
) -> ActivationSet:
    """Collect the representation at ``site`` for every user of ``data`` (chunked, no grad).

    Args:
        model: a frozen recommender (put in eval mode here).
        site: one of ``model.sites``.
        data: a :class:`UserBatch` of all users (split into chunks of ``batch_size``) or an iterable of batches.
        positions: for ``(B, L, D)`` sites, ``"all"`` non-padding positions (P1) or ``"last"`` only.
        device: where the model runs (default: CPU); rows are stored on CPU.
        progress: tqdm bar over batches.
        cache: path stem; when ``<cache>.json`` holds the same key (site, positions, model state, data)
            the rows are loaded from ``<cache>.safetensors``, else collected and written atomically.
    """
    model.check_site(site)
    if positions not in POSITIONS:
        raise ValueError(f"positions must be one of {POSITIONS}, got {positions!r}")
    batches, n_users = _batches(data, batch_size)
    if not batches:
        raise ValueError("no users to collect activations for")
    key = None
    if cache is not None:
        key = _activation_key(model, site, batches, positions)
        meta_path = Path(cache).with_name(Path(cache).name + ".json")
        if meta_path.exists():
            try:
                info = json.loads(meta_path.read_text())
            except json.JSONDecodeError:
                info = {}
            if info.get("version") == CACHE_VERSION and info.get("meta", {}).get("cache_key") == key:
                return ActivationSet.load(cache)
    dev = resolve_device(device)
    model.eval().to(dev)
    first = batches[0].to(dev)
    if site.endswith(".item"):
        table = model.representation(site, first).float().cpu()
        n = table.shape[0]
        out = ActivationSet(table.contiguous(), torch.full((n,), -1), torch.arange(n), None, site)
    else:
        out = _collect_rows(model, site, batches, positions, dev, progress)
    out.meta = {
        "model": type(model).__name__,
        "positions": positions,
        "n_users": n_users,
        "n_rows": len(out),
        "cache_key": key,
    }
    if cache is not None:
        out.save(cache)
    return out


def _positions_mask(seqs_BL: torch.Tensor, positions: str, n_cols: int | None = None) -> torch.Tensor:
    """``(B, n_cols)`` bool: the columns of a ``(B, n_cols, D)`` site to read or edit.

    Columns ``0..L-1`` hold ``seqs_BL``; a site may have extra trailing columns that hold no item
    (``n_cols > L``: BERT4Rec's appended ``[MASK]``, its scoring position). ``"all"``: the non-padding item
    columns; ``"last"``: the site's last column, in rows with a non-empty history.
    """
    B, L = seqs_BL.shape
    n_cols = L if n_cols is None else n_cols
    if n_cols < L:
        raise ValueError(f"a (B, L, D) site has {n_cols} columns, fewer than the {L} history columns")
    mask = torch.zeros(B, n_cols, dtype=torch.bool, device=seqs_BL.device)
    if positions == "all":
        mask[:, :L] = seqs_BL > 0
    else:
        mask[:, -1] = seqs_BL[:, -1] > 0
    return mask


def _collect_rows(
    model: Recommender,
    site: str,
    batches: Sequence[UserBatch],
    positions: str,
    dev: torch.device,
    progress: bool,
) -> ActivationSet:
    """Fill preallocated ``(N, D)`` arrays batch by batch (no list of chunks to concatenate: half the peak)."""
    acts = users = items = pos = None
    row = 0
    for b in tqdm(batches, desc=f"collect {site}", disable=not progress, leave=False):
        b = b.to(dev)
        rep = model.representation(site, b)
        if rep.ndim == 3:
            if b.seqs is None:
                raise ValueError(f"site {site} has a sequence dimension but the batch has no seqs")
            r, c = torch.nonzero(_positions_mask(b.seqs, positions, rep.shape[1]), as_tuple=True)
            # an extra trailing column (BERT4Rec's [MASK]) is tagged with the last history item, as user vectors
            it = b.seqs[r, c.clamp(max=b.seqs.shape[1] - 1)] - 1
            block, u, p = rep[r, c], b.users[r], c
        else:
            block, u, p = rep, b.users, None
            it = b.seqs[:, -1] - 1 if b.seqs is not None else torch.full_like(b.users, -1)
        if acts is None:  # sizes are known from the histories alone: allocate once
            total = sum(_n_rows(x, rep.ndim, positions) for x in batches)
            acts = torch.empty(total, rep.shape[-1], dtype=torch.float32)
            users, items = torch.empty(total, dtype=torch.int64), torch.empty(total, dtype=torch.int64)
            pos = torch.empty(total, dtype=torch.int64) if rep.ndim == 3 else None
        n = block.shape[0]
        acts[row : row + n] = block.float().cpu()
        users[row : row + n] = u.cpu()
        items[row : row + n] = it.cpu()
        if pos is not None:
            pos[row : row + n] = p.cpu()
        row += n
    return ActivationSet(acts[:row], users[:row], items[:row], None if pos is None else pos[:row], site)


def _n_rows(b: UserBatch, ndim: int, positions: str) -> int:
    if ndim != 3:
        return len(b.users)
    return int(_positions_mask(b.seqs, positions).sum())


# -------------------------------------------------------------------------------------------- splicing
def _row_mask(rep: torch.Tensor, batch: UserBatch, positions: str) -> torch.Tensor | None:
    """Bool mask over the leading dims of ``rep`` selecting the rows to edit (``None``: all rows)."""
    if rep.ndim != 3:
        return None
    if batch.seqs is None:
        raise ValueError("a (B, L, D) site needs UserBatch.seqs to find padding")
    return _positions_mask(batch.seqs, positions, rep.shape[1])


def apply_to_site(
    sae: SparseAutoencoder,
    rep: torch.Tensor,
    batch: UserBatch,
    *,
    edit: Callable[[torch.Tensor], torch.Tensor] | None = None,
    keep_error: bool = False,
    positions: str = "all",
    rows: torch.Tensor | None = None,
) -> torch.Tensor:
    """Replace (selected rows of) a representation by its SAE reconstruction, optionally edited.

    Args:
        sae: the SAE (used as is; call ``.eval()`` first for batch-independent encoding).
        rep: the site's representation (``(B, D)``, ``(B, L, D)`` or ``(n_items, D)``).
        batch: the batch (its ``seqs`` locate padding for ``(B, L, D)`` sites).
        edit: maps activations ``(n, m)`` to edited activations (steering); ``None`` = plain splice.
        keep_error: ``x' = x + decode(edit(f)) - decode(f)`` (only the edit reaches the model; with no
            edit, ``x' = x`` exactly) instead of ``x' = decode(edit(f))``.
        positions: ``(B, L, D)`` sites: edit ``"all"`` non-padding positions or the ``"last"`` one.
        rows: for 2-D sites, an optional index/bool mask of the rows to edit (e.g. one item of the table).

    Rows not selected are returned bit-for-bit unchanged.
    """
    if positions not in POSITIONS:
        raise ValueError(f"positions must be one of {POSITIONS}, got {positions!r}")
    mask = _row_mask(rep, batch, positions)
    if mask is None:
        if rows is None:
            sel = torch.arange(rep.shape[0], device=rep.device)
        else:
            sel = torch.as_tensor(rows, device=rep.device)
            sel = torch.nonzero(sel).squeeze(1) if sel.dtype == torch.bool else sel.long()
        x = rep[sel]
    else:
        x = rep[mask]
    if x.shape[0] == 0:
        return rep
    acts, _pre, stats = sae.encode_with_stats(x.to(sae.W_enc.dtype))
    new_acts = edit(acts) if edit is not None else acts
    if keep_error:
        if edit is None:
            return rep
        delta = sae.decode(new_acts, stats) - sae.decode(acts, stats)
        x_new = x + delta.to(x.dtype)
    else:
        x_new = sae.decode(new_acts, stats).to(x.dtype)
    out = rep.clone()
    if mask is None:
        out[sel] = x_new
    else:
        out[mask] = x_new
    return out


def spliced_scores_fn(
    model: Recommender,
    site: str,
    sae: SparseAutoencoder,
    *,
    edit: Callable[[torch.Tensor], torch.Tensor] | None = None,
    keep_error: bool = False,
    positions: str = "all",
    rows: torch.Tensor | Sequence[int] | None = None,
) -> Callable[[UserBatch], torch.Tensor]:
    """``UserBatch -> (B, n_items)`` scores with the SAE reconstruction spliced in at ``site`` (P2 §2.5),
    optionally edited (steering is splicing with an ``edit``: :func:`recsae_core.steer.steered_scores_fn`).

    Arguments after ``sae``: see :func:`apply_to_site`. For item-table sites the new table is computed
    once and reused (``rows`` picks the items to edit; ``positions`` does not apply).
    """
    model.check_site(site)
    sae.eval()
    rows_t = None if rows is None else torch.as_tensor(rows)
    cached: dict[str, torch.Tensor] = {}

    @torch.no_grad()
    def score(batch: UserBatch) -> torch.Tensor:
        if site.endswith(".item"):
            if "table" not in cached:
                table = model.representation(site, batch)
                cached["table"] = apply_to_site(
                    sae, table, batch, edit=edit, keep_error=keep_error, rows=rows_t
                )
            return model.score_from(site, cached["table"], batch)
        rep = model.representation(site, batch)
        new = apply_to_site(sae, rep, batch, edit=edit, keep_error=keep_error, positions=positions)
        return model.score_from(site, new, batch)

    return score


def splice_accuracy(
    model: Recommender,
    site: str,
    sae: SparseAutoencoder,
    split: Any,
    part: str = "test",
    ks: Sequence[int] = (5, 10, 20, 50),
    *,
    positions: str = "all",
    batch_size: int = 512,
    device: str | torch.device | None = None,
    ties: str = "optimistic",
    progress: bool = False,
    keep_error_too: bool = False,
) -> dict[str, dict[str, float]]:
    """Full-ranking accuracy of the base model and of the model with the SAE spliced in (P2 §2.5).

    Uses :func:`recsae_core.evaluate.evaluate_scores_fn` for all (same users, histories, seen-item
    masking and tie rule). Returns ``{"base": metrics, "spliced": metrics}``, plus
    ``"spliced_keep_error"`` (the reconstruction with the SAE's error term added back, which must equal
    the base model: a check of the splicing path) when ``keep_error_too``.
    """
    dev = resolve_device(device)
    model.eval().to(dev)
    sae.eval().to(dev)
    maxlen = getattr(model, "maxlen", None)
    kw = dict(maxlen=maxlen, batch_size=batch_size, device=dev, ties=ties, progress=progress)
    base = evaluate_scores_fn(model.score, split, part, ks, **kw)
    out = {"base": base}
    for name, keep in (("spliced", False), ("spliced_keep_error", True))[: 1 + keep_error_too]:
        fn = spliced_scores_fn(model, site, sae, keep_error=keep, positions=positions)
        out[name] = evaluate_scores_fn(fn, split, part, ks, **kw)
    return out
