"""P2 (RecSAE, papers.md §2): the ``sasrec.final`` site, the trainer's epoch schedule (P2 decoder
renormalisation, epoch callback, best-epoch selection, early stopping, AuxK from epoch 2), the P2 training
protocol on a planted world, and its plots."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch

import recsae_core.sae as S
from recsae_core import probe
from recsae_core.data.dataset import RecDataset
from recsae_core.data.splits import leave_one_out
from recsae_core.models.base import UserBatch
from recsae_core.models.sasrec import SASRec, SASRecConfig
from recsae_core.papers import p2
from recsae_core.synthetic import PlantedRecommender, planted_split, planted_world

D, M = 16, 64


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def topk_cfg(**kw) -> S.TopKConfig:
    return S.TopKConfig(**{"d_in": D, "n_latents": M, "k": 4, **kw})


def epoch_tc(**kw) -> S.TrainConfig:
    base = dict(epochs=4, batch_size=32, lr=3e-3, warmup_steps=0, sampling="epochs", log_every=1)
    return S.TrainConfig(**{**base, **kw})


def rows(n: int = 100, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, D, generator=torch.Generator().manual_seed(seed))


# --------------------------------------------------------------------------------------- sasrec.final
@pytest.mark.parametrize("n_blocks", [1, 2])
def test_sasrec_final_site_reproduces_score_exactly(n_blocks):
    torch.manual_seed(0)
    model = SASRec(8, 30, SASRecConfig(d=16, n_blocks=n_blocks, n_heads=2, maxlen=10)).eval()
    g = torch.Generator().manual_seed(1)
    seqs = torch.randint(1, 31, (9, 10), generator=g)
    seqs[:4, :5] = 0  # left padding
    batch = UserBatch(torch.arange(9), seqs)
    rep = model.representation("sasrec.final", batch)
    assert rep.shape == (9, 10, 16) and "sasrec.final" in model.sites
    assert torch.equal(model.score_from("sasrec.final", rep, batch), model.score(batch))
    assert torch.equal(rep[:, -1], model.representation("sasrec.last", batch))
    # every position is the final LayerNorm of the last block's output
    block = model.representation(f"sasrec.block{n_blocks - 1}", batch)
    assert torch.allclose(rep[:, :-1], model.final_ln(block[:, :-1]), atol=1e-6)
    # only the last position reaches the scores
    edited = rep.clone()
    edited[:, :-1] = 0.0
    assert torch.equal(model.score_from("sasrec.final", edited, batch), model.score(batch))


# -------------------------------------------------------------------------------- decoder norm schedule
def _norm_trace(decoder_norm: str) -> tuple[list[int], list[float], list[float]]:
    """Steps at which atoms were renormalised, max |norm - 1| right after each renormalisation, and
    after every optimiser step."""
    torch.manual_seed(0)
    sae = S.from_config(topk_cfg(decoder_norm=decoder_norm))
    calls: list[int] = []
    after_renorm: list[float] = []
    after_step: list[float] = []
    original = sae.set_decoder_norm_to_unit_norm_

    def spy() -> None:
        original()
        calls.append(len(after_step))
        after_renorm.append(float((sae.decoder_norms() - 1).abs().max()))

    sae.set_decoder_norm_to_unit_norm_ = spy  # type: ignore[method-assign]

    def on_step(step: int, rec: dict[str, float]) -> None:
        after_step.append(float((sae.decoder_norms() - 1).abs().max()))

    S.train_sae(sae, rows(), epoch_tc(), callback=on_step, progress=False)
    return calls, after_renorm, after_step


def test_epoch_decoder_norm_renormalises_at_each_epoch_start_only():
    calls, after_renorm, after_step = _norm_trace("epoch")
    epoch_len = math.ceil(100 / 32)
    assert calls == [0, epoch_len, 2 * epoch_len, 3 * epoch_len]  # init + start of every epoch
    assert max(after_renorm) < 1e-6
    assert len(after_step) == 4 * epoch_len
    assert min(after_step) > 1e-4  # atoms drift within an epoch (no projection, no renormalisation)


def test_step_decoder_norm_keeps_unit_norms_after_every_step():
    calls, _, after_step = _norm_trace("step")
    assert calls == list(range(len(after_step)))
    assert max(after_step) < 1e-6


def test_decoder_norm_is_validated_and_needs_whole_epochs():
    with pytest.raises(ValueError, match="decoder_norm must be one of"):
        topk_cfg(decoder_norm="never")
    with pytest.raises(ValueError, match="whole number"):
        S.train_sae(topk_cfg(decoder_norm="epoch"), rows(), S.TrainConfig(steps=5), progress=False)
    with pytest.raises(ValueError, match="whole number"):
        S.train_sae(topk_cfg(), rows(), epoch_tc(epochs=1.5, aux_start_epoch=2), progress=False)


# ----------------------------------------------------------------------------- epoch callback, selection
def test_epoch_callback_sees_the_live_sae_once_per_epoch():
    seen: list[tuple[int, int, bool, torch.Tensor]] = []

    def cb(epoch: int, sae: S.SparseAutoencoder) -> dict[str, float]:
        seen.append((epoch, id(sae), sae.training, sae.W_enc.detach().clone()))
        return {"probe": float(epoch) * 10}

    res = S.train_sae(topk_cfg(), rows(), epoch_tc(), epoch_callback=cb, progress=False)
    assert [s[0] for s in seen] == [1, 2, 3, 4]
    assert {s[1] for s in seen} == {id(res.sae)} and not any(s[2] for s in seen)
    assert not torch.equal(seen[0][3], seen[1][3])  # the weights it sees change: the live SAE
    assert torch.equal(seen[-1][3], res.sae.W_enc)
    h = res.epoch_history
    assert [r["epoch"] for r in h] == [1, 2, 3, 4] and [r["probe"] for r in h] == [10, 20, 30, 40]
    assert [r["step"] for r in h] == [4, 8, 12, 16]  # ceil(100 / 32) steps per epoch
    assert all({"loss", "fvu", "dead_latents", "dead_fraction"} <= set(r) for r in h)
    assert res.best_epoch is None and not res.stopped_early and res.steps == 16


def _peaked(values: dict[int, float], snapshots: dict[int, dict[str, torch.Tensor]]):
    def cb(epoch: int, sae: S.SparseAutoencoder) -> dict[str, float]:
        snapshots[epoch] = {k: v.clone() for k, v in sae.state_dict().items()}
        return {"dev": values[epoch]}

    return cb


def test_best_epoch_is_restored():
    snaps: dict[int, dict[str, torch.Tensor]] = {}
    cb = _peaked({1: 0.1, 2: 0.9, 3: 0.5, 4: 0.9, 5: 0.2}, snaps)  # tie at 4: the earlier epoch stays
    tc = epoch_tc(epochs=5, selection=S.EpochSelection("dev", mode="max"))
    res = S.train_sae(topk_cfg(), rows(), tc, epoch_callback=cb, progress=False)
    assert res.best_epoch == 2 and len(res.epoch_history) == 5 and not res.stopped_early
    for name, t in res.sae.state_dict().items():
        assert torch.equal(t, snaps[2][name]), name
    assert not torch.equal(snaps[2]["W_enc"], snaps[5]["W_enc"])
    # mode="min" picks the smallest
    snaps_min: dict[int, dict[str, torch.Tensor]] = {}
    cb_min = _peaked({1: 0.1, 2: 0.9, 3: 0.5, 4: 0.9, 5: 0.2}, snaps_min)
    tc_min = epoch_tc(epochs=5, selection=S.EpochSelection("dev", mode="min"))
    res_min = S.train_sae(topk_cfg(), rows(), tc_min, epoch_callback=cb_min, progress=False)
    assert res_min.best_epoch == 1 and torch.equal(res_min.sae.W_enc, snaps_min[1]["W_enc"])


def test_early_stopping_stops_at_best_plus_patience():
    snaps: dict[int, dict[str, torch.Tensor]] = {}
    values = {e: (0.9 if e == 2 else 0.1 * e / 10) for e in range(1, 11)}
    tc = epoch_tc(epochs=10, selection=S.EpochSelection("dev", patience=3))
    res = S.train_sae(topk_cfg(), rows(), tc, epoch_callback=_peaked(values, snaps), progress=False)
    assert [r["epoch"] for r in res.epoch_history] == [1, 2, 3, 4, 5]
    assert res.stopped_early and res.best_epoch == 2 and res.steps == 5 * 4
    assert torch.equal(res.sae.W_dec, snaps[2]["W_dec"])
    with pytest.raises(ValueError, match="not in the epoch record"):
        S.train_sae(topk_cfg(), rows(), epoch_tc(selection=S.EpochSelection("nope")), progress=False)
    with pytest.raises(ValueError, match="patience must be a positive int"):
        S.EpochSelection("dev", patience=0)


def _peaked_se(values: dict[int, float], se: float, snapshots: dict[int, dict[str, torch.Tensor]]):
    def cb(epoch: int, sae: S.SparseAutoencoder) -> dict[str, float]:
        snapshots[epoch] = {k: v.clone() for k, v in sae.state_dict().items()}
        return {"dev": values[epoch], "dev_se": se}

    return cb


@pytest.mark.parametrize(
    ("values", "kept"),
    [
        ({1: 0.5, 2: 0.9, 3: 0.86, 4: 0.7, 5: 0.88}, 5),  # 5 is within one SE of the best (2): latest kept
        ({1: 0.5, 2: 0.9, 3: 0.86, 4: 0.7, 5: 0.8}, 3),  # 5 is not; 3 is
        ({1: 0.5, 2: 0.9, 3: 0.8, 4: 0.7, 5: 0.8}, 2),  # nothing after the best is close: the best
        ({1: 0.9, 2: 0.87, 3: 0.95, 4: 0.86, 5: 0.2}, 3),  # 2 was close to 1, but 3 raised the bar
    ],
)
def test_one_standard_error_rule_keeps_the_latest_epoch_close_to_the_best(values, kept):
    snaps: dict[int, dict[str, torch.Tensor]] = {}
    tc = epoch_tc(epochs=5, selection=S.EpochSelection("dev", se_metric="dev_se"))
    res = S.train_sae(topk_cfg(), rows(), tc, epoch_callback=_peaked_se(values, 0.05, snaps), progress=False)
    assert res.best_epoch == kept and len(res.epoch_history) == 5
    assert all(torch.equal(t, snaps[kept][k]) for k, t in res.sae.state_dict().items())
    # mode="min" mirrors it
    neg = {e: -v for e, v in values.items()}
    tc_min = epoch_tc(epochs=5, selection=S.EpochSelection("dev", mode="min", se_metric="dev_se"))
    res_min = S.train_sae(
        topk_cfg(), rows(), tc_min, epoch_callback=_peaked_se(neg, 0.05, {}), progress=False
    )
    assert res_min.best_epoch == kept


def test_one_standard_error_rule_patience_counts_from_the_best_value():
    snaps: dict[int, dict[str, torch.Tensor]] = {}
    values = {1: 0.5, 2: 0.9, 3: 0.88, 4: 0.88, 5: 0.88, 6: 0.99, 7: 0.99}
    tc = epoch_tc(epochs=7, selection=S.EpochSelection("dev", patience=3, se_metric="dev_se"))
    res = S.train_sae(topk_cfg(), rows(), tc, epoch_callback=_peaked_se(values, 0.05, snaps), progress=False)
    assert res.stopped_early and len(res.epoch_history) == 5 and res.best_epoch == 5
    with pytest.raises(ValueError, match="se_metric='nope' is not in the epoch record"):
        S.train_sae(
            topk_cfg(),
            rows(),
            epoch_tc(selection=S.EpochSelection("dev", se_metric="nope")),
            epoch_callback=_peaked_se(values, 0.05, {}),
            progress=False,
        )
    with pytest.raises(ValueError, match="se_metric must be a metric name"):
        S.EpochSelection("dev", se_metric="")


def test_clustered_se_known_answers():
    rng = np.random.default_rng(0)
    v = rng.random(50)
    users = np.arange(50)
    assert p2.clustered_se(v, users) == pytest.approx(v.std(ddof=1) / np.sqrt(50))
    # each user's case twice: the same information, the same standard error (not sqrt(2) smaller)
    assert p2.clustered_se(np.repeat(v, 2), np.repeat(users, 2)) == pytest.approx(v.std(ddof=1) / np.sqrt(50))
    assert np.isnan(p2.clustered_se(v[:3], np.zeros(3, dtype=int)))


def test_b_dec_init_mean_starts_the_decoder_bias_at_the_rows_mean():
    x = rows() + torch.linspace(-3, 3, D)  # a large shared component
    seen: list[torch.Tensor] = []

    def cb(epoch: int, sae: S.SparseAutoencoder) -> None:
        seen.append(sae.b_dec.detach().clone())

    tiny = {"epochs": 1, "lr": 1e-12}  # one epoch of steps too small to move b_dec: it is where it started
    S.train_sae(topk_cfg(), x, epoch_tc(b_dec_init="mean", **tiny), epoch_callback=cb, progress=False)
    assert torch.allclose(seen[-1], x.mean(0), atol=1e-6)
    S.train_sae(topk_cfg(), x, epoch_tc(**tiny), epoch_callback=cb, progress=False)
    assert torch.allclose(seen[-1], torch.zeros(D), atol=1e-6)  # "init": the config's zeros
    # P3's two-tower data: the mean of the user and item rows together
    u, it = rows(30, 1) + 2.0, rows(50, 2) - 1.0
    sae = S.from_config(S.P3Config(d_in=D, n_latents=M, beta=0.0, normalize_rows=False))
    S.init_b_dec_mean(sae, torch.cat([u, it]))
    assert torch.allclose(sae.b_dec, torch.cat([u, it]).mean(0), atol=1e-6)
    with pytest.raises(ValueError, match="b_dec_init must be one of"):
        S.TrainConfig(b_dec_init="median")
    assert (
        p2.p2_train_config().b_dec_init == "mean"
        and p2.p2_train_config(b_dec_init="init").b_dec_init == "init"
    )


def test_selection_on_the_trainers_own_metric_needs_no_callback():
    res = S.train_sae(
        topk_cfg(), rows(), epoch_tc(selection=S.EpochSelection("loss", mode="min")), progress=False
    )
    losses = [r["loss"] for r in res.epoch_history]
    assert res.best_epoch == 1 + int(np.argmin(losses))


def test_auxk_starts_at_the_configured_epoch_and_dead_latents_are_counted():
    torch.manual_seed(0)
    sae = S.from_config(topk_cfg())
    with torch.no_grad():  # latents 0..9 can never win the top-k
        sae.W_enc[:10] = 0.0
        sae.b_enc[:10] = -100.0
    res = S.train_sae(sae, rows(), epoch_tc(dead_after=16, aux_start_epoch=2), progress=False)
    epoch_len = 4
    first, later = res.history[:epoch_len], res.history[epoch_len:]
    assert not any("auxk" in r for r in first)  # dead latents exist from step 1, but AuxK waits
    assert all("auxk" in r for r in later)
    assert all(r["dead_latents"] >= 10 for r in res.epoch_history)
    # with the default (aux_start_epoch=1) AuxK enters as soon as a latent is dead
    torch.manual_seed(0)
    sae1 = S.from_config(topk_cfg())
    with torch.no_grad():
        sae1.W_enc[:10] = 0.0
        sae1.b_enc[:10] = -100.0
    res1 = S.train_sae(sae1, rows(), epoch_tc(dead_after=16), progress=False)
    assert "auxk" in res1.history[1]


def test_p3_on_plain_rows_with_a_prediction_loss_is_refused():
    x = torch.randn(64, 20)
    with pytest.raises(ValueError, match="beta=0"):
        S.train_sae(S.P3Config(beta=1.0), x, S.TrainConfig(steps=2), progress=False)
    with pytest.raises(ValueError, match="beta=0"):
        S.train_sae(S.MatryoshkaConfig(d_in=20, beta=0.5), x, S.TrainConfig(steps=2), progress=False)
    S.train_sae(S.P3Config(beta=0.0), x, S.TrainConfig(steps=2, warmup_steps=0), progress=False)


# ------------------------------------------------------------------------------ P2 protocol, planted
class OffsetPlanted(PlantedRecommender):
    """A planted recommender whose user vectors carry a large offset the scores ignore (it is orthogonal
    to every item embedding), as real user vectors carry a large shared component: an SAE must learn its
    decoder bias to keep the ranking, which an untrained SAE cannot (P2's "Init" collapse, §2.10)."""

    def __init__(self, item_emb: torch.Tensor, maxlen: int, offset: torch.Tensor) -> None:
        super().__init__(item_emb, maxlen)
        self.register_buffer("offset", offset)

    def representation(self, site: str, batch: UserBatch) -> torch.Tensor:
        rep = super().representation(site, batch)
        return rep + self.offset if site == "planted.user" else rep


@pytest.fixture(scope="module")
def planted_p2():
    world = planted_world(n_users=600, n_groups=40, d=48, seed=0)
    split = planted_split(world)
    items = torch.cat([world.model.item_emb.detach(), torch.zeros(world.model.n_items, 16)], 1)
    offset = torch.zeros(64)
    offset[48:] = 3.0 / 4.0  # norm 3, in the 16 dimensions no item uses
    model = OffsetPlanted(items, world.model.maxlen, offset).eval()
    acts = p2.p2_train_activations(model, "planted.user", split, progress=False)
    tc = p2.p2_train_config(lr=1e-2, batch_size=32, epochs=20, patience=5)
    res = p2.train_p2_sae(
        model, "planted.user", split, acts, 8, train_config=tc, scale=4, progress=False, cache=False
    )
    return model, split, acts, res


def test_train_p2_sae_keeps_the_dev_epoch_of_the_one_se_rule_and_comes_close_to_base(planted_p2):
    model, split, acts, res = planted_p2
    assert len(acts) == 600 and acts.acts.shape[1] == 64
    cfg = res.sae.cfg
    assert (cfg.n_latents, cfg.k, cfg.aux_k, cfg.decoder_norm) == (256, 8, 32, "epoch")
    h = res.epoch_history
    dev = np.array([r[p2.DEV_METRIC] for r in h])
    se = np.array([r[p2.DEV_SE_METRIC] for r in h])
    top = int(np.argmax(dev))
    kept = max(e for e in range(top, len(dev)) if dev[e] >= dev[top] - se[top])
    assert res.best_epoch == 1 + kept and np.all(se > 0)
    assert all({"loss", "dead_latents", "dev_hr@5"} <= set(r) for r in h)
    assert h[-1]["loss"] < 0.5 * h[0]["loss"]
    # the restored SAE is the kept epoch's: its dev NDCG@5, measured again, is the recorded value
    again = p2.dev_callback(model, "planted.user", split)(0, res.sae)
    assert again[p2.DEV_METRIC] == pytest.approx(dev[kept], abs=1e-12)
    assert again[p2.DEV_SE_METRIC] == pytest.approx(se[kept], abs=1e-12)
    base = res.meta["base_dev_ndcg@5"]
    assert dev[kept] > 0.75 * base
    untrained = p2.dev_callback(model, "planted.user", split)(0, p2.untrained_sae(res.sae))
    assert untrained[p2.DEV_METRIC] < 0.5 * base  # P2's "Init" collapse


def test_reconstruction_table_base_trained_untrained(planted_p2):
    model, split, _, res = planted_p2
    tab = p2.reconstruction_table(
        {"planted": model}, {("planted", 8): res.sae}, split, ks=(5, 10), sites={"planted": "planted.user"}
    )
    assert list(tab["variant"]) == ["base", "SAE", "untrained SAE"]
    assert tab["k"].isna().tolist() == [True, False, False] and int(tab["k"].iloc[1]) == 8
    assert {"HR@5", "HR@10", "NDCG@5", "NDCG@10", "cases"} <= set(tab.columns)
    base, sae, init = (tab.iloc[i]["NDCG@10"] for i in range(3))
    assert sae > 0.8 * base and init < 0.5 * base
    from recsae_core.evaluate import evaluate

    assert tab.iloc[0]["NDCG@10"] == pytest.approx(
        evaluate(model, split, ks=(10,), ties="pessimistic")["ndcg@10"]
    )
    with pytest.raises(ValueError, match="not in models"):
        p2.reconstruction_table({"planted": model}, {("other", 8): res.sae}, split)


def test_splice_change_matches_the_table_and_its_interval_covers_it(planted_p2):
    model, split, _, res = planted_p2
    tab = p2.reconstruction_table(
        {"planted": model}, {("planted", 8): res.sae}, split, ks=(10,), sites={"planted": "planted.user"}
    )
    base, spliced, init = (float(tab.iloc[i]["NDCG@10"]) for i in range(3))
    ch = p2.splice_change(model, res.sae, split, site="planted.user", n_boot=200)
    assert ch["change"] == pytest.approx((spliced - base) / base)
    assert ch["lo"] <= ch["change"] <= ch["hi"] and ch["hi"] - ch["lo"] > 0
    assert ch["cases"] == len(split.test) and ch["users"] == split.test["user"].nunique()
    dead = p2.splice_change(model, p2.untrained_sae(res.sae), split, site="planted.user", n_boot=200)
    assert dead["change"] == pytest.approx((init - base) / base) and dead["hi"] < ch["lo"]


def test_splice_fvu_is_measured_on_the_rows_the_splice_replaces(planted_p2):
    model, split, _, res = planted_p2
    data = probe.eval_cases(model, split, "test")
    x = model.representation("planted.user", UserBatch(data.users, data.seqs)).detach()
    assert len(x) == len(split.test)  # one row per case
    zero = p2.untrained_sae(res.sae)
    with torch.no_grad():
        zero.W_dec.zero_()
        zero.b_dec.copy_(x.mean(0))
    # a decoder that returns the cases' mean explains none of their variance: FVU 1 exactly
    assert p2.splice_fvu(model, zero, split, site="planted.user") == pytest.approx(1.0, abs=1e-5)
    with torch.no_grad():
        zero.b_dec.zero_()
    by_hand = float((x**2).sum() / ((x - x.mean(0)) ** 2).sum())
    assert p2.splice_fvu(model, zero, split, site="planted.user") == pytest.approx(by_hand, rel=1e-5)
    assert 0 < p2.splice_fvu(model, res.sae, split, site="planted.user") < 0.5


def test_change_table_gathers_the_splice_measures_per_model(planted_p2):
    model, split, _, res = planted_p2
    sites = {"planted": "planted.user"}
    tab, changes = p2.change_table(
        {"planted": model}, {("planted", 8): res}, split, 8, sites=sites, n_boot=100
    )
    row = tab.iloc[0]
    ch = p2.splice_change(model, res.sae, split, site="planted.user", n_boot=100)
    dead = p2.splice_change(model, p2.untrained_sae(res.sae), split, site="planted.user", n_boot=100)
    assert changes["planted"] == ch and row["SAE, k=8"] == ch["change"]
    assert (
        row["untrained SAE, k=8"] == dead["change"]
        and row["SAE: 95% CI"] == f"[{ch['lo']:+.3f}, {ch['hi']:+.3f}]"
    )
    assert row["FVU, training (kept epoch)"] == res.epoch_history[res.best_epoch - 1]["fvu"]
    assert row["FVU at the splice (test)"] == pytest.approx(
        p2.splice_fvu(model, res.sae, split, site="planted.user")
    )


def test_p2_config_and_sites():
    cfg = p2.p2_sae_config(64, 8)
    assert (cfg.n_latents, cfg.k, cfg.aux_k, cfg.aux_coeff, cfg.decoder_norm) == (
        1024,
        8,
        32,
        1 / 32,
        "epoch",
    )
    tc = p2.p2_train_config()
    assert (
        tc.selection == S.EpochSelection("dev_ndcg@5", "max", 10, "dev_ndcg@5_se") and tc.aux_start_epoch == 2
    )
    assert p2.p2_train_config(one_se=False).selection == S.EpochSelection("dev_ndcg@5", "max", 10)
    # patience counts P2's epochs: ours are a tenth of one here, so it waits 100 of ours
    assert p2.p2_train_config(epoch_fraction=0.1).selection.patience == 100
    with pytest.raises(ValueError, match="epoch_fraction must be in"):
        p2.p2_train_config(epoch_fraction=0.0)
    torch.manual_seed(0)
    sas = SASRec(5, 20, SASRecConfig(d=16, n_blocks=1, maxlen=8))
    assert p2.p2_site(sas) == "sasrec.final"
    with pytest.raises(ValueError, match="none of P2's sites"):
        p2.p2_site(OffsetPlanted(torch.randn(10, 4), 5, torch.zeros(4)))


# ------------------------------------------------------------------------------------------------ plots
def _fake_result(best: int, n: int = 6) -> S.SAETrainResult:
    h = [
        {
            "epoch": float(e),
            "loss": 1.0 / e,
            "dead_latents": float(10 - e),
            "dev_ndcg@5": 0.1 - abs(e - best) / 100,
        }
        for e in range(1, n + 1)
    ]
    return S.SAETrainResult(
        sae=S.from_config(topk_cfg()),
        history=[],
        train_config=S.TrainConfig(),
        steps=n,
        seconds=0.0,
        rows_per_second=0.0,
        rows_since_fired=torch.zeros(M),
        dead_after=1,
        dead_fraction=0.0,
        meta={"base_dev_ndcg@5": 0.12},
        epoch_history=h,
        best_epoch=best,
    )


def test_p2_training_curves_plot_every_series_and_the_base_line():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from recsae_core.viz import p2 as V

    fig = V.plot_p2_training_curves(
        {"a k=8": _fake_result(3), "b k=4": _fake_result(2)}, base_dev={"b k=4": 0.2}
    )
    ax_l, ax_d, ax_v = fig.axes[:3]
    assert [line.get_label() for line in ax_l.get_lines()] == ["a k=8", "b k=4"]
    assert [list(line.get_ydata()) for line in ax_d.get_lines()] == [[9, 8, 7, 6, 5, 4]] * 2
    stars = [line for line in ax_v.get_lines() if line.get_marker() == "*"]
    assert [(float(s.get_xdata()[0]), float(s.get_ydata()[0])) for s in stars] == [(3, 0.1), (2, 0.1)]
    hlines = sorted(float(line.get_ydata()[0]) for line in ax_v.get_lines() if line.get_linestyle() == ":")
    assert hlines == [0.12, 0.2]  # meta's base value, and the explicit one
    plt.close(fig)
    bad = _fake_result(2)
    bad.epoch_history = []
    with pytest.raises(ValueError, match="no epoch_history"):
        V.plot_p2_training_curves({"x": bad})


def test_reconstruction_table_view_labels_models_and_states_the_tie_rule():
    from recsae_core.viz import p2 as V

    df = pd.DataFrame(
        {
            "model": ["sasrec", "sasrec", "sasrec"],
            "k": pd.array([pd.NA, 8, 8], dtype="Int64"),
            "variant": ["base", "SAE", "untrained SAE"],
            "NDCG@5": [0.07, 0.068, 0.0015],
        }
    )
    html = V.reconstruction_table_view(df).to_html()
    assert "SASRec+" in html and "pessimistic" in html and "–" in html and "0.0015" in html


def test_train_p2_sae_goes_through_the_sae_cache(planted_p2, tmp_path):
    model, split, acts, _ = planted_p2
    tc = p2.p2_train_config(lr=1e-2, batch_size=64, epochs=3, patience=2)
    kw = dict(train_config=tc, scale=2, progress=False, cache_dir=str(tmp_path))
    first = p2.train_p2_sae(model, "planted.user", split, acts, 4, **kw)
    again = p2.train_p2_sae(model, "planted.user", split, acts, 4, **kw)
    assert not first.meta["cache_hit"] and again.meta["cache_hit"]
    assert again.epoch_history == first.epoch_history and again.best_epoch == first.best_epoch
    assert again.train_config.selection == tc.selection
    assert torch.equal(again.sae.W_dec, first.sae.W_dec)
    assert again.meta["base_dev_ndcg@5"] == first.meta["base_dev_ndcg@5"]


# ------------------------------------------------------------------------------ chapter helpers (#10)
def _tiny_dataset(with_time: bool = True) -> RecDataset:
    """12 users x 10 items: users 0-9 rate items 0-7 (rating 5 on even items, 2 on odd ones); user 10
    rates 3 items (below the 5-core); item 9 is rated by 2 users only (below the 5-core) -> user 11, who
    rates items 0-3 and 9, falls under the core once item 9 goes (iterative)."""
    rows = [(u, i, 5.0 if i % 2 == 0 else 2.0) for u in range(10) for i in range(8)]
    rows += [(10, i, 5.0) for i in range(3)] + [(11, i, 5.0) for i in (0, 1, 2, 3, 9)] + [(0, 9, 5.0)]
    df = pd.DataFrame(rows, columns=["user", "item", "rating"])
    df["rating"] = df["rating"].astype("float32")
    if with_time:
        df["timestamp"] = (np.arange(len(df)) * 86400 * 3).astype("int64")
    items = pd.DataFrame({"item_id": np.arange(10) + 100, "title": [f"t{i}" for i in range(10)]})
    items["year"] = pd.array([1990 + i for i in range(10)], dtype="Int64")
    items.index.name = "item"
    labels = np.eye(10, 2, dtype=bool)
    users = pd.DataFrame({"user_id": np.arange(12) + 1})
    users.index.name = "user"
    return RecDataset("tiny", df, items, labels, ["a", "b"], users)


def test_p2_dataset_iterative_core_then_positives_reindexed():
    ds = _tiny_dataset()
    out = p2.p2_dataset(ds, core=5, min_rating=4.0)
    f = out.meta["p2_filter"]
    assert f["rows_after_core"] == 80  # users 10 and 11, item 9 gone (user 11 only after item 9 went)
    assert f["rows_after_rating"] == 40 and (out.interactions["rating"] >= 4).all()
    assert out.n_users == 10 and out.n_items == 4  # the even items
    assert list(out.items["item_id"]) == [100, 102, 104, 106]
    assert sorted(out.interactions["item"].unique()) == [0, 1, 2, 3]
    assert out.item_labels.shape == (4, 2) and out.item_labels[0, 0] and not out.item_labels[1].any()
    assert list(out.users["user_id"]) == list(range(1, 11))
    keep_all = p2.p2_dataset(ds, core=5, min_rating=None)
    assert keep_all.meta["p2_filter"]["rows_after_rating"] == 80 and keep_all.n_items == 8


def test_p2_split_temporal_with_time_else_leave_one_out_and_concept_split():
    ds = _tiny_dataset()
    sp = p2.p2_split(ds)
    assert sp.name == "p2-temporal" and (sp.train["rating"] >= 4).all()
    assert p2.p2_split(_tiny_dataset(with_time=False)).name == "loo-random"
    cs = p2.p2_concept_split(sp)
    if not sp.test["user"].is_unique:
        assert cs.test["user"].is_unique and set(cs.test["user"]) == set(sp.train["user"])
        assert len(cs.valid) == 0 and cs.history_for("test").equals(sp.train)
    loo = leave_one_out(ds)
    assert p2.p2_concept_split(loo) is loo


def test_concept_split_gives_every_training_user_once_on_a_multi_row_test_part():
    ds = _tiny_dataset()
    sp = p2.p2_split(ds)
    from recsae_core.data.dataset import Split as SplitT

    multi = SplitT("x", sp.dataset, sp.train, sp.valid, pd.concat([sp.train.head(3)] * 2), seed=0)
    cs = p2.p2_concept_split(multi)
    assert cs.test["user"].is_unique and set(cs.test["user"]) == set(sp.train["user"])


def test_train_config_batch_counts_samples_times_rows_per_sample():
    assert p2.p2_train_config().batch_size == 16
    assert p2.p2_train_config(batch_size=16, rows_per_sample=18.3).batch_size == 293
    with pytest.raises(ValueError, match="rows_per_sample"):
        p2.p2_train_config(rows_per_sample=0)


def test_train_activations_interaction_weighting_repeats_each_users_rows(planted_p2):
    model, split, acts, _ = planted_p2
    rep = p2.p2_train_activations(model, "planted.user", split, weighting="interactions", progress=False)
    counts = np.bincount(split.train["user"].to_numpy(), minlength=split.dataset.n_users)
    assert len(rep) == int(counts[acts.users.numpy()].sum())
    u = int(acts.users[0])
    assert int((rep.users == u).sum()) == int(counts[u])
    assert torch.equal(rep.acts[rep.users == u][0], acts.acts[0])
    assert p2.p2_rows_per_sample(rep) == pytest.approx(1.0) and rep.meta["p2_weighting"] == "interactions"
    # one of our epochs is P2's epoch with one sample per interaction, users / interactions of it per user
    assert p2.p2_epoch_fraction(rep, split) == pytest.approx(1.0)
    assert p2.p2_epoch_fraction(acts, split) == pytest.approx(
        len(acts) / int(counts[acts.users.numpy()].sum())
    )
    with pytest.raises(ValueError, match="weighting"):
        p2.p2_train_activations(model, "planted.user", split, weighting="items")


def test_untrained_decoder_is_independent_of_the_encoder_unless_tied():
    cfg = p2.p2_sae_config(16, 4, scale=4)
    ind, tied = p2.untrained_sae(cfg, 0), p2.untrained_sae(cfg, 0, decoder="tied")
    assert torch.allclose(tied.W_dec, tied.W_enc / tied.W_enc.norm(dim=1, keepdim=True), atol=1e-6)
    assert torch.allclose(ind.W_enc, tied.W_enc)  # same encoder draw
    cos = torch.nn.functional.cosine_similarity(ind.W_dec, ind.W_enc, dim=1)
    assert cos.abs().mean() < 0.5 and torch.allclose(ind.W_dec.norm(dim=1), torch.ones(64), atol=1e-5)
    assert torch.equal(p2.untrained_sae(cfg, 0).W_dec, ind.W_dec)  # seeded


def test_tied_untrained_sae_keeps_much_of_the_ranking_independent_collapses(planted_p2):
    model, split, _, res = planted_p2
    cb = p2.dev_callback(model, "planted.user", split)
    base = res.meta["base_dev_ndcg@5"]
    ind = cb(0, p2.untrained_sae(res.sae))[p2.DEV_METRIC]
    tied = cb(0, p2.untrained_sae(res.sae, decoder="tied"))[p2.DEV_METRIC]
    assert ind < 0.5 * base and tied > ind


def test_paper_vs_recsae_reads_our_numbers_from_the_reconstruction_table():
    recon = pd.DataFrame(
        [
            {
                "model": "sasrec",
                "k": pd.NA,
                "variant": "base",
                "HR@5": 0.2,
                "NDCG@5": 0.1,
                "HR@10": 0.3,
                "NDCG@10": 0.2,
            },
            {
                "model": "sasrec",
                "k": 8,
                "variant": "SAE",
                "HR@5": 0.2,
                "NDCG@5": 0.1,
                "HR@10": 0.3,
                "NDCG@10": 0.19,
            },
            {
                "model": "sasrec",
                "k": 8,
                "variant": "untrained SAE",
                "HR@5": 0.01,
                "NDCG@5": 0.004,
                "HR@10": 0.02,
                "NDCG@10": 0.01,
            },
            {
                "model": "sasrec",
                "k": 4,
                "variant": "untrained SAE",
                "HR@5": 0.5,
                "NDCG@5": 0.5,
                "HR@10": 0.5,
                "NDCG@10": 0.5,
            },
        ]
    )
    recon["k"] = recon["k"].astype("Int64")
    t = p2.paper_vs_recsae(recon, "ml-1m-prefix", "p2-temporal", k=8).set_index("quantity")["recsae"]
    assert t["SASRec base, ML_1MTOPK test: NDCG@10"] == 0.2
    assert t["SASRec + untrained SAE, ML_1MTOPK test: HR@5"] == 0.01
    assert t["sasrec: NDCG@10 change with the SAE spliced in"] == pytest.approx(-0.05)


def test_confidence_summary_counts_and_interval():
    sc = pd.DataFrame({"confidence": [1.0, 0.9, 0.8, 0.7, 0.5]})
    s = p2.confidence_summary(sc, n_boot=200)
    assert (s["latents"], s["= 1.0"], s["≥ 0.9"], s["≥ 0.8"]) == (5, 1, 2, 3)
    assert s["share ≥ 0.8"] == pytest.approx(0.6) and s["share lo"] <= 0.6 <= s["share hi"]
    assert s["share lo"] < s["share hi"]
    assert "held-out latents" not in s  # no ``reused`` column: P2's count only
    sc["reused"] = [True, True, False, False, False]  # the in-sample latents are left out of the honest share
    s = p2.confidence_summary(sc, n_boot=200)
    assert s["held-out latents"] == 3 and s["share ≥ 0.8, held out"] == pytest.approx(1 / 3)
    assert s["share ≥ 0.8"] == pytest.approx(0.6)


# ------------------------------------------------------------------------------------------- concept cases
def _pool(users: list[int]) -> object:
    from recsae_core.concepts import CasePool

    n = len(users)
    acts = torch.zeros(n, 2)
    acts[:, 0] = torch.arange(n, 0, -1).float()  # latent 0: every row, strongest first
    acts[: n // 2, 1] = 1.0  # latent 1: the first half, so it has inactive rows for random cases
    acts[n // 2 :, 0] = 0.0  # and latent 0 too
    return CasePool(
        acts,
        torch.randn(n, 4),
        torch.tensor(users),
        torch.arange(n),
        torch.zeros(n, 0, dtype=torch.long),
        "user",
        "x",
    )


def test_repeated_user_share_known_answers():
    # 20 rows, one user each: no held-out case can share a describe case's user
    assert p2.repeated_user_share(_pool(list(range(20)))) == 0.0
    # the top-10 rows of both latents come from 2 users: describe and held-out cases always share one
    assert p2.repeated_user_share(_pool([0, 1] * 10)) == 1.0


def test_concept_scores_cases_on_a_leave_one_out_split_coincide(planted_p2):
    model, split, _, res = planted_p2
    assert split.test["user"].is_unique
    a_pool, a = p2.concept_scores(model, "planted.user", res.sae, split, n_boot=50)
    b_pool, b = p2.concept_scores(model, "planted.user", res.sae, split, cases="interactions", n_boot=50)
    assert torch.equal(a_pool.acts, b_pool.acts) and a.equals(b)
    assert p2.repeated_user_share(a_pool) == 0.0
    with pytest.raises(ValueError, match="cases must be one of"):
        p2.concept_scores(model, "planted.user", res.sae, split, cases="rows")


def test_confidence_rows_one_row_per_model_k_cases_and_labels():
    pool_u, pool_r = _pool(list(range(20))), _pool([0, 1] * 10)
    sc = pd.DataFrame({"confidence": [1.0, 0.8, 0.5], "reused": [False, False, True]})
    t = p2.confidence_rows(
        {("bprmf", 8): (pool_u, sc), ("bprmf", 4): (pool_u, sc)},
        {"bprmf": sc.assign(confidence=0.5)},
        {("bprmf", False): (pool_r, sc), ("bprmf", True): (pool_r, sc.assign(confidence=0.1))},
        k=8,
        n_boot=20,
    )
    assert list(zip(t["k"], t["cases"], t["labels"], strict=True)) == [
        (8, "one per user", "real"),
        (4, "one per user", "real"),
        (8, "one per user", "shuffled (control)"),
        (8, "P2's: every test interaction", "real"),
        (8, "P2's: every test interaction", "shuffled (control)"),
    ]
    assert t["share ≥ 0.8"].tolist() == pytest.approx([2 / 3, 2 / 3, 0.0, 2 / 3, 0.0])
    assert t["held-out shares a describe user"].tolist() == [0.0, 0.0, 0.0, 1.0, 1.0]
    assert (t["live latents"] == 2).all()
