"""recsae_core.explorer + viz.concepts: feature cards on the planted world (each card's evidence points at
the planted group), dead features, and the self-contained HTML (data embedded, no outside address)."""

from __future__ import annotations

import json
import re

import pytest
import torch

from recsae_core import concepts as C
from recsae_core import explorer as X
from recsae_core.sae import ReluL1Config, from_config
from recsae_core.synthetic import oracle_sae, planted_split, planted_world
from recsae_core.viz import concepts as VC


@pytest.fixture(scope="module")
def cards():
    w = planted_world(n_users=500, n_items=300, n_groups=6, seed=2)
    split = planted_split(w)
    g, d = w.directions.shape
    sae = from_config(ReluL1Config(d_in=d, n_latents=g + 1, input_norm="none")).eval()
    with torch.no_grad():
        sae.W_enc[:g] = w.directions
        sae.W_dec[:g] = w.directions
        sae.W_enc[g] = -w.directions.sum(0)  # fires on nothing: a dead feature
        sae.W_dec[g] = torch.nn.functional.normalize(torch.randn(d), dim=0)
        sae.b_enc.fill_(-0.3)
        sae.b_dec.zero_()
    pool = C.build_pool(w.model, "planted.user", sae, split)
    table = C.attribute_table(pool, split)
    sims = C.simulate_latents(C.MetadataExplainer(table), C.sample_cases(pool), pool)
    scores = C.score_latents(sims, n_boot=50)
    cfg = X.ExplorerConfig(n_users=60)
    data = X.feature_cards(
        w.model, "planted.user", sae, split, pool, table, scores, title="planted", config=cfg
    )
    return w, data


def _group(w, data, idx):
    title = data["items"][idx].split(" (")[0]  # "i17 (g3, g5)"
    return set(torch.nonzero(w.item_groups[int(title[1:])]).flatten().tolist())


def test_cards_point_at_the_planted_group(cards):
    w, data = cards
    g = w.directions.shape[0]
    assert len(data["features"]) == g + 1
    for j, f in enumerate(data["features"][:g]):
        assert f["id"] == j and f"g{j}" in f["label"] and not f.get("dead")
        assert f["scores"]["confidence"][0] >= 0.9
        assert 0 < f["density"] < 1 and sum(f["hist"]["counts"]) == round(f["density"] * data["n_rows"])
        assert all(j in _group(w, data, t[0]) for t in f["top"])
        assert all(j in _group(w, data, i) for i, _ in f["effect"]["up"])
        assert not any(j in _group(w, data, i) for i, _ in f["effect"]["down"][:2])
        assert sum(b[1] for b in f["bands"]) == pytest.approx(1.0, abs=1e-2)
        assert f["enrich"][0][0] in (f"label: g{j}", f"history: mostly g{j}") and f["enrich"][0][3] > 2
        nb = f["neighbours"]
        assert j not in [i for i, _ in nb["decoder"]] and j not in [i for i, _ in nb["coactivation"]]
        c = f["causal"]
        assert c["entered"] and all(j in _group(w, data, i) for i, _ in c["entered"][:3])
        assert 0 < c["changed"] <= 1 and len(c["ndcg"]) == 2
    dead = data["features"][g]
    assert dead.get("dead") and "top" not in dead and dead["density"] == 0


def test_html_is_self_contained_and_carries_the_data(cards):
    _, data = cards
    out = VC.explorer_html(data, "fx-planted")
    m = re.search(r'<script type="application/json" id="fx-planted-data">(.*?)</script>', out, re.S)
    assert m and json.loads(m.group(1).replace("<\\/", "</")) == json.loads(json.dumps(data))
    assert "http://" not in out and "https://" not in out and "src=" not in out
    assert 'id="fx-planted"' in out and "window.Plotly" in out
    assert X.payload_bytes(data) < 60_000
    with pytest.raises(ValueError, match="div_id"):
        VC.explorer_html(data, "bad id")


def test_item_site_cards_scale_the_feature_and_raise_its_items():
    """At an item-table site the causal edit scales the feature in every item's code (adding would move all
    of a user's scores alike): the items that enter the lists carry the feature's planted group."""
    w = planted_world(n_users=500, n_items=300, n_groups=6, seed=2)
    split = planted_split(w)
    g = w.directions.shape[0]
    sae = oracle_sae(w)
    pool = C.build_pool(w.model, "planted.item", sae, split)
    assert pool.kind == "item" and len(pool.acts) == w.model.n_items
    table = C.attribute_table(pool, split)
    cfg = X.ExplorerConfig(n_users=60)
    data = X.feature_cards(w.model, "planted.item", sae, split, pool, table, None, title="items", config=cfg)
    moved = 0
    for j, f in enumerate(data["features"]):
        c = f["causal"]
        assert c["edit"].startswith("×2")
        if c["entered"]:
            moved += 1
            assert all(j in _group(w, data, i) for i, _ in c["entered"][:3])
    assert moved >= g - 1
    with pytest.raises(ValueError, match="item_scale"):
        X.ExplorerConfig(item_scale=1.0)
