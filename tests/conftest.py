"""Shared fixtures. Tests that need the real datasets use ``shared_data`` and are marked ``shared``."""

from __future__ import annotations

import os
import zlib
from pathlib import Path

import pytest

_DEFAULT_SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "datasets"


def shared_data_dir() -> Path | None:
    """``$RECSAE_DATA`` if set, else ``../shared/datasets`` beside the repository, if it exists."""
    env = os.environ.get("RECSAE_DATA")
    path = Path(env) if env else _DEFAULT_SHARED
    return path if path.is_dir() else None


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    """With ``RECSAE_TEST_SEED=N`` set, reseed the global torch/NumPy/``random`` state before each test
    (and the fixtures it sets up) from N and the test's id: running the suite under several N (and
    ``PYTHONHASHSEED``) finds tests that pass only by luck of the process's random state (issue #12).
    Unset (CI), the state is left alone."""
    seed = os.environ.get("RECSAE_TEST_SEED")
    if seed:
        from recsae_core.utils import seed_everything

        seed_everything((zlib.crc32(item.nodeid.encode()) + 7919 * int(seed)) % 2**31)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The real datasets folder; skips the test (with the reason) when it is absent."""
    path = shared_data_dir()
    if path is None:
        reason = "real datasets not found: set RECSAE_DATA to shared/datasets (CI does)"
        if os.environ.get("RECSAE_REQUIRE_DATA"):
            pytest.fail(reason + "; RECSAE_REQUIRE_DATA is set, so this is an error")
        pytest.skip(reason)
    os.environ["RECSAE_DATA"] = str(path)
    return path


@pytest.fixture(autouse=True)
def _isolated_home(tmp_path_factory, monkeypatch):
    """Never write into the user's real cache from tests."""
    monkeypatch.setenv("RECSAE_HOME", str(tmp_path_factory.getbasetemp() / "recsae_home"))


@pytest.fixture(scope="session")
def smoke_book(shared_data, tmp_path_factory) -> dict:
    """The real book, run once per session with the ``smoke`` profile into a temporary output folder.

    Returns ``{"output": folder, "html": folder/_build/html, "summary": run_book's summary}``; the book tests
    (tests/test_book_build.py) and the browser tests (tests/e2e/) share it.
    """
    from recsae_core import book

    out = tmp_path_factory.mktemp("smoke_book")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("RECSAE_HOME", str(tmp_path_factory.getbasetemp() / "recsae_home"))
        # two notebooks at once, as scripts/book.sh runs them (and half the wait)
        summary = book.run_book(profile="smoke", output=out, progress=False, jobs_at_once=2)
    return {"output": out, "html": summary["html"], "summary": summary}
