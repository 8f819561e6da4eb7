"""What the ledger needs from a database engine: transactions and queries with `?` placeholders.

`sqlite.py` and `postgres.py` implement it; dialect differences stay inside them.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from contextlib import AbstractContextManager
from typing import Any, Protocol

from capguard.core.errors import LedgerError
from capguard.core.redact import redact_text

POSTGRES_SCHEMES = ("postgresql://", "postgres://")  # a ledger target starting so is a PostgreSQL URL

Params = Sequence[Any]


class Executor(Protocol):
    """Statements inside one open transaction. SQL uses `?` placeholders on every engine."""

    dialect: str  # "sqlite" | "postgresql"

    def execute(self, sql: str, params: Params = ()) -> int:
        """Run one statement; return the number of rows it changed."""

    def query(self, sql: str, params: Params = ()) -> list[dict[str, Any]]:
        """Run one SELECT; rows as dicts keyed by column name."""

    def executemany(self, sql: str, rows: list[tuple[Any, ...]]) -> int:
        """Run one statement for many rows with the engine's own loop (an import's batches); rows changed."""


class Backend(Protocol):
    dialect: str
    path_or_url: str  # safe to print: never contains a password

    def write(self) -> AbstractContextManager[Executor]:
        """One write transaction, committed on exit (durably) and rolled back on error."""

    def migrating(self) -> AbstractContextManager[Executor]:
        """A write transaction that also excludes other processes' migrations."""

    def query(self, sql: str, params: Params = ()) -> list[dict[str, Any]]:
        """A read outside any write transaction."""

    def has_table(self, name: str) -> bool: ...

    def close(self) -> None: ...


class IntegrityViolation(LedgerError):
    """A write broke a key or reference (duplicate run id, usage for an unknown run)."""


def one_line(text: object) -> str:
    """Engine messages span lines (libpq adds hints); a LedgerError is one sentence."""
    lines = [line.strip() for line in redact_text(str(text)).splitlines() if line.strip()]  # a driver may echo a DSN
    return re.sub(r"\s+", " ", lines[0]) if lines else "unknown error"
