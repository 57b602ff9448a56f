"""Small shared helpers: seeding, devices, atomic writes, hashing."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import random
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

__all__ = [
    "atomic_path",
    "atomic_write_bytes",
    "atomic_write_json",
    "file_digest",
    "resolve_device",
    "seed_everything",
    "sources_sha256",
    "stable_hash",
    "torch_threads",
]


@contextlib.contextmanager
def torch_threads(n: int | None) -> Iterator[None]:
    """Run the block with ``n`` torch intra-op threads, restored afterwards (``None``: unchanged)."""
    if n is None:
        yield
        return
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"the thread count must be a positive int or None, got {n!r}")
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def seed_everything(seed: int) -> torch.Generator:
    """Seed Python, NumPy and torch; return a CPU ``torch.Generator`` seeded the same way."""
    random.seed(seed)
    np.random.seed(seed % 2**32)  # noqa: NPY002 - seeds legacy global-state users (third-party code)
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


def resolve_device(device: str | torch.device | None = None) -> torch.device:
    """``None``/``"cpu"`` → CPU; ``"cuda"`` → the GPU, with a clear error when none is present."""
    if device is None:
        return torch.device("cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(
            f"device={str(device)!r} was asked for, but torch sees no CUDA GPU on this machine"
        )
    return dev


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; rename it over ``path`` only if the block succeeds.

    A failure (or an interrupt) removes the temporary file, so a partial output never replaces a good one.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".partial", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def atomic_write_json(path: str | os.PathLike, obj: Any) -> None:
    """Write ``obj`` as indented, key-sorted JSON to ``path`` atomically."""
    atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n").encode())


def stable_hash(obj: Any, length: int = 16) -> str:
    """A short sha256 hex digest of ``obj``'s canonical JSON form (dataclasses via ``__dict__``)."""

    def default(o: Any) -> Any:
        if hasattr(o, "__dataclass_fields__"):
            return {k: getattr(o, k) for k in o.__dataclass_fields__}
        if isinstance(o, Path):
            return str(o)
        if isinstance(o, np.generic):
            return o.item()
        return repr(o)

    blob = json.dumps(obj, sort_keys=True, default=default).encode()
    return hashlib.sha256(blob).hexdigest()[:length]


def file_digest(
    path: str | os.PathLike, algorithm: str = "sha256", *, prefix: bytes = b"", chunk: int = 1 << 20
) -> str:
    """Hex digest (``hashlib`` algorithm name) of ``prefix`` followed by a file's bytes, read in chunks.

    ``prefix`` serves digests that hash a header first, e.g. git's blob id:
    ``file_digest(p, "sha1", prefix=b"blob %d\\0" % size)``.
    """
    h = hashlib.new(algorithm, prefix)
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def sources_sha256(root: Path, paths: Iterable[Path]) -> str:
    """sha256 over source files: each file's path relative to ``root`` and its bytes, in the order given."""
    h = hashlib.sha256()
    for path in paths:
        h.update(path.relative_to(root).as_posix().encode() + b"\0" + path.read_bytes() + b"\0")
    return h.hexdigest()
