"""What the browser tests share besides fixtures: the marks, the Chromium path, and :class:`Visit`, a page that
aborts and records every outside request, records failed same-origin requests and collects page errors.
Import it as ``from browser_support import ...`` (pytest puts tests/e2e on the path).
"""

from __future__ import annotations

from pathlib import Path

import pytest

CHROMIUM = Path("/usr/bin/chromium")
BROWSER_MARKS = [
    pytest.mark.browser,
    pytest.mark.shared,
    pytest.mark.skipif(
        not CHROMIUM.exists(), reason="Debian's chromium is not installed (apt-get install chromium)"
    ),
]
#: JB1 1.0.4 + Sphinx 7.4 emit these inline config scripts twice (a harmless SyntaxError, toolchain.md §10).
KNOWN_ERRORS = ("THEBE_JS_URL", "togglebuttonSelector")


class Visit:
    """A page with every non-local request aborted and recorded, and page errors collected."""

    def __init__(self, browser, base: str) -> None:
        self.outside: list[str] = []
        self.failed: list[
            str
        ] = []  # same-origin requests that failed or answered >= 400 (e.g. a missing font)
        self.errors: list[str] = []
        self.page = browser.new_page(viewport={"width": 1280, "height": 900})
        self.page.route("**/*", self._route)
        self.page.on("pageerror", lambda e: self.errors.append(str(e)))
        self.page.on("response", self._response)
        self.page.on("requestfailed", self._request_failed)
        self.base = base

    def _local(self, url: str) -> bool:
        return url.startswith(self.base + "/")

    def _response(self, response) -> None:
        if self._local(response.url) and response.status >= 400:
            self.failed.append(f"{response.status} {response.url}")

    def _request_failed(self, request) -> None:
        if self._local(request.url):
            self.failed.append(f"{request.failure} {request.url}")

    def _route(self, route) -> None:
        if self._local(route.request.url):
            route.continue_()
        else:
            self.outside.append(route.request.url)
            route.abort()

    def open(self, path: str):
        # networkidle can fire while a large page (an explorer's inline data) is still being parsed, before
        # its figures exist (a flaky count of 2 of 3 images): wait for "load" too (all parsed, images loaded)
        self.page.goto(f"{self.base}/{path}.html", wait_until="networkidle")
        self.page.wait_for_load_state("load")
        return self.page

    def unexpected_errors(self) -> list[str]:
        return [e for e in self.errors if not any(k in e for k in KNOWN_ERRORS)]


def chapter_pages(pages: list[str], chapter: str) -> list[str]:
    """The per-dataset pages of ``chapter`` in the served book (its index page left out)."""
    return [p for p in pages if p.startswith(f"chapters/{chapter}/") and not p.endswith("/index")]


def explorer_divs(page, prefix: str) -> list[str]:
    """Ids of the feature explorers on ``page`` whose id starts with ``prefix`` (their data blocks left out)."""
    return page.evaluate(
        f"() => [...document.querySelectorAll('[id^={prefix}]')].map(e => e.id).filter(i => !i.endsWith('-data'))"
    )


def search_and_open_card(page, div: str) -> dict:
    """In the feature explorer ``div`` of ``page``: search a described feature by the words of its label (read
    from the embedded data), check the list narrows to rows that include it, open its card and wait for its
    plots (histogram and item effects, plus the causal bars when steering changed any list). Returns the
    feature's data."""
    root = page.locator(f"#{div}")
    assert root.count() == 1, f"no explorer #{div}"
    root.scroll_into_view_if_needed()
    data = page.evaluate(f"() => JSON.parse(document.getElementById('{div}-data').textContent).features")
    target = next(
        (
            f
            for f in data
            if f.get("label") and not f.get("dead") and not f["label"].startswith("No metadata")
        ),
        None,
    )
    assert target, f"{div}: no feature with a description"
    root.locator("input[type=search]").fill(target["label"].split(" (")[0])
    rows = root.locator(".rx-list tbody tr")
    ids = [int(rows.nth(i).get_attribute("data-id")) for i in range(rows.count())]
    assert target["id"] in ids and len(ids) < len(data), (div, target["label"], len(ids))
    root.locator(f'.rx-list tbody tr[data-id="{target["id"]}"]').click()
    assert f"Feature #{target['id']}" in root.locator(".rx-title").inner_text()
    c = target["causal"]
    n_plots = 3 if c["entered"] or c["left"] else 2
    page.wait_for_function(
        f"() => document.querySelectorAll('#{div} .rx-card .js-plotly-plot').length === {n_plots}",
        timeout=5000,
    )
    assert root.locator(".rx-card .js-plotly-plot .bars path").count() > 3
    if n_plots == 2:
        assert "No item entered or left" in root.locator(".rx-card").inner_text()
    return target
