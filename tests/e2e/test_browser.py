"""The built book in a real browser: Debian's Chromium driven by playwright, the HTML served on 127.0.0.1 and
every other address blocked. Uses the session's smoke-profile book (tests/conftest.py ``smoke_book``).

Never runs ``playwright install``: the browser is /usr/bin/chromium (``apt-get install chromium``; the
project's setup script installs it for the tests).
"""

from __future__ import annotations

from browser_support import BROWSER_MARKS, Visit

from recsae_core import book

pytestmark = BROWSER_MARKS


def test_no_outside_request_and_no_js_error_on_any_page(site, browser):
    base, pages = site
    visit = Visit(browser, base)
    for path in pages:
        visit.open(path)
    assert visit.outside == [], f"pages asked for outside addresses: {sorted(set(visit.outside))}"
    assert visit.failed == [], f"same-origin requests failed: {sorted(set(visit.failed))}"
    assert visit.unexpected_errors() == []
    visit.page.close()


def test_chapter_pages_show_their_figures_and_tables(site, browser):
    base, pages = site
    visit = Visit(browser, base)
    for path in pages:
        if not path.startswith("chapters/") or path.endswith("/index"):
            continue
        page = visit.open(path)
        images = page.eval_on_selector_all(
            "article img",
            "els => els.map(e => e.complete && e.naturalWidth > 0 && e.getBoundingClientRect().width > 100)",
        )
        assert images and all(images), f"{path}: a figure did not load ({images})"
        assert page.locator("article table").count() >= 1, f"{path}: no table"
        title = page.locator("article h1").first.inner_text().rstrip("#¶ \n")
        assert title.endswith(": " + book._dataset_title(path.rsplit("/", 1)[1])), (
            f"{path}: title {title!r} lacks the dataset"
        )
    visit.page.close()


def _base_models_page(site) -> str:
    pages = site[1]
    found = [p for p in pages if p.startswith("chapters/base_models/") and not p.endswith("/index")]
    assert found, "the smoke book has no base-models page"
    return found[0]


def test_plotly_user_view_changes_with_its_menu(site, browser):
    visit = Visit(browser, site[0])
    page = visit.open(_base_models_page(site))
    view = page.locator("#recommendation-view")
    view.scroll_into_view_if_needed()
    page.wait_for_function("() => document.getElementById('recommendation-view')?.data?.length > 0")
    state = (
        "() => { const g = document.getElementById('recommendation-view');"
        " return [g.data.map(t => t.visible === true), g.layout.title.text]; }"
    )
    before = page.evaluate(state)
    assert sum(before[0]) > 0
    view.locator(".updatemenu-header-group").click()
    items = view.locator(".updatemenu-dropdown-button")
    assert items.count() >= 2
    items.nth(1).click()
    # plotly restyles asynchronously: poll until the visible traces differ from before (up to 3 s)
    page.wait_for_function(
        f"(before) => JSON.stringify(({state})()) !== JSON.stringify(before)", arg=before, timeout=3000
    )
    after = page.evaluate(state)
    assert after[0] != before[0] and after[1] != before[1]
    assert sum(after[0]) == sum(before[0])
    assert visit.unexpected_errors() == []
    visit.page.close()


def test_ipywidgets_panel_renders(site, browser):
    visit = Visit(browser, site[0])
    page = visit.open(_base_models_page(site))
    panel = page.locator(".jupyter-widgets.widget-vbox").first
    panel.scroll_into_view_if_needed()
    panel.wait_for(state="visible", timeout=10_000)
    assert panel.locator("select").count() >= 2  # dataset and model dropdowns
    assert panel.locator("input").count() >= 1  # user id
    text = panel.inner_text()
    assert "history items" in text and "top-" in text
    # an icon in a widget loads the manager's font-awesome fonts, from a path relative to the page
    loaded = page.evaluate(
        "async () => { await document.fonts.load('900 16px \"Font Awesome 5 Free\"');"
        " await document.fonts.load('400 16px \"Font Awesome 5 Brands\"');"
        " return [...document.fonts].filter(f => f.family.includes('Font Awesome')).map(f => f.status); }"
    )
    assert loaded and "loaded" in loaded, loaded
    page.wait_for_load_state("networkidle")
    assert visit.failed == [], f"same-origin requests failed: {sorted(set(visit.failed))}"
    assert visit.outside == [] and visit.unexpected_errors() == []
    visit.page.close()
