"""recsae_core.compare: matched-L0 search, intervals, the conclusion text, and the whole comparison on planted
data where the right answer is known (recsae_core.synthetic)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch

from recsae_core import compare, probe
from recsae_core.sae import TrainConfig
from recsae_core.synthetic import planted_split, planted_world


# ------------------------------------------------------------------------------------------ match_l0
def test_match_l0_reaches_a_monotone_target():
    calls = []

    def l0_of(c: float) -> float:  # L0 falls as the coefficient grows, 100 at c = 0
        calls.append(c)
        return 100.0 / (1.0 + 10.0 * c)

    m = compare.match_l0(l0_of, 8.0, 0.1, max_evals=8, tolerance=0.05)
    assert m.matched and m.relative_error <= 0.05
    assert abs(m.coeff - (100 / 8 - 1) / 10) / 1.15 < 0.1  # the exact answer is c = 1.15
    assert len(calls) <= 8 and [c for c, _ in m.tries] == calls
    # from above the target too (start too high a coefficient)
    m2 = compare.match_l0(l0_of, 8.0, 50.0, max_evals=8, tolerance=0.05)
    assert m2.matched and abs(m2.coeff - 1.15) / 1.15 < 0.1


def test_match_l0_reports_an_unreachable_target():
    # other sparsity terms keep L0 at most 3, whatever the L1 coefficient: the target 8 cannot be met
    m = compare.match_l0(lambda c: 3.0 / (1.0 + c), 8.0, 0.1, max_evals=5, tolerance=0.1)
    assert not m.matched
    assert m.coeff == min(c for c, _ in m.tries)  # the closest try is the smallest coefficient
    assert len(m.tries) <= 5


def test_match_l0_rejects_bad_input():
    with pytest.raises(ValueError, match="target > 0"):
        compare.match_l0(lambda c: 1.0, 0.0, 0.1)


# ----------------------------------------------------------------------------- intervals, conclusion
def test_t_interval_matches_the_formula():
    m, lo, hi = compare.t_interval([1.0, 2.0, 3.0])
    half = 4.302652729911275 * 1.0 / math.sqrt(3)  # t(0.975, 2) * sd / sqrt(n)
    assert m == pytest.approx(2.0) and lo == pytest.approx(2 - half) and hi == pytest.approx(2 + half)
    assert math.isnan(compare.t_interval([1.0])[1])


def _runs(ev: dict[str, list[float]], dead: dict[str, list[float]]) -> pd.DataFrame:
    rows = []
    for arch, values in ev.items():
        for seed, (v, d) in enumerate(zip(values, dead[arch], strict=True)):
            rows.append(
                {
                    "run": "matched",
                    "architecture": arch,
                    "seed": seed,
                    "coeff": np.nan,
                    "l0_matched": True,
                    "explained_variance": v,
                    "dead_fraction": d,
                    "l0": 8.0,
                }
            )
    rows.append(  # a search row must not enter the summary
        {
            "run": "search",
            "architecture": "relu_l1",
            "seed": 0,
            "coeff": 9.0,
            "l0_matched": True,
            "explained_variance": 5.0,
            "dead_fraction": 0.0,
            "l0": 1.0,
        }
    )
    return pd.DataFrame(rows)


def test_conclusion_is_derived_from_the_numbers():
    runs = _runs(
        {"topk": [0.90, 0.91, 0.92], "relu_l1": [0.80, 0.81, 0.82], "p3": [0.50, 0.70, 0.90]},
        {"topk": [0.2, 0.2, 0.2], "relu_l1": [0.0, 0.0, 0.0], "p3": [0.1, 0.1, 0.1]},
    )
    summary = compare.summarise(runs)
    assert list(summary["architecture"]) == ["relu_l1", "topk", "p3"]  # registry order
    assert summary.set_index("architecture").loc["relu_l1", "explained_variance"] == pytest.approx(0.81)
    lines = compare.conclusion(summary)
    ev = next(line for line in lines if line.startswith("**EV**"))
    assert "`topk` 0.910" in ev and "beats `relu_l1` 0.810 by 0.100 (12%)" in ev and "clear" in ev
    dead = next(line for line in lines if line.startswith("**dead share**"))
    assert "`relu_l1` 0.000" in dead and "beats `p3` 0.100" in dead  # lower is better
    # overlapping intervals: the winner is named but the margin is within the seeds' spread
    runs2 = _runs({"topk": [0.90, 0.91, 0.92], "p3": [0.6, 1.0, 1.4]}, {"topk": [0, 0, 0], "p3": [0, 0, 0]})
    lines2 = compare.conclusion(compare.summarise(runs2))
    assert "within the seeds' spread" in lines2[0] and "`p3`" in lines2[0].split("beats")[0]
    assert any("tie at 0.000" in line for line in lines2)


def test_conclusion_names_unmatched_l0():
    runs = _runs({"relu_l1": [0.8, 0.8, 0.8]}, {"relu_l1": [0, 0, 0]})
    runs.loc[runs["run"] == "matched", "l0_matched"] = False
    assert any(
        "L0 not matched" in line and "relu_l1" in line for line in compare.conclusion(compare.summarise(runs))
    )


# -------------------------------------------------------------------------------------- configs
def test_arch_config_matches_sizes_and_objectives():
    for arch in compare.ARCHITECTURES:
        cfg = compare.arch_config(arch, 16, 64, 4, 0.5)
        assert cfg.architecture == arch and cfg.n_latents == 64 and cfg.d_in == 16
    assert compare.arch_config("topk", 16, 64, 4).k == 4
    assert compare.arch_config("p3", 16, 64, 4, 0.5).beta == 0.0  # no scorer away from the MF site
    assert compare.arch_config("p3", 16, 64, 4, 0.5, p3_recipe={"beta": 1.0}).beta == 1.0
    with pytest.raises(ValueError, match="L1 coefficient"):
        compare.arch_config("relu_l1", 16, 64, 4)
    with pytest.raises(ValueError, match="architectures"):
        compare.CompareConfig(architectures=("nope",))
    with pytest.raises(ValueError, match="exceeds"):
        compare.CompareConfig(n_latents=8, k=16)
    with pytest.raises(ValueError, match="unknown keys"):
        compare.site_config("p1", {"stepz": 3})
    assert compare.site_config("p2", {"k": 4}).n_latents == 1024


def test_site_dataset_routes_movielens_1m():
    assert compare.site_dataset("p3", "ml-1m-prefix") == "ml-1m-notime"
    assert compare.site_dataset("p1", "ml-100k") == "ml-100k"


# ---------------------------------------------------------------------------------- planted data
def _planted_site() -> compare.Site:
    world = planted_world(n_users=300, n_items=200, n_groups=8, d=32, seed=0)
    split = planted_split(world)
    model = world.model
    half = len(world.users) // 2

    def rows(users: torch.Tensor) -> probe.ActivationSet:
        from recsae_core.models.base import UserBatch

        return probe.collect_activations(
            model, "planted.seq", UserBatch(users, world.seqs[users]), positions="all", progress=False
        )

    return compare.Site(
        "P1",
        "planted sequence",
        split.dataset,
        split,
        model,
        "planted.seq",
        rows(world.users[:half]),
        rows(world.users[half:]),
        world.item_groups,
        [f"g{g}" for g in range(world.item_groups.shape[1])],
        concept_site="planted.user",
    )


def test_compare_site_on_planted_concepts(tmp_path):
    """Rows are sums of 1-2 planted group directions: with 2 active latents of 32 a good SAE recovers the groups
    (features correlate with the groups far better than raw coordinates), TopK's L0 is exactly k, and the L1
    search brings ReLU+L1 within its tolerance of the same L0."""
    site = _planted_site()
    cfg = compare.CompareConfig(
        n_latents=32,
        k=2,
        architectures=("relu_l1", "topk"),
        seeds=(0, 1, 2),
        train=TrainConfig(steps=400, batch_size=256, warmup_steps=20),
        search_evals=6,
        search_tolerance=0.25,
        n_concept_latents=8,
    )
    runs = compare.compare_site(site, cfg, cache_dir=tmp_path)
    matched = runs[runs["run"] == "matched"]
    assert len(matched) == 6 and set(matched["seed"]) == {0, 1, 2}
    topk = matched[matched["architecture"] == "topk"]
    assert (topk["l0"] == 2.0).all()
    relu = matched[matched["architecture"] == "relu_l1"]
    m = runs.attrs["matches"]["relu_l1"]
    assert m.matched and abs(m.l0 - 2) / 2 <= 0.25
    assert (runs[runs["run"] == "search"]["coeff"] != m.coeff).all()  # the search's other coefficients
    assert (relu["coeff"] == m.coeff).all()
    # the planted groups are found: SAE features beat raw neurons on the genre correlation, EV is high
    assert (topk["mean_max_corr"] > topk["neuron_mean_max_corr"] + 0.1).all()
    assert (topk["explained_variance"] > 0.6).all()
    assert topk["purity@10"].min() > 0.8
    assert matched["description_confidence"].notna().all()
    # a second run is served by the SAE cache
    again = compare.compare_site(site, cfg, cache_dir=tmp_path)
    assert again["cache_hit"].all()
    pd.testing.assert_series_equal(
        again["explained_variance"].reset_index(drop=True), runs["explained_variance"].reset_index(drop=True)
    )
    # the explorer's SAE: the matched one, back from the cache (same weights as the evaluated run)
    sae = compare.matched_sae(site, cfg, runs, "relu_l1", 1, cache_dir=tmp_path)
    x = site.eval_acts.acts.float()
    with torch.no_grad():
        ev = 1 - ((sae(x).x_hat - x) ** 2).sum() / ((x - x.mean(0)) ** 2).sum()
    other = compare.matched_sae(site, cfg, runs, "relu_l1", 2, cache_dir=tmp_path)
    assert not torch.equal(other.W_dec, sae.W_dec)  # the seed picks the run
    row = relu[relu["seed"] == 1].iloc[0]
    assert abs(float(ev) - row["explained_variance"]) < 0.02, (float(ev), row["explained_variance"])
    assert sae.cfg.l1_coeff == m.coeff
    with pytest.raises(ValueError, match="no matched run"):
        compare.matched_sae(site, cfg, runs, "batch_topk", cache_dir=tmp_path)
    summary = compare.summarise(runs)
    assert (summary["seeds"] == 3).all()
    assert (
        (summary["explained_variance_lo"] <= summary["explained_variance"])
        & (summary["explained_variance"] <= summary["explained_variance_hi"])
    ).all()


def test_decoder_bias_starts_at_the_row_mean(tmp_path):
    site = _planted_site()
    cfg = compare.arch_config("topk", site.d_in, 16, 2)
    res = compare._train(
        site, cfg, TrainConfig(steps=1, lr=1e-9, warmup_steps=0), 0, device="cpu", cache_dir=tmp_path
    )
    mean = site.training_rows_matrix().float().mean(0)
    assert torch.allclose(res.sae.b_dec.detach().cpu(), mean, atol=1e-4)
    assert float(mean.norm()) > 0.1  # the check would pass trivially at a zero mean


def test_item_profiles_average_rows_per_item():
    acts = torch.tensor([[1.0, 0.0], [3.0, 2.0], [5.0, 0.0], [9.0, 9.0]])
    items = torch.tensor([0, 0, 2, -1])
    prof, ids = compare.item_profiles(acts, items, 4)
    assert ids.tolist() == [0, 2]
    assert torch.allclose(prof, torch.tensor([[2.0, 1.0], [5.0, 0.0]]))


def test_pareto_front():
    pts = pd.DataFrame({"l0": [2, 4, 8, 8], "ev": [0.5, 0.4, 0.9, 0.8]})
    assert compare.pareto_front(pts, "l0", "ev").tolist() == [True, False, True, False]
