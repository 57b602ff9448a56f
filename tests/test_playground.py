"""recsae_core.playground (+ viz.playground, widgets.PlaygroundPanel): the steering grid on the planted world,
where feature g of a hand-built SAE is planted group g's direction, so steering it must raise group g's share.
The grid must agree with :func:`recsae_core.steer.steering_sweep` (the reference computation), its groups must
be the users they say, and the static page must carry the grid and reach nothing outside."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
import torch

from recsae_core import playground as P
from recsae_core.sae import ReluL1Config, from_config
from recsae_core.steer import steering_sweep
from recsae_core.synthetic import planted_split, planted_world
from recsae_core.viz import playground as VP

SITE = "planted.user"
ALPHAS = (-2.0, -1.0, 0.0, 1.0, 2.0)


@pytest.fixture(scope="module")
def world():
    w = planted_world(n_users=400, n_items=300, n_groups=6, seed=2)
    split = planted_split(w)
    g, d = w.directions.shape
    sae = from_config(ReluL1Config(d_in=d, n_latents=g + 1, input_norm="none")).eval()
    with torch.no_grad():
        sae.W_enc[:g] = w.directions
        sae.W_dec[:g] = w.directions
        sae.W_enc[g] = -w.directions.sum(0)  # fires on nothing: a dead feature
        sae.W_dec[g] = torch.nn.functional.normalize(
            torch.randn(d, generator=torch.Generator().manual_seed(0)), dim=0
        )
        sae.b_enc.fill_(-0.3)
        sae.b_dec.zero_()
    return w, split, sae


def test_grid_agrees_with_steering_sweep(world):
    w, split, sae = world
    users = np.arange(0, 400, 3)
    for j in (0, 3):
        grid = P.steering_grid(w.model, SITE, sae, split, j, ALPHAS, users=users)
        ref = steering_sweep(
            w.model,
            SITE,
            sae,
            split,
            "test",
            features=j,
            values=ALPHAS,
            users=users,
            item_labels=torch.as_tensor(split.dataset.item_labels),
            label_names=split.dataset.label_names,
        )
        share_cols = [f"share_{n}" for n in split.dataset.label_names]
        np.testing.assert_allclose(grid.shares(), ref[share_cols].to_numpy(), atol=1e-9)
        np.testing.assert_allclose(grid.ndcg(), ref["ndcg@10"].to_numpy(), atol=1e-9)
        np.testing.assert_allclose(grid.hr(), ref["hr@10"].to_numpy(), atol=1e-9)


def test_alpha_zero_is_the_base_model(world):
    w, split, sae = world
    grid = P.steering_grid(w.model, SITE, sae, split, 1, ALPHAS)
    base = P.steering_grid(w.model, SITE, sae, split, 4, [0.0])  # another feature, α = 0: the same lists
    a0 = grid.alphas.index(0.0)
    assert np.array_equal(grid.top[a0], base.top[0]) and np.array_equal(grid.ranks[a0], base.ranks[0])
    # and the unsteered model's own top-k, seen items excluded
    scores = w.model.score(w.batch()).detach()
    scores[w.seen()] = -float("inf")
    order = np.argsort(grid.users)
    assert np.array_equal(grid.top[a0][order], scores.topk(10, dim=1).indices.numpy())


@pytest.mark.parametrize("g", range(6))
def test_steering_a_planted_feature_moves_its_group(world, g):
    w, split, sae = world
    grid = P.steering_grid(w.model, SITE, sae, split, g, ALPHAS)
    share = grid.shares()[:, g]
    a0 = grid.alphas.index(0.0)
    assert np.all(np.diff(share) >= 0), share  # monotone in α
    assert share[-1] > 0.9 and share[-1] > share[a0] + 0.3 and share[0] < min(0.05, share[a0])
    assert grid.raised_label() == g
    entered, left = grid.changes(len(ALPHAS) - 1, n=5)
    assert entered and all(w.item_groups[i, g] for i, _ in entered)
    assert not any(w.item_groups[i, g] for i, _ in left)
    assert grid.changes(grid.alphas.index(0.0)) == ([], [])


def test_group_aggregates_are_means_over_their_users(world):
    w, split, sae = world
    grid = P.steering_grid(w.model, SITE, sae, split, 2, ALPHAS)
    members = np.arange(50, 120)
    sub = P.steering_grid(w.model, SITE, sae, split, 2, ALPHAS, users=members)
    np.testing.assert_allclose(grid.shares(members), sub.shares())
    np.testing.assert_allclose(grid.ndcg(members), sub.ndcg())
    u = 77
    r = grid.ranks[:, grid.users == u][:, 0]
    np.testing.assert_allclose(grid.ndcg([u]), np.where(r < 10, 1 / np.log2(r + 2.0), 0.0))
    with pytest.raises(ValueError, match="none of the given users"):
        grid.shares([10_000])


def test_user_groups_hold_the_users_they_name(world):
    w, split, _ = world
    users = np.arange(0, 400, 2)
    groups = P.user_groups(split, users, heavy_labels=["g1", "g4"], heavy_share=0.5)
    assert np.array_equal(groups[f"all {len(users)} sampled users"], users)
    seqs = w.seqs[users]
    n_hist = (seqs > 0).sum(1).numpy()
    lab = w.item_groups.numpy()
    for g in (1, 4):
        share = np.array([lab[s[s > 0] - 1, g].mean() for s in seqs.numpy()])
        assert np.array_equal(groups[f"heavy in g{g} (≥ 50% of history)"], users[share >= 0.5])
        assert 0 < (share >= 0.5).sum() < len(users)
    new = next(v for k, v in groups.items() if k.startswith("new users"))
    long = next(v for k, v in groups.items() if k.startswith("long-history"))
    assert n_hist[np.isin(users, new)].max() < n_hist[np.isin(users, long)].min()
    assert 0.2 < len(new) / len(users) < 0.45 and 0.2 < len(long) / len(users) < 0.45
    with pytest.raises(KeyError, match="not labels"):
        P.user_groups(split, users, heavy_labels=["Western"])


def test_config_validation():
    with pytest.raises(ValueError, match="include 0"):
        P.PlaygroundConfig(alphas=(1.0, 2.0))
    with pytest.raises(ValueError, match="increasing"):
        P.PlaygroundConfig(alphas=(1.0, 0.0))
    with pytest.raises(ValueError, match="n_shown_users"):
        P.PlaygroundConfig(n_users=5, n_shown_users=6)
    with pytest.raises(ValueError, match="alpha_unit"):
        P.PlaygroundConfig(alpha_unit="relative")


@pytest.fixture(scope="module")
def page(world):
    w, split, sae = world
    entry = P.PlaygroundSAE("planted SAE", "planted", "planted", SITE, w.model, sae, split)
    entry.catalog = P.describe_features(w.model, SITE, sae, split, n_boot=50)
    cfg = P.PlaygroundConfig(alphas=ALPHAS, n_features=4, n_users=120, n_shown_users=3, heavy_labels=("g0",))
    return w, entry, cfg, P.playground_data([entry], cfg)


def test_catalog_and_picked_features(page):
    w, entry, *_ = page
    cat = entry.catalog
    g = w.directions.shape[0]
    assert cat.loc[g, "density"] == 0 and cat.loc[g, "description"] == ""  # the dead feature
    # each planted feature's atom is its group's direction: it steers towards that group
    assert cat["steers"].iloc[:g].tolist() == [f"g{j}" for j in range(g)]
    assert (cat["selectivity"].iloc[:g] > 0.5).all()
    picked = P.pick_features(cat, g + 1, n_label=0)
    assert g not in picked and len(picked) == g  # dead features are never sampled
    conf = cat.set_index("feature").loc[picked, "confidence"].to_numpy()
    named = [not d.startswith(P.NO_DESCRIPTION) for d in cat.set_index("feature").loc[picked, "description"]]
    assert all(np.diff(conf[np.array(named)]) <= 0)  # described features by confidence first
    assert named == sorted(named, reverse=True)
    # label features first: the most selective, one per label
    by_sel = cat.iloc[:g].sort_values("selectivity", ascending=False)["feature"].tolist()
    assert P.pick_features(cat, 4, n_label=3)[:3] == by_sel[:3]
    top, second = by_sel[0], by_sel[1]
    twin = cat.copy()  # the second feature now steers towards the top feature's label, nearly as well
    twin.loc[second, ["steers", "selectivity"]] = [cat.loc[top, "steers"], cat.loc[top, "selectivity"] - 1e-6]
    assert second not in P.pick_features(twin, 4, n_label=4)[:3]  # that label already has its feature


def test_label_selectivity_reads_the_atom(world):
    w, split, sae = world
    lab = np.asarray(split.dataset.item_labels, dtype=bool)
    sel = P.label_selectivity(w.model, sae, lab, split.dataset.label_names, n_top=30)
    emb = w.model.representation("planted.item", w.batch()).detach().double()
    for j in range(6):
        eff = (emb @ sae.W_dec[j].detach().double()).numpy()  # the planted SAE has no input scaling
        top = np.argsort(-eff, kind="stable")[:30]
        lift = lab[top].mean(0) - lab.mean(0)
        assert sel.loc[j, "steers"] == f"g{int(np.argmax(lift))}" == f"g{j}"
        assert sel.loc[j, "selectivity"] == pytest.approx(lift.max(), abs=1e-9)
    dropped = P.label_selectivity(w.model, sae, lab, split.dataset.label_names, n_top=30, drop=["g2"])
    assert "g2" not in set(dropped["steers"])
    assert (dropped["steers"] == sel["steers"]).iloc[[0, 1, 3, 4, 5]].all()


def test_page_data_matches_the_grid(page):
    w, entry, cfg, data = page
    s = data["saes"][0]
    assert data["alphas"] == list(ALPHAS) and len(s["features"]) == cfg.n_features
    assert next(grp["n"] for grp in s["groups"]) == cfg.n_users and len(s["users"]) == cfg.n_shown_users
    f = s["features"][0]
    unit = float(entry.catalog.set_index("feature").loc[f["id"], "max_act"])
    assert f["unit"] == pytest.approx(unit, abs=1e-4) and unit > 0
    # the planted feature's label is its group, and its group share at the largest α is as the grid says
    assert f["label"] == f["id"]
    rng = np.random.default_rng(cfg.seed)
    cand = np.unique(entry.split.targets("test")["user"].to_numpy(np.int64))
    sample = np.sort(rng.choice(cand, size=cfg.n_users, replace=False))
    grid = P.steering_grid(
        w.model, SITE, entry.sae, entry.split, f["id"], [a * unit for a in ALPHAS], users=sample
    )
    np.testing.assert_allclose(f["groups"][0]["share"], grid.shares(), atol=1e-3)
    np.testing.assert_allclose(f["groups"][0]["ndcg"], grid.ndcg(), atol=1e-4)
    # a shown user's lists: item refs into "items", α = 0 is their base list
    u = f["users"][0]
    uid = int(s["users"][0]["id"])
    c = int(np.nonzero(grid.users == uid)[0][0])
    assert [s["items"][i] for i in u["top"][ALPHAS.index(0.0)]] == [
        f"i{i}" for i in grid.top[ALPHAS.index(0.0), c]
    ]
    summary = P.grid_summary(data)
    assert (
        len(summary) == cfg.n_features and (summary["label"] == [f"g{x['id']}" for x in s["features"]]).all()
    )


def test_html_is_self_contained_and_carries_the_data(page):
    *_, data = page
    out = VP.playground_html(data, "pg-planted")
    m = re.search(r'<script type="application/json" id="pg-planted-data">(.*?)</script>', out, re.S)
    assert m and json.loads(m.group(1).replace("<\\/", "</")) == json.loads(json.dumps(data))
    assert "http://" not in out and "https://" not in out and "src=" not in out
    assert 'id="pg-planted-plot"' in out
    with pytest.raises(ValueError, match="div_id"):
        VP.playground_html(data, "bad id")


def test_live_panel_searches_and_steers(page):
    _w, entry, cfg, _ = page
    from recsae_core.widgets import PlaygroundPanel

    panel = PlaygroundPanel([entry], cfg, alpha=2.0)
    assert len(panel.feature.options) == entry.sae.n_latents
    first = panel.feature.options[0][1]  # a feature is selected and steered from the start
    assert panel.feature.value == first and f"<b>#{first}</b>" in panel.output.value
    target = entry.catalog[entry.catalog["description"].str.startswith("Fires")].iloc[0]
    words = target["description"].split(" (")[0]
    panel.search.value = words
    ids = [v for _, v in panel.feature.options]
    assert int(target["feature"]) in ids and len(ids) < entry.sae.n_latents
    panel.search.value = f"#{int(target['feature'])} "
    assert [v for _, v in panel.feature.options] == [int(target["feature"])]
    panel.feature.value = int(target["feature"])
    g = int(target["feature"])
    assert f"g{g} share" in panel.output.value  # the steered label is the planted group
    panel.who.value = panel.ONE_USER
    panel.user.value = 5
    assert "top-10 after (α = 2)" in panel.output.value
    panel.search.value = "no feature is called this"
    assert panel.feature.options == () and "No feature matches" in panel.output.value
