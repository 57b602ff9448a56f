"""Browser fixtures shared by the e2e tests: the session's smoke book served on 127.0.0.1, Debian's Chromium
(never ``playwright install``), and :class:`Visit`, a page that aborts and records every outside request,
records failed same-origin requests and collects page errors (both in browser_support.py). A chapter's own
browser checks go in ``tests/e2e/test_browser_<chapter>.py`` (a basename unique in tests/) and use these fixtures.
"""

from __future__ import annotations

import functools
import http.server
import threading

import pytest
import yaml
from browser_support import CHROMIUM


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:
        pass


@pytest.fixture(scope="module")
def site(smoke_book):
    """(base URL, page paths from the generated toc) of the smoke book served on 127.0.0.1."""
    html = smoke_book["html"]
    handler = functools.partial(_Quiet, directory=str(html))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    toc = yaml.safe_load((smoke_book["output"] / "_build" / "src" / "_toc.yml").read_text())
    pages = [toc["root"]]
    for part in toc["parts"]:
        for ch in part["chapters"]:
            pages += [ch["file"]] + [s["file"] for s in ch.get("sections", [])]
    yield f"http://127.0.0.1:{server.server_address[1]}", pages
    server.shutdown()


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(
            executable_path=str(CHROMIUM),
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--no-first-run",
            ],
        )
        yield b
        b.close()
