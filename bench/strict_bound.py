"""How much of a USD cap strict mode lets a runaway spend: the real agents through capguard's metering proxy
against the fake servers of tests/fakes (a token per 4 bytes of the prompt, output within max_tokens), each
runaway twice: with the provider's token count (the fake's count_tokens, or for Chat Completions OpenAI's Responses
count, answers as it bills) and with a count that fails (a 500, or a 404 for Chat: the proxy holds each new prompt at
its bytes, as before counting existed).

    python bench/strict_bound.py [--only claude|aider-claude|aider-gpt]

Prints one line per run (spent, calls, counts asked, the stop) and a JSON summary on the last line.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from capguard.demo import fake_openai  # noqa: E402
from tests.fakes.fake_anthropic import FakeAnthropic, Script, Usage  # noqa: E402
from tests.fakes.fake_chat import FakeChat  # noqa: E402
from tests.integration.conftest import Capguard, aider_flags, find_agent, find_aider, make_repo  # noqa: E402
from tests.integration.test_claude_caps import Claude  # noqa: E402
from tests.integration.test_strict_aider import RUNAWAY_INPUT, run_claude_models  # noqa: E402
from tests.integration.test_strict_aider import runaway as chat_runaway  # noqa: E402
from tests.integration.test_strict_claude import billed  # noqa: E402


def anthropic_script(count_mode: str, text: str | None = None) -> Script:
    usage = Usage(input_tokens=0, output_tokens=600, cache_write_5m=0, cache_read=0)
    extra = {"text": text} if text else {}
    return Script(usage=usage, honor_max_tokens=True, bill_prompt=True, delay_s=0.1, count_mode=count_mode, **extra)


def outcome(name: str, count_mode: str, cap: float, report: dict, billed_usd: float, counts: int) -> dict:
    refusal = (report.get("refusals") or [{}])[-1]
    calls = report["calls"]
    return {
        "run": name,
        "count": count_mode,
        "cap_usd": cap,
        "billed_usd": round(billed_usd, 6),
        "spent_share": round(billed_usd / cap, 3),
        "overshoot": report["overshoot"],
        "calls": len(calls),
        "counted_calls": sum(1 for c in calls if c.get("prompt_counted")),
        "counts_asked": counts,
        "stop": report["stop_reason"],
        "next_worst_usd": refusal.get("worst_usd"),
        "left_usd": refusal.get("headroom_usd"),
        "bound_over_billed_first_call": round(calls[0]["prompt_bound"] / max(1, calls[0]["input_tokens"]), 2),
    }


def claude_run(tmp: Path, count_mode: str, cap: float) -> dict:
    claude = find_agent("claude", "CAPGUARD_TEST_CLAUDE")
    assert claude, "claude is not installed"
    with FakeAnthropic(anthropic_script(count_mode)) as server:
        runner = Claude(tmp, claude, make_repo(tmp / "repo"), server.base_url)
        runner.env["ANTHROPIC_MODEL"] = "claude-opus-5-5"
        try:
            result = runner.print_run(["--strict", "--usd", str(cap)], "LOOP", timeout=300)
        finally:
            runner.cleanup()
    micro, _, _ = billed(server)
    return outcome("Claude Code -p, Opus", count_mode, cap, result.report, micro / 1e6, server.count("count_tokens"))


def aider_claude_run(tmp: Path, count_mode: str, cap: float) -> dict:
    aider = find_aider()
    assert aider, "aider is not installed"
    text = fake_openai.runaway_edit_text("hello.py") + "x" * 2000
    with FakeAnthropic(anthropic_script(count_mode, text)) as server:
        runner = Capguard(tmp, aider, make_repo(tmp / "repo"))
        try:
            result = run_claude_models(runner, server, ["--usd", str(cap)])
        finally:
            runner.cleanup()
    micro, _, _ = billed(server)
    return outcome("aider, Sonnet + Haiku, streaming", count_mode, cap, result.report, micro / 1e6,
                   server.count("count_tokens"))  # fmt: skip


def aider_gpt_run(tmp: Path, count_mode: str, cap: float) -> dict:
    """Chat Completions has no count of its own: OpenAI's Responses count ("exact": the fake counts as it bills),
    or none ("none": a 404, as an OpenAI-compatible server without that endpoint answers; the bytes' bound)."""
    from dataclasses import replace

    from tests.integration.test_strict_aider import bills

    aider = find_aider()
    assert aider, "aider is not installed"
    with FakeChat(replace(chat_runaway(), counts=count_mode == "exact")) as server:
        runner = Capguard(tmp, aider, make_repo(tmp / "repo"))
        flags = [*aider_flags(server.base_url, stream=True), "--no-fancy-input", "--max-chat-history-tokens", "500",
                 "hello.py"]  # fmt: skip
        try:
            result = runner.run(["--strict", "--usd", str(cap)], flags, input=RUNAWAY_INPUT, timeout=300)
        finally:
            runner.cleanup()
    micro = sum(m for m, _ in bills(server).values())
    counts = len(server.counted)
    return outcome("aider, gpt-4o + gpt-4o-mini, streaming", count_mode, cap, result.report, micro / 1e6, counts)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", choices=("claude", "aider-claude", "aider-gpt"))
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory(prefix="strict-bound-") as base:
        os.environ["CAPGUARD_HOME"] = str(Path(base) / "capguard-home")
        plan = []
        if args.only in (None, "claude"):
            plan += [("claude", mode) for mode in ("exact", "error")]
        if args.only in (None, "aider-claude"):
            plan += [("aider-claude", mode) for mode in ("exact", "error")]
        if args.only in (None, "aider-gpt"):
            plan += [("aider-gpt", mode) for mode in ("exact", "none")]
        for n, (what, mode) in enumerate(plan):
            tmp = Path(base) / f"run{n}"
            tmp.mkdir()
            if what == "claude":
                row = claude_run(tmp, mode, 0.50)
            elif what == "aider-claude":
                row = aider_claude_run(tmp, mode, 0.30)
            else:
                row = aider_gpt_run(tmp, mode, 0.30)
            rows.append(row)
            print(json.dumps(row), flush=True)
    print(json.dumps(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
