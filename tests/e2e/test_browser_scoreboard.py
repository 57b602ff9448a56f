"""The front page's reproduction scoreboard in the built smoke book, in Chromium: the table is there with one row
per declared claim, every row of an executed chapter has a status, and every link leads to an existing page
**and** an element with the link's anchor on it; no request leaves the page's origin."""

from __future__ import annotations

from urllib.parse import urldefrag

from browser_support import BROWSER_MARKS, Visit

from recsae_core import scoreboard

pytestmark = BROWSER_MARKS


def test_front_page_scoreboard_rows_and_links_resolve(site, browser):
    base, pages = site
    visit = Visit(browser, base)
    page = visit.open(pages[0])  # the root page
    rows = page.evaluate(
        """() => [...document.querySelectorAll('main table.recsae-scoreboard-table tbody tr')].map(r => ({
            key: r.dataset.claim,
            cells: [...r.querySelectorAll('td')].map(c => c.innerText.trim()),
            status: (r.querySelector('.recsae-status') || {dataset: {}}).dataset.status,
            links: [...r.querySelectorAll('a')].map(a => a.href),
        }))"""
    )
    specs = scoreboard.all_specs()
    assert [r["key"] for r in rows] == [s.key for s in specs], "one row per declared claim, in order"
    assert all(len(r["cells"]) == 6 for r in rows)
    built = {p.split("/")[1] for p in pages if p.startswith("chapters/") and not p.endswith("/index")}
    for r, s in zip(rows, specs, strict=True):
        if s.chapter in built:  # the smoke book executes every paper chapter: each claim has a status
            assert r["status"] in scoreboard.STATUSES, r
            assert any(f"/chapters/{s.chapter}/" in u and f"#{s.anchor}" in u for u in r["links"]), r
        assert r["links"], r
    text = page.locator("main .recsae-scoreboard").inner_text()
    assert f"{len(specs)} claims" in text and "smoke" in text
    # every link: the page exists (HTTP 200) and holds the anchor
    targets: dict[str, set[str]] = {}
    for r in rows:
        for url in r["links"]:
            assert url.startswith(base + "/"), url
            path, anchor = urldefrag(url)
            targets.setdefault(path, set()).add(anchor)
    assert len(targets) >= 3
    for path, anchors in sorted(targets.items()):
        response = page.goto(path, wait_until="domcontentloaded")
        assert response is not None and response.status == 200, path
        for anchor in sorted(a for a in anchors if a):
            assert page.locator(f'[id="{anchor}"]').count() == 1, f"{path}#{anchor}"
    assert visit.outside == [] and visit.unexpected_errors() == []
    visit.page.close()
