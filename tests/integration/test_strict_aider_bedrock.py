"""Strict mode with the real aider on Amazon Bedrock: litellm calls Bedrock's Converse API (`/model/<id>/converse`,
`/converse-stream` as AWS's event stream) at AWS_BEDROCK_RUNTIME_ENDPOINT, which capguard points at its proxy. With
AWS credentials the proxy signs each request for AWS (the fake bills only what it verifies, tests/fakes/sigv4.py);
a Bedrock API key passes through. A runaway stops within the cap, each call counted at the bill: Anthropic's price
for the model Bedrock's id names, at the regional endpoint's 10% (a `us.` profile, Sonnet 4.5)."""

from __future__ import annotations

import pytest

from capguard.core.events import Reply as UsageReply
from capguard.core.pricing import BEDROCK_REGIONAL, Pricer, bedrock_model
from tests.fakes import sigv4
from tests.fakes.fake_converse import FakeConverse
from tests.integration.proxy_secret import assert_no_proxy_secret
from tests.integration.test_strict_aider import RUNAWAY_INPUT, assert_tree_gone, runaway
from tests.integration.test_strict_aider_providers import assert_counted_exactly, flags, ledger_rows

pytestmark = pytest.mark.agent

MODEL_ID = "us.anthropic.claude-sonnet-4-5-20250929-v1:0"
ACCESS = "AKIDCAPGUARDAIDER001"
SECRET = "aider/Secret+Key/0123456789abcdefghijklmn"
API_KEY = "ABSKQmVkcm9ja0FQSUtleS1aider-bedrock-api-key-0123"


def bills(server: FakeConverse) -> dict[str, tuple[int, int]]:
    """Each call the fake billed, by request id: (micro-USD at Anthropic's price of the model, with the 10%)."""
    pricer, out = Pricer(), {}
    for record in server.billed():
        usage = record["usage"]
        reply = UsageReply(
            "billed", "anthropic/" + bedrock_model(record["body"]["model"]), input_tokens=usage["prompt_tokens"],
            output_tokens=usage["completion_tokens"], details={"inference_geo": BEDROCK_REGIONAL},
        )  # fmt: skip
        price = pricer.price(reply).cost_micro
        assert price, reply.model
        out[record["id"]] = (price, reply.tokens)
    return out


@pytest.mark.parametrize(
    ("auth", "stream"), [("sigv4", True), ("sigv4", False), ("api-key", True)], ids=["sigv4-stream", "sigv4", "key"]
)
def test_an_aider_runaway_on_bedrock_stops_within_the_cap_counted_at_the_bill(capguard, auth, stream):
    keys = sigv4.Keys(ACCESS, SECRET, "us-east-1", "bedrock") if auth == "sigv4" else None
    with FakeConverse(runaway(), keys=keys, api_key=None if keys else API_KEY) as server:
        capguard.env.update(AWS_REGION="us-east-1", AWS_BEDROCK_RUNTIME_ENDPOINT=server.base_url)
        capguard.env["AWS_EC2_METADATA_DISABLED"] = "true"
        if keys:
            capguard.env.update(AWS_ACCESS_KEY_ID=ACCESS, AWS_SECRET_ACCESS_KEY=SECRET)
        else:
            capguard.env["AWS_BEARER_TOKEN_BEDROCK"] = API_KEY
        # a short chat history: aider's weak model summarizes it (Bedrock calls too, metered alike)
        args = [*flags(f"bedrock/{MODEL_ID}", stream=stream)[:-1], "--max-chat-history-tokens", "500", "hello.py"]
        result = capguard.run(["--strict", "--usd", "0.30"], args, input=RUNAWAY_INPUT, timeout=240)
    report = result.report
    assert result.rc == 122, result.stderr
    assert report["stop_reason"] == "usd" and report["overshoot"] == 0
    assert server.refused == []  # every request reached Bedrock signed (or with its key) as AWS checks it
    bill = bills(server)
    assert len(bill) >= 3 and sum(m for m, _ in bill.values()) <= 300_000
    assert {r["body"]["model"] for r in server.requests} == {MODEL_ID}
    assert all(r["stream"] == stream for r in server.requests if r["kind"] == "main")
    rows = ledger_rows(report)
    assert {row["model"] for row in rows} == {"anthropic/claude-sonnet-4-5-20250929"}
    assert {row["details"]["inference_geo"] for row in rows} == {BEDROCK_REGIONAL}
    assert_counted_exactly(rows, bill, "proxy:converse:")
    assert any("signs each request to bedrock for AWS (SigV4, bedrock in us-east-1)" in n for n in report["notes"]) == (
        auth == "sigv4"
    )
    # each reply's usage was read (off the JSON, or the event stream's metadata); only a call the stop cut is not
    assert sum(row["details"]["charged"] == "usage" for row in rows) >= max(2, len(rows) - 1)
    assert any(r["kind"] != "main" for r in server.billed())  # the weak model's summaries: billed and counted
    # Bedrock's free CountTokens was asked where the prompt's bytes bound the call, and tightened it (signed too)
    assert server.counts and any(call["prompt_counted"] for call in report["calls"])
    assert "the next call's worst case would pass the $0.30 cap" in result.stderr
    shown = result.stdout + result.stderr + str(report)
    assert SECRET[:16] not in shown and API_KEY[:20] not in shown
    assert_no_proxy_secret(result.stdout, result.stderr)
    assert_tree_gone(capguard)


def test_a_server_that_repeats_one_request_id_loses_no_call_from_the_ledger(capguard):
    """A hostile (or broken) Bedrock gives every reply the same request id, the key a Converse call is recorded
    under: each call still reaches the ledger once, at its bill, marked suspicious, and the run stops at the cap."""
    with FakeConverse(runaway(), api_key=API_KEY, same_request_id="req-always-the-same") as server:
        capguard.env.update(AWS_REGION="us-east-1", AWS_BEDROCK_RUNTIME_ENDPOINT=server.base_url,
                            AWS_BEARER_TOKEN_BEDROCK=API_KEY)  # fmt: skip
        result = capguard.run(
            ["--strict", "--usd", "0.30"], flags(f"bedrock/{MODEL_ID}", stream=True), input=RUNAWAY_INPUT, timeout=240
        )
    report = result.report
    assert result.rc == 122, result.stderr
    assert report["stop_reason"] == "usd" and report["overshoot"] == 0
    billed = sum(m for m, _ in bills(server).values())
    rows = ledger_rows(report)
    assert len(rows) == len(server.billed()) >= 3  # none dropped as a duplicate
    assert sum(row["cost_micro_usd"] for row in rows) == billed or (
        sum(row["cost_micro_usd"] for row in rows) >= billed and any(r["details"]["charged"] != "usage" for r in rows)
    )
    assert sum(row["dedupe_key"] == "proxy:converse:req-always-the-same" for row in rows) == 1
    assert sum(row["dedupe_key"].startswith("proxy:converse:repeated-") for row in rows) == len(rows) - 1


def test_aider_on_bedrock_without_credentials_or_region_is_refused_at_start(capguard):
    with FakeConverse(runaway()) as server:
        capguard.env.update(AWS_BEDROCK_RUNTIME_ENDPOINT=server.base_url, AWS_EC2_METADATA_DISABLED="true")
        for name in ("AWS_REGION", "AWS_REGION_NAME", "AWS_DEFAULT_REGION"):
            capguard.env.pop(name, None)
        no_region = capguard.run(["--strict", "--usd", "1"], flags(f"bedrock/{MODEL_ID}", stream=False), input="hi\n")
        capguard.env["AWS_REGION"] = "us-east-1"
        no_keys = capguard.run(["--strict", "--usd", "1"], flags(f"bedrock/{MODEL_ID}", stream=False), input="hi\n")
    for result, said in ((no_region, "no AWS region is set"), (no_keys, "no AWS credentials were found")):
        assert result.rc == 2, result.stderr
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and said in lines[0] and "--meter files" in lines[0], result.stderr
    assert server.requests == []
