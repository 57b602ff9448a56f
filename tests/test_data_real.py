"""The loaders on the real files: known counts (from each dataset's README / SOURCE.md)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from recsae_core.cli import main as cli_main
from recsae_core.data.loaders import load_dataset
from recsae_core.data.splits import leave_one_out, p1_new_users, p2_temporal, p3_holdout
from recsae_core.data.stats import dataset_stats, label_frequencies

pytestmark = pytest.mark.shared


def test_ml100k_counts(shared_data):
    ds = load_dataset("ml-100k")
    assert (len(ds.interactions), ds.n_users, ds.n_items) == (100_000, 943, 1_682)
    assert ds.has_timestamps
    assert len(ds.label_names) == 19 and ds.label_names[0] == "unknown"
    freq = label_frequencies(ds).set_index("label")["items"]
    # SOURCE.md: Drama 725, Comedy 505, Action 251, Thriller 251, unknown 2.
    assert (freq["Drama"], freq["Comedy"], freq["Action"], freq["unknown"]) == (725, 505, 251, 2)
    share = label_frequencies(ds).set_index("label")["share_of_items"]
    assert share["Drama"] == pytest.approx(725 / 1682)
    assert ds.items.loc[0, "title"] == "Toy Story (1995)" and ds.items.loc[0, "year"] == 1995
    assert set(ds.users.columns) >= {"user_id", "age", "gender", "occupation"}


def test_lastfm_counts_and_labels(shared_data):
    ds = load_dataset("lastfm-2k")
    assert (len(ds.interactions), ds.n_users, ds.n_items) == (92_834, 1_892, 17_632)
    assert not ds.has_timestamps
    assert ds.interactions["rating"].sum() == 69_183_975  # total play count, SOURCE.md
    assert len(ds.label_names) == 20 and "seen live" not in ds.label_names and "80s" not in ds.label_names
    assert ds.label_names[0] == "rock"
    assert ds.item_labels.sum(1).max() <= 4  # top-4 tags per artist
    assert ds.item_labels.any(1).sum() > 5_000


def test_ml1m_full_without_timestamps(shared_data):
    st = dataset_stats("ml-1m-notime")
    assert (st["n_items_metadata"], st["n_users"], st["n_interactions"]) == (3_883, 6_040, 1_000_209)
    assert st["n_items"] == 3_706 and not st["has_timestamps"]


def test_ml1m_prefix_with_timestamps(shared_data):
    ds = load_dataset("ml-1m-prefix")
    assert (len(ds.interactions), ds.n_users) == (487_650, 2_999)
    assert ds.has_timestamps and len(ds.label_names) == 18
    # Same (user, movie, rating) as the first 487,650 rows of the full file (SOURCE.md).
    full = load_dataset("ml-1m-notime")
    a = (
        ds.users["user_id"].to_numpy()[ds.interactions["user"]],
        ds.items["item_id"].to_numpy()[ds.interactions["item"]],
    )
    b_inter = full.interactions.iloc[:487_650]
    b = full.users["user_id"].to_numpy()[b_inter["user"]], full.items["item_id"].to_numpy()[b_inter["item"]]
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])


def test_sequential_split_without_timestamps_is_refused(shared_data):
    ds = load_dataset("ml-1m-notime")
    with pytest.raises(ValueError, match="no timestamps"):
        p1_new_users(ds)


def test_real_splits(shared_data):
    ds = load_dataset("ml-100k")
    loo = leave_one_out(ds)
    assert len(loo.test) == len(loo.valid) == 943 and len(loo.train) == 100_000 - 2 * 943
    p1 = p1_new_users(ds)
    assert p1.test["user"].nunique() == round(0.1 * 943)
    assert not set(p1.train["user"]) & set(p1.extra["sae"]["user"])
    p3 = p3_holdout(ds)
    assert (p3.test.groupby("user").size() == 5).all()
    p2 = p2_temporal(ds)
    assert p2.train["timestamp"].max() < p2.valid["timestamp"].min() <= p2.test["timestamp"].min()


def test_cli_stats_json(shared_data, capsys):
    assert cli_main(["stats", "ml-100k", "--json"]) == 0
    st = json.loads(capsys.readouterr().out)
    assert st["n_interactions"] == 100_000 and st["n_users"] == 943


def test_cli_datasets_lists_all(shared_data, capsys):
    assert cli_main(["datasets"]) == 0
    out = capsys.readouterr().out
    for name in ("ml-100k", "ml-1m", "ml-1m-prefix", "ml-1m-notime", "lastfm-2k"):
        assert name in out
    assert "found:" in out


def test_real_leave_one_out_holds_out_each_users_latest_events(shared_data):
    ds = load_dataset("ml-100k")
    loo = leave_one_out(ds)
    latest = ds.interactions.groupby("user")["timestamp"].max()
    test, valid = loo.test.set_index("user"), loo.valid.set_index("user")
    assert test.index.is_unique and (test["timestamp"] == latest[test.index]).all()
    train_latest = loo.train.groupby("user")["timestamp"].max()
    assert (valid["timestamp"] <= test["timestamp"]).all()
    assert (train_latest <= valid.loc[train_latest.index, "timestamp"]).all()
    assert (latest > ds.interactions.groupby("user")["timestamp"].min()).all()  # first != last for everyone


def test_resolve_ml1m_variant(shared_data, tmp_path, monkeypatch):
    """Both cases, whatever the shared folder holds: a data folder with (empty stand-ins for) the official
    ML-1M files, and one with only the variants built from public copies."""
    from recsae_core.data.registry import get_spec, locate, resolve_variant

    assert resolve_variant("ml-100k", need_timestamps=True) == "ml-100k"
    real = "ml-1m" if locate("ml-1m")[0] is not None else "ml-1m-prefix"
    assert resolve_variant("ml-1m", need_timestamps=True) == real
    monkeypatch.setenv("RECSAE_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("RECSAE_DATA", str(tmp_path / "data"))
    folder = tmp_path / "data" / get_spec("ml-1m").folder
    folder.mkdir(parents=True)
    assert resolve_variant("ml-1m", need_timestamps=True) == "ml-1m"  # nothing here: download the official
    for name in ("ml-1m-prefix", "ml-1m-notime"):
        for f in get_spec(name).files:
            (folder / f).touch()
    assert resolve_variant("ml-1m", need_timestamps=True) == "ml-1m-prefix"
    assert resolve_variant("ml-1m") == "ml-1m-notime"
    (folder / "ratings.dat").touch()
    assert resolve_variant("ml-1m", need_timestamps=True) == "ml-1m" == resolve_variant("ml-1m")
