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
        self._failed: list[
            str
        ] = []  # same-origin requests that failed or answered >= 400 (e.g. a missing font)
        self._aborted: list[str] = []  # same-origin requests the browser cancelled (see ``failed``)
        self.errors: list[str] = []
        self.page = browser.new_page(viewport={"width": 1280, "height": 900})
        self.page.route("**/*", self._route)
        self.page.on("pageerror", lambda e: self.errors.append(str(e)))
        self.page.on("response", self._response)
        self.page.on("requestfailed", self._request_failed)
        self._inflight: set = set()  # requests sent and not yet finished or failed
        self.page.on("request", lambda r: self._inflight.add(r))
        self.page.on("requestfinished", lambda r: self._inflight.discard(r))
        self.page.on("requestfailed", lambda r: self._inflight.discard(r))
        self.base = base

    def _local(self, url: str) -> bool:
        return url.startswith(self.base + "/")

    def _response(self, response) -> None:
        if self._local(response.url) and response.status >= 400:
            self._failed.append(f"{response.status} {response.url}")

    def _request_failed(self, request) -> None:
        if not self._local(request.url):
            return
        if "ERR_ABORTED" in (request.failure or ""):
            self._aborted.append(request.url)
        else:
            self._failed.append(f"{request.failure} {request.url}")

    @property
    def failed(self) -> list[str]:
        """Same-origin requests that failed. A request the browser cancelled (``net::ERR_ABORTED``: the page
        navigated on while a widget's lazily loaded font was in flight; a CI run failed on exactly that) is
        fetched again here and counts only when the file is missing (status >= 400) or unreachable."""
        out = list(self._failed)
        for url in dict.fromkeys(self._aborted):
            try:
                status = self.page.request.get(url).status
            except Exception as e:  # the reason goes into the assertion message
                out.append(f"aborted, then unreachable ({e}) {url}")
                continue
            if status >= 400:
                out.append(f"aborted, then {status} {url}")
        return out

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
        # widgets render after load and their CSS then asks for fonts: let those finish before the next page
        self.page.evaluate("() => document.fonts.ready.then(() => true)")
        self._settle()
        return self.page

    def _settle(self, quiet_ms: int = 300, timeout_ms: int = 15_000) -> None:
        """Wait until no request has been in flight for ``quiet_ms`` (at most ``timeout_ms``)."""
        waited = quiet = 0
        while quiet < quiet_ms and waited < timeout_ms:
            self.page.wait_for_timeout(50)
            waited += 50
            quiet = quiet + 50 if not self._inflight else 0

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
