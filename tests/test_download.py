"""The download path, for real, against an HTTP server on 127.0.0.1 serving an archive built here."""

from __future__ import annotations

import dataclasses
import hashlib
import http.server
import io
import threading
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from recsae_core.data import registry
from recsae_core.data.download import DownloadError, fetch_dataset
from recsae_core.data.loaders import load_dataset
from recsae_core.errors import ChecksumError, MissingDataError

FILES = {
    "u.data": b"1\t1\t5\t100\n1\t2\t3\t200\n2\t1\t4\t150\n",
    "u.genre": b"unknown|0\nAction|1\n",
    "u.item": b"1|A (1995)|01-Jan-1995||u|0|1\n2|B (1996)|01-Jan-1996||u|1|0\n",
    "u.user": b"1|24|M|technician|85711\n2|53|F|other|94043\n",
}


def make_zip() -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, data in FILES.items():
            zf.writestr(f"ml-100k/{name}", data)
    return buf.getvalue()


ARCHIVE = make_zip()


class Handler(http.server.BaseHTTPRequestHandler):
    def log_message(self, *args) -> None:  # keep pytest output clean
        pass

    def do_GET(self) -> None:
        if self.path == "/ok.zip":
            self.send_response(200)
            self.send_header("Content-Length", str(len(ARCHIVE)))
            self.end_headers()
            self.wfile.write(ARCHIVE)
        elif self.path == "/cut.zip":  # promise the whole archive, send half, hang up
            self.send_response(200)
            self.send_header("Content-Length", str(len(ARCHIVE)))
            self.end_headers()
            self.wfile.write(ARCHIVE[: len(ARCHIVE) // 2])
            self.wfile.flush()
            self.close_connection = True
        else:
            self.send_error(404)


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    t = threading.Thread(target=httpd.serve_forever, daemon=True)
    t.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()


def spec(**kw) -> registry.DatasetSpec:
    base = dataclasses.replace(
        registry.DATASETS["ml-100k"],
        files={k: hashlib.sha256(v).hexdigest() for k, v in FILES.items()},
        archive_md5=None,
        archive_sha256=hashlib.sha256(ARCHIVE).hexdigest(),
    )
    return dataclasses.replace(base, **kw)


def leftovers(root: Path) -> list[str]:
    return sorted(p.name for p in root.iterdir()) if root.exists() else []


def test_fetch_unpacks_and_checks(server, tmp_path):
    folder = fetch_dataset(spec(), root=tmp_path, url=f"{server}/ok.zip", progress=False)
    assert folder == tmp_path / "movielens-100k"
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == FILES
    assert leftovers(tmp_path) == ["movielens-100k"]  # no archive, no partial file


def test_load_dataset_downloads_into_cache_when_missing(server, tmp_path, monkeypatch):
    monkeypatch.delenv("RECSAE_DATA", raising=False)
    monkeypatch.setenv("RECSAE_HOME", str(tmp_path))
    monkeypatch.setitem(registry.DATASETS, "ml-100k", spec(url=f"{server}/ok.zip"))
    ds = load_dataset("ml-100k", progress=False)
    assert (ds.n_users, ds.n_items, len(ds.interactions)) == (2, 2, 3)
    assert (tmp_path / "datasets" / "movielens-100k" / "u.data").is_file()


def test_archive_checksum_mismatch_leaves_nothing(server, tmp_path):
    with pytest.raises(ChecksumError, match="sha256"):
        fetch_dataset(spec(archive_sha256="0" * 64), root=tmp_path, url=f"{server}/ok.zip", progress=False)
    assert leftovers(tmp_path) == []


def test_file_checksum_mismatch_leaves_nothing(server, tmp_path):
    bad = spec(files={**spec().files, "u.data": "f" * 64})
    with pytest.raises(ChecksumError, match=r"u\.data"):
        fetch_dataset(bad, root=tmp_path, url=f"{server}/ok.zip", progress=False)
    assert leftovers(tmp_path) == []


def test_interrupted_transfer_leaves_no_partial_file(server, tmp_path):
    with pytest.raises(DownloadError, match="interrupted"):
        fetch_dataset(spec(), root=tmp_path, url=f"{server}/cut.zip", progress=False)
    assert leftovers(tmp_path) == []


def test_http_error_is_clear(server, tmp_path):
    with pytest.raises(DownloadError, match="HTTP 404"):
        fetch_dataset(spec(), root=tmp_path, url=f"{server}/missing.zip", progress=False)
    assert leftovers(tmp_path) == []


def test_registry_digests_match_real_files(shared_data):
    """The recorded sha256 of every file the loaders read matches the copies in the data directory."""
    for name, s in registry.DATASETS.items():
        folder, _ = registry.locate(name)
        if folder is None:
            continue
        for fname, digest in s.files.items():
            ok, got = registry.digest_matches(folder / fname, digest)
            assert ok, f"{name}/{fname}: {got} != {digest}"


def test_partial_data_folder_and_no_network_say_how_to_fix(tmp_path, monkeypatch):
    """A $RECSAE_DATA folder lacking a file, no network: the error names the folder, the file, the other
    places it looked, and how to fix it (not only the archive's address)."""
    data = tmp_path / "data"
    folder = data / "movielens-100k"
    folder.mkdir(parents=True)
    for name, content in FILES.items():
        if name != "u.item":
            (folder / name).write_bytes(content)
    monkeypatch.setenv("RECSAE_DATA", str(data))
    monkeypatch.setenv("RECSAE_HOME", str(tmp_path / "home"))
    # nothing listens on this port: the download fails at once, as without network
    monkeypatch.setitem(registry.DATASETS, "ml-100k", spec(url="http://127.0.0.1:9/ml-100k.zip"))
    with pytest.raises(MissingDataError) as err:
        load_dataset("ml-100k", progress=False)
    msg = str(err.value)
    assert f"{folder} lacks u.item" in msg
    assert str(tmp_path / "home" / "datasets" / "movielens-100k") in msg  # where else it looked / can go
    assert "set RECSAE_DATA to a folder that holds movielens-100k/" in msg
    assert "downloading it failed" in msg and "127.0.0.1:9" in msg


def test_no_data_anywhere_and_no_network_say_how_to_fix(tmp_path, monkeypatch):
    monkeypatch.delenv("RECSAE_DATA", raising=False)
    monkeypatch.setenv("RECSAE_HOME", str(tmp_path))
    monkeypatch.setitem(registry.DATASETS, "ml-100k", spec(url="http://127.0.0.1:9/ml-100k.zip"))
    with pytest.raises(MissingDataError) as err:
        load_dataset("ml-100k", progress=False)
    msg = str(err.value)
    assert "does not exist" in msg and "RECSAE_DATA" in msg
    assert str(tmp_path / "datasets" / "movielens-100k") in msg
