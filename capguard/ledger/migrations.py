"""The ledger schema as an ordered list of named migrations, one list for SQLite and PostgreSQL.

Each migration runs once, in one transaction together with its row in `capguard_migrations`. Append new ones at
the end and never edit an applied one; keep an upgrade fixture of the old schema in tests/fixtures/ledger/.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from capguard.core.errors import LedgerError
from capguard.ledger.backend import Backend, Executor, one_line
from capguard.ledger.records import utc_now


@dataclass(frozen=True)
class Migration:
    name: str
    fn: Callable[[Executor], None]


MIGRATIONS: list[Migration] = []


def check_names(migrations: Iterable[Migration]) -> None:
    seen: set[str] = set()
    for item in migrations:
        if item.name in seen:
            raise ValueError(f"migration name {item.name!r} is used twice")
        seen.add(item.name)


def migration(fn: Callable[[Executor], None], *, registry: list[Migration] = MIGRATIONS) -> Callable[[Executor], None]:
    """Decorator: append `fn` to the registry under its function name; a repeated name fails at import."""
    check_names([*registry, Migration(fn.__name__, fn)])
    registry.append(Migration(fn.__name__, fn))
    return fn


# Portable DDL: BIGINT for money and token counts because PostgreSQL's INTEGER is 32-bit (max $2,147 in
# micro-dollars); SQLite reads BIGINT as INTEGER affinity. No DEFAULTs: the Python side always supplies values.
# JSON columns (argv, caps, report, details) are TEXT on both engines.
_V1 = (
    """CREATE TABLE users (
  id TEXT NOT NULL PRIMARY KEY,
  name TEXT NOT NULL UNIQUE,
  created_utc TEXT NOT NULL
)""",
    """CREATE TABLE runs (
  id TEXT NOT NULL PRIMARY KEY,
  user_id TEXT NOT NULL REFERENCES users (id),
  line TEXT,
  project TEXT,
  agent TEXT NOT NULL,
  agent_version TEXT,
  argv TEXT NOT NULL,
  cwd TEXT NOT NULL,
  host TEXT NOT NULL,
  started_utc TEXT NOT NULL,
  ended_utc TEXT,
  caps TEXT NOT NULL,
  status TEXT NOT NULL,
  stop_reason TEXT,
  exit_code INTEGER,
  cost_micro_usd BIGINT,
  tokens BIGINT,
  steps INTEGER,
  malformed_lines INTEGER,
  report TEXT
)""",
    "CREATE INDEX runs_user_started ON runs (user_id, started_utc)",
    "CREATE INDEX runs_line_started ON runs (line, started_utc)",
    """CREATE TABLE usage_events (
  id TEXT NOT NULL PRIMARY KEY,
  run_id TEXT NOT NULL REFERENCES runs (id),
  dedupe_key TEXT NOT NULL UNIQUE,
  occurred_utc TEXT NOT NULL,
  recorded_utc TEXT NOT NULL,
  model TEXT,
  input_tokens BIGINT NOT NULL,
  output_tokens BIGINT NOT NULL,
  cache_read_tokens BIGINT NOT NULL,
  cache_write_tokens BIGINT NOT NULL,
  cost_micro_usd BIGINT,
  priced_by TEXT,
  source_file TEXT,
  source_offset BIGINT,
  details TEXT
)""",
    "CREATE INDEX usage_events_run ON usage_events (run_id, occurred_utc)",
    "CREATE INDEX usage_events_occurred ON usage_events (occurred_utc)",
)
# The usage table's secondary indexes as the schema has them now: a large import drops them and builds them once at
# its end (ledger/bulk.py ImportWriter.defer_indexes); opening a SQLite ledger makes any that are missing.
USAGE_INDEXES: dict[str, str] = {
    "usage_events_run": "CREATE INDEX IF NOT EXISTS usage_events_run ON usage_events (run_id, occurred_utc)",
    "usage_events_occurred": "CREATE INDEX IF NOT EXISTS usage_events_occurred ON usage_events (occurred_utc)",
}


@migration
def m001_initial(db: Executor) -> None:
    for statement in _V1:
        db.execute(statement)


# Acks of a spent monthly budget (`capguard ack`): who, why, and the limit granted for the rest of the month.
# A budget is a scope ("user" or "line") and its name; an ack applies to the month its created_utc falls in.
_V2 = (
    """CREATE TABLE monthly_acks (
  id TEXT NOT NULL PRIMARY KEY,
  user_id TEXT NOT NULL REFERENCES users (id),
  scope TEXT NOT NULL,
  scope_name TEXT NOT NULL,
  month TEXT NOT NULL,
  created_utc TEXT NOT NULL,
  host TEXT NOT NULL,
  reason TEXT NOT NULL,
  spent_micro_usd BIGINT NOT NULL,
  cap_micro_usd BIGINT NOT NULL,
  limit_micro_usd BIGINT NOT NULL
)""",
    "CREATE INDEX monthly_acks_scope_created ON monthly_acks (scope, scope_name, created_utc)",
)


@migration
def m002_monthly_acks(db: Executor) -> None:
    for statement in _V2:
        db.execute(statement)


_BOOKKEEPING = (
    "CREATE TABLE IF NOT EXISTS capguard_migrations (name TEXT NOT NULL PRIMARY KEY, applied_utc TEXT NOT NULL)"
)


def applied_names(backend: Backend) -> list[str]:
    """Names of the applied migrations, oldest first."""
    if not backend.has_table("capguard_migrations"):
        return []
    rows = backend.query("SELECT name FROM capguard_migrations ORDER BY applied_utc, name")
    return [row["name"] for row in rows]


def apply_migrations(backend: Backend, migrations: Sequence[Migration] = MIGRATIONS) -> list[str]:
    """Apply the pending migrations in order; return the names applied now (empty when up to date)."""
    check_names(migrations)
    done = set(applied_names(backend))  # fast path: no write lock when nothing is pending
    return [item.name for item in migrations if item.name not in done and _apply_one(backend, item)]


def _apply_one(backend: Backend, item: Migration) -> bool:
    try:
        with backend.migrating() as db:
            db.execute(_BOOKKEEPING)
            # Re-check inside the lock: another process may have applied it since we looked.
            if db.query("SELECT name FROM capguard_migrations WHERE name = ?", (item.name,)):
                return False
            item.fn(db)
            db.execute("INSERT INTO capguard_migrations (name, applied_utc) VALUES (?, ?)", (item.name, utc_now()))
    except LedgerError:
        raise
    except Exception as exc:
        raise LedgerError(
            f"ledger {backend.path_or_url} could not be upgraded: migration {item.name} failed"
            f" ({type(exc).__name__}: {one_line(exc)}); nothing of it was kept, please report this capguard bug"
        ) from exc
    return True
