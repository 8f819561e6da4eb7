"""The ledger's pure parts: timestamps, record validation, the migration registry, URL and error wording."""

from __future__ import annotations

import re
import sqlite3

import pytest

from capguard.core.errors import LedgerError
from capguard.ledger import RunEnd, RunStart, UsageRecord, _sqlite_path, normalize_utc, utc_now
from capguard.ledger.backend import one_line
from capguard.ledger.migrations import MIGRATIONS, Migration, check_names, migration
from capguard.ledger.postgres import check_url, safe_url
from capguard.ledger.sqlite import describe


def usage(**overrides) -> UsageRecord:
    values = dict(
        dedupe_key="claude:m:r",
        occurred_utc="2026-11-23T08:15:02Z",
        model="m",
        input_tokens=1,
        output_tokens=2,
        cache_read_tokens=3,
        cache_write_tokens=4,
        cost_micro_usd=10,
        priced_by="agent",
    )
    return UsageRecord(**{**values, **overrides})


def test_utc_now_is_canonical_utc_text():
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z", utc_now())


@pytest.mark.parametrize(
    "given, canonical",
    [
        ("2026-11-23T08:15:02.123456Z", "2026-11-23T08:15:02.123456Z"),
        ("2026-11-23T08:15:02Z", "2026-11-23T08:15:02.000000Z"),
        ("2026-11-23T09:15:02+01:00", "2026-11-23T08:15:02.000000Z"),
        ("2026-11-23T08:15:02", "2026-11-23T08:15:02.000000Z"),
        ("2026-11-23", "2026-11-23T00:00:00.000000Z"),
    ],
)
def test_timestamps_are_normalized_to_canonical_utc(given, canonical):
    assert normalize_utc(given) == canonical


def test_canonical_text_sorts_in_time_order():
    assert normalize_utc("2026-11-01T00:00:00Z") < normalize_utc("2026-11-01T00:00:00.5Z")
    assert "2026-11-01T00:00:00Z" > "2026-11-01T00:00:00.5Z"  # why normalizing matters


def test_a_non_timestamp_is_refused():
    with pytest.raises(ValueError, match="'yesterday'"):
        normalize_utc("yesterday")


def test_usage_record_counts_all_four_token_kinds():
    assert usage().tokens == 10


@pytest.mark.parametrize(
    "overrides, message",
    [
        (dict(input_tokens=-1), "input_tokens"),
        (dict(cost_micro_usd=1.5), "cost_micro_usd"),
        (dict(priced_by="guess"), "priced_by"),
        (dict(cost_micro_usd=None), "both"),
        (dict(dedupe_key=""), "dedupe_key"),
        (dict(occurred_utc="now"), "ISO-8601"),
    ],
)
def test_usage_record_refuses_bad_values(overrides, message):
    with pytest.raises(ValueError, match=message):
        usage(**overrides)


def test_unpriced_usage_has_neither_cost_nor_pricer():
    assert usage(cost_micro_usd=None, priced_by=None).cost_micro_usd is None


def test_run_start_needs_an_id_and_a_user():
    with pytest.raises(ValueError, match="user"):
        RunStart("r1", "claude", [], "/", "", "h", utc_now(), {})


def test_run_end_status_follows_the_stop_reason():
    def run_end(**kw):
        return RunEnd(utc_now(), kw.pop("stop_reason", None), 0, 0, 0, 0, 0, {}, **kw)

    assert run_end().final_status == "exited"
    assert run_end(stop_reason="usd").final_status == "stopped"
    assert run_end(stop_reason="signal", status="interrupted").final_status == "interrupted"


def test_migration_names_are_unique_and_ordered():
    names = [m.name for m in MIGRATIONS]
    assert names[0] == "m001_initial" and len(set(names)) == len(names)


def test_a_repeated_migration_name_fails_when_defined():
    registry: list[Migration] = []

    def m001_x(db):
        pass

    migration(m001_x, registry=registry)
    with pytest.raises(ValueError, match="m001_x"):
        migration(m001_x, registry=registry)
    assert len(registry) == 1


def test_check_names_refuses_duplicates():
    with pytest.raises(ValueError, match="twice"):
        check_names([MIGRATIONS[0], MIGRATIONS[0]])


@pytest.mark.parametrize(
    "target, expected",
    [
        ("postgresql://u@h/db", True),
        ("postgres://u@h/db", True),
        ("/home/u/ledger.db", False),
        ("postgresql.db", False),
    ],
)
def test_postgres_urls_are_recognised_by_scheme(target, expected):
    assert (_sqlite_path(target) is None) is expected  # not a SQLite file: open_ledger connects to PostgreSQL


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://alice:pw@h:5432/db",
        "postgresql://alice@h/db?password=pw",
        "postgresql://:pw@h/db",
    ],
)
def test_a_url_with_a_password_is_refused_and_never_echoed(url):
    with pytest.raises(LedgerError) as info:
        check_url(url)
    assert "pw" not in str(info.value).replace("PGPASSWORD", "").replace("pgpass", "")


def test_a_url_without_password_passes_and_is_shown_as_is():
    check_url("postgresql://alice@h:5432/db?sslmode=require")
    assert safe_url("postgresql://alice:pw@h:5432/db?sslmode=require") == "postgresql://alice@h:5432/db?sslmode=require"


def test_engine_messages_become_one_line():
    assert one_line('connection failed\n\tIs the server running on "h"?\n') == "connection failed"
    assert one_line("") == "unknown error"


@pytest.mark.parametrize(
    "message, words",
    [
        ("file is not a database", "is not a SQLite database"),
        ("database disk image is malformed", "is corrupted"),
        ("attempt to write a readonly database", "is read-only"),
        ("database is locked", "stayed locked by another process"),
        ("something new", "cannot be used"),
    ],
)
def test_sqlite_errors_name_the_file_the_problem_and_a_fix(message, words):
    text = describe(sqlite3.OperationalError(message), "/data/ledger.db")
    assert text.startswith(f"ledger /data/ledger.db {words} ({message}); ")
