"""The reproduction scoreboard (recsae_core/scoreboard.py): status rules, claims stored in executed notebooks,
row selection and rendering, the paper modules' claims, and the runner writing the front page."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from types import SimpleNamespace

import nbformat
import pandas as pd
import pytest
import torch
import yaml
from docutils.nodes import make_id
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook, new_output

from recsae_core import book, frontpage, scoreboard
from recsae_core.scoreboard import (
    AtLeast,
    ClaimSpec,
    at_least,
    at_most,
    monotone,
    not_comparable,
    within,
)

REPO = Path(__file__).resolve().parents[1]


# ------------------------------------------------------------------------------------------------- rules


def test_at_least_and_at_most_bands():
    r = at_least(0.658)
    assert r.partly == pytest.approx(0.8 * 0.658)
    assert [r.status(v) for v in (0.7, 0.658, 0.6, 0.5, float("nan"), None)] == [
        "reproduced",
        "reproduced",
        "partly",
        "not",
        "not",
        "not",
    ]
    r = at_most(0.05)
    assert [r.status(v) for v in (0.0, 0.05, 0.07, 0.2)] == ["reproduced", "reproduced", "partly", "not"]
    assert at_most(0.05, 0.06).status(0.07) == "not"
    with pytest.raises(ValueError, match="partly"):
        AtLeast(1.0, 2.0)


def test_within_is_relative_and_two_sided():
    r = within(0.1, 0.1)
    assert [r.status(v) for v in (0.1, 0.109, 0.091, 0.115, 0.085, 0.13, 0.05)] == [
        "reproduced",
        "reproduced",
        "reproduced",
        "partly",
        "partly",
        "not",
        "not",
    ]
    with pytest.raises(ValueError):
        within(0.0, 0.1)


def test_monotone_needs_every_step_for_reproduced():
    up = monotone("up")
    assert up.status([0.1, 0.2, 0.2, 0.5]) == "reproduced"
    assert up.status([0.1, 0.3, 0.2, 0.5]) == "partly"
    assert up.status([0.5, 0.6, 0.4]) == "not"
    assert up.status([0.3, 0.3]) == "not"  # no movement at all
    assert up.status([0.3]) == "not"
    assert monotone("down").status([0.5, 0.4, 0.1]) == "reproduced"
    assert monotone("down").status([0.1, 0.4, 0.5]) == "not"
    with pytest.raises(ValueError, match="direction"):
        monotone("sideways")


def test_not_comparable_ignores_the_value():
    r = not_comparable("no ML-20M")
    assert r.status(1.0) == r.status(None) == "not comparable"
    assert "no ML-20M" in r.text


def _spec(key="x.a", rule=None, **kw) -> ClaimSpec:
    kw = {"datasets": ("ml-1m-prefix",)} | kw
    return ClaimSpec(key, "P1", "a claim", "0.658", rule or at_least(0.658), "p1_sequential", "anchor", **kw)


def test_measure_scores_only_on_comparable_datasets():
    s = _spec()
    on = s.measure(0.7, None, dataset="ml-1m-prefix")
    assert (on.status, on.rule_status, on.ours) == ("reproduced", "reproduced", "0.7")
    off = s.measure(0.7, "0.700", dataset="ml-100k")
    assert (off.status, off.rule_status) == ("not comparable", "reproduced")
    assert "is for ml-1m-prefix" in off.note
    missing = s.measure(float("nan"), None, dataset="ml-1m-prefix", note="no SASRec")
    assert (missing.status, missing.value, missing.ours) == ("not comparable", None, "not measured")
    assert "no SASRec" in missing.note
    anywhere = _spec(anywhere=True).measure(0.5, None, dataset="lastfm-2k")
    assert anywhere.status == "not"


# ----------------------------------------------------------------------------------- notebook storage


def _claims_notebook(path: Path, claims) -> None:
    """A fake executed page: a markdown heading and one output holding ``claims`` as :func:`show` emits them."""
    cell = new_code_cell("scoreboard.show(claims)")
    cell.outputs = [new_output("display_data", data=scoreboard.claims_bundle(claims))]
    nb = new_notebook(cells=[new_markdown_cell("# A page"), cell])
    path.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, path)


def test_claims_round_trip_through_an_executed_notebook(tmp_path):
    claims = [
        _spec().measure(0.7, None, dataset="ml-1m-prefix"),
        _spec("x.b", monotone("up")).measure([0.1, 0.3], "10% → 30%", dataset="ml-1m-prefix"),
    ]
    nb = tmp_path / "page.ipynb"
    _claims_notebook(nb, claims)
    assert frontpage.read_claims(nb) == claims
    bundle = scoreboard.claims_bundle(claims)
    assert "reproduced" in bundle["text/html"] and "10% → 30%" in bundle["text/html"]
    plain = tmp_path / "plain.ipynb"
    nbformat.write(new_notebook(cells=[new_code_cell("1")]), plain)
    assert frontpage.read_claims(plain) == []


# ---------------------------------------------------------------------------------------- the front page


def test_rows_prefer_a_comparable_page_and_list_the_others():
    s = _spec(datasets=("ml-1m-prefix", "ml-1m"))
    pages = {
        ("p1_sequential", "ml-100k"): [s.measure(0.5, "0.500", dataset="ml-100k")],
        ("p1_sequential", "ml-1m-prefix"): [s.measure(0.6, "0.600", dataset="ml-1m-prefix")],
    }
    (row,) = frontpage.scoreboard_rows([s], pages)
    assert row.main.dataset == "ml-1m-prefix" and row.main.status == "partly"
    assert [o.dataset for o in row.others] == ["ml-100k"]
    # only an incomparable page: it is shown, not comparable
    (row,) = frontpage.scoreboard_rows(
        [s], {("p1_sequential", "ml-100k"): pages[("p1_sequential", "ml-100k")]}
    )
    assert row.main.dataset == "ml-100k" and row.main.status == "not comparable"
    html = frontpage.render_html([row], profile="smoke")
    assert "(rule here: not)" in html and "tiny settings" in html
    # a page without claims vs no page at all
    (row,) = frontpage.scoreboard_rows([s], {("p1_sequential", "ml-100k"): []})
    assert row.main is None and "before" in row.missing
    (row,) = frontpage.scoreboard_rows([s], {})
    assert row.main is None and "not executed" in row.missing


def test_render_links_each_row_to_its_page_section():
    s = _spec()
    s2 = ClaimSpec("x.b", "P2", "other", "1", at_least(1.0), "p2_recsae", "p2-vs-recsae")
    pages = {("p1_sequential", "ml-1m-prefix"): [s.measure(0.7, None, dataset="ml-1m-prefix")]}
    html = frontpage.render_html(frontpage.scoreboard_rows([s, s2], pages), prefix="../", profile="default")
    assert 'href="../chapters/p1_sequential/ml-1m-prefix.html#anchor"' in html
    assert 'href="../chapters/p2_recsae/index.html"' in html  # not executed: the chapter's index
    assert "recsae book --chapter p2_recsae" in html
    assert 'data-status="reproduced"' in html and "1 reproduced, 1 not yet measured" in html
    assert "\n\n" not in html  # a blank line would end MyST's raw HTML block


# ------------------------------------------------------------------------------------- the declared specs


def _headings(nb_path: Path) -> set[str]:
    nb = nbformat.read(nb_path, as_version=4)
    return {
        make_id(line.lstrip("#").strip())
        for c in nb.cells
        if c.cell_type == "markdown"
        for line in c.source.splitlines()
        if line.startswith("#")
    }


def test_specs_are_unique_and_point_at_existing_sections():
    specs = scoreboard.all_specs()
    assert 18 <= len(specs) <= 30
    toc = yaml.safe_load((REPO / "_toc.yml").read_text())
    chapters = dict(book.toc_chapters(toc))
    for s in specs:
        assert s.chapter in chapters, s.key
        assert s.anchor in _headings(REPO / "book" / f"{s.chapter}.ipynb"), (s.key, s.anchor)
        assert set(s.datasets) <= set(chapters[s.chapter]) | {"ml-1m"}, s.key
        assert s.paper in ("P1", "P2", "P3")
    assert frontpage.MARKER in (REPO / "book" / "intro.md").read_text()


def test_every_paper_chapter_shows_its_claims():
    for chapter, module in (("p1_sequential", "p1"), ("p2_recsae", "p2"), ("p3_monosemantic", "p3")):
        nb = nbformat.read(REPO / "book" / f"{chapter}.ipynb", as_version=4)
        cells = [
            c.source for c in nb.cells if f"{module}.claims(" in c.source and "scoreboard.show(" in c.source
        ]
        assert len(cells) == 1, chapter


# ------------------------------------------------------------------------------------- papers' claims


def _by_key(claims):
    return {c.key.split(".", 1)[1]: c for c in claims}


def test_p1_claims_from_a_page():
    from recsae_core.papers import p1

    report = SimpleNamespace(
        explained_variance=0.98,
        accuracy={"base": {"ndcg@10": 0.20}, "spliced": {"ndcg@10": 0.19}},
    )
    fvn = pd.DataFrame()
    fvn.attrs.update(sae_mean_max_corr=0.6, neuron_mean_max_corr=0.3)
    rows = []
    for a, share, drop in ((0.0, 0.1, 0.0), (5.0, 0.25, 0.1), (10.0, 0.5, 0.4)):
        rows.append({"label": "Sci-Fi", "meaning": "p1", "feature": 3, "alpha": a, "share": share,
                     "share_ratio": share / 0.1, "ndcg_drop": drop})  # fmt: skip
    c = _by_key(p1.claims("ml-1m-prefix", report, fvn, pd.DataFrame(rows)))
    assert c["ev"].status == "reproduced"
    assert c["mmc"].status == "partly" and c["mmc"].value == pytest.approx(0.6)
    assert c["ratio"].value == pytest.approx(2.0) and c["ratio"].status == "reproduced"
    assert c["steer"].value == pytest.approx(2.5) and c["steer"].status == "not"  # α=10 exceeds the drop
    assert c["spliced"].value == pytest.approx(0.05) and c["spliced"].status == "reproduced"
    assert c["ml20m"].status == "not comparable"
    assert all(x.status == "not comparable" for x in p1.claims("ml-100k", report, fvn, pd.DataFrame(rows)))
    rows[2]["ndcg_drop"] = -2.0  # NDCG rose: reads as a rise, not "−-200%"
    zero = SimpleNamespace(
        explained_variance=0.9, accuracy={"base": {"ndcg@10": 0.0}, "spliced": {"ndcg@10": 0.01}}
    )
    c = _by_key(p1.claims("ml-1m-prefix", zero, fvn, pd.DataFrame(rows)))
    assert "NDCG@10 +200%" in c["steer"].ours and c["steer"].value == pytest.approx(5.0)
    assert c["spliced"].value is None and "is 0" in c["spliced"].note and "nan" not in c["spliced"].ours


def test_p2_claims_from_a_page():
    from recsae_core.papers import p2

    recon = pd.DataFrame(
        [
            {"model": "sasrec", "k": pd.NA, "variant": "base", "NDCG@10": 0.09, "HR@10": 0.16},
            {"model": "sasrec", "k": 8, "variant": "SAE", "NDCG@10": 0.0882, "HR@10": 0.15},
            {"model": "sasrec", "k": 8, "variant": "untrained SAE", "NDCG@10": 0.001, "HR@10": 0.01},
            {"model": "bprmf", "k": pd.NA, "variant": "base", "NDCG@10": 0.10, "HR@10": 0.2},
            {"model": "bprmf", "k": 8, "variant": "SAE", "NDCG@10": 0.08, "HR@10": 0.15},
            {"model": "bprmf", "k": 8, "variant": "untrained SAE", "NDCG@10": 0.02, "HR@10": 0.01},
        ]
    )
    coh = {
        "a": pd.DataFrame({"variant": ["raw dimensions", "untrained SAE", "trained SAE"], "coherence": [0.1, 0.2, 0.3]}),
        "b": pd.DataFrame({"variant": ["raw dimensions", "untrained SAE", "trained SAE"], "coherence": [0.4, 0.2, 0.3]}),
    }  # fmt: skip
    conf = {("bprmf", 8): (None, pd.DataFrame({"confidence": [1.0, 0.8, 0.5, 0.2]}))}
    c = _by_key(p2.claims("ml-1m-prefix", recon, 8, conf, coh))
    assert c["base_ndcg"].value == pytest.approx(0.09) and c["base_ndcg"].status == "reproduced"
    assert c["stable"].value == pytest.approx(0.2) and c["stable"].status == "not"  # bprmf −20 %
    assert c["untrained"].value == pytest.approx(0.8) and c["untrained"].status == "partly"  # bprmf −80 %
    assert c["confidence"].value == pytest.approx(0.5) and c["confidence"].status == "reproduced"
    assert c["coherence"].value == pytest.approx(0.5) and c["coherence"].status == "partly"
    assert "one case per user" in c["confidence"].ours
    # with P2's cases (every test interaction) the claim measures those, and says how they repeat users
    from recsae_core.concepts import CasePool

    acts = torch.zeros(20, 1)
    acts[:10, 0] = torch.arange(10, 0, -1).float()
    pool = CasePool(acts, torch.randn(20, 4), torch.tensor([0, 1] * 10), torch.arange(20),
                    torch.zeros(20, 0, dtype=torch.long), "user", "x")  # fmt: skip
    p2c = {"bprmf": (pool, pd.DataFrame({"confidence": [1.0, 0.2, 0.2, 0.2]}))}
    c = _by_key(p2.claims("ml-1m-prefix", recon, 8, conf, coh, p2_cases=p2c))
    assert c["confidence"].value == pytest.approx(0.25) and c["confidence"].status == "not"
    assert (
        "100% of them scored on a user" in c["confidence"].ours
        and "One case per user: 0.50" in c["confidence"].ours
    )
    # the page's intervals over users go beside each model's change; the rule still judges the point estimate
    changes = {"sasrec": {"change": -0.02, "lo": -0.09, "hi": 0.05}}
    c = _by_key(p2.claims("ml-1m-prefix", recon, 8, conf, coh, changes=changes))
    assert c["stable"].ours == "sasrec -2.0% [-9.0%, +5.0%], bprmf -20.0%" and c["stable"].status == "not"
    c = _by_key(p2.claims("ml-100k", recon[recon["model"] == "bprmf"], 8))
    assert c["base_ndcg"].ours == "not measured" and c["stable"].status == "not"  # comparable anywhere


def test_p3_claims_from_a_page():
    from recsae_core.papers import p3

    purity = {"mf": pd.DataFrame({"neuron": [1, 2], "purity@10": [1.0, 1.0], "purity@20": [1.0, 0.9],
                                  "purity@50": [1.0, 0.7]}, index=["Comedy", "Horror"])}  # fmt: skip
    fid = {"ncf": SimpleNamespace(rbo=0.8, kendall_tau=0.5, ceiling=0.95), "mf": SimpleNamespace(rbo=0.3, kendall_tau=0.1, ceiling=0.95)}  # fmt: skip
    pop = SimpleNamespace(mean_rank=500.0, others_mean_rank=1800.0)
    steps = {
        "promote": pd.DataFrame({"setting": ["original", "0", "1", "2"], "share": [0.1, 0.1, 0.3, 0.6],
                                 "ndcg@10": [0.1, 0.1, 0.09, 0.08]}),
        "suppress": pd.DataFrame({"setting": ["original", "1", "0", "-1"], "share": [0.3, 0.3, 0.35, 0.1],
                                  "ndcg@10": [0.1, 0.1, 0.1, 0.09]}),
    }  # fmt: skip
    abl = pd.DataFrame(
        {"model": ["MF", "MF", "NCF", "NCF"], "beta": [0.0, 1.0] * 2, "rbo": [0.2, 0.4, 0.5, 0.6],
         "kendall_tau": [0.0, 0.1, 0.3, 0.1]}
    )  # fmt: skip
    c = _by_key(p3.claims("ml-1m-notime", purity, fid, {"mf": 5.0}, pop, 3706, steps, abl))
    assert c["purity_comedy"].status == "reproduced"
    assert c["purity_horror"].value == pytest.approx(0.7) and c["purity_horror"].status == "not"
    assert (c["ncf_rbo"].status, c["ncf_tau"].status, c["mf_rbo"].status) == ("reproduced", "partly", "not")
    assert c["mf_l0"].status == "reproduced"
    assert c["popularity"].value == pytest.approx(500 / 3706) and c["popularity"].status == "reproduced"
    assert c["beta0"].value == pytest.approx(0.75) and c["beta0"].status == "partly"  # NCF τ rose at β = 0
    assert c["promote"].status == "reproduced" and c["suppress"].status == "partly"
    assert c["boost"].status == "not comparable" and c["boost"].ours == "not measured"


# ------------------------------------------------------------------------------------------- the runner


def _fake_job(tmp: Path, chapter: str, dataset: str, claims) -> book.Job:
    nb = tmp / "executed" / chapter / f"{dataset}.ipynb"
    _claims_notebook(nb, claims)
    return book.Job(chapter, dataset, REPO / "book" / f"{chapter}.ipynb", {}, nb)


def test_assemble_source_writes_the_scoreboard_into_the_root_page(tmp_path):
    """The real book's layout, with fake executed pages: P1 on two datasets, P3 with a page that predates the
    scoreboard (no claims), P2 not executed."""
    from recsae_core.papers import p1

    spec = {s.key: s for s in p1.SCOREBOARD}
    toc = yaml.safe_load((REPO / "_toc.yml").read_text())
    jobs = [
        _fake_job(tmp_path, "p1_sequential", "ml-100k", [spec["p1.ev"].measure(0.95, None, dataset="ml-100k")]),
        _fake_job(tmp_path, "p1_sequential", "ml-1m-prefix", [spec["p1.ev"].measure(0.98, None, dataset="ml-1m-prefix")]),
        _fake_job(tmp_path, "p3_monosemantic", "ml-100k", []),
    ]  # fmt: skip
    src = book.assemble_source(REPO, tmp_path / "out", toc, jobs, {}, profile="default")
    intro = (src / "book" / "intro.md").read_text()
    assert frontpage.MARKER not in intro
    table = intro[intro.index('<div class="recsae-scoreboard') :]
    rows = re.findall(r'<tr data-claim="([^"]+)">(.*?)</tr>', table)
    assert [k for k, _ in rows] == [s.key for s in scoreboard.all_specs()]
    ev = dict(rows)["p1.ev"]
    assert 'href="../chapters/p1_sequential/ml-1m-prefix.html#paper-vs-recsae"' in ev
    assert 'data-status="reproduced"' in ev and "0.98" in ev
    assert "ml-100k</a> 0.95 (partly)" in ev  # the other page, with its rule's verdict
    assert "executed before this claim" in dict(rows)["p3.ncf_rbo"]
    assert "not executed in this build" in dict(rows)["p2.stable"]
    assert "recsae book --chapter p1_sequential --dataset ml-1m-prefix" in dict(rows)["p1.mmc"]
    assert (src / "book" / "intro.md").read_text() == book._with_scoreboard(
        (REPO / "book" / "intro.md").read_text(), "book/intro", toc, jobs, "default"
    )


TOY_CLAIM_CELL = """
from recsae_core.scoreboard import ClaimSpec, at_least, show
spec = ClaimSpec("toy.value", "P1", "toy value", "2", at_least(2.0), "toy", "toy-section", anywhere=True)
show([spec.measure(value, None, dataset=dataset)])
"""


def test_runner_keeps_a_skipped_pages_claims(tmp_path, monkeypatch):
    """run_book on a toy chapter that shows one claim: executed, then skipped as unchanged; the front page
    shows the claim both times, and a changed parameter changes it."""
    root = tmp_path / "toy"
    (root / "book" / "profiles").mkdir(parents=True)
    shutil.copy(REPO / "_config.yml", root / "_config.yml")
    (root / "book" / "_vendor").symlink_to(REPO / "book" / "_vendor", target_is_directory=True)
    (root / "book" / "intro.md").write_text(f"# Toy\n\n{frontpage.MARKER}\n")
    toc = {"format": "jb-book", "root": "book/intro",
           "parts": [{"chapters": [{"file": "chapters/toy/index", "sections": [{"file": "chapters/toy/a"}, {"file": "chapters/toy/b"}]}]}]}  # fmt: skip
    (root / "_toc.yml").write_text(yaml.safe_dump(toc, sort_keys=False))
    params = new_code_cell('dataset = "a"\nvalue = 1.0')
    params.metadata["tags"] = ["parameters"]
    nb = new_notebook(
        cells=[new_markdown_cell("# Toy\n\n## Toy section"), params, new_code_cell(TOY_CLAIM_CELL)]
    )
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, root / "book" / "toy.ipynb")

    def profile(value: float) -> None:
        p = {"title": "Toy", "datasets": ["a", "b"], "smoke": {"params": {"value": value}}}
        (root / "book" / "profiles" / "toy.yaml").write_text(yaml.safe_dump(p))

    spec = ClaimSpec("toy.value", "P1", "toy value", "2", at_least(2.0), "toy", "toy-section", anywhere=True)
    monkeypatch.setattr(scoreboard, "all_specs", lambda: [spec])
    monkeypatch.setattr(book, "build_html", lambda src, output: output / "_build" / "html")
    monkeypatch.setattr(book, "package_source_hash", lambda: "fixed")
    out = tmp_path / "out"

    def front(value: float, **kw) -> str:
        profile(value)
        summary = book.run_book(root=root, profile="smoke", output=out, progress=False, **kw)
        return summary, (out / "_build" / "src" / "book" / "intro.md").read_text()

    summary, page = front(2.5)
    assert summary["executed"] == [("toy", "a"), ("toy", "b")]
    assert 'href="../chapters/toy/a.html#toy-section"' in page and 'data-status="reproduced"' in page
    assert 'href="../chapters/toy/b.html#toy-section">b</a> 2.5 (reproduced)' in page
    summary, again = front(2.5)
    assert summary["skipped"] == [("toy", "a"), ("toy", "b")] and again == page
    # only b, with a lower value: a's claim (executed earlier, not in this run) stays the main row
    summary, lower = front(1.0, datasets=["b"])
    assert summary["executed"] == [("toy", "b")] and 'data-status="reproduced"' in lower
    assert 'href="../chapters/toy/b.html#toy-section">b</a> 1 (not)' in lower
    claims = frontpage.read_claims(out / "_build" / "executed" / "smoke" / "toy" / "b.ipynb")
    assert json.loads(json.dumps([c.to_dict() for c in claims]))[0]["value"] == 1.0


def test_front_page_code_is_outside_the_pages_input_hash():
    """Restyling the front page must not re-execute the book: frontpage.py is left out of the package hash,
    and nothing a kernel runs imports it."""
    assert "frontpage.py" in book._NOT_IN_KERNEL
    kernel_side = [REPO / "recsae_core" / "scoreboard.py", *(REPO / "recsae_core" / "papers").glob("*.py")]
    imports = re.compile(r"^\s*(from|import)\s.*frontpage", re.M)
    assert not [p for p in kernel_side if imports.search(p.read_text())]
    sources = [nbformat.read(nb, as_version=4) for nb in (REPO / "book").glob("*.ipynb")]
    assert not [c for nb in sources for c in nb.cells if "frontpage" in c.source]
