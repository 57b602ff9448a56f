"""The real book under the ``smoke`` profile (every chapter executes, the HTML builds with warnings as errors),
and the book's helpers (recsae_core.viz, recsae_core.widgets) on a tiny synthetic dataset."""

from __future__ import annotations

import re

import nbformat
import numpy as np
import pandas as pd
import pytest
import yaml

from recsae_core import book, viz
from recsae_core.data.dataset import RecDataset
from recsae_core.data.splits import leave_one_out
from recsae_core.train import fit
from recsae_core.widgets import BaseModels, RecommendationPanel

# ------------------------------------------------------------------------------------- the real smoke book


def _pages(smoke_book) -> list[str]:
    toc = yaml.safe_load((smoke_book["output"] / "_build" / "src" / "_toc.yml").read_text())
    files = [toc["root"]]
    for part in toc["parts"]:
        for ch in part["chapters"]:
            files.append(ch["file"])
            files += [s["file"] for s in ch.get("sections", [])]
    return files


@pytest.mark.shared
def test_every_chapter_executes_and_the_book_builds(smoke_book, tmp_path):
    out = smoke_book["output"]
    jobs, _, _ = book.plan(book.REPO_ROOT, "smoke", None, None, tmp_path)
    planned = [(j.chapter, j.dataset) for j in jobs]
    summary = smoke_book["summary"]
    assert sorted(summary["executed"] + summary["skipped"]) == sorted(planned)
    assert {c for c, _ in planned} == {
        c for c, _ in book.toc_chapters(yaml.safe_load((book.REPO_ROOT / "_toc.yml").read_text()))
    }
    assert "build succeeded" in (out / "_build" / "build.log").read_text()
    html = smoke_book["html"]
    for page in _pages(smoke_book):
        assert (html / f"{page}.html").is_file(), f"{page}.html was not built"
    for chapter, dataset in planned:
        nb = nbformat.read(out / "_build" / "executed" / "smoke" / chapter / f"{dataset}.ipynb", as_version=4)
        errors = [
            o
            for c in nb.cells
            if c.cell_type == "code"
            for o in c.get("outputs", [])
            if o.output_type == "error"
        ]
        assert not errors, f"{chapter}/{dataset} has error outputs"
        injected = [c for c in nb.cells if "injected-parameters" in c.metadata.get("tags", [])]
        assert len(injected) == 1 and f'dataset = "{dataset}"' in injected[0].source
        assert nb.metadata["papermill"]["parameters"]["dataset"] == dataset


@pytest.mark.shared
def test_pages_reference_nothing_outside_and_show_content(smoke_book):
    html = smoke_book["html"]
    external = re.compile(r"""<(?:script|link|img|iframe)\b[^>]*\b(?:src|href)=["'](?:https?:)?//""", re.I)
    for page in html.rglob("*.html"):
        text = page.read_text(encoding="utf-8")
        assert not external.search(text), f"{page} loads something from outside: {external.search(text)[0]}"
    ds_page = (html / "chapters" / "datasets" / "ml-100k.html").read_text(encoding="utf-8")
    assert ds_page.count("<img") >= 3 and ds_page.count("<table") >= 4
    assert "Datasets: MovieLens-100k" in ds_page
    bm_page = (html / "chapters" / "base_models" / "ml-100k.html").read_text(encoding="utf-8")
    assert 'id="recommendation-view"' in bm_page and "Plotly.newPlot" in bm_page
    assert (
        "application/vnd.jupyter.widget-view+json" in bm_page
        and "application/vnd.jupyter.widget-state+json" in bm_page
    )
    assert bm_page.count("<img") >= 1 and bm_page.count("<table") >= 2


@pytest.mark.shared
def test_no_change_rerun_skips_everything(smoke_book):
    import json

    sidecar = next((smoke_book["output"] / "_build" / "executed" / "smoke").rglob("*.inputs.json"))
    if json.loads(sidecar.read_text())["inputs"]["package"] != book.package_source_hash():
        pytest.skip("recsae_core was edited while the tests ran, so the chapters are rightly out of date")
    again = book.run_book(profile="smoke", output=smoke_book["output"], build=False, progress=False)
    assert again["executed"] == [] and len(again["skipped"]) == len(smoke_book["summary"]["executed"]) + len(
        smoke_book["summary"]["skipped"]
    )


# ---------------------------------------------------------------------------- helpers on synthetic data


@pytest.fixture(scope="module")
def toy_split():
    rng = np.random.default_rng(0)
    n_users, n_items = 12, 30
    rows = [
        (u, i, 1.0, 1000 * u + t)
        for u in range(n_users)
        for t, i in enumerate(rng.choice(n_items, 8, replace=False))
    ]
    inter = pd.DataFrame(rows, columns=["user", "item", "rating", "timestamp"]).astype(
        {"user": "int64", "item": "int64", "rating": "float32", "timestamp": "int64"}
    )
    items = pd.DataFrame(
        {"item_id": np.arange(n_items) + 100, "title": [f"item {i}" for i in range(n_items)]}
    )
    items["year"] = pd.array([pd.NA] * n_items, dtype="Int64")
    labels = np.zeros((n_items, 3), dtype=bool)
    labels[np.arange(n_items), np.arange(n_items) % 3] = True
    users = pd.DataFrame({"user_id": np.arange(n_users) + 500})
    ds = RecDataset("toy", inter, items, labels, ["red", "green", "blue"], users)
    return leave_one_out(ds, seed=0)


def test_top_k_masks_history_and_marks_the_target(toy_split):
    model = fit("pop", toy_split, progress=False).model
    users = viz.sample_users(toy_split, 5, seed=1)
    assert np.array_equal(users, viz.sample_users(toy_split, 5, seed=1))  # seeded
    recs = viz.top_k(model, toy_split, users, k=5)
    assert len(recs) == 5 * len(users) and set(recs["rank"]) == {1, 2, 3, 4, 5}
    hist = toy_split.history_for("test")
    target = toy_split.test.set_index("user")["item"]
    for u, r in recs.groupby("user"):
        seen = set(hist.loc[hist["user"] == u, "item"]) - {int(target[u])}
        assert not seen & set(r["item"]), "a history item was recommended"
        assert (r["is_target"] == (r["item"] == target[u])).all()


def test_recommendation_view_dropdown_switches_exactly_one_user(toy_split):
    results = {
        m: fit(m, toy_split, {"epochs": 1} if m == "bprmf" else None, progress=False)
        for m in ("pop", "bprmf")
    }
    users = viz.sample_users(toy_split, 3, seed=0)
    recs = {m: viz.top_k(r.model, toy_split, users, k=5) for m, r in results.items()}
    fig = viz.recommendation_view(toy_split, recs, users)
    per_user = 1 + len(recs)
    assert len(fig.data) == per_user * len(users)
    buttons = fig.layout.updatemenus[0].buttons
    assert [b.label for b in buttons] == [f"user {toy_split.dataset.users['user_id'].iloc[u]}" for u in users]
    for j, b in enumerate(buttons):
        vis = b.args[0]["visible"]
        assert sum(vis) == per_user and all(vis[j * per_user : (j + 1) * per_user])
    bundle = viz.plotly_bundle(fig, div_id="x")
    assert set(bundle) == {"application/vnd.plotly.v1+json", "text/html"}
    assert "cdn" not in bundle["text/html"].lower() and 'id="x"' in bundle["text/html"]


def test_recommendation_panel_reacts_to_its_controls(toy_split):
    results = {
        "pop": fit("pop", toy_split, progress=False),
        "bprmf": fit("bprmf", toy_split, {"epochs": 1}, progress=False),
    }
    loads = []

    def load(name):
        loads.append(name)
        return BaseModels(name, toy_split, results)

    panel = RecommendationPanel(["toy", "other"], load, k=5)
    first = panel.output.value
    assert "top-5 of Popularity" in first and "history items" in first
    panel.model.value = "bprmf"
    assert "top-5 of BPR-MF" in panel.output.value
    uid = int(toy_split.dataset.users["user_id"].iloc[3])
    panel.user.value = uid
    assert f"User {uid}:" in panel.output.value
    panel.user.value = 99999
    assert "No user with id 99999" in panel.output.value
    panel.dataset.value = "other"
    assert loads == ["toy", "other"]


def test_load_base_models_takes_your_own_dataset(toy_split, tmp_path, monkeypatch):
    """The intro's "use your own data" path: a loaded RecDataset goes where a chapter passes a name."""
    from recsae_core.widgets import load_base_models

    toy = toy_split.dataset
    no_time = RecDataset(
        "toy-notime",
        toy.interactions.drop(columns="timestamp"),
        toy.items,
        toy.item_labels,
        toy.label_names,
        toy.users,
    )
    monkeypatch.setenv("RECSAE_CACHE", str(tmp_path))  # keep the user's artifact cache untouched
    bm = load_base_models(no_time, ["pop", "sasrec"], progress=False)
    assert bm.dataset == "toy-notime" and set(bm.results) == {"pop"}
    assert "toy-notime has no timestamps" in bm.skipped["sasrec"]
    assert len(bm.split.test) == no_time.n_users
    assert next(tmp_path.iterdir()).name == "pop"  # trained through the cache named by RECSAE_CACHE


def test_label_frequency_table_reads_well(toy_split):
    """The datasets chapter's label table: readable headers, shares as percentages, most frequent first."""
    ds = toy_split.dataset  # 30 items, 3 labels, 10 items each
    tab = viz.label_frequency_table(ds, top=2)
    assert list(tab.columns) == ["label", "items", "share of items", "interactions"]
    assert len(tab) == 2 and (tab["items"] == 10).all() and (tab["share of items"] == "33.3%").all()
