"""What an import reads from and writes to the ledger: run rows and usage rows in batches, few transactions.

`Ledger.record_usage` commits each row on its own (the live meter must never lose one), which would take minutes
for 100k replies. This writes through the same backend with the same portable `?` SQL, a batch per transaction
with the engine's executemany: on PostgreSQL each worker process over its own connection (`write_batch`); on
SQLite the importing process alone (`write_rows`), since two processes writing one SQLite file would each find
their page cache stale at every transaction. `ImportWriter.finish` then completes the runs. The schema is the
ledger's: nothing here changes it.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from operator import itemgetter
from typing import Any

from capguard.core.errors import LedgerError
from capguard.core.ids import new_id
from capguard.core.usage import counts_total, total_sql
from capguard.ledger import Ledger, utc_now
from capguard.ledger.backend import Backend, Executor
from capguard.ledger.migrations import USAGE_INDEXES
from capguard.ledger.sqlite import SqliteBackend, WalCheckpointer

IMPORTED = "imported"  # runs.status of a run built from an agent's logs rather than supervised
_IDS_PER_QUERY = 500

UsageRow = tuple  # (run_id, dedupe_key, occurred_utc, model, input, output, cache_read, cache_write, cost, priced_by,
#                    source_file, source_offset, details_json); the id and recorded_utc are added when written
_KEY = 1
_INSERT_USAGE = (
    "INSERT INTO usage_events (id, recorded_utc, run_id, dedupe_key, occurred_utc, model, input_tokens,"
    " output_tokens, cache_read_tokens, cache_write_tokens, cost_micro_usd, priced_by, source_file,"
    " source_offset, details) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
    " ON CONFLICT (dedupe_key) DO NOTHING"
)
_INSERT_RUN = (
    "INSERT INTO runs (id, user_id, line, project, agent, agent_version, argv, cwd, host, started_utc,"
    " ended_utc, caps, status, cost_micro_usd, tokens, steps, malformed_lines, report)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (id) DO NOTHING"
)
_FINISH = """UPDATE runs SET started_utc = ?, ended_utc = ?, malformed_lines = ?, report = ?,
  agent_version = COALESCE(?, agent_version), line = COALESCE(line, ?), cwd = ?, project = ?,
  cost_micro_usd = ?, tokens = ?, steps = ? WHERE id = ? AND status = 'imported'"""
# A reply of the main agent: not a max-wins correction (`<key>+<n>`), not from a subagent's transcript.
_TOTALS = f"""SELECT e.run_id AS run_id, CAST(COALESCE(SUM(e.cost_micro_usd), 0) AS BIGINT) AS cost,
  CAST(SUM({total_sql("e")}) AS BIGINT) AS tokens,
  CAST(SUM(CASE WHEN e.dedupe_key LIKE '%+%' OR e.source_file LIKE '%/subagents/%' THEN 0 ELSE 1 END) AS BIGINT)
  AS steps FROM usage_events e WHERE e.run_id IN ({{marks}}) GROUP BY e.run_id"""


def ledger_identity(ledger: Ledger) -> str:
    """This ledger instance: where it is and when it was created (a new file at the same path is another)."""
    rows = ledger.query("SELECT applied_utc FROM capguard_migrations ORDER BY applied_utc, name")
    return f"{ledger.path_or_url}#{rows[0]['applied_utc'] if rows else ''}"


def executemany(db: Executor, sql: str, rows: list[tuple]) -> int:
    """Run one statement for many rows inside a `write()` transaction; the number of rows changed."""
    return db.executemany(sql, rows) if rows else 0


def row_ids(count: int) -> list[str]:
    """`count` unique ids shaped like `new_id()`'s (26 characters, time first), ascending: rows inserted in id
    order append to the primary key's b-tree instead of splitting pages all over it."""
    prefix = new_id()[:16]  # the millisecond and 30 random bits: distinct for every call
    return [f"{prefix}{i:010d}" for i in range(count)]


def _chunks(items: Sequence, size: int) -> Iterable[Sequence]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


def _marks(count: int) -> str:
    return ", ".join("?" * count)


@dataclass
class RunRow:
    """An imported run (one agent session) as it goes into `runs`; spans and counts grow as files come in."""

    run_id: str
    agent: str
    cwd: str
    project: str | None
    started_utc: str
    ended_utc: str
    agent_version: str | None = None
    line: str | None = None
    malformed: int = 0
    report: dict[str, Any] = field(default_factory=dict)
    read_on: bool = False  # some file was read on from an earlier offset: add to the malformed count recorded
    supervised: bool = False  # the id belongs to a run capguard supervised: leave it alone
    _report_text: str | None = field(default=None, init=False, repr=False, compare=False)

    def report_text(self) -> str:
        """`report` as JSON, made once: a run's row is written, and compared before `finish` rewrites it, several
        times an import (the report is complete once the run is registered)."""
        if self._report_text is None:
            self._report_text = json.dumps(self.report)
        return self._report_text

    def widen(self, first: str | None, last: str | None) -> None:
        if first and first < self.started_utc:
            self.started_utc = first
        if last and last > self.ended_utc:
            self.ended_utc = last


def ensure_user(ledger: Ledger, name: str) -> str:
    """The user's id, the user created if new."""
    with ledger.backend.write() as db:
        db.execute(
            "INSERT INTO users (id, name, created_utc) VALUES (?, ?, ?) ON CONFLICT (name) DO NOTHING",
            (new_id(), name, utc_now()),
        )
        return db.query("SELECT id FROM users WHERE name = ?", (name,))[0]["id"]


@dataclass
class Written:
    """What one batch added: rows (a key already in the ledger is skipped), their cost and tokens, new runs."""

    rows: int = 0
    added: int = 0
    cost: int = 0
    tokens: int = 0
    runs_created: int = 0

    def __iadd__(self, other: Written) -> Written:
        for name in ("rows", "added", "cost", "tokens", "runs_created"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        return self


@dataclass
class RunSums:
    """Per run, the (cost, tokens, steps) of some usage rows, as `_TOTALS` sums them; and how many rows. When all
    of an import's rows went in and their runs are new, `finish` takes the totals from here instead of reading
    every row back."""

    runs: dict[str, list[int]] = field(default_factory=dict)
    rows: int = 0

    @classmethod
    def of(cls, rows: Iterable[UsageRow]) -> RunSums:
        sums = cls()
        runs = sums.runs
        for row in rows:
            figures = runs.get(row[0])
            if figures is None:
                figures = runs[row[0]] = [0, 0, 0]
            figures[0] += row[8] or 0
            figures[1] += counts_total(*row[4:8])
            # a step: not a max-wins correction, not from a subagent (SQLite's LIKE ignores ASCII case)
            figures[2] += "+" not in row[1] and "/subagents/" not in (row[10] or "").lower()
            sums.rows += 1
        return sums

    def add_run(self, run_id: str, cost: int, tokens: int, steps: int, *, rows: int) -> None:
        """Figures already summed over `rows` rows of one run."""
        figures = self.runs.setdefault(run_id, [0, 0, 0])
        figures[0] += cost
        figures[1] += tokens
        figures[2] += steps
        self.rows += rows

    def add(self, other: RunSums) -> None:
        for run_id, (cost, tokens, steps) in other.runs.items():
            figures = self.runs.setdefault(run_id, [0, 0, 0])
            figures[0] += cost
            figures[1] += tokens
            figures[2] += steps
        self.rows += other.rows

    def total(self, index: int) -> int:
        return sum(figures[index] for figures in self.runs.values())


def _sum_ids(db: Executor, ids: Sequence[str]) -> Written:
    """How many of these rows are in the ledger, their cost and tokens (as `added`, `cost`, `tokens`)."""
    row = db.query(
        f"SELECT COUNT(*) AS n, COALESCE(SUM(cost_micro_usd), 0) AS cost, COALESCE(SUM({total_sql()}), 0) AS tokens"
        f" FROM usage_events WHERE id IN ({_marks(len(ids))})",
        list(ids),
    )[0]
    return Written(added=int(row["n"]), cost=int(row["cost"]), tokens=int(row["tokens"]))


def _known_keys(db: Executor, keys: list[str]) -> set[str]:
    known: set[str] = set()
    for chunk in _chunks(keys, _IDS_PER_QUERY):
        sql = f"SELECT dedupe_key FROM usage_events WHERE dedupe_key IN ({_marks(len(chunk))})"
        known.update(row["dedupe_key"] for row in db.query(sql, chunk))
    return known


def insert_runs(
    db: Executor, user_id: str, host: str, runs: list[RunRow], totals: dict[str, list[int]] | None = None
) -> int:
    """Rows for these runs, provisional (`ImportWriter.finish` completes them) but for the (cost, tokens, steps)
    in `totals`; a run already there is left alone."""
    totals = totals or {}
    return executemany(
        db,
        _INSERT_RUN,
        [
            (
                r.run_id,
                user_id,
                r.line,
                r.project,
                r.agent,
                r.agent_version,
                "[]",
                r.cwd,
                host,
                r.started_utc,
                r.ended_utc,
                "{}",
                IMPORTED,
                *totals.get(r.run_id, (0, 0, 0)),
                r.malformed,
                r.report_text(),
            )
            for r in runs
        ],
    )


def write_batch(backend: Backend, user_id: str, host: str, runs: list[RunRow], rows: list[UsageRow]) -> Written:
    """One transaction on any engine: the runs (provisional: `ImportWriter.finish` completes them), then the rows
    whose key is not in the ledger yet (an earlier import or a supervised run may hold it), sorted by key with
    ascending ids: both indexes grow in order within the batch."""
    with backend.write() as db:
        if db.dialect == "sqlite":
            db.execute("PRAGMA cache_size = -131072")  # 128 MiB: the key index is touched all over
        created = insert_runs(db, user_id, host, runs)
        known = _known_keys(db, [row[_KEY] for row in rows])
        fresh, seen = [], set()
        for row in sorted(rows, key=itemgetter(_KEY)):
            if row[_KEY] not in known and row[_KEY] not in seen:
                seen.add(row[_KEY])
                fresh.append(row)
        now = utc_now()
        added = executemany(db, _INSERT_USAGE, [(row_id, now, *row) for row_id, row in zip(row_ids(len(fresh)), fresh)])
    return Written(
        rows=len(rows),
        added=added,
        cost=sum(row[8] or 0 for row in fresh),
        tokens=sum(counts_total(*row[4:8]) for row in fresh),
        runs_created=created,
    )


_ADDED = f"""SELECT COUNT(*) AS n, COALESCE(SUM(cost_micro_usd), 0) AS cost,
  COALESCE(SUM({total_sql()}), 0) AS tokens
  FROM usage_events WHERE id >= ? AND id < ?"""


def stamp_rows(rows: list[UsageRow]) -> tuple[str, list[tuple]]:
    """(id prefix, rows as `_INSERT_USAGE` takes them): in run and time order with ascending ids, so that the
    primary key and the (run_id, occurred_utc) index grow in order. Done by the worker that read them."""
    prefix, now = new_id()[:16], utc_now()  # the millisecond and 30 random bits: distinct for every call
    ordered = sorted(rows, key=itemgetter(0, 2))
    return prefix, [(f"{prefix}{i:010d}", now, *row) for i, row in enumerate(ordered)]


def write_rows(
    backend: Backend,
    user_id: str,
    host: str,
    runs: list[RunRow],
    stamped: list[tuple],
    prefixes: list[str],
    sums: RunSums | None = None,
    totals: dict[str, list[int]] | None = None,
) -> Written:
    """One transaction: the runs (with `totals`, see `insert_runs`), then rows from `stamp_rows`. A row whose key
    is in the ledger already is skipped; what was added is `sums` when every row went in, else read back by its ids.
    On SQLite meanwhile no fsync per commit (the import's last transaction, FULL, makes every earlier one durable;
    an import cut short is simply run again), no checkpoint by this connection (`WalCheckpointer` or the ledger's
    close does it) and no foreign-key checks (every row's run is inserted first)."""
    sqlite = backend if isinstance(backend, SqliteBackend) else None
    if sqlite is not None:
        sqlite.set_pragmas("foreign_keys = OFF", "synchronous = NORMAL", "wal_autocheckpoint = 0")
    written = Written(rows=len(stamped))
    try:
        with backend.write() as db:
            if sqlite is not None:
                db.execute("PRAGMA cache_size = -131072")  # 128 MiB: the key index is touched all over
            written.runs_created = insert_runs(db, user_id, host, runs, totals)
            inserted = executemany(db, _INSERT_USAGE, stamped)
            if sums is not None and sums.rows == len(stamped) and inserted == len(stamped):
                written += Written(added=inserted, cost=sums.total(0), tokens=sums.total(1))
            else:
                for prefix in prefixes:
                    added = db.query(_ADDED, (prefix, prefix + "~"))[0]
                    written += Written(added=int(added["n"]), cost=int(added["cost"]), tokens=int(added["tokens"]))
    finally:
        if sqlite is not None:
            sqlite.set_pragmas("synchronous = FULL", "foreign_keys = ON")
    return written


def _sqlite(backend: Backend) -> SqliteBackend:
    if not isinstance(backend, SqliteBackend):
        raise TypeError(f"this is for SQLite ledgers, not {backend.dialect}")
    return backend


def _finished(run: RunRow, totals: Sequence[int]) -> tuple:
    """A run's `_FINISH` parameters."""
    return (
        run.started_utc,
        run.ended_utc,
        run.malformed,
        run.report_text(),
        run.agent_version,
        run.line,
        run.cwd,
        run.project,
        *totals,
        run.run_id,
    )


class ImportWriter:
    """The importing process's side: the runs of this import, its rows written in batches, and the finish."""

    def __init__(self, ledger: Ledger, *, user: str, host: str) -> None:
        self._backend = ledger.backend
        self.user, self.host = user, host
        self.user_id = ensure_user(ledger, user)
        self.runs: dict[str, RunRow] = {}  # every run touched by this import
        self._unwritten: list[str] = []  # runs not yet inserted (their rows need them first)
        self._pending: list[UsageRow] = []
        self._merged: set[str] = set()
        self.written = Written()
        # totals kept in memory (`RunSums`): exact while every row written went in; for the runs created here
        self._sums: RunSums | None = RunSums()
        self._fresh: set[str] = set()
        self._final: dict[str, tuple] = {}  # runs inserted complete: what `finish` would write, as inserted
        self._checkpointer: WalCheckpointer | None = None
        self._deferred_indexes = False
        # Every key that can be in the ledger already when a row is inserted is one `replace` settles, with the
        # runs of all its rows: a batch with skipped rows then leaves the in-memory totals of every other run exact.
        self.skips_are_settled = False

    def defer_indexes(self, new_rows: int) -> bool:
        """SQLite, when the import will add at least as many rows as the usage table holds: its secondary indexes
        are dropped now and built once, sorted, in `finish` (or by the ledger's next open, if the import dies).
        Inserting into them row by row was a third of the importing process's CPU (which the workers need), and a
        reader meanwhile only scans instead of seeking. Returns whether they were dropped."""
        if self._backend.dialect != "sqlite" or self._deferred_indexes:
            return self._deferred_indexes
        held = self._backend.query("SELECT COALESCE(MAX(rowid), 0) AS n FROM usage_events")[0]["n"]
        if new_rows < max(1, int(held)):
            return False
        with self._backend.write() as db:
            for name in USAGE_INDEXES:
                db.execute(f"DROP INDEX IF EXISTS {name}")
        self._deferred_indexes = True
        return True

    def build_indexes(self) -> None:
        """The indexes `defer_indexes` dropped, built again (each in one sorted pass)."""
        if not self._deferred_indexes:
            return
        sqlite = _sqlite(self._backend)
        # SQLite's sorter may use helper threads: the workers are done, and the build is the import's serial tail
        # (two indexes of 109k rows: 0.19 -> 0.14 s)
        sqlite.set_pragmas(f"threads = {min(4, os.cpu_count() or 1)}")
        try:
            with sqlite.write() as db:
                for statement in USAGE_INDEXES.values():
                    db.execute(statement)
        finally:
            sqlite.set_pragmas("threads = 0")
        self._deferred_indexes = False

    @property
    def pending(self) -> int:
        return len(self._pending)

    @property
    def backend(self) -> Backend:
        return self._backend

    def query(self, sql: str, params: Sequence = ()) -> list[dict[str, Any]]:
        """A read of the ledger (what an import must know: existing runs, keys, spans)."""
        return self._backend.query(sql, params)

    def drop_runs(self, run_ids: list[str]) -> None:
        """Remove imported runs and their rows (a rounded history session replaced by an exact analytics one)."""
        if not run_ids:
            return
        with self._backend.write() as db:
            for run_id in run_ids:
                db.execute("DELETE FROM usage_events WHERE run_id = ?", (run_id,))
                db.execute("DELETE FROM runs WHERE id = ? AND status = ?", (run_id, IMPORTED))
                self.runs.pop(run_id, None)
                self._fresh.discard(run_id)
                if self._sums is not None:
                    self._sums.runs.pop(run_id, None)

    def run(self, row: RunRow) -> RunRow:
        """The buffered run with this id, created from `row` if new."""
        if row.run_id not in self.runs:
            self.runs[row.run_id] = row
            self._unwritten.append(row.run_id)
        return self.runs[row.run_id]

    def write_rows(
        self, stamped: list[tuple], prefixes: list[str], sums: RunSums | None = None, complete: Iterable[str] = ()
    ) -> None:
        """Rows worker processes read and stamped (SQLite ledgers), after the runs they need, in one transaction;
        `sums`: their `RunSums`, when known. A new run in `complete` (all its files are read: these rows are all of
        its rows) goes in with its totals, so that `finish` need not rewrite it."""
        new, self._unwritten = self._unwritten, []
        runs = [self.runs[run_id] for run_id in new]
        complete = set(complete)
        whole = [r for r in runs if r.run_id in complete and not r.read_on] if sums is not None else []
        totals = {r.run_id: sums.runs.get(r.run_id, [0, 0, 0]) for r in whole} if sums is not None else {}
        written = write_rows(self._backend, self.user_id, self.host, runs, stamped, prefixes, sums, totals)
        self.written += written
        if written.runs_created == len(runs):
            self._fresh.update(new)
        # a batch with rows the ledger held already (skipped): exact totals only for the runs `replace` will not
        # touch, when that is where every skipped row belongs (`skips_are_settled`); `replace` drops the others
        all_in = written.added == written.rows or self.skips_are_settled
        if self._sums is not None and sums is not None and written.rows == sums.rows and all_in:
            self._sums.add(sums)
            if written.runs_created == len(runs):
                self._final.update((r.run_id, _finished(r, totals[r.run_id])) for r in whole)
        else:
            self._sums = None
        if self._checkpointer is None and self._backend.path_or_url != ":memory:":
            self._checkpointer = WalCheckpointer(self._backend.path_or_url)
        if self._checkpointer is not None:
            self._checkpointer.request()

    def replace(self, stale: list[str], keep: list[tuple], new: list[UsageRow], changed: set[str], rows: int) -> None:
        """Rows this import wrote (ids `stale`) replaced, in one transaction, by the stamped rows `keep` not in the
        ledger yet and by `new`: a request's rows settled across files and the ledger (`importers.claude_merge`).
        The `changed` runs' totals are read back by `finish`; `rows`: how many more (or fewer) rows this import now
        counts as found."""
        prefix, stamped = stamp_rows(new)
        removed, put = Written(), Written()
        with self._backend.write() as db:
            for chunk in _chunks(stale, _IDS_PER_QUERY):
                removed += _sum_ids(db, chunk)
                db.execute(f"DELETE FROM usage_events WHERE id IN ({_marks(len(chunk))})", chunk)
            present: set[str] = set()
            for chunk in _chunks([row[0] for row in keep], _IDS_PER_QUERY):
                sql = f"SELECT id FROM usage_events WHERE id IN ({_marks(len(chunk))})"
                present.update(row["id"] for row in db.query(sql, chunk))
            missing = [row for row in keep if row[0] not in present]
            executemany(db, _INSERT_USAGE, missing + stamped)
            for chunk in _chunks([row[0] for row in missing], _IDS_PER_QUERY):
                put += _sum_ids(db, chunk)
            added = db.query(_ADDED, (prefix, prefix + "~"))[0]
        self.written.added += put.added + int(added["n"]) - removed.added
        self.written.cost += put.cost + int(added["cost"]) - removed.cost
        self.written.tokens += put.tokens + int(added["tokens"]) - removed.tokens
        self.written.rows += rows
        self._fresh -= changed
        for run_id in changed:
            self._final.pop(run_id, None)

    def add(self, rows: list[UsageRow]) -> None:
        """Usage rows of runs given to `run()` before; written at the next flush."""
        self._pending.extend(rows)

    def flush(self) -> None:
        """The rows given to `add()` and the runs not written yet, in one transaction."""
        if not self._pending and not self._unwritten:
            return
        pending, self._pending = self._pending, []
        if self._backend.dialect == "sqlite":
            prefix, stamped = stamp_rows(pending)
            self.write_rows(stamped, [prefix], RunSums.of(pending))
        else:
            new, self._unwritten = self._unwritten, []
            runs = [self.runs[run_id] for run_id in new]
            self.written += write_batch(self._backend, self.user_id, self.host, runs, pending)
            self._sums = None  # finish reads the totals back

    def finish(self) -> None:
        """Flush, then each touched run's span, counts and totals (from all its rows, old and new)."""
        self.flush()
        self.build_indexes()  # before the reads by run below
        done = self._merged | self._fresh  # a run this import created holds only what it wrote: nothing to fold in
        self._merge_existing([run_id for run_id in self.runs if run_id not in done])
        ids = [run_id for run_id, run in self.runs.items() if not run.supervised]
        totals: dict[str, tuple[int, ...]] = {}
        known = self._sums.runs if self._sums is not None else {}
        unknown = []
        for run_id in ids:
            if run_id in self._fresh and self._sums is not None:
                totals[run_id] = tuple(known.get(run_id, (0, 0, 0)))  # every row of the run is one this import wrote
            else:
                unknown.append(run_id)
        for chunk in _chunks(unknown, _IDS_PER_QUERY):
            totals.update(
                (r["run_id"], (int(r["cost"]), int(r["tokens"]), int(r["steps"])))
                for r in self._backend.query(_TOTALS.format(marks=_marks(len(chunk))), chunk)
            )
        final = self._final if self._sums is not None else {}
        changed = [
            row for row in (_finished(self.runs[i], totals.get(i, (0, 0, 0))) for i in ids) if final.get(row[-1]) != row
        ]
        with self._backend.write() as db:
            executemany(db, _FINISH, changed)
        # The checkpointer's last pass overlapped the above; what is left is checkpointed by SQLite when the ledger
        # is closed, or at its next automatic checkpoint.
        self.close()
        if self._backend.dialect == "sqlite":
            _sqlite(self._backend).set_pragmas("wal_autocheckpoint = 1000")

    def close(self) -> None:
        """Stop the background checkpoints (at the end of an import, or when it fails); indexes dropped for the
        import are built again."""
        try:
            self.build_indexes()
        except LedgerError:
            pass  # the import failed writing: the ledger's next open builds them
        if self._checkpointer is not None:
            self._checkpointer.close()
            self._checkpointer = None

    def _merge_existing(self, run_ids: list[str]) -> None:
        """Fold in what the ledger holds for these runs: an earlier import's span and, for files read on from an
        offset, its malformed lines (a run this import inserted holds a part of its own span: harmless)."""
        for chunk in _chunks(run_ids, _IDS_PER_QUERY):
            sql = (
                f"SELECT id, started_utc, ended_utc, malformed_lines, status FROM runs"
                f" WHERE id IN ({_marks(len(chunk))})"
            )
            for before in self._backend.query(sql, chunk):
                run = self.runs[before["id"]]
                run.supervised = before["status"] != IMPORTED
                run.widen(before["started_utc"], before["ended_utc"])
                if run.read_on:
                    run.malformed += before["malformed_lines"] or 0
        self._merged.update(run_ids)

    def holds(self, key_prefix: str) -> bool:
        """Whether the ledger holds any usage row whose key starts with `key_prefix` (asked before an import
        writes: when it holds none, no key of the import need be looked up)."""
        sql = "SELECT 1 AS x FROM usage_events WHERE dedupe_key LIKE ? LIMIT 1"  # portable across collations
        return bool(self._backend.query(sql, (key_prefix.replace("%", "").replace("_", "") + "%",)))

    def known_figures(self, keys: list[str], besides: set[str]) -> dict[str, list[int]]:
        """Request key (`claude:<id>`) -> [input, output, cache read, cache write, 1h part, web searches,
        corrections] of its rows in the ledger (`<key>` and its corrections `<key>+<n>`, from any file or a
        supervised run), leaving out the rows whose ids start with one of the prefixes `besides` (this import's):
        what an import continues max-wins from. Keys the ledger does not hold are left out."""
        known: dict[str, list[int]] = {}
        sql = (
            "SELECT id, dedupe_key, input_tokens, output_tokens, cache_read_tokens, cache_write_tokens, details"
            " FROM usage_events WHERE dedupe_key IN ({marks})"
        )
        asked = {key: key for key in keys}  # the key asked for next (`<key>+<n>`) -> its request
        fix = 0
        while asked:
            found: dict[str, str] = {}
            names = list(asked)
            for chunk in _chunks(names, _IDS_PER_QUERY):
                for row in self._backend.query(sql.format(marks=_marks(len(chunk))), chunk):
                    if row["id"][:16] in besides:
                        continue  # written by this import: what it settles, not what it continues from
                    key = asked[row["dedupe_key"]]
                    extra = json.loads(row["details"]) if row["details"] else {}
                    figures = known.setdefault(key, [0, 0, 0, 0, 0, 0, 0])
                    add = (
                        row["input_tokens"],
                        row["output_tokens"],
                        row["cache_read_tokens"],
                        row["cache_write_tokens"],
                        extra.get("cache_write_1h", 0),
                        extra.get("web_searches", 0),
                    )
                    for i, value in enumerate(add):
                        figures[i] += value
                    figures[6] = fix
                    found[key] = key
            fix += 1
            asked = {f"{key}+{fix}": key for key in found}
        return known
