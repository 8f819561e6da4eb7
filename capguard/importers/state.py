"""How far each file was imported into each ledger: a JSON file in the data directory.

A file seen with the same inode, size and mtime is skipped unread; a grown one is read from its offset (when the
bytes before the offset are unchanged); anything else is read again from the start, which the dedupe keys make
harmless. State is kept per ledger *instance* (its location plus when it was created), so a new ledger at the
same path starts from scratch.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Protocol

import msgspec

from capguard import paths
from capguard.private_files import private_dir, write_private

VERSION = 1
CHECK_BYTES = 256  # bytes before the offset that must be unchanged for reading on from it


class FileStat(Protocol):
    """What an import reads of a file's stat: an `os.stat_result`, or the listing's own (`claude.Listed`)."""

    @property
    def st_size(self) -> int: ...
    @property
    def st_mtime_ns(self) -> int: ...
    @property
    def st_ino(self) -> int: ...
    @property
    def st_mtime(self) -> float: ...


class FileMark(msgspec.Struct, frozen=True):
    """What was imported of one file: up to `offset` (the end of its last complete line)."""

    size: int
    mtime_ns: int
    inode: int
    offset: int
    check: str  # digest of the `CHECK_BYTES` before `offset`
    run_id: str | None = None


class _Doc(msgspec.Struct):
    """The state file: each ledger instance's marks, decoded straight into `FileMark`s (a re-import of 8,000
    unchanged files reads them all)."""

    version: int = VERSION
    ledgers: dict[str, dict[str, FileMark]] = msgspec.field(default_factory=dict)


def default_path() -> Path:
    return paths.data_home() / "import-state.json"


def digest(chunk: bytes) -> str:
    return hashlib.blake2b(chunk[-CHECK_BYTES:], digest_size=12).hexdigest()


def digest_before(path: str | os.PathLike, offset: int) -> str:
    """Digest of the bytes just before `offset` ('' if the file cannot be read)."""
    start = max(0, offset - CHECK_BYTES)
    try:
        with open(path, "rb") as handle:
            handle.seek(start)
            chunk = handle.read(offset - start)
    except OSError:
        return ""
    return digest(chunk)


class ImportState:
    """The marks of one ledger instance; `save()` writes them back atomically."""

    def __init__(self, path: Path, ledger_identity: str) -> None:
        self.path = path
        self.ledger = ledger_identity
        self._doc = self._load()
        self.files: dict[str, FileMark] = dict(self._doc.ledgers.get(ledger_identity, {}))

    def _load(self) -> _Doc:
        """The state file; an empty one when it is missing, of another version, or not what it should be (the
        files are then read again, which the dedupe keys make harmless)."""
        try:
            doc = msgspec.json.decode(self.path.read_bytes(), type=_Doc)  # a few MB for 10k files
            if doc.version == VERSION:
                return doc
        except (OSError, ValueError):  # msgspec's DecodeError and ValidationError are ValueErrors
            pass
        return _Doc()

    def start_offset(self, path: str, stat: FileStat) -> int | None:
        """None: unchanged since the last import, nothing to read. Otherwise the offset to read on from."""
        mark = self.files.get(path)
        if mark is None:
            return 0
        if (mark.inode, mark.size, mark.mtime_ns) == (stat.st_ino, stat.st_size, stat.st_mtime_ns):
            return None
        if mark.inode != stat.st_ino or stat.st_size < mark.offset:
            return 0  # replaced or truncated: read it all again
        return mark.offset if digest_before(path, mark.offset) == mark.check else 0

    def mark(self, path: str, stat: FileStat, offset: int, run_id: str | None, check: str | None = None) -> None:
        """`check`: the digest of the bytes before `offset`, when the reader has them at hand."""
        check = check if check is not None else digest_before(path, offset)
        self.files[path] = FileMark(stat.st_size, stat.st_mtime_ns, stat.st_ino, offset, check, run_id)

    def save(self) -> None:
        self._doc = self._load()  # another import may have saved other ledgers meanwhile
        self._doc.ledgers[self.ledger] = dict(sorted(self.files.items()))
        if self.path.parent == paths.data_home():
            private_dir(self.path.parent)
        else:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        write_private(self.path, msgspec.json.encode(self._doc))  # 0600: which files of the user were imported


def read_new_lines(path: Path, state: ImportState) -> tuple[bytes, int, os.stat_result] | None:
    """The file's complete lines from where the last import left off (None: unchanged or unreadable), that offset
    and the file's stat. A last line without its newline is left for the next import: the agent may be writing it."""
    try:
        stat = path.stat()
        start = state.start_offset(str(path), stat)
        if start is None:
            return None
        with open(path, "rb") as handle:
            handle.seek(start)
            data = handle.read(stat.st_size - start)
    except OSError:
        return None
    return data[: data.rfind(b"\n") + 1], start, stat


def new_counts(files: list[Path]) -> dict[str, Any]:
    """The summary figures every file import returns, before any file is read."""
    return {
        "files_found": len(files),
        "files_read": 0,
        "files_unchanged": 0,
        "bytes_read": 0,
        "malformed_lines": 0,
        "suspicious_replies": 0,
        "errors": [],
    }


def each_new_read(
    files: list[Path],
    state: ImportState,
    counts: dict[str, Any],
    on_progress: Callable[[int, int, int], None] | None = None,
) -> Iterator[tuple[Path, bytes, int, os.stat_result]]:
    """(file, its new complete lines, their offset, its stat) for each file that grew since the last import, counted
    in `counts` (`new_counts`); progress is told once the caller is done with a file."""
    total = sum(_size(path) for path in files)
    for index, path in enumerate(files):
        read = read_new_lines(path, state)
        if read is None:
            counts["files_unchanged"] += 1
            continue
        data, start, stat = read
        counts["files_read"] += 1
        counts["bytes_read"] += len(data)
        yield path, data, start, stat
        if on_progress:
            on_progress(index + 1, counts["bytes_read"], total)


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0
