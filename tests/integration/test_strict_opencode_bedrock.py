"""Strict mode with the real OpenCode on Amazon Bedrock (its amazon-bedrock provider: the Converse API at
options.baseURL, measured with 1.18.33): capguard puts its proxy in that baseURL, and with AWS credentials the proxy
signs each request for AWS (the fake bills only what it verifies). A runaway of bash steps stops within the cap,
each call, the session title's included, counted at its bill: Anthropic's price of the model Bedrock's id names, at
the regional 10%."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from capguard.ledger import open_ledger
from tests.fakes import sigv4
from tests.fakes.fake_chat import MAIN, TITLE, runaway_script
from tests.fakes.fake_converse import FakeConverse
from tests.integration.proxy_secret import assert_no_proxy_secret
from tests.integration.test_opencode_caps import RUNAWAY, OpenCode, opencode_bin  # noqa: F401  (the fixture)
from tests.integration.test_strict_aider_bedrock import MODEL_ID, bills
from tests.integration.test_strict_aider_providers import assert_counted_exactly

pytestmark = pytest.mark.agent
ACCESS = "AKIDCAPGUARDOPENCODE1"
SECRET = "opencode/Secret+Key/0123456789abcdefghijk"
TOKEN = "IQoJb3JpZ2luX2VjEopencode-session-token-0123456789"


class BedrockOpenCode(OpenCode):
    """OpenCode with only its amazon-bedrock provider, at the fake's URL, with AWS credentials in its environment."""

    def __init__(self, tmp_path: Path, opencode: str, base_url: str):
        super().__init__(tmp_path, opencode, base_url)
        model = f"amazon-bedrock/{MODEL_ID}"
        self.config.write_text(json.dumps({
            "provider": {"amazon-bedrock": {"options": {"baseURL": base_url, "region": "us-east-1"}}},
            "model": model, "small_model": model, "autoupdate": False, "share": "disabled",
        }))  # fmt: skip
        self.env.update(AWS_ACCESS_KEY_ID=ACCESS, AWS_SECRET_ACCESS_KEY=SECRET, AWS_SESSION_TOKEN=TOKEN)
        self.env["AWS_EC2_METADATA_DISABLED"] = "true"


def test_an_opencode_runaway_on_bedrock_is_signed_by_the_proxy_and_stops_within_the_cap(tmp_path, opencode_bin):
    keys = sigv4.Keys(ACCESS, SECRET, "us-east-1", "bedrock", TOKEN)
    with FakeConverse(runaway_script(RUNAWAY), keys=keys) as server:
        runner = BedrockOpenCode(tmp_path, opencode_bin, server.base_url)
        try:
            result = runner.headless(["--strict", "--usd", "0.30"])
            assert server.wait_idle(10)
        finally:
            runner.cleanup()
    report = result.report
    assert result.rc == 122, result.stderr[-3000:]
    assert report["stop_reason"] == "usd" and report["overshoot"] == 0
    assert server.refused == []  # every request signed as AWS checks it
    assert {r["body"]["model"] for r in server.requests} == {MODEL_ID}
    assert len(server.billed(TITLE)) == 1 and len(server.billed(MAIN)) >= 2
    bill = bills(server)
    assert sum(m for m, _ in bill.values()) <= 300_000
    with open_ledger(Path(os.environ["CAPGUARD_HOME"]) / "ledger.db") as ledger:
        rows = ledger.usage(report["run_id"])
    assert {row["model"] for row in rows} == {"anthropic/claude-sonnet-4-5-20250929"}
    assert_counted_exactly(rows, bill, "proxy:converse:")  # the title call too, to the token
    assert any(
        "signs each request to amazon-bedrock for AWS (SigV4, bedrock in us-east-1)" in n for n in report["notes"]
    )
    assert sum(row["details"]["charged"] == "usage" for row in rows) >= max(2, len(rows) - 1)
    assert "would pass the $0.30 cap" in result.stderr
    shown = result.stdout + result.stderr + json.dumps(report)
    assert SECRET[:16] not in shown and TOKEN[:20] not in shown
    assert_no_proxy_secret(result.stdout, result.stderr)
    assert not runner.survivors(), [p.cmdline() for p in runner.survivors()]


def test_opencode_on_bedrock_without_credentials_is_refused_at_start(tmp_path, opencode_bin):
    with FakeConverse(runaway_script(RUNAWAY)) as server:
        runner = BedrockOpenCode(tmp_path, opencode_bin, server.base_url)
        for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
            runner.env.pop(name)
        try:
            result = runner.headless(["--strict", "--usd", "1"])
        finally:
            runner.cleanup()
        assert not server.requests
    assert result.rc == 2, result.stderr[-2000:]
    line = result.stderr.strip()
    assert "\n" not in line and "no AWS credentials were found" in line and "--meter files" in line
