"""The SQLite ledger engine: WAL, a busy timeout and BEGIN IMMEDIATE, so many capguard processes can write at once.

Every sqlite3 or OS error leaves here as a one-line LedgerError naming the file and the fix.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from capguard.core.errors import LedgerError
from capguard.ledger.backend import IntegrityViolation, Params, one_line
from capguard.paths import data_home
from capguard.private_files import private_dir, private_file

PAGE_SIZE = 16384

# Name prefix of the sqlite error code -> (what is wrong with the file, what to do). Python < 3.11 has no
# `sqlite_errorname`, so `_kind` falls back to the message, which SQLite fixes per code.
_PROBLEMS = {
    "SQLITE_NOTADB": (
        "is not a SQLite database",
        "move it aside and start a new ledger (capguard ledger init), or use another ledger path",
    ),
    "SQLITE_CORRUPT": (
        "is corrupted",
        "restore it from a backup, or move it aside and start a new ledger (capguard ledger init)",
    ),
    "SQLITE_READONLY": ("is read-only", "make the file and its folder writable for this user"),
    "SQLITE_CANTOPEN": ("cannot be opened", "check that the file and its folder exist and are writable"),
    "SQLITE_BUSY": ("stayed locked by another process", "retry later (`fuser` on the file shows who holds it)"),
    "SQLITE_FULL": ("cannot grow because the disk is full", "free some disk space"),
    "SQLITE_IOERR": ("could not be read or written", "check the disk and the file's permissions"),
    "SQLITE_PERM": ("is not accessible", "check the file's permissions"),
}
_BY_MESSAGE = {
    "file is not a database": "SQLITE_NOTADB",
    "malformed": "SQLITE_CORRUPT",
    "readonly": "SQLITE_READONLY",
    "unable to open": "SQLITE_CANTOPEN",
    "locked": "SQLITE_BUSY",
    "disk is full": "SQLITE_FULL",
    "disk i/o error": "SQLITE_IOERR",
}


def _kind(exc: sqlite3.Error) -> str | None:
    name = getattr(exc, "sqlite_errorname", None) or ""
    for prefix in _PROBLEMS:
        if name == prefix or name.startswith(prefix + "_"):
            return prefix
    text = str(exc).lower()
    return next((code for needle, code in _BY_MESSAGE.items() if needle in text), None)


def describe(exc: sqlite3.Error, path: str) -> str:
    """One sentence: the file, what is wrong with it, SQLite's words, the fix."""
    problem, fix = _PROBLEMS.get(_kind(exc) or "", ("cannot be used", "check the file and its folder"))
    return f"ledger {path} {problem} ({one_line(exc)}); {fix}"


def prepare_path(path: Path) -> None:
    """Create the ledger's folder (capguard's data dir: 0700) and the file as 0600; refuse a folder standing where
    the file should be. SQLite gives its -wal and -shm files the database file's mode."""
    if path.is_dir():
        raise LedgerError(f"ledger {path} is a directory, not a file; remove it or use another ledger path")
    try:
        if path.parent == data_home():
            private_dir(path.parent)
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        reason = "a file is in the way" if isinstance(exc, (FileExistsError, NotADirectoryError)) else exc.strerror
        raise LedgerError(
            f"cannot create the ledger's folder {path.parent} ({reason or exc}); create it or use another ledger path"
        ) from exc
    with contextlib.suppress(OSError):  # a folder we cannot write: SQLite's own open says so, in one line
        for file in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
            if file is path or file.exists():
                private_file(file)


class _Executor:
    dialect = "sqlite"

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn

    def execute(self, sql: str, params: Params = ()) -> int:
        return self._conn.execute(sql, tuple(params)).rowcount

    def query(self, sql: str, params: Params = ()) -> list[dict[str, Any]]:
        return [dict(row) for row in self._conn.execute(sql, tuple(params))]


class SqliteBackend:
    dialect = "sqlite"

    def __init__(
        self,
        path: Path,
        *,
        busy_timeout_s: float = 30.0,
        connect: Callable[..., sqlite3.Connection] = sqlite3.connect,
    ) -> None:
        self.path_or_url = str(path)
        self._memory = self.path_or_url == ":memory:"
        self.identity = self.path_or_url if self._memory else os.path.realpath(path)
        self._inode: tuple[int, int] | None = None
        if not self._memory:
            prepare_path(path)
        with self._translated():
            # isolation_level=None: no implicit transactions; we BEGIN ourselves, so DDL in a migration rolls back.
            # check_same_thread=False: a supervised run's ledger thread uses it, never at the same time as another.
            self._conn = connect(
                self.path_or_url, timeout=busy_timeout_s, isolation_level=None, check_same_thread=False
            )
        self._conn.row_factory = sqlite3.Row
        self._executor = _Executor(self._conn)
        try:
            with self._translated():
                self._configure(busy_timeout_s)
                if not self._memory:
                    info = os.stat(self.path_or_url)
                    self._inode = (info.st_dev, info.st_ino)
        except BaseException:
            self._conn.close()
            raise

    def _check_in_place(self) -> None:
        """The file we opened is still the one at the path. SQLite goes on writing to a deleted (or replaced) file
        through its open descriptor, and every such commit would be lost with the last close: say so instead."""
        if self._inode is None:
            return
        fix = (
            "restore it from a backup (the run's usage stays in its spool), or start a new ledger: capguard ledger init"
        )
        try:
            info = os.stat(self.path_or_url)
        except FileNotFoundError:
            raise LedgerError(f"ledger {self.path_or_url} was deleted while capguard had it open; {fix}") from None
        except OSError as exc:
            raise LedgerError(
                f"ledger {self.path_or_url} cannot be used ({exc.strerror or exc}); check the file and its folder"
            ) from exc
        if (info.st_dev, info.st_ino) != self._inode:
            raise LedgerError(
                f"ledger {self.path_or_url} was replaced by another file while capguard had it open; {fix}"
            )

    def _configure(self, busy_timeout_s: float) -> None:
        conn = self._conn
        conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout_s * 1000)}")
        # A new ledger only (an existing file keeps its size): usage rows are about 400 bytes with four indexes;
        # 16 KiB pages take a quarter of the WAL frames and page-cache entries per row that 4 KiB pages do,
        # about a quarter less CPU for an import's inserts.
        conn.execute(f"PRAGMA page_size = {PAGE_SIZE}")
        conn.execute("PRAGMA foreign_keys = ON")
        # journal_mode is stored in the file; switching needs an exclusive lock, so only ask when not yet WAL.
        if not self._memory and conn.execute("PRAGMA journal_mode").fetchone()[0].lower() != "wal":
            self._switch_to_wal(busy_timeout_s)
        # FULL: in WAL mode NORMAL may lose the last commits on power loss; spend must survive a machine crash.
        conn.execute("PRAGMA synchronous = FULL")

    def _switch_to_wal(self, busy_timeout_s: float) -> None:
        """`PRAGMA journal_mode = WAL`, retried: when several processes create the ledger at once, SQLite may refuse
        the switch at once ("database is locked") instead of waiting, to avoid a deadlock between them."""
        deadline = time.monotonic() + busy_timeout_s
        while True:
            try:
                self._conn.execute("PRAGMA journal_mode = WAL")
                return
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) or time.monotonic() >= deadline:
                    raise
            time.sleep(0.01)

    @contextmanager
    def _translated(self) -> Iterator[None]:
        try:
            yield
        except sqlite3.IntegrityError as exc:
            raise IntegrityViolation(f"ledger {self.path_or_url}: {one_line(exc)}") from exc
        except sqlite3.Error as exc:
            raise LedgerError(describe(exc, self.path_or_url)) from exc
        except OSError as exc:
            raise LedgerError(
                f"ledger {self.path_or_url} cannot be used ({exc.strerror or exc}); check the file and its folder"
            ) from exc

    @contextmanager
    def write(self) -> Iterator[_Executor]:
        self._check_in_place()
        with self._translated():
            # IMMEDIATE takes the write lock up front (waiting up to busy_timeout); a deferred transaction that
            # upgrades later can fail with SQLITE_BUSY at once, without waiting.
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                yield self._executor
                self._conn.execute("COMMIT")
            except BaseException:
                self._rollback()
                raise

    migrating = write  # BEGIN IMMEDIATE already excludes every other writer, migrations included

    def _rollback(self) -> None:
        try:
            if self._conn.in_transaction:
                self._conn.execute("ROLLBACK")
        except sqlite3.Error:
            pass  # the original error is the one to report

    def query(self, sql: str, params: Params = ()) -> list[dict[str, Any]]:
        self._check_in_place()
        with self._translated():
            return self._executor.query(sql, params)

    def pragma(self, setting: str) -> None:
        """Set a PRAGMA on this connection, outside any transaction (inside one, some are silently ignored)."""
        self._conn.execute(f"PRAGMA {setting}")

    def has_table(self, name: str) -> bool:
        return bool(self.query("SELECT name FROM sqlite_master WHERE type = 'table' AND name = ?", (name,)))

    def close(self) -> None:
        conn = getattr(self, "_conn", None)
        if conn is not None:
            conn.close()


class WalCheckpointer:
    """Checkpoints a WAL ledger on a thread and connection of its own while another connection writes in bulk
    (an import): the copy into the database file, and its fsync, overlap the writer's work instead of following
    it. Best effort: SQLite checkpoints what is left when the last connection to the ledger closes."""

    def __init__(self, path: str) -> None:
        self._wanted = threading.Event()
        self._stopping = False
        self._thread = threading.Thread(target=self._run, args=(path,), name="capguard-checkpoint", daemon=True)
        self._thread.start()

    def request(self) -> None:
        """Checkpoint what has been committed so far (at once, or after the checkpoint under way)."""
        self._wanted.set()

    def close(self) -> None:
        self._stopping = True
        self._wanted.set()
        self._thread.join()

    def _run(self, path: str) -> None:
        try:
            conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        except sqlite3.Error:
            return
        try:
            while True:
                self._wanted.wait()
                self._wanted.clear()
                if self._stopping:
                    return
                try:
                    conn.execute("PRAGMA wal_checkpoint(PASSIVE)")  # never waits for the writer
                except sqlite3.Error:
                    pass
        finally:
            conn.close()
