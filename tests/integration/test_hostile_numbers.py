"""Hostile numbers through the real agents (issue 11 §3): a model server or anything that can write the agent's log
controls the figures capguard reads. The real capguard, the real aider / Claude Code, fake model servers on 127.0.0.1.

Each run must still stop at its cap (a figure beyond capguard's bound counts as the bound), with the cap's exit
code, a report that names the suspicious line, a closed ledger row, no traceback and no process left.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from capguard.core.sanitize import MAX_REPLY_USD_MICRO, MAX_TOKENS
from capguard.demo.fake_openai import FakeOpenAI, chat_script, runaway_script
from capguard.ledger import open_ledger
from tests.fakes.fake_anthropic import FakeAnthropic, Script, Usage
from tests.integration.conftest import aider_flags, wait_for
from tests.integration.test_aider_caps import RUNAWAY_INPUT, assert_tree_gone
from tests.integration.test_claude_caps import claude, claude_bin  # noqa: F401 (fixtures)

pytestmark = pytest.mark.agent


def ledger_run(runner, run_id: str) -> dict:
    with open_ledger(Path(os.environ["CAPGUARD_HOME"]) / "ledger.db") as ledger:
        return ledger.run(run_id)


def assert_closed_cleanly(runner, result, code: int) -> dict:
    assert result.rc == code, result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    stops = [line for line in result.stderr.splitlines() if line.startswith("capguard: ")]
    assert len(stops) == 1, result.stderr  # one clear line
    row = ledger_run(runner, result.report["run_id"])
    assert row["status"] == "stopped" and row["exit_code"] == code  # closed, not left `running`
    assert row["cost_micro_usd"] == round(result.report["cost_usd"] * 1e6) and row["tokens"] == result.report["tokens"]
    assert_tree_gone(runner)
    return row


def test_a_server_billing_two_to_the_64_tokens_stops_aider_at_the_usd_cap(capguard):
    # litellm takes any integer: aider logs prompt_tokens 18446744073709551616 and a cost of $46 trillion
    script = runaway_script(prompt_tokens=2**64, completion_tokens=2_000, delay_s=0.3)
    with FakeOpenAI(script) as server:
        result = capguard.run(
            ["--usd", "1.00"], [*aider_flags(server.base_url), "--no-fancy-input", "hello.py"], input=RUNAWAY_INPUT
        )
    report = result.report
    assert report["stop_reason"] == "usd" and report["at_stop"]["steps"] == 1  # the first reply crosses the cap
    usage = report["usage"]["openai/gpt-4o"]
    assert usage["input_tokens"] == MAX_TOKENS * report["steps"]  # counted as the bound
    assert report["cost_usd"] == MAX_REPLY_USD_MICRO / 1e6 * report["steps"]  # aider's own figure, bounded
    assert report["suspicious_lines"] == report["steps"]
    assert report["suspicious"][0]["source"].endswith("aider.analytics.jsonl")
    assert "prompt_tokens at or beyond capguard's bound" in report["suspicious"][0]["why"]
    assert server.count("main") <= report["at_stop"]["steps"] + 2
    assert "reached the $1.00 cap" in result.stderr and "counted as the bound" in result.stderr
    assert_closed_cleanly(capguard, result, 122)


def test_a_server_billing_absurd_tokens_stops_aider_at_the_token_cap(capguard):
    script = runaway_script(prompt_tokens=10**19, completion_tokens=2_000, delay_s=0.3)
    with FakeOpenAI(script) as server:
        result = capguard.run(
            ["--tokens", "120k"], [*aider_flags(server.base_url), "--no-fancy-input", "hello.py"], input=RUNAWAY_INPUT
        )
    assert result.report["stop_reason"] == "tokens" and result.report["at_stop"]["steps"] == 1
    assert result.report["at_stop"]["tokens"] == MAX_TOKENS + 2_000
    assert_closed_cleanly(capguard, result, 121)


HOSTILE_ANALYTICS = [
    b'{"event": "message_send", "properties": {"main_model": "openai/gpt-4o", "prompt_tokens": NaN, '
    b'"completion_tokens": 5, "cost": 0.01}, "time": 1}',
    b'{"event": "message_send", "properties": ' + b"[" * 10_000 + b"]" * 10_000 + b"}",
    b'{"event": "message_send", "properties": {"main_model": "\\u001b[2J\\u001b[31mopenai/gpt-4o", '
    b'"prompt_tokens": Infinity, "completion_tokens": 1e30, "cost": 1e300}, "time": 1}',
]


def analytics_log(runner) -> Path | None:
    found = list((Path(os.environ["CAPGUARD_HOME"]) / "runs").glob("*/aider.analytics.jsonl"))
    return found[0] if found and b'"message_send"' in found[0].read_bytes() else None


def test_hostile_lines_appended_to_aiders_log_stop_the_run_at_the_bound(capguard):
    # litellm refuses Infinity, NaN and 1e30 from a server, so the real aider never logs them: anything that can
    # write aider's analytics log can, and does here, mid-run (as a corrupt or hostile writer would)
    with FakeOpenAI(chat_script(delay_s=1.0, repeat_last=True)) as server:
        read_end, write_end = os.pipe()
        proc = capguard.start(["--usd", "5"], [*aider_flags(server.base_url), "--no-fancy-input"], stdin=read_end)
        os.close(read_end)
        try:
            os.write(write_end, b"say something\n" * 30)
            log = wait_for(lambda: analytics_log(capguard), 90, "aider's first reply in its analytics log")
            with open(log, "ab") as handle:
                handle.write(b"\n".join(HOSTILE_ANALYTICS) + b"\n")
            out, err = proc.communicate(timeout=90)
        finally:
            os.close(write_end)
    result = capguard.result(proc.returncode, out, err)
    report = result.report
    assert report["stop_reason"] == "usd"
    assert report["malformed_lines"] == 2  # NaN and the nesting: skipped, counted
    assert report["suspicious_lines"] == 1
    assert report["suspicious"][0]["why"].startswith("prompt_tokens, completion_tokens at or beyond")
    assert report["at_stop"]["cost_usd"] >= MAX_REPLY_USD_MICRO / 1e6  # $10,000: counted as the bound
    assert report["tokens"] >= 2 * MAX_TOKENS
    assert "\x1b" not in err  # the hostile model name reached the report, escaped on the terminal
    assert server.count("main") <= report["steps"] + 1
    assert_closed_cleanly(capguard, result, 122)


def test_metering_that_breaks_stops_aider_with_meter_error(capguard, tmp_path):
    # a price so high that one reply's cost has more digits than Decimal holds: pricing raises InvalidOperation.
    # Before, that killed capguard (exit 1, no report, the ledger row left running); now metering fails closed
    config = tmp_path / "user-config.toml"  # the user's own file: trusted, it may set prices
    config.write_text('[prices."openai/gpt-4o"]\ninput = 1e30\noutput = 1e30\n')
    capguard.env["CAPGUARD_CONFIG"] = str(config)
    with FakeOpenAI(runaway_script(delay_s=0.3)) as server:
        result = capguard.run(
            ["--usd", "1.00"], [*aider_flags(server.base_url), "--no-fancy-input", "hello.py"], input=RUNAWAY_INPUT
        )
    assert result.report["stop_reason"] == "meter_error"
    assert result.report["meter_error"].startswith("InvalidOperation while metering Reply from ")
    assert "capguard could not count any more: InvalidOperation" in result.stderr
    assert server.count("main") <= 3
    assert_closed_cleanly(capguard, result, 115)


def test_claude_code_with_a_server_billing_absurd_tokens_stops_at_the_cap(claude):
    # Claude Code writes the server's 10^30 into its transcript (as 1e+30) and its own cost total
    with FakeAnthropic(Script(usage=Usage(output_tokens=10**30), delay_s=0.2)) as server:
        runner = claude(server)
        result = runner.print_run(["--tokens", "30k"], "LOOP")
    report = result.report
    # the reply's first report stops the run: the transcript's line (a step) or, when Claude's telemetry record of
    # the same request is read first, that record (never a step: only the transcript tells the main agent's calls)
    assert report["stop_reason"] == "tokens" and report["at_stop"]["steps"] in (0, 1)
    assert report["at_stop"]["tokens"] == MAX_TOKENS + 11 + 2000 + 3000
    assert report["suspicious_lines"] >= 1 and "output_tokens" in report["suspicious"][0]["why"]
    assert server.count("main") <= 2
    assert_closed_cleanly(runner, result, 121)


def test_import_claude_counts_the_good_lines_and_skips_or_bounds_the_bad(tmp_path):
    fixtures = Path(__file__).resolve().parents[1] / "fixtures" / "claude" / "shared" / "transcripts"
    good = (fixtures / "B_multi_turn_tool_use.jsonl").read_bytes()
    first = next(line for line in good.splitlines() if b'"type":"assistant"' in line)
    hostile = [
        first.replace(b'"requestId":"', b'"requestId":"hostile1').replace(
            b'"output_tokens":', b'"output_tokens":1e999,"x":', 1
        ),
        first.replace(b'"requestId":"', b'"requestId":"hostile2').replace(
            b'"output_tokens":', b'"output_tokens":"12","x":', 1
        ),
        b'{"type":"assistant","usage":' + b"[" * 10_000 + b"]" * 10_000 + b"}",
        first.replace(b'"requestId":"', b'"requestId":"hostile3').replace(
            b'"input_tokens":', b'"input_tokens":18446744073709551616,"x":', 1
        ),
    ]
    folder = tmp_path / "projects" / "-src-app"
    folder.mkdir(parents=True)
    session = json.loads(first)["sessionId"]
    (folder / f"{session}.jsonl").write_bytes(good + b"\n".join(hostile) + b"\n")
    clean = tmp_path / "clean" / "projects" / "-src-app"
    clean.mkdir(parents=True)
    (clean / f"{session}.jsonl").write_bytes(good)

    def run_import(root: Path, home: str) -> dict:
        env = dict(os.environ, CAPGUARD_HOME=str(tmp_path / home))
        proc = subprocess.run(
            [sys.executable, "-m", "capguard", "import", "claude", str(root), "--json"],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr
        return json.loads(proc.stdout)

    baseline, summary = run_import(tmp_path / "clean", "h1"), run_import(tmp_path, "h2")
    assert summary["malformed_lines"] == baseline["malformed_lines"] + 2  # "12" and the nesting
    assert summary["suspicious_replies"] == 2 and summary["replies_added"] == baseline["replies_added"] + 2
    assert summary["tokens_added"] > baseline["tokens_added"] + 2 * MAX_TOKENS - 1
    assert summary["tokens_added"] < baseline["tokens_added"] + 2 * MAX_TOKENS + 100_000
    human = subprocess.run(
        [sys.executable, "-m", "capguard", "import", "claude", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
        env=dict(os.environ, CAPGUARD_HOME=str(tmp_path / "h3")),
    )
    assert (
        "malformed lines skipped: " in human.stdout
        and "2 replies with figures beyond capguard's bounds" in human.stdout
    )
