"""The onboarding pages' promises (book/quickstart.ipynb, book/your_recommender.ipynb, recsae_core/examples.py):
a model recsae does not ship, wrapped as a Recommender, goes through evaluate_sae and the steering functions;
data written as CSV comes back through load_csv; the pages' tables say what they claim; the toc and profiles
keep each chapter's sections equal to its datasets."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import nbformat
import numpy as np
import pandas as pd
import pytest
import torch
import yaml

import recsae_core.sae as S
from recsae_core import book, examples, steer
from recsae_core.data.dataset import RecDataset
from recsae_core.data.loaders import load_csv
from recsae_core.data.splits import p1_new_users
from recsae_core.papers import p1
from recsae_core.sae_eval import cached_activations, cached_sae, evaluate_sae

SITE = "gru4rec.layer0"


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _toy_dataset(n_users: int = 60, n_items: int = 40, events: int = 14, seed: int = 0) -> RecDataset:
    """Users who each stick to one of 4 genres (items i with i % 4 == genre), with timestamps and labels."""
    rng = np.random.default_rng(seed)
    rows = []
    for u in range(n_users):
        g = u % 4
        pool = np.arange(g, n_items, 4)
        for t, i in enumerate(rng.choice(pool, events, replace=True)):
            rows.append((u, int(i), float(rng.integers(1, 6)), 1_000_000 + 1000 * u + t))
    inter = pd.DataFrame(rows, columns=["user", "item", "rating", "timestamp"]).astype(
        {"user": "int64", "item": "int64", "rating": "float32", "timestamp": "int64"}
    )
    items = pd.DataFrame(
        {"item_id": np.arange(n_items) + 100, "title": [f"movie {i}" for i in range(n_items)]}
    )
    items["year"] = pd.array([pd.NA] * n_items, dtype="Int64")
    labels = np.zeros((n_items, 4), dtype=bool)
    labels[np.arange(n_items), np.arange(n_items) % 4] = True
    users = pd.DataFrame({"user_id": np.arange(n_users) + 7})
    return RecDataset("toy", inter, items, labels, ["Red", "Green", "Blue", "Gold"], users)


@pytest.fixture(scope="module")
def toy():
    return _toy_dataset()


@pytest.fixture(scope="module")
def trained(toy):
    split = p1_new_users(toy, seed=42, test_frac=0.2)
    fit = examples.fit_gru4rec(
        split, {"d": 16, "epochs": 40, "patience": 40, "maxlen": 20, "lr": 1e-2}, seed=0
    )
    return split, fit


# ------------------------------------------------------------------------------------------------ data
def test_csv_round_trip_gives_back_the_same_events_and_labels(toy, tmp_path):
    files = examples.write_interactions_csv(toy, tmp_path)
    back = load_csv(files.interactions, name="mine", items=files.items, **examples.CSVFiles.columns)
    assert (back.n_users, back.n_items, len(back.interactions)) == (
        toy.n_users,
        toy.n_items,
        len(toy.interactions),
    )
    assert back.has_timestamps and sorted(back.label_names) == sorted(toy.label_names)

    def events(ds):  # (original user id, original item id, rating, timestamp, sorted labels of the item)
        i = ds.interactions
        lab = np.asarray(ds.item_labels)
        names = np.asarray(ds.label_names)
        return sorted(
            zip(
                ds.users["user_id"].to_numpy()[i["user"]],
                ds.items["item_id"].to_numpy()[i["item"]],
                i["rating"].astype(float),
                i["timestamp"],
                ["|".join(sorted(names[lab[j]])) for j in i["item"]],
                strict=True,
            )
        )

    assert events(back) == events(toy)
    titles = dict(zip(back.items["item_id"], back.items["title"], strict=True))
    assert titles[100] == "movie 0"


# ----------------------------------------------------------------------------------------------- model
def test_gru4rec_padding_changes_nothing_and_sites_reproduce_score(trained):
    split, fit = trained
    model = fit.model
    table = examples.check_sites(model, split)
    assert set(table["site"]) == set(model.sites) and table["ok"].all()
    seqs = p1.sequences(split, "test_full", model.maxlen).seqs[:5]
    from recsae_core.models.base import UserBatch

    users = torch.arange(5)
    short = model.score(UserBatch(users, seqs[:, -model.maxlen :]))
    padded = torch.cat([torch.zeros(5, 30, dtype=seqs.dtype), seqs], 1)  # more left padding
    model.maxlen = padded.shape[1]
    try:
        longer = model.score(UserBatch(users, padded))
    finally:
        model.maxlen = model.config.maxlen
    assert torch.allclose(short, longer, atol=1e-5)


def test_check_sites_catches_a_broken_wrap(trained, monkeypatch):
    split, fit = trained
    model = fit.model
    original = type(model).score_from

    def off_by_one(self, site, rep, batch):
        out = original(self, site, rep, batch)
        return out + 1.0 if site == "gru4rec.layer1" else out

    monkeypatch.setattr(type(model), "score_from", off_by_one)
    table = examples.check_sites(model, split).set_index("site")
    assert not table.loc["gru4rec.layer1", "ok"] and table.loc["gru4rec.layer0", "ok"]


def test_fit_gru4rec_learns_the_users_genre(trained):
    """Each toy user watches one genre (10 items, most of them already seen and masked): after training, the
    top-5 should hold the user's genre far more often than chance (1/4)."""
    split, fit = trained
    h = fit.history
    assert len(h) >= 1 and fit.best_epoch == int(h.loc[h["valid_ndcg@10"].idxmax(), "epoch"])
    assert h["loss"].iloc[-1] < h["loss"].iloc[0]
    from recsae_core.viz.models import top_k

    users = split.targets("test")["user"].to_numpy()
    recs = top_k(fit.model, split, users, k=5)
    genre_of_item = np.arange(split.dataset.n_items) % 4
    same = genre_of_item[recs["item"].to_numpy()] == recs["user"].to_numpy() % 4
    assert same.mean() > 0.5


# ------------------------------------------------------------------- the guide's promise: SAE + steering
def test_the_guides_model_goes_through_evaluate_sae_and_steering(trained, toy, tmp_path):
    split, fit = trained
    model = fit.model
    kw = dict(progress=False, cache_dir=tmp_path)
    train_acts = cached_activations(model, SITE, p1.sequences(split, "sae", model.maxlen), **kw)
    test_acts = cached_activations(model, SITE, p1.sequences(split, "test_full", model.maxlen), **kw)
    assert train_acts.acts.shape[1] == model.config.d and (train_acts.items >= 0).all()
    cfg = S.ReluL1Config(d_in=model.config.d, n_latents=32, l1_coeff=0.01)
    res = cached_sae(train_acts, cfg, S.TrainConfig(steps=400, batch_size=128, warmup_steps=20), seed=0, **kw)
    report = evaluate_sae(
        res.sae, model, SITE, split, acts=test_acts, item_labels=toy.item_labels, label_names=toy.label_names
    )
    acc = report.accuracy
    assert acc["spliced_keep_error"]["ndcg@10"] == pytest.approx(acc["base"]["ndcg@10"], abs=1e-9)
    assert report.explained_variance > 0.5 and report.per_label is not None
    table = examples.report_table(report)
    assert table.loc[table["quantity"] == "NDCG@10, base", "value"].item() == acc["base"]["ndcg@10"]

    H = p1.encode_rows(res.sae, test_acts.acts)
    G = p1.row_labels(test_acts, toy)
    chosen = p1.steering_features(H, G, toy.label_names)
    feat = int(chosen.loc[chosen["label"] == "Red", "feature"].item())
    curves = p1.steering_curves(
        model,
        SITE,
        res.sae,
        split,
        {"Red": feat},
        item_labels=torch.as_tensor(toy.item_labels),
        label_names=toy.label_names,
        values=[0.0, 4.0, 16.0],
        meanings=("ours",),
    )
    share = curves.set_index("alpha")["share"]
    assert share[16.0] > share[0.0]  # steering the Red feature raises Red's share
    sweep = steer.steering_sweep(
        model, SITE, res.sae, split, "test", feat, [0.0], item_labels=torch.as_tensor(toy.item_labels)
    )
    assert sweep["ndcg@10"].item() == pytest.approx(acc["base"]["ndcg@10"], abs=1e-9)  # α = 0 is the model
    user = int(split.targets("test")["user"].iloc[0])
    lists = p1.steered_top_k(model, SITE, res.sae, split, feat, [0.0, 16.0], users=[user])
    tab = examples.steered_lists_table(lists, toy, "Red", 16.0)
    assert tab.attrs["share_after"] >= tab.attrs["share_before"]
    assert list(tab.columns) == ["rank", "before (α = 0)", "after (α = 16)"]


# ------------------------------------------------------------------------------------------------ tables
def test_item_activations_are_per_item_means_with_a_row_floor():
    acts = torch.tensor([[1.0, 0.0], [3.0, 2.0], [5.0, 0.0], [7.0, 1.0]])
    items = torch.tensor([0, 0, 2, 0])
    out = examples.item_activations(acts, items, n_items=3, min_rows=2)
    assert out.shape == (2, 3)
    assert torch.allclose(out[:, 0], torch.tensor([11.0 / 3, 1.0]))
    assert torch.equal(out[:, 1], torch.zeros(2)) and torch.equal(out[:, 2], torch.zeros(2))  # 0 and 1 rows
    with pytest.raises(ValueError, match="row items"):
        examples.item_activations(acts, torch.tensor([0, 0, -1, 0]), n_items=3)


def test_feature_cards_list_the_highest_scoring_items_and_count_the_genre(toy):
    chosen = pd.DataFrame(
        {"label": ["Red", "Blue"], "feature": [1, 0], "corr": [0.5, 0.2], "fraction_fired": [0.9, 0.1]}
    )
    scores = torch.zeros(2, toy.n_items)
    scores[1, [0, 4, 1]] = torch.tensor([3.0, 2.0, 1.0])  # two Red items (0, 4) then a Green one (1)
    cards = examples.feature_cards(chosen, scores, toy, ["Red"], k=3)
    row = cards.iloc[0]
    assert row["feature"] == 1 and row["top items it pushes up"] == "movie 0; movie 4; movie 1"
    assert row["of them in genre"] == "2/3"
    with pytest.raises(KeyError, match="Gold"):
        examples.feature_cards(chosen, scores, toy, ["Gold"])


def test_steered_lists_table_marks_genre_and_target(toy):
    lists = pd.DataFrame(
        {
            "alpha": [0.0, 0.0, 2.0, 2.0],
            "user": [3] * 4,
            "rank": [1, 2, 1, 2],
            "item": [1, 0, 0, 4],
            "score": [1.0] * 4,
            "is_target": [False, True, True, False],
        }
    )
    tab = examples.steered_lists_table(lists, toy, "Red", 2.0)
    assert tab["before (α = 0)"].tolist() == ["movie 1", "● movie 0 ✓"]
    assert tab["after (α = 2)"].tolist() == ["● movie 0 ✓", "● movie 4"]
    assert (tab.attrs["share_before"], tab.attrs["share_after"]) == (0.5, 1.0)


# ------------------------------------------------------------------------------------------- the pages
@pytest.mark.parametrize("chapter", ["quickstart", "your_recommender"])
def test_pages_are_in_the_toc_with_their_datasets_and_fold_their_solutions(chapter):
    toc = yaml.safe_load((book.REPO_ROOT / "_toc.yml").read_text())
    parts = [p for p in toc["parts"] if p.get("caption") == "Getting started"]
    assert parts and toc["parts"][0] is parts[0], "Getting started must be the first part"
    entries = {c["file"]: c for c in parts[0]["chapters"]}
    entry = entries[f"chapters/{chapter}/index"]
    ch = book.load_chapter(book.REPO_ROOT, chapter)
    assert [s["file"] for s in entry["sections"]] == [f"chapters/{chapter}/{d}" for d in ch.datasets]
    nb = nbformat.read(ch.source, as_version=4)
    assert all(not c.get("outputs") for c in nb.cells if c.cell_type == "code"), "commit with outputs cleared"
    if chapter == "quickstart":
        exercises = [c for c in nb.cells if "hide-cell" in c.metadata.get("tags", [])]
        assert len(exercises) == 3, "three exercises, each solution folded (hide-cell)"
        for prof in book.PROFILES:
            book.check_params(ch, prof, ch.params(prof), ch.datasets)
