"""The ledger: every usage observation of a supervised agent, committed as it arrives (SQLite or PostgreSQL).

`open_ledger()` picks the engine from the target, creates and migrates the schema, and checks it can write.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from pathlib import Path

from capguard.core.errors import LedgerError
from capguard.core.redact import mask_dsn
from capguard.ledger import known
from capguard.ledger.backend import POSTGRES_SCHEMES, Backend
from capguard.ledger.migrations import MIGRATIONS, USAGE_INDEXES, Migration, apply_migrations
from capguard.ledger.records import AckRecord, RunEnd, RunStart, UsageRecord, normalize_utc, utc_now
from capguard.ledger.sqlite import SqliteBackend
from capguard.ledger.store import Ledger
from capguard.paths import default_ledger_path

__all__ = [
    "AckRecord",
    "Ledger",
    "LedgerError",
    "RunEnd",
    "RunStart",
    "UsageRecord",
    "normalize_utc",
    "open_ledger",
    "utc_now",
]

# A no-op write: fails at open, not at the first usage row, when the file or the role is read-only.
# (SQLite silently opens an unwritable file read-only, and even lets BEGIN IMMEDIATE through.)
_KEYWORD_DSN = re.compile(r"^\s*(host|hostaddr|port|dbname|user|password|service|sslmode)\s*=")
_WRITE_PROBE = "UPDATE capguard_migrations SET applied_utc = applied_utc WHERE 1 = 0"


def open_ledger(
    target: str | os.PathLike[str] | None = None,
    *,
    migrations: Sequence[Migration] | None = None,
    busy_timeout_s: float = 30.0,
    fresh: bool = False,
) -> Ledger:
    """Open (creating and migrating) the ledger at `target`: None -> the default file, a postgresql:// URL,
    or a SQLite path. Raises LedgerError with one line naming the file or URL and the fix.

    A SQLite file that this data dir used before and that is gone now is an error (known.py), unless `fresh`
    (`capguard ledger init`) asks for a new, empty ledger in its place.
    """
    path = _sqlite_path(target)
    if path is not None and not fresh:
        known.check_present(path)
    backend = _backend_for(target, path, busy_timeout_s)
    try:
        apply_migrations(backend, MIGRATIONS if migrations is None else migrations)
        with backend.write() as db:
            db.execute(_WRITE_PROBE)
            if backend.dialect == "sqlite":  # an import that died before it built them again (bulk.py)
                for statement in USAGE_INDEXES.values():
                    db.execute(statement)
    except BaseException:
        backend.close()
        raise
    if path is not None:
        known.remember(path)
    return Ledger(backend)


def _sqlite_path(target: str | os.PathLike[str] | None) -> Path | None:
    """The SQLite file `target` names; None for PostgreSQL, an in-memory database or an empty path."""
    if target is None:
        return default_ledger_path()
    text = os.fspath(target)
    if not text or text == ":memory:" or text.startswith(POSTGRES_SCHEMES) or _KEYWORD_DSN.match(text):
        return None
    return Path(text).expanduser()


def _backend_for(target: str | os.PathLike[str] | None, path: Path | None, busy_timeout_s: float) -> Backend:
    if path is not None:
        return SqliteBackend(path, busy_timeout_s=busy_timeout_s)
    text = os.fspath(target or "")
    if not text:
        raise LedgerError("the ledger path is empty; give a file path or a postgresql:// URL")
    if _KEYWORD_DSN.match(text):  # not a file name: SQLite would create a file named after it, password included
        raise LedgerError(
            f"ledger {mask_dsn(text)} looks like a libpq connection string; give a postgresql:// URL "
            "without the password (libpq reads PGPASSWORD or ~/.pgpass)"
        )
    if text.startswith(POSTGRES_SCHEMES):
        from capguard.ledger.postgres import PostgresBackend  # psycopg and urllib only for a team ledger

        return PostgresBackend(text)
    return SqliteBackend(Path(text), busy_timeout_s=busy_timeout_s)  # ":memory:"
