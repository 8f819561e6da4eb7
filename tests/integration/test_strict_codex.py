"""Strict mode with the real Codex CLI: every request goes through capguard's metering proxy to the fake Responses
server (which bills like a real one: usage follows the prompt and max_output_tokens). A runaway under a USD cap ends
with the server's bill within the cap (overshoot 0), and the ledger equal to that bill, call for call; the run's
secret is in the agent's environment only, never on any process's command line; a provider capguard cannot front
is refused at start; the proxy dying stops the run as a meter error.

Both ways Codex can be pointed at the proxy: a `model_providers` entry (its base URL replaced on the command line,
the secret in a header Codex fills from a variable) and the built-in OpenAI provider (`openai_base_url`, which
tries a WebSocket first: the proxy answers 426 and Codex goes on over HTTP).
"""

from __future__ import annotations

import json
import os
import re
import threading

import psutil
import pytest

from capguard.core.events import Reply as Used
from capguard.core.pricing import Pricer
from tests.fakes.fake_responses import FakeResponses, Reply, RunawayScript, Script, say, shell
from tests.fakes.responses_billing import prompt_text
from tests.integration.proxy_secret import PROXY_URL, assert_no_proxy_secret
from tests.integration.test_codex_caps import MODEL, Codex, ledger_rows

pytestmark = pytest.mark.agent


@pytest.fixture(scope="session")
def codex_bin() -> str:
    from tests.integration.conftest import agent_or_skip

    return agent_or_skip("codex", "CAPGUARD_TEST_CODEX", "npm install @openai/codex@0.169.1")


class StrictCodex(Codex):
    def builtin_openai(self, base_url: str) -> None:
        """Codex's own OpenAI provider at the fake (`openai_base_url`), signed in with an API key."""
        (self.codex_home / "config.toml").write_text(
            f'model = "{MODEL}"\nopenai_base_url = "{base_url}"\n\n'
            f'[projects."{os.path.realpath(self.repo)}"]\ntrust_level = "trusted"\n'
        )
        self.env["CODEX_API_KEY"] = "sk-fake"
        self.env["OPENAI_PROJECT"] = "proj_users_own"


@pytest.fixture
def codex(tmp_path, codex_bin, repo):
    runners = []

    def start(server: FakeResponses) -> StrictCodex:
        runner = StrictCodex(tmp_path, codex_bin, repo, server.base_url)
        runners.append(runner)
        return runner

    yield start
    for runner in runners:
        runner.cleanup()


def cost(usage: dict) -> int:
    cached = usage["input_tokens_details"]["cached_tokens"]
    used = Used("k", MODEL, usage["input_tokens"] - cached, usage["output_tokens"], cache_read_tokens=cached)
    priced = Pricer().price(used).cost_micro
    assert priced is not None
    return priced


def assert_ledger_is_the_bill(result, server: FakeResponses) -> None:
    """Every call the fake billed is in the ledger once, to the token and the micro-dollar, as the report says."""
    assert server.wait_idle(10)
    report = result.report
    bills = {b["id"]: b["usage"] for b in server.billed()}
    run, rows = ledger_rows(report["run_id"])
    assert run["exit_code"] == result.rc and run["stop_reason"] == report["stop_reason"]
    keys = [row["dedupe_key"].removeprefix("proxy:responses:") for row in rows]
    assert len(set(keys)) == len(keys) == len(report["calls"])
    assert set(keys) == set(bills), (keys, list(bills))  # none unmetered, none invented
    for row, key in zip(rows, keys):
        usage = bills[key]
        counted = row["input_tokens"] + row["output_tokens"] + row["cache_read_tokens"] + row["cache_write_tokens"]
        assert row["details"]["charged"] == "usage"
        assert (counted, row["cost_micro_usd"]) == (usage["total_tokens"], cost(usage))
    assert report["tokens"] == sum(u["total_tokens"] for u in bills.values())
    assert (
        round(report["cost_usd"] * 1e6)
        == sum(cost(u) for u in bills.values())
        == sum(r["cost_micro_usd"] for r in rows)
    )


class ArgvWatch:
    """Reads the command line of every process of the agent's tree while it runs, and the run's secret from its
    environment (`names`: the variables that hold it, alone or in the proxy's URL): no command line may hold it."""

    def __init__(self, tag: str, names: tuple[str, ...] = ("CAPGUARD_PROXY_KEY", "OPENAI_PROJECT")) -> None:
        self.tag, self.names = tag, names
        self.cmdlines: set[str] = set()
        self.secrets: set[str] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> ArgvWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)

    def _run(self) -> None:
        while not self._stop.wait(0.05):
            for proc in psutil.process_iter():
                try:
                    environ = proc.environ()
                    if environ.get("CAPGUARD_TEST_TAG") != self.tag:
                        continue
                    self.cmdlines.add("\0".join(proc.cmdline()))
                    for name in self.names:
                        value = environ.get(name) or ""
                        self.secrets.update(re.findall(r"127\.0\.0\.1:[0-9]+/([A-Za-z0-9_-]{32})/", value))
                        if re.fullmatch(r"[A-Za-z0-9_-]{32}", value):
                            self.secrets.add(value)
                except psutil.Error:
                    continue

    def assert_secret_only_in_env(self) -> None:
        assert self.secrets, "never saw the agent's tree (or its secret)"
        assert len(self.cmdlines) > 1
        for line in self.cmdlines:
            assert not any(secret in line for secret in self.secrets), line
            assert not PROXY_URL.search(line.encode()), line


def runaway() -> RunawayScript:
    return RunawayScript([Reply(delay_s=0.1, reasoning_tokens=8)])


@pytest.mark.parametrize("provider", ["model_providers", "builtin"])
def test_runaway_under_a_usd_cap_never_overshoots(codex, provider):
    with FakeResponses(runaway()) as server:
        runner = codex(server)
        if provider == "builtin":
            runner.builtin_openai(server.base_url)
        with ArgvWatch(runner.tag) as watch:
            result = runner.exec_run(["--strict", "--usd", "0.30"], timeout=180)
    report = result.report
    assert result.rc == 122, result.stderr[-3000:]
    assert report["stop_reason"] == "usd" and report["overshoot"] == 0 and report["meter"] in ("both", "proxy")
    assert sum(cost(b["usage"]) for b in server.billed()) <= 300_000  # what the server billed: within the cap
    assert_ledger_is_the_bill(result, server)
    assert "the next call's worst case would pass the $0.30 cap" in result.stderr
    assert not report["blind_spots"]  # the proxy sees every call, cut or not
    assert report["calibration"]["proxy_usd"] == report["cost_usd"]
    assert all("web_search" not in json.dumps(r["body"].get("tools")) for r in server.requests)
    if provider == "builtin":  # the user's own project header went upstream, the secret did not
        assert all(r["headers"].get("OpenAI-Project") == "proj_users_own" for r in server.requests)
    assert all("X-Capguard-Key" not in r["headers"] for r in server.requests)
    watch.assert_secret_only_in_env()
    assert_no_proxy_secret(result.stdout, result.stderr)
    assert not runner.survivors(), [p.cmdline() for p in runner.survivors()]


#: Codex 0.169.1's local compaction prompt starts with this (seen in its requests; binary strings).
CHECKPOINT = "You are performing a CONTEXT CHECKPOINT COMPACTION"
SUMMARY = "Ran echo one; it printed one. Nothing else is left to do."


@pytest.mark.parametrize("provider", ["model_providers", "builtin"])
def test_compaction_is_an_ordinary_metered_request(codex, provider):
    """Codex compacts its context once the usage billed passes `model_auto_compact_token_limit`. With a
    `model_providers` entry it asks the model itself for a summary (a local summarization turn); with the built-in
    OpenAI provider it compacts remotely, by a /responses request whose input ends with a `compaction_trigger` item
    (0.169.1 never calls /responses/compact, which the proxy refuses). Either way a Responses request through the
    proxy: the compaction works, the turn goes on from the summary, and the ledger is the fake's bill."""
    if provider == "builtin":
        script = Script([shell("echo one"), say("done")], compaction_reply=Reply(compaction=SUMMARY))
    else:  # the model writes the summary: the second main request is the summarization turn
        script = Script([shell("echo one"), say(SUMMARY), say("done")])
    with FakeResponses(script) as server:
        runner = codex(server)
        if provider == "builtin":
            runner.builtin_openai(server.base_url)
        config = runner.codex_home / "config.toml"
        config.write_text("model_auto_compact_token_limit = 2000\n" + config.read_text())  # the fake bills ~8k
        result = runner.exec_run(["--strict", "--usd", "5"], "run echo one, then finish", timeout=120)
    assert result.rc == 0, result.stderr[-3000:]
    assert "context compacted" in result.stderr and result.stdout.strip().endswith("done")
    requests = server.requests
    if provider == "builtin":
        assert [r["kind"] for r in requests] == ["main", "compaction", "main"]
    else:
        assert [CHECKPOINT in prompt_text(r["body"]) for r in requests] == [False, True, False]
    after = requests[-1]["body"]["input"]  # the summary in place of the tool call and its output
    assert SUMMARY in prompt_text(requests[-1]["body"])
    assert not any(item.get("type") in ("function_call", "function_call_output") for item in after)
    assert_ledger_is_the_bill(result, server)  # the compaction request among the calls, to the token
    assert not result.report["blind_spots"]
    assert not runner.survivors(), [p.cmdline() for p in runner.survivors()]


@pytest.mark.parametrize(
    ("setup", "word"),
    [
        ("chatgpt", "signed in with ChatGPT"),
        ("no-key", "no API key"),
        ("builtin-local", "built into Codex"),
        ("no-base-url", "has no base_url"),
    ],
)
def test_a_provider_the_proxy_cannot_front_is_refused_at_start(codex, setup, word):
    with FakeResponses(runaway()) as server:
        runner = codex(server)
        config = runner.codex_home / "config.toml"
        if setup in ("chatgpt", "no-key"):
            runner.builtin_openai(server.base_url)
            del runner.env["CODEX_API_KEY"]
        if setup == "chatgpt":
            auth = {"auth_mode": "chatgpt", "OPENAI_API_KEY": None, "tokens": {"id_token": "x", "access_token": "y"}}
            (runner.codex_home / "auth.json").write_text(json.dumps(auth))
        if setup == "builtin-local":
            config.write_text(config.read_text().replace('model_provider = "fake"', 'model_provider = "ollama"'))
        if setup == "no-base-url":
            config.write_text(config.read_text().replace(f'base_url = "{server.base_url}"\n', ""))
        result = runner.exec_run(["--strict", "--usd", "1"], timeout=60)
        assert not server.requests
    assert result.rc == 2, result.stderr
    line = result.stderr.strip()
    assert "\n" not in line and word in line and "--meter files" in line and "Traceback" not in line
    assert result.report is None
    assert not runner.survivors()


def test_the_proxy_dying_stops_the_run_as_a_meter_error(codex, tmp_path, monkeypatch):
    """Fail closed: the proxy's loop dies under the real Codex's feet (capguard itself lives; the supervisor runs in
    this process so the test can stop its proxy): Codex gets connection refused, the run stops with meter_error,
    every call that reached the server was counted and none went around the proxy."""
    from capguard.agents.codex.adapter import ADAPTER
    from capguard.config.settings import load_settings
    from capguard.core import child_env
    from capguard.core.caps import EXIT_CODES, Caps
    from capguard.core.enums import StopReason
    from capguard.supervisor.strict import StrictMeter
    from capguard.supervisor.supervise import Supervisor

    with FakeResponses(runaway()) as server:
        runner = codex(server)
        monkeypatch.chdir(runner.repo)
        settings = load_settings("codex", flags={"meter": "proxy"}, env=runner.env, cwd=runner.repo, files=[])
        args = ["exec", "--dangerously-bypass-approvals-and-sandbox", "loop forever"]
        plan = ADAPTER.plan(args, settings, tmp_path / "run", runner.env, "run-1")
        plan.env = child_env.for_agent(plan.env)
        caps = Caps(usd_micro=5_000_000, wall_s=120)
        assert plan.fronts
        strict = StrictMeter(plan.fronts, Pricer(fallback_model=plan.fallback_model), caps)

        def kill_proxy() -> None:
            server.wait_for(3, timeout=60)
            strict.proxy.stop()

        threading.Thread(target=kill_proxy, daemon=True).start()
        outcome = Supervisor(plan, caps, Pricer(), name="codex", strict=strict).run()
        assert server.wait_idle(10)
        billed = sum(cost(b["usage"]) for b in server.billed())
        served = len(server.requests)
    assert outcome.stop_reason == StopReason.METER_ERROR, outcome.stop_reason
    assert EXIT_CODES[outcome.stop_reason] == 115
    assert "metering proxy stopped" in (outcome.meter.meter_error or "")
    assert served == len(outcome.proxy_calls) >= 3  # every request that reached the server was counted
    assert outcome.meter.cost_micro >= billed  # a call cut as the proxy died is charged at its bound
    assert not runner.survivors(), [p.cmdline() for p in runner.survivors()]


def test_strict_codex_dry_run_names_the_front(codex):
    with FakeResponses(runaway()) as server:
        runner = codex(server)
        result = runner.run(["--strict", "--dry-run"], ["exec", "hi"], timeout=60)
    assert result.rc == 0, result.stderr
    assert not PROXY_URL.search(result.stdout.encode())
    assert '/h/codex"' in result.stdout and "CAPGUARD_PROXY_KEY=<secret> (added)" in result.stdout
    assert not server.requests


@pytest.mark.pty
def test_the_tui_under_a_usd_cap_counts_its_title_requests(codex, tmp_path):
    """The interactive TUI (tmux's terminal, --no-daemon as capguard runs it): its thread-title requests, which Codex
    writes nowhere, go through the proxy like its turns; the ledger is the fake's bill, titles included."""
    import shutil

    from tests.integration.test_codex_tty import Tmux

    if shutil.which("tmux") is None:
        pytest.skip("tmux is not installed")
    with FakeResponses(runaway()) as server:
        runner = codex(server)
        prompt = ["--dangerously-bypass-approvals-and-sandbox", "loop over the files forever"]
        term = Tmux(runner.argv(["--strict", "--usd", "0.30"], prompt), runner.repo, runner.env, runner.tag)
        try:
            with ArgvWatch(runner.tag) as watch:
                rc = term.wait(180)
            screen = term.screen()
        finally:
            term.close()
        result = runner.result(rc, "", screen)
        assert server.wait_idle(10)
    report = result.report
    assert rc == 122, screen
    assert report["stop_reason"] == "usd" and report["overshoot"] == 0 and "--no-daemon" in report["argv"]
    assert server.billed("title"), "the TUI sent no title request"
    assert all(r["user_agent"].startswith("codex-tui") for r in server.requests)
    assert_ledger_is_the_bill(result, server)  # the title requests too
    assert not report["blind_spots"]
    assert report["calibration"]["files_usd"] < report["calibration"]["proxy_usd"]  # the files miss the titles
    watch.assert_secret_only_in_env()
    assert not runner.survivors(), [p.cmdline() for p in runner.survivors()]
