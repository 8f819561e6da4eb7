"""Incremental reading of append-only logs: byte offsets, partial lines, truncation, replacement.

The cost of a read is proportional to the new bytes, never to the file size.
"""

from __future__ import annotations

import fnmatch
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from capguard.events import Event, Malformed

MAX_READ = 1 << 20


class Parser(Protocol):
    def feed(self, line: bytes, offset: int) -> list[Event]: ...


class FileCursor:
    """Reads complete new lines of one file; keeps the partial last line for the next read."""

    def __init__(self, path: Path, *, from_end: bool = False):
        self.path = path
        self.offset = 0
        self._pending = b""
        self._pending_at = 0
        self._ino: tuple[int, int] | None = None
        if from_end:
            try:
                st = os.stat(path)
            except FileNotFoundError:
                return
            self.offset, self._pending_at, self._ino = st.st_size, st.st_size, (st.st_dev, st.st_ino)

    def read_new_lines(self) -> list[tuple[int, bytes]]:
        """(offset, line) for every line completed since the last call; [] if the file is missing."""
        try:
            handle = open(self.path, "rb")
        except (FileNotFoundError, IsADirectoryError, PermissionError):
            return []
        with handle:
            st = os.fstat(handle.fileno())
            ino = (st.st_dev, st.st_ino)
            if ino != self._ino or st.st_size < self.offset:
                # replaced or truncated: start again from the top (consumers dedupe by key)
                self._ino, self.offset, self._pending, self._pending_at = ino, 0, b"", 0
            lines: list[tuple[int, bytes]] = []
            handle.seek(self.offset)
            while True:
                chunk = handle.read(MAX_READ)
                if not chunk:
                    break
                self.offset += len(chunk)
                lines.extend(self._split(chunk))
            return lines

    def _split(self, chunk: bytes) -> Iterator[tuple[int, bytes]]:
        data = self._pending + chunk
        start = 0
        while True:
            end = data.find(b"\n", start)
            if end < 0:
                break
            yield self._pending_at + start, data[start:end]
            start = end + 1
        self._pending_at += start
        self._pending = data[start:]


class WholeFile:
    """A small file rewritten in place (a JSON registry): each change is read whole, as one 'line'."""

    def __init__(self, path: Path):
        self.path = path
        self._last: bytes | None = None

    def read_new_lines(self) -> list[tuple[int, bytes]]:
        try:
            data = self.path.read_bytes()
        except OSError:
            return []
        if data == self._last or not data.strip():
            return []
        self._last = data
        return [(0, data)]


@dataclass(frozen=True)
class WatchSpec:
    """A file to tail, or (with `glob`) every matching file that appears under a directory."""

    path: Path
    make_parser: Callable[[Path], Parser]
    from_end: bool = False  # skip what the file held before this run
    glob: str | None = None
    whole: bool = False  # a file rewritten in place, read whole on each change


class Tailer:
    """The cursors and parsers of one run; turns changed paths into events."""

    def __init__(self, specs: list[WatchSpec]):
        self.specs: list[WatchSpec] = []
        self._cursors: dict[Path, tuple[FileCursor | WholeFile, Parser]] = {}
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
                if found not in self._cursors:
                    self._add(found, spec, from_end=spec.from_end)

    def _add(self, path: Path, spec: WatchSpec, *, from_end: bool) -> tuple[FileCursor | WholeFile, Parser]:
        cursor = WholeFile(path) if spec.whole else FileCursor(path, from_end=from_end)
        entry = (cursor, spec.make_parser(path))
        self._cursors[path] = entry
        return entry

    def _lookup(self, path: Path) -> tuple[FileCursor, Parser] | None:
        entry = self._cursors.get(path)
        if entry is not None:
            return entry
        for spec in self.specs:
            if spec.glob and path.is_relative_to(spec.path) and fnmatch.fnmatch(path.name, spec.glob):
                return self._add(path, spec, from_end=False)  # appeared during the run: all of it is ours
        return None

    def wants(self, path: Path) -> bool:
        if path in self._cursors:
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

    @property
    def paths(self) -> list[Path]:
        return list(self._cursors)
