"""Monthly caps end to end: real capguard processes with the stand-in agent, on SQLite and PostgreSQL.

Refusal and ack, the warning before the agent starts, the stop of a running session (its own spend and other
runs'), ten parallel runs, the month's reset (exact, with an injected clock), and a ledger that cannot be used.
"""

from __future__ import annotations

import contextlib
import io
import json
import sqlite3
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path
from zoneinfo import ZoneInfo

import psutil
import pytest

from capguard.budget.allowance import MonthGuard, utc_text
from capguard.config.settings import load_settings
from capguard.core.ids import new_id
from capguard.core.monthly import month_of
from capguard.ledger import RunStart, UsageRecord, open_ledger, utc_now
from capguard.run import run_agent
from tests.integration.conftest import FAKES, Capguard, make_repo, wait_for
from tests.integration.test_ledger import BACKENDS, PG_DSN, make_target, with_option  # noqa: F401 (fixture)

USER = "dev@example.com"
ZONE = "Europe/Berlin"
backends = pytest.mark.parametrize("make_target", BACKENDS, indirect=True)


def seed(target: str, usd: float, *, at: datetime | None = None, user: str = USER, line: str | None = None) -> None:
    """A run of `user` on `line` in ledger `target` that spent `usd` at `at` (default now)."""
    run_id = new_id()
    with open_ledger(target) as ledger:
        ledger.start_run(RunStart(run_id, "aider", ["aider"], "/w", user, "host", utc_now(), {}, line=line))
        ledger.record_usage(
            run_id,
            UsageRecord(
                f"seed:{run_id}", utc_text(at) if at else utc_now(), "m", 10, 1, 0, 0, round(usd * 1e6), "config"
            ),
        )


class Team:
    """A repo whose capguard runs the stand-in agent under a team config with monthly caps and a given ledger."""

    def __init__(self, tmp_path: Path, target: str):
        self.tmp, self.target = tmp_path, target
        self.repo = make_repo(tmp_path / "repo")
        self.agent = tmp_path / "fake-aider"
        self.agent.write_text(
            f"#!/bin/sh\necho 'agent started' >&2\nexec {sys.executable} {FAKES / 'fake_aider.py'} \"$@\"\n"
        )
        self.agent.chmod(0o755)
        self.config = tmp_path / "team.toml"
        self.env = Capguard(tmp_path, str(self.agent), self.repo).env
        self.env["CAPGUARD_CONFIG"] = str(self.config)
        self.env["AIDER_STREAM"] = "false"  # the stand-in reports server figures: no streaming note at start
        self.configure(cap=0.5)

    def configure(self, *, cap: float, team: str = "", tables: str = "") -> None:
        self.config.write_text(
            f'ledger = "{self.target}"\nuser = "{USER}"\n[agents.aider]\ncommand = "{self.agent}"\n'
            f'[team]\ntimezone = "{ZONE}"\n{team}[team.users."{USER}"]\nmonthly_usd = {cap}\n{tables}'
        )

    def popen(self, *args: str, report: str = "report.json", **fake: str) -> subprocess.Popen:
        env = {**self.env, **{f"FAKE_{k.upper()}": str(v) for k, v in fake.items()}}
        argv = [sys.executable, "-m", "capguard", *args]
        if args and args[-1] == "aider":
            argv[3:3] = ["--report-json", str(self.tmp / report)]
        return subprocess.Popen(
            argv,
            cwd=self.repo,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    def run(self, *args: str, report: str = "report.json", **fake: str) -> tuple[int, str, dict | None]:
        (self.tmp / report).unlink(missing_ok=True)
        proc = self.popen(*args, report=report, **fake)
        _, err = proc.communicate(timeout=120)
        return proc.returncode, err, self.report(report)

    def report(self, name: str = "report.json") -> dict | None:
        path = self.tmp / name
        return json.loads(path.read_text()) if path.exists() else None

    def seed(self, usd: float, **kw) -> None:
        seed(self.target, usd, **kw)

    def month_spend(self, user: str = USER) -> float:
        month = month_of(datetime.now(timezone.utc), ZoneInfo(ZONE))
        with open_ledger(self.target) as ledger:
            cost, _ = ledger.spend(user=user, since_utc=utc_text(month.start_utc), until_utc=utc_text(month.end_utc))
        return cost / 1e6


@pytest.fixture
def team(tmp_path, make_target):
    return Team(tmp_path, make_target())


# --- starting: warn, refuse, ack --------------------------------------------------------------------------------


@backends
def test_warning_past_the_soft_threshold_comes_before_the_agent_starts(team):
    team.seed(0.40)
    rc, err, _ = team.run("aider", replies="0")
    assert rc == 0
    lines = err.splitlines()
    assert lines[0].startswith(f"capguard: warning: {USER} has spent $0.40 (80%) of the $0.50 monthly cap for ")
    assert "(warning at 75%); it resets " in lines[0] and lines[1] == "agent started"


@backends
def test_spent_month_refuses_a_new_run_with_117_until_an_ack(team):
    team.seed(0.50)
    marker = team.tmp / "started"
    rc, err, report = team.run("aider", started=str(marker), replies="1")
    assert rc == 117 and report is None and not marker.exists()
    assert err.count("\n") == 1 and err.startswith("capguard: error: aider not started: monthly cap reached: ")
    assert f"{USER} has spent $0.50 of the $0.50 monthly cap for" in err and "it resets " in err
    assert "capguard ack --reason" in err

    ack = team.popen("ack", "--reason", "demo for the customer tomorrow")
    out, ack_err = ack.communicate(timeout=60)
    assert ack.returncode == 0, ack_err
    assert "new runs may spend $0.12 more (limit $0.62)" in out
    month = month_of(datetime.now(timezone.utc), ZoneInfo(ZONE))
    with open_ledger(team.target) as ledger:
        [row] = ledger.acks("user", USER, since_utc=utc_text(month.start_utc), until_utc=utc_text(month.end_utc))
    assert (row["user"], row["reason"], row["limit_micro_usd"]) == (USER, "demo for the customer tomorrow", 625_000)

    rc, err, report = team.run("aider", started=str(marker), replies="20", cost="0.1", interval="0.1")
    assert marker.exists() and rc == 117, err
    assert report["stop_reason"] == "monthly" and report["at_stop"]["steps"] == 2  # $0.20 >= the $0.125 allowed
    assert "left of the monthly budget" in err.splitlines()[-1]


@backends
def test_ack_with_nothing_spent_records_nothing(team):
    team.seed(0.10)
    rc, err, _ = team.run("ack", "--reason", "just in case")
    assert rc == 1 and "nothing to acknowledge" in err
    with open_ledger(team.target) as ledger:
        assert ledger.acks("user", USER, since_utc="2000-01-01", until_utc="2100-01-01") == []


@backends
def test_a_budget_line_counts_every_developers_runs_and_its_ack_lifts_it_for_all(team):
    team.configure(cap=100, tables="[team.lines.infra]\nmonthly_usd = 0.5\n")
    team.seed(0.30, user="other@example.com", line="infra")
    team.seed(5.00, user="other@example.com", line=None)  # not on the line
    rc, err, report = team.run("--line", "infra", "aider", replies="20", cost="0.1", interval="0.1")
    assert rc == 117 and report["stop_reason"] == "monthly" and report["at_stop"]["steps"] == 2, err
    with open_ledger(team.target) as ledger:
        assert ledger.run(report["run_id"])["line"] == "infra"
    rc, err, _ = team.run("--line", "infra", "aider", replies="0")
    assert rc == 117 and "budget line infra has spent $0.50 of the $0.50 monthly cap" in err
    rc, err, _ = team.run("aider", replies="0")  # off the line, only the developer's own $100 applies
    assert rc == 0, err
    rc, err, _ = team.run("ack", "--line", "infra", "--reason", "incident", "--allow", "1")
    assert rc == 0, err
    settings = load_settings(None, files=[team.config], env={})
    with open_ledger(team.target) as ledger:
        [line] = MonthGuard(ledger, settings.team, "other@example.com", "infra").standings()  # no cap of their own
    assert (line.limit_micro, line.state) == (1_500_000, "ok")  # the other developer may go on too


# --- stopping a running session ---------------------------------------------------------------------------------


@backends
def test_running_session_stops_exactly_at_what_the_month_leaves(team):
    team.seed(0.20)  # $0.30 left of $0.50: below the run's own $5 cap
    rc, err, report = team.run("--usd", "5", "aider", replies="20", cost="0.1", interval="0.1")
    assert rc == 117, err
    assert report["stop_reason"] == "monthly" and report["at_stop"]["steps"] == 3
    assert report["caps"]["monthly_remaining_usd"] == pytest.approx(0.30)
    assert report["overshoot"] == pytest.approx(0.0)
    assert err.splitlines()[-1].startswith("capguard: stopped aider: cost $0.30 reached the $0.30 left of the monthly")
    assert team.month_spend() == pytest.approx(0.50)


@backends
def test_idle_session_is_stopped_when_another_run_spends_the_month(team):
    started = team.tmp / "idle-started"
    idle = team.popen("aider", report="idle.json", idle="60", started=str(started))
    try:
        wait_for(started.exists, 30, "the idle agent to start")
        rc, err, _ = team.run("aider", report="busy.json", replies="20", cost="0.1", interval="0.1")
        assert rc == 117, err
        _, idle_err = idle.communicate(timeout=30)
    finally:
        idle.kill()
    assert idle.returncode == 117, idle_err
    report = team.report("idle.json")
    assert report["stop_reason"] == "monthly" and report["steps"] == 0
    assert team.month_spend() == pytest.approx(0.50)


@contextlib.contextmanager
def ledger_locked(target: str):
    """Another writer's transaction holding the ledger's write lock (SQLite) or usage table (PostgreSQL)."""
    if "://" in target:
        import psycopg

        with psycopg.connect(target) as conn:
            conn.execute("LOCK TABLE usage_events IN EXCLUSIVE MODE")  # reads go on, inserts wait
            yield
            conn.rollback()
    else:
        conn = sqlite3.connect(target, isolation_level=None)
        try:
            conn.execute("BEGIN IMMEDIATE")
            yield
            conn.execute("ROLLBACK")
        finally:
            conn.close()


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


@backends
def test_a_locked_ledger_delays_no_stop_and_loses_no_reply(team):
    # the ledger thread waits for the lock; the loop decides from memory and stops the agent meanwhile
    started, go = team.tmp / "started", team.tmp / "go"
    proc = team.popen("aider", started=str(started), go=str(go), replies="20", cost="0.1", interval="0.1")
    try:
        wait_for(started.exists, 30, "the agent to start")
        agent = int(started.read_text())
        with ledger_locked(team.target):
            go.touch()
            wait_for(lambda: not _alive(agent), 30, "the agent to be stopped")
            assert proc.poll() is None  # capguard still waits to commit what it saw
        _, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 117, err
    report = team.report()
    assert report["stop_reason"] == "monthly" and report["at_stop"]["steps"] == 5, err
    analytics = team.tmp / "capguard-home" / "runs" / report["run_id"] / "aider.analytics.jsonl"
    sends = [line for line in analytics.read_text().splitlines() if '"message_send"' in line]
    assert len(sends) == report["steps"] and team.month_spend() == pytest.approx(report["cost_usd"])


@backends
def test_ten_parallel_runs_lose_nothing_and_overshoot_by_at_most_one_reply_each(team):
    team.configure(cap=2.0)
    go, procs = team.tmp / "go", []
    reply = 0.05
    try:
        for n in range(10):
            procs.append(
                team.popen(
                    "aider",
                    report=f"r{n}.json",
                    started=str(team.tmp / f"s{n}"),
                    go=str(go),
                    replies="40",
                    cost=str(reply),
                    interval="0.5",
                )
            )
        wait_for(lambda: all((team.tmp / f"s{n}").exists() for n in range(10)), 120, "ten agents to start")
        go.touch()
        results = [(p.wait(timeout=120), p.stderr.read()) for p in procs]
    finally:
        for proc in procs:
            proc.kill()
            proc.stdout.close()
            proc.stderr.close()
    assert not [err for _, err in results if "locked" in err or "capguard: error" in err]
    assert [rc for rc, _ in results] == [117] * 10, results
    reports = [team.report(f"r{n}.json") for n in range(10)]
    assert {r["stop_reason"] for r in reports} == {"monthly"}
    total = team.month_spend()
    assert total == pytest.approx(sum(r["cost_usd"] for r in reports))  # every reply is in the ledger
    assert 2.0 <= total <= 2.0 + 10 * reply + 1e-9
    with open_ledger(team.target) as ledger:
        for report in reports:
            assert len(ledger.usage(report["run_id"])) == report["steps"]


@pytest.mark.agent
def test_monthly_cap_stops_the_real_aider(tmp_path, aider_bin, repo):
    from capguard.demo.fake_openai import FakeOpenAI, runaway_script
    from tests.integration.conftest import aider_flags

    runner = Capguard(tmp_path, aider_bin, repo)
    team = tmp_path / "team.toml"
    team.write_text(f'ledger = "{tmp_path / "team.db"}"\nuser = "{USER}"\n[team]\nmonthly_usd = 1\n')
    runner.env["CAPGUARD_CONFIG"] = str(team)
    seed(str(tmp_path / "team.db"), 0.40)  # $0.60 left of $1
    try:
        with FakeOpenAI(runaway_script(delay_s=0.3)) as server:
            result = runner.run(
                ["--usd", "5"],
                [*aider_flags(server.base_url), "--no-fancy-input", "hello.py"],
                input="Please fix the greeting in hello.py\n" * 10,
            )
    finally:
        runner.cleanup()
    assert result.rc == 117, result.stderr
    assert result.report["stop_reason"] == "monthly"
    assert result.report["at_stop"]["steps"] == 5  # $0.145 a reply: the 5th ($0.725) crosses the $0.60 left
    assert "capguard: stopped aider: cost $0.72 reached the $0.60 left of the monthly budget" in result.stderr
    assert not runner.survivors()


# --- the month's reset ------------------------------------------------------------------------------------------


@backends
def test_spend_before_local_midnight_on_the_first_is_last_months(team):
    month = month_of(datetime.now(timezone.utc), ZoneInfo(ZONE))
    team.seed(5.00, at=month.start_utc - timedelta(microseconds=1))
    rc, err, _ = team.run("aider", replies="0")
    assert rc == 0, err
    team.seed(0.50, at=month.start_utc)
    rc, err, _ = team.run("aider", replies="0")
    assert rc == 117 and "monthly cap reached" in err


@backends
def test_rollover_is_exact_for_spend_and_acks_with_an_injected_clock(team):
    settings = load_settings(None, files=[team.config], env={})
    boundary = datetime(2026, 11, 30, 23, 0, tzinfo=timezone.utc)  # 2026-12-01 00:00 in Berlin
    before, after = boundary - timedelta(microseconds=1), boundary
    team.seed(0.60, at=before)
    with open_ledger(team.target) as ledger:
        november = MonthGuard(ledger, settings.team, USER, None, clock=lambda: before)
        [standing] = november.standings()
        assert (standing.month.label, standing.spent_micro, standing.state) == ("2026-11", 600_000, "over")
        [(_, limit)] = november.ack("month end crunch", allow_micro=None, host="laptop")
        assert limit == 725_000 and november.standings()[0].state == "warn"
        [december] = MonthGuard(ledger, settings.team, USER, None, clock=lambda: after).standings()
        assert (december.month.label, december.spent_micro, december.limit_micro) == ("2026-12", 0, 500_000)


@backends
def test_a_run_crossing_midnight_on_the_first_starts_the_new_month_afresh(team, monkeypatch):
    boundary = datetime(2026, 11, 30, 23, 0, tzinfo=timezone.utc)
    team.seed(0.45, at=boundary - timedelta(hours=1))  # $0.05 left of November
    started = team.tmp / "started"

    # November until the agent has started, December from its first reply on
    def clock() -> datetime:
        return boundary + timedelta(seconds=1) if started.exists() else boundary - timedelta(seconds=1)

    for name, value in dict(FAKE_STARTED=str(started), FAKE_REPLIES="20", FAKE_COST="0.1", FAKE_INTERVAL="0.1").items():
        monkeypatch.setenv(name, value)
    settings = load_settings("aider", files=[team.config], env={}, flags={"title": "false"})
    stderr = io.StringIO()
    rc = run_agent("aider", [], settings, cwd=team.repo, stderr=stderr, clock=clock)
    assert rc == 117, stderr.getvalue()
    assert "reached the $0.50 left of the monthly budget" in stderr.getvalue()  # not November's $0.05
    with open_ledger(team.target) as ledger:
        december = dict(since_utc=utc_text(boundary), until_utc="2027-01-01")
        assert ledger.spend(user=USER, **december)[0] == 500_000


# --- a ledger that cannot be used -------------------------------------------------------------------------------


def test_corrupted_ledger_under_a_monthly_cap_starts_nothing(tmp_path):
    bad = tmp_path / "ledger.db"
    bad.write_text("this is not a database")
    bad.chmod(0o600)  # private, as capguard keeps a ledger: the one line is about the ledger, not its mode
    team = Team(tmp_path, str(bad))
    marker = tmp_path / "started"
    rc, err, _ = team.run("aider", started=str(marker), replies="1")
    assert rc == 3 and err.count("\n") == 1 and str(bad) in err and not marker.exists()


@pytest.mark.skipif(not PG_DSN, reason="CAPGUARD_TEST_PG_DSN is not set")
def test_read_only_postgres_ledger_under_a_monthly_cap_starts_nothing(tmp_path):
    team = Team(tmp_path, with_option(PG_DSN, "-cdefault_transaction_read_only=on"))
    marker = tmp_path / "started"
    rc, err, _ = team.run("aider", started=str(marker), replies="1")
    assert rc == 3 and err.count("\n") == 1 and "cannot be written" in err and not marker.exists()


# --- capguard status and config ---------------------------------------------------------------------------------


@backends
def test_status_shows_the_month_with_its_warning(team):
    team.seed(0.40)
    month = month_of(datetime.now(timezone.utc), ZoneInfo(ZONE))
    rc, out, _ = _stdout(team, "status")
    assert rc == 0
    assert out.splitlines()[0] == (
        f"month {month.label} ({ZONE}): {USER}: $0.40 of $0.50 (80%), $0.10 left ⚠ past 75%; resets {month.resets}"
    )
    rc, out, _ = _stdout(team, "status", "--month", "--json")
    data = json.loads(out)
    assert data["budgets"][0]["state"] == "warn" and data["budgets"][0]["spent_usd"] == pytest.approx(0.40)


def test_config_shows_the_team_and_the_caps_that_apply(team):
    team.configure(cap=0.5, team="monthly_usd = 200\n", tables="[team.lines.infra]\nmonthly_usd = 1000\n")
    rc, out, err = _stdout(team, "--line", "infra", "config")
    assert rc == 0, err
    assert f"monthly caps for {USER} on line infra: {USER} $0.50, infra $1,000.00" in out
    assert f"team.lines.infra: monthly_usd $1,000.00  {team.config}" in out


def _stdout(team: Team, *args: str) -> tuple[int, str, str]:
    done = subprocess.run(
        [sys.executable, "-m", "capguard", *args],
        cwd=team.repo,
        env=team.env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    return done.returncode, done.stdout, done.stderr
