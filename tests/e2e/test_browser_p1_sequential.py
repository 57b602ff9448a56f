"""The P1 chapter in the built smoke book, in Chromium: every figure loads, the paper's tables are there with
both meanings of α = 0 labelled, the static steering slider changes the plot, and no request leaves the
page's origin."""

from __future__ import annotations

from browser_support import BROWSER_MARKS, Visit, chapter_pages, explorer_divs, search_and_open_card

pytestmark = BROWSER_MARKS

#: The visible α marker, the visible top-k table's "after" header, and which traces are shown.
_STATE = (
    "() => { const g = document.getElementById('p1-steering-slider');"
    " const vis = g.data.filter(t => t.visible !== false);"
    " return { shown: g.data.map(t => t.visible !== false),"
    " alpha: vis.filter(t => t.type === 'scatter' && t.mode === 'markers').map(t => t.x[0]),"
    " header: vis.filter(t => t.type === 'table').map(t => t.header.values[3]) }; }"
)


def test_p1_page_figures_tables_and_no_outside_request(site, browser):
    base, pages = site
    found = chapter_pages(pages, "p1_sequential")
    assert found, "the smoke book has no P1 page"
    visit = Visit(browser, base)
    for path in found:
        page = visit.open(path)
        imgs = page.locator("main img")
        # Fig. 2 heatmap, Fig. 3 sweep, Fig. 4 (corr, AUC), Fig. 5 (two genres), steering curves
        assert imgs.count() >= 7, f"{path}: {imgs.count()} figures"
        for i in range(imgs.count()):
            assert page.evaluate("(el) => el.complete && el.naturalWidth > 100", imgs.nth(i).element_handle())
        assert page.locator("main table").count() >= 8
        text = page.locator("main").inner_text()
        for needle in (
            "0 (with SAE)",
            "0 (base model)",
            "Paper vs recsae",
            "P1 ML-1M (dev)",
            "explained variance",
        ):
            assert needle in text, f"{path}: {needle!r} missing"
        assert page.locator(".jupyter-widgets.widget-vbox").count() >= 1  # the live steering panel
    assert visit.outside == [], f"outside requests: {sorted(set(visit.outside))}"
    assert visit.failed == [] and visit.unexpected_errors() == []
    visit.page.close()


def test_p1_steering_slider_changes_the_plot(site, browser):
    base, pages = site
    visit = Visit(browser, base)
    page = visit.open(chapter_pages(pages, "p1_sequential")[0])
    view = page.locator("#p1-steering-slider")
    view.scroll_into_view_if_needed()
    page.wait_for_function("() => document.getElementById('p1-steering-slider')?.data?.length > 0")
    before = page.evaluate(_STATE)
    assert before["alpha"] == [0.0] and len(before["header"]) == 1  # starts at α = 0, one table shown
    rail = view.locator(".slider-rail-touch-rect").first.bounding_box()
    assert rail is not None
    page.mouse.click(rail["x"] + rail["width"] - 3, rail["y"] + rail["height"] / 2)  # the last step
    # plotly restyles asynchronously: poll until the visible traces differ from before (up to 3 s)
    page.wait_for_function(
        f"(before) => JSON.stringify(({_STATE})()) !== JSON.stringify(before)", arg=before, timeout=3000
    )
    after = page.evaluate(_STATE)
    top = float(
        page.evaluate(
            "() => document.getElementById('p1-steering-slider').layout.sliders[0].steps.at(-1).label"
        )
    )
    assert after["alpha"] == [top] and after["header"] == [f"α = {top:g}: title"]
    assert sum(after["shown"]) == sum(before["shown"])
    assert f"α = {top:g}: title" in view.inner_text()  # the rendered table, not only the data, changed
    assert visit.outside == [] and visit.unexpected_errors() == []
    visit.page.close()


def test_p1_explorer_opens_cards_and_the_steered_features_link_to_them(site, browser):
    base, pages = site
    found = chapter_pages(pages, "p1_sequential")
    visit = Visit(browser, base)
    page = visit.open(found[0])
    divs = explorer_divs(page, "p1-explorer-")
    assert "p1-explorer-sasrec" in divs, divs
    for div in divs:  # one per probed model (smoke: SASRec and BERT4Rec)
        search_and_open_card(page, div)
    # the steered-features table links to a card; following it opens that feature
    link = page.locator("main a[href^='#p1-explorer-sasrec-']").first
    assert link.count() == 1, "no link from the steered features into the explorer"
    fid = int(link.get_attribute("href").rsplit("-", 1)[1])
    link.click()
    page.wait_for_timeout(300)
    assert f"Feature #{fid}" in page.locator("#p1-explorer-sasrec .rx-title").inner_text()
    text = page.locator("main").inner_text()
    assert "De-biasing: a popularity feature" in text and "long-tail share" in text.lower()
    assert visit.outside == [] and visit.unexpected_errors() == []
    visit.page.close()
