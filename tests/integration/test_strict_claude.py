"""Strict mode with the real Claude Code (-p and interactive under a pty): every call goes through capguard's metering
proxy to a fake Anthropic server that bills like the real API (the prompt at a token per 4 bytes of the request,
output up to max_tokens). A runaway ends with the server's bill within the cap (overshoot 0) and capguard's count
equal to that bill; parallel subagents race for the last headroom; a stream cut at the stop is charged an upper
bound; a denied model and a provider capguard cannot front are refused."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest

from capguard.core.events import Reply as UsageReply
from capguard.core.pricing import Pricer
from capguard.ledger import open_ledger
from capguard.metering.proxy import bounds
from tests.fakes.fake_anthropic import FakeAnthropic, Reply, Script, Usage, agent_reply
from tests.integration.proxy_secret import assert_no_proxy_secret
from tests.integration.test_aider_tty import Terminal
from tests.integration.test_claude_caps import Claude, assert_tree_gone, claude_bin  # noqa: F401  (fixture)

pytestmark = pytest.mark.agent
MODEL = "claude-opus-5-5"  # $4 / $20 per million in and out (genai-prices)


def billing(**kw) -> Script:
    """A server that bills like the real one: the prompt from the request's bytes, output within max_tokens."""
    usage = Usage(input_tokens=0, output_tokens=kw.pop("output_tokens", 600), cache_write_5m=0, cache_read=0)
    return Script(usage=usage, honor_max_tokens=True, bill_prompt=True, **kw)


def priced(record: dict) -> UsageReply:
    usage = record["usage"]
    return UsageReply(
        "billed",
        "anthropic/" + record["model"],
        input_tokens=usage["input_tokens"],
        output_tokens=usage["output_tokens"],
        cache_read_tokens=usage["cache_read_input_tokens"],
        cache_write_tokens=usage["cache_creation_input_tokens"],
    )


def bills(server: FakeAnthropic) -> dict[str, tuple[int, int]]:
    """Each call the fake server billed, by message id: (micro-USD as capguard prices it, tokens)."""
    pricer = Pricer()
    return {
        record["message_id"]: (pricer.price(priced(record)).cost_micro or 0, priced(record).tokens)
        for record in server.requests
        if record.get("usage")
    }


def billed(server: FakeAnthropic) -> tuple[int, int, int]:
    """(micro-USD, tokens, calls) the fake server billed."""
    found = bills(server).values()
    return sum(m for m, _ in found), sum(t for _, t in found), len(found)


@pytest.fixture
def claude(tmp_path, claude_bin, repo):
    runners = []

    def start(server: FakeAnthropic) -> Claude:
        runner = Claude(tmp_path, claude_bin, repo, server.base_url)
        runner.env["ANTHROPIC_MODEL"] = MODEL
        runners.append(runner)
        return runner

    yield start
    for runner in runners:
        runner.cleanup()


def counted_bound(tokens: int) -> int:
    """The bound the proxy holds for a prompt the server counted at `tokens` (the fakes count as they bill)."""
    return -(-tokens * (100 + bounds.COUNT_MARGIN_PERCENT) // 100) + bounds.COUNT_MARGIN_TOKENS


def ledger_of(report: dict) -> tuple[dict, list[dict]]:
    with open_ledger(Path(os.environ["CAPGUARD_HOME"]) / "ledger.db") as ledger:
        return ledger.run(report["run_id"]), ledger.usage(report["run_id"])


def assert_refused_at_start(result, server: FakeAnthropic, said: str) -> None:
    """Strict mode refused before Claude Code started: one line that says `said` and the way out, nothing sent."""
    assert result.rc == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and said in lines[0] and "--meter files" in lines[0]
    assert "Traceback" not in result.stderr
    assert not server.requests and result.report is None


def assert_files_rows_at_their_bills(report: dict, server: FakeAnthropic, bill: dict[str, int]) -> None:
    """The files meter's rows: each reply Claude finished at its bill (by message id), a cloud's premium included
    (a reply Claude Code priced is scaled by 1.1 and rounded up: a micro-dollar above at most); the one the stop
    cut, from its partial line, never above its bill."""
    by_request = {r["request_id"]: r["message_id"] for r in server.requests if r.get("usage")}
    _, rows = ledger_of(report)
    billed_for = {row["dedupe_key"]: bill[by_request[row["dedupe_key"].removeprefix("claude:")]] for row in rows}
    exact = [row for row in rows if 0 <= row["cost_micro_usd"] - billed_for[row["dedupe_key"]] <= 1]
    assert len(exact) >= max(3, len(rows) - 1)
    assert all(row["cost_micro_usd"] <= billed_for[row["dedupe_key"]] + 1 for row in rows)


def assert_counted_exactly(report: dict, server: FakeAnthropic) -> None:
    """Every call the server billed is in the ledger once: at what the server billed when its reply ended, at an
    upper bound when the stop cut it; the report's totals are the ledger's."""
    bill = bills(server)
    run, rows = ledger_of(report)
    assert run["exit_code"] == report["exit_code"] and run["stop_reason"] == report["stop_reason"]
    keys = [row["dedupe_key"] for row in rows]
    assert len(set(keys)) == len(keys) == len(report["calls"])
    assert {key.removeprefix("proxy:anthropic:") for key in keys} == set(bill)  # no call unmetered, none invented
    for row in rows:
        micro, tokens = bill[row["dedupe_key"].removeprefix("proxy:anthropic:")]
        counted = row["input_tokens"] + row["output_tokens"] + row["cache_read_tokens"] + row["cache_write_tokens"]
        if row["details"]["charged"] == "usage":
            assert (row["cost_micro_usd"], counted) == (micro, tokens)
        else:  # cut short by the stop: an upper bound, never less
            assert row["cost_micro_usd"] >= micro and counted >= tokens
    assert sum(row["cost_micro_usd"] for row in rows) == round(report["cost_usd"] * 1e6)


def test_print_mode_runaway_under_a_usd_cap_never_overshoots(claude):
    with FakeAnthropic(billing(delay_s=0.1)) as server:
        runner = claude(server)
        result = runner.print_run(["--strict", "--usd", "0.40"], "LOOP")
    report = result.report
    assert result.rc == 122, result.stderr
    assert report["stop_reason"] == "usd" and report["meter"] == "both" and report["overshoot"] == 0
    micro, _, calls = billed(server)
    assert calls >= 3 and micro <= 400_000  # the server's bill: within the cap
    assert_counted_exactly(report, server)
    assert report["calls_lowered"] >= 1 and report["refusals"][0]["cap"] == "usd"
    assert "--max-budget-usd" not in report["argv"]  # the proxy holds the cap before each call
    assert "the next call's worst case would pass the $0.40 cap" in result.stderr
    assert report["calibration"]["proxy_usd"] == report["cost_usd"]
    assert_no_proxy_secret(result.stdout, result.stderr)
    assert_tree_gone(runner)


def test_print_mode_runaway_under_a_token_cap_never_overshoots(claude):
    with FakeAnthropic(billing(delay_s=0.1)) as server:
        runner = claude(server)
        result = runner.print_run(["--strict", "--tokens", "100k"], "LOOP")
    report = result.report
    assert result.rc == 121, result.stderr
    assert report["stop_reason"] == "tokens" and report["overshoot"] == 0
    _, tokens, calls = billed(server)
    assert calls >= 3 and tokens <= 100_000
    assert_counted_exactly(report, server)
    assert report["refusals"][-1]["cap"] == "tokens"
    assert_tree_gone(runner)


def test_print_mode_runaway_under_a_model_cap_stops_with_reason_model(claude, repo):
    """A [models."claude-opus-*"] cap below the run's USD cap, from the repo's file (not trusted: adding a cap is
    tightening): the proxy holds each call's worst case against the model's remaining and refuses the one that
    would pass it; the run stops with reason model (exit 114), the server's bill within the model's cap."""
    (repo / ".capguard.toml").write_text('[models."claude-opus-*"]\nusd = 0.80\n')
    with FakeAnthropic(billing(delay_s=0.1)) as server:
        runner = claude(server)
        result = runner.print_run(["--strict", "--usd", "5"], "LOOP")
    report = result.report
    assert result.rc == 114, result.stderr
    assert report["stop_reason"] == "model" and report["overshoot"] == 0
    micro, _, calls = billed(server)
    assert calls >= 2 and micro <= 800_000, (
        report["refusals"],
        report["calls"],
    )  # the server's bill: within the model's cap
    assert_counted_exactly(report, server)
    refusal = report["refusals"][-1]
    assert refusal["at_cap"] and (refusal["cap"], refusal["model_cap"]) == ("model", "claude-opus-*")
    assert "the $0.80 cap on claude-opus-* reached" in refusal["why"]
    assert "claude-opus-* cost $" in result.stderr and "would pass its $0.80 cap" in result.stderr
    assert_tree_gone(runner)


def test_parallel_subagents_racing_for_the_last_headroom(claude):
    """Three Agent tool calls in one reply: Claude Code runs the subagents at once, each a runaway loop; their
    requests race through the proxy for what the cap leaves."""
    fan_out = Reply(
        blocks=tuple(
            block for n in range(3) for block in agent_reply("LOOP", text=None, description=f"loop {n}").blocks
        )
    )
    with FakeAnthropic(billing(delay_s=0.3, replies=[fan_out])) as server:
        runner = claude(server)
        runner.env["ANTHROPIC_MODEL"] = "claude-haiku-4-5"  # $1 / $5: several worst cases fit at once
        result = runner.print_run(["--strict", "--usd", "0.60"], "fan out", timeout=180)
    report = result.report
    assert result.rc == 122, result.stderr
    assert server.count("subagent") >= 2
    # a request that lost the race waited for the others' worst cases (calls in flight) to settle: it was refused
    # only when nothing else was held, so the run used what the cap left
    held = [re.search(r"(\$[0-9.]+) held by calls in flight", r["why"]) for r in report["refusals"]]
    assert held and all(found and found.group(1) in ("$0.00", "$0.0000") for found in held), report["refusals"]
    micro, _, _ = billed(server)
    assert micro <= 600_000 and report["overshoot"] == 0
    assert_counted_exactly(report, server)
    assert_tree_gone(runner)


def test_a_stream_cut_at_the_stop_is_charged_an_upper_bound(claude):
    """A wall cap stops Claude mid-reply (SLOW streams for 5 s): the server billed the whole reply, the proxy
    charges the cut call its bound, never less."""
    with FakeAnthropic(billing(slow_delay_s=1.0, slow_chunks=8)) as server:
        runner = claude(server)
        result = runner.print_run(["--strict", "--wall", "4s", "--usd", "5"], "SLOW")
    report = result.report
    assert result.rc == 124, result.stderr
    cut = [call for call in report["calls"] if call["charged"] == "bound"]
    assert len(cut) == 1
    micro, _, _ = billed(server)
    assert round(report["cost_usd"] * 1e6) >= micro > 0  # an upper bound of what was billed
    _, rows = ledger_of(report)
    assert len(rows) == len(report["calls"])
    assert_tree_gone(runner)


def test_a_denied_model_is_refused_by_the_proxy_in_claudes_own_error_format(claude, repo):
    (repo / ".capguard.toml").write_text(
        '[models]\ndeny = ["claude-opus-*"]\n'
    )  # untrusted: refusing more is tightening
    with FakeAnthropic(billing()) as server:
        runner = claude(server)
        result = runner.print_run(["--strict", "--usd", "1"], "hello")
    report = result.report
    assert result.rc != 0 and report["stop_reason"] is None
    assert server.count("main") == 0  # nothing reached the server
    assert report["refusals"] and "denied by the configuration" in report["refusals"][0]["why"]
    assert "denied by the configuration" in result.stdout + result.stderr  # Claude shows the API error
    assert report["cost_usd"] == 0
    assert_tree_gone(runner)


@pytest.mark.parametrize("variable", ["ANTHROPIC_UNIX_SOCKET"])
def test_a_provider_the_proxy_cannot_front_is_refused_at_start(claude, variable):
    with FakeAnthropic(billing()) as server:
        runner = claude(server)
        runner.env[variable] = "1"
        result = runner.print_run(["--strict", "--usd", "1"], "hello")
    assert_refused_at_start(result, server, variable)
    assert_tree_gone(runner)


def test_a_base_url_in_claudes_settings_is_refused_at_start(claude):
    with FakeAnthropic(billing()) as server:
        runner = claude(server)
        (runner.config / "settings.json").write_text(
            json.dumps({"skipDangerousModePermissionPrompt": True, "env": {"ANTHROPIC_BASE_URL": server.base_url}})
        )
        result = runner.print_run(["--strict", "--usd", "1"], "hello")
    assert result.rc == 2 and "ANTHROPIC_BASE_URL is set in" in result.stderr
    assert not server.requests
    assert_tree_gone(runner)


@pytest.mark.pty
def interactive_loop(runner: Claude, caps: list[str]) -> tuple[int, Terminal]:
    """Claude Code in a pty under capguard, told LOOP once: its exit code and the terminal."""
    term = Terminal(runner.argv(caps, ["--dangerously-skip-permissions"]), runner.repo, runner.env)
    try:
        term.expect(r"capguard \$0\.00", timeout=60)
        term.type(b"LOOP")
        term.pump(0.5)
        term.type(b"\r")
        return term.wait(150), term
    finally:
        term.close()
        runner.cleanup()


def test_interactive_runaway_is_stopped_before_the_cap(tmp_path, claude_bin, repo):
    with FakeAnthropic(billing(delay_s=0.2)) as server:
        runner = Claude(tmp_path, claude_bin, repo, server.base_url)
        runner.env["ANTHROPIC_MODEL"] = MODEL
        rc, term = interactive_loop(runner, ["--strict", "--usd", "0.40"])
    assert rc == 122, term.text()[-2500:]
    report = json.loads(runner.report_path.read_text())
    assert report["stop_reason"] == "usd" and report["overshoot"] == 0
    micro, _, _ = billed(server)
    assert micro <= 400_000
    assert_counted_exactly(report, server)
    assert "capguard: stopped claude: cost $" in term.text()
    assert not runner.survivors()


def test_print_mode_runaway_spends_the_cap_up_to_the_next_calls_worst_case(claude):
    """The first request of the conversation is held at the server's own count (count_tokens, asked because its
    bytes' bound would lower its max_tokens: Opus's 32k-token reply alone could cost $0.70), the rest at the
    conversation's billed prompt: the run stops only when the next call's worst case (its prompt at the dearest rate
    and a 1,024-token reply, ~$0.10 here) no longer fits, with no overshoot."""
    with FakeAnthropic(billing(delay_s=0.1)) as server:
        runner = claude(server)
        result = runner.print_run(["--strict", "--usd", "0.50"], "LOOP", timeout=240)
    report = result.report
    assert result.rc == 122, result.stderr
    assert report["stop_reason"] == "usd" and report["overshoot"] == 0
    micro, _, calls = billed(server)
    assert micro <= 500_000 and calls >= 5
    assert_counted_exactly(report, server)
    counts = [r for r in server.requests if r["kind"] == "count_tokens"]
    assert counts and report["calls"][0]["prompt_counted"]  # the conversation's first request, by its count
    first = report["calls"][0]
    assert first["input_tokens"] <= first["prompt_bound"] <= counted_bound(first["input_tokens"])
    assert all(set(r["body"]) <= {"model", "messages", "system", "tools", "thinking", "context_management",
                                  "output_config"} for r in counts)  # fmt: skip
    assert all(r["headers"]["x-api-key"].startswith("sk-ant") and r["headers"]["anthropic-version"] for r in counts)
    refusal = report["refusals"][-1]
    last = report["calls"][-1]["input_tokens"]
    assert last < refusal["prompt_bound"] <= counted_bound(last)  # held at a tight bound, not the bytes
    assert refusal["worst_usd"] > refusal["headroom_usd"]  # it stopped because the next call did not fit
    assert abs(refusal["headroom_usd"] - (0.50 - report["cost_usd"])) < 1e-6
    # what was left could not buy the next call's worst case, which is about 1.5 of the last call's cost (its prompt
    # at the 1.25x cache write and 1.1x US-only rates, a 1,024-token reply instead of 600): nothing more was lost
    assert refusal["worst_usd"] <= 1.6 * report["calls"][-1]["cost_usd"]
    assert report["cost_usd"] >= 0.50 - refusal["worst_usd"] >= 0.8 * 0.50
    assert_tree_gone(runner)


@pytest.mark.parametrize("mode", ["error", "huge", "garbage"])
def test_a_count_that_fails_or_is_no_count_leaves_the_bytes_bound(claude, mode):
    """count_tokens answers a 500, ten times the request's bytes, or a string: the proxy holds the first request
    at its bytes' bound as before, never at the answer; the run still never goes over."""
    with FakeAnthropic(billing(delay_s=0.1, count_mode=mode)) as server:
        runner = claude(server)
        result = runner.print_run(["--strict", "--usd", "0.50"], "LOOP", timeout=240)
    report = result.report
    assert result.rc == 122, result.stderr
    assert report["stop_reason"] == "usd" and report["overshoot"] == 0
    micro, _, _ = billed(server)
    assert micro <= 500_000
    assert_counted_exactly(report, server)
    assert server.count("count_tokens") >= 1
    first = report["calls"][0]
    assert not first["prompt_counted"] and first["prompt_bound"] >= 3 * first["input_tokens"]  # bytes: ~4x
    assert not any(call["prompt_counted"] for call in report["calls"])
    assert_tree_gone(runner)


@pytest.mark.parametrize("left_out", ["hide_prompt_usage", "drop_delta_usage"])
def test_a_server_whose_usage_leaves_out_a_figure_stops_at_the_cap_charged_by_the_bound(claude, left_out):
    """A hostile server bills each call but its usage never says input_tokens, or its message_delta has no usage
    (message_start's placeholder output of 1 was the last word): capguard charged those prompts or outputs as 0 or 1
    before and the runaway went on past the cap (82 calls, $6.20 billed under $1.00). Now the missing figure is
    charged its bound: the run stops at the USD cap, the server's bill within it, every call at or above its bill."""
    with FakeAnthropic(billing(delay_s=0.1, **{left_out: True})) as server:
        runner = claude(server)
        result = runner.print_run(["--strict", "--usd", "1.00"], "LOOP")
    report = result.report
    assert result.rc == 122, result.stderr
    assert report["stop_reason"] == "usd" and report["overshoot"] == 0
    micro, _, calls = billed(server)
    assert calls >= 1 and micro <= 1_000_000  # what the server billed: within the cap
    bill = bills(server)
    _, rows = ledger_of(report)
    assert {row["dedupe_key"].removeprefix("proxy:anthropic:") for row in rows} == set(bill)
    for row in rows:  # none at its usage: each at an upper bound of its bill
        assert row["details"]["charged"] == "bound"
        assert row["cost_micro_usd"] >= bill[row["dedupe_key"].removeprefix("proxy:anthropic:")][0]
    assert "Traceback" not in result.stderr
    assert_tree_gone(runner)
