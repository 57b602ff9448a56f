"""Errors with messages a user can act on: which file, which line, what was expected."""

from __future__ import annotations

__all__ = ["ChecksumError", "DataFormatError", "MissingDataError", "RecsaeError"]


class RecsaeError(Exception):
    """Base class of recsae's own errors."""


class DataFormatError(RecsaeError, ValueError):
    """A data file does not have the expected format.

    The message names the file, the 1-based line number and the expected format.
    """

    def __init__(self, path: object, line: int | None, expected: str, got: str | None = None) -> None:
        where = f"{path}" if line is None else f"{path}, line {line}"
        msg = f"{where}: expected {expected}"
        if got is not None:
            msg += f"; got {got!r}"
        super().__init__(msg)
        self.path, self.line, self.expected, self.got = path, line, expected, got


class MissingDataError(RecsaeError, FileNotFoundError):
    """A dataset's files are not where they were looked for; the message says what is expected and how to get it."""


class ChecksumError(RecsaeError):
    """A downloaded archive's sha256 does not match the registry."""
