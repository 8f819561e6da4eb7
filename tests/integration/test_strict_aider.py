"""Strict mode with the real aider, streaming and not: every call goes through capguard's metering proxy to a fake
OpenAI server that bills like a real one (fake_chat: a token per 4 bytes of the prompt and of the reply, output
within max_tokens, streamed usage only when asked for). A runaway ends with the server's bill within the cap
(overshoot 0) and capguard's count equal to that bill, weak-model summary calls included; a provider capguard
cannot front is refused at start; a denied model never reaches the server."""

from __future__ import annotations

import os
import socket
import subprocess
import threading
from pathlib import Path

import pytest

from capguard.core.events import Reply as UsageReply
from capguard.core.pricing import Pricer
from capguard.demo import fake_openai
from capguard.ledger import open_ledger
from tests.fakes.fake_anthropic import FakeAnthropic, Usage
from tests.fakes.fake_anthropic import Script as AnthropicScript
from tests.fakes.fake_chat import FakeChat, Reply, Script
from tests.integration.conftest import aider_flags
from tests.integration.proxy_secret import assert_no_proxy_secret
from tests.integration.test_monthly import seed
from tests.integration.test_strict_claude import assert_counted_exactly as assert_counted_anthropic
from tests.integration.test_strict_claude import billed as anthropic_billed
from tests.integration.test_strict_claude import counted_bound

pytestmark = pytest.mark.agent

RUNAWAY_INPUT = "Please fix the greeting in hello.py\n" * 10  # 4 main requests each (a failed edit, 3 reflections)
SUMMARY = "The user asked to fix the greeting in hello.py; the edits did not apply."


def runaway(delay_s: float = 0.1) -> Script:
    """Every main reply a never-applying edit; aider's weak-model calls (commit messages, chat summaries) get a
    short text and are billed as any call."""
    return Script(
        generate=lambda n: Reply(fake_openai.runaway_edit_text("hello.py") + "x" * 6000, delay_s=delay_s),
        classify=fake_openai.classify,
        title_reply=Reply(SUMMARY),
    )


def bills(server: FakeChat) -> dict[str, tuple[int, int]]:
    """Each call the fake billed, by response id: (micro-USD as capguard prices it, tokens)."""
    pricer, out = Pricer(), {}
    for record in server.billed():
        usage = record["usage"]
        cached = usage["prompt_tokens_details"]["cached_tokens"]
        reply = UsageReply(
            "billed",
            "openai/" + record["body"]["model"],
            input_tokens=usage["prompt_tokens"] - cached,
            output_tokens=usage["completion_tokens"],
            cache_read_tokens=cached,
        )
        out[record["id"]] = (pricer.price(reply).cost_micro or 0, reply.tokens)
    return out


def assert_counted_exactly(report: dict, server: FakeChat) -> None:
    """Every call the server billed is in the ledger once, at what the server billed (an upper bound for one cut
    at the stop); the report's totals are the ledger's."""
    bill = bills(server)
    with open_ledger(Path(os.environ["CAPGUARD_HOME"]) / "ledger.db") as ledger:
        run, rows = ledger.run(report["run_id"]), ledger.usage(report["run_id"])
    assert run["exit_code"] == report["exit_code"] and run["stop_reason"] == report["stop_reason"]
    keys = [row["dedupe_key"].removeprefix("proxy:chat:") for row in rows]
    assert len(set(keys)) == len(keys) == len(report["calls"])
    assert set(keys) == set(bill), (keys, list(bill))  # no call unmetered, none invented
    for row, key in zip(rows, keys):
        micro, tokens = bill[key]
        counted = row["input_tokens"] + row["output_tokens"] + row["cache_read_tokens"] + row["cache_write_tokens"]
        if row["details"]["charged"] == "usage":
            assert (row["cost_micro_usd"], counted) == (micro, tokens)
        else:
            assert row["cost_micro_usd"] >= micro and counted >= tokens
    assert sum(row["cost_micro_usd"] for row in rows) == round(report["cost_usd"] * 1e6)


def assert_tree_gone(capguard):
    survivors = capguard.survivors()
    assert not survivors, f"left running: {[(p.pid, p.name()) for p in survivors]}"


def run(capguard, server, caps, *, stream: bool, extra=()):
    flags = [*aider_flags(server.base_url, stream=stream), "--no-fancy-input", *extra, "hello.py"]
    return capguard.run(["--strict", *caps], flags, input=RUNAWAY_INPUT, timeout=240)


@pytest.mark.parametrize("stream", [False, True], ids=["no-stream", "stream"])
def test_runaway_under_a_usd_cap_never_overshoots_and_counts_the_summaries(capguard, stream):
    with FakeChat(runaway()) as server:
        result = run(capguard, server, ["--usd", "0.30"], stream=stream, extra=["--max-chat-history-tokens", "500"])
    report = result.report
    assert result.rc == 122, result.stderr
    assert report["stop_reason"] == "usd" and report["overshoot"] == 0 and report["meter"] == "both"
    micro = sum(m for m, _ in bills(server).values())
    assert micro <= 300_000  # what the server billed: within the cap
    assert_counted_exactly(report, server)
    summaries = [r for r in server.billed() if r["kind"] != "main"]
    assert summaries  # aider's weak-model summary calls: billed, and counted above like any call
    assert any(call["model"] == "openai/gpt-4o-mini" for call in report["calls"])
    assert not report["blind_spots"]
    # new prompts near the cap were held at OpenAI's Responses count, not their bytes: most of the cap is spent
    # (measured 93%; by the bytes alone this run stops at 80%, bench/RESULTS.md section 12)
    assert server.counted and any(call["prompt_counted"] for call in report["calls"])
    assert report["cost_usd"] >= 0.85 * 0.30
    assert all(r["stream"] == stream for r in server.requests if r["kind"] == "main")
    calibration = report["calibration"]
    assert calibration["proxy_usd"] == report["cost_usd"] and calibration["files_usd"] < calibration["proxy_usd"]
    assert "files" in calibration["line"] and "low" in calibration["line"]
    assert "the next call's worst case would pass the $0.30 cap" in result.stderr
    assert_no_proxy_secret(result.stdout, result.stderr)
    assert_tree_gone(capguard)


def test_runaway_under_a_token_cap_never_overshoots(capguard):
    with FakeChat(runaway()) as server:
        result = run(capguard, server, ["--tokens", "60k"], stream=True)
    report = result.report
    assert result.rc == 121, result.stderr
    assert report["stop_reason"] == "tokens" and report["overshoot"] == 0
    assert sum(t for _, t in bills(server).values()) <= 60_000
    assert_counted_exactly(report, server)
    # the first prompt is new to the proxy: held at OpenAI's count of it (the Responses API's, Chat Completions
    # has none) with its margin, not at its bytes (~4.5 times its tokens). aider then sends its system prompt and
    # history again, then its files, the new message and a closing reminder: the earlier prompt is no prefix of
    # the next, but its parts up to a user's message are, and their bill holds them
    main = [call for call in report["calls"] if call["model"] == "openai/gpt-4o"]
    prompts = [call["input_tokens"] + call["cache_read_tokens"] + call["cache_write_tokens"] for call in main]
    assert main[0]["prompt_counted"] and prompts[0] <= main[0]["prompt_bound"] <= counted_bound(prompts[0])
    assert server.counted and all(c["body"]["model"] in ("gpt-4o", "gpt-4o-mini") for c in server.counted)
    assert any(prompt <= call["prompt_bound"] < 2.5 * prompt for call, prompt in zip(main[1:], prompts[1:]))
    assert_tree_gone(capguard)


def test_a_server_whose_usage_chunks_have_a_shape_no_api_sends_stops_at_the_cap_charged_by_the_bound(capguard):
    """A hostile model server: the usage chunk of each stream has `choices` as a number. capguard cannot read what
    it says, so each such call is charged its whole hold, and the runaway stops at the USD cap, with one clear line,
    a closed ledger, no traceback and nothing left running; the server never billed more than capguard counted."""
    script = runaway()
    script.mangle_usage_chunk = lambda chunk: {**chunk, "choices": 5}
    with FakeChat(script) as server:
        result = run(capguard, server, ["--usd", "1.00"], stream=True)
    report = result.report
    assert result.rc == 122, result.stderr
    assert report["stop_reason"] == "usd" and report["overshoot"] == 0
    assert "Traceback" not in result.stderr
    assert [line for line in result.stderr.splitlines() if line.startswith("capguard: ")] == [
        line for line in result.stderr.splitlines() if line.startswith("capguard: stopped")
    ]  # fmt: skip
    unread = [call for call in report["calls"] if call["charged"] == "bound"]
    assert unread and all(call["output_tokens"] == call["max_tokens"] for call in unread)  # a whole limit each
    assert all(call["cost_usd"] == call["reserved_usd"] for call in unread)  # all it held
    assert any("cannot read" in entry["why"] for entry in report["suspicious"])
    assert sum(m for m, _ in bills(server).values()) <= round(report["cost_usd"] * 1e6) <= 1_000_000
    assert_counted_exactly(report, server)
    assert_tree_gone(capguard)


def test_a_denied_model_never_reaches_the_server(capguard, repo):
    (repo / ".capguard.toml").write_text('[models]\ndeny = ["gpt-4o-mini"]\n')  # the weak model: refused on each call
    with FakeChat(runaway()) as server:
        result = run(capguard, server, ["--usd", "0.30"], stream=False, extra=["--max-chat-history-tokens", "500"])
    report = result.report
    assert result.rc == 122, result.stderr
    assert not [r for r in server.requests if r["body"]["model"] == "gpt-4o-mini"]
    assert any("denied by the configuration" in r["why"] for r in report["refusals"])
    assert_counted_exactly(report, server)
    assert_tree_gone(capguard)


def test_a_denied_main_model_is_refused_at_start(capguard, repo):
    (repo / ".capguard.toml").write_text('[models]\ndeny = ["openai/gpt-4o"]\n')  # untrusted: denying more is allowed
    with FakeChat(runaway()) as server:
        result = run(capguard, server, ["--usd", "1"], stream=False)
        assert not server.requests
    assert result.rc == 2 and result.stderr.strip().count("\n") == 0
    assert "model openai/gpt-4o is denied by the configuration" in result.stderr
    assert_tree_gone(capguard)


@pytest.mark.parametrize(
    ("model", "word"),
    [
        ("bedrock/amazon.nova-pro-v1:0", "not one of Anthropic's models"),
        ("vertex_ai/gemini-pro", "'vertex_ai'"),
        ("cohere/command-r", "'cohere'"),
    ],
)
def test_a_provider_the_proxy_cannot_front_is_refused_at_start(capguard, model, word):
    with FakeChat(runaway()) as server:
        flags = [*aider_flags(server.base_url, model=model), "hello.py"]
        result = capguard.run(["--strict", "--usd", "1"], flags, timeout=60)
        assert not server.requests
    assert result.rc == 2
    line = result.stderr.strip()
    assert "\n" not in line and word in line and "--meter files" in line and "Traceback" not in line
    assert result.report is None
    assert_tree_gone(capguard)


def test_a_base_url_aider_would_load_from_a_dotenv_is_refused(capguard, repo):
    (repo / ".env").write_text("OPENAI_API_BASE=http://127.0.0.1:9/v1\n")
    with FakeChat(runaway()) as server:
        result = run(capguard, server, ["--usd", "1"], stream=False)
        assert not server.requests
    assert result.rc == 2 and "OPENAI_API_BASE in" in result.stderr and ".env" in result.stderr
    assert_tree_gone(capguard)


@pytest.mark.parametrize(
    ("name", "text"),
    [
        (".aider.model.settings.yml", "- name: aider/extra_params\n  extra_params:\n    api_base: {elsewhere}\n"),
        (".aider.conf.yml", "weak-model: xai/grok-3-mini\n"),
        (".env", "USE_LITELLM_PROXY=True\nLITELLM_PROXY_API_BASE={elsewhere}\n"),
    ],
    ids=["api_base-in-model-settings", "weak-model-in-conf", "litellm-proxy-in-dotenv"],
)
def test_a_cloned_repos_aider_settings_cannot_route_around_the_proxy(capguard, repo, name, text):
    """A repo's .aider.model.settings.yml (which aider loads by itself) gives every model an `api_base`: run plainly,
    the real aider sends its calls there, none to the server it was given; under --strict capguard refuses at start
    and names the file, so no call goes anywhere uncounted. A repo's .env switching litellm to a LiteLLM proxy
    elsewhere (USE_LITELLM_PROXY) and a weak model its config puts on a provider the proxy does not front are
    refused the same way."""
    with FakeChat(runaway()) as server, FakeChat(runaway()) as elsewhere:
        (repo / name).write_text(text.format(elsewhere=elsewhere.base_url))
        flags = [*aider_flags(server.base_url), "--message", "fix hello.py", "hello.py"]
        if "{elsewhere}" in text:  # the route is real: aider itself, no capguard
            subprocess.run(["aider", *flags], cwd=repo, env=capguard.env, capture_output=True, timeout=120)
            assert elsewhere.requests and not server.requests
            elsewhere.reset()
        result = capguard.run(["--strict", "--usd", "1"], flags, timeout=60)
        assert not server.requests and not elsewhere.requests
    assert result.rc == 2 and result.report is None
    line = result.stderr.strip()
    assert "\n" not in line and str(repo / name) in line and "--meter files" in line, line
    assert_tree_gone(capguard)


class BlackHole:
    """A listener on 127.0.0.1 that counts the connections it gets and answers none: an HTTP proxy that is there
    but does not forward (a corporate proxy that cannot reach this machine's loopback, or one that reads)."""

    def __init__(self) -> None:
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.1)
        self.url = f"http://127.0.0.1:{self._listener.getsockname()[1]}"
        self.connections = 0
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._accept, daemon=True)

    def _accept(self) -> None:
        while not self._done.is_set():
            try:
                conn, _ = self._listener.accept()
            except OSError:
                continue
            self.connections += 1
            conn.close()

    def __enter__(self) -> BlackHole:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._done.set()
        self._thread.join(5)
        self._listener.close()


def test_the_users_http_proxy_variables_never_take_the_agents_hop_to_capguards_proxy(capguard):
    """HTTP_PROXY, HTTPS_PROXY and ALL_PROXY are set (as behind a corporate proxy): aider's requests for capguard's
    proxy on 127.0.0.1 go to it directly (capguard adds 127.0.0.1 to NO_PROXY for the agent), so the run is metered
    as ever; the proxy named in the variables gets no connection, and with it no request holding the run's secret."""
    with BlackHole() as hole, FakeChat(runaway()) as server:
        for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy"):
            capguard.env[name] = hole.url
        capguard.env["NO_PROXY"] = "internal.example"
        result = run(capguard, server, ["--usd", "0.30"], stream=True, extra=["--max-chat-history-tokens", "500"])
        assert hole.connections == 0
    report = result.report
    assert result.rc == 122, result.stderr
    assert report["stop_reason"] == "usd" and report["overshoot"] == 0
    assert_counted_exactly(report, server)
    assert_tree_gone(capguard)


def test_the_monthly_budget_binds_the_proxy_too(capguard, tmp_path):
    """Another run spent $0.20 of a $0.50 month: the proxy's budget is the $0.30 the month leaves, below the run's
    own $5 cap; the runaway stops with the monthly reason and exit code, the server's bill within what was left."""
    config = tmp_path / "capguard.toml"
    config.write_text('user = "dev@example.com"\n[team]\n[team.users."dev@example.com"]\nmonthly_usd = 0.5\n')
    capguard.env["CAPGUARD_CONFIG"] = str(config)
    seed(str(Path(os.environ["CAPGUARD_HOME"]) / "ledger.db"), 0.20, user="dev@example.com")
    with FakeChat(runaway()) as server:
        result = run(capguard, server, ["--usd", "5"], stream=True)
    report = result.report
    assert result.rc == 117, result.stderr
    assert report["stop_reason"] == "monthly" and report["overshoot"] == 0
    assert sum(m for m, _ in bills(server).values()) <= 300_000
    assert_counted_exactly(report, server)
    assert "left of the monthly budget (the proxy refused it)" in result.stderr
    assert_tree_gone(capguard)


def run_claude_models(capguard, server: FakeAnthropic, caps: list[str]):
    """aider on Claude models (Sonnet, Haiku as its weak model), streaming, through the proxy's Anthropic mount."""
    flags = [
        *aider_flags(server.base_url, stream=True, model="anthropic/claude-sonnet-4-5"),
        "--weak-model", "anthropic/claude-haiku-4-5", "--anthropic-api-key", "sk-ant-fake", "--no-fancy-input",
        "--max-chat-history-tokens", "500", "hello.py",
    ]  # fmt: skip
    at = flags.index("--openai-api-base")
    del flags[at : at + 2]
    capguard.env["ANTHROPIC_API_BASE"] = server.base_url
    return capguard.run(["--strict", *caps], flags, input=RUNAWAY_INPUT, timeout=240)


def claude_runaway(**kw) -> AnthropicScript:
    """Every reply a never-applying edit, billed as the real API bills (the prompt from the request, 600 tokens out
    within max_tokens); aider's weak-model summaries get the same and are billed alike."""
    usage = Usage(input_tokens=0, output_tokens=600, cache_write_5m=0, cache_read=0)
    text = fake_openai.runaway_edit_text("hello.py") + "x" * 2000
    return AnthropicScript(usage=usage, honor_max_tokens=True, bill_prompt=True, text=text, delay_s=0.1, **kw)


def test_runaway_on_claude_models_spends_the_cap_by_the_counted_prompts(capguard):
    """aider's requests are new conversations to the proxy (its chat summaries rewrite the history, its weak-model
    calls are each a new prompt): each is held at the server's count_tokens, not its bytes (~4x), so the run ends
    with no overshoot and most of the cap spent, stopped only when the next call's worst case did not fit."""
    with FakeAnthropic(claude_runaway()) as server:
        result = run_claude_models(capguard, server, ["--usd", "0.30"])
    report = result.report
    assert result.rc == 122, result.stderr
    assert report["stop_reason"] == "usd" and report["overshoot"] == 0
    micro, _, calls = anthropic_billed(server)
    assert micro <= 300_000 and calls >= 5
    assert_counted_anthropic(report, server)
    assert {call["model"] for call in report["calls"]} == {"anthropic/claude-sonnet-4-5", "anthropic/claude-haiku-4-5"}
    assert server.count("count_tokens") >= calls - 1
    for call in report["calls"]:  # each held at its count and margin: tight, never below what was billed
        assert call["prompt_counted"] and call["input_tokens"] <= call["prompt_bound"] <= counted_bound(
            call["input_tokens"]
        )
    refusal = report["refusals"][-1]
    assert refusal["prompt_counted"] and refusal["worst_usd"] > refusal["headroom_usd"]
    assert abs(refusal["headroom_usd"] - (0.30 - report["cost_usd"])) < 1e-6
    assert report["cost_usd"] >= 0.30 - refusal["worst_usd"] >= 0.8 * 0.30
    assert report["cost_usd"] >= 0.9 * 0.30  # measured 95%; by the bytes' bound this run stopped at 68%
    assert_tree_gone(capguard)


def test_a_hostile_count_on_claude_models_is_ignored(capguard):
    """count_tokens answers ten times the request's bytes: no call is held at it (it would be looser than the
    bytes); the first call is held at its bytes' bound, each later one at its bytes or at an earlier bill plus the
    bytes of what it adds, and the run stops earlier, never over."""
    with FakeAnthropic(claude_runaway(count_mode="huge")) as server:
        result = run_claude_models(capguard, server, ["--usd", "0.30"])
    report = result.report
    assert result.rc == 122, result.stderr
    assert report["stop_reason"] == "usd" and report["overshoot"] == 0
    micro, _, _ = anthropic_billed(server)
    assert micro <= 300_000
    assert_counted_anthropic(report, server)
    assert server.count("count_tokens") >= 1
    assert not any(call["prompt_counted"] for call in report["calls"])
    assert report["calls"][0]["prompt_bound"] >= 3 * report["calls"][0]["input_tokens"]
    # the count (~40 times a call's tokens) held none; no bound below its bill
    assert all(call["input_tokens"] <= call["prompt_bound"] < 10 * call["input_tokens"] for call in report["calls"])
    assert_tree_gone(capguard)


def test_a_count_below_the_bill_turns_the_counts_off(capguard):
    """count_tokens answers half of what the server then bills: the first call billed more prompt than its count
    allowed, and from then on no call is held at a count (each new prompt at its bytes); the run stops within the
    cap (that first call's hold was short, but far from the cap)."""
    with FakeAnthropic(claude_runaway(count_mode="half")) as server:
        result = run_claude_models(capguard, server, ["--usd", "0.30"])
    report = result.report
    assert result.rc == 122, result.stderr
    assert report["stop_reason"] == "usd" and report["overshoot"] == 0
    micro, _, _ = anthropic_billed(server)
    assert micro <= 300_000
    assert_counted_anthropic(report, server)
    first, *rest = report["calls"]
    assert first["prompt_counted"] and first["prompt_bound"] < first["input_tokens"]  # the count was short
    assert rest and not any(call["prompt_counted"] for call in rest)
    assert server.count("count_tokens") == 1  # never asked again
    assert_tree_gone(capguard)
