"""Training loops (learn a pattern popularity cannot, early stopping, determinism) and the artifact cache."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F

import recsae_core.cache as cache_mod
import recsae_core.train as train_mod
from recsae_core.cache import artifact_key, cached_fit, load_model, save_model
from recsae_core.data.dataset import RecDataset, Split
from recsae_core.evaluate import evaluate
from recsae_core.models.base import UserBatch
from recsae_core.train import fit, linear_cross_entropy, sample_negatives

# Small settings that train in about a second each on 2 cores.
FAST = {
    "sasrec": {"d": 32, "maxlen": 16, "epochs": 25, "patience": 5, "dropout": 0.1},
    "bprmf": {"d": 16, "lr": 1e-2, "epochs": 40, "patience": 5, "batch_size": 256},
    "lightgcn": {"d": 16, "lr": 1e-2, "epochs": 40, "patience": 5, "batch_size": 256},
    "mf": {"d": 16, "lr": 1e-2, "epochs": 40, "patience": 5, "batch_size": 256},
    "ncf": {"d": 16, "lr": 1e-2, "epochs": 40, "patience": 10, "batch_size": 512},
    "pop": None,
}


def synth_dataset(
    n_users: int = 160, n_items: int = 48, n_clusters: int = 4, seed: int = 0, timestamps: bool = True
) -> RecDataset:
    """Users in ``n_clusters`` groups, each walking through its group's items in a cyclic order.

    Item popularity is nearly flat, so popularity is weak; the group (collaborative signal) and the next
    item (sequential signal: item + 1 within the group) are learnable.
    """
    rng = np.random.default_rng(seed)
    size = n_items // n_clusters
    lens = rng.integers(7, 12, n_users)
    user = np.repeat(np.arange(n_users), lens)
    t = np.concatenate([np.arange(n) for n in lens])
    start = rng.integers(0, size, n_users)[user]
    item = (user % n_clusters) * size + (start + t) % size
    inter = pd.DataFrame(
        {"user": user, "item": item.astype(np.int64), "rating": np.ones(len(user), np.float32)}
    )
    if timestamps:
        inter["timestamp"] = (1_000 + 10 * t).astype(np.int64)
    items = pd.DataFrame({"item_id": np.arange(n_items), "title": [f"item {i}" for i in range(n_items)]})
    return RecDataset(
        "synth", inter, items, np.zeros((n_items, 0), bool), [], pd.DataFrame({"user_id": np.arange(n_users)})
    )


def loo(ds: RecDataset) -> Split:
    """Leave-one-out by time (or row order): last = test, second-to-last = valid."""
    keys = ["user", "timestamp"] if ds.has_timestamps else ["user"]
    df = ds.interactions.sort_values(keys, kind="stable")
    from_end = df.groupby("user").cumcount(ascending=False).to_numpy()
    return Split("loo", ds, df[from_end >= 2], df[from_end == 1], df[from_end == 0])


@pytest.fixture(scope="module")
def split() -> Split:
    return loo(synth_dataset())


@pytest.fixture(scope="module")
def pop_ndcg(split) -> float:
    return evaluate(fit("pop", split, progress=False).model, split, "test")["ndcg@10"]


# ------------------------------------------------------------------------------------ training


@pytest.mark.parametrize("name", ["sasrec", "bprmf", "lightgcn", "mf", "ncf"])
def test_training_learns_what_popularity_cannot(split, pop_ndcg, name):
    result = fit(name, split, FAST[name], seed=0, progress=False)
    ndcg = evaluate(result.model, split, "test")["ndcg@10"]
    assert pop_ndcg < 0.15  # the data gives popularity little to work with
    assert ndcg > pop_ndcg + 0.25, (name, ndcg, pop_ndcg)
    hist = result.history
    assert list(hist.columns[:4]) == ["epoch", "loss", "valid_ndcg@10", "valid_hr@10"]
    assert hist["loss"].iloc[-1] < hist["loss"].iloc[0]
    # the restored weights are the best validation epoch's
    best = hist.loc[hist["valid_ndcg@10"].idxmax()]
    assert result.best_epoch == int(best["epoch"])
    assert evaluate(result.model, split, "valid", ks=(10,))["ndcg@10"] == pytest.approx(best["valid_ndcg@10"])
    assert not result.model.training


@pytest.mark.parametrize("patience", [2, 3])
def test_early_stopping_stops_patience_epochs_after_an_early_peak(split, monkeypatch, patience):
    """Validation NDCG@10 scripted to peak at epoch 2 (a tie at epoch 3 is no improvement): training
    stops exactly ``patience`` epochs after the peak and restores the weights validated at epoch 2."""
    scripted = [0.10, 0.30, 0.30, 0.20, 0.25, 0.29, 0.10, 0.05]
    weights = []

    def scripted_evaluate(score_fn, data, ks, device=None):
        weights.append({k: v.clone() for k, v in score_fn.__self__.state_dict().items()})
        return {"ndcg@10": scripted[len(weights) - 1], "hr@10": 0.5}

    monkeypatch.setattr(train_mod, "evaluate_data", scripted_evaluate)
    result = fit("mf", split, {**FAST["mf"], "patience": patience, "epochs": 8}, progress=False)
    assert result.best_epoch == 2
    assert result.history["epoch"].tolist() == list(range(1, 2 + patience + 1))
    assert result.history["valid_ndcg@10"].tolist() == scripted[: 2 + patience]
    assert not torch.equal(weights[1]["item_emb.weight"], weights[-1]["item_emb.weight"])
    assert all(torch.equal(v, weights[1][k]) for k, v in result.model.state_dict().items())


def test_fit_is_deterministic_per_seed(split):
    a = fit("sasrec", split, {**FAST["sasrec"], "epochs": 2}, seed=3, progress=False)
    b = fit("sasrec", split, {**FAST["sasrec"], "epochs": 2}, seed=3, progress=False)
    c = fit("sasrec", split, {**FAST["sasrec"], "epochs": 2}, seed=4, progress=False)
    assert a.history["loss"].tolist() == b.history["loss"].tolist()
    assert all(torch.equal(v, b.model.state_dict()[k]) for k, v in a.model.state_dict().items())
    assert a.history["loss"].tolist() != c.history["loss"].tolist()
    m1 = fit("ncf", split, {**FAST["ncf"], "epochs": 2}, seed=1, progress=False)
    m2 = fit("ncf", split, {**FAST["ncf"], "epochs": 2}, seed=1, progress=False)
    assert m1.history["loss"].tolist() == m2.history["loss"].tolist()


@pytest.mark.parametrize("name", ["ncf", "mf", "bprmf", "sasrec"])
def test_small_step_models_train_on_one_thread_and_the_count_is_restored(split, monkeypatch, name):
    """MF, NCF and BPR-MF train on one torch thread whatever the process has (ONE_THREAD_MODELS: their
    small steps run 2-3x slower on two); the others keep the process's count; it is restored after."""
    seen = []

    def spy(score_fn, data, ks, device=None):
        seen.append(torch.get_num_threads())
        return {"ndcg@10": 0.1, "hr@10": 0.2}

    monkeypatch.setattr(train_mod, "evaluate_data", spy)
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        fit(name, split, {**FAST[name], "epochs": 1}, progress=False)
        assert seen == [1 if name in train_mod.ONE_THREAD_MODELS else 2]
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


def test_sequential_model_needs_timestamps():
    split = loo(synth_dataset(timestamps=False))
    with pytest.raises(ValueError, match="no timestamps"):
        fit("sasrec", split, FAST["sasrec"], progress=False)


def test_cuda_request_without_gpu_is_a_clear_error(split):
    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    with pytest.raises(RuntimeError, match="CUDA"):
        fit("bprmf", split, FAST["bprmf"], device="cuda", progress=False)


def test_sample_negatives_never_returns_a_seen_item():
    rng = np.random.default_rng(0)
    n_items = 6
    users = np.repeat(np.arange(3), 200)
    seen = {0: [0, 1, 2, 3, 4], 1: [5], 2: []}  # user 0 has a single unseen item
    keys = np.sort(np.array([u * n_items + i for u, items in seen.items() for i in items], dtype=np.int64))
    neg = sample_negatives(users, n_items, keys, rng)
    for u in range(3):
        assert not set(neg[users == u]) & set(seen[u])
    assert set(neg[users == 0]) == {5}
    assert set(neg[users == 2]) == set(range(6))  # uniform draws cover the catalogue
    with pytest.raises(RuntimeError, match="seen nearly all"):
        sample_negatives(np.array([0]), 2, np.array([0, 1]), rng, max_rounds=3)


def test_linear_cross_entropy_matches_reference_value_and_gradients():
    torch.manual_seed(0)
    h = torch.randn(37, 8, requires_grad=True)
    w = torch.randn(13, 8, requires_grad=True)
    t = torch.randint(0, 13, (37,))
    ref = F.cross_entropy(h @ w.T, t, reduction="sum")
    gh, gw = torch.autograd.grad(ref * 0.5, (h, w))
    got = linear_cross_entropy(h, w, t, chunk=5)
    gh2, gw2 = torch.autograd.grad(got * 0.5, (h, w))
    assert torch.allclose(got, ref, rtol=1e-5)
    assert torch.allclose(gh, gh2, atol=1e-5) and torch.allclose(gw, gw2, atol=1e-5)


# ------------------------------------------------------------------------------------ cache


def test_cached_fit_miss_then_hit(split, tmp_path, monkeypatch):
    cfg = {**FAST["bprmf"], "epochs": 3}
    first = cached_fit("bprmf", split, cfg, progress=False, cache_dir=tmp_path)
    assert not first.from_cache and (first.path / "model.safetensors").is_file()

    def boom(*args, **kwargs):
        raise AssertionError("fit must not run on a cache hit")

    monkeypatch.setattr(cache_mod, "fit", boom)
    second = cached_fit("bprmf", split, cfg, progress=False, cache_dir=tmp_path)
    assert second.from_cache and second.path == first.path
    batch = UserBatch(torch.arange(10))
    assert torch.equal(first.model.score(batch), second.model.score(batch))
    pd.testing.assert_frame_equal(first.history, second.history, check_dtype=False)
    assert second.best_epoch == first.best_epoch
    # a different config, seed or split is a different key -> a miss (fit is still patched out)
    with pytest.raises(AssertionError, match="must not run"):
        cached_fit("bprmf", split, {**cfg, "d": 8}, progress=False, cache_dir=tmp_path)
    with pytest.raises(AssertionError, match="must not run"):
        cached_fit("bprmf", split, cfg, seed=1, progress=False, cache_dir=tmp_path)
    other = Split(split.name, split.dataset, split.train.iloc[1:], split.valid, split.test)
    assert artifact_key("bprmf", other, cfg) != artifact_key("bprmf", split, cfg)


def test_a_second_process_waits_for_the_one_training_the_same_key_and_loads_its_artifact(
    split, tmp_path, monkeypatch
):
    """Two chapters that miss the same model at once: the one holding the key's lock trains, the other blocks,
    then loads the artifact instead of training it again (a thread stands for the second process: ``flock``
    locks belong to the open file, so two opens in one process exclude each other too)."""
    import threading

    cfg = {**FAST["bprmf"], "epochs": 2}
    trained_by: list[str] = []
    real_fit = cache_mod.fit

    def counting_fit(*args, **kwargs):
        trained_by.append(threading.current_thread().name)
        return real_fit(*args, **kwargs)

    monkeypatch.setattr(cache_mod, "fit", counting_fit)
    key = artifact_key("bprmf", split, cache_mod.make_config("bprmf", cfg), 0)
    final = cache_mod._artifact_dir(tmp_path, "bprmf", split, 0, key)
    out: dict[str, object] = {}
    waiter = threading.Thread(
        target=lambda: out.update(r=cached_fit("bprmf", split, cfg, progress=False, cache_dir=tmp_path)),
        name="second",
    )
    with cache_mod.key_lock(final):
        waiter.start()
        waiter.join(timeout=1.0)
        assert waiter.is_alive() and trained_by == []  # blocked on the lock, nothing trained
        cache_mod._fit_and_store(
            "bprmf",
            split,
            cache_mod.make_config("bprmf", cfg),
            key,
            final,
            device="cpu",
            seed=0,
            progress=False,
        )
    waiter.join(timeout=60)
    assert not waiter.is_alive()
    assert trained_by == ["MainThread"] and out["r"].from_cache and out["r"].path == final


def test_cache_dir_from_environment(split, tmp_path, monkeypatch):
    monkeypatch.setenv("RECSAE_CACHE", str(tmp_path / "env-cache"))
    result = cached_fit("pop", split, progress=False)
    assert result.path.is_relative_to(tmp_path / "env-cache")


@pytest.mark.parametrize("name", ["sasrec", "bprmf", "lightgcn", "mf", "ncf", "pop"])
def test_save_load_round_trip(split, tmp_path, name):
    cfg = FAST[name] and {**FAST[name], "epochs": 1}
    result = fit(name, split, cfg, progress=False)
    path = save_model(
        result.model, tmp_path / name, model_name=name, config=result.config, history=result.history
    )
    model, info = load_model(path)
    assert (
        info["model"] == name
        and json.loads((path / "config.json").read_text())["n_items"] == split.dataset.n_items
    )
    assert type(model) is type(result.model) and model.config == result.config
    data_seqs = torch.randint(1, split.dataset.n_items + 1, (5, 6)) if name == "sasrec" else None
    batch = UserBatch(torch.arange(5), data_seqs)
    assert torch.equal(model.score(batch), result.model.score(batch))
    assert evaluate(model, split, "test") == evaluate(result.model, split, "test")


def test_interrupted_write_leaves_no_artifact(split, tmp_path, monkeypatch):
    def failing_save(*args, **kwargs):
        raise KeyboardInterrupt("simulated interrupt while writing weights")

    monkeypatch.setattr(cache_mod, "save_file", failing_save)
    with pytest.raises(KeyboardInterrupt):
        cached_fit("pop", split, progress=False, cache_dir=tmp_path)
    # no half-written file (the entry's empty lock file, cache.key_lock, is not part of an artifact)
    assert [p for p in tmp_path.rglob("*") if p.is_file() and not p.name.endswith(".lock")] == []
    assert (
        not (tmp_path / "pop").exists() or [p for p in (tmp_path / "pop").iterdir() if p.is_dir()] == []
    )  # no artifact directory
    monkeypatch.undo()
    result = cached_fit("pop", split, progress=False, cache_dir=tmp_path)
    assert not result.from_cache and cached_fit("pop", split, progress=False, cache_dir=tmp_path).from_cache


def test_source_fingerprint_is_read_once_per_process(monkeypatch):
    """An edit to a training module on disk during a long build must not re-key the artifacts the process's
    still-loaded old code trains: the fingerprint is the code this process started with."""
    first = cache_mod.source_fingerprint()
    monkeypatch.setattr(cache_mod, "sources_sha256", lambda root, files: "f" * 64)  # "edited on disk"
    assert cache_mod.source_fingerprint() == first
    cache_mod.source_fingerprint.cache_clear()  # a new process reads the edit
    assert cache_mod.source_fingerprint() == "f" * 16
    monkeypatch.undo()
    cache_mod.source_fingerprint.cache_clear()
    assert cache_mod.source_fingerprint() == first


def test_artifact_key_covers_every_module_that_training_loads():
    """The cache key hashes TRAINING_MODULES; a module that training loads but the list misses would let a
    code change reuse stale models. Run in a fresh interpreter, so other tests' imports do not count."""
    import subprocess
    import sys

    code = (
        "import sys, recsae_core.cache; "
        "print('\\n'.join(sorted(m for m in sys.modules if m.startswith('recsae_core'))))"
    )
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    hashed = set(cache_mod.TRAINING_MODULES)
    missing = set(loaded.split()) - hashed
    assert not missing, f"add these modules to recsae_core.cache.TRAINING_MODULES: {sorted(missing)}"
    assert "recsae_core.viz" not in hashed and "recsae_core.book" not in hashed
