"""Full-ranking metrics (hand-computed cases, ties, masking) and the batching they rely on."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch

from recsae_core.batching import eval_data, history_frame, pad_left, seen_index, train_pairs, train_sequences
from recsae_core.data.dataset import RecDataset, Split
from recsae_core.evaluate import evaluate, evaluate_scores_fn, rank_metrics, target_ranks
from recsae_core.models.base import UserBatch
from recsae_core.models.popularity import Popularity


def tiny_split(timestamps: bool = True) -> Split:
    """3 users, 4 items. Train: u0 [0, 1], u1 [0, 2], u2 [1]; valid: u0→2, u1→3, u2→0; test: u0→3, u1→1, u2→2.

    Timestamps make u0's train order 1 then 0 (rows given out of time order on purpose).
    """
    n_items = 4
    cols = ["user", "item", "rating", "timestamp"]
    train = pd.DataFrame(
        [[0, 0, 1.0, 20], [0, 1, 1.0, 10], [1, 0, 1.0, 5], [1, 2, 1.0, 6], [2, 1, 1.0, 1]], columns=cols
    )
    valid = pd.DataFrame([[0, 2, 1.0, 30], [1, 3, 1.0, 30], [2, 0, 1.0, 30]], columns=cols)
    test = pd.DataFrame([[0, 3, 1.0, 40], [1, 1, 1.0, 40], [2, 2, 1.0, 40]], columns=cols)
    if not timestamps:
        train, valid, test = (f.drop(columns="timestamp") for f in (train, valid, test))
    inter = pd.concat([train, valid, test], ignore_index=True)
    for f in (inter, train, valid, test):
        f["rating"] = f["rating"].astype(np.float32)
    ds = RecDataset(
        "tiny",
        inter,
        pd.DataFrame({"item_id": np.arange(n_items), "title": list("abcd")}),
        np.zeros((n_items, 0), dtype=bool),
        [],
        pd.DataFrame({"user_id": np.arange(3)}),
    )
    return Split("tiny-loo", ds, train, valid, test)


# ------------------------------------------------------------------------------------ rank_metrics


def test_rank_metrics_single_row_hand_computed():
    scores = torch.tensor([[0.1, 0.5, 0.3, 0.9]])
    # target item 2 (0.3): items 1 (0.5) and 3 (0.9) score higher -> 0-based rank 2, 1-based 3
    m = rank_metrics(scores, torch.tensor([2]), ks=(1, 2, 3))
    assert m["hr@2"] == 0.0 and m["hr@3"] == 1.0
    assert m["ndcg@3"] == pytest.approx(1 / math.log2(4))  # = 0.5
    assert m["mrr@3"] == pytest.approx(1 / 3)
    assert m["ndcg@2"] == 0.0 and m["mrr@2"] == 0.0
    # top-1 list is {3}, top-3 {3, 1, 2}: coverage over 4 items
    assert m["coverage@1"] == 0.25 and m["coverage@3"] == 0.75
    assert m["n_cases"] == 1


def test_rank_metrics_masking_seen_items_moves_target_up():
    scores = torch.tensor([[0.1, 0.5, 0.3, 0.9]])
    mask = torch.tensor([[False, False, False, True]])  # item 3 (0.9) was seen
    m = rank_metrics(scores, torch.tensor([2]), mask, ks=(1, 2))
    # only item 1 beats the target now: rank 1 (1-based 2)
    assert m["hr@1"] == 0.0 and m["hr@2"] == 1.0
    assert m["ndcg@2"] == pytest.approx(1 / math.log2(3))
    assert m["mrr@2"] == pytest.approx(0.5)
    # the same with the flat (rows, items) index form
    m2 = rank_metrics(scores, torch.tensor([2]), (torch.tensor([0]), torch.tensor([3])), ks=(1, 2))
    assert m2 == m
    # the caller's scores are untouched
    assert scores[0, 3] == pytest.approx(0.9)


def test_rank_metrics_ties_optimistic_vs_pessimistic():
    scores = torch.tensor([[0.5, 0.5, 0.5, 0.1]])
    target = torch.tensor([1])
    opt = rank_metrics(scores, target, ks=(1, 3))
    pes = rank_metrics(scores, target, ks=(1, 3), ties="pessimistic")
    # optimistic: nothing strictly higher -> rank 0
    assert opt["hr@1"] == 1.0 and opt["ndcg@1"] == 1.0 and opt["mrr@1"] == 1.0
    # pessimistic (ReChorus >=): items 0 and 2 tie with the target -> rank 2 (1-based 3)
    assert pes["hr@1"] == 0.0 and pes["hr@3"] == 1.0
    assert pes["ndcg@3"] == pytest.approx(0.5) and pes["mrr@3"] == pytest.approx(1 / 3)
    assert target_ranks(scores, target).tolist() == [0]
    assert target_ranks(scores, target, "pessimistic").tolist() == [2]


def test_rank_metrics_batch_mean_and_target_never_masked():
    scores = torch.tensor([[0.9, 0.1, 0.2], [0.3, 0.2, 0.1]])
    targets = torch.tensor([0, 2])
    # row 0: the target itself is in the seen mask -> still ranked (rank 0); row 1: items 0, 1 higher -> rank 2
    mask = torch.tensor([[True, False, False], [False, False, False]])
    m = rank_metrics(scores, targets, mask, ks=(1, 3))
    assert m["hr@1"] == pytest.approx(0.5)
    assert m["ndcg@3"] == pytest.approx((1.0 + 1 / math.log2(4)) / 2)
    assert m["mrr@3"] == pytest.approx((1.0 + 1 / 3) / 2)
    # masked item 0 in row 0 is the target, so top-1 of row 0 is item 0, of row 1 item 0 -> coverage 1/3
    assert m["coverage@1"] == pytest.approx(1 / 3)


def test_rank_metrics_masked_items_cannot_outrank():
    scores = torch.tensor([[5.0, 4.0, 3.0, 0.0]])
    m = rank_metrics(scores, torch.tensor([3]), torch.tensor([[True, True, True, False]]), ks=(1,))
    assert m["hr@1"] == 1.0


def test_rank_metrics_rejects_bad_input():
    with pytest.raises(ValueError, match="NaN"):
        rank_metrics(torch.tensor([[float("nan"), 1.0]]), torch.tensor([0]))
    with pytest.raises(ValueError, match="ties"):
        rank_metrics(torch.tensor([[0.0, 1.0]]), torch.tensor([0]), ties="random")
    with pytest.raises(ValueError, match="ks"):
        rank_metrics(torch.tensor([[0.0, 1.0]]), torch.tensor([0]), ks=(0,))
    with pytest.raises(ValueError, match=r"expected scores \(B, I\)"):
        rank_metrics(torch.tensor([0.0, 1.0]), torch.tensor([0]))


# ------------------------------------------------------------------------------------ batching


def test_pad_left_keeps_last_values_left_padded():
    groups = np.array([0, 0, 0, 1, 3, 3])
    values = np.array([1, 2, 3, 4, 5, 6])
    out = pad_left(groups, values, n_groups=4, maxlen=2)
    assert out.tolist() == [[2, 3], [0, 4], [0, 0], [5, 6]]
    with pytest.raises(ValueError, match="sorted"):
        pad_left(np.array([1, 0]), np.array([1, 2]), 2, 2)


def test_histories_are_time_ordered_and_test_includes_valid():
    split = tiny_split()
    hist = history_frame(split, "test")
    # u0: train rows at t=10 (item 1), t=20 (item 0), then valid t=30 (item 2)
    assert hist[hist.user == 0]["item"].tolist() == [1, 0, 2]
    data = eval_data(split, "test", maxlen=4)
    by_user = {
        int(u): (int(t), s.tolist()) for u, t, s in zip(data.users, data.targets, data.seqs, strict=True)
    }
    assert by_user[0] == (3, [0, 2, 1, 3])  # items + 1, left-padded
    assert by_user[2] == (2, [0, 0, 2, 1])
    valid = eval_data(split, "valid", maxlen=4)
    assert {int(u): s.tolist() for u, s in zip(valid.users, valid.seqs, strict=True)}[0] == [0, 0, 2, 1]


def test_case_histories_read_each_row_with_its_own_past_and_mask_every_part():
    """ReChorus' rule (P2's temporal split): u0 has two test rows; the second is read after the first, and
    every item u0 has anywhere is masked except the case's target."""
    split = tiny_split()
    cols = ["user", "item", "rating", "timestamp"]
    extra = pd.DataFrame([[0, 1, 1.0, 45]], columns=cols).astype({"rating": np.float32})
    split = Split(
        "tiny-cases", split.dataset, split.train, split.valid,
        pd.concat([split.test, extra], ignore_index=True), case_histories=True,
    )  # fmt: skip
    data = eval_data(split, "test", maxlen=5)
    cases = sorted(
        (int(u), int(t), s.tolist()) for u, t, s in zip(data.users, data.targets, data.seqs, strict=True)
    )
    # u0 in time: 1 (t10), 0 (t20), 2 (valid t30), 3 (test t40), 1 (test t45); items + 1, left-padded
    assert cases[:2] == [(0, 1, [0, 2, 1, 3, 4]), (0, 3, [0, 0, 2, 1, 3])]
    assert (2, 2, [0, 0, 0, 2, 1]) in cases
    (batch,) = list(data.batches(10, trim=False))
    rows, items = batch.seen_rows.tolist(), batch.seen_items.tolist()
    masked = {(int(batch.batch.users[r]), int(batch.targets[r]), i) for r, i in zip(rows, items, strict=True)}
    # u0's cases mask {0, 1, 2, 3}: every part (mask_seen restores the target), later test rows included
    assert {i for u, t, i in masked if u == 0 and t == 3} == {0, 1, 2, 3}
    pop = Popularity(3, 4).fit_counts(torch.tensor([3, 3, 3, 2, 2, 1]))  # scores 0, 1, 2, 3
    # cases: u0→3 and u0→1 and u1→1 rank first (all else masked); u2→2 is beaten by the unseen item 3
    assert evaluate(pop, split, "test", ks=(1,))["hr@1"] == pytest.approx(3 / 4)
    # one history per user (the default rule): u0→1 now also competes with its other test item 3
    per_user = Split("tiny-users", split.dataset, split.train, split.valid, split.test)
    assert evaluate(pop, per_user, "test", ks=(1,))["hr@1"] == pytest.approx(2 / 4)
    valid = eval_data(split, "valid", maxlen=5)
    assert {int(u): s.tolist() for u, s in zip(valid.users, valid.seqs, strict=True)}[0] == [0, 0, 0, 2, 1]


def test_train_sequences_inputs_and_shifted_labels():
    seqs = train_sequences(tiny_split(), maxlen=3)
    # u2 has one training item -> no label -> dropped
    assert seqs.users.tolist() == [0, 1]
    # u0 in time order: items 1, 0 -> input [pad, pad, 1+1], label [pad, pad, 0+1]
    assert seqs.inputs[0].tolist() == [0, 0, 2] and seqs.labels[0].tolist() == [0, 0, 1]
    assert seqs.lengths.tolist() == [1, 1]


def test_train_sequences_all_windows_label_every_interaction_once():
    """ReChorus trains on every interaction: with maxlen 2, u0's 5 training items (in time 1, 0, 2, 3, 1)
    become windows [1, 0, 2] and [2, 3, 1] (shown as items; stored + 1), labels 0, 2, 3, 1 once each."""
    split = tiny_split()
    cols = ["user", "item", "rating", "timestamp"]
    more = pd.DataFrame([[0, 2, 1.0, 21], [0, 3, 1.0, 22], [0, 1, 1.0, 23]], columns=cols)
    split = Split(
        "more", split.dataset, pd.concat([split.train, more], ignore_index=True), split.valid, split.test
    )
    last = train_sequences(split, maxlen=2)
    assert last.inputs[last.users == 0].tolist() == [[3, 4]]  # only the last 3 items: labels 3, 1
    seqs = train_sequences(split, maxlen=2, windows="all")
    got = sorted(zip(seqs.users.tolist(), seqs.inputs.tolist(), seqs.labels.tolist(), strict=True))
    assert got == [(0, [2, 1], [1, 3]), (0, [3, 4], [4, 2]), (1, [0, 1], [0, 3])]
    assert int(seqs.lengths[seqs.users == 0].sum()) == 4  # every item after the first, once
    assert seqs.lengths[seqs.users == 1].tolist() == [1]  # u1: [0, 2] -> one label
    with pytest.raises(ValueError, match="windows"):
        train_sequences(split, maxlen=2, windows="some")


def test_seen_index_and_batches_trim_and_mask_rows():
    split = tiny_split()
    indptr, items = seen_index(split.train, 3, 4)
    assert indptr.tolist() == [0, 2, 4, 5] and items.tolist() == [0, 1, 0, 2, 1]
    data = eval_data(split, "valid", maxlen=6)
    batches = list(data.batches(2))
    assert [len(b.targets) for b in batches] == [2, 1]
    first = batches[0]
    assert first.batch.seqs.shape[1] == 2  # trimmed to the longest history in the batch
    rows_items = sorted(zip(first.seen_rows.tolist(), first.seen_items.tolist(), strict=True))
    expect = sorted(
        (r, i) for r, u in enumerate(first.batch.users.tolist()) for i in {0: [0, 1], 1: [0, 2], 2: [1]}[u]
    )
    assert rows_items == expect
    users, pitems = train_pairs(split)
    assert list(zip(users.tolist(), pitems.tolist(), strict=True)) == [(0, 0), (0, 1), (1, 0), (1, 2), (2, 1)]


# ------------------------------------------------------------------------------------ evaluate


def test_evaluate_popularity_hand_computed():
    split = tiny_split()
    pop = Popularity(3, 4).fit_counts(torch.from_numpy(train_pairs(split)[1]))  # counts [2, 2, 1, 0]
    m = evaluate(pop, split, "valid", ks=(1, 2))
    # u0 seen {0,1}: target 2 (1) vs item 3 (0) -> rank 0
    # u1 seen {0,2}: target 3 (0) vs item 1 (2) -> rank 1
    # u2 seen {1}:   target 0 (2) is the best unseen -> rank 0
    assert m["hr@1"] == pytest.approx(2 / 3)
    assert m["ndcg@2"] == pytest.approx((1 + 1 / math.log2(3) + 1) / 3)
    assert m["mrr@2"] == pytest.approx((1 + 0.5 + 1) / 3)
    # top-1 lists: u0 -> 2, u1 -> 1, u2 -> 0
    assert m["coverage@1"] == pytest.approx(3 / 4)
    # pessimistic ties: u2 target 0 (2) vs unseen items 2 (1), 3 (0) -> no tie, unchanged
    assert evaluate(pop, split, "valid", ks=(1, 2), ties="pessimistic") == m
    # test part: u0 seen {0,1,2}, target 3 (0) -> rank 0; u1 seen {0,2,3}, target 1 -> rank 0;
    # u2 seen {0,1}, target 2 (1) vs item 3 (0) -> rank 0
    assert evaluate(pop, split, "test", ks=(1,))["hr@1"] == 1.0


def test_evaluate_scores_fn_passes_left_padded_histories():
    split = tiny_split()
    seen_batches = []

    # a "next item" rule keyed on the item in the last column: 0 -> 2, 2 -> 3, 1 -> 0 (the valid targets
    # of u0, u1, u2 when the last column is the most recent item), over a base score 0.1 * item (no ties)
    nxt = torch.tensor([2, 0, 3, 3])

    def score_fn(batch: UserBatch) -> torch.Tensor:
        seen_batches.append(batch)
        scores = 0.1 * torch.arange(4.0).repeat(len(batch.users), 1)
        scores[torch.arange(len(batch.users)), nxt[batch.seqs[:, -1] - 1]] += 1.0
        return scores

    m = evaluate_scores_fn(score_fn, split, "valid", ks=(1,), maxlen=5, batch_size=2)
    assert all(b.seqs is not None and b.seqs.shape[0] == len(b.users) for b in seen_batches)
    # histories in time order, most recent last: u0 [1, 0], u1 [0, 2], u2 [1] -> every target ranks first.
    # With u0's history in row order ([0, 1]) its rule gives item 0 (seen): target 2 (0.2) < item 3 (0.3).
    assert m["hr@1"] == 1.0
    assert evaluate_scores_fn(score_fn, split, "valid", ks=(1,), maxlen=5, ties="pessimistic")["hr@1"] == 1.0
    rows = {int(u): q.tolist() for b in seen_batches[:2] for u, q in zip(b.users, b.seqs, strict=True)}
    assert rows == {0: [2, 1], 1: [1, 3], 2: [0, 2]}  # items + 1, left-padded, trimmed to the batch
    with pytest.raises(ValueError, match="part"):
        evaluate_scores_fn(score_fn, split, "train", maxlen=5)


def test_evaluate_checks_score_shape():
    with pytest.raises(ValueError, match="shape"):
        evaluate_scores_fn(lambda b: torch.zeros(len(b.users), 3), tiny_split(), "valid")
