"""Strict mode with the real Gemini CLI (0.61.0): every Gemini API call goes through capguard's metering proxy to the
fake Gemini API, which bills like the real one (the prompt at a token per 4 bytes of its text, thoughts and reply
within maxOutputTokens, cached input from a shared prefix). With the default model `auto` the CLI makes a routing
call the session files never show: the proxy counts it like any call. A runaway ends with the server's bill within
the cap (overshoot 0) and the ledger equal to that bill to the token; a sign-in capguard cannot front is refused at
start; the proxy dying stops the run with meter_error; the proxy speaks Google's error format and keeps a key given
in the URL out of the URL."""

from __future__ import annotations

import json
import os
import threading
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from capguard.agents.gemini.adapter import ADAPTER
from capguard.config.settings import load_settings
from capguard.core.caps import EXIT_CODES, Caps
from capguard.core.enums import StopReason
from capguard.core.events import Reply as UsageReply
from capguard.core.pricing import Pricer
from capguard.ledger import open_ledger
from capguard.metering.proxy import Gate, MeteringProxy
from capguard.metering.proxy.dialects import CODE_ASSIST_MODELS, GEMINI
from capguard.supervisor.strict import StrictMeter
from capguard.supervisor.supervise import Supervisor
from tests.fakes.fake_gemini import LOOP_CHECK, MAIN, ROUTER, FakeGemini, chat_script
from tests.integration.conftest import wait_for
from tests.integration.proxy_secret import PROXY_URL, assert_no_proxy_secret
from tests.integration.test_gemini_caps import Gemini, assert_tree_gone, gemini_bin, runaway  # noqa: F401  (fixture)
from tests.integration.test_gemini_tty import Tmux

pytestmark = pytest.mark.agent


@pytest.fixture
def gemini(tmp_path, gemini_bin, repo):
    runner = Gemini(tmp_path, gemini_bin, repo)
    yield runner
    runner.cleanup()


def bills(server: FakeGemini) -> dict[str, tuple[int, int, str]]:
    """Each call the fake billed, by response id: (micro-USD as capguard prices it, tokens, kind)."""
    pricer, out = Pricer(), {}
    for record in server.billed():
        usage = record["usage"]
        model = (
            CODE_ASSIST_MODELS.get(record["model"], record["model"]) if record.get("code_assist") else record["model"]
        )
        reply = UsageReply(
            "billed",
            "google/" + model,
            input_tokens=usage["input"] - usage["cached"] + usage["tool"],
            output_tokens=usage["output"] + usage["thoughts"],
            cache_read_tokens=usage["cached"],
        )
        out[record["id"]] = (pricer.price(reply).cost_micro or 0, reply.tokens, record["kind"])
    return out


def assert_counted_exactly(report: dict, server: FakeGemini) -> list[dict]:
    """Every call the fake billed is in the ledger once, side calls included, at what it billed (an upper bound
    for a call the stop cut); the report's totals are the ledger's."""
    bill = bills(server)
    with open_ledger(Path(os.environ["CAPGUARD_HOME"]) / "ledger.db") as ledger:
        run, rows = ledger.run(report["run_id"]), ledger.usage(report["run_id"])
    assert run["exit_code"] == report["exit_code"] and run["stop_reason"] == report["stop_reason"]
    keys = [row["dedupe_key"].removeprefix("proxy:gemini:") for row in rows]
    assert len(set(keys)) == len(keys) == len(report["calls"])
    assert set(keys) == set(bill), (keys, list(bill))  # no call unmetered, none invented
    for row, key in zip(rows, keys):
        micro, tokens, _ = bill[key]
        counted = row["input_tokens"] + row["output_tokens"] + row["cache_read_tokens"] + row["cache_write_tokens"]
        if row["details"]["charged"] == "usage":
            assert (row["cost_micro_usd"], counted) == (micro, tokens)
        else:
            assert row["cost_micro_usd"] >= micro and counted >= tokens
    assert sum(row["cost_micro_usd"] for row in rows) == round(report["cost_usd"] * 1e6)
    return rows


def test_a_runaway_with_the_auto_model_stops_at_the_usd_cap_counting_the_routing_call(gemini):
    """Gemini's default model `auto`: a flash-lite routing call, then the main turns on the flash model, each
    thinking (billed as output) and calling the shell tool. The proxy lowers maxOutputTokens as the cap nears and
    refuses the call whose 1,024-token reply no longer fits; the run stops with exit 122, the server's bill within
    the cap, and the ledger equal to it to the token, the routing call included."""
    with FakeGemini(runaway(gemini.tag, delay_s=0.05)) as server:
        result = gemini.use(server).headless(["--strict", "--usd", "0.05"], model=None)
        sent = server.requests
    report = result.report
    assert result.rc == 122, result.stderr[-3000:]
    assert report["stop_reason"] == "usd" and report["overshoot"] == 0 and report["meter"] == "both"
    bill = bills(server)
    assert sum(m for m, _, _ in bill.values()) <= 50_000  # what the server billed: within the cap
    assert [kind for _, _, kind in bill.values()].count(ROUTER) == 1 and len(bill) >= 3
    rows = assert_counted_exactly(report, server)
    assert {row["model"] for row in rows} == {"google/gemini-3.5-flash-lite", "google/gemini-3.8-flash"}
    assert any(row["output_tokens"] > 0 and row["details"]["charged"] == "usage" for row in rows)
    assert report["calls_lowered"] >= 1 and report["refusals"][-1]["cap"] == "usd"
    # the calls whose prompt's bytes would have bound them were held at Gemini's own count (countTokens) instead
    assert any(call.get("prompt_counted") for call in report["calls"]), report["calls"]
    # every request carried the limit the proxy held (the CLI sets none): the server could not bill past it
    limits = [r["body"]["generationConfig"]["maxOutputTokens"] for r in sent]
    assert limits == [call["max_tokens"] for call in report["calls"]][: len(limits)]
    assert all(r["key_header"] and "key=" not in r["query"] for r in sent)
    assert not report["blind_spots"]  # the routing call, the side calls and a reply in flight: all seen
    calibration = report["calibration"]
    assert calibration["proxy_usd"] == report["cost_usd"] and calibration["files_usd"] < calibration["proxy_usd"]
    assert calibration["proxy_calls"] == len(bill) and calibration["files_replies"] <= len(bill) - 1
    assert "the next call's worst case would pass the $0.05 cap" in result.stderr
    assert not PROXY_URL.search(" ".join(report["argv"]).encode())
    assert_no_proxy_secret(result.stdout, result.stderr)
    assert_tree_gone(gemini)


def test_a_runaway_under_a_token_cap_never_overshoots(gemini):
    with FakeGemini(runaway(gemini.tag, delay_s=0.05)) as server:
        result = gemini.use(server).headless(["--strict", "--tokens", "60k"])
    report = result.report
    assert result.rc == 121, result.stderr[-3000:]
    assert report["stop_reason"] == "tokens" and report["overshoot"] == 0
    bill = bills(server)
    assert sum(t for _, t, _ in bill.values()) <= 60_000 and {kind for _, _, kind in bill.values()} == {MAIN}
    assert_counted_exactly(report, server)
    assert report["refusals"][-1]["cap"] == "tokens"
    assert_tree_gone(gemini)


def test_with_no_sign_in_selected_an_api_key_alone_is_refused_at_start(gemini):
    """Gemini CLI takes a base URL with no sign-in selected only as its `gateway`, which its own check then refuses
    (exit 41): capguard says so at start, in one line."""
    (gemini.home / ".gemini" / "settings.json").write_text("{}")
    with FakeGemini(chat_script()) as server:
        result = gemini.use(server).headless(["--strict", "--usd", "1"])
        assert not server.requests
    assert result.rc == 2, result.stderr[-2000:]
    line = result.stderr.strip()
    assert "\n" not in line and "no sign-in is selected" in line and "--meter files" in line
    assert "Traceback" not in line and result.report is None
    assert_tree_gone(gemini)


@pytest.mark.parametrize("how", ["env:GOOGLE_GENAI_USE_GCA", "settings:oauth-personal"])
def test_login_with_google_goes_through_the_proxy_to_the_code_assist_server_and_stops_at_the_cap(gemini, how):
    """Login with Google: Gemini CLI sends its model calls to Google's Code Assist server (CODE_ASSIST_ENDPOINT),
    each a Gemini request wrapped with the model and the account's project, each reply wrapped with a trace id.
    The proxy stands there: the router and main calls are held and settled like the Gemini API's, the account's
    other calls pass, the user's own token goes on untouched, and the run stops at the cap with the server's bill
    within it and the ledger equal to it. (GOOGLE_CLOUD_ACCESS_TOKEN gives Gemini CLI a token without the check of
    cached credentials against Google's tokeninfo, which would need the internet.)"""
    where, _, value = how.partition(":")
    del gemini.env["GEMINI_API_KEY"]
    settings: dict = {"privacy": {"usageStatisticsEnabled": False}}
    if where == "settings":
        settings["security"] = {"auth": {"selectedType": value}}
    else:
        gemini.env[value] = "true"
    (gemini.home / ".gemini" / "settings.json").write_text(json.dumps(settings))
    gemini.env.update(GOOGLE_CLOUD_ACCESS_TOKEN="ya29.users-own-token", GOOGLE_GENAI_USE_GCA="true")
    with FakeGemini(runaway(gemini.tag, delay_s=0.05)) as server:
        gemini.env["CODE_ASSIST_ENDPOINT"] = server.base_url
        result = gemini.headless(["--strict", "--usd", "0.30"], model=None)
    report = result.report
    assert result.rc == 122, result.stderr[-3000:]
    assert report["stop_reason"] == "usd" and report["overshoot"] == 0
    served = server.billed()
    assert len(served) >= 3 and all(r["code_assist"] and r["project"] == "fake-project-123" for r in served)
    bill = bills(server)
    assert sum(m for m, _, _ in bill.values()) <= 300_000 and [k for _, _, k in bill.values()].count(ROUTER) == 1
    rows = assert_counted_exactly(report, server)  # keyed by each reply's trace id (Code Assist's replies name none)
    assert all(row["details"]["charged"] == "usage" for row in rows)  # read inside each wrapped reply
    assert all(r["authorization"] == "Bearer ya29.users-own-token" for r in served)  # the user's, untouched
    assert "loadCodeAssist" in server.code_assist_calls
    # every request carried the limit the proxy held inside the wrapper (the CLI sets none)
    limits = [r["body"]["generationConfig"]["maxOutputTokens"] for r in server.requests]
    assert limits == [call["max_tokens"] for call in report["calls"]][: len(limits)]
    # the main model goes by Code Assist's name for it (gemini-3-flash), priced as the model the CLI asked for
    assert {r["model"] for r in served} >= {"gemini-3-flash"}
    assert "google/gemini-3.5-flash" in {row["model"] for row in rows}
    # Code Assist's count takes the contents alone (not the system prompt and tools): prompts are held at their bytes
    assert not any(call.get("prompt_counted") for call in report["calls"])
    assert report["refusals"][-1]["cap"] == "usd"
    assert "the next call's worst case would pass the $0.30 cap" in result.stderr
    assert "ya29.users-own-token" not in result.stderr + json.dumps(report)
    assert_no_proxy_secret(result.stdout, result.stderr)
    assert_tree_gone(gemini)


def test_an_uncapped_run_is_counted_to_the_token_the_routing_call_included(gemini):
    """A one-answer run with the model `auto`: the routing call (not in Gemini's session file) and the turn are both
    counted, exactly; the session file's calibration sees the turn only."""
    with FakeGemini(chat_script(["Just one answer."])) as server:
        result = gemini.use(server).headless(["--strict"], model=None)
    report = result.report
    assert result.rc == 0, result.stderr[-3000:]
    assert report["stop_reason"] is None and report["meter"] == "both"
    kinds = sorted(kind for _, _, kind in bills(server).values())
    assert kinds == [MAIN, ROUTER], kinds
    assert_counted_exactly(report, server)
    assert report["calibration"]["files_replies"] == kinds.count(MAIN) < len(kinds)
    assert_tree_gone(gemini)


def test_geminis_loop_check_is_counted_like_any_call(gemini):
    """From turn 30 of a prompt Gemini asks a model whether it is looping (a call its session file never shows);
    told yes, it ends the run itself with status 0. Through the proxy the loop checks are counted to the token."""
    with FakeGemini(runaway(gemini.tag, delay_s=0.0, loop_confidence=0.95)) as server:
        result = gemini.use(server).headless(["--strict", "--usd", "5"], timeout=240)
    report = result.report
    assert result.rc == 0, result.stderr[-3000:]
    assert report["stop_reason"] is None and report["agent_returncode"] == 0 and not report["self_stopped"]
    kinds = [kind for _, _, kind in bills(server).values()]
    assert kinds.count(LOOP_CHECK) >= 1 and kinds.count(MAIN) >= 30
    rows = assert_counted_exactly(report, server)
    assert len(rows) == len(kinds) and report["calibration"]["files_replies"] == kinds.count(MAIN)
    assert_tree_gone(gemini)


def test_a_stream_cut_at_the_stop_is_charged_its_bound_never_zero(gemini):
    """A wall cap stops Gemini while a slow reply streams: the proxy charges the cut call its prompt as far as the
    stream showed it and its whole output limit (thoughts are never streamed whole), never zero."""
    with FakeGemini(runaway(gemini.tag, delay_s=60.0)) as server:  # the first reply outlasts the wall cap
        result = gemini.use(server).headless(["--strict", "--wall", "15s", "--usd", "5"])
        billed = bills(server)  # the cut reply is never billed whole: nothing to wait for
    report = result.report
    assert result.rc == 124, result.stderr[-3000:]
    cut = [call for call in report["calls"] if call["charged"] == "bound"]
    assert len(cut) == 1 and cut[0]["cost_usd"] > 0 and cut[0]["output_tokens"] == cut[0]["max_tokens"]
    assert len(report["calls"]) == len(billed) + 1 == 1  # the fake bills only a reply sent whole; a real server would
    assert_counted_exactly_but_the_cut(report, server)
    assert_tree_gone(gemini)


def assert_counted_exactly_but_the_cut(report: dict, server: FakeGemini) -> None:
    bill, reached = bills(server), {record["id"] for record in server.requests}
    with open_ledger(Path(os.environ["CAPGUARD_HOME"]) / "ledger.db") as ledger:
        rows = ledger.usage(report["run_id"])
    assert len(rows) == len(report["calls"])
    for row in rows:
        key = row["dedupe_key"].removeprefix("proxy:gemini:")
        if row["details"]["charged"] == "usage":
            assert row["cost_micro_usd"] == bill[key][0]
        else:
            assert key in reached and key not in bill  # the stream had shown its response id


def test_a_dead_proxy_refuses_gemini_and_stops_the_run_with_meter_error_115(tmp_path, gemini_bin, repo):
    """The proxy's loop dies under the real Gemini CLI (capguard itself lives): its requests get connection refused,
    never an unmetered path, and the run stops with meter_error; every call that reached the server was counted."""
    runner = Gemini(tmp_path, gemini_bin, repo)
    try:
        with FakeGemini(runaway(runner.tag, delay_s=0.05)) as server:
            runner.use(server)
            env = {**runner.env}
            settings = load_settings("gemini", flags={"meter": "proxy"}, env={}, cwd=repo)
            old_cwd = Path.cwd()
            os.chdir(repo)
            try:
                plan = ADAPTER.plan(["-y", "-m", "gemini-2.5-flash", "-p", "loop"], settings, tmp_path, env, "RUN1")
            finally:
                os.chdir(old_cwd)
            assert plan.fronts and plan.fronts[0].upstream == server.base_url
            caps = Caps(usd_micro=5_000_000, wall_s=120)
            strict = StrictMeter(plan.fronts, Pricer(), caps)
            supervisor = Supervisor(plan, caps, Pricer(), name="gemini", strict=strict)

            def kill_proxy() -> None:
                server.wait_for(3, timeout=60)
                strict.proxy.stop()

            threading.Thread(target=kill_proxy, daemon=True).start()
            outcome = supervisor.run()
            billed, reached = bills(server), len(server.requests)
        assert outcome.stop_reason == StopReason.METER_ERROR and EXIT_CODES[outcome.stop_reason] == 115
        assert "metering proxy stopped" in (outcome.meter.meter_error or "")
        assert len(outcome.proxy_calls) == reached >= 3  # every call that reached the server; one cut: its bound
        assert outcome.meter.cost_micro >= sum(m for m, _, _ in billed.values())
        assert "127.0.0.1" in plan.env["GOOGLE_GEMINI_BASE_URL"] and not PROXY_URL.search(" ".join(plan.argv).encode())
    finally:
        runner.cleanup()
    assert_tree_gone(runner)


# ---- the proxy alone, with a client that speaks the REST API


def post(url: str, body: dict, headers: dict | None = None) -> tuple[int, dict]:
    request = urllib.request.Request(
        url, json.dumps(body).encode(), {"Content-Type": "application/json", **(headers or {})}
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as reply:
            return reply.status, json.loads(reply.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def test_the_proxy_speaks_googles_error_format_and_keeps_the_key_out_of_the_url():
    request = {"contents": [{"role": "user", "parts": [{"text": "hello"}]}]}
    events: list = []
    gate = Gate(Pricer(), cap_micro=5_000, on_event=events.append)  # $0.005: a few small calls
    with (
        FakeGemini(chat_script()) as server,
        MeteringProxy(gate, {"g": server.base_url}, dialects={"g": GEMINI}) as proxy,
    ):
        base = proxy.base_url("g") + "/v1beta/models/gemini-2.5-flash"
        status, reply = post(base + ":generateContent?key=AIza-test-key", request)
        assert status == 200 and reply["usageMetadata"]["promptTokenCount"] > 0
        (first,) = server.requests
        assert first["key_header"] and "key" not in first["query"]
        assert first["body"]["generationConfig"]["maxOutputTokens"] >= 1_024  # written by the proxy
        status, reply = post(base + ":countTokens", request, {"x-goog-api-key": "k"})
        assert status == 200 and reply["totalTokens"] > 0 and len(server.requests) == 1  # free: not metered
        status, reply = post(
            base + ":generateContent", {**request, "tools": [{"googleSearch": {}}]}, {"x-goog-api-key": "k"}
        )
        assert (status, reply["error"]["status"]) == (400, "INVALID_ARGUMENT") and "googleSearch" in reply["error"][
            "message"
        ]
        status, reply = post(proxy.base_url("g") + "/v1beta/models/gemini-embedding-001:embedContent", request)
        assert (status, reply["error"]["status"]) == (403, "PERMISSION_DENIED")
        while (answer := post(base + ":generateContent", request, {"x-goog-api-key": "k"}))[0] == 200:
            pass
        status, reply = answer
        assert (status, reply["error"]["code"], reply["error"]["status"]) == (429, 429, "RESOURCE_EXHAUSTED")
        assert "spending cap of $0.0050 reached" in reply["error"]["message"]
        assert server.wait_idle(10)  # the last reply's bill is written after its bytes went out
        billed = bills(server)
    settled = [e for e in events if isinstance(e, UsageReply)]
    assert {e.key.removeprefix("proxy:gemini:") for e in settled} == set(billed)
    assert sum(Pricer().price(e).cost_micro for e in settled) == sum(m for m, _, _ in billed.values()) <= 5_000


@pytest.mark.pty
def test_the_tui_runaway_is_stopped_before_the_cap(tmp_path, gemini_bin, repo):
    runner = Gemini(tmp_path, gemini_bin, repo)
    rc_file = tmp_path / "rc"
    with FakeGemini(runaway(runner.tag, delay_s=0.05)) as server:
        runner.use(server)
        term = Tmux(
            runner.tag[:12], runner.argv(["--strict", "--usd", "0.05"], ["-y"]), runner.repo, runner.env, rc_file
        )
        try:
            wait_for(lambda: "Type your message" in term.screen(), 90, "Gemini's prompt")
            wait_for(
                lambda: term.keys("loop until told") or "loop until told" in term.screen(),
                60,
                "the typed prompt",
                interval=3,
            )
            wait_for(lambda: term.enter() or server.requests, 60, "the first request", interval=3)
            wait_for(rc_file.exists, 150, "capguard to end")
            screen = term.screen()
        finally:
            term.close()
            left = runner.survivors()
            runner.cleanup()
    report = json.loads(runner.report_path.read_text())
    assert int(rc_file.read_text()) == 122, screen[-2500:]
    assert report["stop_reason"] == "usd" and report["overshoot"] == 0
    bill = bills(server)
    assert sum(m for m, _, _ in bill.values()) <= 50_000 and ROUTER in {kind for _, _, kind in bill.values()}
    assert_counted_exactly(report, server)
    assert "capguard: stopped gemini: cost $" in screen
    assert not left, [(p.pid, p.cmdline()) for p in left]


def test_a_runaway_on_vertex_ai_stops_at_the_usd_cap_counted_exactly(gemini):
    """Gemini CLI signed in to Vertex AI (an API key: express mode, the path without project or location) sends to
    GOOGLE_VERTEX_BASE_URL: there the proxy stands, in front of the fake serving Vertex's paths. The run stops at
    the cap, the server's bill within it, the ledger equal to it to the token; the Gemini API's endpoint is closed."""
    gemini.env.update(GOOGLE_GENAI_USE_VERTEXAI="true", GOOGLE_API_KEY=gemini.env.pop("GEMINI_API_KEY"))
    (gemini.home / ".gemini" / "settings.json").write_text("{}")  # no sign-in selected: the environment picks it
    with FakeGemini(runaway(gemini.tag, delay_s=0.05)) as server:
        gemini.env["GOOGLE_VERTEX_BASE_URL"] = server.base_url
        result = gemini.headless(["--strict", "--usd", "0.05"])
    report = result.report
    assert result.rc == 122, result.stderr[-3000:]
    assert report["stop_reason"] == "usd" and report["overshoot"] == 0 and report["meter"] == "both"
    served = server.billed()
    assert len(served) >= 3 and all(r["vertex_location"] == "global" and r["key_header"] for r in served)
    bill = bills(server)
    assert sum(m for m, _, _ in bill.values()) <= 50_000
    assert_counted_exactly(report, server)
    assert report["refusals"][-1]["cap"] == "usd"
    # Vertex's countTokens was asked in its own shape (the prompt's fields, no request inside) and tightened a bound
    assert server.counts and all(c["vertex_location"] == "global" for c in server.counts), server.counts
    assert any(call["prompt_counted"] for call in report["calls"])
    assert "the next call's worst case would pass the $0.05 cap" in result.stderr
    assert_no_proxy_secret(result.stdout, result.stderr)
    assert_tree_gone(gemini)
