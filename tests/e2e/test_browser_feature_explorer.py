"""The feature explorer in the built smoke book, in Chromium: search finds a feature by its label, a card
opens on click and draws its plots with the page's plotly (no outside request, no kernel)."""

from __future__ import annotations

from browser_support import BROWSER_MARKS, Visit, chapter_pages, search_and_open_card

pytestmark = BROWSER_MARKS


def test_search_finds_a_feature_by_label_and_its_card_shows_plots(site, browser):
    base, pages = site
    found = chapter_pages(pages, "feature_explorer")
    assert found, "the smoke book has no feature-explorer page"
    visit = Visit(browser, base)
    page = visit.open(found[0])
    for div in ("feature-explorer-0", "feature-explorer-1"):
        root = page.locator(f"#{div}")
        search_and_open_card(page, div)
        # neighbours are links to other cards
        link = root.locator(".rx-card a.rx-link").first
        other = int(link.get_attribute("data-go"))
        link.click()
        assert f"Feature #{other}" in root.locator(".rx-title").inner_text()
        root.locator("input[type=search]").fill("no feature is called this")
        assert root.locator(".rx-list tbody tr").count() == 0
    assert visit.outside == [] and visit.unexpected_errors() == []
    visit.page.close()
