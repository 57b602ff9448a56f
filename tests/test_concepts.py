"""recsae_core.concepts: P2's levels and cases, the metadata explainer on planted concepts, the scorers (a
wrong description scores low on each; bootstrap intervals cover the truth), coherence, and the optional
language-model client against a small HTTP server on 127.0.0.1 started here."""

from __future__ import annotations

import http.server
import json
import threading
import time
from typing import ClassVar

import numpy as np
import pandas as pd
import pytest
import torch

from recsae_core import concepts as C
from recsae_core.concepts import llm
from recsae_core.data.dataset import RecDataset
from recsae_core.synthetic import oracle_sae, planted_split, planted_world


# ------------------------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def planted():
    w = planted_world(n_users=600, n_items=400, n_groups=8, seed=0)
    split = planted_split(w)
    sae = oracle_sae(w)
    out = {}
    for site in ("planted.item", "planted.user"):
        pool = C.build_pool(w.model, site, sae, split, "test")
        out[site] = (pool, C.attribute_table(pool, split))
    return w, split, sae, out


CFG = C.CaseConfig(n_describe=10, n_heldout=10, n_random=10)


# --------------------------------------------------------------------------------------- levels/cases
def test_levels_are_deciles_of_pooled_positive_activations_like_qcut():
    gen = torch.Generator().manual_seed(0)
    acts = torch.relu(torch.randn(500, 7, generator=gen))
    lev, edges = C.activation_levels(acts)
    pos = acts[acts > 0].double().numpy()
    want = pd.qcut(pos, q=10, labels=False) + 1
    assert (lev[acts > 0].numpy() == want).all()
    assert (lev[acts <= 0] == 0).all()
    assert len(edges) == 9 and torch.all(edges[1:] >= edges[:-1])
    counts = np.bincount(lev[acts > 0].numpy(), minlength=11)[1:]
    assert counts.min() >= len(pos) // 10 - 1 and counts.max() <= len(pos) // 10 + 1


def test_cases_follow_p2(planted):
    pool, _ = planted[3]["planted.user"]
    cases = C.sample_cases(pool)  # P2 defaults: 5 / 5 / 5, level >= 5
    assert cases, "no latent has cases"
    for j, lc in cases.items():
        assert len(lc.describe) == 5 and len(lc.heldout) == 5 and len(lc.random) == 5
        assert not lc.reused
        rows_d, rows_h = {c.row for c in lc.describe}, {c.row for c in lc.heldout}
        assert not rows_d & rows_h
        assert all(c.level >= 5 and c.activation > 0 for c in lc.describe + lc.heldout)
        assert all(c.level == 0 and pool.acts[c.row, j] <= 0 for c in lc.random)
        # the 10 active cases are the latent's 10 most active rows
        top = set(torch.argsort(-pool.acts[:, j], stable=True)[:10].tolist())
        assert rows_d | rows_h == top
    again = C.sample_cases(pool)
    assert {j: [c.row for c in v.describe] for j, v in again.items()} == {
        j: [c.row for c in v.describe] for j, v in cases.items()
    }
    other = C.sample_cases(pool, config=C.CaseConfig(seed=1))
    assert any([c.row for c in other[j].describe] != [c.row for c in cases[j].describe] for j in cases)


def test_few_active_rows_reuse_the_describe_cases():
    acts = torch.zeros(50, 2)
    acts[:3, 0] = torch.tensor([3.0, 2.0, 1.5])
    acts[:, 1] = torch.linspace(0.1, 5, 50)
    pool = C.CasePool(
        acts, torch.randn(50, 4), torch.arange(50), torch.arange(50), torch.zeros(50, 0), "user", "x"
    )
    cases = C.sample_cases(pool, config=C.CaseConfig(min_level=1))
    assert cases[0].reused and [c.row for c in cases[0].heldout] == [c.row for c in cases[0].describe]
    # latent 1 fires on every row: no random inactive case, so P2's confidence is undefined -> left out
    # (it used to reach the scorer with 0 random cases and fail the whole page)
    assert set(cases) == {0}


def test_case_and_item_text_follow_p2():
    items = pd.DataFrame(
        {
            "item_id": [1, 2],
            "title": ["Toy Story (1995)", "Heat"],
            "year": pd.array([1995, 1995], dtype="Int64"),
        }
    )
    ds = RecDataset(
        "ml-100k",
        pd.DataFrame({"user": [0], "item": [0], "rating": [1.0]}),
        items,
        np.array([[True, True], [False, True]]),
        ["Animation", "Comedy"],
        pd.DataFrame({"user_id": [1]}),
    )
    assert C.item_text(ds, 0) == "Toy Story (1995) (Animation, Comedy)"
    assert C.item_text(ds, 1) == "Heat (1995) (Comedy)"
    pool = C.CasePool(
        torch.ones(1, 1),
        torch.ones(1, 2),
        torch.tensor([0]),
        torch.tensor([1]),
        torch.tensor([[-1, 0]]),
        "user",
        "s",
    )
    case = C.Case(0, 0, "heldout", 1.0, 7)
    assert C.case_text(pool, ds, case) == "Toy Story (1995) (Animation, Comedy)\t0\nHeat (1995) (Comedy)\t7"
    assert C.case_text(pool, ds, case, show_level=False).endswith("\tunknown")


# ----------------------------------------------------------------------------------- planted concepts
@pytest.mark.parametrize("site", ["planted.item", "planted.user"])
def test_metadata_explainer_finds_the_planted_concept(planted, site):
    pool, table = planted[3][site]
    ex = C.MetadataExplainer(table)
    cases = C.sample_cases(pool, config=CFG)
    assert len(cases) == 8
    for j, lc in cases.items():
        d = ex.describe(lc.describe)
        want = f"label: g{j}"
        assert d.attributes[0] in (want, f"history: mostly g{j}"), (j, d)
        assert want in d.attributes or site == "planted.user", (j, d)
        assert f"g{j}" in d.text
        assert d == ex.describe(lc.describe)  # deterministic
    sims = C.simulate_latents(ex, cases, pool)
    df = C.score_latents(sims, n_boot=200)
    assert (df["confidence"] >= 0.9).all(), df
    assert (df["balanced_accuracy_hard"] >= 0.8).all() and (df["simulation"] >= 0.8).all(), df


def test_nothing_stands_out_for_a_noise_latent(planted):
    pools = planted[3]
    pool, table = pools["planted.item"]
    gen = torch.Generator().manual_seed(3)
    noise = C.CasePool(
        torch.relu(torch.randn(len(pool), 1, generator=gen)),
        pool.reps,
        pool.users,
        pool.items,
        pool.history,
        "item",
        "x",
    )
    cases = C.sample_cases(noise, config=CFG)
    d = C.MetadataExplainer(table).describe(cases[0].describe)
    assert d.attributes == () and "No metadata" in d.text


class _Fixed:
    """An explainer that always gives one description (to score a wrong one)."""

    name = "fixed"

    def __init__(self, inner: C.MetadataExplainer, description: C.Description) -> None:
        self.inner, self.description = inner, description

    def describe(self, cases):
        return self.description

    def simulate(self, description, case):
        return self.inner.simulate(description, case)


def test_a_wrong_description_scores_low_on_every_scorer(planted):
    pool, table = planted[3]["planted.item"]
    ex = C.MetadataExplainer(table)
    cases = C.sample_cases(pool, config=CFG)
    for j, lc in cases.items():
        wrong = C.Description(f"g{(j + 1) % 8} items", (f"label: g{(j + 1) % 8}",))
        sims = C.simulate_latents(_Fixed(ex, wrong), {j: lc}, pool)
        row = C.score_latents(sims, n_boot=100).iloc[0]
        assert row["confidence"] <= 0.7, row
        assert row["balanced_accuracy_random"] <= 0.7 and row["balanced_accuracy_hard"] <= 0.7, row
        assert row["f1_random"] <= 0.5 and row["f1_hard"] <= 0.5, row
        assert row["simulation"] <= 0.4, row


def test_unparseable_answers_are_counted_and_do_not_inflate():
    class Mute:
        name = "mute"

        def describe(self, cases):
            return C.Description("?")

        def simulate(self, description, case):
            return None

    acts = torch.zeros(40, 1)
    acts[:20, 0] = torch.linspace(1, 3, 20)
    pool = C.CasePool(
        acts, torch.randn(40, 4), torch.arange(40), torch.arange(40), torch.zeros(40, 0), "user", "x"
    )
    sims = C.simulate_latents(Mute(), C.sample_cases(pool, config=C.CaseConfig(min_level=1)), pool, n_hard=5)
    row = C.score_latents(sims, n_boot=50).iloc[0]
    assert row["confidence"] == 0.5  # P2: -1 <= 5 counts as a correct "inactive" on random cases
    assert row["confidence_strict"] == 0.0 and row["unparseable"] == 15
    assert row["balanced_accuracy_random"] == 0.0 and row["simulation"] < 0


def test_bootstrap_intervals_cover_the_truth():
    """Synthetic latents whose true hit rates are known: the 95% intervals of confidence and of balanced
    accuracy cover the truth about 95% of the time (and are not trivially wide)."""
    rng = np.random.default_rng(0)
    p_pos, p_neg, n = 0.7, 0.9, 40
    truth = (p_pos + p_neg) / 2
    cover, widths = 0, []
    reps = 300
    for r in range(reps):
        held = [(7, 9 if rng.random() < p_pos else 1) for _ in range(n)]
        rand = [(0, 1 if rng.random() < p_neg else 9) for _ in range(n)]
        sim = C.LatentSimulation(0, C.Description("x"), held, rand, [])
        row = C.score_simulation(sim, n_boot=400, seed=r)
        cover += row["confidence_lo"] <= truth <= row["confidence_hi"]
        widths.append(row["confidence_hi"] - row["confidence_lo"])
    assert 0.9 <= cover / reps <= 0.99, cover / reps
    assert np.mean(widths) < 0.25


def test_high_confidence_counts():
    t = C.high_confidence_counts([1.0, 0.9, 0.8, 0.7, 0.85], n_latents=10)
    assert t.set_index("confidence")["latents"].to_dict() == {"= 1.0": 1, "≥ 0.9": 2, "> 0.8": 3, "≥ 0.8": 4}
    assert t["share"].iloc[3] == pytest.approx(0.4)


def test_coherence_by_hand():
    acts = torch.tensor([[3.0, 0.0], [2.0, 1.0], [1.0, 2.0], [0.0, 0.0]])
    reps = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [5.0, 5.0]])
    items = torch.tensor([0, 0, 1, 2])
    c = C.coherence(acts, reps, items)
    # latent 0: rows 0, 1 share item 0 -> rows 0 and 2 (distinct items): cos = 1/sqrt(2)
    assert c[0].item() == pytest.approx(2**-0.5)
    # latent 1: rows 2 then 1 (distinct items 1, 0): cos = 1/sqrt(2); row 3 is inactive
    assert c[1].item() == pytest.approx(2**-0.5)
    assert torch.isnan(C.coherence(acts[:, :1] * torch.tensor([[1.0], [0], [0], [0]]), reps, items)[0])


def test_coherence_summary_by_hand():
    from recsae_core.concepts import CasePool

    acts = torch.tensor([[3.0, 0.0], [2.0, 1.0], [1.0, 2.0], [0.0, 0.0]])
    reps = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [5.0, 5.0]])
    pool = CasePool(acts, reps, torch.arange(4), torch.tensor([0, 0, 1, 2]), torch.zeros(4, 0, dtype=torch.long),
                    "user", "x")  # fmt: skip
    untrained = torch.tensor([[1.0, 0.0], [0.0, 0.0], [0.0, 0.0], [0.0, 0.0]])  # no latent has 2 cases
    t = C.coherence_summary(pool, untrained, confident=[1]).set_index("variant")
    assert (
        t.loc["trained SAE", "coherence"] == pytest.approx(2**-0.5) and t.loc["trained SAE", "latents"] == 2
    )
    assert t.loc["trained SAE", "active cases (median)"] == 2.5  # latent 0 fires on 3 rows, latent 1 on 2
    assert t.loc["trained SAE, confidence ≥ 0.8", "active cases (median)"] == 2
    assert t.loc["untrained SAE", "latents"] == 0 and np.isnan(t.loc["untrained SAE", "coherence"])
    # raw dimensions: column 0 ranks rows 3, 0, 2 (row 1 is 0): items 2 then 0 -> cos((5,5), (1,0))
    assert t.loc["raw dimensions", "latents"] == 2


# ------------------------------------------------------------------------------ language-model client
class _Handler(http.server.BaseHTTPRequestHandler):
    calls: ClassVar[dict[str, int]] = {}

    def log_message(self, *args) -> None:
        pass

    def do_POST(self) -> None:
        mode = self.path.split("/")[1]
        type(self).calls[mode] = type(self).calls.get(mode, 0) + 1
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        if mode == "slow":
            time.sleep(1.0)
        if mode == "err":
            self.send_response(500)
            self.end_headers()
            self.wfile.write(b"boom")
            return
        if mode == "bad":
            payload = b'{"choices": []}'
        else:
            last = body["messages"][-1]["content"]
            text = "4" if "Activation of the last item" in last else " movies with a planted genre."
            payload = json.dumps(
                {
                    "choices": [
                        {
                            "message": {"role": "assistant", "content": text},
                            "logprobs": {"content": [{"token": text[:2], "logprob": -0.1}]},
                        }
                    ]
                }
            ).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(payload)


@pytest.fixture()
def server():
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    _Handler.calls = {}
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    yield srv, f"http://127.0.0.1:{srv.server_address[1]}"
    srv.shutdown()
    srv.server_close()


MSG = [{"role": "user", "content": "hello"}]


def test_good_reply_is_cached_and_replays_with_the_server_stopped(server, tmp_path):
    srv, url = server
    cache = tmp_path / "llm.jsonl"
    client = llm.ChatClient(llm.ChatConfig(f"{url}/good/v1", cache_path=str(cache), timeout=5))
    r = client.generate(MSG)
    assert r.text == " movies with a planted genre." and r.logprobs == [{"token": " m", "logprob": -0.1}]
    rec = json.loads(cache.read_text().splitlines()[0])
    assert rec["key"] == client.key(MSG) and rec["messages"] == MSG and rec["params"]["temperature"] == 0.6
    assert client.generate(MSG) == r and _Handler.calls["good"] == 1  # second call from memory
    srv.shutdown()
    srv.server_close()
    again = llm.ChatClient(llm.ChatConfig(f"{url}/good/v1", cache_path=str(cache), timeout=1, retries=0))
    assert again.generate(MSG) == r and again.hits == 1
    offline = llm.ChatClient(llm.ChatConfig(None, cache_path=str(cache)))
    assert offline.generate(MSG) == r
    with pytest.raises(llm.LLMCacheMissError, match="not in the cache"):
        offline.generate([{"role": "user", "content": "something else"}])
    other_params = llm.ChatClient(llm.ChatConfig(None, cache_path=str(cache), params={"temperature": 0.0}))
    with pytest.raises(llm.LLMCacheMissError):
        other_params.generate(MSG)  # parameters are part of the key


def test_slow_reply_times_out_after_retries(server):
    _, url = server
    client = llm.ChatClient(llm.ChatConfig(f"{url}/slow/v1", timeout=0.3, retries=1, backoff=0.01))
    with pytest.raises(llm.LLMTimeoutError, match=r"within 0\.3 s.*2 attempts"):
        client.generate(MSG)
    assert _Handler.calls["slow"] == 2


def test_malformed_reply_is_a_clear_error(server):
    _, url = server
    client = llm.ChatClient(llm.ChatConfig(f"{url}/bad/v1", timeout=5))
    with pytest.raises(llm.LLMReplyError, match=r"choices\[0\].message.content"):
        client.generate(MSG)


def test_http_500_is_retried_then_reported(server):
    _, url = server
    client = llm.ChatClient(llm.ChatConfig(f"{url}/err/v1", timeout=5, retries=2, backoff=0.01))
    with pytest.raises(llm.LLMHTTPError, match=r"HTTP 500.*boom.*3 attempts"):
        client.generate(MSG)
    assert _Handler.calls["err"] == 3


def test_llm_explainer_plugs_into_the_scorers(server, planted, tmp_path):
    _, url = server
    pool, _ = planted[3]["planted.item"]
    split = planted[1]
    client = llm.ChatClient(llm.ChatConfig(f"{url}/good/v1", cache_path=str(tmp_path / "c.jsonl"), timeout=5))
    ex = llm.LLMExplainer(client, pool, split.dataset)
    cases = C.sample_cases(pool, latents=[0, 1])
    sims = C.simulate_latents(ex, cases, pool)
    assert sims[0].description.text == f"{llm.PREFIX} movies with a planted genre."
    row = C.score_latents(sims, n_boot=50).iloc[0]
    assert row["recall"] == 0.0 and row["precision"] == 1.0  # the fake server always answers 4
    msgs = llm.explanation_messages(["a\t3"], "ml-1m", 5)
    assert "Star Wars" in msgs[1]["content"] and msgs[-1]["content"].endswith(llm.PREFIX)
    assert [llm.parse_level(t) for t in ("7", " 10.", "about 3", "11", "none", "2.5")] == [
        7,
        10,
        3,
        None,
        None,
        None,
    ]


def test_llm_latent_scores_runs_the_protocol_then_replays_offline(server, planted, tmp_path):
    srv, url = server
    pool, _ = planted[3]["planted.item"]
    ds = planted[1].dataset
    cache = str(tmp_path / "c.jsonl")
    assert not llm.llm_configured(None, cache) and llm.llm_configured(url, None)
    df = llm.llm_latent_scores(
        pool, ds, [0, 1], llm.ChatConfig(f"{url}/good/v1", cache_path=cache, timeout=5)
    )
    assert df["latent"].tolist() == [0, 1] and (df["recall"] == 0.0).all()  # the fake server always answers 4
    srv.shutdown()
    srv.server_close()
    assert llm.llm_configured(None, cache)  # the cache alone turns the switch on: replay without the server
    again = llm.llm_latent_scores(pool, ds, [0, 1], llm.ChatConfig(None, cache_path=cache))
    pd.testing.assert_frame_equal(df, again)


def test_the_description_names_what_its_cases_share_not_the_rarest_attribute():
    """Five describe cases all have a common attribute (30 % of the pool) and three of them a rare one (1 %):
    the description is the common one — it classifies held-out cases (P2's confidence) — not the rare one,
    whose log-odds are larger (the old rule picked it); a noise-free significance test passes both."""
    n = 1000
    common = torch.zeros(n, dtype=torch.bool)
    common[:300] = True
    rare = torch.zeros(n, dtype=torch.bool)
    rare[:3] = True
    rare[500:507] = True
    table = C.AttributeTable(
        torch.stack([common, rare], 1),
        ["label: common", "label: rare"],
        ["label", "label"],
        ["common", "rare"],
    )
    describe = [C.Case(0, r, "describe", 1.0, 9) for r in range(5)]  # rows 0-4: all common, 0-2 rare
    ev = C.enrichment(table, [c.row for c in describe]).set_index("attribute")
    assert ev.loc["label: rare", "log_odds"] > ev.loc["label: common", "log_odds"]
    d = C.MetadataExplainer(table).describe(describe)
    assert d.attributes[0] == "label: common", d
    strict = C.MetadataExplainer(table, correction="bonferroni").describe(describe)
    assert strict.attributes[0] == "label: common", strict
    with pytest.raises(ValueError, match="correction"):
        C.MetadataExplainer(table, correction="holm")


def test_describe_sae_is_the_shared_pipeline(planted):
    """describe_sae = build_pool → attribute_table → P2's cases → explainer → scores (P2 chapter, explorer,
    playground and side-by-side call it): the planted concepts are found; ``latents``, ``hard`` and
    ``table_fn`` (the shuffled-label control) do what they say."""
    w, split, sae, _ = planted
    d = C.describe_sae(w.model, "planted.item", sae, split, case_config=CFG, n_boot=50)
    assert len(d.pool) == len(planted[3]["planted.item"][0]) and len(d.table.names) > 0
    assert (d.scores["confidence"] >= 0.9).all() and (d.scores["n_hard"] > 0).all()
    some = C.describe_sae(
        w.model,
        "planted.item",
        sae,
        split,
        latents=lambda pool: [1, 3],
        hard=False,
        case_config=CFG,
        n_boot=50,
    )
    assert some.scores["latent"].tolist() == [1, 3] and (some.scores["n_hard"] == 0).all()

    def shuffle(t):
        perm = torch.from_numpy(np.random.default_rng(0).permutation(t.values.shape[0]))
        return C.AttributeTable(t.values[perm], list(t.names), list(t.groups), list(t.phrases))

    control = C.describe_sae(
        w.model, "planted.item", sae, split, table_fn=shuffle, case_config=CFG, n_boot=50
    )
    assert control.scores["confidence"].mean() < d.scores["confidence"].mean() - 0.2


def test_scores_of_no_latent_keep_their_columns():
    """A pool where no latent can be scored gives an empty frame with the usual columns (pages index it)."""
    acts = torch.linspace(0.1, 5, 40)[:, None].repeat(1, 3)  # every latent fires on every row
    pool = C.CasePool(
        acts, torch.randn(40, 4), torch.arange(40), torch.arange(40), torch.zeros(40, 0), "user", "x"
    )
    assert C.sample_cases(pool) == {}
    empty = C.score_latents({})
    assert empty.empty and {"latent", "description", "confidence", "confidence_lo", "simulation"} <= set(
        empty
    )
    assert empty.set_index("latent")["description"].get(0, "none") == "none"


def test_descriptions_use_the_right_article():
    from recsae_core.concepts.explainers import _a

    assert [_a(w) for w in ("Animation", "Adventure", "electronic", "Western", "top 1% most popular")] == [
        "an",
        "an",
        "an",
        "a",
        "a",
    ]
