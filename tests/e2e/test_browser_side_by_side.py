"""The side-by-side chapter in the built smoke book, in Chromium: one Pareto figure per site, two tables per
site with the five architectures and every metric column (RBO at the MF site only), a measured conclusion per
site, a working feature explorer per architecture, and no request leaves the page's origin."""

from __future__ import annotations

import re

from browser_support import BROWSER_MARKS, Visit, chapter_pages

pytestmark = BROWSER_MARKS

ARCHS = ["relu_l1", "topk", "batch_topk", "p3", "matryoshka"]
SITES = ("P1: SASRec block 0", "P2: SASRec final states", "P3: MF user + item embeddings")
NUMBER = re.compile(r"^-?[\d,]+(\.\d+)?( ± [\d,]+(\.\d+)?)?$")


def test_side_by_side_page_has_figures_tables_and_conclusions(site, browser):
    base, pages = site
    found = chapter_pages(pages, "side_by_side")
    assert found, "the smoke book has no side-by-side page"
    visit = Visit(browser, base)
    page = visit.open(found[0])
    imgs = page.locator("main img")
    assert imgs.count() >= len(SITES)  # one Pareto grid per site
    for i in range(imgs.count()):
        imgs.nth(i).scroll_into_view_if_needed()
        assert page.evaluate("(el) => el.complete && el.naturalWidth > 300", imgs.nth(i).element_handle())
    tables = page.evaluate(
        """() => [...document.querySelectorAll('main table')].map(t => ({
            caption: (t.querySelector('caption') || {innerText: ''}).innerText.trim(),
            head: [...t.querySelectorAll('thead th')].map(c => c.innerText.trim()),
            rows: [...t.querySelectorAll('tbody tr')].map(r => [...r.querySelectorAll('th,td')].map(c => c.innerText.trim()))
        }))"""
    )
    ls = []
    for label in SITES:
        mine = [t for t in tables if t["caption"].startswith(label)]
        assert len(mine) == 2, (label, [t["caption"] for t in tables])
        head = mine[0]["head"] + mine[1]["head"][1:]
        for col in (
            "L0",
            "EV",
            "dead share",
            "spliced NDCG@10",
            "mean max corr",
            "purity@10",
            "description conf.",
            "train s",
            "rows/s",
        ):
            assert col in head, (label, col, head)
        assert ("RBO@30" in head) == label.startswith("P3"), (label, head)
        for t in mine:
            assert [r[0] for r in t["rows"]] == ARCHS, (label, t["rows"])
            for r in t["rows"]:
                cells = dict(zip(t["head"], r, strict=True))
                for name, value in cells.items():
                    if name in ("architecture", "L1 coeff"):
                        continue
                    assert NUMBER.match(value), (label, name, value)
                if "EV" in cells:
                    assert float(cells["EV"].split(" ± ")[0]) <= 1.0
        l0 = {r[0]: float(r[mine[0]["head"].index("L0")].split(" ± ")[0]) for r in mine[0]["rows"]}
        ls.append(l0["topk"])
    text = page.locator("main").inner_text()
    targets = [int(t) for t in re.findall(r"target L0 (\d+)", text)]
    assert len(targets) == len(SITES)
    for topk_l0, k in zip(ls, targets, strict=True):  # TopK keeps at most k (fewer where ReLU leaves < k)
        assert 0.8 * k <= topk_l0 <= k, (topk_l0, k)
    assert text.count("Measured conclusion.") == len(SITES)
    assert "beats" in text and "Page time" in text
    # one feature explorer per architecture (P1's site): its list fills and a row opens that feature's card
    for arch in ARCHS:
        root = page.locator(f"#sbs-explorer-{arch}")
        assert root.count() == 1, f"no explorer for {arch}"
        root.scroll_into_view_if_needed()
        rows = root.locator(".rx-list tbody tr")
        assert rows.count() > 0, arch
        fid = rows.nth(rows.count() - 1).get_attribute("data-id")
        rows.nth(rows.count() - 1).click()
        assert root.locator(".rx-title").inner_text().startswith(f"Feature #{fid}:"), arch
    assert visit.outside == [] and visit.unexpected_errors() == []
    visit.page.close()
