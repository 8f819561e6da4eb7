"""Strict mode with Codex's built-in Amazon Bedrock providers (`amazon-bedrock`: Mantle's OpenAI endpoint;
`amazon-bedrock-runtime`): the real Codex 0.169.1 through capguard's proxy against a fake Responses server that
checks every request's SigV4 signature as AWS does (tests/fakes/sigv4.py), or a Bedrock API key. Codex signs for
the host it sends to, the proxy's: the proxy takes the run's secret as Codex's Bedrock API key and signs each
request for the provider itself, or sends the user's own key on."""

from __future__ import annotations

from dataclasses import replace

import pytest

from capguard.core.events import Reply as Used
from capguard.core.pricing import Pricer
from tests.fakes import sigv4
from tests.fakes.fake_responses import FakeResponses, Reply, RunawayScript
from tests.integration.proxy_secret import assert_no_proxy_secret
from tests.integration.test_codex_caps import ledger_rows
from tests.integration.test_strict_codex import ArgvWatch, StrictCodex, codex, codex_bin  # noqa: F401 (fixtures)

pytestmark = pytest.mark.agent

MODEL = "openai.gpt-6-sol"  # priced by genai-prices as Bedrock's regional gpt-6-sol (a Mantle endpoint's region)
KEYS = sigv4.Keys(
    "AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY", "eu-west-1", "bedrock-mantle", "FQoGZXIvYXdzEXAMPLETOKEN"
)
USERS_KEY = "ABSKQmVkcm9ja0FQSUtleS1users-own-bedrock-key"


def on_bedrock(
    runner: StrictCodex,
    server: FakeResponses,
    *,
    provider: str = "amazon-bedrock",
    bearer: bool = False,
    profile: str | None = None,
) -> None:
    """Codex's built-in Bedrock provider, its base URL the fake's (a user's own endpoint), the region in the
    environment; AWS credentials (with a session token) in the environment, or a Bedrock API key. With `profile`,
    set in the profile's file ($CODEX_HOME/<profile>.config.toml, for `-p`) over a config.toml naming OpenAI's."""
    text = (
        f'model = "{MODEL}"\nmodel_provider = "{provider}"\n\n'
        f'[model_providers.{provider}]\nbase_url = "{server.base_url.removesuffix("/v1")}/openai/v1"\n'
    )
    if profile is None:
        (runner.codex_home / "config.toml").write_text(text)
    else:
        (runner.codex_home / "config.toml").write_text('model = "gpt-5"\nmodel_provider = "openai"\n')
        (runner.codex_home / f"{profile}.config.toml").write_text(text)
    runner.env.update(AWS_REGION=KEYS.region)
    if bearer:
        runner.env["AWS_BEARER_TOKEN_BEDROCK"] = USERS_KEY
    else:
        runner.env.update(
            AWS_ACCESS_KEY_ID=KEYS.access_key,
            AWS_SECRET_ACCESS_KEY=KEYS.secret_key,
            AWS_SESSION_TOKEN=KEYS.session_token,
        )


def cost(usage: dict) -> int:
    cached = usage["input_tokens_details"]["cached_tokens"]
    used = Used(
        "k", f"bedrock/{MODEL}", usage["input_tokens"] - cached, usage["output_tokens"], cache_read_tokens=cached
    )
    priced = Pricer().price(used).cost_micro
    assert priced is not None
    return priced


@pytest.mark.parametrize(
    ("auth", "where"), [("sigv4", "config"), ("api-key", "config"), ("sigv4", "profile"), ("sigv4", "runtime")]
)
def test_runaway_on_bedrock_never_overshoots_and_every_request_is_signed_as_aws_checks(codex, auth, where):
    """With `where` = profile, Bedrock is chosen by `-p bedrock`'s file only (config.toml names OpenAI's provider):
    capguard reads Codex's layers as Codex does, so that choice is fronted too, never bypassed. With `where` =
    runtime, the amazon-bedrock-runtime provider, signed as Bedrock's runtime (`bedrock`), not Mantle."""
    service = "bedrock" if where == "runtime" else "bedrock-mantle"
    keys = replace(KEYS, service=service) if auth == "sigv4" else None
    script = RunawayScript(
        [Reply(delay_s=0.1, reasoning_tokens=8)], sigv4=keys, bearer=USERS_KEY if keys is None else None
    )
    with FakeResponses(script) as server:
        runner = codex(server)
        provider = "amazon-bedrock-runtime" if where == "runtime" else "amazon-bedrock"
        on_bedrock(
            runner,
            server,
            provider=provider,
            bearer=auth == "api-key",
            profile="bedrock" if where == "profile" else None,
        )
        with ArgvWatch(runner.tag, ("AWS_BEARER_TOKEN_BEDROCK",)) as watch:
            if where == "profile":
                flags = ["exec", "-p", "bedrock", "--dangerously-bypass-approvals-and-sandbox", "loop forever"]
                result = runner.run(["--strict", "--usd", "0.30"], flags, timeout=180)
            else:
                result = runner.exec_run(["--strict", "--usd", "0.30"], timeout=180)
    report = result.report
    assert result.rc == 122, result.stderr[-3000:]
    assert report["stop_reason"] == "usd" and report["overshoot"] == 0
    assert not server.refused_signatures and len(server.billed()) >= 3
    bills = {b["id"]: b["usage"] for b in server.billed()}
    assert sum(cost(u) for u in bills.values()) <= 300_000  # what the server billed: within the cap
    run, rows = ledger_rows(report["run_id"])
    assert {row["dedupe_key"].removeprefix("proxy:responses:") for row in rows} == set(bills)
    for row in rows:
        usage = bills[row["dedupe_key"].removeprefix("proxy:responses:")]
        assert row["details"]["charged"] == "usage" and row["cost_micro_usd"] == cost(usage)
    assert run["stop_reason"] == "usd" and round(report["cost_usd"] * 1e6) == sum(cost(u) for u in bills.values())
    assert {call["model"] for call in report["calls"]} == {f"bedrock/{MODEL}"}
    for request in server.requests:
        auth_header = request["headers"].get("Authorization", "")
        if auth == "sigv4":  # signed by the proxy for the fake's host, Mantle's service and the region
            assert f"/{KEYS.region}/{service}/aws4_request" in auth_header
            assert request["headers"].get("X-Amz-Security-Token") == KEYS.session_token
        else:  # the user's own key, never the run's secret
            assert auth_header == f"Bearer {USERS_KEY}"
    watch.assert_secret_only_in_env()
    assert_no_proxy_secret(result.stdout, result.stderr)
    assert KEYS.secret_key not in result.stderr + result.stdout and USERS_KEY not in result.stderr
    notes = " ".join(report.get("notes") or [])
    assert "Amazon Bedrock" in notes and ((f"{service} in eu-west-1" in notes) == (auth == "sigv4"))
    assert not runner.survivors(), [p.cmdline() for p in runner.survivors()]


@pytest.mark.parametrize(
    ("setup", "word"),
    [
        ("no-region", "no AWS region"),
        ("auth-command", "auth gives Codex credentials"),
        ("no-credentials", "no AWS credentials"),
    ],
)
def test_a_bedrock_setup_the_proxy_cannot_sign_for_is_refused_at_start(codex, setup, word):
    with FakeResponses(RunawayScript([Reply()], sigv4=KEYS)) as server:
        runner = codex(server)
        on_bedrock(runner, server)
        if setup == "no-region":
            del runner.env["AWS_REGION"]
        if setup == "auth-command":
            config = runner.codex_home / "config.toml"
            config.write_text(config.read_text() + 'auth = { command = "echo", args = ["tok"] }\n')
        if setup == "no-credentials":
            for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
                del runner.env[name]
        result = runner.exec_run(["--strict", "--usd", "1"], timeout=60)
        assert not server.requests
    assert result.rc == 2, result.stderr
    line = result.stderr.strip()
    assert "\n" not in line and word in line and "--meter files" in line and "Traceback" not in line
    assert not runner.survivors()
