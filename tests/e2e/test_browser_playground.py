"""The steering playground in the built smoke book, in Chromium: the slider moves α in the plot (the visible
traces, the rendered table and the summary line change), the search box filters the features by description
or #id and a click redraws the plot for that feature, the users choice switches between a group and one user's
top-10, and no request leaves the page's origin or fails."""

from __future__ import annotations

from browser_support import BROWSER_MARKS, Visit, chapter_pages

pytestmark = BROWSER_MARKS

ROOT = "steering-playground"
#: Which traces are shown, the visible α marker, and the visible table's header.
_STATE = (
    f"() => {{ const g = document.getElementById('{ROOT}-plot');"
    " const vis = g.data.filter(t => t.visible !== false);"
    " return { shown: g.data.map(t => t.visible !== false),"
    " alpha: vis.filter(t => t.type === 'scatter' && t.mode === 'markers').map(t => t.x[0]),"
    " header: vis.filter(t => t.type === 'table').map(t => t.header.values.join('|')),"
    " title: document.querySelector('#" + ROOT + " .pg-title').textContent }; }"
)
_DATA = f"() => JSON.parse(document.getElementById('{ROOT}-data').textContent)"


def _open(site, browser):
    base, pages = site
    found = chapter_pages(pages, "playground")
    assert found, "the smoke book has no playground page"
    visit = Visit(browser, base)
    page = visit.open(found[0])
    page.locator(f"#{ROOT}").scroll_into_view_if_needed()
    page.wait_for_function(f"() => document.getElementById('{ROOT}-plot')?.data?.length > 0")
    return visit, page


def _move_slider_to_end(page) -> None:
    rail = page.locator(f"#{ROOT}-plot .slider-rail-touch-rect").first.bounding_box()
    assert rail is not None
    before = page.evaluate(_STATE)
    page.mouse.click(rail["x"] + rail["width"] - 3, rail["y"] + rail["height"] / 2)
    # plotly restyles asynchronously: poll until the visible traces differ (up to 3 s)
    page.wait_for_function(
        f"(before) => JSON.stringify(({_STATE})()) !== JSON.stringify(before)", arg=before, timeout=3000
    )


def test_playground_slider_moves_the_plot(site, browser):
    visit, page = _open(site, browser)
    root = page.locator(f"#{ROOT}")
    data = page.evaluate(_DATA)
    alphas = data["alphas"]
    before = page.evaluate(_STATE)
    assert before["alpha"] == [0.0] and len(before["header"]) == 1  # starts at α = 0, one table shown
    summary0 = root.locator(".pg-summary").inner_text()
    assert summary0.startswith("α = 0")
    _move_slider_to_end(page)
    after = page.evaluate(_STATE)
    top = alphas[-1]
    assert after["alpha"] == [top] and sum(after["shown"]) == sum(before["shown"])
    assert after["header"] != before["header"] and f"α = {top:g}" in after["header"][0]
    assert f"at α = {top:g}" in root.locator(f"#{ROOT}-plot").inner_text()  # the rendered table changed
    assert root.locator(".pg-summary").inner_text().startswith(f"α = {top:g}")
    # one user: the table becomes that user's top-k before → after, still at the slider's α
    page.select_option(f"#{ROOT} select.pg-who", "u0")
    page.wait_for_function(f"() => ({_STATE})().header.some(h => h.startsWith('#|before'))", timeout=3000)
    user = page.evaluate(_STATE)
    assert user["alpha"] == [top] and f"α = {top:g}: title" in user["header"][0]
    assert root.locator(".pg-summary").inner_text().find(f"user {data['saes'][0]['users'][0]['id']}") > 0
    assert visit.outside == [] and visit.failed == [] and visit.unexpected_errors() == []
    visit.page.close()


def test_playground_search_filters_features_and_a_click_redraws(site, browser):
    visit, page = _open(site, browser)
    root = page.locator(f"#{ROOT}")
    data = page.evaluate(_DATA)
    for i, sae in enumerate(data["saes"]):
        page.select_option(f"#{ROOT} select.pg-sae", str(i))
        rows = root.locator(".pg-list tbody tr")
        assert rows.count() == len(sae["features"])
        target = sae["features"][-1]
        # by words of a description (a phrase only some features share, when there is one)
        words = target["description"].split(" (")[0]
        root.locator("input[type=search]").fill(words)
        ids = [int(rows.nth(j).get_attribute("data-id")) for j in range(rows.count())]
        want = [
            f["id"]
            for f in sae["features"]
            if words.lower() in (f["description"] + " " + f["steers"]).lower()
        ]
        assert target["id"] in ids and ids == want
        # by the genre its atom steers towards
        genre = sae["features"][0]["steers"]
        root.locator("input[type=search]").fill(genre)
        ids = [int(rows.nth(j).get_attribute("data-id")) for j in range(rows.count())]
        assert sae["features"][0]["id"] in ids
        # by #id: exactly that feature
        root.locator("input[type=search]").fill(f"#{target['id']} ")
        assert rows.count() == 1
        before = page.evaluate(_STATE)
        rows.first.click()
        page.wait_for_function(f"(t) => ({_STATE})().title !== t", arg=before["title"], timeout=3000)
        assert root.locator(".pg-title").inner_text().startswith(f"Feature #{target['id']}")
        assert "pg-sel" in rows.first.get_attribute("class")
        root.locator("input[type=search]").fill("no feature is described like this")
        assert rows.count() == 0 and "0 of" in root.locator(".pg-count").inner_text()
        root.locator("input[type=search]").fill("")
    assert visit.outside == [] and visit.failed == [] and visit.unexpected_errors() == []
    visit.page.close()
