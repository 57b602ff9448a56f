"""sae_eval: the trained-SAE cache, cached activations and evaluate_sae, on planted concepts (fast, seeded)."""

from __future__ import annotations

import dataclasses
import subprocess
import sys

import pandas as pd
import pytest
import torch

import recsae_core.sae as S
from recsae_core import probe, sae_eval
from recsae_core.synthetic import planted_rows, planted_world


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


TC = S.TrainConfig(steps=60, batch_size=128, lr=3e-3, warmup_steps=5, log_every=20)
CFG = S.TopKConfig(d_in=32, n_latents=32, k=4, input_norm="scalar")  # unfolded on disk


@pytest.fixture(scope="module")
def rows():
    return planted_rows(n_rows=2048, d=32, n_groups=8, n_items=100, seed=0).acts


class Counter:
    """A train_fn that counts its calls."""

    def __init__(self, data, cfg=CFG, tc=TC, seed=0):
        self.calls, self.args = 0, (cfg, data, tc, seed)

    def __call__(self):
        self.calls += 1
        cfg, data, tc, seed = self.args
        return S.train_sae(cfg, data, tc, seed=seed, progress=False)


# ------------------------------------------------------------------------------------------ SAE cache
def test_cached_sae_miss_then_hit_is_identical_and_does_not_train(rows, tmp_path):
    fn = Counter(rows)
    a = sae_eval.cached_sae(rows, CFG, TC, train_fn=fn, cache_dir=tmp_path)
    b = sae_eval.cached_sae(rows, CFG, TC, train_fn=fn, cache_dir=tmp_path)
    assert fn.calls == 1
    assert a.meta["cache_hit"] is False and b.meta["cache_hit"] is True
    assert a.meta["cache_key"] == b.meta["cache_key"]
    sa, sb = a.sae.state_dict(), b.sae.state_dict()
    assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)
    assert b.history == a.history and len(a.history) == 3
    assert torch.equal(b.rows_since_fired, a.rows_since_fired)
    for f in dataclasses.fields(a):
        if f.name not in ("sae", "rows_since_fired", "meta"):
            assert getattr(b, f.name) == getattr(a, f.name), f.name
    assert b.meta["seed"] == a.meta["seed"] == 0
    x = rows[:64]
    assert torch.equal(a.sae(x).x_hat, b.sae(x).x_hat)
    entry = tmp_path / "sae" / f"topk-{a.meta['cache_key']}"
    assert sorted(p.name for p in entry.iterdir()) == [
        "history.json",
        "result.json",
        "rows_since_fired.safetensors",
        "sae.json",
        "sae.safetensors",
    ]
    left = [p.name for p in (tmp_path / "sae").iterdir() if not p.name.endswith(".lock")]
    assert left == [entry.name]  # no temporary directory left (only the entry and its empty lock file)


def test_cached_sae_keeps_per_epoch_selection_fields(rows, tmp_path):
    tc = S.TrainConfig(
        epochs=3, batch_size=256, warmup_steps=2, sampling="epochs", selection=S.EpochSelection("fvu", "min")
    )
    a = sae_eval.cached_sae(rows, CFG, tc, cache_dir=tmp_path, progress=False)
    b = sae_eval.cached_sae(rows, CFG, tc, cache_dir=tmp_path, progress=False)
    assert b.meta["cache_hit"] and len(a.epoch_history) == 3 and a.best_epoch is not None
    assert (b.epoch_history, b.best_epoch, b.stopped_early) == (
        a.epoch_history,
        a.best_epoch,
        a.stopped_early,
    )
    assert b.train_config == tc


def test_cached_sae_default_trainer_matches_train_sae(rows, tmp_path):
    res = sae_eval.cached_sae(rows, CFG, TC, seed=3, cache_dir=tmp_path, progress=False)
    ref = S.train_sae(CFG, rows, TC, seed=3, progress=False)
    assert all(torch.equal(v, ref.sae.state_dict()[k]) for k, v in res.sae.state_dict().items())
    hit = sae_eval.cached_sae(rows, CFG.to_dict(), TC, seed=3, cache_dir=tmp_path)  # a config dict: same key
    assert hit.meta["cache_hit"] and hit.history == ref.history


def test_cached_sae_misses_when_anything_keyed_changes(rows, tmp_path, monkeypatch):
    fn = Counter(rows)
    kw = {"train_fn": fn, "cache_dir": tmp_path}
    sae_eval.cached_sae(rows, CFG, TC, **kw)
    variants = [
        ((rows, S.TopKConfig(d_in=32, n_latents=32, k=3), TC), {}),
        ((rows, CFG, S.TrainConfig(steps=61, batch_size=128, lr=3e-3, warmup_steps=5, log_every=20)), {}),
        ((rows, CFG, TC), {"seed": 1}),
        ((rows, CFG, TC), {"key_extra": {"protocol": "p2"}}),
        ((rows + 1e-3, CFG, TC), {}),
    ]
    for args, extra in variants:
        before = fn.calls
        assert sae_eval.cached_sae(*args, **extra, **kw).meta["cache_hit"] is False, (args[1:], extra)
        assert fn.calls == before + 1
    monkeypatch.setattr(sae_eval, "sae_source_fingerprint", lambda: "an-edited-trainer")
    assert sae_eval.cached_sae(rows, CFG, TC, **kw).meta["cache_hit"] is False
    monkeypatch.undo()
    assert sae_eval.cached_sae(rows, CFG, TC, **kw).meta["cache_hit"] is True


def test_cached_sae_keys_activation_sets_and_two_tower_data(rows, tmp_path):
    acts = probe.ActivationSet(
        rows, torch.zeros(len(rows), dtype=torch.long), torch.zeros(len(rows), dtype=torch.long), None, "s"
    )
    k_plain = sae_eval.sae_cache_key(acts, CFG, TC)
    assert k_plain != sae_eval.sae_cache_key(
        probe.ActivationSet(rows + 1e-3, acts.users, acts.items, None, "s"), CFG, TC
    )  # no provenance: rows hashed by content
    acts.meta["cache_key"] = "site|all|model-a|data"
    k_a = sae_eval.sae_cache_key(acts, CFG, TC)
    acts.meta["cache_key"] = "site|all|model-b|data"
    assert sae_eval.sae_cache_key(acts, CFG, TC) != k_a != k_plain
    u, i = rows[:50], rows[50:90]
    p3 = S.P3Config(d_in=32, n_latents=16, beta=0.0)
    k_tt = sae_eval.sae_cache_key(S.TwoTowerData(u, i), p3, TC)
    pairs = torch.tensor([[0, 1], [2, 3]])
    assert sae_eval.sae_cache_key(S.TwoTowerData(u, i, pairs), p3, TC) != k_tt
    assert sae_eval.sae_cache_key(S.TwoTowerData(u, i + 1e-4), p3, TC) != k_tt


def test_cached_sae_scorer_key_follows_the_model_state():
    from recsae_core.models.twotower import MF

    torch.manual_seed(0)
    model = MF(5, 7)
    k1 = sae_eval.sae_cache_key(torch.zeros(3, 4), CFG, TC, scorer=S.two_tower_scorer(model))
    assert k1 == sae_eval.sae_cache_key(torch.zeros(3, 4), CFG, TC, scorer=S.two_tower_scorer(model))
    assert k1 != sae_eval.sae_cache_key(
        torch.zeros(3, 4), CFG, TC, scorer=S.two_tower_scorer(model, pairwise=True)
    )
    with torch.no_grad():
        next(model.parameters()).add_(1.0)
    assert k1 != sae_eval.sae_cache_key(torch.zeros(3, 4), CFG, TC, scorer=S.two_tower_scorer(model))


@pytest.mark.parametrize("damage", ["truncate_weights", "drop_history", "garbage_result"])
def test_corrupt_entry_is_retrained(rows, tmp_path, damage):
    fn = Counter(rows)
    a = sae_eval.cached_sae(rows, CFG, TC, train_fn=fn, cache_dir=tmp_path)
    entry = tmp_path / "sae" / f"topk-{a.meta['cache_key']}"
    if damage == "truncate_weights":
        w = entry / "sae.safetensors"
        w.write_bytes(w.read_bytes()[:100])
    elif damage == "drop_history":
        (entry / "history.json").unlink()
    else:
        (entry / "result.json").write_text("{not json")
    b = sae_eval.cached_sae(rows, CFG, TC, train_fn=fn, cache_dir=tmp_path)
    assert fn.calls == 2 and b.meta["cache_hit"] is False
    c = sae_eval.cached_sae(rows, CFG, TC, train_fn=fn, cache_dir=tmp_path)
    assert fn.calls == 2 and c.meta["cache_hit"] is True
    assert all(torch.equal(v, a.sae.state_dict()[k]) for k, v in c.sae.state_dict().items())


def test_interrupted_store_leaves_no_entry(rows, tmp_path, monkeypatch):
    def failing(*args, **kw):
        raise KeyboardInterrupt("simulated interrupt while writing")

    monkeypatch.setattr(sae_eval, "save_file", failing)
    with pytest.raises(KeyboardInterrupt):
        sae_eval.cached_sae(rows, CFG, TC, train_fn=Counter(rows), cache_dir=tmp_path)
    # nothing half-written: no file but the entry's empty lock file (cache.key_lock), no entry directory
    assert [p for p in tmp_path.rglob("*") if p.is_file() and not p.name.endswith(".lock")] == []
    assert [p for p in (tmp_path / "sae").iterdir() if p.is_dir()] == []


def test_sae_key_covers_every_module_that_sae_training_loads():
    """The SAE cache key hashes SAE_TRAINING_MODULES; a module that SAE training loads but the list misses
    would let a code change reuse stale SAEs. A fresh interpreter trains every architecture briefly."""
    code = """
import sys, torch
import recsae_core.sae as S
tc = S.TrainConfig(steps=2, batch_size=8, warmup_steps=0, log_every=1)
x = torch.randn(32, 4)
for cfg in (S.ReluL1Config(d_in=4, n_latents=8), S.TopKConfig(d_in=4, n_latents=8, k=2),
            S.BatchTopKConfig(d_in=4, n_latents=8, k=2), S.MatryoshkaConfig(d_in=4, n_latents=8, prefixes=(4, 8), beta=0.0)):
    for fused in (True, False):
        S.train_sae(cfg, x, S.TrainConfig(steps=2, batch_size=8, warmup_steps=0, fused=fused), progress=False)
S.train_sae(S.P3Config(d_in=4, n_latents=8, beta=1.0), S.TwoTowerData(x[:16], x[16:]), tc,
            scorer=S.dot_product_scorer(), progress=False)
print('\\n'.join(sorted(m for m in sys.modules if m.startswith('recsae_core'))))
"""
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    hashed = set(sae_eval.SAE_TRAINING_MODULES)
    missing = set(loaded.split()) - hashed
    assert not missing, f"add these modules to recsae_core.sae_eval.SAE_TRAINING_MODULES: {sorted(missing)}"
    assert "recsae_core.sae_eval" not in hashed and "recsae_core.probe" not in hashed
    assert len(sae_eval.sae_source_fingerprint()) == 16


# ---------------------------------------------------------------------------------------- activations
def test_cached_activations_hit_and_layout(tmp_path, monkeypatch):
    world = planted_world(n_users=40, d=16, n_items=60, seed=1)
    a = sae_eval.cached_activations(
        world.model, "planted.seq", world.batch(), progress=False, cache_dir=tmp_path
    )
    files = sorted(p.name for p in (tmp_path / "activations").iterdir())
    assert len(files) == 2 and files[0].startswith("planted.seq-all-") and files[0].endswith(".json")

    def boom(*args, **kw):
        raise AssertionError("should have been read from the cache")

    with monkeypatch.context() as mp:
        mp.setattr(world.model, "representation", boom)
        b = sae_eval.cached_activations(
            world.model, "planted.seq", world.batch(), progress=False, cache_dir=tmp_path
        )
    assert torch.equal(a.acts, b.acts) and b.meta["cache_key"] == a.meta["cache_key"]
    last = sae_eval.cached_activations(
        world.model, "planted.seq", world.batch(), positions="last", progress=False, cache_dir=tmp_path
    )
    assert len(last) == 40 and len(list((tmp_path / "activations").iterdir())) == 4
    # the SAE cache keys these rows by their provenance
    assert sae_eval.sae_cache_key(a, S.TopKConfig(d_in=16, n_latents=8, k=2)) != sae_eval.sae_cache_key(
        last, S.TopKConfig(d_in=16, n_latents=8, k=2)
    )


# ----------------------------------------------------------------------------------------- evaluation
@pytest.fixture(scope="module")
def planted():
    """A planted world (8 groups in superposition in d = 32), its split, and a TopK SAE trained on the
    valid users' sequence positions."""
    from recsae_core.synthetic import planted_split

    world = planted_world(n_users=200, n_items=200, n_groups=8, d=32, seed=0)
    split = planted_split(world)
    batch = probe.part_batch(world.model, split, "valid")
    acts = probe.collect_activations(world.model, "planted.seq", batch, progress=False)
    res = S.train_sae(
        S.TopKConfig(d_in=32, n_latents=32, k=3),
        acts.acts,
        S.TrainConfig(steps=300, batch_size=256, lr=3e-3, warmup_steps=20),
        progress=False,
    )
    return world, split, res


def test_evaluate_sae_on_planted_concepts(planted):
    from recsae_core.evaluate import evaluate

    world, split, res = planted
    rep = sae_eval.evaluate_sae(
        res.sae,
        world.model,
        "planted.seq",
        split,
        positions="all",
        item_labels=world.item_groups,
        train_result=res,
    )
    base = evaluate(world.model, split, "test", ks=(10,))
    assert rep.accuracy["base"] == base and rep.accuracy["spliced_keep_error"] == base
    assert rep.explained_variance > 0.95 and rep.fvu < 0.05 and 2.5 < rep.l0 <= 3.0
    assert abs(rep.accuracy["spliced"]["ndcg@10"] - base["ndcg@10"]) < 0.1 * base["ndcg@10"]
    # concepts in superposition: SAE features align with the groups better than the raw neurons
    assert rep.mean_max_corr > 0.9 and rep.mean_max_corr > rep.neuron_mean_max_corr + 0.15
    assert rep.mean_max_auc > rep.neuron_mean_max_auc
    assert list(rep.per_label["label"]) == [str(g) for g in range(8)] and len(rep.per_label) == 8
    assert rep.per_label["neuron_max_corr"].mean() == pytest.approx(rep.neuron_mean_max_corr)
    assert (rep.train_seconds, rep.rows_per_second) == (res.seconds, res.rows_per_second)
    # the rows are the test users' non-padding positions (the full histories)
    assert rep.n_rows == int((world.seqs > 0).sum())
    # a broken SAE (each latent decodes to its neighbour's atom) loses the accuracy; an untrained SAE is
    # no control on this world (its top-3 random atoms keep the user's direction: ndcg 0.124 vs 0.138)
    broken = S.from_config(res.sae.cfg)
    broken.load_state_dict(res.sae.state_dict())
    with torch.no_grad():
        broken.W_dec.copy_(res.sae.W_dec.roll(1, 0))
    bad = sae_eval.evaluate_sae(
        broken, world.model, "planted.seq", split, positions="all", keep_error_too=False
    )
    assert bad.accuracy["spliced"]["ndcg@10"] < 0.5 * base["ndcg@10"] and bad.explained_variance < 0.5
    assert "spliced_keep_error" not in bad.accuracy and bad.mean_max_corr is None
    frame = pd.concat([rep.to_frame(), bad.to_frame()], ignore_index=True)
    assert len(frame) == 2 and {"explained_variance", "l0", "base_ndcg@10", "spliced_ndcg@10"} <= set(frame)
    assert frame["mean_max_corr"].isna().tolist() == [False, True]


def test_evaluate_sae_sparsity_counts_and_row_sample(planted):
    world, split, _ = planted
    sae = S.from_config(S.ReluL1Config(d_in=32, n_latents=8)).eval()
    with torch.no_grad():
        sae.b_enc[0], sae.b_enc[1] = 100.0, -100.0  # latent 0 fires on every row, latent 1 on none
    acts = probe.collect_activations(
        world.model, "planted.item", probe.part_batch(world.model, split), progress=False
    )
    rep = sae_eval.evaluate_sae(sae, world.model, "planted.item", split, acts=acts, max_rows=150)
    rates = sae.encode(acts.acts[torch.randperm(200, generator=torch.Generator().manual_seed(42))[:150]]) > 0
    rates = rates.double().mean(0)
    assert rep.n_rows == 150 and rep.dead_fraction == float((rates == 0).double().mean()) >= 1 / 8
    assert rep.dense_fraction == float((rates > sae_eval.DENSE_RATE).double().mean()) >= 1 / 8
    assert rep.l0 == pytest.approx(float(rates.sum()))  # mean L0 = sum of firing rates
    with pytest.raises(ValueError, match="width"):
        sae_eval.evaluate_sae(
            S.from_config(S.ReluL1Config(d_in=16, n_latents=8)), world.model, "planted.item", split, acts=acts
        )


def test_label_statistics_use_one_row_rule():
    """per_label_summary and mean_max_correlation subsample the same rows (P1: 200k rows, seed 42)."""
    from recsae_core import metrics as M

    g = torch.Generator().manual_seed(0)
    n = 200_500
    labels = torch.rand(n, 2, generator=g) < 0.3
    H = labels.float() @ torch.randn(2, 3, generator=g) + torch.randn(n, 3, generator=g)
    H[:500] += 50.0 * labels[:500, :1]  # rows whose presence in the sample changes the numbers
    summary = M.per_label_summary(H, labels, auc=False)
    assert M.mean_max_correlation(H, labels) == pytest.approx(float(summary["max_corr"].mean()), rel=1e-12)
    every = M.mean_max_correlation(H, labels, max_rows=None)
    assert every != pytest.approx(M.mean_max_correlation(H, labels), rel=1e-6)


# ------------------------------------------------------------------------------------------- steering
def test_steering_sweep_builds_cases_from_the_split(planted):
    from recsae_core import steer
    from recsae_core.evaluate import evaluate

    world, split, res = planted
    sae = res.sae
    H = sae.encode(world.model.item_emb.detach())
    feat = int((H * world.item_groups[:, 3:4]).mean(0).argmax())  # the latent of group 3
    base = evaluate(world.model, split, "test", ks=(10,))
    df = steer.steering_sweep(
        world.model, "planted.user", sae, split, "test", feat, [0.0, 2.0], item_labels=world.item_groups, k=10
    )
    for key in ("hr@10", "ndcg@10", "mrr@10", "coverage@10"):
        assert df[key].iloc[0] == pytest.approx(base[key], rel=1e-12), key  # α = 0 is the base model
    assert df["share_3"].iloc[1] > 0.8 > df["share_3"].iloc[0]
    fans = torch.nonzero(world.user_taste[:, 3] > 0.5).squeeze(1)
    sub = steer.steering_sweep(
        world.model,
        "planted.user",
        sae,
        split,
        features=feat,
        values=[0.0],
        users=fans,
        item_labels=world.item_groups,
    )
    assert sub["share_3"].iloc[0] > 2 * df["share_3"].iloc[0]
    # item-table site: no batch to build by hand; α = 0 is exact there too
    item = int(torch.nonzero(~world.item_groups[:, 3])[0])
    items = steer.steering_sweep(
        world.model,
        "planted.item",
        sae,
        split,
        "test",
        feat,
        [0.0, 5.0],
        rows=[item],
        item_labels=torch.arange(200) == item,
        label_names=["promoted"],
    )
    assert items["ndcg@10"].iloc[0] == pytest.approx(base["ndcg@10"], rel=1e-12)
    assert items["share_promoted"].iloc[1] > items["share_promoted"].iloc[0]
    with pytest.raises(TypeError, match="part"):
        steer.steering_sweep(
            world.model, "planted.user", sae, split, feat, [1.0], item_labels=world.item_groups
        )


@pytest.mark.shared
def test_cached_sae_and_evaluate_sae_on_a_real_ml100k_model(shared_data, tmp_path):
    """The whole path on real data (ML-100k, a short BPR-MF): cached activations and SAE (a second call hits
    and does not retrain), then one report whose numbers are consistent with each other."""
    from recsae_core.cache import cached_fit
    from recsae_core.data.loaders import load_dataset
    from recsae_core.data.splits import leave_one_out
    from recsae_core.models.base import UserBatch
    from recsae_core.sae import TopKConfig, TrainConfig

    ds = load_dataset("ml-100k", download=False, progress=False)
    split = leave_one_out(ds, seed=0)
    fit = cached_fit("bprmf", split, {"epochs": 3, "valid_users": 200}, progress=False, cache_dir=tmp_path)
    model = fit.model.eval()
    users = UserBatch(torch.arange(ds.n_users))  # a two-tower user site: one row per user
    acts = sae_eval.cached_activations(model, "bprmf.user", users, progress=False, cache_dir=tmp_path)
    assert acts.acts.shape == (ds.n_users, model.item_table().shape[1])
    cfg = TopKConfig(d_in=acts.acts.shape[1], n_latents=128, k=8)
    tc = TrainConfig(steps=400, batch_size=128, warmup_steps=0)
    first = sae_eval.cached_sae(acts, cfg, tc, seed=0, cache_dir=tmp_path, progress=False)
    second = sae_eval.cached_sae(acts, cfg, tc, seed=0, cache_dir=tmp_path, progress=False)
    assert (first.meta["cache_hit"], second.meta["cache_hit"]) == (False, True)
    assert all(
        torch.equal(a, b)
        for a, b in zip(first.sae.state_dict().values(), second.sae.state_dict().values(), strict=True)
    )
    rep = sae_eval.evaluate_sae(
        second.sae,
        model,
        "bprmf.user",
        split,
        ks=(10,),
        train_result=second,
    )
    assert rep.n_rows == ds.n_users and rep.l0 <= 8 + 1e-6
    assert 0.5 < rep.explained_variance <= 1.0 and abs(rep.fvu - (1 - rep.explained_variance)) < 0.1
    base, spliced = rep.accuracy["base"]["ndcg@10"], rep.accuracy["spliced"]["ndcg@10"]
    assert base > 0.02 and spliced > 0.5 * base  # a trained SAE keeps most of the ranking
    assert rep.accuracy["spliced_keep_error"]["ndcg@10"] == base  # the error term restores the model exactly
    assert rep.train_seconds == second.seconds and rep.rows_per_second == second.rows_per_second
    frame = rep.to_frame()
    assert len(frame) == 1 and frame["base_ndcg@10"].iloc[0] == base
