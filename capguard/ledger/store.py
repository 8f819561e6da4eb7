"""The ledger's operations in portable SQL over a Backend: runs, usage observations, spend totals.

Every write is its own committed transaction, so a crash loses at most the observation in flight.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

from capguard.core.errors import LedgerError
from capguard.core.ids import new_id
from capguard.core.redact import redact_argv
from capguard.core.usage import total_sql
from capguard.ledger.backend import Backend, Executor, IntegrityViolation
from capguard.ledger.migrations import applied_names
from capguard.ledger.records import (
    MAX_STORED_INT32,
    AckRecord,
    RunEnd,
    RunStart,
    UsageRecord,
    normalize_utc,
    storable,
    utc_now,
)

log = logging.getLogger(__name__)

_RUN_JSON = ("argv", "caps", "report")

_INSERT_RUN = """INSERT INTO runs (id, user_id, line, project, agent, agent_version, argv, cwd, host,
  started_utc, caps, status) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 'running')"""
_ENSURE_RUN = _INSERT_RUN + " ON CONFLICT (id) DO NOTHING"

_INSERT_USAGE = """INSERT INTO usage_events (id, run_id, dedupe_key, occurred_utc, recorded_utc, model,
  input_tokens, output_tokens, cache_read_tokens, cache_write_tokens, cost_micro_usd, priced_by,
  source_file, source_offset, details) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
  ON CONFLICT (dedupe_key) DO NOTHING"""

_FINISH_RUN = """UPDATE runs SET ended_utc = ?, status = ?, stop_reason = ?, exit_code = ?, cost_micro_usd = ?,
  tokens = ?, steps = ?, malformed_lines = ?, report = ? WHERE id = ?"""

_INSERT_ACK = """INSERT INTO monthly_acks (id, user_id, scope, scope_name, month, created_utc, host, reason,
  spent_micro_usd, cap_micro_usd, limit_micro_usd) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"""

_ACKS = """SELECT a.*, u.name AS user FROM monthly_acks a JOIN users u ON u.id = a.user_id
  WHERE a.scope = ? AND a.scope_name = ? AND a.created_utc >= ? AND a.created_utc < ? ORDER BY a.created_utc, a.id"""

_SPEND = f"""SELECT CAST(COALESCE(SUM(e.cost_micro_usd), 0) AS BIGINT) AS cost,
  CAST(COALESCE(SUM({total_sql("e")}), 0) AS BIGINT)
  AS tokens FROM usage_events e JOIN runs r ON r.id = e.run_id JOIN users u ON u.id = r.user_id"""


# What `capguard ledger export` writes: the columns a spreadsheet or another tool needs, not the JSON blobs.
EXPORT_RUN_COLUMNS = (
    "run_id", "user", "line", "project", "agent", "agent_version", "host", "cwd", "started_utc", "ended_utc",
    "status", "stop_reason", "exit_code", "cost_micro_usd", "tokens", "steps", "malformed_lines",
)  # fmt: skip
EXPORT_USAGE_COLUMNS = (
    "usage_id", "run_id", "user", "line", "project", "agent", "occurred_utc", "recorded_utc", "model",
    "input_tokens", "output_tokens", "cache_read_tokens", "cache_write_tokens", "cost_micro_usd", "priced_by",
    "source_file",
)  # fmt: skip

_EXPORT_RUNS = """SELECT r.id AS run_id, u.name AS user, r.line, r.project, r.agent, r.agent_version, r.host, r.cwd,
  r.started_utc, r.ended_utc, r.status, r.stop_reason, r.exit_code, r.cost_micro_usd, r.tokens, r.steps,
  r.malformed_lines FROM runs r JOIN users u ON u.id = r.user_id"""

_EXPORT_USAGE = """SELECT e.id AS usage_id, e.run_id, u.name AS user, r.line, r.project, r.agent, e.occurred_utc,
  e.recorded_utc, e.model, e.input_tokens, e.output_tokens, e.cache_read_tokens, e.cache_write_tokens,
  e.cost_micro_usd, e.priced_by, e.source_file
  FROM usage_events e JOIN runs r ON r.id = e.run_id JOIN users u ON u.id = r.user_id"""

# Runs that ended before a moment; a run still going (no ended_utc) is never pruned.
_ENDED_BEFORE = "SELECT id FROM runs WHERE ended_utc IS NOT NULL AND ended_utc < ?"


class Pruned(NamedTuple):
    """What `Ledger.prune` deleted (or, on a dry run, would delete)."""

    runs: int
    usage: int
    cost_micro_usd: int


def _between(column: str, since_utc: str | None, until_utc: str | None) -> tuple[str, list[str]]:
    """` WHERE column >= since AND column < until` for the bounds given, and its parameters."""
    used = [(f"{column} >= ?", since_utc), (f"{column} < ?", until_utc)]
    kept = [(clause, normalize_utc(value)) for clause, value in used if value is not None]
    where = " WHERE " + " AND ".join(clause for clause, _ in kept) if kept else ""
    return where, [value for _, value in kept]


def _json(value: Any) -> str | None:
    return None if value is None else json.dumps(value, ensure_ascii=False, default=str)


def _unjson(row: dict[str, Any], columns: tuple[str, ...]) -> dict[str, Any]:
    return {key: json.loads(value) if key in columns and value is not None else value for key, value in row.items()}


class Ledger:
    """An open ledger. Use `open_ledger()`; close it, or use it as a context manager.

    Use it from the thread that opened it (sqlite3 connections refuse other threads); open one per process.
    """

    def __init__(self, backend: Backend, *, clock: Callable[[], str] = utc_now, make_id: Callable[[], str] = new_id):
        self._backend = backend
        self._clock = clock
        self._make_id = make_id

    @property
    def path_or_url(self) -> str:
        return self._backend.path_or_url

    @property
    def backend(self) -> Backend:
        """The database engine: for writes in batches (bulk.py: an import), never for a supervised run's rows."""
        return self._backend

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[dict[str, Any]]:
        """A read in the ledger's portable SQL (`?` placeholders), outside any write: the reports' queries."""
        return self._backend.query(sql, params)

    @property
    def identity(self) -> str:
        """Which ledger this is, the same from any working directory: a SQLite file's real path, or the URL."""
        return getattr(self._backend, "identity", self._backend.path_or_url)

    def start_run(self, start: RunStart, *, if_missing: bool = False) -> None:
        """Insert the run (status 'running') and its user if new; committed before returning. `if_missing`: a run
        already in the ledger is left as it is (a spool's replay), instead of being an error."""
        argv, caps, started = _json(redact_argv(start.argv)), _json(start.caps), normalize_utc(start.started_utc)
        try:
            with self._backend.write() as db:
                user_id = self._user_id(db, start.user)
                db.execute(
                    _ENSURE_RUN if if_missing else _INSERT_RUN,
                    (
                        start.run_id,
                        user_id,
                        start.line,
                        start.project,
                        start.agent,
                        start.agent_version,
                        argv,
                        start.cwd,
                        start.host,
                        started,
                        caps,
                    ),
                )
        except IntegrityViolation as exc:
            raise LedgerError(
                f"run {start.run_id} is already in ledger {self.path_or_url}; give each run a new id"
            ) from exc

    def _user_id(self, db: Executor, name: str) -> str:
        sql = "INSERT INTO users (id, name, created_utc) VALUES (?, ?, ?) ON CONFLICT (name) DO NOTHING"
        db.execute(sql, (self._make_id(), name, self._clock()))
        return db.query("SELECT id FROM users WHERE name = ?", (name,))[0]["id"]

    def record_usage(self, run_id: str, usage: UsageRecord) -> bool:
        """Commit one observation; False when its dedupe_key was already recorded (by any run)."""
        counts, clamped = storable(
            {
                "input_tokens": usage.input_tokens,
                "output_tokens": usage.output_tokens,
                "cache_read_tokens": usage.cache_read_tokens,
                "cache_write_tokens": usage.cache_write_tokens,
                "cost_micro_usd": usage.cost_micro_usd,
                "source_offset": usage.source_offset,
            }
        )
        details = usage.details
        if clamped:
            log.warning(
                "usage %s: %s beyond what the ledger stores, stored as %d",
                usage.dedupe_key,
                clamped,
                max(v for v in counts.values() if v is not None),
            )
            details = {**(details or {}), "clamped": clamped}
        values = (
            self._make_id(),
            run_id,
            usage.dedupe_key,
            normalize_utc(usage.occurred_utc),
            self._clock(),
            usage.model,
            counts["input_tokens"],
            counts["output_tokens"],
            counts["cache_read_tokens"],
            counts["cache_write_tokens"],
            counts["cost_micro_usd"],
            usage.priced_by,
            usage.source_file,
            counts["source_offset"],
            _json(details),
        )
        try:
            with self._backend.write() as db:
                return db.execute(_INSERT_USAGE, values) == 1
        except IntegrityViolation as exc:
            raise LedgerError(
                f"cannot record usage for run {run_id}: it is not in ledger {self.path_or_url}; start_run comes first"
            ) from exc

    def finish_run(self, run_id: str, end: RunEnd) -> None:
        wide, clamped = storable({"cost_micro_usd": end.cost_micro_usd, "tokens": end.tokens})
        narrow, clamped_32 = storable(
            {"steps": end.steps, "malformed_lines": end.malformed_lines, "exit_code": end.exit_code},
            bound=MAX_STORED_INT32,
        )
        clamped.update(clamped_32)
        report = {**end.report, "ledger_clamped": clamped} if clamped else end.report
        if clamped:
            log.warning("run %s: %s beyond what the ledger stores, clamped", run_id, clamped)
        values = (
            normalize_utc(end.ended_utc),
            end.final_status,
            end.stop_reason,
            narrow["exit_code"],
            wide["cost_micro_usd"],
            wide["tokens"],
            narrow["steps"],
            narrow["malformed_lines"],
            _json(report),
            run_id,
        )
        with self._backend.write() as db:
            changed = db.execute(_FINISH_RUN, values)
        if changed != 1:
            raise LedgerError(f"cannot finish run {run_id}: it is not in ledger {self.path_or_url}")

    def run(self, run_id: str) -> dict[str, Any] | None:
        """The run's columns (JSON decoded) plus `user` (the user's name); None if unknown."""
        sql = "SELECT r.*, u.name AS user FROM runs r JOIN users u ON u.id = r.user_id WHERE r.id = ?"
        rows = self._backend.query(sql, (run_id,))
        return _unjson(rows[0], _RUN_JSON) if rows else None

    def usage(self, run_id: str) -> list[dict[str, Any]]:
        """The run's usage events in the order they occurred (`details` JSON decoded)."""
        sql = "SELECT * FROM usage_events WHERE run_id = ? ORDER BY occurred_utc, id"
        return [_unjson(row, ("details",)) for row in self._backend.query(sql, (run_id,))]

    def spend(
        self,
        *,
        user: str | None = None,
        since_utc: str | None = None,
        until_utc: str | None = None,
        line: str | None = None,
        run: str | None = None,
        not_run: str | None = None,
    ) -> tuple[int, int]:
        """(micro-USD, tokens) over usage events; `since_utc` inclusive, `until_utc` exclusive (occurred time);
        `run` only that run's events, `not_run` every run's but that one's.

        Unpriced events add their tokens but no money.
        """
        filters = [
            ("u.name = ?", user),
            ("r.line = ?", line),
            ("r.id = ?", run),
            ("r.id <> ?", not_run),
            ("e.occurred_utc >= ?", since_utc and normalize_utc(since_utc)),
            ("e.occurred_utc < ?", until_utc and normalize_utc(until_utc)),
        ]
        used = [(clause, value) for clause, value in filters if value is not None]
        where = " WHERE " + " AND ".join(clause for clause, _ in used) if used else ""
        row = self._backend.query(_SPEND + where, [value for _, value in used])[0]
        return int(row["cost"]), int(row["tokens"])

    def record_ack(self, ack: AckRecord) -> None:
        """Commit one `capguard ack` (its user is added if new)."""
        with self._backend.write() as db:
            user_id = self._user_id(db, ack.user)
            db.execute(
                _INSERT_ACK,
                (
                    self._make_id(),
                    user_id,
                    ack.scope,
                    ack.scope_name,
                    ack.month,
                    normalize_utc(ack.created_utc),
                    ack.host,
                    ack.reason,
                    ack.spent_micro_usd,
                    ack.cap_micro_usd,
                    ack.limit_micro_usd,
                ),
            )

    def acks(self, scope: str, name: str, *, since_utc: str, until_utc: str) -> list[dict[str, Any]]:
        """The acks of one budget created in [since_utc, until_utc), oldest first, with `user` (a name)."""
        return self._backend.query(_ACKS, (scope, name, normalize_utc(since_utc), normalize_utc(until_utc)))

    def export_runs(self, *, since_utc: str | None = None, until_utc: str | None = None) -> list[dict[str, Any]]:
        """Runs that started in [since_utc, until_utc), oldest first, as EXPORT_RUN_COLUMNS."""
        where, params = _between("r.started_utc", since_utc, until_utc)
        return self._backend.query(_EXPORT_RUNS + where + " ORDER BY r.started_utc, r.id", params)

    def export_usage(self, *, since_utc: str | None = None, until_utc: str | None = None) -> list[dict[str, Any]]:
        """Usage events that occurred in [since_utc, until_utc), oldest first, with their run's user, line,
        project and agent, as EXPORT_USAGE_COLUMNS."""
        where, params = _between("e.occurred_utc", since_utc, until_utc)
        return self._backend.query(_EXPORT_USAGE + where + " ORDER BY e.occurred_utc, e.id", params)

    def prune(self, before_utc: str, *, dry_run: bool = False) -> Pruned:
        """Delete the runs that ended before `before_utc` and their usage events, in one transaction; or, with
        `dry_run`, only count them. Runs still going are kept; so are users and acks."""
        before = normalize_utc(before_utc)
        counted = f"""SELECT COUNT(*) AS n, CAST(COALESCE(SUM(cost_micro_usd), 0) AS BIGINT) AS cost
          FROM usage_events WHERE run_id IN ({_ENDED_BEFORE})"""
        with self._backend.write() as db:
            runs = int(db.query(f"SELECT COUNT(*) AS n FROM ({_ENDED_BEFORE}) ended", (before,))[0]["n"])
            usage = db.query(counted, (before,))[0]
            if not dry_run:
                db.execute(f"DELETE FROM usage_events WHERE run_id IN ({_ENDED_BEFORE})", (before,))
                db.execute(f"DELETE FROM runs WHERE id IN ({_ENDED_BEFORE})", (before,))
        return Pruned(runs, int(usage["n"]), int(usage["cost"]))

    def schema_version(self) -> list[str]:
        """Names of the applied migrations, oldest first."""
        return applied_names(self._backend)

    def close(self) -> None:
        self._backend.close()

    def __enter__(self) -> Ledger:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
