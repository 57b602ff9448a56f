"""The P2 chapter in the built smoke book, in Chromium: figures and tables present, the feature explorer's
search finds a described latent, and no request leaves the page's origin."""

from __future__ import annotations

from browser_support import BROWSER_MARKS, Visit, chapter_pages

pytestmark = BROWSER_MARKS


def test_p2_page_has_figures_tables_and_a_searchable_explorer(site, browser):
    base, pages = site
    found = chapter_pages(pages, "p2_recsae")
    assert found, "the smoke book has no P2 page"
    visit = Visit(browser, base)
    page = visit.open(found[0])
    imgs = page.locator("main img")
    # training curves, confidence histograms, de-biasing trade-off
    assert imgs.count() >= 3
    for i in range(imgs.count()):
        assert page.evaluate("(el) => el.naturalWidth > 100", imgs.nth(i).element_handle())
    assert page.locator("main table").count() >= 5
    text = page.locator("main").inner_text()
    assert "ties ranked pessimistically" in text and "P2 vs recsae" in text
    divs = page.evaluate(
        "() => [...document.querySelectorAll('[id^=p2-explorer-]')].map(e => e.id).filter(i => !i.endsWith('-data'))"
    )
    assert divs, "no feature explorer on the page"
    for div in divs:
        root = page.locator(f"#{div}")
        root.scroll_into_view_if_needed()
        target = page.evaluate(
            f"""() => JSON.parse(document.getElementById('{div}-data').textContent).features
                .find(f => f.label && !f.dead && !f.label.startsWith('No metadata'))"""
        )
        if target is None:
            continue
        root.locator("input[type=search]").fill(target["label"].split(" (")[0])
        rows = root.locator(".rx-list tbody tr")
        ids = [int(rows.nth(i).get_attribute("data-id")) for i in range(rows.count())]
        assert target["id"] in ids
    # the best-concepts table links into the explorer: a link opens that latent's card
    link = page.locator("main a[href^='#p2-explorer-']").first
    assert link.count() == 1, "the best-concepts table has no link into the explorer"
    href = link.get_attribute("href")
    div, feature = href[1:].rsplit("-", 1)
    link.click()
    page.wait_for_function(
        "([d, f]) => document.querySelector('#' + d + ' .rx-title')?.textContent.startsWith('Feature #' + f + ':')",
        arg=[div, feature],
    )
    assert visit.outside == [] and visit.unexpected_errors() == []
    visit.page.close()
