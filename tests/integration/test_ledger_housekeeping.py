"""`capguard ledger export` (CSV, JSON) and `capguard ledger prune --before DATE [--dry-run]`, on SQLite and
PostgreSQL: what a user gets on stdout, and what stays in the ledger."""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
from datetime import datetime, timezone

import pytest

from capguard.cli import ledger_cmd, options
from capguard.cli.commands import COMMANDS
from capguard.cli.dispatch import command_parser
from capguard.core.errors import ConfigError
from capguard.ledger import RunEnd, RunStart, UsageRecord, open_ledger
from tests.integration.test_ledger import BACKENDS, PG_DSN, make_target, with_option  # noqa: F401 (fixture)

backends = pytest.mark.parametrize("make_target", BACKENDS, indirect=True)
NOW = datetime(2026, 12, 10, 12, 0, tzinfo=timezone.utc)


def add_run(target: str, run_id: str, *, start: str, end: str | None, usd: float, model: str = "sonnet") -> None:
    """A run of alice started at `start` with one reply at `start` costing `usd`; ended at `end` unless None."""
    with open_ledger(target) as ledger:
        ledger.start_run(RunStart(run_id, "aider", ["aider"], "/w", "alice", "host", start, {}, line="infra"))
        micro = round(usd * 1e6)
        ledger.record_usage(run_id, UsageRecord(f"k:{run_id}", start, model, 100, 10, 0, 0, micro, "config"))
        if end:
            ledger.finish_run(run_id, RunEnd(end, None, 0, micro, 110, 1, 0, {}))


@pytest.fixture
def seeded(make_target):
    """Runs across four months: September and October (ended), November's, and one of this month (December)."""
    target = make_target()
    add_run(target, "run-sep", start="2026-09-03T10:00:00Z", end="2026-09-03T10:30:00Z", usd=1.0)
    add_run(target, "run-oct", start="2026-10-30T23:00:00Z", end="2026-10-31T23:59:00Z", usd=2.0)
    add_run(target, "run-nov", start="2026-11-20T09:00:00Z", end="2026-11-20T09:05:00Z", usd=4.0, model="=cmd|x")
    add_run(target, "run-dec", start="2026-12-02T09:00:00Z", end="2026-12-02T09:05:00Z", usd=8.0)
    add_run(target, "run-old-open", start="2026-08-01T09:00:00Z", end=None, usd=16.0)  # never finished
    return target


def ledger(target: str, *args: str, capsys) -> str:
    """`capguard ledger ARGS --ledger TARGET` on a clock at NOW; its stdout."""
    ns = command_parser(COMMANDS["ledger"]).parse_args([*args, "--ledger", target])
    assert ledger_cmd.run(ns, options.flags_of(ns), clock=lambda: NOW) == 0
    return capsys.readouterr().out


def run_ids(target: str) -> list[str]:
    with open_ledger(target) as db:
        return sorted(row["run_id"] for row in db.export_runs())


@backends
def test_export_json_has_the_runs_and_usage_rows_of_the_period(seeded, capsys):
    out = json.loads(
        ledger(seeded, "export", "--format", "json", "--since", "2026-10", "--until", "2026-11", capsys=capsys)
    )
    assert [r["run_id"] for r in out["runs"]] == ["run-oct", "run-nov"]
    assert [(u["run_id"], u["cost_micro_usd"], u["user"], u["line"]) for u in out["usage"]] == [
        ("run-oct", 2_000_000, "alice", "infra"),
        ("run-nov", 4_000_000, "alice", "infra"),
    ]
    assert out["runs"][0]["ended_utc"].startswith("2026-10-31T23:59")


@backends
def test_export_csv_is_one_table_whose_names_cannot_run_as_formulas(seeded, capsys):
    rows = list(csv.DictReader(io.StringIO(ledger(seeded, "export", capsys=capsys))))
    assert [(r["record"], r["run_id"]) for r in rows] == [
        ("run", "run-old-open"),
        ("run", "run-sep"),
        ("run", "run-oct"),
        ("run", "run-nov"),
        ("run", "run-dec"),
        ("usage", "run-old-open"),
        ("usage", "run-sep"),
        ("usage", "run-oct"),
        ("usage", "run-nov"),
        ("usage", "run-dec"),
    ]
    nov = next(r for r in rows if r["record"] == "usage" and r["run_id"] == "run-nov")
    assert nov["model"] == "'=cmd|x"  # a spreadsheet shows it, never runs it
    assert (nov["cost_micro_usd"], nov["input_tokens"], nov["user"]) == ("4000000", "100", "alice")
    assert sum(int(r["cost_micro_usd"]) for r in rows if r["record"] == "usage") == 31_000_000


@backends
def test_prune_dry_run_says_what_it_would_delete_and_deletes_nothing(seeded, capsys):
    out = ledger(seeded, "prune", "--before", "2026-11", "--dry-run", capsys=capsys)
    assert out.startswith("capguard: would delete 2 runs that ended before 2026-11 (2026-11-01T00:00 UTC)")
    assert "their 2 usage rows ($3.00)" in out and "nothing was changed" in out
    assert len(run_ids(seeded)) == 5


@backends
def test_prune_deletes_the_runs_that_ended_before_the_date_and_their_usage(seeded, capsys):
    out = ledger(seeded, "prune", "--before", "2026-11-01", capsys=capsys)
    assert out.startswith("capguard: deleted 2 runs that ended before 2026-11-01")
    assert run_ids(seeded) == ["run-dec", "run-nov", "run-old-open"]  # a run still going is never pruned
    with open_ledger(seeded) as db:
        assert [u["run_id"] for u in db.export_usage()] == ["run-old-open", "run-nov", "run-dec"]
        assert db.spend() == (28_000_000, 330)
    assert "deleted 0 runs" in ledger(seeded, "prune", "--before", "2026-11-01", capsys=capsys)  # again: nothing


@backends
@pytest.mark.parametrize("before", ["2026-12-02", "2026-12-01T00:01", "2027-01", "1d"])
def test_prune_refuses_a_date_in_the_current_month_so_monthly_caps_never_change(seeded, capsys, before):
    with pytest.raises(ConfigError, match=r"reaches into the current month \(2026-12.*give 2026-12-01 or earlier"):
        ledger(seeded, "prune", "--before", before, capsys=capsys)
    assert len(run_ids(seeded)) == 5


def test_prune_up_to_the_first_of_this_month_is_allowed(make_target, capsys):
    target = make_target()
    add_run(target, "run-nov", start="2026-11-30T23:00:00Z", end="2026-11-30T23:59:00Z", usd=1.0)
    assert "deleted 1 run that" in ledger(target, "prune", "--before", "2026-12-01", capsys=capsys)


def test_the_month_is_the_teams_time_zone(make_target, tmp_path, monkeypatch, capsys):
    """In Berlin December starts at 23:00 UTC on November 30: a prune up to December 1 (UTC) would reach into it."""
    config = tmp_path / "config.toml"
    config.write_text('[team]\ntimezone = "Europe/Berlin"\n')
    monkeypatch.setenv("CAPGUARD_CONFIG", str(config))
    with pytest.raises(ConfigError, match="give 2026-11-30 or earlier"):
        ledger(make_target(), "prune", "--before", "2026-12-01", capsys=capsys)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["prune"], "--before DATE is required"),
        (["export", "--before", "2026-01"], "--before: only with `capguard ledger prune`"),
        (["prune", "--before", "2026-01", "--since", "7d"], "--since: only with `capguard ledger export`"),
        (["prune", "--before", "yesterday"], "--before: 'yesterday' is not a date"),
    ],
)
def test_options_of_the_wrong_action_are_errors(make_target, capsys, args, message):
    with pytest.raises(ConfigError, match=message):
        ledger(make_target(), *args, capsys=capsys)


def test_export_through_the_command_line(tmp_path):
    target = str(tmp_path / "ledger.db")
    add_run(target, "run-a", start="2026-09-03T10:00:00Z", end="2026-09-03T10:30:00Z", usd=1.5)
    done = subprocess.run(
        [sys.executable, "-m", "capguard", "ledger", "export", "--format", "json", "--ledger", target],
        env=os.environ,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert [u["cost_micro_usd"] for u in json.loads(done.stdout)["usage"]] == [1_500_000]
