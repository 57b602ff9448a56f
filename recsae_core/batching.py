"""Sequences and user batches built from a :class:`~recsae_core.data.dataset.Split`.

Conventions (CONTRIBUTING.md): histories are **left-padded** ``(U, L)`` int64 tensors with pad id 0 and
item ``i`` stored as ``i + 1``, truncated to the most recent ``maxlen`` items, so the last column always
holds the most recent item (SASRec, Kang & McAuley 2018; pmixer/SASRec.pytorch; RePlay).

Which rows form a user's history (the ``Split`` docstring):

| part | history (input and seen items) | targets |
|---|---|---|
| ``"train"`` | ``train`` | the next item at every position (teacher forcing) |
| ``"valid"`` | ``train`` | ``valid`` rows |
| ``"test"`` | ``train`` + ``valid`` | ``test`` rows |

(the evaluation rule is :meth:`Split.history_for`, which a protocol may override via ``Split.context``).

Rows are put in time order (stable sort on ``timestamp``, ties keep the source order) when the data has
timestamps, else in the frames' row order. Everything is vectorised with NumPy (``bincount`` / ``cumsum``
offsets and one fancy-indexed assignment); no per-user Python loop.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from recsae_core.data.dataset import Split
from recsae_core.models.base import UserBatch

__all__ = [
    "EvalBatch",
    "EvalData",
    "MaskedSequences",
    "TrainSequences",
    "eval_data",
    "history_frame",
    "mask_items",
    "masked_sequences",
    "pad_left",
    "seen_index",
    "train_pairs",
    "train_sequences",
]

PARTS = ("train", "valid", "test")


def _check_part(part: str) -> None:
    if part not in PARTS:
        raise ValueError(f"part must be one of {PARTS}, got {part!r}")


def _ordered(df: pd.DataFrame) -> pd.DataFrame:
    """Rows grouped by user, in time order within a user when timestamps exist (stable sort)."""
    keys = ["user", "timestamp"] if "timestamp" in df.columns else ["user"]
    return df.sort_values(keys, kind="stable")


def history_frame(split: Split, part: str) -> pd.DataFrame:
    """The rows that form the users' histories when evaluating on ``part``, grouped by user, time-ordered.

    The rule itself is :meth:`Split.history_for` (train for valid, train + valid for test, unless the
    protocol overrides it).
    """
    _check_part(part)
    return _ordered(split.history_for(part).reset_index(drop=True))


def pad_left(groups_N: np.ndarray, values_N: np.ndarray, n_groups: int, maxlen: int) -> np.ndarray:
    """Left-padded ``(n_groups, maxlen)`` int64 array of the **last** ``maxlen`` values of each group.

    ``groups_N`` must be grouped contiguously (all rows of a group adjacent, in the order to keep);
    ``values_N`` are stored as given (callers pass ``item + 1`` so that 0 stays the pad id).
    """
    if maxlen < 1:
        raise ValueError(f"maxlen must be >= 1, got {maxlen}")
    groups_N = np.asarray(groups_N, dtype=np.int64)
    n = len(groups_N)
    out = np.zeros((n_groups, maxlen), dtype=np.int64)
    if n == 0:
        return out
    if np.any(np.diff(groups_N) < 0):
        # Contiguity is what the offsets below rely on; a sorted group column guarantees it.
        raise ValueError("pad_left: rows must be sorted by group")
    counts = np.bincount(groups_N, minlength=n_groups)
    ends = np.cumsum(counts)  # exclusive end offset of each group
    from_end = ends[groups_N] - 1 - np.arange(n)  # 0 for a group's last row
    keep = from_end < maxlen
    out[groups_N[keep], maxlen - 1 - from_end[keep]] = np.asarray(values_N)[keep]
    return out


@dataclass
class TrainSequences:
    """Training sequences with the loss at every position (SASRec+; Klenitskiy & Vasilev 2023).

    ``windows="last"``: one per user, its last ``maxlen + 1`` training items. ``windows="all"``: each user's
    training items cut into consecutive windows of ``maxlen + 1`` items overlapping by one, so every
    training interaction after the user's first is a label exactly once (ReChorus trains SASRec on every
    interaction; P2). A window gives ``inputs = seq[:-1]`` and ``labels = seq[1:]``, both left-padded (0 in
    ``labels`` = no target); windows without a label (users with one training item) are dropped.
    """

    users: torch.Tensor  # (U,) int64 the window's user (repeated for windows="all")
    inputs: torch.Tensor  # (U, L) int64, item + 1, left-padded
    labels: torch.Tensor  # (U, L) int64, next item + 1, 0 where there is no target
    lengths: torch.Tensor  # (U,) int64, number of labelled positions

    def __len__(self) -> int:
        return len(self.users)


WINDOWS = ("last", "all")


def train_sequences(split: Split, maxlen: int, windows: str = "last") -> TrainSequences:
    """Training sequences from ``split.train`` (time-ordered when timestamps exist); ``windows`` as in
    :class:`TrainSequences`."""
    if windows not in WINDOWS:
        raise ValueError(f"windows must be one of {WINDOWS}, got {windows!r}")
    df = _ordered(split.train)
    n_users = split.dataset.n_users
    user_N, item_N = df["user"].to_numpy(np.int64), df["item"].to_numpy(np.int64) + 1
    if windows == "last":
        arr_UL1 = pad_left(user_N, item_N, n_users, maxlen + 1)
        owner = np.arange(n_users)
    else:
        arr_UL1, owner = _all_windows(user_N, item_N, maxlen)
    inputs, labels = arr_UL1[:, :-1], arr_UL1[:, 1:]
    labels = np.where(inputs > 0, labels, 0)  # a label needs an input item before it
    lengths = (labels > 0).sum(1)
    keep = np.flatnonzero(lengths > 0)
    users = owner[keep]
    return TrainSequences(
        users=torch.from_numpy(users),
        inputs=torch.from_numpy(np.ascontiguousarray(inputs[keep])),
        labels=torch.from_numpy(np.ascontiguousarray(labels[keep])),
        lengths=torch.from_numpy(lengths[keep]),
    )


def _all_windows(user_N: np.ndarray, value_N: np.ndarray, maxlen: int) -> tuple[np.ndarray, np.ndarray]:
    """``(W, maxlen + 1)`` left-padded windows of every user's rows (grouped by user, in order), counted
    from each user's end, consecutive windows sharing one row; and the user of each window ``(W,)``."""
    counts = np.bincount(user_N)
    e_N = (np.cumsum(counts)[user_N] - 1) - np.arange(len(user_N))  # 0 for a user's last row
    w_N = e_N // maxlen  # the window a row labels in (the first row of a window is the input only)
    dup = (e_N > 0) & (e_N % maxlen == 0)  # also the first input of the next-older window
    user_R = np.concatenate([user_N, user_N[dup]])
    win_R = np.concatenate([w_N, w_N[dup] - 1])
    e_R = np.concatenate([e_N, e_N[dup]])
    value_R = np.concatenate([value_N, value_N[dup]])
    order = np.lexsort((-e_R, -win_R, user_R))  # by user, oldest window first, oldest row first
    user_R, win_R, value_R = user_R[order], win_R[order], value_R[order]
    new = np.ones(len(user_R), dtype=bool)
    new[1:] = (user_R[1:] != user_R[:-1]) | (win_R[1:] != win_R[:-1])
    group_R = np.cumsum(new) - 1
    return pad_left(group_R, value_R, int(group_R[-1]) + 1 if len(group_R) else 0, maxlen + 1), user_R[new]


@dataclass
class MaskedSequences:
    """One masked-LM training sequence per user (BERT4Rec; P1's ``MaskedLMDataset``, papers.md §1.3).

    The last ``maxlen`` training items of a user, left-padded; which of them are masked is drawn every
    epoch by :func:`mask_items`. Users without training items are dropped.
    """

    users: torch.Tensor  # (U,) int64
    items: torch.Tensor  # (U, L) int64, item + 1, left-padded
    lengths: torch.Tensor  # (U,) int64, number of items

    def __len__(self) -> int:
        return len(self.users)


def masked_sequences(split: Split, maxlen: int) -> MaskedSequences:
    """Per-user masked-LM training sequences from ``split.train`` (time-ordered when timestamps exist)."""
    df = _ordered(split.train)
    arr_UL = pad_left(df["user"].to_numpy(), df["item"].to_numpy() + 1, split.dataset.n_users, maxlen)
    lengths = (arr_UL > 0).sum(1)
    users = np.flatnonzero(lengths > 0)
    return MaskedSequences(
        users=torch.from_numpy(users),
        items=torch.from_numpy(np.ascontiguousarray(arr_UL[users])),
        lengths=torch.from_numpy(lengths[users]),
    )


def mask_items(
    items_UL: torch.Tensor,
    prob: float,
    mask_id: int,
    gen: torch.Generator,
    force_last_prob: float = 0.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Masked-LM inputs and labels: each item replaced by ``mask_id`` with probability ``prob``.

    ``force_last_prob``: also mask the last column (the most recent item) with that probability per row
    (P1's ``force_last_item_masking_prob``). Returns ``(inputs_UL, labels_UL)``: labels hold ``item + 1``
    at masked positions and 0 elsewhere (no target). Padding is never masked.
    """
    real_UL = items_UL > 0
    masked_UL = (torch.rand(items_UL.shape, generator=gen) < prob) & real_UL
    if force_last_prob > 0:
        force_U = torch.rand(items_UL.shape[0], generator=gen) < force_last_prob
        masked_UL[:, -1] |= force_U & real_UL[:, -1]
    inputs_UL = items_UL.masked_fill(masked_UL, mask_id)
    labels_UL = torch.where(masked_UL, items_UL, torch.zeros_like(items_UL))
    return inputs_UL, labels_UL


def train_pairs(split: Split) -> tuple[np.ndarray, np.ndarray]:
    """Unique ``(user, item)`` training pairs, sorted by user then item: ``(users_N, items_N)``."""
    df = split.train
    key = np.unique(df["user"].to_numpy(np.int64) * split.dataset.n_items + df["item"].to_numpy(np.int64))
    return key // split.dataset.n_items, key % split.dataset.n_items


def seen_index(hist: pd.DataFrame, n_users: int, n_items: int) -> tuple[torch.Tensor, torch.Tensor]:
    """CSR index of each user's distinct history items: ``(indptr (n_users + 1,), items (nnz,))``."""
    key = np.unique(hist["user"].to_numpy(np.int64) * n_items + hist["item"].to_numpy(np.int64))
    users, items = key // n_items, key % n_items
    indptr = np.zeros(n_users + 1, dtype=np.int64)
    np.cumsum(np.bincount(users, minlength=n_users), out=indptr[1:])
    return torch.from_numpy(indptr), torch.from_numpy(items)


def _csr_rows(
    indptr: torch.Tensor, values: torch.Tensor, rows: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Gather the CSR rows ``rows`` (B,) as flat ``(batch_row, value)`` pairs, without a Python loop."""
    starts, ends = indptr[rows], indptr[rows + 1]
    counts = ends - starts
    total = int(counts.sum())
    batch_rows = torch.repeat_interleave(torch.arange(len(rows)), counts)
    offsets = torch.cumsum(counts, 0) - counts  # start of each row in the flat output
    flat = starts[batch_rows] + torch.arange(total) - offsets[batch_rows]
    return batch_rows, values[flat]


@dataclass
class EvalBatch:
    """A batch of evaluation cases: what the model reads, the targets, and the items to mask."""

    batch: UserBatch
    targets: torch.Tensor  # (B,) int64 item ids
    seen_rows: torch.Tensor  # (S,) int64 row in the batch
    seen_items: torch.Tensor  # (S,) int64 item id to mask in that row


@dataclass
class EvalData:
    """Evaluation cases of one part: one case per target row (leave-one-out: one per user).

    Cases are stored sorted by history length (longest last) so that batches can drop the leading
    all-pad columns (``trim``); metrics are averages over cases, so the order does not matter.
    """

    part: str
    n_items: int
    users: torch.Tensor  # (C,) int64
    targets: torch.Tensor  # (C,) int64
    seqs: torch.Tensor | None  # (C, L) int64 left-padded histories, or None (non-sequential models)
    seen_indptr: torch.Tensor  # (n_users + 1,) CSR offsets of each user's seen items
    seen_items: torch.Tensor  # (nnz,) seen item ids

    def __len__(self) -> int:
        return len(self.users)

    def subset(self, idx: torch.Tensor) -> EvalData:
        """The cases at positions ``idx`` (kept in storage order)."""
        idx = torch.sort(torch.as_tensor(idx, dtype=torch.int64)).values
        return EvalData(
            self.part,
            self.n_items,
            self.users[idx],
            self.targets[idx],
            None if self.seqs is None else self.seqs[idx],
            self.seen_indptr,
            self.seen_items,
        )

    def batches(self, batch_size: int, trim: bool = True) -> Iterator[EvalBatch]:
        """Consecutive batches of ``batch_size`` cases; ``trim`` drops columns that are padding in every row."""
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        for start in range(0, len(self), batch_size):
            sl = slice(start, start + batch_size)
            users = self.users[sl]
            seqs = None
            if self.seqs is not None:
                seqs = self.seqs[sl]
                if trim and seqs.shape[1] > 1:
                    nonpad_cols = (seqs != 0).any(0).nonzero()
                    first = int(nonpad_cols[0]) if len(nonpad_cols) else seqs.shape[1] - 1
                    seqs = seqs[:, first:]
            rows, items = _csr_rows(self.seen_indptr, self.seen_items, users)
            yield EvalBatch(UserBatch(users, seqs), self.targets[sl], rows, items)


def eval_data(split: Split, part: str, maxlen: int | None = None) -> EvalData:
    """Evaluation cases for ``part`` (``"valid"`` or ``"test"``) of ``split``.

    Args:
        split: the split.
        part: ``"valid"`` (history = train) or ``"test"`` (history = train + valid).
        maxlen: history length for sequential models, or ``None`` to build no sequences.
    """
    if part not in ("valid", "test"):
        raise ValueError(f"evaluation part must be 'valid' or 'test', got {part!r}")
    target = split.targets(part)
    if len(target) == 0:
        raise ValueError(f"split {split.name!r} has no {part!r} rows to evaluate on")
    if split.case_histories:
        return _case_eval_data(split, part, maxlen)
    ds = split.dataset
    hist = history_frame(split, part)
    indptr, seen = seen_index(hist, ds.n_users, ds.n_items)
    users = target["user"].to_numpy(np.int64)
    targets = target["item"].to_numpy(np.int64)
    hist_len = np.bincount(hist["user"].to_numpy(np.int64), minlength=ds.n_users)[users]
    order = np.argsort(hist_len, kind="stable")
    users, targets = users[order], targets[order]
    seqs = None
    if maxlen is not None:
        all_seqs = pad_left(hist["user"].to_numpy(), hist["item"].to_numpy() + 1, ds.n_users, maxlen)
        seqs = torch.from_numpy(all_seqs[users])
    return EvalData(part, ds.n_items, torch.from_numpy(users), torch.from_numpy(targets), seqs, indptr, seen)


def _case_eval_data(split: Split, part: str, maxlen: int | None) -> EvalData:
    """ReChorus' cases (:attr:`Split.case_histories`): one per target row, read with the user's events before
    it across every part (time order; at equal times train before valid before test, then file order), and
    every item of the user in any part masked except the target."""
    ds = split.dataset
    parts = [split.train, split.valid, split.test]
    target_part = 1 if part == "valid" else 2
    frames = [
        df[["user", "item", "timestamp"]].assign(_part=j, _row=np.arange(len(df)))
        for j, df in enumerate(parts)
    ]
    timeline = pd.concat(frames, ignore_index=True).sort_values(
        ["user", "timestamp", "_part", "_row"], kind="stable"
    )
    users_T = timeline["user"].to_numpy(np.int64)
    items_T = timeline["item"].to_numpy(np.int64)
    is_case = timeline["_part"].to_numpy() == target_part
    case_idx = np.flatnonzero(is_case)  # position of each case in the timeline
    first_T = np.searchsorted(users_T, users_T, side="left")  # start of each row's user block
    users = users_T[case_idx]
    targets = items_T[case_idx]
    hist_len = case_idx - first_T[case_idx]
    order = np.argsort(hist_len, kind="stable")
    users, targets, case_idx = users[order], targets[order], case_idx[order]
    indptr, seen = seen_index(timeline, ds.n_users, ds.n_items)
    seqs = None
    if maxlen is not None:
        if maxlen < 1:
            raise ValueError(f"maxlen must be >= 1, got {maxlen}")
        pos_CL = case_idx[:, None] - maxlen + np.arange(maxlen)[None, :]  # the maxlen events before each case
        ok_CL = pos_CL >= first_T[case_idx][:, None]
        seqs_np = np.where(ok_CL, items_T[np.clip(pos_CL, 0, None)] + 1, 0)
        seqs = torch.from_numpy(seqs_np.astype(np.int64))
    return EvalData(part, ds.n_items, torch.from_numpy(users), torch.from_numpy(targets), seqs, indptr, seen)
