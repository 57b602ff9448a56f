"""P1's analyses and plots on planted concepts (recsae_core/papers/p1.py, viz/p1.py, viz/sae.py, SteeringPanel)."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import numpy as np
import pandas as pd
import pytest
import torch

import recsae_core.sae as S
from recsae_core import probe
from recsae_core.data.dataset import RecDataset
from recsae_core.data.splits import leave_one_out
from recsae_core.evaluate import evaluate
from recsae_core.papers import p1
from recsae_core.synthetic import planted_rows, planted_world
from recsae_core.viz import p1 as vp1
from recsae_core.viz import sae as vsae
from recsae_core.viz.models import top_k

SITE = "planted.seq"


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    import matplotlib.pyplot as plt

    plt.close("all")


# ----------------------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def superposed():
    """24 planted labels in 16 dimensions (superposition): no raw neuron can isolate one."""
    pr = planted_rows(n_rows=8192, d=16, n_groups=24, n_items=240, noise=0.02, seed=0)
    res = S.train_sae(
        S.ReluL1Config(d_in=16, n_latents=96, l1_coeff=0.03, input_norm="none"),
        pr.acts,
        S.TrainConfig(steps=1500, batch_size=256, lr=3e-3, warmup_steps=50),
        progress=False,
        seed=7,  # not the planted seed: the SAE must not start on the planted directions
    )
    return pr, res.sae, [f"g{i}" for i in range(24)]


@pytest.fixture(scope="module")
def world():
    return planted_world(n_users=300, seed=0)


@pytest.fixture(scope="module")
def world_split(world):
    """The planted world as a RecDataset + leave-one-out split (history = the planted sequence)."""
    n_users, maxlen = world.seqs.shape
    r, c = torch.nonzero(world.seqs > 0, as_tuple=True)
    hist = pd.DataFrame({"user": r.numpy(), "item": (world.seqs[r, c] - 1).numpy(), "timestamp": c.numpy()})
    last = pd.DataFrame({"user": np.arange(n_users), "item": world.targets.numpy(), "timestamp": maxlen})
    inter = pd.concat([hist, last], ignore_index=True).assign(rating=np.float32(1.0))
    return leave_one_out(_planted_dataset(world, inter, "planted"))


def _planted_dataset(world, inter: pd.DataFrame, name: str) -> RecDataset:
    """The planted world's items (titled, no years) and genres g0, g1, ... around the interactions ``inter``."""
    n_items = world.item_groups.shape[0]
    items = pd.DataFrame(
        {
            "item_id": np.arange(n_items),
            "title": [f"item {i}" for i in range(n_items)],
            "year": pd.array([pd.NA] * n_items, dtype="Int64"),
        }
    )
    names = [f"g{i}" for i in range(world.item_groups.shape[1])]
    users = pd.DataFrame({"user_id": np.arange(world.seqs.shape[0])})
    return RecDataset(name, inter, items, world.item_groups.numpy().copy(), names, users)


@pytest.fixture(scope="module")
def world_sae(world):
    """P1's SAE (ReLU+L1, scalar input norm) on every position of the planted histories."""
    acts = probe.collect_activations(world.model, SITE, world.batch(), progress=False)
    res = S.train_sae(
        S.ReluL1Config(d_in=64, n_latents=32, l1_coeff=0.1),
        acts.acts,
        S.TrainConfig(steps=400, batch_size=256, lr=3e-3, warmup_steps=30),
        progress=False,
        seed=3,
    )
    return acts, res.sae


# ------------------------------------------------------------------------------------------- rows
def test_row_labels_are_the_input_items_labels(world):
    acts = probe.collect_activations(world.model, SITE, world.batch(), progress=False)
    lab = p1.row_labels(acts, world.item_groups.numpy())
    r, c = torch.nonzero(world.seqs > 0, as_tuple=True)
    assert torch.equal(lab, world.item_groups[world.seqs[r, c] - 1])
    bad = probe.ActivationSet(acts.acts[:2], acts.users[:2], torch.tensor([0, -1]), None, SITE)
    with pytest.raises(ValueError, match="item ids"):
        p1.row_labels(bad, world.item_groups.numpy())


# ------------------------------------------------------------------------------------------- sweep
def test_sweep_trains_each_config_once_through_the_cache(world, world_split, tmp_path):
    acts = probe.collect_activations(world.model, SITE, world.batch(), progress=False)
    kw = dict(
        eval_acts=acts,
        item_labels=world.item_groups,
        label_names=[f"g{i}" for i in range(8)],
        l1_coeffs=(0.01, 0.3),
        dict_sizes=(16, 32),
        l1_dict_size=32,
        size_l1=0.3,
        train_config=S.TrainConfig(steps=150, batch_size=256, lr=3e-3, warmup_steps=10),
        cache_dir=tmp_path,
        progress=False,
    )
    df = p1.sweep(world.model, SITE, world_split, acts, **kw)
    assert df[["sweep", "l1_coeff", "n_latents"]].values.tolist() == [
        ["l1", 0.01, 32],
        ["l1", 0.3, 32],
        ["dict_size", 0.3, 16],
        ["dict_size", 0.3, 32],
    ]
    assert df["cache_hit"].tolist() == [False, False, False, False]
    assert df.iloc[1].drop("sweep").equals(df.iloc[3].drop("sweep"))  # the shared config, trained once
    assert len(list(tmp_path.rglob("sae.safetensors"))) == 3
    assert df["l0"][0] > df["l0"][1]  # a larger L1 coefficient gives sparser codes
    assert (df["base_ndcg@10"] == evaluate(world.model, world_split, "test", ks=(10,))["ndcg@10"]).all()
    assert (df["mean_max_corr"] > df["neuron_mean_max_corr"]).all()
    again = p1.sweep(world.model, SITE, world_split, acts, **kw)
    assert again["cache_hit"].all()
    assert again.drop(columns=["cache_hit"]).equals(df.drop(columns=["cache_hit"]))


# -------------------------------------------------------------------------------- features vs neurons
def test_features_beat_neurons_for_planted_labels(superposed):
    pr, sae, names = superposed
    table = p1.features_vs_neurons(p1.encode_rows(sae, pr.acts), pr.acts, pr.labels, names, max_rows=None)
    assert list(table.columns[:5]) == ["label", "sae_corr", "sae_feature", "neuron_corr", "neuron"]
    assert sorted(table["label"]) == sorted(names) and table["sae_corr"].is_monotonic_decreasing
    assert (table["sae_corr"] > table["neuron_corr"]).all()
    assert (table["sae_auc"] > table["neuron_auc"]).mean() >= 0.9
    assert table.attrs["sae_mean_max_corr"] > 1.5 * table.attrs["neuron_mean_max_corr"]
    # ids point at the columns that attain the values
    corr = np.corrcoef(
        pr.acts[:, int(table["neuron"][0])].numpy(), pr.labels[:, names.index(table["label"][0])]
    )
    assert table["neuron_corr"][0] == pytest.approx(corr[0, 1], abs=1e-9)


# ------------------------------------------------------------------------------------ activation split
def test_activation_split_separates_present_and_absent(world, world_sae):
    acts, sae = world_sae
    H, G = p1.encode_rows(sae, acts.acts), p1.row_labels(acts, world.item_groups.numpy())
    names = [f"g{i}" for i in range(8)]
    feat = int(p1.steering_features(H, G, names)["feature"][3])
    split = p1.activation_split(H, G, feat, "g3", label_names=names)
    assert split.attrs == {"feature": feat, "label": "g3"}
    assert split["present"].to_numpy().tolist() == G[:, 3].tolist()
    assert np.array_equal(split["activation"].to_numpy(), H[:, feat].double().numpy())
    summ = p1.activation_split_summary(split)
    assert summ.loc["present", "rows"] == int(G[:, 3].sum())
    assert summ.loc["present", "fraction_fired"] > 0.95 > 0.4 > summ.loc["absent", "fraction_fired"]
    assert summ.loc["present", "mean"] > 5 * summ.loc["absent", "mean"]
    with pytest.raises(KeyError, match="nope"):
        p1.activation_split(H, G, feat, "nope", label_names=names)


# ---------------------------------------------------------------------------------------- logit effect
def test_logit_effect_ranks_the_planted_genre_on_top(world, world_sae):
    acts, sae = world_sae
    H, G = p1.encode_rows(sae, acts.acts), p1.row_labels(acts, world.item_groups.numpy())
    names = [f"g{i}" for i in range(8)]
    feats = p1.steering_features(H, G, names)["feature"].to_numpy()
    eff = p1.logit_effects(sae, world.model.item_emb)
    assert eff.shape == (32, 400)
    by_label = p1.logit_effect_by_label(eff, world.item_groups.numpy(), names)
    # each genre's feature raises that genre's items most (the planted direction)
    assert [by_label.loc[f].idxmax() for f in feats] == names
    top = p1.top_bottom_items(eff, int(feats[2]), k=10)
    assert world.item_groups[top.loc[top["side"] == "top", "item"].to_numpy(copy=True), 2].all()
    assert not world.item_groups[top.loc[top["side"] == "bottom", "item"].to_numpy(copy=True), 2].any()
    assert top["effect"][:10].is_monotonic_decreasing
    # the effect is in the site's raw space: decoding one unit of the feature moves the logits by it
    one = torch.zeros(1, 32)
    one[0, feats[2]] = 1.0
    move = (sae.decode(one) - sae.decode(torch.zeros(1, 32))).detach() @ world.model.item_emb.detach().T
    assert torch.allclose(eff[feats[2]], move[0], atol=1e-4)


# ------------------------------------------------------------------------------------- steering choice
def test_steering_feature_choice_picks_the_planted_feature():
    gen = torch.Generator().manual_seed(0)
    n = 4000
    G = torch.rand(n, 3, generator=gen) < 0.3
    mag = 0.5 + torch.rand(n, 3, generator=gen)
    noise = torch.rand(n, 6, generator=gen) * (torch.rand(n, 6, generator=gen) < 0.2)
    most = torch.rand(n, generator=gen) < 0.85
    H = torch.stack(
        [
            noise[:, 0],  # unrelated
            mag[:, 0] * G[:, 0] + 0.1 * noise[:, 1],  # planted g0
            mag[:, 1] * G[:, 1] + 0.1 * noise[:, 2],  # planted g1
            0.7 * G[:, 0] + 0.7 * G[:, 1] + noise[:, 3],  # polysemantic g0 + g1
            mag[:, 2] * G[:, 2] + 1.5 * noise[:, 4],  # planted g2: fires on every g2 row, noisy elsewhere
            3.0 * (G[:, 2] & most),  # g2 on 85 % of its rows only, clean elsewhere
        ],
        1,
    )
    names = ["a", "b", "c"]
    free = p1.steering_features(H, G, names)
    assert free["feature"].tolist()[:2] == [1, 2]
    assert free["feature"][2] == 5  # precondition: the 85 %-firing feature correlates more with g2
    strict = p1.steering_features(H, G, names, min_fraction_fired=0.9)
    assert strict["feature"].tolist() == [1, 2, 4]
    assert strict["fraction_fired"].min() == pytest.approx(1.0)
    assert strict["corr"][0] == pytest.approx(float(np.corrcoef(H[:, 1], G[:, 0])[0, 1]), abs=1e-9)
    none = p1.steering_features(H, G, names, min_fraction_fired=1.1)
    assert (none["feature"] == -1).all()


# ----------------------------------------------------------------------------------------- steering
def test_steered_top_k_raises_the_genre_share_monotonically(world, world_split, world_sae):
    acts, sae = world_sae
    H, G = p1.encode_rows(sae, acts.acts), p1.row_labels(acts, world.item_groups.numpy())
    feat = int(p1.steering_features(H, G, [f"g{i}" for i in range(8)])["feature"][2])
    for keep_error in (True, False):
        lists = p1.steered_top_k(world.model, SITE, sae, world_split, feat, p1.ALPHAS, keep_error=keep_error)
        assert len(lists) == len(p1.ALPHAS) * 300 * 10
        share = (
            lists.assign(g=world.item_groups[lists["item"].to_numpy(copy=True), 2].numpy())
            .groupby("alpha")["g"]
            .mean()
        )
        assert share.is_monotonic_increasing and share[10.0] > share[0.0] + 0.1 > share[-10.0] + 0.2
    # keep_error and α = 0: the base model's own lists (history masked, as the evaluation does)
    base = p1.steered_top_k(world.model, SITE, sae, world_split, feat, [0.0], users=[5, 7])
    ref = top_k(world.model, world_split, [5, 7], k=10)
    assert base["user"].unique().tolist() == [5, 7]
    assert (
        base["item"].tolist() == ref["item"].tolist()
        and base["is_target"].tolist() == ref["is_target"].tolist()
    )
    with pytest.raises(ValueError, match="requested users"):
        p1.steered_top_k(world.model, SITE, sae, world_split, feat, [0.0], users=[10_000])


def test_steering_curves_label_both_meanings_of_alpha_zero(world, world_split, world_sae):
    acts, sae = world_sae
    H, G = p1.encode_rows(sae, acts.acts), p1.row_labels(acts, world.item_groups.numpy())
    names = [f"g{i}" for i in range(8)]
    feats = p1.steering_features(H, G, names)
    chosen = {"g2": int(feats["feature"][2]), "g5": int(feats["feature"][5])}
    curves = p1.steering_curves(
        world.model, SITE, sae, world_split, chosen, item_labels=world.item_groups, label_names=names
    )
    assert len(curves) == 2 * 2 * len(p1.ALPHAS)
    assert set(curves["meaning"]) == {"p1", "ours"}
    assert dict(zip(curves["meaning"], curves["keep_error"], strict=True)) == {"p1": False, "ours": True}
    assert curves["alpha0"].str.contains("exact base model").sum() == 2 * len(p1.ALPHAS)
    for (_lab, _m), c in curves.groupby(["label", "meaning"]):
        c = c.sort_values("alpha")
        assert c["share"].is_monotonic_increasing and c["share"].iloc[-1] > c["share"].iloc[0] + 0.2
        assert c.loc[c["alpha"] == 0, "share_ratio"].item() == pytest.approx(1.0)
        assert c.loc[c["alpha"] == 0, "ndcg_drop"].item() == pytest.approx(0.0)
    ours0 = curves[(curves["meaning"] == "ours") & (curves["alpha"] == 0) & (curves["label"] == "g2")]
    base = evaluate(world.model, world_split, "test", ks=(10,))
    assert ours0["ndcg@10"].item() == pytest.approx(base["ndcg@10"], abs=1e-12)
    assert (curves["share"] == curves.apply(lambda r: r[f"share_{r['label']}"], axis=1)).all()


# -------------------------------------------------------------------------------------------- plots
def test_heatmap_orders_labels_and_puts_each_labels_best_feature_first():
    corr = torch.tensor([[0.1, 0.9, 0.0], [0.8, 0.0, 0.1], [0.0, 0.2, 0.3], [0.5, 0.5, 0.5]])
    labels, feats = vsae.heatmap_order(corr, n_features=4)
    assert labels == [1, 0, 2] and feats == [0, 1, 3, 2]
    fig = vsae.plot_feature_label_heatmap(corr, ["a", "b", "c"], n_features=3)
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_yticklabels()] == ["b", "a", "c"]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["0", "1", "3"]
    assert "0.733" in ax.get_title()  # mean over labels of the max correlation: (0.8 + 0.9 + 0.5) / 3
    assert ax.images[0].get_array().shape == (3, 3)


def test_sweep_and_feature_neuron_and_split_plots():
    sweep = pd.DataFrame(
        {
            "sweep": ["l1"] * 3 + ["dict_size"] * 2,
            "l1_coeff": [0.01, 0.1, 1.0, 0.1, 0.1],
            "n_latents": [2048] * 3 + [256, 1024],
            "explained_variance": [0.99, 0.97, 0.9, 0.95, 0.97],
            "l0": [100, 30, 5, 20, 30],
            "dead_fraction": [0.0, 0.1, 0.5, 0.0, 0.1],
            "mean_max_corr": [0.3, 0.5, 0.4, 0.45, 0.5],
            "neuron_mean_max_corr": [0.2] * 5,
        }
    )
    fig = vp1.plot_sweep(sweep)
    assert len(fig.axes) == 8 and fig.axes[0].get_xscale() == "log"
    assert fig.axes[4].get_xlabel() == "dictionary size" and "L1 0.1" in fig.axes[4].get_title()
    assert list(fig.axes[0].lines[0].get_ydata()) == [0.3, 0.5, 0.4]
    assert list(fig.axes[1].lines[0].get_ydata()) == [0.99, 0.97, 0.9]  # explained variance, L1 order
    assert list(fig.axes[6].lines[0].get_ydata()) == [20, 30]  # L0 of the size sweep
    table = pd.DataFrame(
        {
            "label": ["x", "y"],
            "sae_corr": [0.6, 0.4],
            "neuron_corr": [0.2, 0.3],
            "sae_auc": [0.9, 0.8],
            "neuron_auc": [0.7, 0.75],
        }
    )
    fig = vp1.plot_features_vs_neurons(table)
    bars = fig.axes[0].patches
    assert sorted(round(b.get_width(), 2) for b in bars) == [0.2, 0.3, 0.4, 0.6]
    assert [t.get_text() for t in fig.axes[0].get_yticklabels()] == ["y", "x"]
    split = pd.DataFrame({"activation": [0.0, 0.0, 1.0, 2.0], "present": [False, False, True, True]})
    split.attrs = {"feature": 4, "label": "x"}
    fig = vp1.plot_activation_split(split)
    hist, ecdf = fig.axes
    assert "feature 4" in hist.get_xlabel() and "ECDF" in ecdf.get_ylabel()
    assert [list(line.get_xdata()) for line in ecdf.lines] == [[1.0, 2.0], [0.0, 0.0]]


def test_users_curve_plot_draws_points_fit_and_the_paper_star():
    curve = pd.DataFrame({"train_users": [400, 800, 1600], "mean_max_corr": [0.44, 0.56, 0.63]})
    fit = {"a": 0.7, "b": 20.0, "c": 0.7}
    fig = vp1.plot_users_curve(curve, fit, 3262, 0.658, "ml-1m-prefix")
    ax = fig.axes[0]
    fitted, points, star = ax.lines
    assert fitted.get_xdata()[0] == 400 and fitted.get_xdata()[-1] == 3262
    assert fitted.get_ydata()[-1] == pytest.approx(0.7 - 20.0 * 3262**-0.7)
    assert list(points.get_ydata()) == [0.44, 0.56, 0.63] and list(star.get_xdata()) == [3262]
    assert "ml-1m-prefix" in points.get_label() and "training" in ax.get_title()


def test_steering_plots_and_slider(world_split):
    rows = []
    for meaning, keep in (("p1", False), ("ours", True)):
        for a in (-2.0, 0.0, 2.0):
            rows.append(
                {
                    "label": "g1",
                    "feature": 3,
                    "meaning": meaning,
                    "alpha0": p1.MEANINGS[meaning][1],
                    "keep_error": keep,
                    "alpha": a,
                    "share": 0.2 + 0.1 * a,
                    "ndcg@10": 0.1 - 0.01 * abs(a),
                    "ndcg_drop": 0.1 * abs(a),
                }
            )
    curves = pd.DataFrame(rows)
    fig = vsae.plot_steering_curves(curves)
    assert len(fig.axes) == 3  # share/NDCG pair (twin) + share vs drop
    legend = [t.get_text() for t in fig.legends[0].get_texts()]  # one legend above the panels
    assert any("exact base model" in t for t in legend) and any("with SAE" in t for t in legend)
    lists = pd.DataFrame(
        {
            "alpha": np.repeat([-2.0, 0.0, 2.0], 3),
            "user": 4,
            "rank": np.tile([1, 2, 3], 3),
            "item": [0, 1, 2, 3, 4, 5, 9, 17, 25],
            "score": 0.0,
            "is_target": False,
        }
    )
    ours = curves[curves["meaning"] == "ours"]
    sfig = vsae.steering_slider_figure(ours, lists, world_split.dataset, label="g1", k=3)
    steps = sfig.layout.sliders[0].steps
    assert [s.label for s in steps] == ["-2", "0", "2"]
    tables = [t for t in sfig.data if t.type == "table"]
    assert len(tables) == 3 and [t.visible for t in tables] == [False, True, False]  # starts at α = 0
    after = tables[2].cells.values[3]
    assert list(after) == ["item 9", "item 17", "item 25"] and list(tables[2].cells.values[1]) == [
        "item 3",
        "item 4",
        "item 5",
    ]
    vis = steps[2].args[0]["visible"]
    assert [v for v, t in zip(vis, sfig.data, strict=True) if t.type == "table"] == [False, False, True]
    with pytest.raises(ValueError, match="one user"):
        vsae.steering_slider_figure(
            ours, lists.assign(user=[1, 2] * 4 + [1]), world_split.dataset, label="g1"
        )


def test_steering_panel_shows_before_and_after(world, world_split, world_sae):
    pytest.importorskip("ipywidgets")
    from recsae_core.widgets import SteeringPanel

    acts, sae = world_sae
    H, G = p1.encode_rows(sae, acts.acts), p1.row_labels(acts, world.item_groups.numpy())
    names = [f"g{i}" for i in range(8)]
    feats = p1.steering_features(H, G, names)
    chosen = dict(zip(feats["label"], feats["feature"].astype(int), strict=True))
    panel = SteeringPanel(
        world.model, SITE, sae, world_split, chosen, groups={"all": list(range(300))}, alpha=0.0, k=10
    )
    html0 = panel.output.value
    assert "before (base model)" in html0 and "after (α = 0)" in html0
    panel.label.value = "g2"
    assert panel.feature.value == chosen["g2"]
    panel.alpha.value = 10.0
    html1 = panel.output.value
    lists = p1.steered_top_k(world.model, SITE, sae, world_split, chosen["g2"], [0.0, 10.0], users=[0])
    for t in ("item " + str(i) for i in lists["item"]):
        assert f"<td>{t}</td>" in html1
    shaded = int(world.item_groups[lists["item"].to_numpy(copy=True), 2].sum())  # g2 items, before + after
    assert html1.count('style="background:#fde2b8"') == shaded
    panel.who.value = "all"
    assert "g2 share of the top-10" in panel.output.value and "→" in panel.output.value
    panel.who.value = SteeringPanel.ONE_USER
    panel.user.value = 99_999
    assert "No user with id 99999" in panel.output.value


# ------------------------------------------------------------------------------- recipe and tables
def test_genre_labels_drop_placeholders_only(world_split):
    ds = world_split.dataset
    lab, names = p1.genre_labels(ds, drop=["g3", "unknown"])
    assert names == [f"g{i}" for i in range(8) if i != 3]
    assert lab.dtype == torch.bool and lab.shape == (ds.n_items, 7)
    assert torch.equal(lab[:, 3], torch.as_tensor(ds.item_labels[:, 4]).bool())
    full, all_names = p1.genre_labels(ds)  # nothing to drop in the planted world
    assert all_names == list(ds.label_names) and full.shape[1] == 8
    with pytest.raises(ValueError, match="no labels left"):
        p1.genre_labels(ds, drop=all_names)


def test_p1_recipe_unsquared_loss_makes_l1_scale_free():
    """P1's ML-1M recipe (unsquared reconstruction, raw inputs): scaling the activations by 10 scales the
    solution and leaves the sparsity alone; with the squared loss the same L1 coefficient sparsifies much
    less on the larger activations (why the library default gave denser, less aligned features)."""
    pr = planted_rows(n_rows=4096, d=16, n_groups=12, n_items=120, noise=0.02, seed=1)
    tc = p1.p1_train_config(steps=600, batch_size=256, warmup_steps=20)
    assert (tc.batch_size, tc.lr, tc.sampling) == (256, 1e-3, "replacement")
    assert (p1.p1_train_config().steps, p1.p1_train_config().batch_size) == (5000, 1024)

    def l0(recon: str, scale: float) -> float:
        cfg = p1.p1_sae_config(16, n_latents=64, l1_coeff=0.05, recon=recon)
        res = S.train_sae(cfg, pr.acts * scale, tc, seed=2, progress=False)
        return float((p1.encode_rows(res.sae, pr.acts * scale) > 0).sum(1).float().mean())

    cfg = p1.p1_sae_config(16)
    assert (cfg.n_latents, cfg.l1_coeff, cfg.input_norm, cfg.recon) == (512, 0.1, "none", "unsquared")
    un = l0("unsquared", 10.0) / l0("unsquared", 1.0)
    sq = l0("squared", 10.0) / l0("squared", 1.0)
    assert 0.87 < un < 1.15  # measured 1.10 (optimisation only: the optimum itself is scale-free)
    assert sq > 1.3  # measured 1.40: the same L1 is weaker on 10x larger inputs


def _curve(label: str, meaning: str, shares: list[float], ndcgs: list[float]) -> pd.DataFrame:
    alphas = [-10.0, -4.0, 0.0, 4.0, 10.0]
    df = pd.DataFrame(
        {
            "label": label,
            "feature": 7,
            "meaning": meaning,
            "alpha": alphas,
            "share": shares,
            "ndcg@10": ndcgs,
            "hr@10": [2 * n for n in ndcgs],
            "coverage@10": 0.3,
            "diversity@10": 0.9,
        }
    )
    df["share_ratio"] = df["share"] / df.loc[df["alpha"] == 0, "share"].item()
    df["ndcg_drop"] = 1 - df["ndcg@10"] / df.loc[df["alpha"] == 0, "ndcg@10"].item()
    return df


def test_steering_table_has_p1s_shape_and_says_what_alpha_zero_is():
    c = pd.concat(
        [
            _curve("Sci-Fi", "p1", [0.05, 0.1, 0.2, 0.4, 0.7], [0.08, 0.09, 0.1, 0.09, 0.07]),
            _curve("Sci-Fi", "ours", [0.05, 0.1, 0.21, 0.4, 0.7], [0.08, 0.09, 0.11, 0.09, 0.07]),
        ]
    )
    t = p1.steering_table(c, "Sci-Fi", meaning="p1")
    assert list(t.columns) == ["-10", "-4", "0 (with SAE)", "+4", "+10"]
    assert list(t.index) == [
        "Sci-Fi share of top-10",
        "NDCG@10",
        "HR@10",
        "coverage@10",
        "inter-list diversity@10",
    ]
    assert t.loc["Sci-Fi share of top-10", "+10"] == 0.7 and t.loc["NDCG@10", "0 (with SAE)"] == 0.1
    ours = p1.steering_table(c, "Sci-Fi", meaning="ours", alphas=(0.0, 10.0, 3.0))
    assert list(ours.columns) == ["0 (base model)", "+10"]  # α = 3 is not on the curve: left out
    assert ours.loc["Sci-Fi share of top-10", "0 (base model)"] == 0.21
    with pytest.raises(KeyError, match="meaning"):
        p1.steering_table(c, "Western")
    with pytest.raises(KeyError, match="α = 0"):
        p1.steering_table(c, "Sci-Fi", alphas=(4.0, 10.0))


def test_steering_tradeoff_takes_the_best_ratio_within_p1s_ndcg_cost():
    ratio, drop = p1.P1_STEERING_POINT
    assert ratio == pytest.approx(0.624 / 0.189) and drop == pytest.approx(1 - 0.0684 / 0.0928)
    good = _curve("Sci-Fi", "p1", [0.05, 0.1, 0.2, 0.5, 0.9], [0.08, 0.09, 0.1, 0.085, 0.05])
    # α = +10 would reach × 4.5 but costs 50 % NDCG; α = +4 gives × 2.5 for 15 %: not P1's × 3.3
    weak = _curve("Western", "p1", [0.05, 0.1, 0.2, 0.5, 0.9], [0.08, 0.09, 0.1, 0.085, 0.05])
    weak.loc[weak["alpha"] == 4.0, "share"] = 0.5
    good.loc[good["alpha"] == 4.0, ["share", "share_ratio"]] = [0.7, 3.5]
    none = _curve("Horror", "ours", [0.05, 0.1, 0.2, 0.5, 0.9], [0.08, 0.09, 0.1, 0.05, 0.01])
    # both α > 0 within the cost: the larger α is not the better one here
    peak = _curve("Comedy", "p1", [0.05, 0.1, 0.2, 0.7, 0.5], [0.08, 0.09, 0.1, 0.09, 0.08])
    t = p1.steering_tradeoff(pd.concat([good, weak, none, peak])).set_index("label")
    assert t.loc["Comedy", "alpha"] == 4.0 and t.loc["Comedy", "share_ratio"] == pytest.approx(3.5)
    assert t.loc["Sci-Fi", "alpha"] == 4.0 and t.loc["Sci-Fi", "dominates"]
    assert t.loc["Sci-Fi", "ndcg_drop"] == pytest.approx(0.15)
    assert t.loc["Western", "alpha"] == 4.0 and not t.loc["Western", "dominates"]
    assert t.loc["Western", "share_ratio"] == pytest.approx(2.5)
    assert np.isnan(t.loc["Horror", "alpha"]) and not t.loc["Horror", "dominates"]


def test_selectivity_reconstruction_and_paper_table(world, world_split, world_sae):
    from types import SimpleNamespace

    from recsae_core.sae_eval import evaluate_sae

    acts, sae = world_sae
    H, G = p1.encode_rows(sae, acts.acts), p1.row_labels(acts, world.item_groups.numpy())
    names = [f"g{i}" for i in range(8)]
    feats = p1.steering_features(H, G, names)
    eff = p1.logit_effects(sae, world.model.item_emb)
    chosen = {"g2": int(feats["feature"][2]), "g5": int(feats["feature"][5])}
    sel = p1.steering_selectivity(eff, world.item_groups.numpy(), chosen, names).set_index("label")
    assert (sel["selectivity"] > 0).all()
    g2 = world.item_groups[:, 2].bool()
    assert sel.loc["g2", "effect_on_genre"] == pytest.approx(float(eff[chosen["g2"], g2].double().mean()))
    assert sel.loc["g2", "genre_items"] == int(g2.sum())

    run = SimpleNamespace(test_acts=acts, sae=sae, sae_acts=H)
    rep = evaluate_sae(sae, world.model, SITE, world_split, acts=acts, item_labels=world.item_groups)
    t = p1.reconstruction_summary(run, rep).set_index("quantity")
    assert t.loc["explained variance", "recsae"] == pytest.approx(rep.explained_variance, abs=1e-4)
    assert t.loc["explained variance", "P1 ML-1M (dev)"] == 0.9707
    # one feature silenced, one kept below 0.1: the two dead counts must differ as the thresholds say
    h2 = H.clone()
    h2[:, 0], h2[:, 1] = 0.0, h2[:, 1].clamp(max=0.05)
    t2 = p1.reconstruction_summary(SimpleNamespace(test_acts=acts, sae=sae, sae_acts=h2), rep)
    t2 = t2.set_index("quantity")["recsae"]
    assert t2["dead features (never > 0)"] == int((h2.max(0).values <= 0).sum())
    assert t2["features never > 0.1"] == int((h2.max(0).values <= 0.1).sum())
    assert t2["features never > 0.1"] > t2["dead features (never > 0)"] >= 1
    assert t.loc["active features per position (> 0)", "recsae"] == pytest.approx(
        float((H > 0).sum(1).double().mean())
    )
    assert t.loc["NDCG@10, SAE spliced in, error kept", "recsae"] == pytest.approx(
        t.loc["NDCG@10, base model", "recsae"], abs=1e-12
    )
    fvn = p1.features_vs_neurons(H, acts.acts, G, names)
    curves = p1.steering_curves(
        world.model,
        SITE,
        sae,
        world_split,
        {"g2": chosen["g2"]},
        item_labels=world.item_groups,
        label_names=names,
        values=[0.0, 10.0],
    )
    h = p1.headline(rep, fvn, curves, label="g2")
    assert h["mean_max_corr"] == fvn.attrs["sae_mean_max_corr"] and h["scifi_share_10"] > h["scifi_share_0"]
    paper = p1.paper_vs_recsae({"recsae planted": h}, {"recsae planted": "a planted world"})
    assert list(paper.columns) == ["P1 ML-1M (dev)", "P1 ML-20M (paper)", "recsae planted"]
    assert paper.loc["mean max correlation, SAE", "P1 ML-1M (dev)"] == "0.658"
    assert paper.loc["mean max correlation, SAE", "recsae planted"] == f"{h['mean_max_corr']:.3f}"
    assert paper.loc["setup", "recsae planted"] == "a planted world"


def test_recipe_comparison_trains_each_variant_on_the_runs_rows(world, world_sae, tmp_path, monkeypatch):
    from types import SimpleNamespace

    monkeypatch.setenv("RECSAE_HOME", str(tmp_path))
    acts, sae = world_sae
    H, G = p1.encode_rows(sae, acts.acts), p1.row_labels(acts, world.item_groups.numpy())
    run = SimpleNamespace(
        train_acts=acts, test_acts=acts, sae=sae, sae_acts=H, labels=G, sae_result=SimpleNamespace(meta={})
    )
    tc = p1.p1_train_config(steps=150, batch_size=256, warmup_steps=10)
    variants = {"squared": p1.p1_sae_config(64, n_latents=32, recon="squared")}
    t = p1.recipe_comparison(run, variants, train_config=tc)
    assert t["recipe"].tolist() == ["this page (P1's recipe)", "squared"]
    assert t.loc[0, "mean_max_corr"] == pytest.approx(
        p1.features_vs_neurons(H, acts.acts, G, list("abcdefgh"), auc=False).attrs["sae_mean_max_corr"]
    )
    assert t.loc[1, "recon"] == "squared" and t.loc[1, "cache_hit"] is False
    trained = S.train_sae(variants["squared"], acts.acts, tc, seed=0, progress=False).sae
    h1 = p1.encode_rows(trained, acts.acts)
    assert t.loc[1, "l0"] == pytest.approx(float((h1 > 0).sum(1).double().mean()), rel=1e-6)
    again = p1.recipe_comparison(run, variants, train_config=tc)
    assert again.loc[1, "cache_hit"] is True and again.loc[1, "l0"] == t.loc[1, "l0"]


# ------------------------------------------------------------------------------------ correlation gap
@pytest.fixture(scope="module")
def p1_world(world):
    """The planted world with staggered start times (user u starts at u * 1000), split as P1 splits."""
    from recsae_core.data.splits import p1_new_users

    r, c = torch.nonzero(world.seqs > 0, as_tuple=True)
    inter = pd.DataFrame(
        {
            "user": r.numpy(),
            "item": (world.seqs[r, c] - 1).numpy(),
            "timestamp": (r * 1000 + c).numpy(),
            "rating": np.float32(1.0),
        }
    )
    ds = _planted_dataset(world, inter, "planted-p1")
    return ds, p1_new_users(ds)


def test_subsample_train_users_is_nested_and_keeps_the_probed_rows(p1_world):
    _, split = p1_world
    half, quarter = p1.subsample_train_users(split, 0.5), p1.subsample_train_users(split, 0.25)
    n = split.train["user"].nunique()
    assert half.train["user"].nunique() == round(0.5 * n) and quarter.train["user"].nunique() == round(
        0.25 * n
    )
    assert set(quarter.train["user"]) <= set(half.train["user"]) <= set(split.train["user"])
    kept = split.train[split.train["user"].isin(half.train["user"].unique())]
    assert len(half.train) == len(kept)  # whole histories of the kept users
    for part in ("sae", "test_full"):
        assert half.extra[part] is split.extra[part]
    assert half.test is split.test and half.valid is split.valid and half.name != split.name
    assert p1.subsample_train_users(split, 1.0) is split
    with pytest.raises(ValueError, match="fraction"):
        p1.subsample_train_users(split, 0.0)


def test_linear_decodability_finds_linear_labels_only():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(4000, 8, generator=g)
    linear = (x @ torch.arange(1.0, 9.0) > 2.0)[:, None]
    noise = torch.rand(4000, 1, generator=g) < 0.3
    r = p1.linear_decodability(x, torch.cat([linear, noise], 1))
    assert r[0] > 0.75 and r[1] < 0.1
    shifted = p1.linear_decodability(x + 5.0, torch.cat([linear, noise], 1))  # the intercept absorbs offsets
    assert torch.allclose(r, shifted, atol=1e-6)
    with pytest.raises(ValueError, match="rows"):
        p1.linear_decodability(x[:10], noise)


def test_training_users_curve_varies_only_the_base_models_users(p1_world, tmp_path, monkeypatch):
    from recsae_core import metrics
    from recsae_core.cache import cached_fit
    from recsae_core.sae_eval import cached_activations, cached_sae

    monkeypatch.setenv("RECSAE_HOME", str(tmp_path))
    ds, split = p1_world
    mc = {"d": 16, "n_heads": 1, "maxlen": 20, "epochs": 2, "batch_size": 64, "patience": 1}
    sc = p1.p1_sae_config(16, n_latents=32)
    tc = p1.p1_train_config(steps=100, batch_size=256, warmup_steps=10)
    kw = dict(model_config=mc, sae_config=sc, train_config=tc, cache_dir=tmp_path)
    c = p1.training_users_curve(ds, (0.5, 1.0), **kw)
    n = split.train["user"].nunique()
    assert c["fraction"].tolist() == [0.5, 1.0] and c["train_users"].tolist() == [round(n / 2), n]
    genres = [col for col in c.columns if col.startswith("corr_")]
    assert len(genres) == len(ds.label_names)
    assert c["mean_max_corr"].to_numpy() == pytest.approx(c[genres].mean(axis=1).to_numpy())
    # the half row is the half-users model's SAE on the unchanged test rows, recomputed from the caches
    half = p1.subsample_train_users(split, 0.5)
    fit = cached_fit("sasrec", half, {**p1.P1_MODEL_CONFIG, **mc}, cache_dir=tmp_path)
    assert fit.from_cache
    rec = fit.model.eval()
    akw = dict(positions="all", progress=False, cache_dir=tmp_path)
    tr = cached_activations(rec, "sasrec.block0", p1.sequences(split, "sae", 20), **akw)
    te = cached_activations(rec, "sasrec.block0", p1.sequences(split, "test_full", 20), **akw)
    res = cached_sae(tr, sc, tc, seed=0, cache_dir=tmp_path, progress=False)
    assert res.meta.get("cache_hit") is True
    h, g = p1.encode_rows(res.sae, te.acts), p1.row_labels(te, p1.genre_labels(ds)[0])
    assert c.loc[0, "mean_max_corr"] == pytest.approx(metrics.mean_max_correlation(h, g))
    assert c.loc[0, "linear_r"] == pytest.approx(float(p1.linear_decodability(te.acts, g).mean()))
    seen = torch.zeros(ds.n_items, dtype=torch.bool)
    seen[torch.from_numpy(half.train["item"].to_numpy(np.int64, copy=True))] = True
    common = seen[te.items]
    assert c.attrs == {"test_rows": len(te.items), "common_rows": int(common.sum())}
    assert c.loc[0, "mean_max_corr_common"] == pytest.approx(
        metrics.mean_max_correlation(h[common], g[common])
    )
    other = p1.training_users_curve(ds, (1.0,), sae_seed=1, **kw)  # same model (cached), another SAE
    assert other.loc[0, "ndcg@10"] == c.loc[1, "ndcg@10"]
    assert other.loc[0, "mean_max_corr"] != c.loc[1, "mean_max_corr"]


def test_genre_gap_puts_p1s_per_genre_numbers_beside_the_runs():
    from types import SimpleNamespace

    assert np.mean(list(p1.P1_ML1M_DEV_GENRES.values())) == pytest.approx(
        p1.P1_ML1M_DEV["mean_max_corr"], abs=5e-4
    )
    g = torch.Generator().manual_seed(0)
    labels = torch.rand(2000, 3, generator=g) < torch.tensor([0.4, 0.05, 0.2])
    noisy = labels[:, 0].double() + torch.randn(2000, generator=g).double()  # Drama: a weak feature only
    h = torch.stack([noisy.clamp_min(0), labels[:, 1].double()], 1)  # feature 1 is exactly Western
    run = SimpleNamespace(sae_acts=h, labels=labels, label_names=["Drama", "Western", "g2"])
    t = p1.genre_gap(run)
    assert t["label"].tolist() == ["Drama", "Western"]  # sorted by diff; g2 is not one of P1's genres
    west = t.set_index("label").loc["Western"]
    assert west["recsae"] == pytest.approx(1.0) and west["recsae_feature"] == 1
    assert west["diff"] == pytest.approx(1.0 - 0.761) and west["share"] == pytest.approx(
        float(labels[:, 1].double().mean())
    )
    assert t.attrs["diff_mean"] == pytest.approx(t["recsae"].mean() - t["p1"].mean())
    with pytest.raises(ValueError, match="P1's ML-1M genres"):
        p1.genre_gap(SimpleNamespace(sae_acts=h, labels=labels, label_names=["a", "b", "c"]))


def test_extrapolate_users_recovers_a_saturating_curve_and_checks_itself():
    n = np.array([400, 800, 1200, 1600, 400, 800, 1200, 1600])
    truth = 0.7 - 20.0 * n**-0.8
    noise = np.array([0.01, 0.0, 0.0, 0.0, -0.01, 0.0, 0.0, 0.0])  # two seeds at n = 400, averaging out
    curve = pd.DataFrame({"train_users": n, "mean_max_corr": truth + noise, "linear_r": truth / 2})
    e = p1.extrapolate_users(curve, users=3200)
    assert e["n_points"] == 4 and e["users"] == 3200
    assert e["pred"] == pytest.approx(0.7 - 20.0 * 3200**-0.8, abs=1e-4) and e["a"] == pytest.approx(
        0.7, abs=1e-3
    )
    assert e["holdout_users"] == 1600 and e["holdout_pred"] == pytest.approx(e["holdout_true"], abs=1e-4)
    assert p1.extrapolate_users(curve, users=3200, column="linear_r")["pred"] == pytest.approx(
        e["pred"] / 2, abs=1e-4
    )
    off = curve.assign(mean_max_corr=curve["mean_max_corr"] + 0.02 * (curve["train_users"] == 1600))
    o = p1.extrapolate_users(off, users=3200)  # the check fits without n = 1600, so it sees the jump
    assert o["holdout_pred"] == pytest.approx(0.7 - 20.0 * 1600**-0.8, abs=1e-4)
    assert o["holdout_true"] == pytest.approx(o["holdout_pred"] + 0.02, abs=1e-4)
    three = p1.extrapolate_users(curve[curve["train_users"] < 1600], users=1600)
    assert "holdout_pred" not in three and three["pred"] == pytest.approx(0.7 - 20.0 * 1600**-0.8, abs=1e-3)
    with pytest.raises(ValueError, match="at least 3"):
        p1.extrapolate_users(curve[curve["train_users"] < 1200])
