"""P3 analyses (recsae_core.papers.p3) on planted concepts with known answers, plus ML-100k metadata plumbing."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from recsae_core import metrics
from recsae_core.models.twotower import MF, NCF, MFConfig, NCFConfig
from recsae_core.papers import p3
from recsae_core.sae import P3SAE, MatryoshkaConfig, MatryoshkaSAE, P3Config

D, G = 6, 4  # embedding size; planted genres 0..3 live on coordinates 0..3


# ------------------------------------------------------------------------------------------ fixtures
def exact_sae(d: int = D) -> P3SAE:
    """Tied ReLU SAE with W = [I; -I]: z = (relu(x), relu(-x)), x_hat = relu(x) - relu(-x) = x exactly.

    Latent j < d is the positive part of coordinate j, so coordinate g's neuron is neuron g.
    """
    sae = P3SAE(P3Config(d_in=d, n_latents=2 * d, pre_bias=False))
    with torch.no_grad():
        sae.W_enc.copy_(torch.cat([torch.eye(d), -torch.eye(d)]))
        sae.b_enc.zero_()
    return sae.eval()


def random_sae(d: int = D, seed: int = 0) -> P3SAE:
    torch.manual_seed(seed)
    return P3SAE(P3Config(d_in=d, n_latents=2 * d)).eval()


def planted_items(n_per: int = 15, seed: int = 0) -> tuple[torch.Tensor, np.ndarray]:
    """Items of genre g = ``c * e_g`` + small positive noise on the other genre coordinates; ``(I, D)``
    embeddings and ``(I, G)`` one-hot genres. Coordinates G..D-1 carry small noise only."""
    gen = torch.Generator().manual_seed(seed)
    n = n_per * G
    genre = torch.arange(n) % G
    emb = 0.05 * torch.rand(n, D, generator=gen)
    emb[torch.arange(n), genre] = 0.5 + torch.rand(n, generator=gen)
    labels = np.zeros((n, G), bool)
    labels[np.arange(n), genre.numpy()] = True
    return emb, labels


def planted_mf(n_users: int = 40, seed: int = 0) -> tuple[MF, np.ndarray]:
    """MF over the planted items; users with non-negative tastes (one favourite genre each), zero biases."""
    emb, labels = planted_items(seed=seed)
    gen = torch.Generator().manual_seed(seed + 1)
    mf = MF(n_users, len(emb), MFConfig(d=D))
    users = 0.2 * torch.rand(n_users, D, generator=gen)
    users[torch.arange(n_users), torch.arange(n_users) % G] += 1.0
    with torch.no_grad():
        mf.item_emb.weight.copy_(emb)
        mf.user_emb.weight.copy_(users)
    return mf.eval(), labels


def planted_ncf(n_users: int = 40, seed: int = 0) -> NCF:
    emb, _ = planted_items(seed=seed)
    torch.manual_seed(seed)
    ncf = NCF(n_users, len(emb), NCFConfig(d=D, hidden=(8,)))
    with torch.no_grad():
        ncf.item_emb.weight.copy_(emb)
    return ncf.eval()


# ------------------------------------------------------------------------------------------ fidelity
def test_fidelity_perfect_reconstruction_hits_ceiling_random_is_far_below():
    mf, _ = planted_mf()
    users = torch.arange(40)
    hist = pd.DataFrame({"user": [0, 1, 2], "item": [0, 5, 9]})
    perfect = p3.fidelity(mf, exact_sae(), users, history=hist)
    assert perfect.rbo == pytest.approx(metrics.rbo_ceiling(0.9, 30), abs=1e-9)
    assert perfect.ceiling == pytest.approx(0.9576, abs=1e-4)
    assert perfect.kendall_tau == pytest.approx(1.0)
    assert len(perfect.per_user) == 40 and perfect.mask_seen
    rand = p3.fidelity(mf, random_sae(), users, history=hist)
    assert rand.rbo < 0.8 * perfect.rbo and rand.kendall_tau < 0.8
    frame = perfect.to_frame()
    assert list(frame.columns) == ["rbo", "rbo_ceiling", "kendall_tau", "n_users", "mask_seen"]


def test_fidelity_reconstructs_user_and_item_side():
    """An SAE exact on users but not items (or vice versa) must lose fidelity: both tables are reconstructed."""
    mf, _ = planted_mf()
    sae = exact_sae()

    class ItemsBroken(torch.nn.Module):  # wraps the exact SAE, scrambles rows that look like item rows
        def __init__(self) -> None:
            super().__init__()
            self.inner = sae

        def forward(self, x):
            out = self.inner(x)
            if x.shape[0] == mf.n_items:
                perm = torch.randperm(x.shape[0], generator=torch.Generator().manual_seed(0))
                return out._replace(x_hat=out.x_hat[perm])
            return out

    res = p3.fidelity(mf, ItemsBroken(), torch.arange(40), mask_seen=False)
    assert res.rbo < 0.5


def test_fidelity_seen_masking_mf_vs_ncf_and_matches_a_manual_computation():
    mf, _ = planted_mf()
    ncf = planted_ncf()
    assert p3.default_mask_seen(mf) is True and p3.default_mask_seen(ncf) is False
    with pytest.raises(ValueError, match="history"):
        p3.fidelity(mf, random_sae(), [0, 1])  # MF masks by default and needs the history
    assert p3.fidelity(ncf, random_sae(), [0, 1]).mask_seen is False
    # manual reference for MF with masking
    users = torch.arange(10)
    hist = pd.DataFrame({"user": np.repeat(np.arange(10), 12), "item": np.tile(np.arange(0, 60, 5), 10)})
    sae = random_sae(seed=3)
    got = p3.fidelity(mf, sae, users, history=hist)
    seen = torch.zeros(10, mf.n_items, dtype=torch.bool)
    seen[torch.as_tensor(hist.user.to_numpy().copy()), torch.as_tensor(hist.item.to_numpy().copy())] = True
    with torch.no_grad():
        u, items = mf.user_emb.weight[users], mf.item_emb.weight
        a = metrics.top_k_items(mf.score_vectors(u, items, users), 30, seen)
        b = metrics.top_k_items(mf.score_vectors(sae(u).x_hat, sae(items).x_hat, users), 30, seen)
    assert np.allclose(got.per_user["rbo"].values, metrics.rbo(a, b).numpy())
    unmasked = p3.fidelity(mf, sae, users, mask_seen=False)
    assert not np.allclose(got.per_user["rbo"].values, unmasked.per_user["rbo"].values)


# ------------------------------------------------------------------------------------ purity, profiles
def test_purity_table_picks_the_planted_genre_neuron():
    mf, labels = planted_mf()
    acts = p3.two_tower_activations(mf, exact_sae(), users=[0, 1, 2])
    assert acts.item_acts.shape == (60, 2 * D) and acts.user_acts.shape == (3, 2 * D)
    assert torch.equal(acts.users, torch.tensor([0, 1, 2]))
    tab = p3.purity_table(acts.item_acts, labels, ["a", "b", "c", "d"], ks=(10, 15))
    assert list(tab.index) == ["a", "b", "c", "d"]
    assert tab["neuron"].tolist() == [0, 1, 2, 3]
    assert (tab[["purity@10", "purity@15"]] == 1.0).all().all()


def test_purity_table_fixes_one_neuron_across_k_and_breaks_ties_by_profile():
    n = 100
    lab = np.zeros(n, bool)
    lab[:30] = True
    acts = torch.zeros(n, 3)
    # neuron 0: the same top-10 as neuron 2 (purity@10 = 1) but it fires on every item -> lift 6.83/4.15 = 1.6
    acts[:, 0] = 3.0
    acts[:10, 0] = 10 + torch.arange(10.0)
    # neuron 1: 9 of its top-10 are label items, and ranks 11-30 too -> purity@10 0.9, purity@50 30/50
    acts[:29, 1] = 3.0
    acts[40, 1] = 4.0
    # neuron 2: top-10 are label items, then 40 non-label items -> purity@10 = 1, purity@50 = 10/50
    acts[:10, 2] = 10 + torch.arange(10.0)
    acts[30:70, 2] = 1.0  # lift: mean over label 145/30 / overall mean 185/100 = 2.6
    tab = p3.purity_table(acts, lab, ["x"], ks=(10, 50))
    assert tab.loc["x", "neuron"] == 2  # purity@10 ties 0 and 2; neuron 2's profile lift is higher
    assert tab.loc["x", "purity@10"] == 1.0
    assert tab.loc["x", "purity@50"] == pytest.approx(0.2)  # the same neuron, not neuron 1's 0.6
    assert p3.match_neuron(acts, lab, k=50) == 1


def test_genre_profiles_and_top_items():
    acts = torch.tensor([[1.0, 0.0], [3.0, 2.0], [0.0, 4.0]])
    lab = np.array([[True, False], [True, True], [False, True]])
    prof = p3.genre_profiles(acts, lab, ["g0", "g1"])
    assert prof.loc[0, "g0"] == pytest.approx(2.0) and prof.loc[1, "g1"] == pytest.approx(3.0)
    assert prof.loc[0, "all items"] == pytest.approx(4 / 3)
    items = pd.DataFrame({"title": ["A", "B", "C"]})
    top = p3.top_items_table(acts, items, [1], k=2, item_labels=lab, label_names=["g0", "g1"])
    assert top["title"].tolist() == ["C", "B"] and top["labels"].tolist() == ["g1", "g0|g1"]


def test_monosemanticity_genre_neuron_beats_a_mixed_one():
    emb, labels = planted_items()
    acts = torch.zeros(len(emb), 2)
    acts[:, 0] = torch.as_tensor(labels[:, 0], dtype=torch.float32) * (1 + torch.rand(len(emb)))
    acts[:, 1] = torch.rand(len(emb))  # mixes all genres
    ms = p3.monosemanticity(acts, emb, top=10)
    assert ms.index.name == "neuron" and ms[0] > ms[1] + 0.3


# ---------------------------------------------------------------------------------------- popularity
def test_item_bias_popularity_reads_mf_bias_and_skips_ncf():
    counts = torch.tensor([0, 1, 3, 10, 30, 100])
    mf = MF(3, 6, MFConfig(d=4))
    with torch.no_grad():
        mf.item_bias.copy_(torch.log1p(counts.double()).float() * 2 - 1)
    assert p3.item_bias_popularity(mf, counts) == pytest.approx(1.0)
    with torch.no_grad():
        mf.item_bias.copy_(-mf.item_bias)
    assert p3.item_bias_popularity(mf, counts) == pytest.approx(-1.0)
    assert p3.item_bias_popularity(NCF(3, 6, NCFConfig(d=4)), counts) is None
    with pytest.raises(ValueError, match="6"):
        p3.item_bias_popularity(mf, counts[:5])


def test_popularity_neuron_tracks_distinct_user_counts():
    gen = torch.Generator().manual_seed(0)
    n_items = 80
    # item i is seen by i % 40 distinct users (plus a duplicate row that must not count)
    rows = [(u, i) for i in range(n_items) for u in range(i % 40)] + [(0, 1)] * 50
    inter = pd.DataFrame(rows, columns=["user", "item"])
    counts = p3.item_user_counts(inter, n_items)
    assert counts[1] == 1 and counts[39] == 39
    acts = torch.rand(n_items, 5, generator=gen)
    acts[:, 3] = counts.float() + 0.1 * torch.rand(n_items, generator=gen)
    pop = p3.popularity_neuron(acts, counts, top=10)
    assert pop.neuron == 3 and pop.table["is_popularity"].sum() == 1
    assert pop.mean_rank < pop.others_mean_rank / 2
    assert pop.table.loc[3, "percentile"] == pytest.approx(pop.mean_rank / n_items)


# ------------------------------------------------------------------------------------------ temporal
def test_item_decades_and_decade_profiles():
    items = pd.DataFrame(
        {
            "title": ["A (1995)", "B (1972)", "C (1991)", "D", "E (1975)", "F (1998)"],
            "year": pd.array([1995, pd.NA, 1991, pd.NA, 1975, 1998], dtype="Int64"),
        }
    )
    dec = p3.item_decades(items)
    assert dec.tolist()[:3] == [1990, 1970, 1990] and pd.isna(dec[3])
    acts = torch.tensor([[5.0, 0], [0, 5], [4, 0], [9, 9], [0, 4], [3, 1]])
    prof = p3.decade_profiles(acts, dec, top=2)
    assert prof.loc[0, "peak_decade"] == 1990 and prof.loc[0, 1990] == 1.0  # undated D is skipped
    assert prof.loc[1, "peak_decade"] == 1970 and prof.loc[1, "peak_share"] == 1.0
    assert prof.loc[1, "peak_lift"] == pytest.approx(1 / 0.4)
    assert prof.attrs["catalogue"] == {1970: 0.4, 1990: 0.6}
    # an old-films neuron on a catalogue dominated by the 1990s: its top list still peaks in the 1990s,
    # the lift finds the 1950s
    dec = pd.Series([1990] * 80 + [1950] * 20)
    old = torch.zeros(100, 1)
    old[80:, 0] = 1.0
    old[:21, 0] = 2.0  # 21 of its top-40 are 1990s films, 19 from the 1950s
    prof = p3.decade_profiles(old, dec, top=40)
    assert prof.loc[0, "peak_decade"] == 1990 and prof.loc[0, "lift_decade"] == 1950
    assert prof.loc[0, "max_lift"] == pytest.approx((19 / 40) / 0.2)


# -------------------------------------------------------------------------------------- demographics
def test_demographic_neurons_find_the_planted_groups():
    n = 60
    meta = pd.DataFrame(
        {
            "gender": np.where(np.arange(n) % 2 == 0, "F", "M"),
            "age": np.where(np.arange(n) < 15, 1, np.where(np.arange(n) % 3 == 0, 18, 25)),  # ML-1M codes
        }
    )
    acts = torch.rand(n, 4, generator=torch.Generator().manual_seed(0))
    acts[::2, 2] += 2.0  # women
    acts[:15, 0] += 2.0  # under 18
    users = torch.arange(n).flip(0)  # rows in another order than the metadata
    df = p3.demographic_neurons(acts.flip(0), users, meta)
    assert df["women_minus_men"].idxmax() == 2 and df["under18_minus_adults"].idxmax() == 0
    assert df.loc[2, "women_minus_men"] == pytest.approx(2.0, abs=0.3)
    assert df.loc[0, "under18_minus_adults"] == pytest.approx(2.0, abs=0.3)  # age code 18 is an adult


# ---------------------------------------------------------------------------------------- Matryoshka
def test_prefix_summaries_early_block_broad_late_block_niche():
    emb, labels = planted_items()
    n = len(emb)
    counts = torch.arange(n, 0, -1)  # item 0 most popular
    acts = torch.zeros(n, 6)
    acts[:, 0] = counts.float()  # broad + popular
    acts[:, 1] = torch.rand(n)  # broad
    for g in range(G):  # late block: one genre each
        acts[:, 2 + g] = torch.as_tensor(labels[:, g], dtype=torch.float32) * torch.rand(n)
    sae = MatryoshkaSAE(MatryoshkaConfig(d_in=D, n_latents=6, prefixes=(2, 6)))
    items = pd.DataFrame({"title": [f"t{i}" for i in range(n)]})
    df = p3.prefix_summaries(sae, acts, labels, counts, items, top=8)
    assert df["prefix"].tolist() == [2, 6] and df["latents"].tolist() == ["0-1", "2-5"]
    assert df.loc[0, "entropy"] > df.loc[1, "entropy"] + 0.5
    assert df.loc[1, "distinct_labels"] == 1.0 and df.loc[0, "distinct_labels"] > 2
    assert df.loc[0, "mean_pop_rank"] < df.loc[1, "mean_pop_rank"]
    assert df.loc[0, "examples"].startswith("t0; t1")


# ------------------------------------------------------------------------------------- interventions
def test_audiences():
    lab = np.zeros(10, bool)
    lab[:3] = True
    hist = pd.DataFrame({"user": [0, 0, 1, 1, 2, 2, 3], "item": [0, 5, 0, 1, 6, 7, 2]})
    assert p3.label_heavy_users(hist, lab, n=2).tolist() == [1, 3]  # shares 1.0 (ties: lower id first)
    assert p3.label_heavy_users(hist, lab, n=5, users=[0, 2]).tolist() == [0, 2]
    meta = pd.DataFrame({"age": [1, 25, 1, 56]}, index=pd.Index([0, 1, 2, 3], name="user"))
    assert p3.age_group_users(meta).tolist() == [0, 2]
    assert p3.age_group_users(meta, users=[2, 3]).tolist() == [2]


def test_boosting_and_suppression_move_the_label_share_monotonically():
    mf, labels = planted_mf()
    sae = exact_sae()
    users = torch.arange(1, 40, G)  # favourite genre 1: genre 2 is rare in their lists
    best = int(mf.item_emb.weight[:, 2].argmax())  # the most genre-2 item: top-1 once the boost dominates
    targets = pd.DataFrame({"user": users.numpy(), "item": np.full(len(users), best)})
    boost = p3.steer_users(
        mf, sae, 2, users, labels[:, 2], (0.5, 1.0, 2.0, 4.0), mask_seen=False, k=15, targets=targets
    )
    assert boost["setting"].tolist()[0] == "original" and np.isnan(boost["value"][0])
    share = boost["share"].to_numpy()[1:]
    assert (np.diff(share) >= 0).all() and share[-1] > share[0] + 0.3
    assert boost["ndcg@10"].iloc[0] < 0.5 and boost["ndcg@10"].iloc[-1] == 1.0
    heavy = torch.arange(2, 40, G)  # genre-2 lovers
    sup = p3.steer_users(mf, sae, 2, heavy, labels[:, 2], p3.SUPPRESS_VALUES, mask_seen=False, k=15)
    s = sup["share"].to_numpy()
    assert (np.diff(s[1:]) <= 0).all() and s[-1] < s[0] - 0.3


def test_user_steering_masks_seen_items_for_mf_not_ncf():
    mf, labels = planted_mf()
    ncf = planted_ncf()
    genre0 = np.flatnonzero(labels[:, 0])
    users = torch.arange(0, 40, G)  # genre-0 lovers
    hist = pd.DataFrame({"user": np.repeat(users.numpy(), len(genre0)), "item": np.tile(genre0, len(users))})
    for model, expect_zero in ((mf, True), (ncf, False)):
        df = p3.steer_users(model, exact_sae(), 0, users, labels[:, 0], (3.0,), history=hist, k=20)
        assert (df["share"] == 0).all() == expect_zero


def test_promotion_share_rises_with_the_neuron_among_users_without_the_item():
    mf, _ = planted_mf()
    sae = exact_sae()
    item = 3  # genre 3
    users = torch.arange(40)
    df = p3.promote_item(mf, sae, item, 1, users, p3.PROMOTE_VALUES, mask_seen=False, k_before=10, k_after=15)
    n_aud = df["n_audience"].iloc[0]
    assert 0 < n_aud < 40  # genre-3 lovers already had it in their top-10
    share = df["share"].to_numpy()[1:]
    assert (np.diff(share) >= 0).all() and share[0] == 0.0 and share[-1] > 0.2
    with pytest.raises(ValueError, match="history"):
        p3.promote_item(mf, sae, item, 1, users, (1.0,))


# ---------------------------------------------------------------------------------------- β ablation
def test_beta_ablation_rows_per_beta():
    mf, _ = planted_mf()
    df = p3.beta_ablation({1.0: exact_sae(), 0.0: random_sae()}, mf, torch.arange(20), mask_seen=False)
    assert df["beta"].tolist() == [0.0, 1.0]
    assert df.loc[1, "rbo"] == pytest.approx(df.loc[1, "rbo_ceiling"]) and df.loc[1, "kendall_tau"] == 1.0
    assert df.loc[0, "rbo"] < df.loc[1, "rbo"]
    assert set(df.columns) >= {"ms", "l0_items"} and df.loc[1, "l0_items"] <= D


def test_requires_a_two_tower_model():
    with pytest.raises(TypeError, match="two-tower"):
        p3.fidelity(torch.nn.Linear(2, 2), exact_sae(), [0])


# ------------------------------------------------------------------------------------ real metadata
@pytest.mark.shared
def test_ml100k_metadata_plumbing(shared_data):
    from recsae_core.data.loaders import load_dataset
    from recsae_core.data.splits import p3_holdout

    ds = load_dataset("ml-100k", download=False)
    split = p3_holdout(ds)
    torch.manual_seed(0)
    mf = MF(ds.n_users, ds.n_items, MFConfig(d=8)).eval()
    sae = P3SAE(P3Config(d_in=8, n_latents=10)).eval()
    acts = p3.two_tower_activations(mf, sae)
    assert acts.item_acts.shape == (ds.n_items, 10) and acts.user_acts.shape == (ds.n_users, 10)
    tab = p3.purity_table(acts.item_acts, ds.item_labels, ds.label_names)
    assert len(tab) == len(ds.label_names) and "Horror" in tab.index
    dec = p3.item_decades(ds.items)
    assert dec.notna().mean() > 0.99 and dec.dropna().between(1920, 1990).all()
    prof = p3.decade_profiles(acts.item_acts, dec)
    assert np.allclose(prof[[c for c in prof.columns if isinstance(c, int)]].sum(axis=1), 1.0)
    demo = p3.demographic_neurons(acts.user_acts, acts.users, ds.users)
    assert len(demo) == 10 and demo[["women", "under18"]].notna().all().all()
    young = p3.age_group_users(ds.users)
    assert 0 < len(young) < 100
    horror = np.asarray(ds.item_labels[:, ds.label_names.index("Horror")])
    heavy = p3.label_heavy_users(split.train, horror, n=20)
    assert len(heavy) == 20
    held = torch.arange(0, ds.n_users, 10)
    fid = p3.fidelity(mf, sae, held, history=split.train)
    assert fid.mask_seen and 0 <= fid.rbo <= fid.ceiling
    counts = p3.item_user_counts(split.train, ds.n_items)
    assert int(counts.sum()) == split.train[["user", "item"]].drop_duplicates().shape[0]


# ------------------------------------------------------------------------------------------- plots
@pytest.fixture
def plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    yield plt
    plt.close("all")


def test_purity_styler_colours_purity_columns():
    from recsae_core.viz import p3 as vp3

    tab = pd.DataFrame(
        {"neuron": [3, 1], "purity@10": [1.0, 0.2], "purity@50": [0.8, 0.1], "lift": [4.0, 1.1]},
        index=pd.Index(["Horror", "Comedy"], name="label"),
    )
    html = vp3.purity_styler(tab).to_html()
    assert html.count("background-color") >= 4 and "Horror" in html
    with pytest.raises(ValueError, match="purity"):
        vp3.purity_styler(tab[["neuron"]])


def test_genre_profile_bars(plt):
    from recsae_core.viz import p3 as vp3

    prof = p3.genre_profiles(torch.rand(30, 5), np.eye(3, dtype=bool)[np.arange(30) % 3], ["a", "b", "c"])
    fig = vp3.plot_genre_profiles(prof, [0, 2, 4], names=["x", "y", "z"])
    assert len(fig.axes) == 3
    ax = fig.axes[0]
    assert len(ax.patches) == 3 and len(ax.lines) == 1 and ax.get_title() == "x"
    assert [t.get_text() for t in ax.get_xticklabels()] == ["a", "b", "c"]


def test_popularity_plot_highlights_the_neuron(plt):
    from recsae_core.viz import p3 as vp3

    counts = torch.arange(50, 0, -1)
    acts = torch.rand(50, 4, generator=torch.Generator().manual_seed(0))
    acts[:, 1] = counts.float()
    pop = p3.popularity_neuron(acts, counts, top=5)
    fig = vp3.plot_popularity(pop.table, n_items=50)
    ax = fig.axes[0]
    assert len(ax.patches) == 4 and len(ax.lines) == 1
    colours = [p.get_facecolor() for p in ax.patches]
    assert colours[1] != colours[0] and colours[0] == colours[2]
    assert [t.get_text() for t in ax.texts] == [f"neuron 1: {pop.mean_rank:,.0f}"]  # the (short) bar is named


def test_decade_plot_one_line_per_neuron_plus_catalogue(plt):
    from recsae_core.viz import p3 as vp3

    dec = pd.Series([1970, 1980, 1990] * 10)
    prof = p3.decade_profiles(torch.rand(30, 4, generator=torch.Generator().manual_seed(1)), dec, top=10)
    fig = vp3.plot_decade_profiles(prof, [0, 3])
    ax = fig.axes[0]
    assert len(ax.lines) == 3 and ax.lines[-1].get_linestyle() == "--"
    assert [t.get_text() for t in ax.get_xticklabels()] == ["1970s", "1980s", "1990s"]


def test_beta_curves_three_panels_lines_per_model_and_ceiling(plt):
    from recsae_core.viz import p3 as vp3

    rows = [
        {"model": m, "beta": b, "rbo": 0.5 + b / 10, "kendall_tau": b / 5, "ms": 0.3, "rbo_ceiling": 0.958}
        for m in ("MF", "NCF")
        for b in (0.0, 1.0, 2.0)
    ]
    fig = vp3.plot_beta_curves(pd.DataFrame(rows), hue="model")
    assert len(fig.axes) == 3
    rbo_ax = fig.axes[0]
    assert len(rbo_ax.lines) == 3  # MF, NCF, ceiling
    ceiling = rbo_ax.lines[-1]
    assert ceiling.get_linestyle() == "--" and ceiling.get_ydata()[0] == pytest.approx(0.958)
    assert len(fig.axes[1].lines) == 2 and len(fig.axes[2].lines) == 2
    assert [t.get_text() for t in fig.legends[0].get_texts()] == ["MF", "NCF", "ceiling 0.958"]
    # the paper's own values (P3_FIG4) are drawn dashed beside ours, which stay solid
    both = pd.concat([pd.DataFrame(rows), p3.P3_FIG4], ignore_index=True)
    fig = vp3.plot_beta_curves(both, hue="model", ceiling=0.958)
    styles = {ln.get_label(): ln.get_linestyle() for ln in fig.axes[1].lines}
    assert styles == {"MF": "-", "NCF": "-", "P3 MF (paper)": "--", "P3 NCF (paper)": "--"}
    colour = {ln.get_label(): ln.get_color() for ln in fig.axes[1].lines}
    assert colour["MF"] == colour["P3 MF (paper)"] != colour["NCF"] == colour["P3 NCF (paper)"]


def test_matryoshka_view(plt):
    from recsae_core.viz import p3 as vp3

    summary = pd.DataFrame(
        {
            "prefix": [2, 6],
            "latents": ["0-1", "2-5"],
            "entropy": [1.2, 0.1],
            "distinct_labels": [4.0, 1.0],
            "mean_pop_rank": [10.0, 40.0],
        }
    )
    fig = vp3.plot_matryoshka(summary)
    assert len(fig.axes) == 3 and all(len(ax.patches) == 2 for ax in fig.axes)
    assert fig.axes[0].get_xticklabels()[1].get_text() == "2-5\n(prefix 6)"


def test_intervention_bars_and_accuracy_axis(plt):
    from recsae_core.viz import p3 as vp3

    df = pd.DataFrame(
        {
            "setting": ["original", "1", "2"],
            "value": [np.nan, 1.0, 2.0],
            "share": [0.1, 0.2, 0.4],
            "ndcg@10": [0.3, 0.28, 0.2],
        }
    )
    fig = vp3.plot_intervention(df, ylabel="Horror share of top-30")
    assert len(fig.axes) == 2  # bars + the NDCG twin axis
    assert len(fig.axes[0].patches) == 3 and fig.axes[0].patches[2].get_height() == pytest.approx(40.0)
    assert len(fig.axes[1].lines) == 1
    assert fig.axes[1].get_ylim()[0] == 0.0  # the accuracy cost is read from 0, not zoomed in
    assert fig.axes[0].get_ylim() == (0.0, pytest.approx(46.0))
    assert len(vp3.plot_intervention(df, accuracy=None).axes) == 1


# ------------------------------------------------------------------------------ P3's training recipe
def _toy_split(n_users: int, n_items: int, seed: int = 0):
    from recsae_core.data.dataset import RecDataset, Split

    rng = np.random.default_rng(seed)
    rows = pd.DataFrame(
        {"user": np.repeat(np.arange(n_users), 6), "item": rng.integers(0, n_items, n_users * 6)}
    ).drop_duplicates()
    ds = RecDataset(
        name="toy",
        interactions=rows.assign(rating=1.0),
        users=pd.DataFrame(index=pd.RangeIndex(n_users)),
        items=pd.DataFrame({"title": [f"i{i}" for i in range(n_items)]}),
        item_labels=np.zeros((n_items, 1), bool),
        label_names=["x"],
    )
    return Split("toy", ds, rows.reset_index(drop=True), rows.iloc[:0], rows.iloc[:0])


def test_recipe_configs_follow_the_authors_code():
    mf = p3.p3_sae_config("mf", 20)
    ncf = p3.p3_sae_config("ncf", 20)
    assert (mf.alpha, mf.beta, mf.kl_coeff, mf.rho, mf.l1_coeff) == (0.1, 1.0, 0.01, 0.05, 0.0)
    assert mf.normalize_rows and mf.pre_bias and mf.tied and mf.pred_loss == "mse"
    assert (ncf.alpha, ncf.beta, ncf.kl_coeff) == (2.0, 10.0, 0.07)
    assert not ncf.normalize_rows and not ncf.pre_bias and ncf.pred_loss == "bce"
    tc = p3.p3_train_config("mf")
    assert (tc.warmup_steps, tc.epochs, tc.lr, tc.batch_size, tc.sampling) == (0, 18, 1e-3, 256, "epochs")
    assert p3.p3_train_config("ncf").batch_size == 128
    assert p3.p3_sae_config("ncf", 20, beta=0.0).beta == 0.0
    m = p3.p3_sae_config("mf", 100, 80, matryoshka=True)
    assert isinstance(m, MatryoshkaConfig) and m.prefixes == (20, 40, 80)
    with pytest.raises(ValueError, match="recipe"):
        p3.p3_sae_config("bprmf", 20)


def test_p3_users_split_is_seeded_and_disjoint():
    a, b = p3.p3_users(100, seed=3), p3.p3_users(100, seed=3)
    assert torch.equal(a.test, b.test) and len(a.test) == 20 and len(a.train) == 80
    assert set(a.test.tolist()).isdisjoint(a.train.tolist())
    assert not torch.equal(a.test, p3.p3_users(100, seed=4).test)


def test_training_data_mf_all_pairs_with_negatives_ncf_positive_pairs():
    split = _toy_split(30, 50)
    mf = MF(30, 50, MFConfig(d=D))
    ncf = NCF(30, 50, NCFConfig(d=D))
    users = p3.p3_users(30, seed=0)
    dm = p3.p3_training_data(mf, split, users.train)
    dn = p3.p3_training_data(ncf, split, users.train)
    n_pos = int(split.train["user"].isin(users.train.tolist()).sum())
    assert len(dn.pairs) == n_pos and not dn.all_pairs and dn.pairwise
    assert len(dm.pairs) == 2 * n_pos and dm.all_pairs and not dm.pairwise
    assert set(dm.pairs[:, 0].tolist()) <= set(users.train.tolist())  # held-out users never train the SAE
    assert torch.equal(dm.user_emb, mf.user_emb.weight.detach())


def test_all_pairs_batches_come_from_the_pairs_and_score_the_grid():
    from recsae_core.sae import TwoTowerData
    from recsae_core.sae.trainer import _TwoTowerSource

    users, items = torch.randn(10, D), torch.randn(12, D)
    pairs = torch.tensor([[1, 2], [1, 3], [4, 5]])
    src = _TwoTowerSource(TwoTowerData(users, items, pairs, all_pairs=True), "epochs", torch.Generator())
    b = src.next(3)
    assert sorted(b.users.tolist()) == [1, 1, 4] and sorted(b.items.tolist()) == [2, 3, 5]
    assert not b.pairwise  # L_pred on the 3 x 3 grid
    with pytest.raises(ValueError, match="needs pairs"):
        TwoTowerData(users, items, all_pairs=False)


def test_kl_is_summed_per_side_as_in_p3():
    """P3 sums KL(rho || rho_hat_users) and KL(rho || rho_hat_items); one KL over the concatenated batch differs."""
    from recsae_core.sae import kernels as K
    from recsae_core.sae.trainer import TwoTowerBatch, _step_loss

    torch.manual_seed(0)
    cfg = P3Config(d_in=D, n_latents=8, beta=0.0, alpha=0.0, kl_coeff=1.0, rho=0.05)
    sae = P3SAE(cfg)
    u, i = torch.randn(5, D) + 1.0, torch.randn(7, D) - 1.0
    batch = TwoTowerBatch(u, i, torch.arange(5), torch.arange(7), False)

    def kl(acts):
        rh = acts.mean(0).clamp(1e-6, 1 - 1e-6)
        return (0.05 * torch.log(0.05 / rh) + 0.95 * torch.log(0.95 / (1 - rh))).sum()

    with torch.no_grad():
        want = kl(sae.encode(u)) + kl(sae.encode(i))
        joint = kl(sae.encode(torch.cat([u, i])))
    for fused in (True, False):
        got = _step_loss(sae, batch, None, None, fused, K.Workspace()).terms["kl"]
        assert torch.allclose(got, want, atol=1e-5), (fused, got, want)
    assert not torch.allclose(want, joint, atol=1e-3)


def test_mf_grid_scorer_equals_the_pair_rows():
    """The MF fast path (one matmul + bias grid) gives the same logits as scoring every pair row."""
    from recsae_core.sae.p3 import two_tower_scorer

    torch.manual_seed(0)
    mf = MF(9, 11, MFConfig(d=D))
    with torch.no_grad():
        mf.user_bias.normal_()
        mf.item_bias.normal_()
        mf.global_bias.fill_(0.3)
    users, items = torch.tensor([0, 3, 3, 8]), torch.tensor([1, 2, 10])
    u, i = torch.randn(4, D), torch.randn(3, D)
    got = two_tower_scorer(mf)(u, i, users, items)
    want = torch.stack(
        [mf.pair_scores_from(u[b].expand(3, D), i, users[b].expand(3), items) for b in range(4)]
    )
    assert got.shape == (4, 3) and torch.allclose(got, want, atol=1e-5)


# ------------------------------------------------------------------------------------ chapter helpers
def _meta_ds(name: str, labels: np.ndarray, names: list[str], users: pd.DataFrame, titles: list[str]):
    from types import SimpleNamespace

    return SimpleNamespace(
        name=name, item_labels=labels, label_names=names, users=users, items=pd.DataFrame({"title": titles})
    )


def test_p3_labels_drop_unknown_and_labels_too_rare_for_purity_at_10():
    lab = np.zeros((30, 4), bool)
    lab[:12, 0] = True  # unknown: dropped whatever its size
    lab[:10, 1] = True  # exactly 10 items: kept
    lab[:9, 2] = True  # 9 items: dropped
    lab[5:25, 3] = True
    ds = _meta_ds("toy", lab, ["unknown", "A", "B", "C"], pd.DataFrame(), ["t"] * 30)
    got, names = p3.p3_labels(ds)
    assert names == ["A", "C"] and np.array_equal(got, lab[:, [1, 3]])
    with pytest.raises(ValueError, match="no label"):
        p3.p3_labels(ds, min_items=100)


def test_intervention_plan_follows_the_metadata():
    names = ["Romance", "Children's", "Horror"]
    titles = ["Toy Story (1995)", "Alice in Wonderland (1951)"]
    ml = _meta_ds("ml-100k", np.zeros((2, 3), bool), names, pd.DataFrame({"age": [10, 30]}), titles)
    assert p3.find_item(ml.items, "alice in wonderland") == 1
    with pytest.raises(ValueError, match="no item titled"):
        p3.find_item(ml.items, "Bob Dylan")
    assert set(p3.intervention_plan(ml, names)) == {"item", "promote", "boost", "suppress"}
    no_age = _meta_ds("ml-100k", np.zeros((2, 3), bool), names, pd.DataFrame(index=[0, 1]), titles)
    assert "boost" not in p3.intervention_plan(no_age, names)
    assert "suppress" not in p3.intervention_plan(ml, ["Romance", "Children's"])
    fm = _meta_ds(
        "lastfm-2k", np.zeros((2, 2), bool), ["folk", "metal"], pd.DataFrame(index=[0]), ["Bob Dylan", "x"]
    )
    assert p3.intervention_plan(fm, ["folk", "metal"]) == {
        "item": "Bob Dylan",
        "promote": "folk",
        "suppress": "metal",
    }
    fm.items = pd.DataFrame({"title": ["Joan Baez", "x"]})
    assert "promote" not in p3.intervention_plan(fm, ["folk", "metal"])


def test_capped_epochs_bounds_the_steps_of_one_run():
    split = _toy_split(30, 50)
    users = p3.p3_users(30, seed=0)
    mf, ncf = MF(30, 50, MFConfig(d=D)), NCF(30, 50, NCFConfig(d=D))
    n_pos = int(split.train["user"].isin(users.train.tolist()).sum())
    assert p3.capped_epochs(mf, split, users.train, 18, None) == 18.0
    assert p3.capped_epochs(mf, split, users.train, 18, 10**9) == 18.0
    # MF: positives + as many negatives per epoch, batches of 256; NCF: positives, batches of 128
    assert p3.capped_epochs(mf, split, users.train, 18, 3) == pytest.approx(round(3 / (2 * n_pos / 256), 2))
    assert p3.capped_epochs(ncf, split, users.train, 18, 3) == pytest.approx(round(3 / (n_pos / 128), 2))
    with pytest.raises(ValueError, match="max_steps"):
        p3.capped_epochs(mf, split, users.train, 18, 0)


def test_sae_summary_of_an_exact_sae():
    from types import SimpleNamespace

    mf, _ = planted_mf()
    with torch.no_grad():
        mf.item_emb.weight[:, G:] = 0.0  # items use the G genre coordinates only, users all D
    sae = exact_sae()
    acts = p3.two_tower_activations(mf, sae)
    fid = p3.fidelity(mf, sae, torch.arange(40), mask_seen=False)
    row = p3.sae_summary(mf, SimpleNamespace(sae=sae, steps=7, seconds=1.25), acts, fid)
    assert row["latents"] == 2 * D and row["steps"] == 7 and row["seconds"] == 1.2
    assert row["EV users"] == pytest.approx(1.0) and row["EV items"] == pytest.approx(1.0)
    assert row["silent"] == D  # embeddings are non-negative: the negative-part latents stay silent
    assert row["active/item"] == G and row["active/user"] == D
    assert row["RBO"] == pytest.approx(fid.ceiling) and row["τ"] == pytest.approx(1.0)


def test_paper_vs_recsae_puts_each_measure_beside_the_paper():
    from recsae_core.papers.p3 import FidelityResult

    purity = {
        m: pd.DataFrame(
            {"neuron": [1, 2], "purity@10": [v, 0.5], "purity@20": [0.9, 0.4], "purity@50": [0.8, 0.3]},
            index=pd.Index(["Comedy", "Horror"], name="label"),
        )
        for m, v in (("mf", 1.0), ("ncf", 0.6))
    }
    fid = {
        "mf": FidelityResult(pd.DataFrame(), 0.611, 0.411, 0.958, True),
        "ncf": FidelityResult(pd.DataFrame(), 0.722, 0.522, 0.958, False),
    }
    pop = p3.PopularityNeuron(3, 123.4, 800.0, pd.DataFrame())
    step = pd.DataFrame(
        {
            "setting": ["original", "1", "4"],
            "value": [np.nan, 1, 4],
            "share": [0.1, 0.2, 0.5],
            "ndcg@10": [0.3, 0.29, 0.2],
        }
    )
    step.attrs.update(label="Children's", neuron=7, n_users=12)
    df = p3.paper_vs_recsae("ml-100k", purity, fid, {"mf": 9.5}, pop, 1682, {"boost": step})
    got = dict(zip(df["quantity"], df["recsae"], strict=True))
    assert got["MF Comedy purity@10/20/50"] == "1.00 / 0.90 / 0.80"
    assert got["MF Horror purity@10/20/50"] == "0.50 / 0.40 / 0.30"
    assert got["NCF fidelity RBO (top-30, held-out users)"].startswith("0.722")
    assert got["NCF Kendall τ-b"] == "0.522"
    assert got["MF fidelity RBO / τ (β = 1)"] == "0.611 / 0.411"
    assert got["MF latents active per item"] == "9.50"
    assert got["MF popularity neuron: mean popularity rank of its top items"].startswith("123 of 1,682")
    assert (
        got["MF boost (Children's, neuron 7)"]
        == "original 10%; 1: 20% → 4: 50% (monotone); NDCG@10 0.300 → 0.200"
    )
    step.loc[1, "share"] = 0.6  # 60 % at 1, 50 % at 4: in P3's direction overall, not at every strength
    two = p3.paper_vs_recsae(
        "ml-100k", purity, fid, {"mf": 9.5}, pop, 1682, {"suppress": step, "boost": step}
    )
    got2 = dict(zip(two["quantity"], two["recsae"], strict=True))
    assert "(not monotone)" in got2["MF boost (Children's, neuron 7)"]
    assert "(monotone)" in got2["MF suppress (Children's, neuron 7)"]
    assert "ml-100k, not P3's dataset" in df.attrs["caption"]
    ml1m = p3.paper_vs_recsae("ml-1m-notime", purity, fid, {}, None, 3706, {})
    assert "not P3's" not in ml1m.attrs["caption"] and len(ml1m) == len(df) - 3


@pytest.mark.shared
def test_setup_and_interventions_on_ml100k(shared_data):
    setup = p3.p3_setup(
        "ml-100k", configs={"mf": {"iterations": 1}, "ncf": {"epochs": 1, "valid_users": 100}}
    )
    ds, users = setup.dataset, setup.users
    assert setup.split.name == "p3-holdout" and set(setup.fits) == {"mf", "ncf"}
    assert all(m.config.d == 20 for m in setup.models.values())  # P3's embedding size
    assert isinstance(setup.fits["mf"].config, p3.P3MFConfig)  # MF: P3's own SGD recipe (issue 15)
    # NCF: recsae's trainer (P3's recipe at lr 1e-3 wrecks Last.fm's fidelity: RBO 0.146 vs 0.695; issue 15)
    assert not isinstance(setup.fits["ncf"].config, p3.P3NCFConfig) and setup.fits["ncf"].config.epochs == 1
    assert len(users.test) == ds.n_users // 5 and "unknown" not in setup.label_names
    assert {"data + P3 split", "mf (P3 recipe, cached)", "ncf (cached_fit)"} <= set(setup.times)
    torch.manual_seed(0)
    sae = P3SAE(P3Config(d_in=20, n_latents=22)).eval()
    neurons = {n: j % 22 for j, n in enumerate(setup.label_names)}
    steps = p3.interventions(setup, "mf", sae, neurons)
    assert set(steps) == {"promote", "boost", "suppress"}
    young = p3.age_group_users(ds.users, users=users.test)
    assert steps["boost"]["n_users"].iloc[0] == len(young) > 0
    assert steps["promote"].attrs["item"].startswith("Alice in Wonderland")
    assert steps["promote"]["n_audience"].iloc[0] <= 20 and steps["suppress"]["n_users"].iloc[0] == 20
    for step, df in steps.items():
        assert df["setting"].iloc[0] == "original" and df["ndcg@10"].notna().all(), step
        assert df.attrs["neuron"] == neurons[df.attrs["label"]]
    assert list(steps["suppress"]["value"].iloc[1:]) == list(p3.SUPPRESS_VALUES)


# ------------------------------------------------------------------ issue 15: P3's MF batches and base MF
def test_minmax_batches_scale_each_side_within_the_batch_and_cover_every_pair_once_per_epoch():
    from recsae_core.sae import TwoTowerData

    gen = torch.Generator().manual_seed(0)
    users, items = 3 * torch.randn(10, D, generator=gen) + 1, torch.randn(12, D, generator=gen)
    pairs = torch.tensor([[u, (u * 5) % 12] for u in range(10)] + [[u, (u * 7 + 1) % 12] for u in range(10)])
    mm = p3.MinMaxBatches(TwoTowerData(users, items, pairs, all_pairs=True))
    assert len(mm) == 20
    seen = []
    for _ in range(4):
        b = mm.sample(5, gen)
        assert not b.pairwise and b.user_emb.shape == (5, D)
        for raw, got in ((users[b.users], b.user_emb), (items[b.items], b.item_emb)):
            lo, hi = raw.min(0).values, raw.max(0).values
            assert torch.allclose(got, (raw - lo) / (hi - lo))  # P3's normalize_matrix, per side and batch
            assert torch.allclose(got.min(0).values, torch.zeros(D)) and torch.allclose(
                got.max(0).values, torch.ones(D)
            )
        seen += list(zip(b.users.tolist(), b.items.tolist(), strict=True))
    assert sorted(seen) == sorted(map(tuple, pairs.tolist()))  # one epoch = every pair once
    const = p3.MinMaxBatches(TwoTowerData(torch.ones(3, D), items[:3], torch.tensor([[0, 0], [1, 1]])))
    assert torch.equal(const.sample(2, gen).user_emb, torch.zeros(2, D))  # 0/0 -> 0 as np.nan_to_num


def test_mf_sae_trains_on_minmax_batches_by_default_ncf_on_raw_embeddings(tmp_path):
    from recsae_core.sae import TwoTowerData
    from recsae_core.sae_eval import sae_cache_key

    split = _toy_split(30, 50)
    mf, ncf = MF(30, 50, MFConfig(d=D)), NCF(30, 50, NCFConfig(d=D))
    train = p3.p3_users(30, seed=0).train
    assert p3.P3_BATCH_MINMAX == {"mf": True, "ncf": False}
    assert isinstance(p3.p3_training_data(mf, split, train, minmax=None), p3.MinMaxBatches)
    assert isinstance(p3.p3_training_data(ncf, split, train, minmax=None), TwoTowerData)
    raw = p3.p3_training_data(mf, split, train)
    cfg, tc = p3.p3_sae_config(mf), p3.p3_train_config(mf, 1)
    assert sae_cache_key(p3.MinMaxBatches(raw), cfg, tc) != sae_cache_key(raw, cfg, tc)
    kw = {"seed": 0, "cache_dir": str(tmp_path)}
    default = p3.train_p3_sae(mf, split, train, cfg, tc, **kw).sae
    on = p3.train_p3_sae(mf, split, train, cfg, tc, minmax=True, **kw)
    off = p3.train_p3_sae(mf, split, train, cfg, tc, minmax=False, **kw).sae
    assert on.meta["cache_hit"]  # the default is the min-max run
    assert torch.equal(default.W_enc, on.sae.W_enc) and not torch.equal(default.W_enc, off.W_enc)


def test_fit_p3_mf_is_p3s_summed_per_sample_sgd(monkeypatch):
    import recsae_core.train as train_mod

    split = _toy_split(8, 20)
    pos = split.train[["user", "item"]].drop_duplicates().to_numpy()
    neg = (pos[:, 1] + 7) % 20
    monkeypatch.setattr(train_mod, "sample_negatives", lambda users, n_items, keys, rng: neg)
    cfg = p3.P3MFConfig(d=3, alpha=0.3, beta=0.1, iterations=1, batch_size=10_000)  # one batch
    res = p3.fit_p3_mf(split, cfg, seed=5)
    # P3's MatrixFactorization.sgd_batch in numpy: errors from the batch's start, np.add.at updates, b fixed
    gen = torch.Generator().manual_seed(5)
    P = (torch.randn(8, 3, generator=gen, dtype=torch.float64) / 3).numpy()
    Q = (torch.randn(20, 3, generator=gen, dtype=torch.float64) / 3).numpy()
    bu, bi = np.zeros(8), np.zeros(20)
    u, i = np.concatenate([pos[:, 0], pos[:, 0]]), np.concatenate([pos[:, 1], neg])
    y = np.r_[np.ones(len(pos)), np.zeros(len(pos))]
    e = y - 1 / (1 + np.exp(-(1.0 + bu[u] + bi[i] + (P[u] * Q[i]).sum(1))))
    gbu, gbi = 0.3 * (e - 0.1 * bu[u]), 0.3 * (e - 0.1 * bi[i])
    gP, gQ = 0.3 * (e[:, None] * Q[i] - 0.1 * P[u]), 0.3 * (e[:, None] * P[u] - 0.1 * Q[i])
    np.add.at(bu, u, gbu), np.add.at(bi, i, gbi), np.add.at(P, u, gP), np.add.at(Q, i, gQ)
    m = res.model
    assert np.allclose(m.user_emb.weight.detach().numpy(), P, atol=1e-6)
    assert np.allclose(m.item_emb.weight.detach().numpy(), Q, atol=1e-6)
    assert np.allclose(m.user_bias.detach().numpy(), bu, atol=1e-6)
    assert np.allclose(m.item_bias.detach().numpy(), bi, atol=1e-6)
    assert float(m.global_bias.detach()) == 1.0 and len(res.history) == 1 and res.history["loss"].iloc[0] > 0


def test_cached_p3_base_trains_on_one_thread(tmp_path, monkeypatch):
    """P3's own MF/NCF recipes train on one torch thread (train.ONE_THREAD_MODELS), the count restored after."""
    seen, fit = [], p3.fit_p3_mf

    def spy(split, config, *, seed=0):
        seen.append(torch.get_num_threads())
        return fit(split, config, seed=seed)

    monkeypatch.setattr(p3, "fit_p3_mf", spy)
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        p3.cached_p3_base("mf", _toy_split(8, 20), p3.P3MFConfig(d=3, iterations=1), cache_dir=str(tmp_path))
        assert seen == [1] and torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


def test_cached_p3_base_reloads_the_same_model(tmp_path):
    split = _toy_split(8, 20)
    cfg = p3.P3MFConfig(d=3, iterations=2)
    a = p3.cached_p3_base("mf", split, cfg, seed=1, cache_dir=str(tmp_path))
    b = p3.cached_p3_base("mf", split, cfg, seed=1, cache_dir=str(tmp_path))
    assert not a.from_cache and b.from_cache and a.path == b.path
    assert torch.equal(a.model.item_emb.weight, b.model.item_emb.weight) and len(b.history) == 2
    c = p3.cached_p3_base("mf", split, p3.P3MFConfig(d=3, iterations=3), seed=1, cache_dir=str(tmp_path))
    assert not c.from_cache and c.path != a.path
    n = p3.cached_p3_base("ncf", split, p3.P3NCFConfig(d=3, hidden=(4,), epochs=2), cache_dir=str(tmp_path))
    assert n.path.parent.name == "ncf-p3" and a.path.parent.name == "mf-p3"
    with pytest.raises(ValueError, match="alpha"):
        p3.P3MFConfig(alpha=0)
    with pytest.raises(TypeError, match="P3NCFConfig"):
        p3.cached_p3_base("ncf", split, cfg, cache_dir=str(tmp_path))


def test_fit_p3_ncf_keeps_the_last_epoch_and_is_seeded():
    split = _toy_split(12, 20)
    cfg = p3.P3NCFConfig(d=3, hidden=(4,), lr=0.05, epochs=3, batch_size=16)
    torch.manual_seed(123)
    a = p3.fit_p3_ncf(split, cfg, seed=2)
    torch.manual_seed(456)
    b = p3.fit_p3_ncf(split, cfg, seed=2)
    assert torch.equal(a.model.user_emb.weight, b.model.user_emb.weight)  # seeded, whatever the global RNG
    assert a.best_epoch == 3 and list(a.history["epoch"]) == [1, 2, 3] and not a.model.training
    one = p3.fit_p3_ncf(split, p3.P3NCFConfig(d=3, hidden=(4,), lr=0.05, epochs=1, batch_size=16), seed=2)
    assert not torch.equal(one.model.user_emb.weight, a.model.user_emb.weight)  # no early stopping
    assert a.history["loss"].iloc[-1] < a.history["loss"].iloc[0]


def test_dead_units_counts_relu_units_silent_on_every_pair():
    torch.manual_seed(0)
    ncf = NCF(5, 7, NCFConfig(d=3, hidden=(6, 4)))
    users, items = torch.arange(5).repeat(7), torch.arange(7).repeat_interleave(5)
    with torch.no_grad():
        ncf.layers[1].bias[3] = 1e3  # fires on every pair
    assert p3.dead_units(ncf, users, items)[1] < 4
    with torch.no_grad():
        ncf.layers[1].bias[:3] = -1e3  # three of the second layer's four units can never fire
    assert p3.dead_units(ncf, users, items)[1] == 3
    with torch.no_grad():
        ncf.layers[1].bias[3] = -1e3
    assert p3.dead_units(ncf, users, items)[1] == 4  # the output is now one constant
    s = ncf.score_vectors(ncf.user_emb.weight, ncf.item_table(), torch.arange(5))
    assert torch.unique(s).numel() == 1


def test_fit_p3_ncf_raises_when_p3s_ml1m_lr_kills_the_mlp_and_trains_at_the_default():
    """Issue 15: P3's stated ML-1M lr (Adam 0.05) leaves a hidden layer of P3's MLP with no live unit (every
    item ties); fit_p3_ncf says so instead of returning a constant model, and the default lr (P3's Last.FM
    1e-3) trains."""
    split = _toy_split(40, 60)
    assert p3.P3NCFConfig().lr == 1e-3 and p3.P3NCFConfig().hidden == (64, 32, 16)
    with pytest.raises(RuntimeError, match="collapsed at epoch"):
        p3.fit_p3_ncf(split, p3.P3NCFConfig(d=4, lr=0.05, epochs=20, batch_size=16), seed=0)
    res = p3.fit_p3_ncf(split, p3.P3NCFConfig(d=4, epochs=20, batch_size=16), seed=0)
    assert (res.history["live_units_min"] > 0).all() and len(res.history) == 20
    s = res.model.score_vectors(res.model.user_emb.weight, res.model.item_table(), torch.arange(40))
    assert torch.unique(s[0]).numel() == 60  # no ties


@pytest.mark.parametrize("name", ["mf", "ncf"])
def test_p3_base_recipes_draw_negatives_per_epoch_or_once(monkeypatch, name):
    """``negatives="per_epoch"`` draws every epoch (P3's described recipe); ``"fixed"`` draws once and trains
    every epoch on those negatives (what P3's code does in effect, issue 15)."""
    import recsae_core.train as train_mod

    draws, real = [], train_mod.sample_negatives

    def spy(users, n_items, keys, rng, **kw):
        out = real(users, n_items, keys, rng, **kw)
        draws.append(out.copy())
        return out

    monkeypatch.setattr(train_mod, "sample_negatives", spy)
    split = _toy_split(12, 20)
    fit, cls, n = (
        (p3.fit_p3_mf, p3.P3MFConfig, "iterations")
        if name == "mf"
        else (p3.fit_p3_ncf, p3.P3NCFConfig, "epochs")
    )
    extra = {} if name == "mf" else {"hidden": (4,), "batch_size": 16}
    per = fit(split, cls(d=3, negatives="per_epoch", **{n: 3}, **extra), seed=1)
    assert len(draws) == 3 and not all(np.array_equal(draws[0], d) for d in draws[1:])
    draws.clear()
    fixed = fit(split, cls(d=3, negatives="fixed", **{n: 3}, **extra), seed=1)
    assert len(draws) == 1 and len(fixed.history) == 3  # drawn once, trained three epochs
    assert not torch.equal(per.model.item_emb.weight, fixed.model.item_emb.weight)
    with pytest.raises(ValueError, match="negatives"):
        cls(negatives="popularity")
