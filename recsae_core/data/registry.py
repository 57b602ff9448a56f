"""Known datasets: where their files live, where the official archives come from, how to check them.

Where a dataset's files are looked for, in order (:func:`locate`):

1. an explicit ``data_dir`` (the folder holding the files themselves);
2. ``$RECSAE_DATA/<folder>`` (folder names as in ``shared/datasets``: ``movielens-100k``, ``movielens-1m``,
   ``hetrec2011-lastfm-2k``);
3. the user cache, ``$RECSAE_HOME/datasets/<folder>`` (default ``~/.cache/recsae/datasets``), where
   :func:`recsae_core.data.download.fetch_dataset` unpacks the official archive after checking it.

Checksums: every file the loaders read is checked against the sha256 recorded here when it is unpacked
from a downloaded archive (these digests were computed from copies that match the official files byte for
byte, see each folder's SOURCE.md). The archives' own digests are third-party records (MD5 from other
loaders); they are checked too where known.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from ..utils import file_digest

__all__ = ["DATASETS", "DatasetSpec", "cache_home", "get_spec", "locate", "resolve_variant"]


@dataclass(frozen=True)
class DatasetSpec:
    """One known dataset (or a named variant of one).

    Attributes:
        name: registry name used everywhere (CLI, chapters, papermill parameters).
        title: human-readable name.
        folder: folder name under ``$RECSAE_DATA`` and the cache.
        files: file name → digest of the official file: a sha256 hex string, or ``"git:<sha1>"`` for a git
            blob SHA-1 where only that is recorded (ML-1M ratings.dat), or ``None``. These are the files the
            loader reads; all must be present.
        url: the official archive; ``None`` when the variant cannot be downloaded (built from other copies).
        archive_member_prefix: folder inside the archive that holds ``files`` (e.g. ``"ml-100k/"``).
        archive_sha256 / archive_md5: digests of the archive itself, when recorded.
        timestamps: whether interactions carry timestamps (sequential models need them).
        description: what the variant is, shown by ``recsae datasets``.
        licence: the short form of the terms of use.
    """

    name: str
    title: str
    folder: str
    files: dict[str, str | None]
    url: str | None
    archive_member_prefix: str = ""
    archive_sha256: str | None = None
    archive_md5: str | None = None
    timestamps: bool = True
    description: str = ""
    licence: str = ""
    extra: dict = field(default_factory=dict)


_GROUPLENS_TERMS = "GroupLens: research use only, no redistribution; cite Harper & Konstan 2015"

DATASETS: dict[str, DatasetSpec] = {
    "ml-100k": DatasetSpec(
        name="ml-100k",
        title="MovieLens-100k",
        folder="movielens-100k",
        files={
            "u.data": "06416e597f82b7342361e41163890c81036900f418ad91315590814211dca490",
            "u.item": "553841ebc7de3a0fd0d6b62a204ea30c1e651aacfb2814c7a6584ac52f2c5701",
            "u.user": "f120e114da2e8cf314fd28f99417c94ae9ddf1cb6db8ce0e4b5995d40e90e62c",
            "u.genre": "9757e0d3e6b298159a80dd48eaf938114690e911e39af97a76949ef1663610bb",
        },
        url="https://files.grouplens.org/datasets/movielens/ml-100k.zip",
        archive_member_prefix="ml-100k/",
        archive_md5="0e33842e24a9c977be4e0107933c0723",
        description="100,000 ratings (1-5) of 1,682 movies by 943 users, 1997-98, with timestamps; 19 genres.",
        licence=_GROUPLENS_TERMS,
    ),
    "ml-1m": DatasetSpec(
        name="ml-1m",
        title="MovieLens-1M",
        folder="movielens-1m",
        files={
            "ratings.dat": "git:77a7c4b150f588c23bb9e1f068aa996c0b413695",
            "movies.dat": "0140fc2356357c1a851d0f52e893a1e4d3696df632c4141cea8d5bc3d621f0b9",
            "users.dat": "1dc3a95300cb19f7c10e027daf29b8cdf1d908dab65b5edfb45950aa389a10a3",
        },
        url="https://files.grouplens.org/datasets/movielens/ml-1m.zip",
        archive_member_prefix="ml-1m/",
        archive_md5="c4d9eecfca2ab87c1945afe126590906",
        description="1,000,209 ratings of 3,706 movies by 6,040 users, 2000-03, with timestamps; 18 genres.",
        licence=_GROUPLENS_TERMS,
    ),
    "ml-1m-prefix": DatasetSpec(
        name="ml-1m-prefix",
        title="MovieLens-1M, users 1-2999 (timestamped prefix)",
        folder="movielens-1m",
        files={
            "ratings-prefix-users-1-2999.dat": "1273c4edfe3c0ff9e3a0a0d55819faeb947da0ad7df3927333b51ebefbeedc3d",
            "movies.dat": "0140fc2356357c1a851d0f52e893a1e4d3696df632c4141cea8d5bc3d621f0b9",
            "users.dat": "1dc3a95300cb19f7c10e027daf29b8cdf1d908dab65b5edfb45950aa389a10a3",
        },
        url=None,
        description="The official ratings.dat cut after user 2,999: 487,650 ratings with timestamps "
        "(read by the ML-1M loader given this ratings file). For sequential models when the official file "
        "is not at hand.",
        licence=_GROUPLENS_TERMS,
    ),
    "ml-1m-notime": DatasetSpec(
        name="ml-1m-notime",
        title="MovieLens-1M, all ratings without timestamps",
        folder="movielens-1m",
        files={
            "ratings-without-timestamps.csv": "a805623dc78ac6e35d01ded0010176b961149d97f712aae0968f60f6aeaa6d24",
            "movies.dat": "0140fc2356357c1a851d0f52e893a1e4d3696df632c4141cea8d5bc3d621f0b9",
            "users.dat": "1dc3a95300cb19f7c10e027daf29b8cdf1d908dab65b5edfb45950aa389a10a3",
        },
        url=None,
        timestamps=False,
        description="All 1,000,209 ML-1M ratings without timestamps (read through the bring-your-own-CSV "
        "path). For non-sequential models only.",
        licence=_GROUPLENS_TERMS,
    ),
    "lastfm-2k": DatasetSpec(
        name="lastfm-2k",
        title="HetRec 2011 Last.fm-2k",
        folder="hetrec2011-lastfm-2k",
        files={
            "user_artists.dat": "001400dc3c7d2667fca6e4ea6dc6acc31a9dd28ad5cd0f74cea988c019934d3b",
            "artists.dat": "c173881362c6b28551368fecb3c0be5a6a30a6cd859e1f5775413dfe46d48648",
            "tags.dat": "e95175f259be4c0c47644ae23d66131cd6d5767142a1405000e79f5584691d70",
            "user_taggedartists.dat": "d31fe938fcfeed6f0059f37a36b156f63674d073fc2553e5cc9dc1595e365bc7",
        },
        url="https://files.grouplens.org/datasets/hetrec2011/hetrec2011-lastfm-2k.zip",
        archive_sha256="6738f48195667ff03caaab4d32ca9a3133d8cc026b7c3cdaf6ce1010e913c59c",
        timestamps=False,
        description="92,834 user-artist play counts of 1,892 users over 17,632 artists (no listening "
        "timestamps); labels from users' tags.",
        licence="HetRec 2011 / Last.fm: non-commercial use; cite Last.fm and the HetRec'11 workshop",
    ),
}


def digest_matches(path: str | os.PathLike, digest: str | None) -> tuple[bool, str]:
    """Check a file against a registry digest; returns (ok, the digest computed), reading in chunks."""
    if digest is None:
        return True, ""
    if not digest.startswith("git:"):
        got = file_digest(path)
        return got == digest, got
    got = file_digest(path, "sha1", prefix=b"blob %d\0" % os.path.getsize(path))  # git's blob id
    return got == digest[4:], "git:" + got


def get_spec(name: str) -> DatasetSpec:
    """The registry entry for ``name``, or a ``KeyError`` listing the known names."""
    try:
        return DATASETS[name]
    except KeyError:
        raise KeyError(f"unknown dataset {name!r}; known datasets: {', '.join(DATASETS)}") from None


def cache_home() -> Path:
    """``$RECSAE_HOME`` or ``~/.cache/recsae``."""
    return Path(os.environ.get("RECSAE_HOME") or Path.home() / ".cache" / "recsae")


def candidate_dirs(spec: DatasetSpec, data_dir: str | os.PathLike | None = None) -> list[tuple[str, Path]]:
    """Where ``spec``'s files are looked for, in order, as (how, folder) pairs."""
    out: list[tuple[str, Path]] = []
    if data_dir is not None:
        out.append(("explicit path", Path(data_dir)))
        return out
    env = os.environ.get("RECSAE_DATA")
    if env:
        out.append(("$RECSAE_DATA", Path(env) / spec.folder))
    out.append(("user cache", cache_home() / "datasets" / spec.folder))
    return out


def missing_files(spec: DatasetSpec, folder: Path) -> list[str]:
    """The files of ``spec`` that ``folder`` lacks."""
    return [f for f in spec.files if not (folder / f).is_file()]


def locate(name: str, data_dir: str | os.PathLike | None = None) -> tuple[Path | None, str]:
    """Find the folder holding ``name``'s files.

    Returns ``(folder, how)``; ``folder`` is ``None`` when no candidate holds all files, and ``how`` then
    describes where each candidate was looked for and what it lacked.
    """
    spec = get_spec(name)
    notes = []
    for how, folder in candidate_dirs(spec, data_dir):
        lacking = missing_files(spec, folder)
        if not lacking:
            return folder, how
        if folder.is_dir():
            notes.append(f"{how} {folder} lacks {', '.join(lacking)}")
        else:
            notes.append(f"{how} {folder} does not exist")
    return None, "; ".join(notes)


def resolve_variant(name: str, *, need_timestamps: bool = False) -> str:
    """The dataset name to load for ``name`` on this machine.

    ``"ml-1m"`` means the official MovieLens-1M. Where its ``ratings.dat`` is not at hand but the variants
    built from public copies are (as in the project's shared data directory), this returns
    ``"ml-1m-prefix"`` when timestamps are needed (sequential models) and ``"ml-1m-notime"`` otherwise.
    Other names are returned unchanged. When nothing is found locally, ``name`` is returned (and will be
    downloaded).
    """
    get_spec(name)
    if name != "ml-1m" or locate(name)[0] is not None:
        return name
    alt = "ml-1m-prefix" if need_timestamps else "ml-1m-notime"
    return alt if locate(alt)[0] is not None else name
