"""The feature explorer in the built smoke book, in Chromium: search finds a feature by its label, a card
opens on click and draws its plots with the page's plotly (no outside request, no kernel)."""

from __future__ import annotations

from browser_support import BROWSER_MARKS, Visit, chapter_pages

pytestmark = BROWSER_MARKS


def test_search_finds_a_feature_by_label_and_its_card_shows_plots(site, browser):
    base, pages = site
    found = chapter_pages(pages, "feature_explorer")
    assert found, "the smoke book has no feature-explorer page"
    visit = Visit(browser, base)
    page = visit.open(found[0])
    for div in ("feature-explorer-0", "feature-explorer-1"):
        root = page.locator(f"#{div}")
        root.scroll_into_view_if_needed()
        # a described feature's label, read from the embedded data
        target = page.evaluate(
            f"""() => JSON.parse(document.getElementById('{div}-data').textContent).features
                .find(f => f.label && !f.dead && !f.label.startsWith('No metadata'))"""
        )
        assert target, f"{div}: no feature with a description"
        words = target["label"].split(" (")[0]
        root.locator("input[type=search]").fill(words)
        rows = root.locator(".rx-list tbody tr")
        assert rows.count() >= 1
        ids = [int(rows.nth(i).get_attribute("data-id")) for i in range(rows.count())]
        assert target["id"] in ids and rows.count() < len(
            page.evaluate(f"() => JSON.parse(document.getElementById('{div}-data').textContent).features")
        )
        root.locator(f'.rx-list tbody tr[data-id="{target["id"]}"]').click()
        assert f"Feature #{target['id']}" in root.locator(".rx-title").inner_text()
        page.wait_for_function(
            f"() => document.querySelectorAll('#{div} .rx-card .js-plotly-plot').length === 3", timeout=5000
        )
        bars = root.locator(".rx-card .js-plotly-plot .bars path")
        assert bars.count() > 3
        # neighbours are links to other cards
        link = root.locator(".rx-card a.rx-link").first
        other = int(link.get_attribute("data-go"))
        link.click()
        assert f"Feature #{other}" in root.locator(".rx-title").inner_text()
        root.locator("input[type=search]").fill("no feature is called this")
        assert root.locator(".rx-list tbody tr").count() == 0
    assert visit.outside == [] and visit.unexpected_errors() == []
    visit.page.close()
