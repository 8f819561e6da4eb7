"""Strict mode with the real OpenCode on the Gemini API (its google provider, @ai-sdk/google: `<baseURL>/models/
<model>:streamGenerateContent?alt=sse` with the key in x-goog-api-key, measured with 1.18.33): capguard puts its
proxy in that baseURL, keeping the API version OpenCode's URL ends in. A runaway of bash steps stops within the
cap, each call, the session title's included, counted at its bill."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.fakes.fake_gemini import FakeGemini
from tests.integration.proxy_secret import assert_no_proxy_secret
from tests.integration.test_gemini_caps import runaway
from tests.integration.test_opencode_caps import OpenCode, opencode_bin  # noqa: F401  (the fixture)
from tests.integration.test_strict_gemini import assert_counted_exactly, bills

pytestmark = pytest.mark.agent
MODEL = "gemini-2.5-flash"


class GoogleOpenCode(OpenCode):
    """OpenCode with only its google provider, at the fake's URL (the version as the SDK's default ends in it)."""

    def __init__(self, tmp_path: Path, opencode: str):
        super().__init__(tmp_path, opencode, "http://127.0.0.1:9")
        self.env["GOOGLE_GENERATIVE_AI_API_KEY"] = "google-key-users-own"

    def use(self, base_url: str) -> GoogleOpenCode:
        self.config.write_text(json.dumps({
            "provider": {"google": {"options": {"baseURL": f"{base_url}/v1beta"}}},
            "model": f"google/{MODEL}", "small_model": f"google/{MODEL}", "autoupdate": False, "share": "disabled",
        }))  # fmt: skip
        return self


def test_an_opencode_runaway_on_the_gemini_api_stops_within_the_cap_counted_exactly(tmp_path, opencode_bin):
    runner = GoogleOpenCode(tmp_path, opencode_bin)
    try:
        with FakeGemini(runaway(runner.tag, delay_s=0.05)) as server:  # its shell steps leave tagged sleeps behind
            result = runner.use(server.base_url).headless(["--strict", "--usd", "0.05"])
        assert not runner.survivors(), [p.cmdline() for p in runner.survivors()]
    finally:
        runner.cleanup()
    report = result.report
    assert result.rc == 122, result.stderr[-3000:]
    assert report["stop_reason"] == "usd" and report["overshoot"] == 0
    served = server.billed()
    assert len(served) >= 3 and all(r["key_header"] and r["query"] == "alt=sse" for r in served)
    assert sum(m for m, _, _ in bills(server).values()) <= 50_000  # what the server billed: within the cap
    rows = assert_counted_exactly(report, server)  # every call, the title's included, at its bill
    assert all(row["details"]["charged"] == "usage" for row in rows)
    assert {row["model"] for row in rows} == {f"google/{MODEL}"}
    # OpenCode's own limit (32,000) lowered as the cap neared: the server could not bill past what was held
    assert report["calls_lowered"] >= 1 and report["refusals"][-1]["cap"] == "usd"
    assert "would pass the $0.05 cap" in result.stderr
    assert "google-key-users-own" not in result.stdout + result.stderr + json.dumps(report)
    assert_no_proxy_secret(result.stdout, result.stderr)
