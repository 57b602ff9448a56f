"""Probing, splicing and steering: planted-concept recommender and the real model classes (tiny, seeded)."""

from __future__ import annotations

import copy

import numpy as np
import pandas as pd
import pytest
import torch

import recsae_core.sae as S
from recsae_core import metrics as M
from recsae_core import probe, steer
from recsae_core.data.dataset import RecDataset
from recsae_core.data.splits import leave_one_out
from recsae_core.evaluate import evaluate
from recsae_core.models.base import UserBatch
from recsae_core.models.sasrec import SASRec, SASRecConfig
from recsae_core.models.twotower import BPRMF, MF, NCF, LightGCN, edges_from_pairs
from recsae_core.synthetic import planted_world


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def world():
    return planted_world(n_users=300, seed=0)


@pytest.fixture(scope="module")
def trained(world):
    """A TopK SAE trained on every position of the planted histories, and its best feature per group."""
    acts = probe.collect_activations(world.model, "planted.seq", world.batch(), progress=False)
    res = S.train_sae(
        S.TopKConfig(n_latents=64, k=4),
        acts.acts,
        S.TrainConfig(steps=300, batch_size=256, lr=3e-3, warmup_steps=20),
        progress=False,
    )
    corr = M.pearson_matrix(res.sae.encode(acts.acts).detach(), world.item_groups[acts.items])
    best, feat = M.max_over_features(corr)
    assert best.mean() > 0.9  # the groups are recovered (precondition of the steering tests)
    return res.sae, feat


# ----------------------------------------------------------------------------------------- collection
def test_collect_every_position_keeps_user_and_input_item(world):
    a = probe.collect_activations(world.model, "planted.seq", world.batch(), batch_size=64, progress=False)
    r, c = torch.nonzero(world.seqs > 0, as_tuple=True)
    assert len(a) == len(r) and a.acts.shape == (len(r), 64)
    assert torch.equal(a.users, world.users[r]) and torch.equal(a.items, world.seqs[r, c] - 1)
    assert torch.equal(a.positions, c)
    assert torch.equal(
        a.acts, world.model.item_emb.detach()[a.items]
    )  # the planted site is the item embedding
    last = probe.collect_activations(
        world.model, "planted.seq", world.batch(), positions="last", progress=False
    )
    assert len(last) == 300 and (last.positions == world.seqs.shape[1] - 1).all()
    assert torch.equal(last.items, world.seqs[:, -1] - 1)
    assert torch.equal(last.acts, world.model.item_emb.detach()[world.seqs[:, -1] - 1])


def test_collect_user_and_item_sites(world):
    u = probe.collect_activations(world.model, "planted.user", world.batch(), progress=False)
    assert u.acts.shape == (300, 64) and torch.equal(u.users, world.users) and u.positions is None
    assert torch.allclose(u.acts, world.model.representation("planted.user", world.batch()))
    it = probe.collect_activations(world.model, "planted.item", world.batch(), progress=False)
    assert it.acts.shape == (400, 64) and (it.users == -1).all() and torch.equal(it.items, torch.arange(400))
    with pytest.raises(KeyError, match=r"planted\.nope"):
        probe.collect_activations(world.model, "planted.nope", world.batch(), progress=False)
    with pytest.raises(ValueError, match="positions"):
        probe.collect_activations(
            world.model, "planted.seq", world.batch(), positions="first", progress=False
        )


def test_collect_cache_hits_and_misses(world, tmp_path, monkeypatch):
    cache = tmp_path / "acts" / "seq"
    a = probe.collect_activations(world.model, "planted.seq", world.batch(), progress=False, cache=cache)
    assert (tmp_path / "acts" / "seq.safetensors").exists() and (tmp_path / "acts" / "seq.json").exists()

    def boom(*args, **kw):
        raise AssertionError("should have been read from the cache")

    with monkeypatch.context() as mp:
        mp.setattr(world.model, "representation", boom)
        b = probe.collect_activations(world.model, "planted.seq", world.batch(), progress=False, cache=cache)
    assert (
        torch.equal(a.acts, b.acts)
        and torch.equal(a.items, b.items)
        and b.meta["cache_key"] == a.meta["cache_key"]
    )
    fewer = UserBatch(world.users[:10], world.seqs[:10])
    c = probe.collect_activations(world.model, "planted.seq", fewer, progress=False, cache=cache)
    assert len(c) < len(a)  # different data: recomputed and overwritten
    assert [p.name for p in sorted((tmp_path / "acts").iterdir())] == ["seq.json", "seq.safetensors"]


# ------------------------------------------------------------------------------------ splice and steer
def test_apply_to_site_touches_only_selected_rows(world, trained):
    sae, _ = trained
    b = world.batch()
    rep = world.model.representation("planted.seq", b)
    out = probe.apply_to_site(sae, rep, b, positions="last")
    assert torch.equal(out[:, :-1], rep[:, :-1]) and not torch.equal(out[:, -1], rep[:, -1])
    assert torch.allclose(out[:, -1], sae(rep[:, -1]).x_hat, atol=1e-6)
    out_all = probe.apply_to_site(sae, rep, b, positions="all")
    pad = b.seqs == 0
    assert torch.equal(out_all[pad], rep[pad])
    assert probe.apply_to_site(sae, rep, b, keep_error=True) is rep  # nothing edited: x' = x
    table = world.model.representation("planted.item", b)
    t2 = probe.apply_to_site(sae, table, b, rows=[3, 7])
    others = torch.ones(400, dtype=torch.bool)
    others[[3, 7]] = False
    assert torch.equal(t2[others], table[others]) and not torch.equal(t2[3], table[3])


def test_spliced_scores_use_the_reconstruction(world, trained):
    sae, _ = trained
    b = world.batch()
    got = probe.spliced_scores_fn(world.model, "planted.user", sae)(b)
    rep = world.model.representation("planted.user", b)
    assert torch.allclose(got, world.model.score_from("planted.user", sae(rep).x_hat, b), atol=1e-6)
    assert not torch.equal(got, world.model.score(b))
    item_fn = probe.spliced_scores_fn(world.model, "planted.item", sae)
    assert torch.allclose(item_fn(b), b_scores_item(world, sae, b), atol=1e-5)


def b_scores_item(world, sae, b):
    table = world.model.representation("planted.item", b)
    return world.model.score_from("planted.item", sae(table).x_hat, b)


@pytest.mark.parametrize(
    ("site", "kw"),
    [
        ("planted.user", {}),
        ("planted.seq", {"positions": "last"}),
        ("planted.seq", {"positions": "all"}),
        ("planted.item", {"rows": [0, 5]}),
        ("planted.item", {}),
    ],
)
@pytest.mark.parametrize("mode", ["add", "set"])
def test_alpha_zero_with_error_term_returns_original_scores_exactly(world, trained, site, kw, mode):
    sae, feat = trained
    b = world.batch()
    base = world.model.score(b)
    if mode == "add":
        edit = steer.Steer(int(feat[0]), 0.0, "add")
    else:  # "set" a feature to the value it already has (0 at every edited row): f' == f bit for bit
        edited = []
        steer.steer_scores(world.model, site, sae, b, lambda a: edited.append(a) or a, **kw)
        idle = torch.nonzero(edited[0].amax(0) == 0).squeeze(1)
        assert len(idle) > 0, "no latent is inactive at every edited row"
        j = int(idle[0])
        edit = steer.Steer(j, 0.0, "set")
        # setting it to 1.5 there is the same edit as adding 1.5, and it moves the scores
        set_to = steer.steer_scores(world.model, site, sae, b, steer.Steer(j, 1.5, "set"), **kw)
        added = steer.steer_scores(world.model, site, sae, b, steer.Steer(j, 1.5, "add"), **kw)
        assert torch.equal(set_to, added) and not torch.equal(set_to, base)
    got = steer.steer_scores(world.model, site, sae, b, edit, keep_error=True, **kw)
    assert torch.equal(got, base)
    no_err = steer.steer_scores(
        world.model, site, sae, b, steer.Steer(int(feat[0]), 0.0), keep_error=False, **kw
    )
    assert not torch.equal(no_err, base)  # without the error term "alpha = 0" is the spliced model (P1)


@pytest.mark.parametrize("keep_error", [True, False])
def test_steering_a_recovered_feature_raises_its_group_share(world, trained, keep_error):
    sae, feat = trained
    g = 3
    df = steer.steering_sweep(
        world.model,
        "planted.user",
        sae,
        planted_split(world),
        "test",
        int(feat[g]),
        [0.0, 0.5, 2.0],
        item_labels=world.item_groups[:, g],
        label_names=["g3"],
        keep_error=keep_error,
        k=10,
        batch_size=128,
    )
    assert list(df.columns) == [
        "value",
        "share_g3",
        "hr@10",
        "ndcg@10",
        "mrr@10",
        "coverage@10",
        "diversity@10",
    ]
    share = df["share_g3"].to_numpy()
    assert share[0] < 0.4 and share[2] > 0.9 and share[1] > share[0]
    assert df["coverage@10"].iloc[2] < df["coverage@10"].iloc[0]
    # another feature does not move group 3 the same way
    other = steer.steering_sweep(
        world.model,
        "planted.user",
        sae,
        planted_split(world),
        features=int(feat[5]),
        values=[2.0],
        item_labels=world.item_groups[:, g],
        k=10,
    )
    assert other["share_0"].iloc[0] < 0.5


def test_suppression_and_setting(world, trained):
    sae, feat = trained
    b = world.batch()
    fav = world.user_taste.argmax(1)
    users = torch.nonzero(fav == 2).squeeze(1)
    sub = UserBatch(users, world.seqs[users])
    lab = world.item_groups[:, 2]
    seen = world.seen()
    keep = torch.isin(seen[0], users)
    rowmap = torch.full((300,), -1)
    rowmap[users] = torch.arange(len(users))
    sub_seen = (rowmap[seen[0][keep]], seen[1][keep])
    before = M.label_share(M.top_k_items(world.model.score(sub), 10, sub_seen), lab)
    after = M.label_share(
        M.top_k_items(
            steer.steer_scores(world.model, "planted.user", sae, sub, steer.suppress(int(feat[2]), -2.0)),
            10,
            sub_seen,
        ),
        lab,
    )
    assert before > 0.4 and after < 0.5 * before
    with pytest.raises(ValueError, match="<= 0"):
        steer.suppress(1, 0.5)
    boosted = steer.steer_scores(world.model, "planted.user", sae, b, steer.Steer(int(feat[6]), 3.0, "set"))
    assert M.label_share(M.top_k_items(boosted, 10, seen), world.item_groups[:, 6]) > 0.8
    with pytest.raises(ValueError, match="mode"):
        steer.Steer(1, 1.0, "multiply")


def test_item_promotion_moves_only_the_edited_item(world, trained):
    sae, feat = trained
    b = world.batch()
    item = int(torch.nonzero(world.item_groups[:, 1] & ~world.item_groups[:, 4])[0])
    fn = steer.steered_scores_fn(
        world.model, "planted.item", sae, steer.Steer(int(feat[4]), 3.0, "add"), rows=[item]
    )
    new, base = fn(b), world.model.score(b)
    mask = torch.ones(400, dtype=torch.bool)
    mask[item] = False
    assert torch.equal(new[:, mask], base[:, mask])
    fans = world.user_taste[:, 4] > 0.5
    assert (new[fans, item] > base[fans, item]).float().mean() > 0.9


def test_scale_is_the_item_site_edit_that_re_ranks(world, trained):
    """At an item-table site ``add`` moves every item by one vector (a per-user constant on a dot-product
    score: no ranking changes), ``scale`` acts per item: 1 is the base model, 0 removes the feature."""
    sae, feat = trained
    b = world.batch()
    j = int(feat[4])
    base = world.model.score(b)
    added = steer.steer_scores(world.model, "planted.item", sae, b, steer.Steer(j, 3.0, "add"))
    shift = added - base
    assert shift.abs().max() > 1e-3  # the edit did reach the scores
    assert torch.allclose(shift, shift[:, :1].expand_as(shift), atol=1e-4)  # ... as a per-user constant
    assert torch.equal(
        steer.steer_scores(world.model, "planted.item", sae, b, steer.Steer(j, 1.0, "scale")), base
    )
    removed = steer.steer_scores(world.model, "planted.item", sae, b, steer.Steer(j, 0.0, "scale"))
    lab = world.item_groups[:, 4]
    fans = world.user_taste[:, 4] > 0.5
    share = lambda s: M.label_share(M.top_k_items(s[fans], 10), lab)  # noqa: E731
    assert share(removed) < 0.5 * share(base)


# ----------------------------------------------------------------------------------- splice accuracy
def planted_split(world):
    r, c = torch.nonzero(world.seqs > 0, as_tuple=True)
    users = torch.cat([r, world.users]).numpy()
    items = torch.cat([world.seqs[r, c] - 1, world.targets]).numpy()
    ts = torch.cat([c, torch.full((len(world.users),), world.seqs.shape[1])]).numpy()
    inter = pd.DataFrame(
        {"user": users, "item": items, "rating": np.float32(1.0), "timestamp": ts.astype(np.int64)}
    )
    n_items = world.model.n_items
    items_df = pd.DataFrame(
        {
            "item_id": np.arange(n_items),
            "title": [f"i{i}" for i in range(n_items)],
            "year": pd.array([pd.NA] * n_items, dtype="Int64"),
        }
    )
    users_df = pd.DataFrame({"user_id": np.arange(len(world.users))})
    names = [f"g{g}" for g in range(world.item_groups.shape[1])]
    ds = RecDataset("planted", inter, items_df, world.item_groups.numpy(), names, users_df)
    return leave_one_out(ds)


def test_splice_accuracy_uses_the_evaluation_code(world, trained):
    sae, _ = trained
    split = planted_split(world)
    res = probe.splice_accuracy(world.model, "planted.user", sae, split, ks=(10,))
    base = evaluate(world.model, split, ks=(10,))
    assert res["base"] == pytest.approx(base, rel=1e-9)
    good = res["spliced"]
    assert base["ndcg@10"] > 0.02  # the planted model is far better than chance (~10 / 400 hits)
    # the (seeded) trained SAE keeps the accuracy: 0.0505 vs 0.0496; SAEs trained with seeds 1-3 stay
    # within 15%. An untrained SAE is no control here (0.036-0.058 over seeds: top-4 of the tied
    # random atoms already keeps the user's direction); an SAE that decodes each latent to its
    # neighbour's atom is one: it falls to chance (0.013).
    assert abs(good["ndcg@10"] - base["ndcg@10"]) < 0.2 * base["ndcg@10"]
    assert good["hr@10"] > 0.7 * base["hr@10"]
    scrambled = copy.deepcopy(sae)
    with torch.no_grad():
        scrambled.W_dec.copy_(sae.W_dec.roll(1, 0))
    bad = probe.splice_accuracy(world.model, "planted.user", scrambled, split, ks=(10,))["spliced"]
    assert bad["ndcg@10"] < 0.5 * base["ndcg@10"] and bad["hr@10"] < 0.5 * base["hr@10"]


# ------------------------------------------------------------------------------------- real models
def _sasrec() -> SASRec:
    torch.manual_seed(0)
    return SASRec(6, 30, SASRecConfig(d=16, n_blocks=2, n_heads=2, maxlen=10, dropout=0.1)).eval()


def _seqs(n: int = 6, length: int = 10) -> torch.Tensor:
    g = torch.Generator().manual_seed(1)
    s = torch.randint(1, 31, (n, length), generator=g)
    lens = torch.randint(2, length + 1, (n,), generator=g)
    return s.masked_fill(torch.arange(length)[None, :] < (length - lens)[:, None], 0)


def _sae(d: int, arch: str = "topk") -> S.SparseAutoencoder:
    torch.manual_seed(2)
    extra = {"k": 4} if "topk" in arch else {}
    return S.from_config({"architecture": arch, "d_in": d, "n_latents": 24, **extra}).eval()


@pytest.mark.parametrize("site", ["sasrec.block0", "sasrec.last"])
@pytest.mark.parametrize("positions", ["last", "all"])
def test_sasrec_steering_alpha_zero_is_exact_and_collection_matches(site, positions):
    model, b = _sasrec(), UserBatch(torch.arange(6), _seqs())
    sae = _sae(16, "relu_l1")
    base = model.score(b)
    got = steer.steer_scores(model, site, sae, b, steer.Steer(3, 0.0), keep_error=True, positions=positions)
    assert torch.equal(got, base)
    moved = steer.steer_scores(model, site, sae, b, steer.Steer(3, 5.0), keep_error=True, positions=positions)
    assert not torch.allclose(moved, base)
    acts = probe.collect_activations(model, site, b, positions=positions, progress=False)
    rep = model.representation(site, b)
    if site == "sasrec.block0":
        mask = (
            b.seqs > 0
            if positions == "all"
            else torch.zeros_like(b.seqs, dtype=torch.bool).index_fill_(1, torch.tensor([9]), True)
        )
        assert torch.allclose(acts.acts, rep[mask]) and torch.equal(acts.items, b.seqs[mask] - 1)
    else:
        assert torch.allclose(acts.acts, rep) and torch.equal(acts.items, b.seqs[:, -1] - 1)


@pytest.mark.parametrize("cls", [MF, NCF, BPRMF, LightGCN])
def test_two_tower_steering_alpha_zero_is_exact_for_users_and_items(cls):
    torch.manual_seed(0)
    if cls is LightGCN:
        rng = np.random.default_rng(0)
        model = LightGCN(
            8, 15, edges=edges_from_pairs(rng.integers(0, 8, 40), rng.integers(0, 15, 40))
        ).eval()
    else:
        model = cls(8, 15).eval()
    d = model.item_table().shape[1]
    b = UserBatch(torch.arange(8))
    sae = _sae(d, "p3")
    base = model.score(b)
    for site, kw in (
        (f"{cls.prefix}.user", {}),
        (f"{cls.prefix}.item", {"rows": [2]}),
        (f"{cls.prefix}.item", {}),
    ):
        assert torch.equal(steer.steer_scores(model, site, sae, b, steer.Steer(1, 0.0), **kw), base), site
    promoted = steer.steer_scores(
        model, f"{cls.prefix}.item", sae, b, steer.Steer([0, 1], 2.0, "set"), rows=[2]
    )
    unchanged = torch.ones(15, dtype=torch.bool)
    unchanged[2] = False
    assert torch.equal(promoted[:, unchanged], base[:, unchanged]) and not torch.equal(
        promoted[:, 2], base[:, 2]
    )
    users = probe.collect_activations(model, f"{cls.prefix}.user", b, progress=False)
    assert users.acts.shape == (8, d) and (users.items == -1).all()
    table = (
        model.propagate() if cls is LightGCN else torch.cat([model.user_emb.weight, model.item_emb.weight])
    )
    assert torch.allclose(users.acts, table[:8], atol=1e-6)  # the user vectors themselves
    items = probe.collect_activations(model, f"{cls.prefix}.item", b, progress=False)
    assert torch.allclose(items.acts, table[8:], atol=1e-6) and torch.equal(items.items, torch.arange(15))
