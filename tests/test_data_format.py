"""Strict parsing: bad input names the file, the line and the expected format; BYO data; splits."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from recsae_core.data.dataset import RecDataset
from recsae_core.data.loaders import load_csv, load_dataset, load_ml_1m, load_ml_100k
from recsae_core.data.splits import leave_one_out, p1_new_users, p2_temporal, p3_holdout
from recsae_core.errors import DataFormatError, MissingDataError

GENRES = "unknown|0\nAction|1\nComedy|2\n"


def write_ml100k(d: Path, data: str) -> Path:
    d.mkdir(parents=True, exist_ok=True)
    (d / "u.data").write_text(data)
    (d / "u.genre").write_text(GENRES)
    (d / "u.item").write_text(
        "1|Toy Story (1995)|01-Jan-1995||http://x|0|0|1\n"
        "2|GoldenEye (1995)|01-Jan-1995||http://x|0|1|0\n"
        "3|Four Rooms (1995)|||http://x|0|0|1\n"
    )
    (d / "u.user").write_text("1|24|M|technician|85711\n2|53|F|other|94043\n")
    return d


GOOD = "1\t1\t5\t100\n1\t2\t3\t200\n2\t3\t4\t150\n2\t1\t2\t160\n"


def test_ml100k_small_file_loads(tmp_path):
    ds = load_ml_100k(write_ml100k(tmp_path, GOOD))
    assert (ds.n_users, ds.n_items, len(ds.interactions)) == (2, 3, 4)
    assert ds.label_names == ["unknown", "Action", "Comedy"]
    assert ds.item_labels.tolist() == [[False, False, True], [False, True, False], [False, False, True]]
    assert ds.items["year"].tolist() == [1995, 1995, 1995]  # third from the title
    assert ds.interactions["timestamp"].tolist() == [100, 200, 150, 160]


@pytest.mark.parametrize(
    ("data", "line", "what"),
    [
        ("1\t1\t5\t100\n1\t2\t3\n", 2, "4 fields"),  # missing field
        ("1\t1\t5\t100\n1\t2\t3\t200\t9\n", 2, "4 fields"),  # extra field
        ("1\t1\t5\t100\n1\tx\t3\t200\n", 2, "integer item_id"),  # not a number
        ("1\t1\t5\t100\n\n1\t2\t3\t200\n", 2, "empty line"),  # blank line inside
        ("1\t1\t5\t100\n1\t2\t7\t200\n", 2, "rating in"),  # out of range
        ("1\t1\t5\t100\n1\t2\t3.5\t200\n", 2, "integer rating"),  # fractional rating
    ],
)
def test_ml100k_bad_line_names_file_and_line(tmp_path, data, line, what):
    d = write_ml100k(tmp_path, data)
    with pytest.raises(DataFormatError) as err:
        load_ml_100k(d)
    msg = str(err.value)
    assert str(d / "u.data") in msg and f"line {line}" in msg and what in msg
    assert err.value.line == line


def test_trailing_blank_lines_are_fine(tmp_path):
    ds = load_ml_100k(write_ml100k(tmp_path, GOOD + "\n\n"))
    assert len(ds.interactions) == 4


def test_missing_file_says_what_is_expected(tmp_path, monkeypatch):
    monkeypatch.delenv("RECSAE_DATA", raising=False)
    with pytest.raises(MissingDataError) as err:
        load_dataset("ml-100k", data_dir=tmp_path)
    msg = str(err.value)
    assert "u.data" in msg and "RECSAE_DATA" in msg and "recsae fetch ml-100k" in msg


def test_ml1m_missing_ratings_points_to_variants(tmp_path, monkeypatch):
    (tmp_path / "movielens-1m").mkdir()
    monkeypatch.setenv("RECSAE_DATA", str(tmp_path))
    with pytest.raises(MissingDataError, match="ml-1m-prefix"):
        load_dataset("ml-1m", download=False)


def test_ml1m_format_and_unknown_movie(tmp_path):
    (tmp_path / "movies.dat").write_bytes(
        "1::Am\xe9lie (2001)::Comedy|Romance\n2::Heat (1995)::Action\n".encode("latin-1")
    )
    (tmp_path / "users.dat").write_text("1::F::1::10::48067\n2::M::56::16::70072\n")
    (tmp_path / "ratings.dat").write_text("1::1::5::978300760\n2::2::3::978302109\n1::2::4::978301968\n")
    ds = load_ml_1m(tmp_path)
    assert ds.items["title"].tolist() == ["Am\xe9lie (2001)", "Heat (1995)"]
    assert ds.label_names == ["Action", "Comedy", "Romance"]
    assert ds.users["gender"].tolist() == ["F", "M"]
    (tmp_path / "ratings.dat").write_text("1::1::5::978300760\n2::9::3::978302109\n")
    with pytest.raises(DataFormatError, match="item 9 is rated but has no metadata"):
        load_ml_1m(tmp_path)
    (tmp_path / "ratings.dat").write_text("1::1::5::978300760\n2::2::3\n")
    with pytest.raises(DataFormatError, match=r"ratings.dat, line 2: expected 4 fields: UserID::MovieID"):
        load_ml_1m(tmp_path)


def test_byo_csv_with_labels_and_errors(tmp_path):
    (tmp_path / "clicks.csv").write_text("uid,sku,ts\n10,100,5\n10,200,6\n11,100,7\n")
    (tmp_path / "items.csv").write_text("item_id,title,labels\n100,Apple,fruit|red\n200,Kale,veg\n")
    ds = load_csv(
        tmp_path / "clicks.csv",
        user_col="uid",
        item_col="sku",
        timestamp_col="ts",
        items=tmp_path / "items.csv",
        name="shop",
    )
    assert (ds.n_users, ds.n_items) == (2, 2) and ds.has_timestamps
    assert ds.label_names == ["fruit", "red", "veg"]
    assert ds.item_labels.tolist() == [[True, True, False], [False, False, True]]
    assert ds.interactions["rating"].tolist() == [1.0, 1.0, 1.0]
    no_ts = load_csv(tmp_path / "clicks.csv", user_col="uid", item_col="sku")
    with pytest.raises(ValueError, match="no timestamps"):
        no_ts.require_timestamps("SASRec")
    (tmp_path / "bad.csv").write_text("uid,sku\n10,100\n10,abc\n")
    with pytest.raises(DataFormatError, match=r"bad.csv, line 3: expected an integer in column 'sku'"):
        load_csv(tmp_path / "bad.csv", user_col="uid", item_col="sku")
    with pytest.raises(DataFormatError, match="a column named 'user_id'"):
        load_csv(tmp_path / "bad.csv")


def test_byo_parquet(tmp_path):
    pd.DataFrame({"user_id": [1, 1, 2], "item_id": [5, 6, 5], "rating": [1.0, 2.0, 3.0]}).to_parquet(
        tmp_path / "x.parquet"
    )
    ds = load_csv(tmp_path / "x.parquet", rating_col="rating")
    assert ds.interactions["rating"].tolist() == [1.0, 2.0, 3.0]


# ---------------------------------------------------------------------------------------------- splits


def synthetic(
    n_users: int = 50,
    n_items: int = 30,
    per_user: int = 12,
    seed: int = 0,
    ts: bool = True,
    spread_days: int = 115,
) -> RecDataset:
    rng = np.random.default_rng(seed)
    rows = []
    for u in range(n_users):
        items = rng.choice(n_items, per_user, replace=False)
        start = rng.integers(0, 86400 * spread_days)
        for j, i in enumerate(items):
            rows.append((u, i, 1.0, start + 86400 * j))
    inter = pd.DataFrame(rows, columns=["user", "item", "rating", "timestamp"])
    if not ts:
        inter = inter.drop(columns="timestamp")
    items = pd.DataFrame(
        {
            "item_id": range(n_items),
            "title": [f"i{i}" for i in range(n_items)],
            "year": pd.array([pd.NA] * n_items, "Int64"),
        }
    )
    users = pd.DataFrame({"user_id": range(n_users)})
    return RecDataset("syn", inter, items, np.zeros((n_items, 0), bool), [], users)


def test_leave_one_out_by_time_and_random():
    ds = synthetic()
    s = leave_one_out(ds)
    last = ds.interactions.sort_values("timestamp").groupby("user").tail(1).set_index("user")["item"]
    assert s.test.set_index("user")["item"].sort_index().equals(last.sort_index())
    assert (
        s.valid["timestamp"].to_numpy()
        < s.test.set_index("user").loc[s.valid["user"], "timestamp"].to_numpy()
    ).all()
    assert len(s.train) + len(s.valid) + len(s.test) == len(ds.interactions)
    assert leave_one_out(ds, seed=3).test.equals(s.test)  # by time: the seed does not matter
    r1, r2 = leave_one_out(synthetic(ts=False), seed=1), leave_one_out(synthetic(ts=False), seed=1)
    assert r1.test.equals(r2.test) and not r1.test.equals(leave_one_out(synthetic(ts=False), seed=2).test)
    hist = s.history_for("test")
    assert len(hist) == len(s.train) + len(s.valid)


def test_p1_split_is_disjoint_and_deterministic():
    ds = synthetic(n_users=100)
    a, b = p1_new_users(ds), p1_new_users(ds)
    assert a.test.equals(b.test) and a.train.equals(b.train)
    test_users = set(a.test["user"])
    assert len(test_users) == 10
    first = ds.interactions.groupby("user")["timestamp"].min()
    assert first.loc[list(test_users)].min() >= first.drop(index=list(test_users)).max()
    assert not (set(a.train["user"]) & set(a.extra["sae"]["user"])) and not (
        test_users & set(a.train["user"])
    )
    assert set(a.extra["sae"]["item"]) <= set(a.train["item"])  # cold items dropped
    assert set(a.history_for("valid")["user"]) == set(a.valid["user"])


def test_p3_holdout_counts():
    ds = synthetic()
    s = p3_holdout(ds)
    assert (s.test.groupby("user").size() == 5).all() and (s.valid.groupby("user").size() == 1).all()
    key = ["user", "item"]
    assert not pd.merge(s.train[key], s.test[key]).shape[0]
    assert len(s.train) + len(s.valid) + len(s.test) == len(ds.interactions)


def test_p2_temporal_order():
    s = p2_temporal(synthetic(spread_days=3))
    assert len(s.valid) and len(s.test)
    assert s.train["timestamp"].max() < s.valid["timestamp"].min()
    assert s.valid["timestamp"].max() < s.test["timestamp"].min()
    assert set(s.test["item"]) <= set(s.train["item"])


def test_ml100k_year_is_the_films_year_from_the_title(tmp_path):
    """u.item's release date of an old film is often a re-release (Return of the Jedi: 14-Mar-1997); the
    film's year is the one in its title (as ML-1M and P2's item text use); the date fills a title without."""
    d = write_ml100k(tmp_path, GOOD)
    (d / "u.item").write_text(
        "1|Return of the Jedi (1983)|14-Mar-1997||http://x|0|1|0\n"
        "2|Untitled|01-Jan-1994||http://x|1|0|0\n"
        "3|Four Rooms (1995)|||http://x|0|0|1\n"
    )
    ds = load_ml_100k(d)
    assert ds.items["year"].tolist() == [1983, 1994, 1995]
