"""Strict mode's wiring, pure parts: which providers each agent's proxy fronts (and what it refuses at start), the
gate's token cap, the stop reason of a refusal, the allow/deny check at start, the report's meter and calibration."""

from __future__ import annotations

import json
import time

import pytest

from capguard.agents.aider.adapter import ANTHROPIC_DEFAULT as AIDER_ANTHROPIC_DEFAULT
from capguard.agents.aider.adapter import GEMINI_DEFAULT as AIDER_GEMINI_DEFAULT
from capguard.agents.aider.adapter import OPENAI_DEFAULT, OTHERS, provider_of
from capguard.agents.aider.adapter import strict_fronts as aider_fronts
from capguard.agents.base import without_option
from capguard.agents.claude.adapter import ANTHROPIC_DEFAULT
from capguard.agents.claude.adapter import strict_fronts as claude_fronts
from capguard.core.anthropic_usage import CallUsage
from capguard.core.caps import Caps
from capguard.core.enums import StopReason
from capguard.core.errors import ConfigError
from capguard.core.events import Reply
from capguard.core.meter import Meter
from capguard.core.model_caps import ModelRules
from capguard.core.pricing import Priced, Pricer
from capguard.metering.proxy.bounds import Conversations, input_bound
from capguard.metering.proxy.gate import Gate, Refused
from capguard.metering.proxy.usage import Seen
from capguard.reports.run_report import RunFacts, build_report, stop_line
from capguard.supervisor.strict import model_refusal, shown_url, stop_reason


# ---- Claude Code: ANTHROPIC_BASE_URL, or a refusal
def test_claude_is_fronted_at_its_own_base_url_or_the_apis(tmp_path):
    cwd, home = tmp_path / "repo", tmp_path / ".claude"
    cwd.mkdir()
    (front,) = claude_fronts([], {}, cwd, home)
    assert (front.upstream, front.dialect, front.env) == (
        ANTHROPIC_DEFAULT,
        "anthropic",
        ("ANTHROPIC_BASE_URL",),
    )
    (front,) = claude_fronts([], {"ANTHROPIC_BASE_URL": "https://gw.example/anthropic"}, cwd, home)
    assert front.upstream == "https://gw.example/anthropic"


def test_claude_base_url_in_settings_or_not_http_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="ANTHROPIC_BASE_URL is set in --settings"):
        claude_fronts(["--settings", '{"env": {"ANTHROPIC_BASE_URL": "http://x"}}'], {}, tmp_path, tmp_path)
    with pytest.raises(ConfigError, match="not an http"):
        claude_fronts([], {"ANTHROPIC_BASE_URL": "unix:/tmp/sock"}, tmp_path, tmp_path)
    # a repo's settings that would send the hop to the proxy through an HTTP proxy (with the run's secret)
    (tmp_path / ".claude").mkdir()
    (tmp_path / ".claude" / "settings.json").write_text('{"env": {"NO_PROXY": "", "HTTPS_PROXY": "http://x:1"}}')
    with pytest.raises(ConfigError, match=r"NO_PROXY is set in .*settings.json"):
        claude_fronts([], {}, tmp_path, tmp_path / "home")


# ---- aider: the providers of its models
@pytest.mark.parametrize(
    ("model", "provider"),
    [("openai/gpt-4o", "openai"), ("gpt-4o-mini", "openai"), ("o3-mini", "openai"), ("claude-sonnet-4-5", "anthropic"),
     ("anthropic/claude-opus-4-6", "anthropic"), ("bedrock/anthropic.claude", "bedrock"), ("my-local", None)],
)  # fmt: skip
def test_aider_model_providers(model, provider):
    assert provider_of(model) == provider


def test_aider_openai_base_moves_from_argv_to_the_environment(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    args = ["--model", "openai/gpt-4o", "--openai-api-base", "http://up.example/v1", "--no-stream", "--", "x"]
    fronts, kept, env = aider_fronts(args, {"HOME": str(tmp_path), "AIDER_OPENAI_API_BASE": "http://other/v1"})
    (front,) = fronts
    assert front.upstream == "http://up.example/v1" and front.env == ("OPENAI_API_BASE", "OPENAI_BASE_URL")
    assert kept == ["--model", "openai/gpt-4o", "--no-stream", "--", "x"]  # the proxy's URL never in argv
    assert "AIDER_OPENAI_API_BASE" not in env
    # litellm reads OPENAI_BASE_URL first: it is the upstream when set
    fronts, _, _ = aider_fronts(["--model", "gpt-4o"], {"HOME": str(tmp_path), "OPENAI_BASE_URL": "http://b/v1"})
    assert fronts[0].upstream == "http://b/v1"


def test_aider_with_two_providers_gets_both_fronted(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    fronts, _, _ = aider_fronts(["--model", "sonnet", "--weak-model", "gpt-4o-mini"], {"HOME": str(tmp_path)})
    assert [(f.mount, f.upstream) for f in fronts] == [
        ("openai", OPENAI_DEFAULT),
        ("anthropic", AIDER_ANTHROPIC_DEFAULT),
    ]


@pytest.mark.parametrize(
    ("args", "match"),
    [
        (["--model", "vertex_ai/gemini-2.5-pro"], "'vertex_ai'"),
        (["--model", "mistral/codestral-2508"], "'mistral'.*DeepSeek, OpenRouter, Gemini"),
        (["--model", "gemini/gemini-2.5-flash"], None),  # fronted below: only its base URL refused here
        (["--model", "gpt-4o", "--weak-model", "ollama/llama3"], "--weak-model ollama/llama3"),
        (["--model", "my-local"], "cannot tell"),
        ([], "no model is named"),
        (["--model", "gpt-4o", "--set-env", "OPENAI_API_BASE=http://x"], "--set-env"),
    ],
)
def test_aider_refusals_at_start(tmp_path, monkeypatch, args, match):
    monkeypatch.chdir(tmp_path)
    if match is None:
        with pytest.raises(ConfigError, match="GEMINI_API_BASE 'http://gw' does not end in an API version"):
            aider_fronts(args, {"HOME": str(tmp_path), "GEMINI_API_BASE": "http://gw"})
        return
    with pytest.raises(ConfigError, match=match):
        aider_fronts(args, {"HOME": str(tmp_path)})


@pytest.mark.parametrize(
    ("model", "env", "want"),
    [
        ("deepseek/deepseek-chat", {}, ("deepseek", OTHERS["deepseek"].default, "chat", "deepseek", "")),
        ("deepseek", {"DEEPSEEK_API_BASE": "http://d/v1"}, ("deepseek", "http://d/v1", "chat", "deepseek", "")),
        ("openrouter/anthropic/claude-sonnet-4", {}, ("openrouter", OTHERS["openrouter"].default, "chat", "openrouter", "")),
        ("gemini/gemini-2.5-pro", {}, ("gemini", AIDER_GEMINI_DEFAULT, "gemini", None, "/v1beta")),
        ("flash", {"GEMINI_API_BASE": "http://g/api/v1alpha/"}, ("gemini", "http://g/api", "gemini", None, "/v1alpha")),
    ],
)  # fmt: skip
def test_aider_other_providers_are_fronted_at_their_litellm_variable(tmp_path, monkeypatch, model, env, want):
    """litellm takes DEEPSEEK_API_BASE / OPENROUTER_API_BASE / GEMINI_API_BASE (aider's aliases resolve first);
    Gemini's API version moves from the upstream to the path aider is given, where the proxy routes by it."""
    monkeypatch.chdir(tmp_path)
    (front,), _, _ = aider_fronts(["--model", model], {"HOME": str(tmp_path), **env})
    assert (front.mount, front.upstream, front.dialect, front.provider, front.path) == want
    assert front.env == (OTHERS[front.mount].variable,)


def test_aider_other_providers_base_url_in_a_dotenv_is_refused(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / ".env").write_text("DEEPSEEK_API_BASE=http://x\n")
    with pytest.raises(ConfigError, match="DEEPSEEK_API_BASE in"):
        aider_fronts(["--model", "deepseek/deepseek-chat"], {"HOME": str(tmp_path)})


def test_aider_base_urls_in_its_files_are_refused(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / ".aider.conf.yml").write_text("openai-api-base: http://x/v1\n")
    with pytest.raises(ConfigError, match="openai-api-base in"):
        aider_fronts(["--model", "gpt-4o"], {"HOME": str(tmp_path)})
    (tmp_path / ".aider.conf.yml").unlink()
    (tmp_path / ".env").write_text("export ANTHROPIC_BASE_URL=http://x\n")
    with pytest.raises(ConfigError, match="ANTHROPIC_BASE_URL in"):
        aider_fronts(["--model", "gpt-4o"], {"HOME": str(tmp_path)})


def test_without_option_keeps_what_follows_the_separator():
    assert without_option(["-a", "--o", "1", "--o=2", "--", "--o", "3"], "--o") == ["-a", "--", "--o", "3"]


# ---- the gate's prices by the mount's provider
@pytest.mark.parametrize(
    ("provider", "model", "priced"),
    [(None, "gpt-4o", "openai/gpt-4o"), ("deepseek", "deepseek-chat", "deepseek/deepseek-chat"),
     ("openrouter", "anthropic/claude-sonnet-4", "openrouter/anthropic/claude-sonnet-4"),
     ("deepseek", "deepseek/deepseek-chat", "deepseek/deepseek-chat")],
)  # fmt: skip
def test_a_mounts_provider_names_the_prices_over_the_dialects(provider, model, priced):
    events: list = []
    gate = Gate(Pricer(), cap_micro=1_000_000, providers={"chat": "openai"}, on_event=events.append)
    body = {"model": model, "max_tokens": 100, "messages": [{"role": "user", "content": "hi"}]}
    admission = gate.admit("chat", body, provider=provider)
    assert not isinstance(admission, Refused) and admission.model == priced, (admission, events)


# ---- the gate's token cap
def body(text: str = "hello", max_tokens: int = 4096) -> dict:
    return {"model": "claude-haiku-4-5", "max_tokens": max_tokens, "messages": [{"role": "user", "content": text}]}


def test_the_token_cap_lowers_max_tokens_then_refuses():
    events: list = []
    gate = Gate(Pricer(), cap_micro=None, token_cap=5_000, on_event=events.append)
    prompt = input_bound("anthropic", body(), Conversations()).tokens
    first = gate.admit("anthropic", body())
    assert not isinstance(first, Refused)
    assert first.max_out == 5_000 - prompt and first.lowered and first.body["max_tokens"] == first.max_out
    second = gate.admit("anthropic", body())  # the first holds everything
    assert isinstance(second, Refused) and second.at_cap and second.cap == "tokens"
    assert "token cap of 5,000 reached" in second.why
    gate.settle(first, Seen(usage=CallUsage(input_tokens=20, output_tokens=100), complete=True))
    assert gate.spent_tokens == 120
    other = input_bound("anthropic", body("x" * 2_000), Conversations()).tokens
    third = gate.admit("anthropic", body("x" * 2_000))
    assert not isinstance(third, Refused) and third.max_out == 5_000 - 120 - other
    gate.release(third)
    assert gate.admit("anthropic", body(max_tokens=500)).max_out == 500  # fits: left as asked


def test_a_refusal_names_the_cap_in_force():
    refused = Refused("anthropic", "m", "why", True, cap="usd")
    assert stop_reason(refused, Caps(usd_micro=5_000_000)) == StopReason.USD
    assert stop_reason(refused, Caps(usd_micro=5_000_000, monthly_remaining_micro=1_000_000)) == StopReason.MONTHLY
    assert stop_reason(Refused("anthropic", "m", "why", True, cap="tokens"), Caps(tokens=10)) == StopReason.TOKENS
    assert stop_reason(Refused("anthropic", "m", "denied", False), Caps(usd_micro=1)) is None
    at_model_cap = Refused("anthropic", "m", "why", True, cap="model", model_cap="claude-opus-*")
    assert stop_reason(at_model_cap, Caps(usd_micro=5_000_000)) == StopReason.MODEL


def test_the_gate_follows_the_caps_in_force():
    from capguard.agents.base import Front
    from capguard.supervisor.strict import StrictMeter

    strict = StrictMeter([Front("a", "http://x", "anthropic", ("A",))], Pricer(), Caps(usd_micro=5_000_000))
    assert strict.gate.cap_micro == 5_000_000
    strict.sync(Caps(usd_micro=5_000_000, monthly_remaining_micro=2_000_000, tokens=9))
    assert strict.gate.cap_micro == 2_000_000
    strict.sync(Caps(usd_micro=5_000_000, monthly_remaining_micro=-5))
    assert strict.gate.cap_micro == 0


def test_model_refusal_at_start():
    assert model_refusal("openai/gpt-4o", ModelRules(deny=("gpt-4o",))) == (
        "model openai/gpt-4o is denied by the configuration ([models] deny has 'gpt-4o')"
    )
    assert model_refusal("claude-opus-4-6", ModelRules(allow=("claude-sonnet-*",))) is not None
    assert model_refusal("claude-sonnet-4-5", ModelRules(allow=("claude-sonnet-*",), deny=("claude-opus-*",))) is None
    assert model_refusal(None, ModelRules(deny=("*",))) is None


def test_shown_url_drops_credentials():
    assert shown_url("https://user:pw@gw.example:8443/v1?key=s") == "https://gw.example:8443/v1"


# ---- the report
def facts(meter: Meter, files: Meter | None, **kw) -> RunFacts:
    now = time.time()
    return RunFacts(
        run_id="r", agent="aider", argv=["aider"], cwd="/", user="u", host="h", started_at=now, ended_at=now,
        elapsed_s=1.0, caps=Caps(usd_micro=300_000), meter=meter, stop_reason=StopReason.USD, agent_returncode=None,
        at_stop={"cost_usd": meter.cost_micro / 1e6, "tokens": meter.tokens, "steps": meter.steps},
        strict=True, files_meter=files, **kw,
    )  # fmt: skip


def metered(*costs: int) -> Meter:
    meter = Meter()
    for n, cost in enumerate(costs):
        meter.add_reply(Reply(f"k{n}", "openai/gpt-4o", input_tokens=100), Priced("openai/gpt-4o", cost, "x"))
    return meter


def test_the_report_of_a_strict_run():
    calls = [{"lowered_max_tokens": True}, {"lowered_max_tokens": False}]
    report = build_report(facts(metered(100_000, 66_796), metered(119_314), proxy_calls=calls))
    assert report["meter"] == "both" and report["overshoot"] == 0 and report["calls_lowered"] == 1
    calibration = report["calibration"]
    assert calibration["difference_pct"] == -28.5 and calibration["files_replies"] == 1
    assert calibration["line"] == (
        "the agent's own files counted $0.12 in 1 reply; the proxy saw $0.17 billed in 2 calls (files 28.5% low)"
    )
    line = stop_line(facts(metered(166_796), None))
    assert "cost $0.17, and the next call's worst case would pass the $0.30 cap (the proxy refused it)" in line
    alone = build_report(facts(metered(1), Meter()))
    assert alone["meter"] == "proxy" and alone["calibration"] is None


def test_a_proxy_that_cannot_listen_starts_no_agent(monkeypatch):
    from capguard.agents.base import Front
    from capguard.core.errors import ProxyUnavailable
    from capguard.supervisor.strict import StrictMeter

    strict = StrictMeter([Front("a", "http://x", "anthropic", ("A",))], Pricer(), Caps())

    def no_port() -> None:
        raise OSError(98, "Address already in use")

    monkeypatch.setattr(strict.proxy, "start", no_port)
    with pytest.raises(ProxyUnavailable, match="could not listen on 127.0.0.1 \\(Address already in use\\)") as err:
        strict.start()
    assert err.value.exit_code == 115 and strict.problem() is None


def test_the_gate_holds_the_models_table_and_the_task_budget():
    from capguard.agents.base import Front
    from capguard.core.model_caps import ModelCap
    from capguard.metering.proxy.dialects import ANTHROPIC
    from capguard.supervisor.strict import StrictMeter

    rules = ModelRules(caps=(ModelCap("claude-opus-*", usd_micro=1),), deny=("*-preview",))
    strict = StrictMeter(
        [Front("a", "http://x", "anthropic", ("A",))], Pricer(), Caps(usd_micro=5_000_000), models=rules,
        task_budget=50_000,
    )  # fmt: skip
    body = {"model": "claude-opus-4-1", "max_tokens": 2000, "messages": [{"role": "user", "content": "hi"}]}
    refused = strict.gate.admit(ANTHROPIC, body)
    assert (refused.cap, refused.model_cap) == ("model", "claude-opus-*")
    assert stop_reason(refused, Caps(usd_micro=5_000_000)) == StopReason.MODEL
    assert "denied" in strict.gate.admit(ANTHROPIC, dict(body, model="claude-x-preview")).why
    assert strict.gate.task_budgets is not None and strict.gate.task_budgets.total == 50_000


def test_claude_with_a_unix_socket_for_its_requests_is_refused(tmp_path):
    """Claude Code 2.1.330 sends every API request over ANTHROPIC_UNIX_SOCKET when it is set, whatever
    ANTHROPIC_BASE_URL says: the proxy would see none of them."""
    home = tmp_path / ".claude"
    with pytest.raises(ConfigError, match="ANTHROPIC_UNIX_SOCKET in environment .*unix socket.*--meter files"):
        claude_fronts([], {"ANTHROPIC_UNIX_SOCKET": "/run/claude.sock"}, tmp_path, home)
    with pytest.raises(ConfigError, match="ANTHROPIC_UNIX_SOCKET"):
        claude_fronts([], {"ANTHROPIC_UNIX_SOCKET": "/s", "CLAUDE_CODE_USE_VERTEX": "1"}, tmp_path, home)
    home.mkdir()
    (home / "settings.json").write_text(json.dumps({"env": {"ANTHROPIC_UNIX_SOCKET": "/run/claude.sock"}}))
    with pytest.raises(ConfigError, match="ANTHROPIC_UNIX_SOCKET in .*settings.json"):
        claude_fronts([], {}, tmp_path, home)
    (home / "settings.json").write_text(json.dumps({"env": {"ANTHROPIC_UNIX_SOCKET": ""}}))
    assert claude_fronts([], {}, tmp_path, home)  # empty: Claude Code uses no socket
