"""The Getting-started pages in Chromium (quickstart and your_recommender): present, figures loaded, the
exercises' solutions folded until opened, and nothing requested from outside."""

from __future__ import annotations

from browser_support import BROWSER_MARKS, Visit, chapter_pages

pytestmark = BROWSER_MARKS


def _page(site, chapter: str) -> str:
    found = chapter_pages(site[1], chapter)
    assert found, f"the smoke book has no {chapter} page"
    return found[0]


def _figures(page) -> list[bool]:
    return page.eval_on_selector_all(
        "article img",
        "els => els.filter(e => !e.closest('details')).map("
        "e => e.complete && e.naturalWidth > 0 && e.getBoundingClientRect().width > 100)",
    )


def test_quickstart_shows_figures_and_folds_the_solutions(site, browser):
    visit = Visit(browser, site[0])
    page = visit.open(_page(site, "quickstart"))
    assert "SAEs for recommenders in fifteen minutes" in page.locator("article h1").first.inner_text()
    figures = _figures(page)
    assert len(figures) >= 2 and all(figures), f"a figure did not load ({figures})"
    assert page.locator("article table").count() >= 4
    folded = page.locator("article .tag_hide-cell details")  # one toggle per solution (hide-cell)
    assert folded.count() == 3
    for i in range(3):
        d = folded.nth(i)
        assert d.get_attribute("open") is None, "a solution is open before it is clicked"
        table = d.locator("table").first
        assert not table.is_visible(), "a solution's table shows while folded"
        d.locator("summary").click()
        table.wait_for(state="visible", timeout=3000)
    assert visit.outside == [], f"outside requests: {sorted(set(visit.outside))}"
    assert visit.failed == [] and visit.unexpected_errors() == []
    visit.page.close()


def test_your_recommender_guide_shows_its_steps(site, browser):
    visit = Visit(browser, site[0])
    page = visit.open(_page(site, "your_recommender"))
    assert "Your own recommender" in page.locator("article h1").first.inner_text()
    figures = _figures(page)
    assert len(figures) >= 3 and all(figures), f"a figure did not load ({figures})"
    text = page.locator("article").inner_text()
    for phrase in (
        "score_from(site, rep, batch)",
        "representation(site, batch)",
        "class GRU4Rec(Recommender)",
    ):
        assert phrase in text, f"the guide does not show {phrase!r}"
    sites = page.locator("article table", has_text="gru4rec.layer0").first
    assert sites.is_visible() and "False" not in sites.inner_text(), "check_sites reports a broken wrap"
    assert visit.outside == [], f"outside requests: {sorted(set(visit.outside))}"
    assert visit.failed == [] and visit.unexpected_errors() == []
    visit.page.close()
