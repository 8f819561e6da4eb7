"""Incremental reading of append-only logs: byte offsets, partial lines, truncation, replacement.

The cost of a read is proportional to the new bytes, never to the file size; every line is handed out once.
"""

from __future__ import annotations

import errno
import fnmatch
import hashlib
import os
import stat
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from capguard.core.events import Event, Malformed
from capguard.metering.sqlite_rows import COMPANIONS, Rows, SqliteRows

MAX_READ = 1 << 20
MARK = 4096  # bytes before the offset that must be unchanged for the file to be the one we read


class Parser(Protocol):
    def feed(self, line: bytes, offset: int) -> list[Event]: ...


class LineIds:
    """Which lines were handed out: a line is its bytes and how many identical lines precede it in the file.

    After a truncation or a replacement the file is read again from the top (a new generation): a line that
    was already handed out is dropped, a new one counts. Two byte-identical lines in one generation are two
    lines; a line identical to one of an earlier generation, at the same rank, is taken as the same line
    (aider's and Claude's lines carry times, totals and ids, so distinct replies do not repeat byte for byte).
    """

    def __init__(self) -> None:
        self._seen: set[tuple[bytes, int]] = set()
        self._rank: dict[bytes, int] = {}

    def new_generation(self) -> None:
        self._rank.clear()

    def first_time(self, line: bytes) -> bool:
        digest = hashlib.blake2b(line, digest_size=16).digest()
        rank = self._rank[digest] = self._rank.get(digest, 0) + 1
        if (digest, rank) in self._seen:
            return False
        self._seen.add((digest, rank))
        return True


def _cannot_read(path: Path, err: OSError) -> str:
    return f"cannot read {path}: {err.strerror or err}"


class FileCursor:
    """Reads complete new lines of one file; keeps the partial last line for the next read.

    The file stays open between reads (as `tail -F` keeps it): what the agent wrote before the file was
    renamed or deleted is still read from the old inode before the new file at the path is followed.
    A file truncated, or rewritten in place to the same length or longer, is noticed by the bytes just
    before the offset (`MARK` of them) changing; it is then read again from the top, and `LineIds` drops
    the lines already handed out. `problem` says why a file that exists cannot be read (capguard is blind).
    """

    def __init__(self, path: Path, *, from_end: bool = False, end_at: int | None = None):
        """`from_end`: skip what the file holds now, or its first `end_at` bytes (a size taken earlier)."""
        self.path = path
        self.offset = 0
        self.problem: str | None = None
        self._fd: int | None = None
        self._ino: tuple[int, int] | None = None
        self._pending = b""
        self._pending_at = 0
        self._mark = b""
        self._ids = LineIds()
        if from_end or end_at is not None:
            try:
                if self._open():
                    size = os.fstat(self._opened()).st_size
                    # a file shorter now than its size taken earlier was rewritten: read it all
                    self.offset = self._pending_at = size if end_at is None else end_at if end_at <= size else 0
                    self._mark = self._pread(self.offset - min(MARK, self.offset), min(MARK, self.offset))
            except OSError as err:
                self.problem = _cannot_read(path, err)

    def read_new_lines(self) -> list[tuple[int, bytes]]:
        """(offset, line) for every line completed since the last call, each once; [] if the file is missing."""
        try:
            lines = self._drain() if self._fd is not None else []
            if self._path_id() != self._ino:
                lines += self._drain() if self._fd is not None else []  # what was written before the switch
                self._close()
                if self._open():
                    lines += self._drain()
            self.problem = None
        except OSError as err:  # EACCES, EIO, a directory or a FIFO in its place: capguard is blind to it
            self.problem = _cannot_read(self.path, err)
            return []
        return lines

    def close(self) -> None:
        self._close()

    def _path_id(self) -> tuple[int, int] | None:
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return None
        return st.st_dev, st.st_ino

    def _open(self) -> bool:
        try:
            # non-blocking: a FIFO put in the file's place must not hang the loop
            fd = os.open(self.path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        except FileNotFoundError:
            return False
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            os.close(fd)
            raise OSError(errno.EINVAL, "not a regular file")
        self._fd, self._ino = fd, (st.st_dev, st.st_ino)
        self._restart()
        return True

    def _close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
        self._fd = self._ino = None

    def _opened(self) -> int:
        """The open file's descriptor (reads come only after `_open` succeeded)."""
        if self._fd is None:
            raise OSError(errno.EBADF, "not open")
        return self._fd

    def _restart(self) -> None:
        """A new generation of the file: read from the top; lines already handed out are dropped."""
        self.offset, self._pending, self._pending_at, self._mark = 0, b"", 0, b""
        self._ids.new_generation()

    def _pread(self, at: int, size: int) -> bytes:
        return os.pread(self._opened(), size, at) if size > 0 else b""

    def _drain(self) -> list[tuple[int, bytes]]:
        size = os.fstat(self._opened()).st_size
        if size < self.offset or self._pread(self.offset - len(self._mark), len(self._mark)) != self._mark:
            self._restart()  # truncated, or rewritten in place
        lines: list[tuple[int, bytes]] = []
        while True:
            chunk = self._pread(self.offset, MAX_READ)
            if not chunk:
                break
            self.offset += len(chunk)
            self._mark = (self._mark + chunk)[-MARK:]
            lines.extend(self._split(chunk))
        return lines

    def _split(self, chunk: bytes) -> Iterator[tuple[int, bytes]]:
        data = self._pending + chunk
        start = 0
        while True:
            end = data.find(b"\n", start)
            if end < 0:
                break
            if self._ids.first_time(data[start:end]):
                yield self._pending_at + start, data[start:end]
            start = end + 1
        self._pending_at += start
        self._pending = data[start:]


class WholeFile:
    """A small file rewritten in place (a JSON registry): each change is read whole, as one 'line'."""

    problem = None  # a registry capguard cannot read is only a hint lost, never spend

    def __init__(self, path: Path):
        self.path = path
        self._last: bytes | None = None

    def close(self) -> None:
        pass

    def read_new_lines(self) -> list[tuple[int, bytes]]:
        try:
            data = self.path.read_bytes()
        except OSError:
            return []
        if data == self._last or not data.strip():
            return []
        self._last = data
        return [(0, data)]


Cursor = FileCursor | WholeFile | SqliteRows


@dataclass(frozen=True)
class WatchSpec:
    """A file to tail, or (with `glob`) every matching file that appears under a directory."""

    path: Path
    make_parser: Callable[[Path], Parser]
    from_end: bool = False  # skip what the file held before this run
    glob: str | None = None
    whole: bool = False  # a file rewritten in place, read whole on each change
    # with `glob` and `from_end`: the files already there are only measured (a stat, no descriptor) and followed
    # from that size once they change, so a tree of thousands of old files costs no open files
    dormant: bool = False
    rows: Rows | None = None  # `path` is a SQLite store: these rows of it, each handed out when new or changed


class Tailer:
    """The cursors and parsers of one run; turns changed paths into events."""

    def __init__(self, specs: list[WatchSpec]):
        self.specs: list[WatchSpec] = []
        self._cursors: dict[Path, tuple[Cursor, Parser]] = {}
        self._dormant: dict[Path, tuple[int, int, int]] = {}  # (size, inode, mtime_ns) of untouched old files
        self._aliases: dict[Path, Path] = {}  # a store's -wal file -> the store
        for spec in specs:
            self.add(spec)

    def add(self, spec: WatchSpec) -> None:
        """Follow one more file (or directory of files); files it already follows are left alone."""
        self.specs.append(spec)
        if spec.glob is None:
            if spec.path not in self._cursors:
                self._add(spec.path, spec, from_end=spec.from_end)
        else:
            for found in sorted(spec.path.rglob(spec.glob)) if spec.path.is_dir() else []:
                if found in self._cursors or found in self._dormant:
                    continue
                if spec.dormant and spec.from_end:
                    try:
                        st = found.stat()
                    except OSError:
                        continue  # gone meanwhile: if it comes back, it is new
                    self._dormant[found] = (st.st_size, st.st_ino, st.st_mtime_ns)
                else:
                    self._add(found, spec, from_end=spec.from_end)

    def _add(self, path: Path, spec: WatchSpec, *, from_end: bool, end_at: int | None = None) -> tuple[Cursor, Parser]:
        cursor: Cursor
        if spec.rows is not None:
            cursor = SqliteRows(path, spec.rows)
            self._aliases.update((path.with_name(path.name + suffix), path) for suffix in COMPANIONS)
        else:
            cursor = WholeFile(path) if spec.whole else FileCursor(path, from_end=from_end, end_at=end_at)
        entry = (cursor, spec.make_parser(path))
        self._cursors[path] = entry
        return entry

    def _lookup(self, path: Path) -> tuple[Cursor, Parser] | None:
        entry = self._cursors.get(self._aliases.get(path, path))
        if entry is not None:
            return entry
        for spec in self.specs:
            if spec.glob and path.is_relative_to(spec.path) and fnmatch.fnmatch(path.name, spec.glob):
                if path in self._dormant:
                    return self._wake(path, spec)
                return self._add(path, spec, from_end=False)  # appeared during the run: all of it is ours
        return None

    def _wake(self, path: Path, spec: WatchSpec) -> tuple[Cursor, Parser] | None:
        """An old file of a dormant spec: followed from its size at start once it changed (None: unchanged)."""
        size, inode, mtime = self._dormant[path]
        try:
            st = path.stat()
        except OSError:
            return None  # gone: nothing to read (a new file at the path is read whole once it appears)
        if (st.st_size, st.st_ino, st.st_mtime_ns) == (size, inode, mtime):
            return None
        del self._dormant[path]
        if st.st_ino != inode:
            return self._add(path, spec, from_end=False)  # replaced since the start: all of it is new
        return self._add(path, spec, from_end=True, end_at=size)

    def wants(self, path: Path) -> bool:
        if path in self._cursors or path in self._aliases:
            return True
        return any(s.glob and path.is_relative_to(s.path) and fnmatch.fnmatch(path.name, s.glob) for s in self.specs)

    def read(self, path: Path) -> list[Event]:
        entry = self._lookup(path)
        if entry is None:
            return []
        cursor, parser = entry
        events: list[Event] = []
        for offset, line in cursor.read_new_lines():
            try:
                events.extend(parser.feed(line, offset))
            except Exception as err:  # a line no parser foresaw: that line is malformed, the run goes on counting
                events.append(Malformed(str(cursor.path), offset, f"{type(err).__name__}: {err}"[:160]))
        return events

    def read_all(self) -> list[Event]:
        """The safety-net sweep: every known file, plus files a missed event would have announced."""
        for spec in self.specs:
            if spec.glob and spec.path.is_dir():
                for found in spec.path.rglob(spec.glob):
                    self._lookup(found)
        events: list[Event] = []
        for path in list(self._cursors):
            events.extend(self.read(path))
        return events

    def problem(self) -> str | None:
        """Why a followed file that exists cannot be read (after the last read of it), if one cannot."""
        return next((cursor.problem for cursor, _ in self._cursors.values() if cursor.problem), None)

    def close(self) -> None:
        for cursor, _ in self._cursors.values():
            cursor.close()

    @property
    def paths(self) -> list[Path]:
        return list(self._cursors)
