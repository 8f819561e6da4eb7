"""The OTel receiver under attack, end to end: the real capguard CLI, the real Claude Code, a fake Anthropic server.

Another local user can reach the receiver's port on 127.0.0.1; only Claude Code has the run's secret (in its
environment). Forged posts are refused with 401 and counted; records of another session are not this run's cost,
whoever sends them; a hostile cost is skipped; the run stops at its own cap, charged for its own replies.
"""

from __future__ import annotations

import json
import re
import sqlite3
from pathlib import Path

import psutil
import pytest

from tests.fakes.fake_anthropic import FakeAnthropic, Script
from tests.integration.conftest import wait_for
from tests.integration.test_claude_caps import REPLY_USD, assert_tree_gone, assert_within_one_reply, claude, claude_bin  # noqa: F401
from tests.otlp_posts import api_request, header_pair, payload, post

pytestmark = pytest.mark.agent
FORGED_USD = 4.99


def _claude_process(runner) -> tuple[dict, list[str]] | None:
    """The environment and command line of the claude process capguard started."""
    for proc in runner.survivors(wait=0):
        try:
            env, cmdline = proc.environ(), proc.cmdline()
        except psutil.Error:
            continue
        if "OTEL_EXPORTER_OTLP_HEADERS" in env and "--session-id" in cmdline:
            return env, cmdline
    return None


def _forged(session: str, request_id: str, cost=FORGED_USD) -> bytes:
    micros = {"cost_usd_micros": round(cost * 1_000_000)} if isinstance(cost, float) else {}
    return payload(api_request(session, cost=cost, request_id=request_id, **micros))


def test_forged_telemetry_neither_stops_nor_charges_a_claude_run(claude, tmp_path):
    with FakeAnthropic(Script(delay_s=0.8)) as server:
        runner = claude(server)
        proc = runner.start(["--usd", "0.05"], ["-p", "LOOP", "--dangerously-skip-permissions"])
        try:
            env, cmdline = wait_for(lambda: _claude_process(runner), 60, "claude to start")
            endpoint, secret = env["OTEL_EXPORTER_OTLP_ENDPOINT"], header_pair(env["OTEL_EXPORTER_OTLP_HEADERS"])
            session = cmdline[cmdline.index("--session-id") + 1]
            # another user: no secret, or a guessed one -> 401, whatever the record says
            assert post(endpoint, _forged(session, "req_forged")) == 401
            assert post(endpoint, _forged(session, "req_forged"), {"x-capguard-token": "0" * 64}) == 401
            # the secret, but another session's record (a nested claude, anyone who read the env): not this run's
            assert post(endpoint, _forged("99999999-2222-4333-8444-000000000009", "req_foreign"), secret) == 200
            # the secret, this session, a cost that is not a number: skipped, and the receiver lives on
            for cost in ("NaN", "abc"):
                assert post(endpoint, _forged(session, f"req_{cost}", cost=cost), secret) == 200
            out, err = proc.communicate(timeout=180)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
    result = runner.result(proc.returncode, out, err)
    report = result.report
    assert result.rc == 122, result.stderr
    assert report["stop_reason"] == "usd"
    assert report["at_stop"]["steps"] == 5  # the cap fired on Claude's own replies: 5 x $0.011444 crosses $0.05
    assert_within_one_reply(report, 0.05)
    assert report["cost_usd"] < 10 * REPLY_USD  # nothing of the $4.99 posts
    assert "1 telemetry record(s) of another session not counted" in report["notes"]
    assert "2 unauthenticated telemetry post(s) rejected (401), not counted" in report["notes"]
    assert "2 telemetry record(s) with a non-number where a number belongs skipped" in report["notes"]
    assert "Traceback" not in result.stderr and result.stderr.count("\n") == 1, result.stderr
    assert_tree_gone(runner)

    home = Path(runner.env["CAPGUARD_HOME"])
    with sqlite3.connect(home / "ledger.db") as db:
        keys = [row[0] for row in db.execute("SELECT dedupe_key FROM usage_events")]
        charged = db.execute("SELECT cost_micro_usd FROM runs").fetchone()[0]
    # exact keys: a real request id is random hex and may well contain "abc"
    assert not [k for k in keys if re.match(r"claude:req_(forged|foreign|NaN|abc)(\+\d+)?$", k)], keys
    assert charged == round(report["cost_usd"] * 1_000_000)
    # Claude Code's own posts carried the secret and were taken: its api_request records are in the file
    run_dir = home / "runs" / report["run_id"]
    taken = [json.loads(line) for line in (run_dir / "claude.otel.jsonl").read_text().splitlines()]
    assert [r for r in taken if r.get("session.id") == session and str(r.get("request_id")).startswith("req_fake")]
    # the secret is in Claude's environment only: not in argv, the report, the ledger, any file capguard keeps
    token = secret["x-capguard-token"]
    assert token not in " ".join(cmdline) and token not in result.stderr
    for path in [p for p in home.rglob("*") if p.is_file()]:
        assert token.encode() not in path.read_bytes(), path


def test_a_secret_in_an_error_line_is_masked(claude):
    with FakeAnthropic(Script()) as server:
        runner = claude(server)
        result = runner.run(
            [], ["-p", "hi", "--settings", '{"env": {"ANTHROPIC_API_KEY": "sk-ant-api03-SECRETkey0123456789"']
        )
    assert result.rc == 2, result.stderr
    assert "--settings" in result.stderr and "SECRETkey" not in result.stderr
    assert "sk-ant-<redacted>" in result.stderr
    assert server.count() == 0
