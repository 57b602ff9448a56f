"""The runner's default datasets on a machine without the shared data directory."""

from __future__ import annotations

from recsae_core.book import _substitute_unavailable

ALL = ["ml-100k", "lastfm-2k", "ml-1m-notime", "ml-1m-prefix", "ml-1m"]


def test_offline_variants_become_the_official_file_when_absent(tmp_path, monkeypatch):
    monkeypatch.setenv("RECSAE_DATA", str(tmp_path))  # an empty data directory
    names = ["ml-100k", "lastfm-2k", "ml-1m-notime", "ml-1m-prefix"]
    assert _substitute_unavailable(names, ALL) == ["ml-100k", "lastfm-2k", "ml-1m"]
    # a chapter that does not accept ml-1m keeps its list (and fails with the loader's clear message)
    assert _substitute_unavailable(names, names) == names


def test_variants_are_kept_where_present(shared_data):
    names = ["ml-100k", "ml-1m-notime", "ml-1m-prefix"]
    assert _substitute_unavailable(names, ALL) == names
