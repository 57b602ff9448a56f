"""The fused training kernels against the modules' autograd forward: same losses, same gradients."""

from __future__ import annotations

import copy

import pytest
import torch

import recsae_core.sae as S
from recsae_core.sae import kernels as K
from recsae_core.sae.trainer import TwoTowerBatch, _step_loss

D, MLAT, N = 12, 40, 96


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


CASES = {
    "relu_l1": {"architecture": "relu_l1"},
    "relu_l1_unsquared": {"architecture": "relu_l1", "recon": "unsquared", "input_norm": "none"},
    "topk": {"architecture": "topk", "k": 5},
    "topk_aux": {"architecture": "topk", "k": 5, "aux_k": 6},
    "batch_topk_chunked": {"architecture": "batch_topk", "k": 3},
    "batch_topk_flat": {"architecture": "batch_topk", "k": 3, "selection": "flat"},
    "batch_topk_two_stage": {"architecture": "batch_topk", "k": 3, "selection": "two_stage"},
    "p3": {"architecture": "p3", "beta": 0.0, "l1_coeff": 0.1, "kl_coeff": 0.01},
    "p3_untied_rows": {"architecture": "p3", "beta": 0.0, "tied": False, "normalize_rows": True},
    "p3_no_prebias": {"architecture": "p3", "beta": 0.0, "pre_bias": False, "l1_coeff": 0.2},
    "matryoshka": {"architecture": "matryoshka", "beta": 0.0, "prefixes": (10, 20, MLAT)},
}


def sae_for(case: str) -> S.SparseAutoencoder:
    torch.manual_seed(0)
    sae = S.from_config({"d_in": D, "n_latents": MLAT, **CASES[case]}).train()
    with torch.no_grad():
        sae.b_enc.normal_(0, 0.2)
        if isinstance(sae.b_dec, torch.nn.Parameter):
            sae.b_dec.normal_(0, 0.2)
    if sae.has_input_norm:
        sae.set_input_normalization(0.3, 1.7)
    return sae


def grads_of(sae, batch, dead, fused, scorer=None):
    s = copy.deepcopy(sae)
    out = _step_loss(s, batch, dead, scorer, fused, K.Workspace())
    out.loss.backward()
    return out, {n: p.grad.clone() for n, p in s.named_parameters()}


@pytest.mark.parametrize("case", list(CASES))
def test_fused_kernel_matches_autograd_reference(case):
    sae = sae_for(case)
    x = torch.randn(N, D, generator=torch.Generator().manual_seed(1)) * 2 + 0.5
    dead = torch.arange(0, MLAT, 4) if "topk" in case else None
    assert_same_step(*grads_of(sae, x, dead, fused=True), *grads_of(sae, x, dead, fused=False))


def assert_same_step(got, g_got, ref, g_ref):
    """The fused step ``got`` against the autograd reference ``ref``: loss, terms, gradients, bookkeeping."""
    assert float(got.loss.detach()) == pytest.approx(float(ref.loss.detach()), rel=1e-5)
    assert set(got.terms) == set(ref.terms)
    for name, v in ref.terms.items():
        assert float(got.terms[name].detach()) == pytest.approx(float(v.detach()), rel=1e-5, abs=1e-7), name
    assert set(g_got) == set(g_ref)
    for name, g in g_ref.items():
        scale = float(g.abs().max()) + 1e-12
        assert float((g_got[name] - g).abs().max()) <= 1e-4 * scale, name
    assert torch.equal(got.fwd.fired_M, ref.fwd.fired_M)
    assert int(got.fwd.n_active if got.fwd.n_active is not None else (got.fwd.acts_NM > 0).sum()) == int(
        ref.fwd.n_active
    )


def test_p3_prediction_loss_gradients_match_through_the_scorer():
    sae = sae_for("p3")
    sae.cfg.beta = 1.0
    g = torch.Generator().manual_seed(2)
    batch = TwoTowerBatch(
        torch.randn(16, D, generator=g),
        torch.randn(20, D, generator=g),
        torch.arange(16),
        torch.arange(20),
        False,
    )
    scorer = S.dot_product_scorer()
    ref, g_ref = grads_of(sae, batch, None, False, scorer)
    got, g_got = grads_of(sae, batch, None, True, scorer)
    assert float(got.terms["pred"].detach()) == pytest.approx(float(ref.terms["pred"].detach()), rel=1e-5)
    for name, gr in g_ref.items():
        assert torch.allclose(g_got[name], gr, rtol=1e-4, atol=1e-6), name


def _two_tower_case(model_kind: str, pairwise: bool, n_users: int = 24, n_items: int = 30):
    from recsae_core.models.twotower import MF, NCF, MFConfig, NCFConfig

    torch.manual_seed(5)
    model = MF(40, 50, MFConfig(d=D)) if model_kind == "mf" else NCF(40, 50, NCFConfig(d=D, hidden=(16, 8)))
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.5)
    g = torch.Generator().manual_seed(6)
    n_items = n_users if pairwise else n_items
    batch = TwoTowerBatch(
        torch.randn(n_users, D, generator=g) * 1.5 + 0.3,
        torch.rand(n_items, D, generator=g) * 2,
        torch.randint(0, 40, (n_users,), generator=g),
        torch.randint(0, 50, (n_items,), generator=g),
        pairwise,
    )
    return S.two_tower_scorer(model, pairwise=pairwise), batch


P3_STEP_CASES = {
    # P3's ML-1M MF SAE: all user x item pairs of the batch, MSE on logits, per-row standardisation
    "mf_all_pairs": ("mf", False, {"normalize_rows": True, "alpha": 0.1, "beta": 1.0, "kl_coeff": 0.01}),
    # P3's ML-1M NCF SAE: matched pairs through the MLP, BCE against soft targets, no pre-bias
    "ncf_bce": (
        "ncf",
        True,
        {"pre_bias": False, "alpha": 2.0, "beta": 10.0, "kl_coeff": 0.07, "pred_loss": "bce"},
    ),
    "ncf_mse_prob_l1": (
        "ncf",
        True,
        {"pre_bias": False, "l1_coeff": 0.3, "pred_loss": "mse_prob", "rho": 0.1},
    ),
    "untied_rows_l1": ("mf", False, {"tied": False, "normalize_rows": True, "l1_coeff": 0.2, "beta": 2.0}),
    "mf_pairwise": ("mf", True, {"normalize_rows": True, "beta": 3.0}),  # closed-form L_pred, matched pairs
    "mf_bce": ("mf", False, {"pred_loss": "bce", "beta": 2.0}),  # MF's biases matter: through autograd
    "beta_zero": ("mf", False, {"beta": 0.0, "l1_coeff": 0.1}),
    "kl_only_saturated": ("mf", False, {"beta": 0.5, "kl_coeff": 1.0, "rho": 0.5}),
}


@pytest.mark.parametrize("case", list(P3_STEP_CASES))
def test_p3_hand_written_step_matches_autograd(case):
    """The fused P3 step on user/item batches (gradients by hand, the scorer through autograd) against the
    autograd graph: same loss, terms, gradients and bookkeeping, for every P3 loss variant."""
    kind, pairwise, fields = P3_STEP_CASES[case]
    scorer, batch = _two_tower_case(kind, pairwise)
    torch.manual_seed(0)
    sae = S.from_config({"architecture": "p3", "d_in": D, "n_latents": MLAT, **fields}).train()
    with torch.no_grad():
        sae.b_enc.normal_(0, 0.3)
        sae.b_dec.normal_(0, 0.2)
        if case == "kl_only_saturated":  # some latents never fire, some always: rho_hat clamped both ways
            sae.b_enc[:5] = -50.0
            sae.b_enc[5:10] = 50.0
    got, g_got = grads_of(sae, batch, None, True, scorer)
    assert "HandGrads" in type(got.loss.grad_fn).__name__  # the hand-written step ran
    assert_same_step(got, g_got, *grads_of(sae, batch, None, False, scorer))


def test_p3_hand_written_step_trains_like_autograd():
    """A few hundred steps of the trainer with the hand-written P3 step and with autograd end close."""
    scorer, batch = _two_tower_case("mf", False)
    data = S.TwoTowerData(batch.user_emb, batch.item_emb)
    cfg = {"architecture": "p3", "d_in": D, "n_latents": MLAT, "normalize_rows": True}
    runs = [
        S.train_sae(
            cfg,
            data,
            S.TrainConfig(steps=300, batch_size=16, lr=1e-3, warmup_steps=0, fused=f),
            scorer=scorer,
            progress=False,
        )
        for f in (True, False)
    ]
    for a, b in zip(runs[0].sae.parameters(), runs[1].sae.parameters(), strict=True):
        assert torch.allclose(a, b, rtol=1e-3, atol=1e-4)
    assert runs[0].history[-1]["loss"] == pytest.approx(runs[1].history[-1]["loss"], rel=1e-3)


@pytest.mark.parametrize("bounds", [(MLAT,), (8, 24, MLAT)])
def test_dense_kernel_input_gradient(bounds):
    torch.manual_seed(3)
    W_enc, W_dec = torch.randn(MLAT, D, requires_grad=True), torch.randn(MLAT, D, requires_grad=True)
    b_enc, b_dec = torch.randn(MLAT, requires_grad=True), torch.randn(D, requires_grad=True)
    x = torch.randn(N, D, requires_grad=True)
    w = torch.randn(len(bounds), N, D)
    xhat, colsum, acts = K.dense_relu_sae(x, W_enc, b_enc, W_dec, b_dec, bounds, K.Workspace())
    ((xhat * w).sum() + colsum.pow(2).sum()).backward()
    got = [t.grad.clone() for t in (x, W_enc, b_enc, W_dec, b_dec)]
    for t in (x, W_enc, b_enc, W_dec, b_dec):
        t.grad = None
    f = torch.relu((x - b_dec) @ W_enc.T + b_enc)
    starts = (0, *bounds[:-1])
    levels = (
        torch.stack([f[:, s:e] @ W_dec[s:e] for s, e in zip(starts, bounds, strict=True)]).cumsum(0) + b_dec
    )
    ((levels * w).sum() + f.sum(0).pow(2).sum()).backward()
    assert torch.allclose(acts, f.detach(), atol=1e-5)
    for a, t in zip(got, (x, W_enc, b_enc, W_dec, b_dec), strict=True):
        assert torch.allclose(a, t.grad, rtol=1e-4, atol=1e-4)


def test_sparse_kernel_input_gradient_and_aux():
    torch.manual_seed(4)
    W_enc, W_dec = torch.randn(MLAT, D, requires_grad=True), torch.randn(MLAT, D, requires_grad=True)
    b_enc, b_dec = torch.randn(MLAT, requires_grad=True), torch.randn(D, requires_grad=True)
    x = torch.randn(N, D, requires_grad=True)
    dead = torch.tensor([1, 5, 9, 30])
    w1, w2 = torch.randn(N, D), torch.randn(N, D)
    xhat, aux, _crow, col, val = K.sparse_sae(
        x, W_enc, b_enc, W_dec, b_dec, lambda p: K.select_topk(p, 6), K.Workspace(), dead, 2
    )
    ((xhat * w1).sum() + (aux * w2).sum()).backward()
    got = [t.grad.clone() for t in (x, W_enc, b_enc, W_dec, b_dec)]
    for t in (x, W_enc, b_enc, W_dec, b_dec):
        t.grad = None
    pre = (x - b_dec) @ W_enc.T + b_enc
    v, i = pre.topk(6, dim=1)
    acts = torch.zeros_like(pre).scatter(1, i, torch.relu(v))
    av, ai = pre[:, dead].topk(2, dim=1)
    aux_acts = torch.zeros_like(pre).scatter(1, dead[ai], torch.relu(av))
    ((acts @ W_dec + b_dec) * w1).sum().add((aux_acts @ W_dec * w2).sum()).backward()
    assert val.shape == (N * 6,) and col.shape == (N * 6,)
    for a, t in zip(got, (x, W_enc, b_enc, W_dec, b_dec), strict=True):
        assert torch.allclose(a, t.grad, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize(
    ("n", "m", "k", "ties"), [(64, 256, 4, False), (50, 96, 3, True), (7, 24, 5, False), (33, 30, 2, False)]
)
def test_chunked_batch_topk_selection_is_exact(n, m, k, ties):
    g = torch.Generator().manual_seed(n * m + k)
    pre = torch.randint(-3, 4, (n, m), generator=g).float() if ties else torch.randn(n, m, generator=g)
    crow, col, val = K.select_batch_topk(pre, k)
    ref_vals = torch.relu(pre).reshape(-1).topk(k * n).values
    assert torch.equal(val.sort().values, ref_vals.sort().values)
    assert crow[0] == 0 and crow[-1] == k * n and (crow.diff() >= 0).all()
    rows = torch.repeat_interleave(torch.arange(n), crow.diff())
    assert torch.equal(val, torch.relu(pre[rows, col]))
    assert len(set(zip(rows.tolist(), col.tolist(), strict=True))) == k * n  # no entry chosen twice
    f_crow, _f_col, f_val = K.select_batch_topk_flat(pre, k)
    assert f_crow[-1] == k * n and torch.equal(f_val.sort().values, ref_vals.sort().values)


def test_two_stage_selection_is_exact_and_falls_back_when_a_row_saturates():
    g = torch.Generator().manual_seed(7)
    pre = torch.randn(40, 64, generator=g)
    ref = torch.relu(pre).reshape(-1).topk(3 * 40).values.sort().values
    assert torch.equal(K.select_batch_topk_two_stage(pre, 3)[2].sort().values, ref)
    pre[5] += 100.0  # row 5 holds more than 4k = 12 of the batch's top 120 entries: must fall back
    crow, _col, val = K.select_batch_topk_two_stage(pre, 3)
    assert int(crow[6] - crow[5]) == 64  # the whole row is selected, as the flat topk does
    assert torch.equal(val.sort().values, torch.relu(pre).reshape(-1).topk(120).values.sort().values)


def test_topk_selection_is_row_compressed():
    pre = torch.randn(9, 20, generator=torch.Generator().manual_seed(2))
    crow, col, val = K.select_topk(pre, 3)
    assert crow.tolist() == list(range(0, 28, 3))
    assert torch.equal(col.view(9, 3).sort(1).values, pre.topk(3, dim=1).indices.sort(1).values)
    assert (val >= 0).all()


SELECTIONS = {
    "topk": K.select_topk,
    "batch_topk_chunked": K.select_batch_topk,
    "batch_topk_flat": K.select_batch_topk_flat,
    "batch_topk_two_stage": K.select_batch_topk_two_stage,
}


@pytest.mark.parametrize("name", list(SELECTIONS))
def test_selections_never_keep_a_negative_pre_activation(name):
    """All but 2 latents strongly negative: every row's top k = 5 holds negative entries, kept as 0."""
    pre = torch.randn(16, MLAT, generator=torch.Generator().manual_seed(5))
    pre[:, 2:] -= 10.0
    crow, col, val = SELECTIONS[name](pre, 5)
    rows = torch.repeat_interleave(torch.arange(16), crow.diff())
    assert len(val) == 5 * 16 and (pre[rows, col] < 0).sum() >= 3 * 16  # negatives were selected ...
    assert (val >= 0).all() and torch.equal(val, pre[rows, col].clamp_min(0))  # ... and zeroed


@pytest.mark.parametrize("case", ["topk", "batch_topk_chunked"])
def test_fused_step_with_negative_pre_activations_matches_relu_of_the_top_k(case):
    """The fused TopK step on an SAE whose biases are mostly -10 reconstructs from ReLU'd activations
    only: its x_hat and its fired latents equal those of the activations computed by hand."""
    sae = sae_for(case)
    with torch.no_grad():
        sae.b_enc[2:] = -10.0
    x = torch.randn(N, D, generator=torch.Generator().manual_seed(6))
    out = _step_loss(sae, x, None, None, True, K.Workspace())
    with torch.no_grad():
        pre = (x - sae.b_dec) @ sae.W_enc.T + sae.b_enc
        k = sae.cfg.k
        if case == "topk":
            keep = torch.zeros_like(pre, dtype=torch.bool).scatter(1, pre.topk(k, dim=1).indices, True)
        else:
            keep = torch.zeros(pre.numel(), dtype=torch.bool)
            keep[pre.reshape(-1).topk(k * N).indices] = True
            keep = keep.view_as(pre)
        acts = pre.clamp_min(0) * keep
        assert (pre[keep] < 0).any()  # the precondition: negatives among the top k
        assert torch.allclose(out.fwd.xhat_LND[-1], acts @ sae.W_dec + sae.b_dec, atol=1e-5)
        assert torch.equal(out.fwd.fired_M, (acts > 0).any(0)) and int(out.fwd.n_active) == int(
            (acts > 0).sum()
        )


def test_workspace_reuses_buffers_by_name_and_shape():
    ws = K.Workspace()
    a = ws.get("a", (3, 4), torch.float32, torch.device("cpu"))
    assert ws.get("a", (3, 4), torch.float32, torch.device("cpu")) is a
    assert ws.get("a", (3, 5), torch.float32, torch.device("cpu")) is not a
    assert ws.get("b", (3, 4), torch.float32, torch.device("cpu")) is not a
