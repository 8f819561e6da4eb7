"""Caps on the real OpenCode (`opencode run`, and the TUI under a pty) against the billing fake Chat Completions
server: capguard meters OpenCode's own SQLite store and stops the whole tree, to the token against the fake's log.

What the fake bills and OpenCode never records: the session-title request (one per new session) and the step in
flight at the stop; the report names both as blind spots. Tool commands start a background `sleep` in the tool's
own session (OpenCode orphans it): a stop must leave none, on the cgroup path and on the freeze-and-sweep path.
"""

from __future__ import annotations

import fcntl
import json
import os
import sqlite3
import struct
import subprocess
import sys
import termios
from pathlib import Path

import pytest

from capguard.core.units import format_usd
from capguard.ledger import open_ledger
from capguard.supervisor import cgroup
from tests.fakes.fake_chat import MAIN, TITLE, FakeChat, runaway_script
from tests.integration.conftest import Capguard, agent_or_skip, make_repo
from tests.integration.test_monthly import USER, ZONE, seed
from tests.integration.test_opencode_fake import opencode_env

pytestmark = pytest.mark.agent
HAS_CGROUP = cgroup.parent_dir() is not None
# each step: a bash call that leaves a tagged `sleep` behind in its own session, then answers at once
RUNAWAY = "sleep 300 >/dev/null 2>&1 & echo loop {n}"


@pytest.fixture(scope="session")
def opencode_bin() -> str:
    return agent_or_skip("opencode", "CAPGUARD_TEST_OPENCODE", "npm install --prefix .agents opencode-ai@1.18.33")


class OpenCode(Capguard):
    """capguard around the real opencode, with OpenCode's scratch HOME, XDG dirs and a config naming the fake."""

    agent = "opencode"

    def __init__(self, tmp_path: Path, opencode: str, base_url: str):
        repo = make_repo(tmp_path / "proj")
        super().__init__(tmp_path, opencode, repo)
        (tmp_path / "oc").mkdir()
        env, self.db = opencode_env(tmp_path / "oc", base_url, self.tag)
        del env["PATH"]
        self.env.update(env)
        self.env["PWD"] = str(repo)  # as a shell sets it (OpenCode takes its directory from $PWD)
        self.env["PATH"] = os.pathsep.join([str(Path(opencode).parent), self.env.get("PATH", "")])
        self.config = Path(env["OPENCODE_CONFIG"])

    def headless(self, caps: list[str], *extra: str, timeout: float = float(os.environ.get("OC_T", 240))):
        return self.run(caps, ["run", "--auto", *extra, "go"], timeout=timeout)


@pytest.fixture
def opencode(tmp_path, opencode_bin):
    runners = []

    def start(server: FakeChat) -> OpenCode:
        runners.append(OpenCode(tmp_path, opencode_bin, server.base_url))
        return runners[-1]

    yield start
    for runner in runners:
        runner.cleanup()


def assert_tree_gone(runner: Capguard) -> None:
    survivors = runner.survivors()
    assert not survivors, f"left running: {[(p.pid, p.name(), p.cmdline()) for p in survivors]}"


def ledger_rows(run_id: str) -> list[dict]:
    with open_ledger(Path(os.environ["CAPGUARD_HOME"]) / "ledger.db") as ledger:
        return ledger.usage(run_id)


def billed_split(usage: dict) -> tuple[int, int, int]:
    """A billed Chat Completions usage as capguard counts it: (input without the cache, cache read, output)."""
    cached = usage["prompt_tokens_details"]["cached_tokens"]
    return usage["prompt_tokens"] - cached, cached, usage["completion_tokens"]


def assert_counted_to_the_token(server: FakeChat, result) -> None:
    """Every main call the fake billed is in the report and the ledger, but the one in flight at the stop; the title
    call is billed and recorded nowhere: both are named as blind spots."""
    assert server.wait_idle(10)
    report = result.report
    main, title = server.billed(MAIN), server.billed(TITLE)
    assert len(title) == 1
    rows = ledger_rows(report["run_id"])
    counted = sorted((r["input_tokens"], r["cache_read_tokens"], r["output_tokens"]) for r in rows)
    in_flight = len(main) - len(rows)
    assert in_flight in (0, 1), (len(main), len(rows))
    assert counted == sorted(billed_split(r["usage"]) for r in main[: len(rows)])
    assert report["tokens"] == sum(r["usage"]["total_tokens"] for r in main[: len(rows)])
    assert report["steps"] == len(rows)
    assert sum(r["cost_micro_usd"] for r in rows) == round(report["cost_usd"] * 1e6)
    assert all(r["priced_by"] == "agent" and r["dedupe_key"].startswith("opencode:msg_") for r in rows)
    spots = " ".join(report["blind_spots"])
    assert "title" in spots and "in flight" in spots


@pytest.mark.parametrize(
    "mode",
    [pytest.param("cgroup", marks=pytest.mark.skipif(not HAS_CGROUP, reason="no writable cgroup v2")), "freeze-sweep"],
)
def test_usd_cap_stops_a_runaway_within_one_reply_and_leaves_no_tool_behind(opencode, mode):
    with FakeChat(runaway_script(RUNAWAY)) as server:
        runner = opencode(server)
        if mode == "freeze-sweep":
            runner.env["CAPGUARD_CGROUP"] = "off"
        result = runner.headless(["--usd", "0.04"])
        assert result.rc == 122, result.stderr[-3000:]
        report = result.report
        assert report["stop_reason"] == "usd" and report["exit_code"] == 122
        assert report["tree_stop"] == mode
        at_stop = report["at_stop"]
        assert at_stop["cost_usd"] - report["largest_reply_usd"] < 0.04 <= at_stop["cost_usd"]  # ≤ one reply over
        assert_tree_gone(runner)
        assert_counted_to_the_token(server, result)
    assert result.stderr.splitlines()[-1].startswith("capguard: stopped opencode: cost $0.04 reached the $0.04 cap")
    with open_ledger(Path(os.environ["CAPGUARD_HOME"]) / "ledger.db") as ledger:
        run = ledger.run(report["run_id"])
    assert run["stop_reason"] == "usd" and run["exit_code"] == 122 and run["agent"] == "opencode"


def test_token_cap_stops_a_runaway(opencode):
    with FakeChat(runaway_script(RUNAWAY)) as server:
        runner = opencode(server)
        result = runner.headless(["--tokens", "40k"])
        assert result.rc == 121, result.stderr[-3000:]
        assert result.report["stop_reason"] == "tokens" and result.report["at_stop"]["tokens"] >= 40_000
        assert_tree_gone(runner)
        assert_counted_to_the_token(server, result)


def test_steps_cap_stops_a_runaway_exit_120(opencode):
    """OpenCode writes a step's usage to its store once the step ends: the cap fires when the fourth is there. The
    fifth may be billed as the stop lands (in flight, never written), so the ledger holds the 4 written steps, or 5
    if OpenCode wrote the fifth before the stop: within one."""
    with FakeChat(runaway_script(RUNAWAY)) as server:
        runner = opencode(server)
        result = runner.headless(["--steps", "4"])
        assert result.rc == 120, result.stderr[-3000:]
        report = result.report
        assert report["stop_reason"] == "steps" and report["exit_code"] == 120
        assert report["at_stop"]["steps"] >= 4 and report["steps"] in (4, 5)
        assert result.stderr.splitlines()[-1].startswith("capguard: stopped opencode: ")
        assert "reached the 4-reply cap" in result.stderr
        assert_tree_gone(runner)
        assert_counted_to_the_token(server, result)
    with open_ledger(Path(os.environ["CAPGUARD_HOME"]) / "ledger.db") as ledger:
        run = ledger.run(report["run_id"])
    assert run["stop_reason"] == "steps" and run["exit_code"] == 120 and run["agent"] == "opencode"


def test_wall_cap_stops_a_step_waiting_on_its_tool(opencode):
    """The step's usage is written only once its tool ends: the wall cap stops it anyway, and its tool."""
    with FakeChat(runaway_script("sleep 300; echo never {n}")) as server:
        runner = opencode(server)
        result = runner.headless(["--wall", "40s"])  # OpenCode starts in 2-20 s: its first step is under way
        assert result.rc == 124, result.stderr[-3000:]
        assert result.report["stop_reason"] == "wall"
        assert_tree_gone(runner)
        assert server.wait_idle(10)
        assert len(server.billed(MAIN)) >= 1 and result.report["steps"] == 0  # billed, never written: in flight


def test_a_model_opencode_cannot_price_is_refused_at_start_under_a_usd_cap(opencode):
    with FakeChat(runaway_script(RUNAWAY)) as server:
        runner = opencode(server)
        config = json.loads(runner.config.read_text())
        del config["provider"]["fake"]["models"]["fake-model"]["cost"]
        runner.config.write_text(json.dumps(config))
        result = runner.headless(["--usd", "1"])
        assert result.rc == 116, result.stderr
        assert "fake-model" in result.stderr and server.requests == []  # never started: nothing billed


def test_a_spent_month_refuses_to_start_opencode(opencode, tmp_path):
    target = str(tmp_path / "team-ledger.db")
    seed(target, 0.50)
    with FakeChat(runaway_script(RUNAWAY)) as server:
        runner = opencode(server)
        team = tmp_path / "team.toml"
        team.write_text(
            f'ledger = "{target}"\nuser = "{USER}"\n[team]\ntimezone = "{ZONE}"\n'
            f'[team.users."{USER}"]\nmonthly_usd = 0.5\n'
        )
        runner.env["CAPGUARD_CONFIG"] = str(team)
        result = runner.headless([])
        assert result.rc == 117, result.stderr
        assert result.stderr.startswith("capguard: error: opencode not started: monthly cap reached: ")
        assert result.report is None and server.requests == [] and not runner.db.exists()


def test_only_this_runs_session_is_counted_in_a_shared_store(opencode):
    """An earlier session in the user's store (history) is not this run's spend; this run's is, to the token."""
    with FakeChat(runaway_script(RUNAWAY)) as server:
        runner = opencode(server)
        first = runner.headless(["--steps", "2"])
        assert first.rc == 120, first.stderr[-3000:]
        server.wait_idle(10)
        before = len(server.billed(MAIN))
        second = runner.headless(["--steps", "2"], "--continue")
        assert second.rc == 120, second.stderr[-3000:]
        assert_tree_gone(runner)
        server.wait_idle(10)
    main = server.billed(MAIN)[before:]
    rows = ledger_rows(second.report["run_id"])
    assert len(rows) == 2 and len(main) - len(rows) in (0, 1)
    assert sorted((r["input_tokens"], r["cache_read_tokens"], r["output_tokens"]) for r in rows) == sorted(
        billed_split(r["usage"]) for r in main[:2]
    )
    conn = sqlite3.connect(f"file:{runner.db}?mode=ro", uri=True)
    (sessions,) = conn.execute("SELECT count(*) FROM session").fetchone()
    conn.close()
    assert sessions == 1  # --continue went on in the first run's session, which stays in the user's history
    # importing the store afterwards adds nothing: both runs' replies are in the ledger under the same keys
    proc = subprocess.run(
        [sys.executable, "-m", "capguard", "import", "--json", "opencode"],
        env=runner.env,
        cwd=runner.repo,
        capture_output=True,
        text=True,
        timeout=120,
    )
    summary = json.loads(proc.stdout)
    assert proc.returncode == 0 and summary["replies_added"] == 0 and summary["runs_created"] == 0, proc.stderr
    assert summary["files_found"] == 1 and not summary["errors"]
    assert len(ledger_rows(first.report["run_id"])) + len(rows) == 4  # and nothing of theirs twice


@pytest.mark.pty
def test_the_tui_is_stopped_at_the_usd_cap(opencode):
    from tests.integration.test_aider_tty import Terminal

    with FakeChat(runaway_script(RUNAWAY)) as server:
        runner = opencode(server)
        term = Terminal(runner.argv(["--usd", "0.04"], ["--auto"]), runner.repo, runner.env)
        # 40 x 120 in the machine's byte order (Terminal's packed bytes read as 10240 x 30720 on x86, a screen
        # OpenCode's renderer never finishes drawing); set before OpenCode, seconds slower to start, reads it
        fcntl.ioctl(term.slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
        try:
            term.expect(r"Ask anything", timeout=120)  # the TUI is drawn, its prompt empty
            term.pump(1.0)
            term.type(b"go")
            term.pump(0.5)
            term.type(b"\r")
            rc = term.wait(180)
        finally:
            term.close()
        assert rc == 122, term.text()[-2500:]
        report = json.loads(runner.report_path.read_text())
        assert report["stop_reason"] == "usd"
        assert report["at_stop"]["cost_usd"] - report["largest_reply_usd"] < 0.04 <= report["at_stop"]["cost_usd"]
        # the crossing reply's cost, rounded to cents: $0.04 or $0.05 as the last reply lands (it was a flake)
        crossed = format_usd(round(report["at_stop"]["cost_usd"] * 1e6))
        assert f"capguard: stopped opencode: cost {crossed} reached the $0.04 cap" in term.text()
        assert_tree_gone(runner)
        assert server.wait_idle(10)
        rows = ledger_rows(report["run_id"])
        main = server.billed(MAIN)
        assert len(main) - len(rows) in (0, 1)
        assert sorted((r["input_tokens"], r["cache_read_tokens"], r["output_tokens"]) for r in rows) == sorted(
            billed_split(r["usage"]) for r in main[: len(rows)]
        )


def test_a_store_capguard_cannot_read_stops_the_run_as_meter_error(opencode):
    """Fail closed: OpenCode's store is there but is no database capguard can read, so nothing could be counted."""
    with FakeChat(runaway_script(RUNAWAY)) as server:
        runner = opencode(server)
        runner.db.parent.mkdir(parents=True, exist_ok=True)
        runner.db.write_bytes(b"not a database, " * 512)
        result = runner.headless(["--usd", "1"])
        assert result.rc == 115, result.stderr[-3000:]
        report = result.report
        assert report["stop_reason"] == "meter_error" and "cannot read" in report["meter_error"]
        assert str(runner.db) in report["meter_error"]
        assert_tree_gone(runner)
