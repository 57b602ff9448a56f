"""BERT4Rec: sites and exact round trips, bidirectional attention, padding, masking, training, cache, probes."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F

import recsae_core.sae as S
from recsae_core import probe, steer
from recsae_core.batching import eval_data, mask_items, masked_sequences
from recsae_core.cache import TRAINING_MODULES, artifact_key
from recsae_core.data.dataset import RecDataset
from recsae_core.data.splits import leave_one_out
from recsae_core.evaluate import evaluate
from recsae_core.models.base import UserBatch
from recsae_core.models.bert4rec import BERT4Rec, BERT4RecConfig
from recsae_core.models.registry import get_spec, make_config
from recsae_core.models.sasrec import SASRec, SASRecConfig
from recsae_core.train import fit

N_USERS, N_ITEMS = 7, 11


@pytest.fixture(autouse=True)
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def random_seqs(
    batch: int, length: int, n_items: int = N_ITEMS, seed: int = 0, min_len: int = 1
) -> torch.Tensor:
    """Left-padded ``(batch, length)`` histories with random lengths in ``[min_len, length]``."""
    g = torch.Generator().manual_seed(seed)
    seqs = torch.randint(1, n_items + 1, (batch, length), generator=g)
    lens = torch.randint(min_len, length + 1, (batch,), generator=g)
    pad = torch.arange(length)[None, :] < (length - lens)[:, None]
    return seqs.masked_fill(pad, 0)


def bert(seed: int = 0, **kw) -> BERT4Rec:
    torch.manual_seed(seed)
    cfg = BERT4RecConfig(**{"d": 16, "n_blocks": 2, "n_heads": 2, "maxlen": 13, **kw})
    return BERT4Rec(N_USERS, N_ITEMS, cfg).eval()


# ------------------------------------------------------------------------------------ model


def test_sites_shapes_and_exact_round_trip():
    model = bert()
    batch = UserBatch(torch.arange(5), random_seqs(5, 12))
    scores = model.score(batch)
    assert model.maxlen == 12 and model.mask_id == N_ITEMS + 1
    assert scores.shape == (5, N_ITEMS) and torch.isfinite(scores).all()
    assert set(model.sites) == {"bert4rec.block0", "bert4rec.block1", "bert4rec.last"}
    # block sites: the 12 history columns + the appended [MASK] as the last column
    assert model.representation("bert4rec.block0", batch).shape == (5, 13, 16)
    assert model.representation("bert4rec.last", batch).shape == (5, 16)
    for site in model.sites:
        rep = model.representation(site, batch)
        assert torch.equal(model.score_from(site, rep, batch), scores), site
    last_block = model.representation("bert4rec.block1", batch)
    assert torch.equal(last_block[:, -1], model.representation("bert4rec.last", batch))
    with pytest.raises(KeyError, match=r"bert4rec\.block0"):
        model.representation("bert4rec.block7", batch)
    with pytest.raises(ValueError, match=r"\(B, L \+ 1, D\)"):
        model.score_from("bert4rec.block0", last_block[:, :-1], batch)


@pytest.mark.parametrize("n_heads", [1, 2])
def test_round_trip_is_exact_at_realistic_sizes(n_heads):
    """score() runs the final block for the [MASK] query only; every site must still reproduce it bit for bit."""
    torch.manual_seed(0)
    model = BERT4Rec(50, 300, BERT4RecConfig(d=64, n_heads=n_heads, maxlen=64)).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0.0, 0.3)
    batch = UserBatch(torch.arange(48), random_seqs(48, 63, n_items=300, seed=5))
    with torch.no_grad():
        scores = model.score(batch)
        for site in model.sites:
            assert torch.equal(model.score_from(site, model.representation(site, batch), batch), scores), site


def test_score_is_the_masked_position_of_a_full_forward():
    """score() = tied output table · last block's output at the appended [MASK] of the full forward pass."""
    model = bert()
    seqs = random_seqs(4, 12, seed=4)
    tokens = torch.cat([seqs, torch.full((4, 1), N_ITEMS + 1)], 1)
    h = model(tokens).hidden_states[-1][:, -1]
    expected = h @ model.item_emb.weight[1 : N_ITEMS + 1].T
    assert torch.allclose(model.score(UserBatch(torch.arange(4), seqs)), expected, atol=1e-5)


def test_score_from_uses_the_given_representation():
    model = bert()
    batch = UserBatch(torch.arange(4), random_seqs(4, 12, min_len=3))
    rep = model.representation("bert4rec.block0", batch)
    at_mask = rep.clone()
    at_mask[:, -1] += torch.randn(4, 16)
    assert not torch.allclose(model.score_from("bert4rec.block0", at_mask, batch), model.score(batch))
    last = model.representation("bert4rec.last", batch)
    assert torch.allclose(
        model.score_from("bert4rec.last", 2 * last, batch), 2 * model.score(batch), atol=1e-5
    )


def test_attention_is_bidirectional_unlike_sasrec():
    """Changing a later item changes the outputs at earlier positions (BERT4Rec), not in SASRec (causal)."""
    model = bert()
    seqs = random_seqs(3, 12, seed=2, min_len=12)
    changed = seqs.clone()
    changed[:, 8] = changed[:, 8] % N_ITEMS + 1
    out, out2 = model(seqs), model(changed)
    for h1, h2 in zip(out.hidden_states, out2.hidden_states, strict=True):
        assert not torch.allclose(h1[:, :8], h2[:, :8], atol=1e-4)  # earlier positions see position 8
    torch.manual_seed(0)
    sas = SASRec(N_USERS, N_ITEMS, SASRecConfig(d=16, n_heads=2, maxlen=12)).eval()
    for h1, h2 in zip(sas(seqs).hidden_states, sas(changed).hidden_states, strict=True):
        assert torch.allclose(h1[:, :8], h2[:, :8], atol=1e-6)


def test_left_padding_gives_the_same_scores_as_no_padding():
    model = bert()
    hist = torch.tensor([[3, 7, 1, 9, 2]])
    padded = F.pad(hist, (12 - 5, 0))
    s_short = model.score(UserBatch(torch.tensor([0]), hist))
    s_long = model.score(UserBatch(torch.tensor([0]), padded))
    assert torch.allclose(s_short, s_long, atol=1e-5)
    batch = random_seqs(6, 12, seed=3)
    together = model.score(UserBatch(torch.arange(6), batch))
    alone = torch.cat([model.score(UserBatch(torch.tensor([i]), batch[i : i + 1])) for i in range(6)])
    assert torch.allclose(together, alone, atol=1e-5)


def test_padded_positions_do_not_change_the_score_and_empty_rows_are_finite():
    model = bert()
    seqs = random_seqs(4, 12, seed=1, min_len=2)
    seqs[:, :4] = 0
    batch = UserBatch(torch.arange(4), seqs)
    rep = model.representation("bert4rec.block0", batch)
    assert (rep[:, :4] == 0).all()  # pad columns hold 0
    noisy = rep.clone()
    noisy[:, :4] = torch.randn(4, 4, 16) * 10
    assert torch.allclose(model.score_from("bert4rec.block0", noisy, batch), model.score(batch), atol=1e-5)
    empty = torch.zeros(2, 12, dtype=torch.long)
    assert torch.isfinite(model.score(UserBatch(torch.arange(2), empty))).all()
    model.train()
    out = model(torch.cat([empty, seqs[:2]]))
    assert all(torch.isfinite(h).all() for h in out.hidden_states)


def test_histories_longer_than_maxlen_minus_one_are_a_clear_error():
    model = bert()  # 13 positions: 12 history items + [MASK]
    with pytest.raises(ValueError, match="at most maxlen - 1 = 12"):
        model.score(UserBatch(torch.arange(2), random_seqs(2, 13)))


def test_output_table_tied_or_separate():
    tied, sep = bert(), bert(tied_output=False)
    assert tied.output_table.data_ptr() == tied.item_emb.weight[1:].data_ptr()
    assert tied.output_table.shape == (N_ITEMS, 16)  # neither the pad row nor the [MASK] row
    assert sep.output_table.shape == (N_ITEMS, 16) and sep.out_emb is not None
    assert (tied.item_emb.weight[0] == 0).all()


@pytest.mark.parametrize(
    ("kw", "match"),
    [
        ({"maxlen": 1}, "maxlen"),
        ({"d": 10, "n_heads": 3}, "divisible"),
        ({"mask_prob": 0.0}, "mask_prob"),
        ({"mask_prob": 1.0}, "mask_prob"),
        ({"force_last_mask_prob": 1.5}, "force_last_mask_prob"),
        ({"dropout": 1.0}, "dropout"),
        ({"lr": 0.0}, "lr"),
        ({"valid_users": 0}, "valid_users"),
    ],
)
def test_config_validation(kw, match):
    with pytest.raises(ValueError, match=match):
        BERT4RecConfig(**kw)


def test_defaults_follow_p1_and_the_registry():
    cfg = make_config("bert4rec")
    assert (cfg.d, cfg.n_blocks, cfg.n_heads, cfg.maxlen, cfg.mask_prob) == (64, 2, 2, 64, 0.2)
    assert cfg.force_last_mask_prob == 0.0  # P1: force_last_item_masking_prob=0
    spec = get_spec("bert4rec")
    assert spec.model_cls is BERT4Rec and spec.kind == "masked" and spec.sequential


# ------------------------------------------------------------------------------------ masking


def test_mask_items_rate_labels_and_padding():
    items = random_seqs(400, 50, n_items=1000, seed=7, min_len=10)
    real = items > 0
    inputs, labels = mask_items(items, 0.2, 1001, torch.Generator().manual_seed(0))
    masked = inputs == 1001
    n = int(real.sum())
    rate = float(masked.sum()) / n
    assert abs(rate - 0.2) < 4 * (0.2 * 0.8 / n) ** 0.5  # binomial, 4 standard deviations
    assert not (masked & ~real).any()  # padding is never masked
    assert torch.equal(labels[masked], items[masked]) and (labels[~masked] == 0).all()
    assert torch.equal(inputs[~masked], items[~masked])
    last_rate = float(masked[:, -1].float().mean())
    assert last_rate < 0.35  # not forced by default (P1)
    forced, _ = mask_items(items, 0.2, 1001, torch.Generator().manual_seed(0), force_last_prob=1.0)
    assert (forced[:, -1] == 1001).all()
    again, _ = mask_items(items, 0.2, 1001, torch.Generator().manual_seed(0))
    assert torch.equal(again, inputs)  # seeded


# ------------------------------------------------------------------------------------ training


def walk_dataset(n_users: int = 240, n_items: int = 48, n_clusters: int = 4, seed: int = 0) -> RecDataset:
    """Users in ``n_clusters`` groups walking through their group's items in a cyclic order.

    Popularity is nearly flat (weak baseline); the group and the next item (item + 1 within the group)
    are learnable from the history, by a bidirectional model too.
    """
    rng = np.random.default_rng(seed)
    size = n_items // n_clusters
    lens = rng.integers(7, 14, n_users)
    user = np.repeat(np.arange(n_users), lens)
    t = np.concatenate([np.arange(n) for n in lens])
    start = rng.integers(0, size, n_users)[user]
    item = (user % n_clusters) * size + (start + t) % size
    inter = pd.DataFrame(
        {
            "user": user,
            "item": item.astype(np.int64),
            "rating": np.ones(len(user), np.float32),
            "timestamp": (1_000 + 10 * t).astype(np.int64),
        }
    )
    items = pd.DataFrame({"item_id": np.arange(n_items), "title": [f"item {i}" for i in range(n_items)]})
    return RecDataset(
        "walk", inter, items, np.zeros((n_items, 0), bool), [], pd.DataFrame({"user_id": np.arange(n_users)})
    )


FAST = {"d": 32, "maxlen": 16, "epochs": 60, "patience": 10, "batch_size": 32, "lr": 3e-3}


@pytest.fixture(scope="module")
def split():
    return leave_one_out(walk_dataset())


def test_masked_sequences_keep_the_last_maxlen_items_in_time_order(split):
    seqs = masked_sequences(split, 8)
    train = split.train.sort_values(["user", "timestamp"])
    u = int(seqs.users[0])
    expected = train[train.user == u]["item"].to_numpy()[-8:] + 1
    row = seqs.items[0].numpy()
    assert np.array_equal(row[row > 0], expected) and (row[: 8 - len(expected)] == 0).all()
    assert int(seqs.lengths[0]) == len(expected)


def test_training_beats_popularity_and_restores_the_best_epoch(split):
    pop = evaluate(fit("pop", split, progress=False).model, split, "test")["ndcg@10"]
    result = fit("bert4rec", split, FAST, seed=0, progress=False)
    model = result.model
    assert isinstance(model, BERT4Rec) and not model.training
    ndcg = evaluate(model, split, "test")["ndcg@10"]
    assert pop < 0.15
    assert ndcg > pop + 0.25, (ndcg, pop)
    hist = result.history
    assert hist["loss"].iloc[-1] < hist["loss"].iloc[0]
    best = hist.loc[hist["valid_ndcg@10"].idxmax()]
    assert result.best_epoch == int(best["epoch"])
    assert evaluate(model, split, "valid", ks=(10,))["ndcg@10"] == pytest.approx(best["valid_ndcg@10"])
    # validation / test histories are built with the model's history length (maxlen - 1)
    assert eval_data(split, "valid", model.maxlen).seqs.shape[1] == FAST["maxlen"] - 1


def test_cache_key_changes_with_the_config(split):
    base = artifact_key("bert4rec", split, FAST)
    assert artifact_key("bert4rec", split, dict(FAST)) == base
    assert artifact_key("bert4rec", split, {**FAST, "mask_prob": 0.3}) != base
    assert artifact_key("bert4rec", split, {**FAST, "force_last_mask_prob": 0.5}) != base
    assert artifact_key("sasrec", split, {"d": 32, "maxlen": 16}) != artifact_key(
        "bert4rec", split, {"d": 32}
    )
    assert "recsae_core.models.bert4rec" in TRAINING_MODULES


# ------------------------------------------------------------------------------------ probes and steering


@pytest.fixture(scope="module")
def sae_and_batch():
    model = bert()
    batch = UserBatch(torch.arange(6), random_seqs(6, 12, seed=9))
    torch.manual_seed(0)
    sae = S.from_config(S.ReluL1Config(d_in=16, n_latents=32)).eval()
    return model, sae, batch


def test_collect_activations_all_item_positions_and_last_is_the_mask(sae_and_batch):
    model, _, batch = sae_and_batch
    rep = model.representation("bert4rec.block0", batch)
    a = probe.collect_activations(model, "bert4rec.block0", batch, progress=False)
    r, c = torch.nonzero(batch.seqs > 0, as_tuple=True)
    assert len(a) == len(r)  # every non-padding item position, not the [MASK] (P1's SAE rows)
    assert torch.equal(a.items, batch.seqs[r, c] - 1) and torch.equal(a.positions, c)
    assert torch.equal(a.acts, rep[r, c])
    last = probe.collect_activations(model, "bert4rec.block0", batch, positions="last", progress=False)
    assert len(last) == 6 and (last.positions == 12).all()  # column 12 = the appended [MASK]
    assert torch.equal(last.acts, rep[:, -1]) and torch.equal(last.items, batch.seqs[:, -1] - 1)


def test_apply_to_site_last_edits_the_mask_column_only(sae_and_batch):
    model, sae, batch = sae_and_batch
    rep = model.representation("bert4rec.block0", batch)
    out = probe.apply_to_site(sae, rep, batch, positions="last")
    assert torch.equal(out[:, :-1], rep[:, :-1]) and not torch.equal(out[:, -1], rep[:, -1])
    assert torch.allclose(out[:, -1], sae(rep[:, -1]).x_hat, atol=1e-6)
    out_all = probe.apply_to_site(sae, rep, batch, positions="all")
    items = batch.seqs > 0
    assert torch.equal(out_all[:, -1], rep[:, -1])  # "all" = item columns
    assert torch.equal(out_all[:, :-1][~items], rep[:, :-1][~items]) and not torch.equal(out_all, rep)


def test_steering_at_the_last_position_moves_scores_and_alpha_zero_is_exact(sae_and_batch):
    model, sae, batch = sae_and_batch
    base = model.score(batch)
    for pos in ("last", "all"):
        exact = probe.spliced_scores_fn(model, "bert4rec.block0", sae, keep_error=True, positions=pos)(batch)
        assert torch.equal(exact, base)
    zero = steer.steered_scores_fn(model, "bert4rec.block0", sae, steer.Steer(3, 0.0))(batch)
    assert torch.allclose(zero, base, atol=1e-5)
    moved = steer.steered_scores_fn(model, "bert4rec.block0", sae, steer.Steer(3, 10.0))(batch)
    assert not torch.allclose(moved, base, atol=1e-3)
    # the edit reaches the scores through the [MASK] column: editing it by hand gives the same scores
    rep = model.representation("bert4rec.block0", batch)
    acts, _pre, stats = sae.encode_with_stats(rep[:, -1])
    edited = rep.clone()
    edited[:, -1] = rep[:, -1] + sae.decode(steer.Steer(3, 10.0)(acts), stats) - sae.decode(acts, stats)
    assert torch.allclose(model.score_from("bert4rec.block0", edited, batch), moved, atol=1e-5)
