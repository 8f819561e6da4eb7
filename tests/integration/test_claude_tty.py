"""Interactive Claude Code under capguard in a real pseudo-terminal: no native cap exists there."""

from __future__ import annotations

import json

import pytest

from tests.fakes.fake_anthropic import FakeAnthropic, Script
from tests.integration.test_aider_tty import Terminal
from tests.integration.test_claude_caps import Claude, claude_bin  # noqa: F401  (fixture)

pytestmark = [pytest.mark.agent, pytest.mark.pty]


@pytest.fixture
def session(tmp_path, claude_bin, repo):
    opened = []

    def start(server, caps):
        runner = Claude(tmp_path, claude_bin, repo, server.base_url)
        term = Terminal(runner.argv(caps, ["--dangerously-skip-permissions"]), runner.repo, runner.env)
        opened.append((runner, term))
        return runner, term

    yield start
    for runner, term in opened:
        term.close()
        runner.cleanup()


def test_interactive_session_is_stopped_at_the_usd_cap(session):
    with FakeAnthropic(Script(delay_s=0.2)) as server:
        runner, term = session(server, ["--usd", "0.05"])
        term.expect(r"capguard \$0\.00", timeout=60)  # capguard's part of Claude's own status line
        term.type(b"LOOP")
        term.pump(0.5)
        term.type(b"\r")
        rc = term.wait(120)
    assert rc == 122, term.text()[-2500:]
    report = json.loads(runner.report_path.read_text())
    assert report["stop_reason"] == "usd" and not report["self_stopped"]
    assert report["at_stop"]["cost_usd"] >= 0.05
    assert report["at_stop"]["cost_usd"] - report["largest_reply_usd"] < 0.05
    assert "capguard: stopped claude: cost $0.06 reached the $0.05 cap" in term.text()
    run_dir = next((runner.tmp / "capguard-home" / "runs").glob("*/"))
    statusline = (run_dir / "claude.statusline.jsonl").read_text().splitlines()
    assert statusline and all("session_id" in json.loads(line) for line in statusline)
    assert not list((runner.config / "sessions").glob("*.json"))  # Claude's registry entry is gone
    assert not runner.survivors()
