"""A ledger that fails mid-run loses nothing: the real capguard and the real aider against a fake model server.

PostgreSQL cut for 2 s (a proxy in front of the shared server), SQLite on a full filesystem, the ledger file
deleted, capguard SIGKILLed. Each asserts the cap's exit code, one clear line, no traceback, and that the
ledger ends up with every reply capguard counted and the fake server billed. Plus the ledger-level faults.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest

from capguard.core.errors import LedgerError
from capguard.core.ids import new_id
from capguard.demo.fake_openai import FakeOpenAI, runaway_script
from capguard.ledger import RunEnd, RunStart, UsageRecord, open_ledger, spool, utc_now
from capguard.ledger.reconcile import reconcile_runs
from capguard.ledger.records import MAX_STORED
from tests.integration.conftest import aider_flags, wait_for
from tests.integration.tcp_proxy import CuttableProxy
from tests.integration.test_ledger import BACKENDS, PG_DSN, make_target, with_option  # noqa: F401 (fixture)

backends = pytest.mark.parametrize("make_target", BACKENDS, indirect=True)
RUNAWAY_INPUT = "Please fix the greeting in hello.py\n" * 10  # up to 40 replies
REPLY_TOKENS = 52_000  # prompt + completion of each runaway reply


# --- helpers ----------------------------------------------------------------------------------------------------


def start_runaway(capguard, server, ledger: str, usd: str = "3.00"):
    proc = capguard.start(
        ["--usd", usd, "--ledger", ledger],
        [*aider_flags(server.base_url), "--no-fancy-input", "hello.py"],
        stdin=subprocess.PIPE,
    )
    proc.stdin.write(RUNAWAY_INPUT)
    proc.stdin.close()
    proc.stdin = None  # communicate() must not flush it again
    return proc


def finish(capguard, proc, timeout: float = 180):
    try:
        _, err = proc.communicate(timeout=timeout)
    finally:
        proc.kill()
    return capguard.result(proc.returncode, "", err)


def spooled(capguard) -> int:
    """Usage lines in the (only) run's spool so far."""
    found = list((capguard.tmp / "capguard-home" / "runs").glob("*/spool.jsonl"))
    return found[0].read_text().count('"type": "usage"') if found else 0


def capguard_cli(capguard, *args: str) -> subprocess.CompletedProcess:
    """Another capguard start in the same home (not an agent run)."""
    return subprocess.run(
        [sys.executable, "-m", "capguard", *args],
        cwd=capguard.repo,
        env=capguard.env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=120,
    )


def assert_nothing_lost(target: str, result, server) -> None:
    """The ledger holds exactly what capguard counted, and that is what the server billed. The request in flight
    when aider was stopped may still be answered after aider stopped listening: billed, never seen (the documented
    overshoot of at most one reply)."""
    with open_ledger(target) as ledger:
        rows = ledger.usage(result.report["run_id"])
        run = ledger.run(result.report["run_id"])
    assert len(rows) == result.report["steps"], (len(rows), result.report["steps"])
    assert sum(r["input_tokens"] + r["output_tokens"] for r in rows) == result.report["tokens"]
    assert sum(r["cost_micro_usd"] for r in rows) == pytest.approx(result.report["cost_usd"] * 1e6, abs=len(rows))
    billed = server.billed()
    assert len(billed) - 1 <= len(rows) <= len(billed), (len(rows), len(billed))
    assert result.report["tokens"] == len(rows) * REPLY_TOKENS
    assert run["status"] == "stopped" and run["exit_code"] == result.rc


def assert_one_clean_line(stderr: str, needle: str) -> str:
    assert "Traceback" not in stderr, stderr
    lines = [line for line in stderr.splitlines() if needle in line]
    assert len(lines) == 1, stderr
    return lines[0]


def run_log(capguard, result) -> str:
    return (capguard.tmp / "capguard-home" / "runs" / result.report["run_id"] / "capguard.log").read_text()


# --- with the real aider ----------------------------------------------------------------------------------------


@pytest.mark.agent
@pytest.mark.skipif(not PG_DSN, reason="CAPGUARD_TEST_PG_DSN is not set")
@pytest.mark.parametrize("make_target", ["postgresql"], indirect=True)
def test_postgres_down_for_two_seconds_mid_run_loses_no_reply(capguard, make_target):
    direct = make_target()
    parts = urlsplit(direct)
    with CuttableProxy(parts.hostname, parts.port) as proxy:
        via_proxy = urlunsplit(parts._replace(netloc=f"{parts.username}@127.0.0.1:{proxy.port}"))
        with FakeOpenAI(runaway_script(delay_s=0.3)) as server:
            proc = start_runaway(capguard, server, via_proxy)
            wait_for(lambda: spooled(capguard) >= 3, 120, "three replies")
            proxy.cut()
            time.sleep(2)  # the fault itself: the server is unreachable for 2 s
            proxy.restore()
            result = finish(capguard, proc)
    assert result.rc == 122, result.stderr
    assert result.report["stop_reason"] == "usd" and result.report["at_stop"]["steps"] == 21  # 21 x $0.145 > $3
    assert "could not record usage in the ledger" in run_log(capguard, result)  # the outage was felt
    assert proxy.refused >= 1
    assert "Traceback" not in result.stderr and "unavailable" not in result.stderr  # retried in time: nothing to say
    assert_nothing_lost(direct, result, server)
    assert not capguard.survivors()


@pytest.fixture
def small_tmpfs(tmp_path):
    mount = tmp_path / "small"
    mount.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=16m,mode=0700", "tmpfs", str(mount)], capture_output=True, text=True
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root): {done.stderr.strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def fill(folder: Path) -> Path:
    """Fill the filesystem of `folder` to the last byte."""
    filler = folder / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        for size in (65536, 1):
            try:
                while True:
                    os.write(fd, b"\0" * size)
            except OSError:
                pass
    finally:
        os.close(fd)
    return filler


@pytest.mark.agent
def test_sqlite_ledger_on_a_full_disk_keeps_the_usd_stop_and_is_replayed_next_start(capguard, small_tmpfs):
    target = str(small_tmpfs / "ledger.db")
    with FakeOpenAI(runaway_script(delay_s=0.3)) as server:
        proc = start_runaway(capguard, server, target)
        wait_for(lambda: spooled(capguard) >= 3, 120, "three replies")
        filler = fill(small_tmpfs)
        result = finish(capguard, proc)
    assert result.rc == 122, result.stderr  # the USD stop's code, not the ledger's 3
    assert result.report["stop_reason"] == "usd"
    line = assert_one_clean_line(result.stderr, "the ledger was unavailable")
    assert "disk is full" in line and "spool.jsonl" in line and "the next capguard start records them" in line
    assert not capguard.survivors()

    filler.unlink()  # space again: the next start (any command that opens the ledger) replays the spool
    again = capguard_cli(capguard, "--ledger", target, "ledger", "status")
    assert again.returncode == 0, again.stderr
    assert "that the ledger had missed" in again.stderr
    assert_nothing_lost(target, result, server)
    assert spool.open_run_ids() == []  # settled: the next start has nothing more to do


@pytest.mark.agent
def test_ledger_file_deleted_mid_run_is_an_error_and_the_month_is_not_reset(capguard, tmp_path):
    target = tmp_path / "team" / "ledger.db"
    user = "dev@example.com"
    team = tmp_path / "team.toml"
    team.write_text(f'ledger = "{target}"\nuser = "{user}"\n[team]\nmonthly_usd = 50\n')
    capguard.env["CAPGUARD_CONFIG"] = str(team)
    seed_id = new_id()
    with open_ledger(target) as ledger:  # earlier spend this month: $0.40
        ledger.start_run(RunStart(seed_id, "aider", ["aider"], "/w", user, "host", utc_now(), {}))
        ledger.record_usage(seed_id, UsageRecord(f"seed:{seed_id}", utc_now(), "m", 10, 1, 0, 0, 400_000, "config"))
    backup = tmp_path / "backup.db"
    shutil.copy(target, backup)

    with FakeOpenAI(runaway_script(delay_s=0.3)) as server:
        proc = capguard.start(
            ["--usd", "1.00"], [*aider_flags(server.base_url), "--no-fancy-input", "hello.py"], stdin=subprocess.PIPE
        )
        proc.stdin.write(RUNAWAY_INPUT)
        proc.stdin.close()
        proc.stdin = None
        wait_for(lambda: spooled(capguard) >= 2, 120, "two replies")
        target.unlink()  # `rm ledger.db`
        result = finish(capguard, proc)
    assert result.rc == 122, result.stderr
    line = assert_one_clean_line(result.stderr, "the ledger was unavailable")
    assert "was deleted while capguard had it open" in line
    assert not target.exists()  # no new, empty ledger in its place

    # the next start refuses: a new empty ledger would forget the month's $0.40 and this run's spend
    refused = capguard_cli(capguard, "ledger", "status")
    assert refused.returncode == 3, refused.stderr
    assert refused.stderr.count("\n") == 1 and "is gone" in refused.stderr and "capguard ledger init" in refused.stderr
    assert not target.exists()

    shutil.copy(backup, target)  # restored from the backup: the spool brings the run back
    again = capguard_cli(capguard, "ledger", "status")
    assert again.returncode == 0, again.stderr
    assert_nothing_lost(str(target), result, server)
    with open_ledger(target) as ledger:
        total, _ = ledger.spend(user=user)
        run_cost = sum(r["cost_micro_usd"] for r in ledger.usage(result.report["run_id"]))
    assert run_cost > 0 and total == 400_000 + run_cost  # the month's total: the earlier $0.40 and this run


@pytest.mark.agent
def test_sigkilled_capguard_is_closed_as_abandoned_with_its_usage_at_the_next_start(capguard):
    target = str(capguard.tmp / "ledger.db")
    with FakeOpenAI(runaway_script(delay_s=0.3)) as server:
        proc = start_runaway(capguard, server, target, usd="5.00")
        wait_for(lambda: spooled(capguard) >= 3, 120, "three replies")
        os.kill(proc.pid, signal.SIGKILL)
        proc.communicate(timeout=30)
        wait_for(lambda: not capguard.survivors(wait=0), 30, "aider to die with its capguard")
        counted = spooled(capguard)
        billed = len(server.billed())
    run_id = next((capguard.tmp / "capguard-home" / "open-runs").iterdir()).name
    with open_ledger(target) as ledger:
        assert ledger.run(run_id)["status"] == "running"  # as the kill left it

    again = capguard_cli(capguard, "--ledger", target, "ledger", "status")
    assert again.returncode == 0, again.stderr
    line = assert_one_clean_line(again.stderr, "closed as abandoned")
    assert run_id in line and f"{counted} counted replies" in line
    with open_ledger(target) as ledger:
        run, rows = ledger.run(run_id), ledger.usage(run_id)
    assert run["status"] == "abandoned" and run["ended_utc"] and run["steps"] == counted
    assert len(rows) == counted and run["tokens"] == counted * REPLY_TOKENS
    assert billed - 1 <= counted <= billed, (counted, billed)  # the reply in flight at the kill: billed, unseen
    # a second start finds nothing more to do
    assert "abandoned" not in capguard_cli(capguard, "--ledger", target, "ledger", "status").stderr


# --- the ledger itself ------------------------------------------------------------------------------------------


@backends
def test_numbers_beyond_int64_are_stored_clamped_and_flagged_and_the_run_closes(make_target):
    target = make_target()
    run_id = new_id()
    with open_ledger(target) as ledger:
        ledger.start_run(RunStart(run_id, "aider", ["aider"], "/w", "dev", "host", utc_now(), {}))
        assert ledger.record_usage(run_id, UsageRecord("big", utc_now(), "m", 10**19, 2**63, 0, 0, 10**25, "config"))
        ledger.record_usage(run_id, UsageRecord("big2", utc_now(), "m", 10**19, 0, 0, 0, 10**25, "config"))
        ledger.finish_run(run_id, RunEnd(utc_now(), "tokens", 121, 10**25, 10**19, 2**40, 0, {"tokens": 10**19}))
        row, usage = ledger.run(run_id), ledger.usage(run_id)
        cost, tokens = ledger.spend(run=run_id)  # a sum of clamped rows still fits
    assert row["status"] == "stopped" and row["exit_code"] == 121
    assert row["tokens"] == MAX_STORED and row["cost_micro_usd"] == MAX_STORED and row["steps"] == 2**31 - 1
    assert row["report"]["tokens"] == 10**19 and row["report"]["ledger_clamped"]["tokens"] == str(10**19)
    assert usage[0]["input_tokens"] == MAX_STORED and usage[0]["details"]["clamped"]["input_tokens"] == str(10**19)
    assert cost == 2 * MAX_STORED and tokens == 3 * MAX_STORED


def test_deleted_sqlite_ledger_fails_writes_and_reads_and_is_refused_at_the_next_open(tmp_path):
    target = tmp_path / "ledger.db"
    run_id = new_id()
    with open_ledger(target) as ledger:
        ledger.start_run(RunStart(run_id, "aider", ["aider"], "/w", "dev", "host", utc_now(), {}))
        target.unlink()
        with pytest.raises(LedgerError, match="was deleted while capguard had it open"):
            ledger.record_usage(run_id, UsageRecord("k", utc_now(), "m", 1, 1, 0, 0, 1, "config"))
        with pytest.raises(LedgerError, match="was deleted"):
            ledger.spend()
    assert not target.exists()
    with pytest.raises(LedgerError, match="is gone: capguard used it before"):
        open_ledger(target)
    assert not target.exists()
    with open_ledger(target, fresh=True) as ledger:  # `capguard ledger init`: a new ledger, on purpose
        assert ledger.spend() == (0, 0)
    open_ledger(tmp_path / "never-used" / "ledger.db").close()  # a first-ever ledger is simply created


def test_replaced_sqlite_ledger_is_an_error(tmp_path):
    target = tmp_path / "ledger.db"
    with open_ledger(target) as ledger:
        other = tmp_path / "other.db"
        open_ledger(other).close()
        os.replace(other, target)
        with pytest.raises(LedgerError, match="was replaced by another file"):
            ledger.spend()


def write_spool(home: Path, target: str, *, pid: int, created: float, host: str, usage: int, end: bool = False):
    run_id = new_id()
    run_dir = home / "runs" / run_id
    run_dir.mkdir(parents=True)
    start = RunStart(run_id, "aider", ["aider"], "/w", "dev", host, utc_now(), {})
    sp = spool.Spool.create(run_dir, start, ledger=target, pid=pid, pid_created=created, host=host)
    sp.append_usage([UsageRecord(f"{run_id}:{n}", utc_now(), "m", 100, 10, 0, 0, 1000, "config") for n in range(usage)])
    if end:
        sp.append_end(RunEnd(utc_now(), "usd", 122, usage * 1000, usage * 110, usage, 0, {"exit_code": 122}))
    sp.close()
    return run_id


@backends
def test_reconcile_replays_dead_runs_of_this_host_and_leaves_the_others(make_target, tmp_path):
    target = make_target()
    home = Path(os.environ["CAPGUARD_HOME"])
    with open_ledger(target) as ledger:
        me = ledger.identity
        dead = write_spool(home, me, pid=2**22 + 7, created=1.0, host="here", usage=3)  # no such pid
        ended = write_spool(home, me, pid=2**22 + 7, created=1.0, host="here", usage=2, end=True)
        alive = write_spool(home, me, pid=os.getpid(), created=0.0, host="here", usage=1)
        elsewhere = write_spool(home, me, pid=2**22 + 7, created=1.0, host="there", usage=1)
        other_ledger = write_spool(home, me + "-other", pid=2**22 + 7, created=1.0, host="here", usage=1)
        ledger.start_run(spool.read(spool.spool_of(dead)).start)  # as run.py does; `ended` never reached it
        lines = reconcile_runs(ledger, host="here", alive=lambda pid, created: pid == os.getpid())
        assert ledger.run(dead)["status"] == "abandoned" and ledger.run(dead)["steps"] == 3
        assert ledger.spend(run=dead) == (3000, 330) and ledger.run(dead)["report"]["status"] == "abandoned"
        assert ledger.run(ended)["status"] == "stopped" and ledger.run(ended)["exit_code"] == 122
        assert len(ledger.usage(ended)) == 2
        for untouched in (alive, elsewhere, other_ledger):
            assert ledger.run(untouched) is None
        assert sorted(spool.open_run_ids()) == sorted([alive, elsewhere, other_ledger])
        assert len(lines) == 2 and any("abandoned" in line for line in lines)
        assert reconcile_runs(ledger, host="here", alive=lambda pid, created: pid == os.getpid()) == []  # idempotent


def test_a_spool_that_cannot_be_written_stops_the_run_with_meter_error(tmp_path, monkeypatch):
    # fail closed: what capguard counts from then on would die with it, so the agent is stopped (exit 115)
    import io

    from capguard.config.settings import load_settings
    from capguard.ledger.spool import Spool, SpoolError
    from capguard.run import run_agent
    from tests.integration.test_monthly import Team

    team = Team(tmp_path, str(tmp_path / "ledger.db"))
    team.configure(cap=100)
    written = Spool.append_usage

    def failing(self, records):
        records = list(records)
        if self.records >= 2:
            raise SpoolError(f"cannot write the run's spool {self.path} (No space left on device)")
        written(self, records)

    monkeypatch.setattr(Spool, "append_usage", failing)
    for name, value in {"FAKE_REPLIES": "30", "FAKE_COST": "0.01", "FAKE_INTERVAL": "0.1"}.items():
        monkeypatch.setenv(name, value)
    settings = load_settings("aider", files=[team.config], env={}, flags={"title": "false"})
    stderr = io.StringIO()
    rc = run_agent("aider", [], settings, cwd=team.repo, stderr=stderr)
    assert rc == 115, stderr.getvalue()
    assert "could not count any more: cannot write the run's spool" in stderr.getvalue()
    assert "Traceback" not in stderr.getvalue()
    report = json.loads(next((tmp_path / "capguard-home" / "runs").glob("*/report.json")).read_text())
    assert report["stop_reason"] == "meter_error" and report["steps"] < 30
    with open_ledger(team.target) as ledger:  # the ledger still got every counted reply
        assert len(ledger.usage(report["run_id"])) == report["steps"]
