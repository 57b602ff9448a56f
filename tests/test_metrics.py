"""Every metric on hand-computed cases (derivations in comments), plus ties, empty lists, constant columns."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.stats import kendalltau

from recsae_core import metrics as M

# ------------------------------------------------------------------------------------ reconstruction


def test_fvu_hand_case_and_constant_input():
    x = torch.tensor([[1.0, 0.0], [3.0, 0.0]])  # mean (2, 0): total variance 1 + 1 = 2
    assert M.fvu(x, torch.tensor([[1.0, 0.0], [2.0, 0.0]])) == pytest.approx(0.5)  # residual 1
    c = torch.ones(3, 2)
    assert M.fvu(c, c) == 0.0
    assert M.fvu(c, c + 0.1) == math.inf


def test_explained_variance_hand_case_and_constant_dimension():
    # x = (1, 2, 3), x_hat = (1, 2, 2): residual (0, 0, 1) has variance 2/9, x has 2/3 -> 1 - 1/3
    x = np.array([[1.0, 5.0], [2.0, 5.0], [3.0, 5.0]])
    x_hat = np.array([[1.0, 5.0], [2.0, 5.0], [2.0, 5.0]])
    # second dimension constant and reconstructed exactly: scores 1 (sklearn force_finite)
    assert M.explained_variance(x, x_hat) == pytest.approx((2 / 3 + 1.0) / 2)
    x_hat[:, 1] = [5.0, 5.0, 6.0]  # constant dimension with residual variance: scores 0
    assert M.explained_variance(x, x_hat) == pytest.approx((2 / 3 + 0.0) / 2)


def test_reconstruction_stats():
    x = torch.zeros(2, 2)
    xh = torch.tensor([[1.0, -1.0], [0.0, 2.0]])
    s = M.reconstruction_stats(x, xh)
    assert (
        s["mse"] == pytest.approx(6 / 4)
        and s["mae"] == pytest.approx(4 / 4)
        and s["rmse"] == pytest.approx(1.5**0.5)
    )
    with pytest.raises(ValueError, match="same shape"):
        M.fvu(x, torch.zeros(3, 2))


# ------------------------------------------------------------------------------------------- sparsity


def test_sparsity_statistics():
    acts = torch.tensor([[0.0, 1.0, 0.2], [0.0, 0.0, 0.5]])
    assert M.l0(acts).tolist() == [2, 1]
    assert M.l0(acts, threshold=0.3).tolist() == [1, 1]
    assert M.firing_rates(acts).tolist() == [0.0, 0.5, 1.0]
    assert M.dead_fraction(acts) == pytest.approx(1 / 3)
    assert M.active_per_row(acts, (0.0, 0.3, 1.0)) == {0.0: 1.5, 0.3: 1.0, 1.0: 0.0}


# ---------------------------------------------------------------------------- feature x label stats


def test_pearson_perfect_anti_constant_and_reference():
    lab = torch.tensor([0, 1, 0, 1, 1], dtype=torch.bool)
    H = torch.stack([lab.float() * 2 + 1, 1 - lab.float(), torch.full((5,), 3.0)], 1)
    r = M.pearson_matrix(H, lab)
    assert r.shape == (3, 1)
    assert r[:, 0].tolist() == pytest.approx([1.0, -1.0, 0.0])  # constant column -> 0, not NaN
    assert M.pearson_matrix(H, torch.ones(5)).abs().max() == 0  # constant label -> 0
    g = torch.Generator().manual_seed(0)
    H2, G2 = torch.randn(200, 4, generator=g), torch.rand(200, 3, generator=g) > 0.5
    ref = np.corrcoef(H2.T.numpy(), G2.T.numpy().astype(float))[:4, 4:]
    assert np.allclose(M.pearson_matrix(H2, G2, chunk=37).numpy(), ref, atol=1e-10)


def test_roc_auc_hand_cases_ties_and_degenerate_labels():
    # sklearn's docstring example: scores (0.1, 0.4, 0.35, 0.8) for labels (0, 0, 1, 1) -> 0.75
    H = torch.tensor([[0.1, 1.0], [0.4, 1.0], [0.35, 1.0], [0.8, 1.0]])
    G = torch.tensor([[0, 1], [0, 1], [1, 1], [1, 1]], dtype=torch.bool)
    auc = M.roc_auc_matrix(H, G, feature_chunk=1)
    assert auc[0, 0] == pytest.approx(0.75)
    assert auc[1, 0] == pytest.approx(0.5)  # constant feature: all ties
    assert auc[0, 1] == 0.5 and auc[1, 1] == 0.5  # no negatives: undefined, 0.5 by rule
    # partial ties: scores (0, 1, 1, 2), labels (0, 1, 0, 1): pairs (pos, neg) = (1,0)>,(1,1)=,(2,0)>,(2,1)> -> 3.5/4
    assert M.roc_auc_matrix(torch.tensor([[0.0], [1.0], [1.0], [2.0]]), torch.tensor([0, 1, 0, 1]))[
        0, 0
    ] == pytest.approx(0.875)


def test_label_conditional_stats_and_mean_max():
    H = torch.tensor([[0.0, 2.0], [1.0, 0.0], [3.0, 0.0], [0.0, 0.0]])
    G = torch.tensor([[1, 0], [1, 0], [0, 0], [0, 0]], dtype=torch.bool)
    s = M.label_conditional_stats(H, G)
    # feature 0 fires on rows 1, 2; label 0 on rows 0, 1 -> P(fire | g) = 1/2, P(g | fire) = 1/2, E[f | g] = 1/2
    assert (
        s["fraction_fired"][0, 0] == 0.5 and s["precision"][0, 0] == 0.5 and s["mean_activation"][0, 0] == 0.5
    )
    assert (
        s["fraction_fired"][1, 0] == 0.5 and s["precision"][1, 0] == 1.0 and s["mean_activation"][1, 0] == 1.0
    )
    assert s["fraction_fired"][:, 1].tolist() == [0.0, 0.0]  # label never present -> 0
    s2 = M.label_conditional_stats(torch.zeros(4, 1), G)
    assert s2["precision"].abs().max() == 0  # feature never fires -> 0
    vals, arg = M.max_over_features(torch.tensor([[0.1, 0.5], [0.3, 0.2]]))
    assert vals.tolist() == pytest.approx([0.3, 0.5]) and arg.tolist() == [1, 0]
    assert M.mean_max(torch.tensor([[0.1, 0.5], [0.3, 0.2]])) == pytest.approx(0.4)
    assert M.mean_max_correlation(
        torch.tensor([[1.0], [0.0], [1.0]]), torch.tensor([1, 0, 1])
    ) == pytest.approx(1.0)


def test_per_label_summary_and_sampling():
    g = torch.Generator().manual_seed(0)
    G = torch.rand(300, 2, generator=g) > 0.5
    H = torch.stack(
        [
            G[:, 0].float() + 0.1 * torch.randn(300, generator=g),
            torch.randn(300, generator=g),
            G[:, 1].float(),
        ],
        1,
    )
    df = M.per_label_summary(H, G, ["a", "b"])
    assert list(df["label"]) == ["a", "b"] and list(df["best_feature"]) == [0, 2]
    assert df["max_corr"].iloc[1] == pytest.approx(1.0) and df["max_auc"].iloc[1] == pytest.approx(1.0)
    assert df["max_precision"].iloc[1] == pytest.approx(1.0)
    assert df["max_corr"].mean() == pytest.approx(M.mean_max_correlation(H, G))
    sub = M.per_label_summary(H, G, max_rows=100, auc=False)
    assert "max_auc" not in sub and list(sub["label"]) == ["0", "1"]
    idx = M.sample_rows(1000, 10, seed=42)
    assert len(idx) == 10 and torch.equal(idx, M.sample_rows(1000, 10, seed=42)) and (idx.diff() > 0).all()
    assert torch.equal(M.sample_rows(5, 10), torch.arange(5))


# ------------------------------------------------------------------------------------- item level (P3)


def test_top_items_break_ties_by_lower_id_and_purity():
    item_acts = torch.tensor([[0.5, 0.0], [0.9, 1.0], [0.5, 1.0], [0.1, 1.0], [0.0, 0.2]])
    assert M.top_items_per_neuron(item_acts, 3).tolist() == [[1, 0, 2], [1, 2, 3]]
    labels = torch.tensor([[1, 0], [1, 0], [0, 1], [0, 1], [1, 1]], dtype=torch.bool)
    p = M.purity_at_k(item_acts, labels, 2)  # neuron 0 top {1, 0}; neuron 1 top {1, 2}
    assert p.tolist() == [[1.0, 0.0], [0.5, 0.5]]
    with pytest.raises(ValueError, match="k must be"):
        M.purity_at_k(item_acts, labels, 6)


def test_monosemanticity_hand_cases():
    acts = torch.tensor(
        [[1.0], [0.5], [0.0]]
    )  # min-max -> (1, 0.5, 0); top 2 = items 0, 1; R off-diagonal 0.5
    same = torch.tensor([[1.0, 0.0], [2.0, 0.0], [0.0, 1.0]])
    orth = torch.tensor([[1.0, 0.0], [0.0, 3.0], [0.0, 1.0]])
    diag = torch.tensor([[1.0, 0.0], [1.0, 1.0], [0.0, 1.0]])
    assert M.monosemanticity_scores(acts, same, top=2).tolist() == pytest.approx([1.0])
    assert M.monosemanticity_scores(acts, orth, top=2).tolist() == pytest.approx([0.0])
    assert M.monosemanticity_scores(acts, diag, top=2).tolist() == pytest.approx([2**-0.5])
    assert M.monosemanticity_scores(torch.ones(3, 1), same, top=2).tolist() == [0.0]  # constant neuron


def test_popularity_ranks_and_scores():
    counts = torch.tensor([10, 5, 5, 1])
    assert M.popularity_ranks(counts).tolist() == [1.0, 2.5, 2.5, 4.0]
    acts = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.0, 0.9], [0.9, 0.0]])
    assert M.popularity_scores(acts, counts, top=2).tolist() == [2.5, 2.5]  # items {0, 3} and {1, 2}


# ----------------------------------------------------------------------------------------- fidelity


def test_rbo_ceiling_hand_case_padding_and_empty():
    a = torch.arange(30)
    assert M.rbo(a, a).item() == pytest.approx(1 - 0.9**30) == pytest.approx(M.rbo_ceiling())
    assert M.rbo_ceiling() == pytest.approx(0.9576, abs=1e-4)
    assert M.rbo(a, a + 100).item() == 0.0
    # A = (1, 2, 3), B = (1, 3, 2): overlaps 1/1, 1/2, 3/3 -> 0.1 * (1 + 0.9 * 0.5 + 0.81 * 1) = 0.226
    assert M.rbo([[1, 2, 3]], [[1, 3, 2]], depth=3).item() == pytest.approx(0.226)
    # padded short lists: overlaps 1, 1, 2/3 -> 0.1 * (1 + 0.9 + 0.81 * 2/3)
    assert M.rbo([[1, 2, -1]], [[1, 2, -1]], depth=3).item() == pytest.approx(0.1 * (1.9 + 0.54))
    assert M.rbo(torch.zeros(2, 0, dtype=torch.long), torch.zeros(2, 0, dtype=torch.long)).tolist() == [
        0.0,
        0.0,
    ]
    # batched: one row per user
    assert M.rbo([[1, 2, 3], [1, 2, 3]], [[1, 3, 2], [7, 8, 9]], depth=3).tolist() == pytest.approx(
        [0.226, 0.0]
    )


def test_rbo_uses_p_and_depth():
    A, B = [[1, 2, 3]], [[1, 3, 2]]  # overlaps |A_d ∩ B_d| / d = 1, 1/2, 1
    # p = 0.5: 0.5 * (1 + 0.5 * 1/2 + 0.25 * 1) = 0.75; depth 2: 0.5 * (1 + 0.25) = 0.625
    assert M.rbo(A, B, p=0.5, depth=3).item() == pytest.approx(0.75)
    assert M.rbo(A, B, p=0.5, depth=2).item() == pytest.approx(0.625)
    assert M.rbo(A, B, p=0.5).item() == pytest.approx(0.75)  # depth 30 is cut to the lists' length 3
    assert M.rbo(A, B, p=0.9, depth=2).item() == pytest.approx(0.1 * (1 + 0.9 / 2))
    assert M.rbo(A, A, p=0.5, depth=3).item() == pytest.approx(M.rbo_ceiling(0.5, 3)) == pytest.approx(0.875)
    with pytest.raises(ValueError, match=r"p must be in \(0, 1\)"):
        M.rbo(A, B, p=1.0)


def _tau_reference(a: list[int], b: list[int]) -> float:
    union = list(dict.fromkeys(a + b))
    ra = [a.index(i) + 1 if i in a else len(a) + 1 for i in union]
    rb = [b.index(i) + 1 if i in b else len(b) + 1 for i in union]
    return kendalltau(ra, rb).statistic  # tau-b


def test_kendall_tau_matches_scipy_on_the_union():
    rng = np.random.default_rng(0)
    A, B = [], []
    for _ in range(20):
        pool = rng.permutation(40)
        A.append(pool[:10].tolist())
        B.append(rng.permutation(np.concatenate([pool[:6], pool[20:24]])).tolist())
    got = M.kendall_tau_union(A, B, depth=None)
    ref = [_tau_reference(a, b) for a, b in zip(A, B, strict=True)]
    assert got.numpy() == pytest.approx(np.array(ref), abs=1e-12)


def test_kendall_tau_identical_reversed_disjoint_and_degenerate():
    assert M.kendall_tau_union([[1, 2, 3]], [[1, 2, 3]]).item() == pytest.approx(1.0)
    assert M.kendall_tau_union([[1, 2, 3]], [[3, 2, 1]]).item() == pytest.approx(
        _tau_reference([1, 2, 3], [3, 2, 1])
    )
    assert M.kendall_tau_union([[1]], [[2]]).item() == pytest.approx(-1.0)  # ranks (1, 2) vs (2, 1)
    assert M.kendall_tau_union([[5]], [[5]]).item() == 1.0  # a 1-item union: undefined, identical -> 1
    assert M.kendall_tau_union([[-1, -1]], [[-1, -1]]).item() == 1.0  # two empty (padded) lists
    assert M.kendall_tau_union([[-1, -1]], [[4, 5]]).item() == 0.0  # A ranks every item the same -> 0
    assert (
        M.kendall_tau_union(torch.zeros(3, 0, dtype=torch.long), torch.zeros(3, 0, dtype=torch.long)).tolist()
        == [1.0] * 3
    )


# ------------------------------------------------------------------------------------ P2 confidence


def test_confidence_score_rules():
    # test cases: 6, 7, 9 > 5 (3 hits); -5 is out of range -> -1. random: 1, 2 <= 5; 11 and NaN -> -1 <= 5; 8 miss
    c = M.confidence_scores([[6, 7, 3, 9, -5]], [[1, 2, 8, 11, float("nan")]])
    assert c.recall.tolist() == [0.6] and c.precision.tolist() == [0.8] and c.confidence.tolist() == [0.7]
    assert M.confidence_scores([5, 5], [6, 6]).confidence.tolist() == [0.0]  # 5 is not "> 5"
    with pytest.raises(ValueError, match="n > 0"):
        M.confidence_scores(torch.zeros(1, 0), torch.zeros(1, 3))


# ---------------------------------------------------------------------------------- steering outcomes


def test_top_k_items_masks_seen():
    s = torch.tensor([[0.1, 0.9, 0.5, 0.7], [1.0, 0.0, 0.2, 0.3]])
    assert M.top_k_items(s, 2).tolist() == [[1, 3], [0, 3]]
    mask = torch.tensor([[False, True, False, False], [False, False, False, False]])
    assert M.top_k_items(s, 2, mask).tolist() == [[3, 2], [0, 3]]
    assert M.top_k_items(s, 2, (torch.tensor([1]), torch.tensor([0]))).tolist() == [[1, 3], [3, 2]]
    assert s[0, 1] == 0.9  # input untouched


def test_label_share_coverage_and_diversity():
    top = torch.tensor([[1, 2], [1, 3], [4, 5]])
    labels = torch.tensor([False, True, False, True, False, False])
    # user shares: (1/2, 2/2, 0) -> mean 1/2
    assert M.label_share(top, labels).item() == pytest.approx(0.5)
    two = torch.stack([labels, ~labels], 1)
    assert M.label_share(top, two).tolist() == pytest.approx([0.5, 0.5])
    assert M.coverage(top, 10) == pytest.approx(0.5)  # {1, 2, 3, 4, 5}
    # pair overlaps 1, 0, 0 -> mean 1/3 of K = 2 -> 1 - 1/6
    assert M.inter_list_diversity(top) == pytest.approx(5 / 6)
    assert M.inter_list_diversity(top[:1]) == 0.0
    assert M.inter_list_diversity(torch.tensor([[1, 2], [1, 2]])) == 0.0
    with pytest.raises(ValueError, match="non-empty"):
        M.label_share(torch.zeros(0, 2, dtype=torch.long), labels)
