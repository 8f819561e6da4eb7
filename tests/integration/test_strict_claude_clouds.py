"""Strict mode with the real Claude Code on the clouds that serve Claude with an API key or a bearer token:
Amazon Bedrock's InvokeModel API (`CLAUDE_CODE_USE_BEDROCK`, AWS's event stream), Claude in Amazon Bedrock
(`CLAUDE_CODE_USE_MANTLE`, the Messages API with Bedrock's model ids), Claude Platform on AWS
(`CLAUDE_CODE_USE_ANTHROPIC_AWS`) and Claude on Google Cloud, Anthropic managed
(`CLAUDE_CODE_USE_ANTHROPIC_GOOGLE_CLOUD`). Its requests go through capguard's metering proxy to a fake that
serves each as the cloud does and bills like the real API. A runaway ends within the cap (overshoot 0) with
capguard's count equal to the bill, Bedrock's at the regional endpoint's 10% premium where it applies. With AWS
credentials instead of an API key, the proxy signs each request for AWS (the fake checks every signature)."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from capguard.core.pricing import BEDROCK_REGIONAL, FOUNDRY_DATA_ZONE, Pricer, bedrock_model
from tests.fakes import sigv4
from tests.fakes.fake_anthropic import COUNT_TOKENS, MANTLE_PREFIX, FakeAnthropic
from tests.integration.proxy_secret import assert_no_proxy_secret
from tests.integration.test_claude_caps import Claude, assert_tree_gone, claude_bin  # noqa: F401  (fixture)
from tests.integration.test_strict_claude import (
    assert_files_rows_at_their_bills,
    assert_refused_at_start,
    billing,
    interactive_loop,
    ledger_of,
    priced,
)

pytestmark = pytest.mark.agent

BEDROCK_KEY = "ABSKQmVkcm9ja0FQSUtleS1test-bedrock-api-key-0123456789"
AWS_KEY = "sk-ant-aws-test-key-0123456789abcdef"
GOOGLE_TOKEN = "ya29.capguard-test-google-access-token-0123456789"
FOUNDRY_KEY = "foundry-test-key-0123456789abcdef0123"
MANTLE_MODEL = "anthropic.claude-opus-5-5"  # Claude Code 2.1.330's default on Mantle


def _on_cloud(runner: Claude, env: dict[str, str]) -> Claude:
    """Claude Code set up for a cloud (its switch, key and base URL): no Anthropic API key or base URL left."""
    runner.env.pop("ANTHROPIC_BASE_URL", None)
    runner.env.pop("ANTHROPIC_API_KEY", None)
    runner.env.update(env)
    return runner


def on_mantle(runner: Claude, server: FakeAnthropic) -> Claude:
    return _on_cloud(runner, {
        "CLAUDE_CODE_USE_MANTLE": "1", "AWS_REGION": "us-east-1", "AWS_BEARER_TOKEN_BEDROCK": BEDROCK_KEY,
        "ANTHROPIC_BEDROCK_MANTLE_BASE_URL": server.base_url + MANTLE_PREFIX,
    })  # fmt: skip


def on_bedrock(runner: Claude, server: FakeAnthropic) -> Claude:
    return _on_cloud(runner, {
        "CLAUDE_CODE_USE_BEDROCK": "1", "AWS_REGION": "us-east-1", "AWS_BEARER_TOKEN_BEDROCK": BEDROCK_KEY,
        "ANTHROPIC_BEDROCK_BASE_URL": server.base_url,
    })  # fmt: skip


def on_google_cloud(runner: Claude, server: FakeAnthropic) -> Claude:
    # a gateway's setup: Claude Code signs in to nothing, the header is the gateway's (Google's token otherwise)
    return _on_cloud(runner, {
        "CLAUDE_CODE_USE_ANTHROPIC_GOOGLE_CLOUD": "1", "CLAUDE_CODE_SKIP_ANTHROPIC_GOOGLE_CLOUD_AUTH": "1",
        "ANTHROPIC_CUSTOM_HEADERS": f"Authorization: Bearer {GOOGLE_TOKEN}",
        "ANTHROPIC_GOOGLE_CLOUD_PROJECT": "capguard-test", "ANTHROPIC_GOOGLE_CLOUD_WORKSPACE_ID": "wrkspc_capguardtest",
        "ANTHROPIC_GOOGLE_CLOUD_BASE_URL": server.base_url,
    })  # fmt: skip


def on_foundry(runner: Claude, server: FakeAnthropic) -> Claude:
    # a deployment named after its model, as Claude Code names them
    return _on_cloud(runner, {
        "CLAUDE_CODE_USE_FOUNDRY": "1", "ANTHROPIC_FOUNDRY_API_KEY": FOUNDRY_KEY,
        "ANTHROPIC_FOUNDRY_BASE_URL": server.base_url, "ANTHROPIC_MODEL": "claude-opus-5-5",
    })  # fmt: skip


def on_aws(runner: Claude, server: FakeAnthropic) -> Claude:
    return _on_cloud(runner, {
        "CLAUDE_CODE_USE_ANTHROPIC_AWS": "1", "AWS_REGION": "us-west-2", "ANTHROPIC_AWS_API_KEY": AWS_KEY,
        "ANTHROPIC_AWS_WORKSPACE_ID": "wrkspc_capguard_test", "ANTHROPIC_AWS_BASE_URL": server.base_url,
    })  # fmt: skip


@pytest.fixture
def claude(tmp_path, claude_bin, repo):
    runners = []

    def start(server: FakeAnthropic, where) -> Claude:
        runner = where(Claude(tmp_path, claude_bin, repo, server.base_url), server)
        runners.append(runner)
        return runner

    yield start
    for runner in runners:
        runner.cleanup()


def regional(model_id: str) -> str | None:
    """Bedrock's premium on a call: every model here is Sonnet 4.5 or later; a `global.` profile pays none."""
    return None if model_id.startswith("global.") else BEDROCK_REGIONAL


def billed(server: FakeAnthropic, geo: Callable[[str], str | None]) -> dict[str, tuple[int, str, str | None]]:
    """Each call the fake billed, by message id: (micro-USD at Anthropic's rates for the model Bedrock's id names,
    at the premium `geo` gives its id; the model as priced; that premium)."""
    pricer, found = Pricer(), {}
    for record in server.requests:
        if record.get("usage"):
            reply = priced({**record, "model": bedrock_model(record["model"])})
            paid = geo(record["model"])
            micro = pricer.price(replace(reply, details={"inference_geo": paid})).cost_micro or 0
            found[record["message_id"]] = (micro, reply.model, paid)
    return found


def micro_of(bill: dict[str, tuple[int, str, str | None]]) -> dict[str, int]:
    return {key: micro for key, (micro, _, _) in bill.items()}


def assert_ledger_is_the_bill(report: dict, bill: dict[str, tuple[int, str, str | None]]) -> None:
    """Every call the fake billed is a row at its bill (its model, its premium); one the stop cut, at an upper
    bound; none invented, none left out."""
    run, rows = ledger_of(report)
    assert run["stop_reason"] == "usd"
    assert {row["dedupe_key"].removeprefix("proxy:anthropic:") for row in rows} == set(bill)  # none unmetered
    for row in rows:
        micro, model, geo = bill[row["dedupe_key"].removeprefix("proxy:anthropic:")]
        assert row["model"] == model
        if row["details"]["charged"] == "usage":
            assert row["cost_micro_usd"] == micro and row["details"]["inference_geo"] == geo
        else:  # cut short by the stop: an upper bound, never less
            assert row["cost_micro_usd"] >= micro
    assert sum(row["cost_micro_usd"] for row in rows) == round(report["cost_usd"] * 1e6)
    # each reply's usage was read (off SSE or Bedrock's event stream), not charged by its bound; the stop cuts one
    assert sum(row["details"]["charged"] == "usage" for row in rows) >= max(3, len(rows) - 1)


def runaway(claude, where, model: str | None = None) -> tuple[Claude, FakeAnthropic, Any]:
    """A `-p` runaway under `--strict --usd 0.40` on a cloud, against a fake that bills like it."""
    with FakeAnthropic(billing(delay_s=0.1)) as server:
        runner = claude(server, where)
        if model:
            runner.env["ANTHROPIC_MODEL"] = model
        result = runner.print_run(["--strict", "--usd", "0.40"], "LOOP")
    return runner, server, result


def assert_stopped_at_the_cap(runner: Claude, server: FakeAnthropic, result, geo, secret: str) -> list[dict]:
    """The stop (exit 122, `usd`, overshoot 0), the server's bill within the cap and the ledger equal to it (each
    call at the premium `geo` gives its model id), the key nowhere in what capguard showed, nothing left running;
    the calls the server billed."""
    report = result.report
    assert result.rc == 122, result.stderr
    assert report["stop_reason"] == "usd" and report["overshoot"] == 0
    served = [r for r in server.requests if r.get("usage")]
    assert len(served) >= 3
    bill = billed(server, geo)
    assert sum(micro_of(bill).values()) <= 400_000  # the server's bill, any premium included: within the cap
    assert_ledger_is_the_bill(report, bill)
    assert "the next call's worst case would pass the $0.40 cap" in result.stderr
    shown = result.stdout + result.stderr + json.dumps(report)
    assert secret not in shown and secret[:12] not in shown
    assert_no_proxy_secret(result.stdout, result.stderr)
    assert_tree_gone(runner)
    return served


def test_a_runaway_on_bedrock_mantle_never_overshoots_and_is_counted_at_the_regional_price(claude):
    runner, server, result = runaway(claude, on_mantle)
    # each Mantle endpoint is one region's
    served = assert_stopped_at_the_cap(runner, server, result, lambda _: BEDROCK_REGIONAL, BEDROCK_KEY)
    assert result.report["meter"] in ("proxy", "both")
    assert all(r["platform"] == "mantle" and r["model"] == MANTLE_MODEL for r in served)
    # the Bedrock API key went on to Bedrock as the agent sent it (the fake's record shows its first 10 characters)
    assert all(r["headers"]["authorization"] == "Bearer ABS..." for r in served)


@pytest.mark.parametrize("where", [on_aws, on_google_cloud])
def test_a_runaway_on_claude_platform_on_aws_or_google_cloud_never_overshoots(claude, where):
    """Both are the Claude API itself, run by Anthropic and billed through the cloud, at its prices (no
    inference_geo was asked)."""
    runner, server, result = runaway(claude, where)
    secret = AWS_KEY if where is on_aws else GOOGLE_TOKEN
    served = assert_stopped_at_the_cap(runner, server, result, lambda _: None, secret)
    if where is on_aws:
        assert all(r["headers"]["anthropic-workspace-id"] == "wrkspc_capguard_test" for r in served)
        assert all(r["headers"]["x-api-key"] == AWS_KEY[:10] + "..." for r in served)
    else:  # the Google token went on as Claude Code sent it
        assert all(r["headers"]["authorization"] == "Bearer ya2..." for r in served)


@pytest.mark.parametrize(
    ("model", "geo"),
    [("us.anthropic.claude-opus-5-5", BEDROCK_REGIONAL), ("global.anthropic.claude-opus-5-5", None)],
)
def test_a_runaway_on_bedrocks_invoke_api_is_read_off_its_event_stream_and_never_overshoots(claude, model, geo):
    """Bedrock streams its reply as AWS's event stream (binary messages, each event base64'd), not SSE: the proxy
    reads the usage off it while the bytes pass through. A US profile pays the regional 10%, a global one not."""
    runner, server, result = runaway(claude, on_bedrock, model)
    served = assert_stopped_at_the_cap(runner, server, result, regional, BEDROCK_KEY)
    assert all(r["platform"] == "bedrock" for r in served), {r["model"] for r in served}
    # the main loop's model; Claude Code's side calls go to its Haiku and Sonnet (on `us.` profiles)
    assert {r["model"] for r in served if r["kind"] == "main"} == {model}
    assert any(r["stream"] for r in served)  # invoke-with-response-stream: the event stream was read
    # Bedrock's free CountTokens was asked where the bytes' bound would bind (its answer counts as the fake bills)
    counts = [r for r in server.requests if r["kind"] == COUNT_TOKENS]
    assert counts and all(r["platform"] == "bedrock" for r in counts)
    assert any(call["prompt_counted"] for call in result.report["calls"])  # and tightened a call's bound
    assert all(r["headers"]["authorization"] == "Bearer ABS..." for r in served)
    main_calls = [r for r in served if r["kind"] == "main"]
    assert {regional(r["model"]) for r in main_calls} == {geo}  # the profile decided the premium


def test_a_runaway_on_microsoft_foundry_never_overshoots_and_is_held_at_the_data_zone_price(claude):
    """Foundry bills Anthropic's rates, a US Data Zone deployment at 1.1x, and no request says a deployment's type:
    every call is held and settled at the 1.1x, never below what Azure bills (up to 10% high on a Global one)."""
    runner, server, result = runaway(claude, on_foundry)
    # as a US Data Zone deployment bills it
    served = assert_stopped_at_the_cap(runner, server, result, lambda _: FOUNDRY_DATA_ZONE, FOUNDRY_KEY)
    assert all(r["headers"]["x-api-key"] == FOUNDRY_KEY[:10] + "..." for r in served)


ACCESS_KEY = "AKIDCAPGUARDTEST0001"
SECRET_KEY = "capguard/Test+Secret/AccessKey/0123456789abcdef"
SESSION_TOKEN = "IQoJb3JpZ2luX2VjEcapguard-test-session-token-0123456789abcdef"
SIGNED_AS = {"on_bedrock": "bedrock", "on_mantle": "bedrock-mantle", "on_aws": "aws-external-anthropic"}


def with_aws_credentials(runner: Claude, how: str) -> None:
    """Claude Code on an AWS cloud with AWS credentials and no API key: the keys in the environment (with a
    session token, as temporary credentials come), or a profile in a shared credentials file."""
    for name in ("AWS_BEARER_TOKEN_BEDROCK", "ANTHROPIC_AWS_API_KEY"):
        runner.env.pop(name, None)
    runner.env["AWS_EC2_METADATA_DISABLED"] = "true"  # no instance role on a test machine: asked for nothing
    if how == "environment":
        runner.env.update(
            AWS_ACCESS_KEY_ID=ACCESS_KEY, AWS_SECRET_ACCESS_KEY=SECRET_KEY, AWS_SESSION_TOKEN=SESSION_TOKEN
        )
    elif how == "profile":
        shared = Path(runner.env["HOME"]) / "aws-credentials"
        shared.write_text(
            f"[default]\naws_access_key_id = AKIDNOTTHISONE\naws_secret_access_key = not-this-one\n\n"
            f"[capguard-test]\naws_access_key_id = {ACCESS_KEY}\naws_secret_access_key = {SECRET_KEY}\n"
        )
        runner.env.update(AWS_SHARED_CREDENTIALS_FILE=str(shared), AWS_PROFILE="capguard-test")
    else:  # none anywhere the AWS SDK's chain looks
        runner.env.update(
            AWS_SHARED_CREDENTIALS_FILE=str(Path(runner.env["HOME"]) / "none"),
            AWS_CONFIG_FILE=str(Path(runner.env["HOME"]) / "none-either"),
        )


@pytest.mark.parametrize(
    ("where", "how"), [(on_bedrock, "environment"), (on_mantle, "profile"), (on_aws, "environment")]
)
def test_claude_on_aws_with_aws_credentials_is_signed_by_the_proxy_and_never_overshoots(claude, where, how):
    """Without an API key Claude Code signs each request with AWS credentials for the host it sends to, the
    proxy's. Strict mode has it sign none (CLAUDE_CODE_SKIP_*_AUTH) and the proxy signs each request for AWS's
    host with the credentials the AWS SDK's chain finds. The fake bills only requests whose Signature Version 4
    it verifies (tests/fakes/sigv4.py, written apart from botocore): the runaway is billed, every call signed,
    stopped within the cap, the secret key shown nowhere."""
    keys = sigv4.Keys(
        ACCESS_KEY, SECRET_KEY, "us-west-2" if where is on_aws else "us-east-1", SIGNED_AS[where.__name__],
        SESSION_TOKEN if how == "environment" else None,
    )  # fmt: skip
    with FakeAnthropic(replace(billing(delay_s=0.1), sigv4=keys)) as server:
        runner = claude(server, where)
        with_aws_credentials(runner, how)
        result = runner.print_run(["--strict", "--usd", "0.40"], "LOOP")
    geo = {on_bedrock: regional, on_mantle: lambda _: BEDROCK_REGIONAL}.get(where, lambda _: None)
    assert_stopped_at_the_cap(runner, server, result, geo, SECRET_KEY)
    assert server.refused_signatures == []  # each request the proxy sent was signed as AWS checks it
    said = f"the proxy signs each request for AWS (SigV4, {keys.service} in {keys.region})"
    assert any(said in note for note in result.report["notes"]), result.report["notes"]
    assert all(r["headers"]["authorization"].startswith("AWS4-HMAC") for r in server.requests)
    shown = (
        result.stdout + result.stderr + json.dumps(result.report) + json.dumps(ledger_of(result.report), default=str)
    )
    assert SESSION_TOKEN[:20] not in shown and SECRET_KEY[:16] not in shown
    if where is on_bedrock:  # Bedrock's CountTokens went signed too
        assert any(r["kind"] == COUNT_TOKENS for r in server.requests)


@pytest.mark.parametrize("where", [on_bedrock, on_mantle, on_aws])
def test_claude_on_aws_without_any_credentials_is_refused_at_start(claude, where):
    """No API key and no AWS credentials the AWS SDK's chain can find: nothing could be signed, so strict mode
    says so in one line and starts nothing."""
    with FakeAnthropic(billing()) as server:
        runner = claude(server, where)
        with_aws_credentials(runner, "none")
        result = runner.print_run(["--strict", "--usd", "1"], "hello")
    assert_refused_at_start(result, server, "no AWS credentials were found")
    assert_tree_gone(runner)


@pytest.mark.parametrize(
    ("where", "model", "geo"),
    [
        (on_mantle, None, lambda _: BEDROCK_REGIONAL),  # each Mantle endpoint is one region's
        (on_bedrock, None, regional),  # Claude Code's default: US profiles
        (on_bedrock, "global.anthropic.claude-opus-5-5", regional),
        (on_foundry, None, lambda _: FOUNDRY_DATA_ZONE),  # never below a US Data Zone deployment's bill
    ],
)
def test_the_files_meter_prices_bedrock_replies_as_anthropics_models_with_the_premium(claude, where, model, geo):
    """Without --strict: the transcripts name Bedrock's ids (`anthropic.claude-opus-5-5`,
    `us.anthropic.claude-haiku-4-5-20251001-v1:0`), which genai-prices does not know; capguard prices them as
    Anthropic's models, with Bedrock's 10% where the endpoint is regional (Claude Code's own figures leave it out).
    Before, the run stopped at its first reply: `unpriced`."""
    with FakeAnthropic(billing(delay_s=0.1)) as server:
        runner = claude(server, where)
        if model:
            runner.env["ANTHROPIC_MODEL"] = model
        result = runner.print_run(["--usd", "0.40"], "LOOP")
    report = result.report
    assert result.rc == 122, result.stderr
    assert report["stop_reason"] == "usd" and report["meter"] == "files"
    assert_files_rows_at_their_bills(report, server, micro_of(billed(server, geo)))
    assert_tree_gone(runner)


def test_an_interactive_runaway_on_bedrock_is_stopped_before_the_cap(tmp_path, claude_bin, repo):
    """Claude Code's TUI on Bedrock (a pty), its replies streamed as AWS's event stream through the proxy."""
    with FakeAnthropic(billing(delay_s=0.2)) as server:
        runner = on_bedrock(Claude(tmp_path, claude_bin, repo, server.base_url), server)
        rc, term = interactive_loop(runner, ["--strict", "--usd", "0.40"])
    assert rc == 122, term.text()[-2500:]
    report = json.loads(runner.report_path.read_text())
    assert report["stop_reason"] == "usd" and report["overshoot"] == 0
    assert any(r["stream"] and r["platform"] == "bedrock" for r in server.requests if r.get("usage"))
    bill = billed(server, regional)
    assert sum(micro_of(bill).values()) <= 400_000
    assert_ledger_is_the_bill(report, bill)
    assert "capguard: stopped claude: cost $" in term.text()
    assert not runner.survivors()


def test_a_bedrock_stream_whose_usage_cannot_be_read_is_charged_by_its_bound(claude):
    """A Bedrock stream whose message_delta (the one with the output's usage) fails its CRC: the proxy believes
    nothing after it, so the call's output is charged its bound, never what a broken frame might say; the run
    stops at the cap with every call at or above what the server billed."""
    with FakeAnthropic(billing(delay_s=0.1, corrupt_bedrock_event="message_delta")) as server:
        runner = claude(server, on_bedrock)
        result = runner.print_run(["--strict", "--usd", "0.40"], "LOOP", timeout=180)
    report = result.report
    assert report is not None and report["overshoot"] == 0, result.stderr[-2000:]
    bill = billed(server, regional)
    assert bill and sum(micro_of(bill).values()) <= 400_000  # what the server billed: within the cap
    _, rows = ledger_of(report)
    assert {row["dedupe_key"].removeprefix("proxy:anthropic:") for row in rows} == set(bill)  # none unmetered
    streamed = [row for row in rows if row["details"]["charged"] == "bound"]
    assert streamed  # the broken streams were charged by their bound ...
    for row in streamed:  # ... never below the bill
        assert row["cost_micro_usd"] >= micro_of(bill)[row["dedupe_key"].removeprefix("proxy:anthropic:")]
    assert "Traceback" not in result.stderr
    assert_tree_gone(runner)
