"""The ledger against real databases: SQLite always, PostgreSQL when CAPGUARD_TEST_PG_DSN is set.

Real processes for crash and concurrency. PostgreSQL tests each get a fresh schema in the DSN's database
(password from PGPASSWORD or ~/.pgpass, never in the DSN).
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest

from capguard.core.errors import LedgerError
from capguard.ledger import AckRecord, RunEnd, RunStart, UsageRecord, open_ledger, utc_now
from capguard.ledger.migrations import MIGRATIONS, Migration
from capguard.ledger.sqlite import PAGE_SIZE

REPO = Path(__file__).resolve().parents[2]
FIXTURES = REPO / "tests" / "fixtures" / "ledger"
PG_DSN = os.environ.get("CAPGUARD_TEST_PG_DSN")

BACKENDS = [
    "sqlite",
    pytest.param("postgresql", marks=pytest.mark.skipif(not PG_DSN, reason="CAPGUARD_TEST_PG_DSN is not set")),
]

# The migrations of a blank ledger, in order
APPLIED = ["m001_initial", "m002_monthly_acks"]

# The exact schema of a blank ledger: columns (name, type, NOT NULL), primary key, UNIQUE sets, foreign keys.
EXPECTED_TABLES = {
    "capguard_migrations": {
        "columns": [("name", "text", True), ("applied_utc", "text", True)],
        "pk": ("name",),
        "unique": set(),
        "fks": set(),
    },
    "users": {
        "columns": [("id", "text", True), ("name", "text", True), ("created_utc", "text", True)],
        "pk": ("id",),
        "unique": {("name",)},
        "fks": set(),
    },
    "runs": {
        "columns": [
            ("id", "text", True),
            ("user_id", "text", True),
            ("line", "text", False),
            ("project", "text", False),
            ("agent", "text", True),
            ("agent_version", "text", False),
            ("argv", "text", True),
            ("cwd", "text", True),
            ("host", "text", True),
            ("started_utc", "text", True),
            ("ended_utc", "text", False),
            ("caps", "text", True),
            ("status", "text", True),
            ("stop_reason", "text", False),
            ("exit_code", "integer", False),
            ("cost_micro_usd", "bigint", False),
            ("tokens", "bigint", False),
            ("steps", "integer", False),
            ("malformed_lines", "integer", False),
            ("report", "text", False),
        ],
        "pk": ("id",),
        "unique": set(),
        "fks": {("user_id", "users", "id")},
    },
    "usage_events": {
        "columns": [
            ("id", "text", True),
            ("run_id", "text", True),
            ("dedupe_key", "text", True),
            ("occurred_utc", "text", True),
            ("recorded_utc", "text", True),
            ("model", "text", False),
            ("input_tokens", "bigint", True),
            ("output_tokens", "bigint", True),
            ("cache_read_tokens", "bigint", True),
            ("cache_write_tokens", "bigint", True),
            ("cost_micro_usd", "bigint", False),
            ("priced_by", "text", False),
            ("source_file", "text", False),
            ("source_offset", "bigint", False),
            ("details", "text", False),
        ],
        "pk": ("id",),
        "unique": {("dedupe_key",)},
        "fks": {("run_id", "runs", "id")},
    },
    "monthly_acks": {
        "columns": [
            ("id", "text", True),
            ("user_id", "text", True),
            ("scope", "text", True),
            ("scope_name", "text", True),
            ("month", "text", True),
            ("created_utc", "text", True),
            ("host", "text", True),
            ("reason", "text", True),
            ("spent_micro_usd", "bigint", True),
            ("cap_micro_usd", "bigint", True),
            ("limit_micro_usd", "bigint", True),
        ],
        "pk": ("id",),
        "unique": set(),
        "fks": {("user_id", "users", "id")},
    },
}
EXPECTED_INDEXES = {
    "runs_user_started": ("runs", ("user_id", "started_utc")),
    "runs_line_started": ("runs", ("line", "started_utc")),
    "usage_events_run": ("usage_events", ("run_id", "occurred_utc")),
    "usage_events_occurred": ("usage_events", ("occurred_utc",)),
    "monthly_acks_scope_created": ("monthly_acks", ("scope", "scope_name", "created_utc")),
}


# --- fixtures and helpers ---------------------------------------------------------------------------------------


@pytest.fixture(autouse=True)
def _capguard_home(tmp_path, monkeypatch):
    monkeypatch.setenv("CAPGUARD_HOME", str(tmp_path / "home"))


def with_option(dsn: str, option: str) -> str:
    """The DSN with a server setting added (`options=-c...`), e.g. a per-test search_path."""
    return dsn + ("&" if "?" in dsn else "?") + "options=" + option.replace("=", "%3D")


@pytest.fixture
def make_target(request, tmp_path):
    """A factory of fresh, empty ledger targets: SQLite files, or PostgreSQL schemas dropped afterwards."""
    backend = request.param if hasattr(request, "param") else "sqlite"
    schemas: list[str] = []
    files = iter(range(1000))

    def make() -> str:
        if backend == "sqlite":
            return str(tmp_path / f"data{next(files)}" / "ledger.db")
        import psycopg

        schema = f"cg_test_{os.getpid()}_{time.monotonic_ns()}"
        with psycopg.connect(PG_DSN, autocommit=True) as conn:
            conn.execute(f"CREATE SCHEMA {schema}")
        schemas.append(schema)
        return with_option(PG_DSN, f"-csearch_path={schema}")

    yield make
    if backend == "postgresql" and schemas:
        import psycopg

        with psycopg.connect(PG_DSN, autocommit=True) as conn:
            for schema in schemas:
                conn.execute(f"DROP SCHEMA {schema} CASCADE")


@pytest.fixture
def target(make_target):
    return make_target()


def backends(test):
    """Run `test` once per backend; its `make_target`/`target` fixtures follow the backend."""
    return pytest.mark.parametrize("make_target", BACKENDS, indirect=True)(test)


def raw_script(target: str, sql: str) -> None:
    if target.startswith("postgresql://"):
        import psycopg

        with psycopg.connect(target, autocommit=True) as conn:
            conn.execute(sql)
    else:
        Path(target).parent.mkdir(parents=True, exist_ok=True)
        with sqlite3.connect(target) as conn:
            conn.executescript(sql)
        conn.close()


def raw_query(target: str, sql: str) -> list[tuple]:
    if target.startswith("postgresql://"):
        import psycopg

        with psycopg.connect(target) as conn:
            return [tuple(row) for row in conn.execute(sql)]
    conn = sqlite3.connect(target)
    try:
        return [tuple(row) for row in conn.execute(sql)]
    finally:
        conn.close()


def describe_schema(target: str) -> tuple[dict, dict]:
    """(tables, indexes) in the shape of EXPECTED_TABLES / EXPECTED_INDEXES, read from the catalog."""
    if target.startswith("postgresql://"):
        return _describe_postgres(target)
    conn = sqlite3.connect(target)
    try:
        tables, indexes = {}, {}
        names = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")]
        for table in names:
            info = conn.execute(f"PRAGMA table_info({table})").fetchall()
            pk = tuple(r[1] for r in sorted((r for r in info if r[5]), key=lambda r: r[5]))
            unique = set()
            for _, index, is_unique, origin, _ in conn.execute(f"PRAGMA index_list({table})"):
                cols = tuple(r[2] for r in conn.execute(f"PRAGMA index_info({index})"))
                if origin == "u":
                    unique.add(cols)
                elif origin == "c":
                    indexes[index] = (table, cols)
            fks = {(r[3], r[2], r[4]) for r in conn.execute(f"PRAGMA foreign_key_list({table})")}
            columns = [(r[1], r[2].lower(), bool(r[3])) for r in info]
            tables[table] = {"columns": columns, "pk": pk, "unique": unique, "fks": fks}
        return tables, indexes
    finally:
        conn.close()


def _describe_postgres(target: str) -> tuple[dict, dict]:
    import psycopg

    with psycopg.connect(target) as conn:
        tables: dict = {}
        for table, column, kind, nullable in conn.execute(
            "SELECT table_name, column_name, data_type, is_nullable FROM information_schema.columns"
            " WHERE table_schema = current_schema() ORDER BY table_name, ordinal_position"
        ):
            entry = tables.setdefault(table, {"columns": [], "pk": (), "unique": set(), "fks": set()})
            entry["columns"].append((column, kind, nullable == "NO"))
        for table, kind, cols in conn.execute(
            "SELECT t.relname, c.contype, array(SELECT a.attname FROM unnest(c.conkey) WITH ORDINALITY k(n, o)"
            " JOIN pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = k.n ORDER BY k.o)"
            " FROM pg_constraint c JOIN pg_class t ON t.oid = c.conrelid"
            " WHERE t.relnamespace = current_schema()::regnamespace AND c.contype IN ('p', 'u')"
        ):
            if kind == "p":
                tables[table]["pk"] = tuple(cols)
            else:
                tables[table]["unique"].add(tuple(cols))
        for table, column, ref_table, ref_column in conn.execute(
            "SELECT t.relname, a.attname, rt.relname, ra.attname FROM pg_constraint c"
            " JOIN pg_class t ON t.oid = c.conrelid JOIN pg_class rt ON rt.oid = c.confrelid"
            " JOIN pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = c.conkey[1]"
            " JOIN pg_attribute ra ON ra.attrelid = c.confrelid AND ra.attnum = c.confkey[1]"
            " WHERE t.relnamespace = current_schema()::regnamespace AND c.contype = 'f'"
        ):
            tables[table]["fks"].add((column, ref_table, ref_column))
        indexes = {}
        for name, table, definition in conn.execute(
            "SELECT indexname, tablename, indexdef FROM pg_indexes i WHERE schemaname = current_schema()"
            " AND NOT EXISTS (SELECT 1 FROM pg_constraint c WHERE c.conname = i.indexname)"
        ):
            cols = re.search(r"\((.*)\)$", definition).group(1)
            indexes[name] = (table, tuple(c.strip() for c in cols.split(",")))
        return tables, indexes


def start(run_id: str, *, user: str = "alice", line: str | None = None, started: str | None = None) -> RunStart:
    return RunStart(
        run_id,
        "claude",
        ["claude", "-p", "fix it"],
        "/work/x",
        user,
        "laptop",
        started or utc_now(),
        {"usd": {"value": 5.0, "origin": "flag"}},
        project="x",
        line=line,
        agent_version="2.0.14",
    )


def usage(
    key: str,
    *,
    at: str | None = None,
    cost: int | None = 1000,
    tokens: tuple = (100, 20, 3000, 40),
    priced_by: str | None = "agent",
) -> UsageRecord:
    return UsageRecord(
        key,
        at or utc_now(),
        "claude-sonnet-4-5",
        *tokens,
        cost,
        priced_by if cost is not None else None,
        source_file="/logs/s.jsonl",
        source_offset=0,
        details={"service_tier": "standard"},
    )


def end(**overrides) -> RunEnd:
    values = dict(
        ended_utc=utc_now(),
        stop_reason="usd",
        exit_code=124,
        cost_micro_usd=5_020_000,
        tokens=1234,
        steps=37,
        malformed_lines=1,
        report={"verdict": "cost $5.02 exceeded cap $5.00"},
    )
    return RunEnd(**{**values, **overrides})


def assert_one_line(error: LedgerError, *needles: str) -> None:
    text = str(error)
    assert "\n" not in text and text.strip() == text
    assert ";" in text, f"no fix given in {text!r}"
    for needle in needles:
        assert needle in text


def writer_env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}


def wait_for(predicate, *, timeout: float = 30.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)


# --- schema and migrations --------------------------------------------------------------------------------------


@backends
def test_blank_ledger_has_exact_schema(target):
    with open_ledger(target) as ledger:
        assert ledger.schema_version() == APPLIED
    tables, indexes = describe_schema(target)
    assert tables == EXPECTED_TABLES
    assert indexes == EXPECTED_INDEXES


@backends
def test_v1_fixture_is_what_the_first_migration_made(make_target):
    fixture, migrated = make_target(), make_target()
    raw_script(fixture, (FIXTURES / "v1.sql").read_text())
    open_ledger(migrated, migrations=MIGRATIONS[:1]).close()
    assert describe_schema(fixture) == describe_schema(migrated)


@backends
def test_v1_ledger_upgrades_to_current_schema_keeping_its_data(target):
    raw_script(target, (FIXTURES / "v1.sql").read_text())
    with open_ledger(target) as ledger:
        assert ledger.schema_version() == [m.name for m in MIGRATIONS]
        done = ledger.run("01k9run00000000000000done")
        assert (done["user"], done["status"], done["cost_micro_usd"]) == ("alice", "stopped", 5_020_000)
        assert done["argv"] == ["claude", "-p", "fix the tests"]
        assert [e["dedupe_key"] for e in ledger.usage("01k9run00000000000000done")] == [
            "claude:msg_01:req_01",
            "claude:msg_02:req_02",
        ]
        assert ledger.spend() == (5_020_000, 117_100)
        assert ledger.spend(line="research") == (5_020_000, 116_500)
    assert describe_schema(target) == (EXPECTED_TABLES, EXPECTED_INDEXES)


@backends
def test_v2_fixture_is_what_the_first_two_migrations_made(make_target):
    fixture, migrated = make_target(), make_target()
    raw_script(fixture, (FIXTURES / "v2.sql").read_text())
    open_ledger(migrated, migrations=MIGRATIONS[:2]).close()
    assert describe_schema(fixture) == describe_schema(migrated)


@backends
def test_v2_ledger_upgrades_to_current_schema_keeping_its_acks(target):
    raw_script(target, (FIXTURES / "v2.sql").read_text())
    with open_ledger(target) as ledger:
        assert ledger.schema_version() == [m.name for m in MIGRATIONS]
        acks = ledger.acks("user", "alice", since_utc="2026-11-01", until_utc="2026-12-01")
        assert [(a["user"], a["reason"], a["limit_micro_usd"]) for a in acks] == [
            ("alice", "release on Friday", 6_270_000)
        ]
        assert ledger.spend(user="alice") == (5_020_000, 117_100)
    assert describe_schema(target) == (EXPECTED_TABLES, EXPECTED_INDEXES)


@backends
def test_reopening_does_not_reapply_migrations(target):
    open_ledger(target).close()
    before = raw_query(target, "SELECT name, applied_utc FROM capguard_migrations")
    with open_ledger(target) as ledger:
        assert ledger.schema_version() == APPLIED
    assert raw_query(target, "SELECT name, applied_utc FROM capguard_migrations") == before


def _half_done_then_fails(db):
    db.execute("CREATE TABLE half_done (x INTEGER)")
    db.execute("INSERT INTO half_done (x) VALUES (1)")
    raise RuntimeError("boom")


@backends
def test_failing_migration_leaves_nothing_behind(target):
    failing = Migration("m999_half_done", _half_done_then_fails)
    with pytest.raises(LedgerError) as info:
        open_ledger(target, migrations=[*MIGRATIONS, failing])
    assert_one_line(info.value, "m999_half_done", "boom")
    with open_ledger(target) as ledger:
        assert ledger.schema_version() == APPLIED
    assert describe_schema(target) == (EXPECTED_TABLES, EXPECTED_INDEXES)


@backends
def test_failing_first_migration_leaves_a_blank_database(target):
    with pytest.raises(LedgerError):
        open_ledger(target, migrations=[Migration("m001_broken", _half_done_then_fails)])
    assert describe_schema(target) == ({}, {})


def test_injected_migrations_with_a_repeated_name_are_refused(tmp_path):
    twice = [*MIGRATIONS, Migration("m001_initial", _half_done_then_fails)]
    with pytest.raises(ValueError, match="m001_initial"):
        open_ledger(tmp_path / "ledger.db", migrations=twice)


# --- runs and usage ---------------------------------------------------------------------------------------------


@backends
def test_run_is_visible_while_running_and_complete_after_finish(target):
    with open_ledger(target) as ledger:
        ledger.start_run(start("r1", line="research", started="2026-11-23T08:15:02.123456Z"))
        running = ledger.run("r1")
        assert running["status"] == "running" and running["ended_utc"] is None
        assert running["started_utc"] == "2026-11-23T08:15:02.123456Z"
        assert running["caps"] == {"usd": {"value": 5.0, "origin": "flag"}}
        ledger.finish_run("r1", end(ended_utc="2026-11-23T08:29:05Z"))
        done = ledger.run("r1")
    assert {
        k: done[k]
        for k in ("status", "stop_reason", "exit_code", "cost_micro_usd", "steps", "user", "line", "ended_utc")
    } == {
        "status": "stopped",
        "stop_reason": "usd",
        "exit_code": 124,
        "cost_micro_usd": 5_020_000,
        "steps": 37,
        "user": "alice",
        "line": "research",
        "ended_utc": "2026-11-23T08:29:05.000000Z",
    }
    assert done["report"] == {"verdict": "cost $5.02 exceeded cap $5.00"}


@backends
def test_agent_exiting_by_itself_is_recorded_as_exited(target):
    with open_ledger(target) as ledger:
        ledger.start_run(start("r1"))
        ledger.finish_run("r1", end(stop_reason=None, exit_code=0))
        assert ledger.run("r1")["status"] == "exited"
        assert ledger.run("unknown") is None


@backends
def test_record_usage_is_idempotent_per_dedupe_key(target):
    with open_ledger(target) as ledger:
        ledger.start_run(start("r1"))
        ledger.start_run(start("r2"))
        assert ledger.record_usage("r1", usage("claude:msg_1:req_1")) is True
        assert ledger.record_usage("r1", usage("claude:msg_1:req_1")) is False
        assert ledger.record_usage("r2", usage("claude:msg_1:req_1")) is False  # a resumed session re-read
        assert len(ledger.usage("r1")) == 1 and ledger.usage("r2") == []
        assert ledger.spend() == (1000, 3160)


@backends
def test_usage_rows_come_back_in_order_with_details(target):
    with open_ledger(target) as ledger:
        ledger.start_run(start("r1"))
        ledger.record_usage("r1", usage("b", at="2026-11-23T08:00:02Z", cost=None))
        ledger.record_usage("r1", usage("a", at="2026-11-23T08:00:01Z"))
        rows = ledger.usage("r1")
    assert [(r["dedupe_key"], r["occurred_utc"], r["cost_micro_usd"], r["priced_by"]) for r in rows] == [
        ("a", "2026-11-23T08:00:01.000000Z", 1000, "agent"),
        ("b", "2026-11-23T08:00:02.000000Z", None, None),
    ]
    assert rows[0]["details"] == {"service_tier": "standard"}


@backends
def test_user_is_added_once(target):
    with open_ledger(target) as ledger:
        ledger.start_run(start("r1", user="alice"))
        ledger.start_run(start("r2", user="alice"))
        ledger.start_run(start("r3", user="bob"))
        assert ledger.run("r1")["user_id"] == ledger.run("r2")["user_id"] != ledger.run("r3")["user_id"]
    assert raw_query(target, "SELECT COUNT(*) FROM users") == [(2,)]


@backends
def test_spend_filters_by_user_line_and_time(target):
    with open_ledger(target) as ledger:
        ledger.start_run(start("a1", user="alice", line="research"))
        ledger.start_run(start("a2", user="alice", line=None))
        ledger.start_run(start("b1", user="bob", line="research"))
        ledger.record_usage("a1", usage("k1", at="2026-10-31T23:59:59.999999Z", cost=1, tokens=(1, 0, 0, 0)))
        ledger.record_usage("a1", usage("k2", at="2026-11-01T00:00:00.5Z", cost=10, tokens=(0, 10, 0, 0)))
        ledger.record_usage("a2", usage("k3", at="2026-11-15T12:00:00Z", cost=100, tokens=(0, 0, 100, 0)))
        ledger.record_usage("b1", usage("k4", at="2026-11-30T23:59:59Z", cost=1000, tokens=(0, 0, 0, 1000)))
        ledger.record_usage("b1", usage("k5", at="2026-12-01T00:00:00Z", cost=None, tokens=(10000, 0, 0, 0)))
        november = dict(since_utc="2026-11-01T00:00:00Z", until_utc="2026-12-01")
        assert ledger.spend() == (1111, 11111)
        assert ledger.spend(user="alice") == (111, 111)
        assert ledger.spend(user="bob") == (1000, 11000)  # the unpriced event adds tokens, not money
        assert ledger.spend(line="research") == (1011, 11011)
        assert ledger.spend(**november) == (1110, 1110)
        assert ledger.spend(user="alice", line="research", **november) == (10, 10)
        assert ledger.spend(since_utc="2026-11-01T01:00:00+01:00", until_utc="2026-11-01T00:00:00.500001Z") == (10, 10)
        assert ledger.spend(user="nobody") == (0, 0)


@backends
def test_spend_of_one_run_or_of_every_other_run(target):
    with open_ledger(target) as ledger:
        ledger.start_run(start("a1", user="alice"))
        ledger.start_run(start("a2", user="alice"))
        ledger.record_usage("a1", usage("k1", at="2026-11-01T00:00:00Z", cost=1, tokens=(1, 0, 0, 0)))
        ledger.record_usage("a1", usage("k2", at="2026-11-02T00:00:00Z", cost=10, tokens=(1, 0, 0, 0)))
        ledger.record_usage("a2", usage("k3", at="2026-11-02T00:00:00Z", cost=100, tokens=(1, 0, 0, 0)))
        assert ledger.spend(run="a1") == (11, 2)
        assert ledger.spend(run="a1", until_utc="2026-11-02") == (1, 1)
        assert ledger.spend(user="alice", not_run="a1") == (100, 1)
        assert ledger.spend(user="alice", not_run="a2", since_utc="2026-11-02") == (10, 1)


def ack(
    user: str = "alice",
    *,
    scope: str = "user",
    name: str = "alice",
    at: str = "2026-11-20T10:00:00Z",
    limit: int = 6_000_000,
    reason: str = "release day",
) -> AckRecord:
    return AckRecord(user, scope, name, at[:7], at, "laptop", reason, 5_010_000, 5_000_000, limit)


@backends
def test_acks_are_recorded_with_their_reason_and_listed_per_budget_and_time(target):
    with open_ledger(target) as ledger:
        ledger.record_ack(ack(at="2026-10-31T23:59:59.999999Z", limit=1))
        ledger.record_ack(ack(at="2026-11-01T00:00:00Z", limit=2))
        ledger.record_ack(ack(user="bob", scope="line", name="infra", at="2026-11-05T00:00:00Z", reason="outage"))
        ledger.record_ack(ack(at="2026-11-30T12:00:00Z", limit=3, reason="demo"))
        november = dict(since_utc="2026-11-01", until_utc="2026-12-01")
        mine = ledger.acks("user", "alice", **november)
        assert [(a["limit_micro_usd"], a["reason"], a["user"]) for a in mine] == [
            (2, "release day", "alice"),
            (3, "demo", "alice"),
        ]
        line = ledger.acks("line", "infra", **november)
        assert [(a["user"], a["reason"], a["month"], a["host"]) for a in line] == [
            ("bob", "outage", "2026-11", "laptop")
        ]
        assert ledger.acks("user", "bob", **november) == []


def test_an_ack_needs_a_reason_and_a_known_scope():
    with pytest.raises(ValueError, match="reason"):
        ack(reason="  ")
    with pytest.raises(ValueError, match="scope"):
        ack(scope="team")


@backends
def test_usage_for_an_unknown_run_is_refused(target):
    with open_ledger(target) as ledger:
        with pytest.raises(LedgerError) as info:
            ledger.record_usage("ghost", usage("k1"))
        assert_one_line(info.value, "ghost", ledger.path_or_url)
        with pytest.raises(LedgerError):
            ledger.finish_run("ghost", end())


@backends
def test_a_run_id_is_used_once(target):
    with open_ledger(target) as ledger:
        ledger.start_run(start("r1"))
        with pytest.raises(LedgerError) as info:
            ledger.start_run(start("r1"))
        assert_one_line(info.value, "r1")
        ledger.record_usage("r1", usage("k1"))  # the failed insert left the connection usable
        assert len(ledger.usage("r1")) == 1


# --- crash safety and concurrency -------------------------------------------------------------------------------


@backends
def test_recorded_usage_survives_sigkill_of_its_process(target, tmp_path):
    go = tmp_path / "go"
    go.touch()
    proc = subprocess.Popen(
        [sys.executable, str(FIXTURES / "writer.py"), target, "crash", "5", "0", str(go), "--hang"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=writer_env(),
        text=True,
    )
    try:
        assert proc.stdout.readline().strip() == "committed", proc.stderr.read()
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    with open_ledger(target) as ledger:
        assert [e["dedupe_key"] for e in ledger.usage("crash")] == ["own:crash:0"]
        assert ledger.run("crash")["status"] == "running"


def run_writers(target: str, go: Path, *, writers: int, own: int, shared: int) -> list[tuple[int, str]]:
    """Start `writers` writer processes, release them at once, and return their (exit code, stderr)."""
    procs = [
        subprocess.Popen(
            [sys.executable, str(FIXTURES / "writer.py"), target, f"w{n}", str(own), str(shared), str(go)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            env=writer_env(),
            text=True,
        )
        for n in range(writers)
    ]
    go.touch()
    results = [(proc.wait(timeout=300), proc.stderr.read()) for proc in procs]
    for proc in procs:
        proc.stderr.close()
    return results


@backends
def test_ten_parallel_writers_lose_nothing(target, tmp_path):
    writers, own, shared = 10, 300, 20
    results = run_writers(target, tmp_path / "go", writers=writers, own=own, shared=shared)
    assert results == [(0, "")] * writers
    with open_ledger(target) as ledger:
        assert ledger.schema_version() == APPLIED
        for n in range(writers):
            assert ledger.run(f"w{n}")["status"] == "exited"
        assert ledger.spend() == (7 * (writers * own + shared), 15 * (writers * own + shared))
    assert raw_query(target, "SELECT COUNT(*) FROM usage_events") == [(writers * own + shared,)]


@backends
def test_ten_processes_creating_one_ledger_at_once_all_succeed(make_target, tmp_path):
    for round_ in range(3):  # the race is in the first open of a blank ledger; give it several chances
        target = make_target()
        results = run_writers(target, tmp_path / f"go{round_}", writers=10, own=1, shared=1)
        assert results == [(0, "")] * 10
        assert raw_query(target, "SELECT name FROM capguard_migrations ORDER BY name") == [(n,) for n in APPLIED]


def test_sqlite_ledger_uses_wal(tmp_path):
    open_ledger(tmp_path / "ledger.db").close()
    assert raw_query(str(tmp_path / "ledger.db"), "PRAGMA journal_mode") == [("wal",)]


def test_a_new_sqlite_ledger_has_large_pages_and_an_old_one_keeps_its_own(tmp_path):
    open_ledger(tmp_path / "new.db").close()
    assert raw_query(str(tmp_path / "new.db"), "PRAGMA page_size") == [(PAGE_SIZE,)]
    old = str(tmp_path / "old.db")
    raw_script(old, (FIXTURES / "v1.sql").read_text())
    assert raw_query(old, "PRAGMA page_size") == [(4096,)]
    with open_ledger(old) as ledger:
        assert ledger.spend() == (5_020_000, 117_100)  # upgraded in place, its data kept
    assert raw_query(old, "PRAGMA page_size") == [(4096,)]


def _hold_write_lock(path: Path, seconds: float) -> threading.Thread:
    locked = threading.Event()

    def hold() -> None:
        conn = sqlite3.connect(path, isolation_level=None)
        conn.execute("BEGIN IMMEDIATE")
        locked.set()
        time.sleep(seconds)
        conn.execute("COMMIT")
        conn.close()

    thread = threading.Thread(target=hold)
    thread.start()
    locked.wait(5)
    return thread


def test_sqlite_writer_waits_for_another_writers_lock(tmp_path):
    path = tmp_path / "ledger.db"
    with open_ledger(path) as ledger:
        ledger.start_run(start("r1"))
        holder = _hold_write_lock(path, 1.0)
        assert ledger.record_usage("r1", usage("k1")) is True
        holder.join()


def test_sqlite_lock_held_past_the_busy_timeout_is_a_ledger_error(tmp_path):
    path = tmp_path / "ledger.db"
    with open_ledger(path, busy_timeout_s=0.2) as ledger:
        ledger.start_run(start("r1"))
        holder = _hold_write_lock(path, 1.5)
        try:
            with pytest.raises(LedgerError) as info:
                ledger.record_usage("r1", usage("k1"))
        finally:
            holder.join()
        assert_one_line(info.value, str(path), "locked")
        assert ledger.record_usage("r1", usage("k1")) is True


# --- opening: defaults and errors -------------------------------------------------------------------------------


def test_default_ledger_lives_under_capguard_home(tmp_path):
    with open_ledger() as ledger:
        assert ledger.path_or_url == str(tmp_path / "home" / "ledger.db")
    assert (tmp_path / "home" / "ledger.db").is_file()


def test_not_a_database_is_a_ledger_error(tmp_path):
    path = tmp_path / "ledger.db"
    path.write_text("these are my notes, not a database\n" * 200)
    with pytest.raises(LedgerError) as info:
        open_ledger(path)
    assert_one_line(info.value, str(path), "not a SQLite database")


def test_corrupted_database_is_a_ledger_error(tmp_path):
    path = tmp_path / "ledger.db"
    with open_ledger(path) as ledger:
        ledger.start_run(start("r1"))
    with open(path, "r+b") as handle:  # keep the 100-byte header, smash the schema page
        handle.seek(100)
        handle.write(b"\xff" * 3000)
    with pytest.raises(LedgerError) as info:
        open_ledger(path)
    assert_one_line(info.value, str(path), "corrupted")


def test_directory_in_place_of_the_ledger_is_a_ledger_error(tmp_path):
    path = tmp_path / "ledger.db"
    path.mkdir()
    with pytest.raises(LedgerError) as info:
        open_ledger(path)
    assert_one_line(info.value, str(path), "directory")


def test_file_in_place_of_the_ledger_folder_is_a_ledger_error(tmp_path):
    (tmp_path / "data").write_text("")
    with pytest.raises(LedgerError) as info:
        open_ledger(tmp_path / "data" / "ledger.db")
    assert_one_line(info.value, str(tmp_path / "data"))


@pytest.fixture
def shared_dir():
    """A folder an unprivileged user can reach (pytest's tmp_path is private to root when run as root)."""
    path = Path(tempfile.mkdtemp(prefix="cg-ledger-"))
    path.chmod(0o755)
    yield path
    for folder in [path, *path.rglob("*")]:
        if folder.is_dir():
            folder.chmod(0o755)
    shutil.rmtree(path)


def open_error_unprivileged(path: Path) -> str:
    """open_ledger(path)'s error, as a user whose file permissions apply (root's are ignored by the kernel)."""
    if os.geteuid() != 0:
        try:
            open_ledger(path).close()
        except LedgerError as exc:
            return f"LedgerError: {exc}"
        return "no error"
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: drop to nobody, report through the pipe, never return into pytest
        try:
            os.close(read_end)
            os.setgid(65534)
            os.setuid(65534)
            try:
                open_ledger(path).close()
                outcome = "no error"
            except LedgerError as exc:
                outcome = f"LedgerError: {exc}"
            except BaseException as exc:
                outcome = f"{type(exc).__name__}: {exc}"
            os.write(write_end, outcome.encode())
        finally:
            os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as pipe:
        outcome = pipe.read().decode()
    os.waitpid(pid, 0)
    return outcome


def test_read_only_ledger_file_is_a_ledger_error(shared_dir):
    path = shared_dir / "ledger.db"
    open_ledger(path).close()
    path.chmod(0o444)
    shared_dir.chmod(0o777)  # the folder is writable: only the file refuses
    outcome = open_error_unprivileged(path)
    assert outcome.startswith("LedgerError: ") and "\n" not in outcome
    assert str(path) in outcome and "read-only" in outcome and "writable" in outcome


def test_read_only_ledger_folder_is_a_ledger_error(shared_dir):
    path = shared_dir / "ledger.db"
    open_ledger(path).close()
    path.chmod(0o666)
    shared_dir.chmod(0o555)  # WAL needs to create ledger.db-wal and -shm next to the file
    outcome = open_error_unprivileged(path)
    assert outcome.startswith("LedgerError: ") and "\n" not in outcome
    assert str(path) in outcome and "writable" in outcome


def test_empty_path_is_a_ledger_error():
    with pytest.raises(LedgerError):
        open_ledger("")


# --- PostgreSQL connection errors (no server needed) ------------------------------------------------------------


def test_postgres_url_with_a_password_is_refused_without_echoing_it():
    with pytest.raises(LedgerError) as info:
        open_ledger("postgresql://alice:s3cret-pw@db.example:5432/capguard")
    assert_one_line(info.value, "postgresql://alice@db.example:5432/capguard", "PGPASSWORD")
    assert "s3cret-pw" not in str(info.value)
    with pytest.raises(LedgerError) as info:
        open_ledger("postgresql://alice@db.example/capguard?sslmode=require&password=s3cret-pw")
    assert "s3cret-pw" not in str(info.value) and "sslmode=require" in str(info.value)


def test_unreachable_postgres_is_a_ledger_error():
    pytest.importorskip("psycopg")
    url = "postgresql://capguard@127.0.0.1:1/capguard?connect_timeout=3"
    with pytest.raises(LedgerError) as info:
        open_ledger(url)
    assert_one_line(info.value, url, "server")


def test_postgres_url_without_psycopg_is_a_ledger_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "psycopg", None)  # import now raises ImportError
    with pytest.raises(LedgerError) as info:
        open_ledger("postgresql://capguard@127.0.0.1/capguard")
    assert_one_line(info.value, "postgresql://capguard@127.0.0.1/capguard", "psycopg", "pip install")


@pytest.mark.skipif(not PG_DSN, reason="CAPGUARD_TEST_PG_DSN is not set")
def test_read_only_postgres_is_a_ledger_error():
    url = with_option(PG_DSN, "-cdefault_transaction_read_only=on")
    with pytest.raises(LedgerError) as info:
        open_ledger(url)
    assert_one_line(info.value, url, "cannot be written")


@pytest.mark.skipif(not PG_DSN, reason="CAPGUARD_TEST_PG_DSN is not set")
def test_wrong_postgres_password_is_a_ledger_error(monkeypatch, tmp_path):
    monkeypatch.setenv("PGPASSWORD", "wrong-pw-123")
    monkeypatch.setenv("PGPASSFILE", str(tmp_path / "no-pgpass"))
    url = with_option(PG_DSN, "-cdefault_transaction_read_only=on")  # if it connects, it must not write
    with pytest.raises(LedgerError) as info:
        open_ledger(url)
    if "cannot connect" not in str(info.value):
        pytest.skip("this server does not ask for a password")
    assert_one_line(info.value, url, "PGPASSWORD")
    assert "wrong-pw-123" not in str(info.value)


def test_the_background_checkpointer_copies_the_wal_into_the_database(tmp_path):
    from capguard.ledger.sqlite import WalCheckpointer

    path = tmp_path / "bulk.db"
    writer = sqlite3.connect(path, isolation_level=None)
    writer.execute("PRAGMA journal_mode = WAL")
    writer.execute("PRAGMA wal_autocheckpoint = 0")  # as an import's writer: it never checkpoints itself
    writer.execute("CREATE TABLE t (x TEXT)")
    writer.executemany("INSERT INTO t VALUES (?)", [("x" * 100,)] * 5000)
    size_before = path.stat().st_size
    checkpointer = WalCheckpointer(str(path))
    checkpointer.request()
    checkpointer.close()  # waits for the checkpoint under way
    busy, wal_frames, copied = writer.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
    assert path.stat().st_size > size_before + 400_000  # the rows are in the database file now
    assert busy == 0 and copied == wal_frames > 0
    checkpointer.close()  # twice is harmless
    writer.close()
