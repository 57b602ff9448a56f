"""sae_eval: the trained-SAE cache, cached activations and evaluate_sae, on planted concepts (fast, seeded)."""

from __future__ import annotations

import dataclasses
import subprocess
import sys

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
    assert [p.name for p in (tmp_path / "sae").iterdir()] == [entry.name]  # no temporary directory left


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
    assert [p for p in tmp_path.rglob("*") if p.is_file()] == []
    assert list((tmp_path / "sae").iterdir()) == []


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
