"""Loaders: MovieLens-100k, MovieLens-1M, HetRec Last.fm-2k and your own CSV/Parquet, into one form.

Every loader returns a :class:`~recsae_core.data.dataset.RecDataset`. Files are parsed strictly: a
malformed line raises :class:`~recsae_core.errors.DataFormatError` naming the file, the line number and the
expected format; a missing file raises :class:`~recsae_core.errors.MissingDataError` listing what is
expected and how to get it.

Last.fm labels (the rule, documented once here): tags are lower-cased and stripped; generic tags that say
nothing about the music (:data:`LASTFM_GENERIC_TAGS`: "seen live", "favorites", decades such as "80s", ...,
following P3's removal of generic tags) are dropped; the label vocabulary is the ``n_tags`` (default 20) tags
applied to the most distinct artists; each artist is labelled with its ``top_k`` (default 4, as P3 keeps the
top-4 tags per artist) vocabulary tags by number of assignments (ties: more widely used tag first).
Artists nobody tagged have no label.
"""

from __future__ import annotations

import csv
import io
import os
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from ..errors import DataFormatError, MissingDataError
from .dataset import RecDataset
from .registry import DatasetSpec, cache_home, get_spec, locate

__all__ = [
    "LASTFM_GENERIC_TAGS",
    "load_csv",
    "load_dataset",
    "load_lastfm_2k",
    "load_ml_1m",
    "load_ml_100k",
]

LASTFM_GENERIC_TAGS: frozenset[str] = frozenset(
    {
        "seen live",
        "favorites",
        "favourites",
        "favorite",
        "favourite",
        "my favorite",
        "my favourite",
        "favorite artists",
        "favourite artists",
        "favorite bands",
        "favourite bands",
        "love",
        "loved",
        "love it",
        "awesome",
        "amazing",
        "beautiful",
        "cool",
        "good",
        "great",
        "best",
        "sexy",
        "fun",
        "albums i own",
        "all",
        "music",
        "check out",
        "under 2000 listeners",
        "spotify",
        "good music",
        "male vocalists",
        "female vocalists",
        "female vocalist",
        "male vocalist",
        "female",
        "male",
        "00s",
        "10s",
        "20s",
        "30s",
        "40s",
        "50s",
        "60s",
        "70s",
        "80s",
        "90s",
        "2000s",
        "2010s",
        "1960s",
        "1970s",
        "1980s",
        "1990s",
        "oldies",
        "classic",
        "legend",
        "legends",
        "heard on pandora",
        "american",
        "british",
        "uk",
        "usa",
        "english",
        "german",
        "swedish",
        "french",
        "canadian",
        "brazilian",
        "japanese",
        "polish",
        "finnish",
        "norwegian",
        "spanish",
        "russian",
        "greek",
        "brasil",
        "brazil",
        "australian",
        "irish",
    }
)

_YEAR_IN_TITLE = re.compile(r"\((\d{4})\)\s*$")


# --------------------------------------------------------------------------------------------- parsing


def _open_bytes(path: Path, what: str) -> bytes:
    if not path.is_file():
        raise MissingDataError(f"{path}: file not found ({what})")
    return path.read_bytes()


def _read_table(
    path: Path,
    columns: Sequence[tuple[str, str]],
    *,
    sep: str,
    encoding: str = "latin-1",
    header_lines: int = 0,
    fmt: str,
    multichar_sep: str | None = None,
    extra_ok: bool = False,
) -> pd.DataFrame:
    """Parse a delimited text file strictly.

    Args:
        columns: (name, kind) with kind in {"int", "float", "str"}; one per field, in order.
        sep: single-character separator handed to pandas' C parser.
        multichar_sep: a multi-character separator in the file (``"::"``) replaced by ``sep`` first.
        fmt: human-readable line format for error messages, e.g. ``"UserID::MovieID::Rating::Timestamp"``.
        extra_ok: allow lines with more fields than ``columns`` (they are dropped), e.g. trailing separators.
    """
    raw = _open_bytes(path, fmt)
    if multichar_sep is not None:
        raw = raw.replace(multichar_sep.encode(), sep.encode())
    names = [c for c, _ in columns]
    n = len(names)
    if not extra_ok:  # fast path: typed parse; any irregularity falls through to the strict path below
        fast = _read_typed(raw, columns, sep, encoding, header_lines)
        if fast is not None:
            return fast
    _check_field_counts(raw, path, n, sep, header_lines, fmt, extra_ok)
    try:
        df = pd.read_csv(
            io.BytesIO(raw),
            sep=sep,
            header=None,
            names=names if not extra_ok else None,
            usecols=range(n) if extra_ok else None,
            skiprows=header_lines,
            dtype=str,
            encoding=encoding,
            quoting=csv.QUOTE_NONE,
            keep_default_na=False,
            skip_blank_lines=False,
            engine="c",
        )
    except pd.errors.ParserError as e:
        m = re.search(r"Expected (\d+) fields in line (\d+), saw (\d+)", str(e))
        if m:
            line = int(m.group(2)) + header_lines
            raise DataFormatError(path, line, f"{n} fields: {fmt}", f"{m.group(3)} fields") from None
        raise DataFormatError(path, None, fmt, str(e)) from None
    except UnicodeDecodeError as e:
        raise DataFormatError(path, None, f"{encoding} text: {fmt}", str(e)) from None
    except pd.errors.EmptyDataError:
        raise DataFormatError(path, None, fmt, "an empty file") from None
    if extra_ok:
        df.columns = names
    if df.shape[1] != n:
        raise DataFormatError(path, 1 + header_lines, f"{n} fields: {fmt}", f"{df.shape[1]} fields")
    # Blank lines: allowed only at the end of the file.
    blank = (df == "").all(axis=1).to_numpy() | df.isna().all(axis=1).to_numpy()
    if blank.any():
        last_real = np.flatnonzero(~blank)
        end = (last_real[-1] + 1) if len(last_real) else 0
        inner = np.flatnonzero(blank[:end])
        if len(inner):
            raise DataFormatError(path, int(inner[0]) + 1 + header_lines, fmt, "an empty line")
        df = df.iloc[:end]
    if len(df) == 0:
        raise DataFormatError(path, None, fmt, "no data rows")
    # Missing trailing fields show up as NaN.
    nan_rows = df.isna().any(axis=1).to_numpy()
    if nan_rows.any():
        i = int(np.flatnonzero(nan_rows)[0])
        raise DataFormatError(path, i + 1 + header_lines, f"{n} fields: {fmt}", sep.join(df.iloc[i].dropna()))
    out = {}
    for name, kind in columns:
        col = df[name]
        if kind == "str":
            out[name] = col
            continue
        vals = pd.to_numeric(col.str.strip(), errors="coerce")
        bad = vals.isna().to_numpy().copy()
        if kind == "int" and not bad.all():
            bad |= (vals % 1 != 0).to_numpy()
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise DataFormatError(
                path,
                i + 1 + header_lines,
                f"{fmt} with an {'integer' if kind == 'int' else 'number'} {name}",
                sep.join(df.iloc[i].astype(str)).replace(sep, " | "),
            )
        out[name] = vals.astype("int64" if kind == "int" else "float64")
    return pd.DataFrame(out)


def _check_field_counts(
    raw: bytes, path: Path, n: int, sep: str, header: int, fmt: str, extra_ok: bool
) -> None:
    """Find the first line whose number of fields is not ``n`` (blank lines only at the end)."""
    lines = raw.split(b"\n")[header:]
    while lines and not lines[-1].strip():
        lines.pop()
    s = sep.encode()
    for i, line in enumerate(lines):
        line = line.rstrip(b"\r")
        if not line.strip():
            raise DataFormatError(path, i + 1 + header, fmt, "an empty line")
        k = line.count(s) + 1
        if k < n or (k > n and not extra_ok):
            shown = line.decode("latin-1").replace(sep, " | ")
            raise DataFormatError(path, i + 1 + header, f"{n} fields: {fmt}", f"{k} fields: {shown}")


def _read_typed(
    raw: bytes, columns: Sequence[tuple[str, str]], sep: str, encoding: str, header_lines: int
) -> pd.DataFrame | None:
    """Parse with the final dtypes in one pass; ``None`` when anything is irregular (then diagnose)."""
    dtypes = {c: {"int": "int64", "float": "float64", "str": str}[k] for c, k in columns}
    try:
        df = pd.read_csv(
            io.BytesIO(raw),
            sep=sep,
            header=None,
            names=[c for c, _ in columns],
            skiprows=header_lines,
            dtype=dtypes,
            encoding=encoding,
            quoting=csv.QUOTE_NONE,
            keep_default_na=False,
            engine="c",
        )
    except (ValueError, pd.errors.ParserError, UnicodeDecodeError, pd.errors.EmptyDataError):
        return None
    if len(df) == 0 or df.isna().to_numpy().any():
        return None
    # Blank lines inside the file are skipped by pandas here; the strict path reports them.
    n_lines = raw.count(b"\n") + (0 if raw.endswith(b"\n") else 1) - header_lines
    return df if n_lines == len(df) else None


def _check_range(
    df: pd.DataFrame, col: str, lo: float, hi: float, path: Path, fmt: str, header: int = 0
) -> None:
    bad = ((df[col] < lo) | (df[col] > hi)).to_numpy()
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise DataFormatError(path, i + 1 + header, f"{fmt} with {col} in [{lo}, {hi}]", str(df[col].iloc[i]))


# ---------------------------------------------------------------------------------------- assembling


def _assemble(
    name: str,
    inter: pd.DataFrame,
    items_meta: pd.DataFrame,
    labels_meta: np.ndarray,
    label_names: list[str],
    users_meta: pd.DataFrame | None,
    meta: dict,
    src_items: Path | str,
) -> RecDataset:
    """Remap ids to 0-based indices over the items and users that occur in ``inter``.

    ``inter`` has columns user_id, item_id, rating[, timestamp] (original ids). ``items_meta`` is indexed
    by original item id (title, year) with ``labels_meta`` aligned row for row.
    """
    unknown = ~inter["item_id"].isin(items_meta.index)
    if unknown.any():
        i = int(np.flatnonzero(unknown.to_numpy())[0])
        raise DataFormatError(
            src_items,
            None,
            f"an entry for every rated item id (item {inter['item_id'].iloc[i]} is rated but "
            "has no metadata)",
        )
    item_ids = np.sort(inter["item_id"].unique())
    user_ids = np.sort(inter["user_id"].unique())
    item_idx = pd.Index(item_ids)
    user_idx = pd.Index(user_ids)
    out = pd.DataFrame(
        {
            "user": user_idx.get_indexer(inter["user_id"]).astype("int64"),
            "item": item_idx.get_indexer(inter["item_id"]).astype("int64"),
            "rating": inter["rating"].to_numpy(dtype="float32"),
        }
    )
    if "timestamp" in inter.columns:
        out["timestamp"] = inter["timestamp"].to_numpy(dtype="int64")
    pos = items_meta.index.get_indexer(item_ids)
    items = items_meta.iloc[pos].reset_index(names="item_id")
    items.index.name = "item"
    labels = labels_meta[pos].astype(bool)
    if users_meta is not None:
        users = users_meta.reindex(user_ids).reset_index(names="user_id")
    else:
        users = pd.DataFrame({"user_id": user_ids})
    users.index.name = "user"
    meta = {
        **meta,
        "n_items_metadata": len(items_meta),
        "n_users_metadata": (len(users_meta) if users_meta is not None else len(user_ids)),
    }
    return RecDataset(name, out, items, labels, label_names, users, meta)


def _movielens_year(titles: pd.Series) -> pd.Series:
    return titles.str.extract(_YEAR_IN_TITLE, expand=False).astype("Int64")


# ------------------------------------------------------------------------------------------ MovieLens


def load_ml_100k(data_dir: str | os.PathLike) -> RecDataset:
    """MovieLens-100k from ``u.data``, ``u.item``, ``u.user``, ``u.genre`` in ``data_dir``.

    Labels: the 19 genre flags of ``u.item`` (names from ``u.genre``, including "unknown"). ``year`` is the
    film's year from its title ("Return of the Jedi (1983)"), as for ML-1M; the release date, which for
    older films is often a 1990s re-release (14-Mar-1997 for that one), only fills titles without a year.
    """
    d = Path(data_dir)
    inter = _read_table(
        d / "u.data",
        [("user_id", "int"), ("item_id", "int"), ("rating", "int"), ("timestamp", "int")],
        sep="\t",
        fmt="user id <TAB> item id <TAB> rating <TAB> timestamp",
    )
    _check_range(inter, "rating", 1, 5, d / "u.data", "user id <TAB> item id <TAB> rating <TAB> timestamp")
    genre = _read_table(d / "u.genre", [("genre", "str"), ("index", "int")], sep="|", fmt="genre|index")
    genre = genre.sort_values("index")
    g = len(genre)
    cols = [("item_id", "int"), ("title", "str"), ("release", "str"), ("video", "str"), ("url", "str")]
    cols += [(f"g{i}", "int") for i in range(g)]
    item_fmt = f"movie id | title | release date | video release date | IMDb URL | {g} genre flags (0/1)"
    items = _read_table(d / "u.item", cols, sep="|", fmt=item_fmt)
    flags = items[[f"g{i}" for i in range(g)]].to_numpy()
    if not np.isin(flags, (0, 1)).all():
        i = int(np.flatnonzero(~np.isin(flags, (0, 1)).all(axis=1))[0])
        raise DataFormatError(d / "u.item", i + 1, item_fmt, "a genre flag other than 0/1")
    released = pd.to_datetime(items["release"], format="%d-%b-%Y", errors="coerce").dt.year.astype("Int64")
    year = _movielens_year(items["title"]).fillna(released)
    items_meta = pd.DataFrame(
        {"title": items["title"].to_numpy(), "year": year.array},
        index=pd.Index(items["item_id"].to_numpy(), name="item_id"),
    )
    users = _read_table(
        d / "u.user",
        [("user_id", "int"), ("age", "int"), ("gender", "str"), ("occupation", "str"), ("zip", "str")],
        sep="|",
        fmt="user id | age | gender | occupation | zip code",
    )
    users_meta = users.set_index("user_id")
    meta = {
        "source": {f: str(d / f) for f in ("u.data", "u.item", "u.user", "u.genre")},
        "rating_kind": "explicit rating 1-5",
    }
    return _assemble(
        "ml-100k", inter, items_meta, flags, genre["genre"].tolist(), users_meta, meta, d / "u.item"
    )


def _ml1m_movies(path: Path) -> tuple[pd.DataFrame, np.ndarray, list[str]]:
    fmt = "MovieID::Title::Genres (genres separated by |)"
    mv = _read_table(
        path,
        [("item_id", "int"), ("title", "str"), ("genres", "str")],
        sep="\x1f",
        multichar_sep="::",
        fmt=fmt,
    )
    dummies = mv["genres"].str.get_dummies("|")
    names = sorted(dummies.columns)
    items_meta = pd.DataFrame(
        {"title": mv["title"].to_numpy(), "year": _movielens_year(mv["title"]).array},
        index=pd.Index(mv["item_id"].to_numpy(), name="item_id"),
    )
    if items_meta.index.has_duplicates:
        dup = int(np.flatnonzero(items_meta.index.duplicated())[0])
        raise DataFormatError(path, dup + 1, fmt + " with unique MovieIDs", str(items_meta.index[dup]))
    return items_meta, dummies[names].to_numpy(bool), names


def _ml1m_users(path: Path) -> pd.DataFrame:
    users = _read_table(
        path,
        [("user_id", "int"), ("gender", "str"), ("age", "int"), ("occupation", "int"), ("zip", "str")],
        sep="\x1f",
        multichar_sep="::",
        fmt="UserID::Gender::Age::Occupation::Zip-code",
    )
    return users.set_index("user_id")


def load_ml_1m(
    data_dir: str | os.PathLike, ratings_file: str = "ratings.dat", name: str = "ml-1m"
) -> RecDataset:
    """MovieLens-1M from ``ratings.dat``, ``movies.dat`` and ``users.dat`` in ``data_dir``.

    ``ratings_file`` picks another file in the official ``UserID::MovieID::Rating::Timestamp`` format, e.g.
    ``ratings-prefix-users-1-2999.dat`` (users 1-2999 of the official file, with timestamps). Labels: the
    18 genres of ``movies.dat``. User metadata: gender, age code, occupation code, zip code.
    """
    d = Path(data_dir)
    fmt = "UserID::MovieID::Rating::Timestamp"
    inter = _read_table(
        d / ratings_file,
        [("user_id", "int"), ("item_id", "int"), ("rating", "int"), ("timestamp", "int")],
        sep="\x1f",
        multichar_sep="::",
        fmt=fmt,
    )
    _check_range(inter, "rating", 1, 5, d / ratings_file, fmt)
    items_meta, labels, names = _ml1m_movies(d / "movies.dat")
    users_meta = _ml1m_users(d / "users.dat")
    meta = {
        "source": {f: str(d / f) for f in (ratings_file, "movies.dat", "users.dat")},
        "rating_kind": "explicit rating 1-5",
    }
    return _assemble(name, inter, items_meta, labels, names, users_meta, meta, d / "movies.dat")


# -------------------------------------------------------------------------------------------- Last.fm


def load_lastfm_2k(data_dir: str | os.PathLike, n_tags: int = 20, top_k: int = 4) -> RecDataset:
    """HetRec 2011 Last.fm-2k: user-artist play counts (``rating`` = play count), labels from user tags.

    There are no listening timestamps (tag assignments have dates, listening does not), so no
    ``timestamp`` column. The label rule is in the module docstring.
    """
    d = Path(data_dir)
    ua = _read_table(
        d / "user_artists.dat",
        [("user_id", "int"), ("item_id", "int"), ("rating", "int")],
        sep="\t",
        header_lines=1,
        encoding="ascii",
        fmt="userID <TAB> artistID <TAB> weight",
    )
    _check_range(ua, "rating", 1, np.inf, d / "user_artists.dat", "userID <TAB> artistID <TAB> weight", 1)
    artists = _read_table(
        d / "artists.dat",
        [("item_id", "int"), ("name", "str"), ("url", "str"), ("picture", "str")],
        sep="\t",
        header_lines=1,
        encoding="utf-8",
        fmt="id <TAB> name <TAB> url <TAB> pictureURL",
        extra_ok=True,
    )
    tags = _read_table(
        d / "tags.dat",
        [("tag_id", "int"), ("tag", "str")],
        sep="\t",
        header_lines=1,
        fmt="tagID <TAB> tagValue",
    )
    uta = _read_table(
        d / "user_taggedartists.dat",
        [
            ("user_id", "int"),
            ("item_id", "int"),
            ("tag_id", "int"),
            ("day", "int"),
            ("month", "int"),
            ("year", "int"),
        ],
        sep="\t",
        header_lines=1,
        encoding="ascii",
        fmt="userID <TAB> artistID <TAB> tagID <TAB> day <TAB> month <TAB> year",
    )
    items_meta = pd.DataFrame(
        {
            "title": artists["name"].str.strip().to_numpy(),
            "year": pd.array([pd.NA] * len(artists), dtype="Int64"),
        },
        index=pd.Index(artists["item_id"].to_numpy(), name="item_id"),
    )
    tag_names = tags.set_index("tag_id")["tag"].str.strip().str.lower()
    uta = uta[uta["tag_id"].isin(tag_names.index) & uta["item_id"].isin(items_meta.index)]
    uta = uta.assign(tag=tag_names.reindex(uta["tag_id"]).to_numpy())
    uta = uta[~uta["tag"].isin(LASTFM_GENERIC_TAGS) & (uta["tag"] != "")]
    counts = uta.groupby(["item_id", "tag"]).size().rename("n").reset_index()
    # groupby sorts tags alphabetically; a stable sort by count keeps that order among ties
    spread = counts.groupby("tag").size().sort_values(ascending=False, kind="stable")
    vocab = spread.index[:n_tags].tolist()
    counts = counts[counts["tag"].isin(vocab)]
    counts = counts.assign(spread=spread.reindex(counts["tag"]).to_numpy())
    counts = counts.sort_values(["item_id", "n", "spread", "tag"], ascending=[True, False, False, True])
    top = counts.groupby("item_id").head(top_k)
    labels = np.zeros((len(items_meta), len(vocab)), dtype=bool)
    labels[items_meta.index.get_indexer(top["item_id"]), pd.Index(vocab).get_indexer(top["tag"])] = True
    meta = {
        "source": {
            f: str(d / f) for f in ("user_artists.dat", "artists.dat", "tags.dat", "user_taggedartists.dat")
        },
        "rating_kind": "play count",
        "label_rule": f"top-{top_k} of the {n_tags} most widely used non-generic tags per artist",
    }
    return _assemble("lastfm-2k", ua, items_meta, labels, vocab, None, meta, d / "artists.dat")


# ---------------------------------------------------------------------------------- bring your own


def _read_any(path: Path, sep: str) -> pd.DataFrame:
    if not path.is_file():
        raise MissingDataError(f"{path}: file not found")
    if path.suffix.lower() in {".parquet", ".pq"}:
        return pd.read_parquet(path)
    try:
        return pd.read_csv(path, sep=sep, keep_default_na=False, skip_blank_lines=True, low_memory=False)
    except pd.errors.ParserError as e:
        m = re.search(r"Expected (\d+) fields in line (\d+), saw (\d+)", str(e))
        if m:
            raise DataFormatError(
                path, int(m.group(2)), f"{m.group(1)} {sep!r}-separated fields", f"{m.group(3)} fields"
            ) from None
        raise DataFormatError(path, None, f"{sep!r}-separated values with a header", str(e)) from None


def _numeric_column(df: pd.DataFrame, col: str, path: Path, kind: str, header: int) -> pd.Series:
    if col not in df.columns:
        raise DataFormatError(path, 1, f"a column named {col!r} (columns present: {list(df.columns)})")
    s = df[col]
    if pd.api.types.is_integer_dtype(s.dtype) or (kind == "float" and pd.api.types.is_float_dtype(s.dtype)):
        return s.astype("int64" if kind == "int" else "float64")
    vals = pd.to_numeric(s.astype(str).str.strip(), errors="coerce")
    bad = vals.isna().to_numpy().copy()
    if kind == "int":
        bad |= ~bad & (vals.fillna(0) % 1 != 0).to_numpy()
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        line = i + 1 + header if path.suffix.lower() not in {".parquet", ".pq"} else None
        raise DataFormatError(
            path,
            line,
            f"{'an integer' if kind == 'int' else 'a number'} in column {col!r}"
            + ("" if line else f" (row {i})"),
            str(s.iloc[i]),
        )
    return vals.astype("int64" if kind == "int" else "float64")


def load_csv(
    interactions: str | os.PathLike,
    *,
    name: str = "custom",
    user_col: str = "user_id",
    item_col: str = "item_id",
    rating_col: str | None = None,
    timestamp_col: str | None = None,
    items: str | os.PathLike | None = None,
    item_id_col: str = "item_id",
    title_col: str | None = "title",
    labels_col: str | None = "labels",
    label_sep: str = "|",
    sep: str = ",",
    items_table: tuple[pd.DataFrame, np.ndarray, list[str]] | None = None,
    users_table: pd.DataFrame | None = None,
) -> RecDataset:
    """Bring your own data: interactions (and optionally item labels) from CSV or Parquet.

    Args:
        interactions: CSV (with a header row) or Parquet file of interactions.
        user_col / item_col: columns with user and item ids (integers).
        rating_col: optional rating or weight column; without it every interaction has rating 1.0.
        timestamp_col: optional integer timestamp column; sequential models need it.
        items: optional CSV/Parquet with one row per item: ``item_id_col``, ``title_col`` and ``labels_col``
            (labels joined by ``label_sep``, e.g. ``"Action|Comedy"``). Items without a row get an empty title
            and no label.
        items_table: instead of ``items``, a prepared (metadata indexed by item id with title and year,
            multi-hot labels, label names) triple — used for MovieLens-1M without timestamps.
        users_table: optional user metadata indexed by original user id.

    Example:
        >>> ds = load_csv("my_clicks.csv", user_col="uid", item_col="sku", timestamp_col="ts",
        ...               items="my_items.csv", labels_col="category")  # doctest: +SKIP
    """
    path = Path(interactions)
    df = _read_any(path, sep)
    inter = pd.DataFrame(
        {
            "user_id": _numeric_column(df, user_col, path, "int", 1).to_numpy(),
            "item_id": _numeric_column(df, item_col, path, "int", 1).to_numpy(),
            "rating": (
                _numeric_column(df, rating_col, path, "float", 1).to_numpy()
                if rating_col
                else np.ones(len(df))
            ),
        }
    )
    if timestamp_col:
        inter["timestamp"] = _numeric_column(df, timestamp_col, path, "int", 1).to_numpy()
    if items_table is not None:
        items_meta, labels, names = items_table
        src_items: Path | str = "items table"
    elif items is not None:
        ipath = Path(items)
        idf = _read_any(ipath, sep)
        ids = _numeric_column(idf, item_id_col, ipath, "int", 1)
        titles = idf[title_col].astype(str) if title_col and title_col in idf.columns else ids.astype(str)
        if labels_col and labels_col in idf.columns:
            dummies = idf[labels_col].astype(str).str.get_dummies(label_sep)
            names = sorted(dummies.columns)
            labels = dummies[names].to_numpy(bool)
        else:
            names, labels = [], np.zeros((len(idf), 0), bool)
        extra_ids = np.setdiff1d(inter["item_id"].unique(), ids.to_numpy())
        items_meta = pd.DataFrame(
            {"title": titles.to_numpy(), "year": pd.array([pd.NA] * len(ids), "Int64")},
            index=pd.Index(ids.to_numpy(), name="item_id"),
        )
        if len(extra_ids):
            items_meta = pd.concat(
                [
                    items_meta,
                    pd.DataFrame(
                        {"title": [""] * len(extra_ids), "year": pd.array([pd.NA] * len(extra_ids), "Int64")},
                        index=pd.Index(extra_ids, name="item_id"),
                    ),
                ]
            )
            labels = np.vstack([labels, np.zeros((len(extra_ids), len(names)), bool)])
        src_items = ipath
    else:
        ids = np.sort(inter["item_id"].unique())
        items_meta = pd.DataFrame(
            {"title": ids.astype(str), "year": pd.array([pd.NA] * len(ids), "Int64")},
            index=pd.Index(ids, name="item_id"),
        )
        names, labels = [], np.zeros((len(ids), 0), bool)
        src_items = path
    meta = {"source": {"interactions": str(path)}, "rating_kind": rating_col or "implicit (1.0)"}
    return _assemble(name, inter, items_meta, labels, names, users_table, meta, src_items)


# -------------------------------------------------------------------------------------------- entry


def _not_found_message(spec: DatasetSpec, how: str, what_happened: str) -> str:
    """Where ``spec``'s files were looked for, what each place lacked, and how to fix it."""
    cache_folder = cache_home() / "datasets" / spec.folder
    fix = (
        f"To fix it: set RECSAE_DATA to a folder that holds {spec.folder}/ with these files, or put them in "
        f"{cache_folder}/"
        + (f", or run `recsae fetch {spec.name}` on a machine with internet ({spec.url})" if spec.url else "")
        + "."
    )
    also = (
        " On this data directory, MovieLens-1M is available as 'ml-1m-prefix' (timestamped, users 1-2999) and "
        "'ml-1m-notime' (all ratings, no timestamps)."
        if spec.name == "ml-1m"
        else ""
    )
    return (
        f"dataset {spec.name!r} ({spec.title}) not found. Looked in: {how}. Expected files: "
        f"{', '.join(spec.files)}. Then {what_happened}. {fix}{also}"
    )


def load_dataset(
    name: str, data_dir: str | os.PathLike | None = None, *, download: bool = True, progress: bool = True
) -> RecDataset:
    """Load a registered dataset by name (``recsae datasets`` lists them).

    Files are taken from ``data_dir`` if given, else ``$RECSAE_DATA/<folder>``, else the user cache; if
    none holds them and the dataset has an official archive, it is downloaded (``download=True``) and checked.
    """
    from .download import DownloadError, fetch_dataset

    spec = get_spec(name)
    folder, how = locate(name, data_dir)
    if folder is None:
        if download and spec.url is not None and data_dir is None:
            try:
                folder = fetch_dataset(spec, progress=progress)
            except DownloadError as e:
                raise MissingDataError(_not_found_message(spec, how, f"downloading it failed: {e}")) from e
        else:
            hint = (
                "downloading is switched off (download=False)"
                if spec.url and data_dir is None
                else "an explicit data_dir is not searched further and nothing is downloaded"
                if spec.url
                else "this variant cannot be downloaded: it is built from other public copies "
                "(see shared/datasets SOURCE.md)"
            )
            raise MissingDataError(_not_found_message(spec, how, hint))
    if name == "ml-100k":
        return load_ml_100k(folder)
    if name == "ml-1m":
        return load_ml_1m(folder)
    if name == "ml-1m-prefix":
        return load_ml_1m(folder, ratings_file="ratings-prefix-users-1-2999.dat", name="ml-1m-prefix")
    if name == "ml-1m-notime":
        return load_csv(
            folder / "ratings-without-timestamps.csv",
            name="ml-1m-notime",
            rating_col="rating",
            items_table=_ml1m_movies(folder / "movies.dat"),
            users_table=_ml1m_users(folder / "users.dat"),
        )
    if name == "lastfm-2k":
        return load_lastfm_2k(folder)
    raise KeyError(name)  # pragma: no cover - registry and loaders are kept in step by tests
