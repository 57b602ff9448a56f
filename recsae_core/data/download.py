"""Fetch a dataset's official archive into the user cache, checked, atomically.

Nothing partial ever survives: the archive streams into a ``*.partial`` file that is renamed only after
its length and digest check out; the files are unpacked into a temporary folder that is renamed into place
only after each file's sha256 matches the registry.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
import urllib.error
import urllib.request
import zipfile
from pathlib import Path

from tqdm.auto import tqdm

from ..errors import ChecksumError, RecsaeError
from ..utils import atomic_path
from .registry import DatasetSpec, cache_home, digest_matches, get_spec, missing_files

__all__ = ["DownloadError", "download_file", "fetch_dataset"]


class DownloadError(RecsaeError):
    """A transfer failed or was cut short."""


def download_file(
    url: str,
    dest: str | os.PathLike,
    *,
    sha256: str | None = None,
    md5: str | None = None,
    progress: bool = True,
    timeout: float = 60.0,
) -> Path:
    """Stream ``url`` to ``dest``, checking length and digests; ``dest`` appears only when all is well.

    Raises:
        DownloadError: the server failed or the transfer ended before ``Content-Length`` bytes arrived.
        ChecksumError: the bytes do not match ``sha256`` / ``md5``.
    """
    dest = Path(dest)
    h256, h5 = hashlib.sha256(), hashlib.md5()
    with atomic_path(dest) as tmp:
        try:
            with urllib.request.urlopen(url, timeout=timeout) as resp:
                total = resp.headers.get("Content-Length")
                total = int(total) if total is not None else None
                got = 0
                with (
                    open(tmp, "wb") as out,
                    tqdm(
                        total=total,
                        unit="B",
                        unit_scale=True,
                        desc=f"download {dest.name}",
                        disable=not progress,
                    ) as bar,
                ):
                    while True:
                        try:
                            chunk = resp.read(1 << 16)
                        except (OSError, urllib.error.URLError) as e:  # connection reset mid-body
                            raise DownloadError(f"{url}: transfer interrupted after {got} bytes ({e})") from e
                        if not chunk:
                            break
                        out.write(chunk)
                        h256.update(chunk)
                        h5.update(chunk)
                        got += len(chunk)
                        bar.update(len(chunk))
        except urllib.error.HTTPError as e:
            raise DownloadError(f"{url}: server answered HTTP {e.code} {e.reason}") from e
        except urllib.error.URLError as e:
            raise DownloadError(f"{url}: cannot connect ({e.reason})") from e
        except TimeoutError as e:
            raise DownloadError(f"{url}: timed out") from e
        if total is not None and got != total:
            raise DownloadError(f"{url}: transfer interrupted: got {got} of {total} bytes")
        if sha256 is not None and h256.hexdigest() != sha256:
            raise ChecksumError(f"{url}: sha256 {h256.hexdigest()} does not match the expected {sha256}")
        if md5 is not None and h5.hexdigest() != md5:
            raise ChecksumError(f"{url}: md5 {h5.hexdigest()} does not match the expected {md5}")
    return dest


def fetch_dataset(
    name: str | DatasetSpec,
    *,
    root: str | os.PathLike | None = None,
    progress: bool = True,
    url: str | None = None,
) -> Path:
    """Download and unpack ``name``'s official archive into ``root/<folder>`` (default: the user cache).

    ``url`` overrides the registry's address (tests use a local server). Returns the folder holding the
    dataset's files. Each unpacked file is checked against its recorded sha256.
    """
    spec = get_spec(name) if isinstance(name, str) else name
    if spec.url is None and url is None:
        raise RecsaeError(
            f"dataset {spec.name!r} has no official archive to download ({spec.description}); "
            f"put its files ({', '.join(spec.files)}) in $RECSAE_DATA/{spec.folder} or pass data_dir"
        )
    root = Path(root) if root is not None else cache_home() / "datasets"
    target = root / spec.folder
    if target.is_dir() and not missing_files(spec, target):
        return target
    root.mkdir(parents=True, exist_ok=True)
    archive = root / f".{spec.name}.zip"
    download_file(
        url or spec.url, archive, sha256=spec.archive_sha256, md5=spec.archive_md5, progress=progress
    )
    staging = Path(tempfile.mkdtemp(prefix=f".{spec.folder}.", suffix=".partial", dir=root))
    try:
        try:
            zf = zipfile.ZipFile(archive)
        except zipfile.BadZipFile as e:
            raise DownloadError(f"{archive}: not a zip archive ({e})") from e
        with zf:
            names = set(zf.namelist())
            for fname, digest in spec.files.items():
                member = spec.archive_member_prefix + fname
                if member not in names:
                    raise DownloadError(f"{url or spec.url}: archive lacks {member}")
                with zf.open(member) as src, open(staging / fname, "wb") as dst:
                    shutil.copyfileobj(src, dst, 1 << 20)
                ok, got = digest_matches(staging / fname, digest)
                if not ok:
                    raise ChecksumError(
                        f"{member} in {url or spec.url}: digest {got} does not match {digest}"
                    )
        if target.exists():  # a folder with some files missing: replace it whole
            shutil.rmtree(target)
        os.replace(staging, target)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
        archive.unlink(missing_ok=True)
    return target
