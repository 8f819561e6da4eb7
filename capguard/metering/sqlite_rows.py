"""Reading an agent's SQLite store while the agent writes it: a new kind of metered source next to tail.py's files.

The store is opened read-only (`mode=ro`: no lock beyond a reader's, no write, no checkpoint, so the agent is never
disturbed); each read runs the agent's queries in one read transaction, and hands out only rows that changed since
they were last handed out (a row rewritten in place is handed out again, as a new line). A store in WAL mode grows
its `-wal` file on each commit: the watcher wakes on it (`companions`), and `PRAGMA data_version` skips a read when
no other connection committed since the last one.

Fail closed: a store that exists but cannot be opened or read (not a database, permissions, a schema the queries do
not know) sets `problem`; a busy or half-migrated store does so only if it stays that way for `PATIENCE` seconds.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

PATIENCE = 5.0  # seconds a store may stay locked (or without its tables, while created) before capguard is blind
TRANSIENT = ("locked", "busy", "no such table")
COMPANIONS = ("-wal",)  # files whose change means the store changed (`-shm` changes on reads too: not watched)

Rows = Callable[[sqlite3.Connection], Iterable[tuple[str, dict[str, Any]]]]


def connect_ro(path: Path) -> sqlite3.Connection:
    """A read-only connection that never writes the store (the agent owns it); autocommit, explicit transactions."""
    from urllib.parse import quote

    conn = sqlite3.connect(f"file:{quote(str(path))}?mode=ro", uri=True, isolation_level=None, timeout=0.2)
    conn.execute("PRAGMA query_only = 1")
    return conn


def still_setting_up(path: Path) -> bool:
    """Whether the file is a SQLite database its writer has not switched to WAL mode yet (empty, or its header's read
    and write versions are not 2): a reader's lock then could fail the writer's setup. Anything else, a database
    in WAL mode or a file that is no database at all, is opened (and the latter found out)."""
    with open(path, "rb") as handle:
        header = handle.read(20)
    magic = b"SQLite format 3\x00"
    if len(header) < 20:
        return magic.startswith(header[: len(magic)])
    return header.startswith(magic) and not header[18] == header[19] == 2


def read_rows(conn: sqlite3.Connection, rows: Rows) -> list[tuple[str, dict[str, Any]]]:
    """The rows `rows` selects, in one read transaction (a consistent snapshot of the store)."""
    conn.execute("BEGIN")
    try:
        return list(rows(conn))
    finally:
        conn.execute("COMMIT")


class SqliteRows:
    """A cursor over a store: `read_new_lines()` gives (n, JSON line) for each row that is new or changed."""

    def __init__(self, path: Path, rows: Rows, *, clock: Callable[[], float] = time.monotonic):
        self.path = path
        self.problem: str | None = None
        self._rows = rows
        self._clock = clock
        self._conn: sqlite3.Connection | None = None
        self._ino: tuple[int, int] | None = None
        self._version: int | None = None
        self._seen: dict[tuple[str, str], bytes] = {}
        self._n = 0
        self._troubled_since: float | None = None

    def read_new_lines(self) -> list[tuple[int, bytes]]:
        try:
            lines = self._read()
        except sqlite3.Error as err:
            self._close()
            self._trouble(err)
            return []
        except OSError as err:
            self._close()
            self.problem = f"cannot read {self.path}: {err.strerror or err}"
            return []
        self.problem, self._troubled_since = None, None
        return lines

    def _trouble(self, err: sqlite3.Error) -> None:
        text = str(err)
        if any(word in text for word in TRANSIENT):
            now = self._clock()
            self._troubled_since = self._troubled_since if self._troubled_since is not None else now
            if now - self._troubled_since < PATIENCE:
                return
        self.problem = f"cannot read {self.path}: {text}"

    def _read(self) -> list[tuple[int, bytes]]:
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            self._close()
            return []  # not created yet: nothing written, nothing spent through it
        if self._conn is None or (st.st_dev, st.st_ino) != self._ino:
            self._close()
            if still_setting_up(self.path):
                # being created: a reader's lock now could fail the agent's own setup ("database is locked", seen
                # with OpenCode's first start); waited for as for a locked store, then fail closed
                raise sqlite3.OperationalError("database is busy: not in WAL mode yet")
            self._conn, self._ino = connect_ro(self.path), (st.st_dev, st.st_ino)
        version = self._conn.execute("PRAGMA data_version").fetchone()[0]
        if version == self._version:
            return []
        lines: list[tuple[int, bytes]] = []
        for table, row in read_rows(self._conn, self._rows):
            line = json.dumps({"table": table, "row": row}, separators=(",", ":"), default=str).encode()
            key = (table, str(row.get("id")))
            digest = hashlib.blake2b(line, digest_size=16).digest()
            if self._seen.get(key) == digest:
                continue
            self._seen[key] = digest
            self._n += 1
            lines.append((self._n, line))
        self._version = version  # only once read in full: a failed read is tried again
        return lines

    def _close(self) -> None:
        if self._conn is not None:
            self._conn.close()
        self._conn, self._ino, self._version = None, None, None

    def close(self) -> None:
        self._close()
