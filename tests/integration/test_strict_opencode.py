"""Strict mode with the real OpenCode (`opencode run`): every request, the session-title call on its small_model
included, goes through capguard's metering proxy to the billing fake Chat Completions server. OpenCode is told the
proxy's URL in OPENCODE_CONFIG_CONTENT (merged over the user's config, with only the fronted providers enabled), so
the run's secret is in its environment only. A runaway under a USD cap ends with the server's bill within the cap
(overshoot 0) and the ledger equal to it, title call included; a provider capguard cannot front is refused at
start; the proxy dying stops the run as a meter error.
"""

from __future__ import annotations

import json
import threading

import pytest

from tests.fakes.fake_chat import MAIN, TITLE, FakeChat, runaway_script
from tests.integration.proxy_secret import assert_no_proxy_secret
from tests.integration.test_opencode_caps import RUNAWAY, OpenCode, opencode_bin  # noqa: F401  (the fixture)
from tests.integration.test_strict_aider import assert_counted_exactly, bills
from tests.integration.test_strict_codex import ArgvWatch

pytestmark = pytest.mark.agent
MODEL = "gpt-4o-mini"  # a model capguard prices (as openai/gpt-4o-mini), served by the fake as any other


class StrictOpenCode(OpenCode):
    def __init__(self, tmp_path, opencode: str, base_url: str):
        super().__init__(tmp_path, opencode, base_url)
        config = json.loads(self.config.read_text())
        fake = config["provider"]["fake"]
        # OpenCode's own price of it as capguard's (genai-prices'), so the calibration line compares counts alone
        fake["models"] = {MODEL: {"name": MODEL, "cost": {"input": 0.15, "output": 0.6, "cache_read": 0.075}}}
        config.update(model=f"fake/{MODEL}", small_model=f"fake/{MODEL}")
        self.config.write_text(json.dumps(config))


@pytest.fixture
def opencode(tmp_path, opencode_bin):
    runners = []

    def start(server: FakeChat) -> StrictOpenCode:
        runners.append(StrictOpenCode(tmp_path, opencode_bin, server.base_url))
        return runners[-1]

    yield start
    for runner in runners:
        runner.cleanup()


def test_runaway_under_a_usd_cap_never_overshoots_and_counts_the_title_call(opencode):
    with FakeChat(runaway_script(RUNAWAY)) as server:
        runner = opencode(server)
        with ArgvWatch(runner.tag, ("OPENCODE_CONFIG_CONTENT",)) as watch:
            result = runner.headless(["--strict", "--usd", "0.05"])
        assert server.wait_idle(10)
    report = result.report
    assert result.rc == 122, result.stderr[-3000:]
    assert report["stop_reason"] == "usd" and report["overshoot"] == 0 and report["meter"] in ("both", "proxy")
    assert sum(m for m, _ in bills(server).values()) <= 50_000  # what the server billed: within the cap
    assert_counted_exactly(report, server)  # every billed call, the title call too, to the token
    title = server.billed(TITLE)
    assert len(title) == 1 and len(server.billed(MAIN)) >= 2
    assert not report["blind_spots"]
    calibration = report["calibration"]
    assert calibration is not None and calibration["proxy_usd"] == report["cost_usd"]
    # OpenCode's store never has the title call (nor a step cut by the stop)
    assert calibration["files_usd"] < calibration["proxy_usd"] and calibration["files_tokens"] < report["tokens"]
    assert "would pass the $0.05 cap" in result.stderr
    watch.assert_secret_only_in_env()
    assert_no_proxy_secret(result.stdout, result.stderr)
    assert not runner.survivors(), [p.cmdline() for p in runner.survivors()]


@pytest.mark.parametrize(
    ("setup", "word"),
    [("other-model", "'google' is not one the proxy fronts"), ("oauth", "signed in (OAuth)")],
)
def test_a_provider_the_proxy_cannot_front_is_refused_at_start(opencode, setup, word):
    with FakeChat(runaway_script(RUNAWAY)) as server:
        runner = opencode(server)
        extra: list[str] = []
        if setup == "other-model":
            extra = ["-m", "google/gemini-2.5-pro"]
        else:
            runner.db.parent.mkdir(parents=True, exist_ok=True)
            (runner.db.parent / "auth.json").write_text(json.dumps({"fake": {"type": "oauth", "access": "x"}}))
        result = runner.headless(["--strict", "--usd", "1"], *extra)
        assert not server.requests
    assert result.rc == 2, result.stderr[-2000:]
    line = result.stderr.strip()
    assert "\n" not in line and word in line and "--meter files" in line and "Traceback" not in line
    assert result.report is None
    assert not runner.survivors()


def test_the_proxy_dying_stops_the_run_as_a_meter_error(opencode, tmp_path, monkeypatch):
    """Fail closed, as test_strict_codex's: the proxy's loop dies under the real OpenCode (the supervisor runs in
    this process); the run stops with meter_error, every call that reached the server counted."""
    from capguard.agents.opencode.adapter import ADAPTER
    from capguard.config.settings import load_settings
    from capguard.core import child_env
    from capguard.core.caps import EXIT_CODES, Caps
    from capguard.core.enums import StopReason
    from capguard.core.pricing import Pricer
    from capguard.supervisor.strict import StrictMeter
    from capguard.supervisor.supervise import Supervisor

    with FakeChat(runaway_script(RUNAWAY)) as server:
        runner = opencode(server)
        monkeypatch.chdir(runner.repo)
        settings = load_settings("opencode", flags={"meter": "proxy"}, env=runner.env, cwd=runner.repo, files=[])
        plan = ADAPTER.plan(["run", "--auto", "go"], settings, tmp_path / "run", runner.env, "run-1")
        plan.env = child_env.for_agent(plan.env)
        caps = Caps(usd_micro=5_000_000, wall_s=180)
        assert plan.fronts
        strict = StrictMeter(plan.fronts, Pricer(fallback_model=plan.fallback_model), caps)

        def kill_proxy() -> None:
            server.wait_for(3, timeout=120)
            strict.proxy.stop()

        threading.Thread(target=kill_proxy, daemon=True).start()
        outcome = Supervisor(plan, caps, Pricer(), name="opencode", strict=strict).run()
        assert server.wait_idle(10)
        billed = sum(m for m, _ in bills(server).values())
        served = len(server.requests)
    assert outcome.stop_reason == StopReason.METER_ERROR, outcome.stop_reason
    assert EXIT_CODES[outcome.stop_reason] == 115
    assert "metering proxy stopped" in (outcome.meter.meter_error or "")
    assert served == len(outcome.proxy_calls) >= 3  # every request that reached the server was counted
    assert outcome.meter.cost_micro >= billed  # a call cut as the proxy died is charged at its bound
    assert not runner.survivors(), [p.cmdline() for p in runner.survivors()]
