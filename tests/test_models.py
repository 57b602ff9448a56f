"""Shape and site invariants of the base recommenders (tiny CPU sizes)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from recsae_core.models.base import UserBatch
from recsae_core.models.popularity import Popularity
from recsae_core.models.registry import MODELS, config_from_dict, get_spec, make_config
from recsae_core.models.sasrec import SASRec, SASRecConfig
from recsae_core.models.twotower import BPRMF, MF, NCF, LightGCN, LightGCNConfig, NCFConfig, edges_from_pairs

N_USERS, N_ITEMS = 7, 11


def random_seqs(
    batch: int, length: int, n_items: int = N_ITEMS, seed: int = 0, min_len: int = 1
) -> torch.Tensor:
    """Left-padded ``(batch, length)`` histories with random lengths in ``[min_len, length]``."""
    g = torch.Generator().manual_seed(seed)
    seqs = torch.randint(1, n_items + 1, (batch, length), generator=g)
    lens = torch.randint(min_len, length + 1, (batch,), generator=g)
    pad = torch.arange(length)[None, :] < (length - lens)[:, None]
    return seqs.masked_fill(pad, 0)


def sasrec(seed: int = 0, **kw) -> SASRec:
    torch.manual_seed(seed)
    cfg = SASRecConfig(**{"d": 16, "n_blocks": 2, "n_heads": 2, "maxlen": 12, "dropout": 0.1, **kw})
    return SASRec(N_USERS, N_ITEMS, cfg).eval()


# ------------------------------------------------------------------------------------ SASRec


def test_sasrec_sites_shapes_and_exact_round_trip():
    model = sasrec()
    batch = UserBatch(torch.arange(5), random_seqs(5, 12))
    scores = model.score(batch)
    assert scores.shape == (5, N_ITEMS) and torch.isfinite(scores).all()
    assert set(model.sites) == {"sasrec.block0", "sasrec.block1", "sasrec.final", "sasrec.last"}
    assert model.representation("sasrec.block0", batch).shape == (5, 12, 16)
    assert model.representation("sasrec.final", batch).shape == (5, 12, 16)
    assert model.representation("sasrec.last", batch).shape == (5, 16)
    for site in model.sites:
        rep = model.representation(site, batch)
        assert torch.equal(model.score_from(site, rep, batch), scores), site
    with pytest.raises(KeyError, match=r"sasrec\.block0"):
        model.representation("sasrec.block7", batch)


@pytest.mark.parametrize("n_heads", [1, 2])
def test_sasrec_round_trip_is_exact_at_realistic_sizes(n_heads):
    """score() runs the final block for the last query only; every site must still reproduce it bit for bit."""
    torch.manual_seed(0)
    model = SASRec(50, 300, SASRecConfig(d=64, n_heads=n_heads, maxlen=120)).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0.0, 0.3)
    batch = UserBatch(torch.arange(48), random_seqs(48, 120, n_items=300, seed=5))
    with torch.no_grad():
        scores = model.score(batch)
        for site in model.sites:
            assert torch.equal(model.score_from(site, model.representation(site, batch), batch), scores), site


def test_sasrec_score_from_uses_the_given_representation():
    model = sasrec()
    batch = UserBatch(torch.arange(4), random_seqs(4, 12, min_len=3))
    rep = model.representation("sasrec.block0", batch)
    moved = model.score_from("sasrec.block0", rep + torch.randn_like(rep), batch)
    assert not torch.allclose(moved, model.score(batch))
    last = model.representation("sasrec.last", batch)
    assert torch.allclose(model.score_from("sasrec.last", 2 * last, batch), 2 * model.score(batch), atol=1e-5)


def test_sasrec_left_padding_gives_the_same_scores_as_no_padding():
    model = sasrec()
    hist = torch.tensor([[3, 7, 1, 9, 2]])
    padded = F.pad(hist, (12 - 5, 0))
    s_short = model.score(UserBatch(torch.tensor([0]), hist))
    s_long = model.score(UserBatch(torch.tensor([0]), padded))
    assert torch.allclose(s_short, s_long, atol=1e-5)
    # and a batch mixing lengths scores each row as if alone
    batch = random_seqs(6, 12, seed=3)
    together = model.score(UserBatch(torch.arange(6), batch))
    alone = torch.cat([model.score(UserBatch(torch.tensor([i]), batch[i : i + 1])) for i in range(6)])
    assert torch.allclose(together, alone, atol=1e-5)


def test_sasrec_padded_positions_do_not_change_the_last_output():
    model = sasrec()
    seqs = random_seqs(4, 12, seed=1, min_len=2)
    seqs[:, :4] = 0  # at least 4 pad positions per row
    batch = UserBatch(torch.arange(4), seqs)
    rep = model.representation("sasrec.block0", batch)
    noisy = rep.clone()
    noisy[seqs == 0] = torch.randn(int((seqs == 0).sum()), 16) * 10
    assert torch.allclose(model.score_from("sasrec.block0", noisy, batch), model.score(batch), atol=1e-5)


def test_sasrec_is_causal_and_handles_fully_padded_rows():
    model = sasrec()
    seqs = random_seqs(3, 12, seed=2, min_len=12)
    out = model(seqs)
    changed = seqs.clone()
    changed[:, 8] = changed[:, 8] % N_ITEMS + 1
    out2 = model(changed)
    for h1, h2 in zip(out.hidden_states, out2.hidden_states, strict=True):
        assert torch.allclose(h1[:, :8], h2[:, :8], atol=1e-6)  # earlier positions do not see position 8
        assert not torch.allclose(h1[:, 8:], h2[:, 8:])
    empty = torch.zeros(2, 12, dtype=torch.long)
    assert torch.isfinite(model.score(UserBatch(torch.arange(2), empty))).all()
    model.train()
    out = model(torch.cat([empty, seqs[:2]]))
    assert all(torch.isfinite(h).all() for h in out.hidden_states)


def test_sasrec_output_table_tied_or_separate_and_init():
    tied, sep = sasrec(tied_output=True), sasrec(tied_output=False)
    assert torch.equal(tied.output_table, tied.item_emb.weight[1:])
    assert (
        sep.output_table.shape == (N_ITEMS, 16)
        and sep.output_table.data_ptr() != sep.item_emb.weight.data_ptr()
    )
    assert torch.all(tied.item_emb.weight[0] == 0)  # pad row
    assert 0.01 < float(tied.item_emb.weight[1:].detach().std()) < 0.03  # N(0, 0.02)
    with pytest.raises(ValueError, match="maxlen"):
        tied.score(UserBatch(torch.arange(1), torch.ones(1, 13, dtype=torch.long)))
    with pytest.raises(ValueError, match="seqs"):
        tied.score(UserBatch(torch.arange(1)))


@pytest.mark.parametrize(
    ("kw", "match"),
    [
        ({"d": 10, "n_heads": 3}, "divisible"),
        ({"dropout": 1.0}, "dropout"),
        ({"maxlen": 0}, "maxlen"),
        ({"lr": 0.0}, "lr"),
    ],
)
def test_sasrec_config_validation(kw, match):
    with pytest.raises(ValueError, match=match):
        SASRecConfig(**kw)


# ------------------------------------------------------------------------------------ two towers


def two_tower_models() -> dict[str, torch.nn.Module]:
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    users, items = rng.integers(0, N_USERS, 30), rng.integers(0, N_ITEMS, 30)
    key = np.unique(users * N_ITEMS + items)
    edges = edges_from_pairs(key // N_ITEMS, key % N_ITEMS)
    models = {
        "bprmf": BPRMF(N_USERS, N_ITEMS, make_config("bprmf", d=8)),
        "lightgcn": LightGCN(N_USERS, N_ITEMS, LightGCNConfig(d=8, n_layers=2), edges=edges),
        "mf": MF(N_USERS, N_ITEMS, make_config("mf", d=8)),
        "ncf": NCF(N_USERS, N_ITEMS, NCFConfig(d=8, hidden=(16, 8), score_chunk=20)),
    }
    with torch.no_grad():  # non-zero biases so that they are exercised
        models["mf"].user_bias.normal_()
        models["mf"].item_bias.normal_()
        models["mf"].global_bias.fill_(0.3)
    return {k: m.eval() for k, m in models.items()}


@pytest.mark.parametrize("name", ["bprmf", "lightgcn", "mf", "ncf"])
def test_two_tower_sites_round_trip_exactly(name):
    model = two_tower_models()[name]
    batch = UserBatch(torch.tensor([0, 3, 6, 3]))
    scores = model.score(batch)
    assert scores.shape == (4, N_ITEMS) and torch.isfinite(scores).all()
    assert set(model.sites) == {f"{name}.user", f"{name}.item"}
    user = model.representation(f"{name}.user", batch)
    item = model.representation(f"{name}.item", batch)
    assert user.shape == (4, 8) and item.shape == (N_ITEMS, 8)
    assert torch.equal(model.score_from(f"{name}.user", user, batch), scores)
    assert torch.equal(model.score_from(f"{name}.item", item, batch), scores)
    # pair scores agree with the full matrix
    pair = model.pair_scores(batch.users, torch.full((4,), 5))
    assert torch.allclose(pair, scores[:, 5], atol=1e-5)
    # an edited item table changes only that item's column
    edited = item.clone()
    edited[2] += 1.0
    moved = model.score_from(f"{name}.item", edited, batch)
    assert torch.equal(moved[:, [0, 1, 3]], scores[:, [0, 1, 3]]) and not torch.allclose(
        moved[:, 2], scores[:, 2]
    )
    with pytest.raises(ValueError, match="rows"):
        model.score_from(f"{name}.item", item[:3], batch)


def test_mf_score_is_the_biased_dot_product_logit():
    model = two_tower_models()["mf"]
    u = torch.tensor([1, 4])
    expect = (
        model.global_bias
        + model.user_bias[u, None]
        + model.item_bias[None, :]
        + model.user_emb.weight[u] @ model.item_emb.weight.T
    )
    assert torch.allclose(model.score(UserBatch(u)), expect, atol=1e-6)


def test_ncf_chunked_scores_equal_the_mlp_on_concatenations():
    model = two_tower_models()["ncf"]
    u = torch.arange(N_USERS)
    e_u, e_i = model.user_emb.weight[u], model.item_emb.weight
    x = torch.cat([e_u[:, None].expand(-1, N_ITEMS, -1), e_i[None].expand(N_USERS, -1, -1)], -1)  # (U, I, 2d)
    h = x
    for layer in model.layers:
        h = F.relu(layer(h))
    expect = model.out(h).squeeze(-1)
    got = model.score(UserBatch(u))  # score_chunk=20 pairs -> one user per chunk
    assert torch.allclose(got, expect, atol=1e-5)


def test_lightgcn_propagation_matches_dense_formula():
    model = two_tower_models()["lightgcn"]
    n = N_USERS + N_ITEMS
    A = torch.zeros(n, n)
    u, i = model.edges
    A[u, N_USERS + i] = 1.0
    A[N_USERS + i, u] = 1.0
    deg = A.sum(1)
    d = torch.where(deg > 0, deg.pow(-0.5), torch.zeros_like(deg))
    A_hat = d[:, None] * A * d[None, :]
    e0 = model.emb.weight.detach()
    layers = [e0, A_hat @ e0, A_hat @ A_hat @ e0]
    expect = torch.stack(layers).mean(0)
    # gradients through the sparse propagation (custom symmetric backward) match the dense formula
    model.train()
    w = torch.randn(n, 8)
    (model.propagate() * w).sum().backward()
    e0_req = e0.clone().requires_grad_()
    (torch.stack([e0_req, A_hat @ e0_req, A_hat @ A_hat @ e0_req]).mean(0) * w).sum().backward()
    assert torch.allclose(model.emb.weight.grad, e0_req.grad, atol=1e-5)
    model.eval()
    with torch.no_grad():
        assert torch.allclose(model.propagate(), expect, atol=1e-5)
        first = model.propagate()
        assert model.propagate() is first  # cached in eval mode
        model.emb.weight.add_(1.0)
        assert not torch.allclose(model.propagate(), first)  # cache follows parameter updates


def test_popularity_scores_counts_and_has_no_sites():
    pop = Popularity(3, 4).fit_counts(torch.tensor([0, 0, 2, 3, 0]))
    assert pop.score(UserBatch(torch.tensor([0, 2]))).tolist() == [[3.0, 0.0, 1.0, 1.0]] * 2
    with pytest.raises(KeyError):
        pop.representation("pop.user", UserBatch(torch.tensor([0])))


def test_registry_names_and_configs():
    assert set(MODELS) == {"sasrec", "bert4rec", "bprmf", "lightgcn", "mf", "ncf", "pop"}
    with pytest.raises(KeyError, match="known models"):
        get_spec("gru4rec")
    cfg = make_config("ncf", {"d": 4, "hidden": [8, 4]})
    assert cfg.hidden == (8, 4) and cfg.d == 4
    assert make_config("sasrec", None, maxlen=50).maxlen == 50
    with pytest.raises(ValueError, match="no field"):
        config_from_dict("mf", {"dim": 3})
    with pytest.raises(TypeError, match="SASRecConfig"):
        make_config("sasrec", NCFConfig())
    with pytest.raises(ValueError, match="n_neg"):
        make_config("mf", n_neg=0)
