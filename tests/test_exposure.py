"""recsae_core.exposure: exposure metrics by hand, popularity latents and the accuracy/popularity trade-off
on the planted world (suppressing the latent of the most popular group lowers the popularity of the lists)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from recsae_core import exposure as E
from recsae_core import metrics
from recsae_core.concepts import build_pool
from recsae_core.synthetic import oracle_sae, planted_split, planted_world


def test_gini_by_hand():
    assert E.gini([1, 1, 1, 1]) == pytest.approx(0.0)
    assert E.gini([0, 0, 0, 4]) == pytest.approx(0.75)
    assert E.gini([1, 3]) == pytest.approx(0.25)
    assert E.gini([0, 0]) == 0.0


def test_exposure_metrics_by_hand():
    counts = np.array([100, 50, 10, 5, 1, 0, 0, 0, 0, 0])  # head (20% of 10 items) = items 0, 1
    top = torch.tensor([[0, 1], [0, 2]])
    m = E.exposure_metrics(top, counts)
    assert m["avg_popularity"] == pytest.approx((100 + 50 + 100 + 10) / 4)
    assert m["long_tail_share"] == pytest.approx(1 / 4)
    assert m["coverage"] == pytest.approx(metrics.coverage(top, 10)) == pytest.approx(0.3)
    assert m["gini"] == pytest.approx(E.gini([2, 1, 1, 0, 0, 0, 0, 0, 0, 0]))


def test_popularity_latents_rank_the_popularity_latent_first():
    gen = torch.Generator().manual_seed(0)
    counts = np.arange(200)[::-1].copy()
    items = torch.randint(200, (1000,), generator=gen)
    acts = torch.relu(torch.randn(1000, 4, generator=gen))
    acts[:, 2] = torch.from_numpy(np.log1p(counts[items.numpy()])).float() + 0.1 * torch.rand(
        1000, generator=gen
    )
    table = E.popularity_latents(acts, items, counts)
    assert table["latent"].iloc[0] == 2 and table["corr"].iloc[0] > 0.9
    hist = torch.stack([items, torch.full_like(items, -1)], 1)
    assert E.popularity_latents(acts, torch.zeros_like(items), counts, hist)["latent"].iloc[0] == 2


@pytest.fixture(scope="module")
def world():
    w = planted_world(n_users=400, n_items=300, n_groups=6, seed=1)
    split = planted_split(w)
    return w, split, oracle_sae(w, threshold=0.0)


def test_suppressing_the_popular_group_lowers_popularity(world):
    w, split, sae = world
    counts = E.item_popularity(split)
    per_group = (w.item_groups.float() * torch.from_numpy(counts).float()[:, None]).sum(
        0
    ) / w.item_groups.sum(0)
    g = int(per_group.argmax())
    pool = build_pool(w.model, "planted.user", sae, split)
    assert E.popularity_latents(pool.acts, pool.items, counts, pool.history)["latent"].iloc[0] == g
    df = E.popularity_tradeoff(w.model, "planted.user", sae, split, "test", g, [-0.5, -1.0], mode="add")
    assert np.isnan(df["value"].iloc[0]) and list(df["value"].iloc[1:]) == [-0.5, -1.0]
    assert df["avg_popularity"].iloc[2] < df["avg_popularity"].iloc[1] < df["avg_popularity"].iloc[0]
    assert df["ndcg@10"].iloc[2] < df["ndcg@10"].iloc[0]  # the trade-off: accuracy pays for it
    # the base row is the model itself
    _, top, acc = E.steered_lists(w.model, "planted.user", None, split, "test")
    assert df["ndcg@10"].iloc[0] == pytest.approx(acc["ndcg@10"])
    assert df["gini"].iloc[0] == pytest.approx(E.exposure_metrics(top, counts)["gini"])
    # with the edit at strength 0 the lists are the base lists (error term kept)
    from recsae_core.steer import Steer

    _, top0, _ = E.steered_lists(w.model, "planted.user", sae, split, "test", Steer(g, 0.0))
    assert torch.equal(top0, top)


def test_popularity_table_formats_each_column_and_names_the_base_row():
    from recsae_core import viz

    df = pd.DataFrame(
        {
            "value": [np.nan, -2.0],
            "hr@10": [0.2, 0.1],
            "ndcg@10": [0.11667, 0.05],
            "avg_popularity": [1388.37, 1040.8],
            "long_tail_share": [0.05634, 0.151],
            "coverage": [0.366, 0.4],
            "gini": [0.9125, 0.88],
        }
    )
    html = viz.popularity_table({"MF": df, "NCF": df}, caption="cap").to_html()
    for text in (
        "NDCG@10",
        "avg. popularity",
        "long-tail share",
        "Gini",
        "base",
        "1,388",
        "0.1167",
        "0.056",
        ">-2<",
    ):
        assert text in html, text
    assert html.count(">MF<") == 2 and html.count(">NCF<") == 2 and "1388.37" not in html


def test_suppress_popularity_picks_the_popular_group_and_returns_its_tradeoff(world):
    w, split, sae = world
    counts = E.item_popularity(split)
    pool = build_pool(w.model, "planted.user", sae, split)
    j, corr, curve = E.suppress_popularity(w.model, "planted.user", sae, split, pool, [-0.5, -1.0])
    top = E.popularity_latents(pool.acts, pool.items, counts, pool.history).iloc[0]
    assert j == int(top["latent"]) and corr == pytest.approx(float(top["corr"]))
    direct = E.popularity_tradeoff(w.model, "planted.user", sae, split, "test", j, [-0.5, -1.0])
    pd.testing.assert_frame_equal(curve, direct)
    dead = type(pool)(pool.acts * 0, pool.reps, pool.users, pool.items, pool.history, pool.kind, pool.site)
    with pytest.raises(ValueError, match="fires"):
        E.suppress_popularity(w.model, "planted.user", sae, split, dead, [-1.0])
