"""Strict mode with the real Claude Code on Google Vertex AI (`CLAUDE_CODE_USE_VERTEX`): its requests go through
capguard's metering proxy, at ANTHROPIC_VERTEX_BASE_URL, to a fake Vertex endpoint that serves Claude as Vertex
does (the model and the stream in the path, `anthropic_version` in the body, no `model` there) and bills like the
real API. A runaway ends with the server's bill, at the regional endpoint's 10% premium, within the cap
(overshoot 0) and capguard's count equal to it; a Vertex base URL in Claude's settings is refused at start."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from capguard.core.pricing import VERTEX_REGIONAL, Pricer
from tests.fakes.fake_anthropic import COUNT_TOKENS, FakeAnthropic
from tests.integration.proxy_secret import assert_no_proxy_secret
from tests.integration.test_claude_caps import Claude, assert_tree_gone, claude_bin  # noqa: F401  (fixture)
from tests.integration.test_strict_claude import (
    MODEL,
    assert_files_rows_at_their_bills,
    assert_refused_at_start,
    billing,
    interactive_loop,
    ledger_of,
    priced,
)

pytestmark = pytest.mark.agent


def vertex(runner: Claude, server: FakeAnthropic, region: str) -> Claude:
    """Claude Code on Vertex, as a user of a gateway sets it (no Google sign-in: the fake checks none)."""
    runner.env.pop("ANTHROPIC_BASE_URL", None)
    runner.env.update(
        CLAUDE_CODE_USE_VERTEX="1",
        CLAUDE_CODE_SKIP_VERTEX_AUTH="1",
        ANTHROPIC_VERTEX_PROJECT_ID="capguard-test",
        CLOUD_ML_REGION=region,
        ANTHROPIC_VERTEX_BASE_URL=f"{server.base_url}/v1",
        ANTHROPIC_MODEL=MODEL,
    )
    return runner


@pytest.fixture
def claude(tmp_path, claude_bin, repo):
    runners = []

    def start(server: FakeAnthropic, region: str = "us-east5") -> Claude:
        runner = vertex(Claude(tmp_path, claude_bin, repo, server.base_url), server, region)
        runners.append(runner)
        return runner

    yield start
    for runner in runners:
        runner.cleanup()


def vertex_bills(server: FakeAnthropic) -> dict[str, int]:
    """Each call the fake billed, by message id, in micro-USD: Anthropic's rates, 1.1x on a regional endpoint."""
    pricer, found = Pricer(), {}
    for record in server.requests:
        if record.get("usage"):
            geo = None if record["vertex_location"] == "global" else VERTEX_REGIONAL
            reply = replace(priced(record), details={"inference_geo": geo})
            found[record["message_id"]] = pricer.price(reply).cost_micro or 0
    return found


@pytest.mark.parametrize("region", ["us-east5", "global"])
def test_a_runaway_on_vertex_never_overshoots_and_is_counted_at_vertex_prices(claude, region):
    with FakeAnthropic(billing(delay_s=0.1)) as server:
        runner = claude(server, region)
        result = runner.print_run(["--strict", "--usd", "0.40"], "LOOP")
    report = result.report
    assert result.rc == 122, result.stderr
    assert report["stop_reason"] == "usd" and report["meter"] == "both" and report["overshoot"] == 0
    served = [r for r in server.requests if r.get("usage")]
    assert len(served) >= 3
    assert all(r["path"].startswith(f"/v1/projects/capguard-test/locations/{region}/") for r in served)
    assert all(r["model"] == MODEL and r["body"]["anthropic_version"] == "vertex-2023-10-16" for r in served)
    counts = [r for r in server.requests if r["kind"] == COUNT_TOKENS]
    assert counts and all(r["model"] == MODEL and r["vertex_location"] == region for r in counts)  # asked, free
    bill = vertex_bills(server)
    assert sum(bill.values()) <= 400_000  # the server's bill, premium included: within the cap
    run, rows = ledger_of(report)
    assert run["stop_reason"] == "usd"
    assert {row["dedupe_key"].removeprefix("proxy:anthropic:") for row in rows} == set(bill)  # none unmetered
    for row in rows:
        micro = bill[row["dedupe_key"].removeprefix("proxy:anthropic:")]
        if row["details"]["charged"] == "usage":
            assert row["cost_micro_usd"] == micro
            geo = row["details"]["inference_geo"]
            assert geo == (None if region == "global" else VERTEX_REGIONAL)
        else:  # cut short by the stop: an upper bound, never less
            assert row["cost_micro_usd"] >= micro
    assert sum(row["cost_micro_usd"] for row in rows) == round(report["cost_usd"] * 1e6)
    assert report["refusals"] and report["refusals"][-1]["cap"] == "usd"
    assert "the next call's worst case would pass the $0.40 cap" in result.stderr
    assert_no_proxy_secret(result.stdout, result.stderr)
    assert_tree_gone(runner)


def test_a_vertex_base_url_in_claudes_settings_is_refused_at_start(claude):
    with FakeAnthropic(billing()) as server:
        runner = claude(server)
        (runner.config / "settings.json").write_text(
            json.dumps(
                {
                    "skipDangerousModePermissionPrompt": True,
                    "env": {"ANTHROPIC_VERTEX_BASE_URL": f"{server.base_url}/v1"},
                }
            )
        )
        result = runner.print_run(["--strict", "--usd", "1"], "hello")
    assert_refused_at_start(result, server, "ANTHROPIC_VERTEX_BASE_URL is set in")
    assert_tree_gone(runner)


def test_the_files_meter_prices_vertex_replies_with_the_regional_premium(claude):
    """Without --strict: the transcripts' and telemetry's replies, priced with the 10% Google adds on a regional
    endpoint (Claude Code's own figures leave it out), each at what the fake billed."""
    with FakeAnthropic(billing(delay_s=0.1)) as server:
        runner = claude(server)
        result = runner.print_run(["--usd", "0.40"], "LOOP")
    report = result.report
    assert result.rc == 122, result.stderr
    assert report["stop_reason"] == "usd" and report["meter"] == "files"
    assert_files_rows_at_their_bills(report, server, vertex_bills(server))
    assert_tree_gone(runner)


def test_an_interactive_runaway_on_vertex_is_stopped_before_the_cap(tmp_path, claude_bin, repo):
    with FakeAnthropic(billing(delay_s=0.2)) as server:
        runner = vertex(Claude(tmp_path, claude_bin, repo, server.base_url), server, "europe-west1")
        rc, term = interactive_loop(runner, ["--strict", "--usd", "0.40"])
    assert rc == 122, term.text()[-2500:]
    report = json.loads(runner.report_path.read_text())
    assert report["stop_reason"] == "usd" and report["overshoot"] == 0
    bill = vertex_bills(server)
    assert len(bill) >= 3 and sum(bill.values()) <= 400_000
    assert all(r["vertex_location"] == "europe-west1" for r in server.requests if r.get("usage"))
    _, rows = ledger_of(report)
    assert {row["dedupe_key"].removeprefix("proxy:anthropic:") for row in rows} == set(bill)
    assert all(
        row["cost_micro_usd"] == bill[row["dedupe_key"].removeprefix("proxy:anthropic:")]
        for row in rows
        if row["details"]["charged"] == "usage"
    )
    assert "capguard: stopped claude: cost $" in term.text()
    assert not runner.survivors()
