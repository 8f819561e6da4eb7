"""Claude Code under capguard, end to end: the real `claude` binary against a fake Anthropic server on 127.0.0.1.

Default usage per reply (fake server): input 11, cache write 2,000 (5 min), cache read 3,000, output 40, on
claude-opus-5-5 ($4 / $20 / $5 / $0.20 per million): $0.011444 a reply, 5,051 tokens.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from pathlib import Path

import psutil
import pytest

from tests.fakes.fake_anthropic import FakeAnthropic, Script
from tests.integration.conftest import Capguard, trusted_config

pytestmark = pytest.mark.agent
KEY = "sk-ant-api03-fake-capguard-tests-AAAAAAAAAAAAAAAAAAAA"
REPLY_USD = 0.011444


@pytest.fixture(scope="session")
def claude_bin() -> str:
    found = os.environ.get("CAPGUARD_TEST_CLAUDE") or shutil.which("claude")
    if not found:
        if os.environ.get("CAPGUARD_REQUIRE_AGENTS"):
            pytest.fail("claude is not installed but CAPGUARD_REQUIRE_AGENTS is set")
        pytest.skip("Claude Code is not installed (npm install @anthropic-ai/claude-code@2.1.330)")
    return found


class Claude(Capguard):
    """capguard around the real claude, with a scratch HOME seeded so no dialog ever shows."""

    agent = "claude"

    def __init__(self, tmp_path: Path, claude: str, repo: Path, base_url: str):
        super().__init__(tmp_path, claude, repo)
        home = Path(self.env["HOME"])
        config = home / ".claude"
        config.mkdir(parents=True, exist_ok=True)
        (config / ".claude.json").write_text(
            json.dumps(
                {
                    "hasCompletedOnboarding": True,
                    "lastOnboardingVersion": "2.1.330",
                    "theme": "dark",
                    "customApiKeyResponses": {"approved": [KEY[-20:]], "rejected": []},
                    "projects": {os.path.realpath(repo): {"hasTrustDialogAccepted": True}},
                }
            )
        )
        (config / "settings.json").write_text(json.dumps({"skipDangerousModePermissionPrompt": True}))
        (tmp_path / "claude-tmp").mkdir(exist_ok=True)
        self.config = config
        self.env.update(
            CLAUDE_CONFIG_DIR=str(config),
            CLAUDE_CODE_TMPDIR=str(tmp_path / "claude-tmp"),
            IS_SANDBOX="1",
            ANTHROPIC_BASE_URL=base_url,
            ANTHROPIC_API_KEY=KEY,
            DISABLE_TELEMETRY="1",
            DISABLE_AUTOUPDATER="1",
            DISABLE_ERROR_REPORTING="1",
            CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC="1",
        )
        for name in list(self.env):
            if name.startswith("OTEL_") or name == "CLAUDE_CODE_ENABLE_TELEMETRY":
                del self.env[name]

    def print_run(self, caps: list[str], prompt: str, *extra: str, timeout: float = 120):
        return self.run(caps, ["-p", prompt, "--dangerously-skip-permissions", *extra], timeout=timeout)


@pytest.fixture
def claude(tmp_path, claude_bin, repo):
    runners = []

    def start(server: FakeAnthropic) -> Claude:
        runner = Claude(tmp_path, claude_bin, repo, server.base_url)
        runners.append(runner)
        return runner

    yield start
    for runner in runners:
        runner.cleanup()


def assert_tree_gone(runner):
    survivors = runner.survivors()
    assert not survivors, f"left running: {[(p.pid, p.name(), p.cmdline()) for p in survivors]}"


def assert_within_one_reply(report, cap_usd):
    at_stop = report["at_stop"]
    assert at_stop["cost_usd"] - report["largest_reply_usd"] < cap_usd <= at_stop["cost_usd"] + 1e-9


def test_print_mode_usd_cap_stops_a_tool_loop(claude):
    with FakeAnthropic(Script(delay_s=0.2)) as server:
        runner = claude(server)
        result = runner.print_run(["--usd", "0.05"], "LOOP")
    assert result.rc == 122, result.stderr
    assert result.report["stop_reason"] == "usd"
    assert result.report["at_stop"]["steps"] == 5  # 5 x $0.011444 = $0.0572 crosses $0.05
    assert_within_one_reply(result.report, 0.05)
    assert "reached the $0.05 cap" in result.stderr
    # either capguard or Claude's own --max-budget-usd (which capguard passes in -p mode) ended it
    assert "--max-budget-usd" in result.report["argv"]
    assert server.count("main") <= result.report["at_stop"]["steps"] + 1
    assert_tree_gone(runner)


def test_print_mode_token_cap_is_enforced_by_capguard(claude):
    with FakeAnthropic(Script(delay_s=0.2)) as server:
        runner = claude(server)
        result = runner.print_run(["--tokens", "30k"], "LOOP")
    assert result.rc == 121, result.stderr
    assert result.report["stop_reason"] == "tokens" and not result.report["self_stopped"]
    assert result.report["at_stop"]["tokens"] == 6 * 5051  # the sixth reply crosses 30,000
    assert result.report["stop_steps"][0].startswith("sending SIGINT to claude")
    assert "30k tokens reached the 30k-token cap" in result.stderr
    assert_tree_gone(runner)


def test_steps_cap_counts_main_agent_replies(claude):
    with FakeAnthropic(Script(delay_s=0.1)) as server:
        runner = claude(server)
        result = runner.print_run(["--steps", "3"], "LOOP")
    assert result.rc == 120, result.stderr
    assert result.report["stop_reason"] == "steps"
    assert result.report["at_stop"]["steps"] == 3
    assert server.count("main") <= 4
    assert_tree_gone(runner)


def test_stuck_loop_of_failing_tool_calls_is_stopped(claude):
    with FakeAnthropic(Script(delay_s=0.1)) as server:
        runner = claude(server)
        result = runner.print_run(["--usd", "5"], "FAIL")
    assert result.rc == 118, result.stderr
    assert result.report["stop_reason"] == "stuck"
    assert "failed 5 times in a row" in result.stderr and "Bash" in result.stderr
    assert result.report["caps"]["stuck"] == 5
    assert_tree_gone(runner)


def test_wall_cap_kills_a_bash_tool_grandchild_in_its_own_session(claude):
    with FakeAnthropic(Script()) as server:
        runner = claude(server)
        result = runner.print_run(["--wall", "8s"], "SLEEP")
    assert result.rc == 124, result.stderr
    assert result.report["stop_reason"] == "wall"
    # `sleep 600` ran under the Bash tool, in its own session: it must be gone too
    assert not [
        p
        for p in psutil.process_iter(["cmdline"])
        if p.info["cmdline"] == ["sleep", "600"] and p.status() != psutil.STATUS_ZOMBIE and _tagged(p, runner.tag)
    ]
    assert_tree_gone(runner)


def _tagged(proc, tag) -> bool:
    try:
        return proc.environ().get("CAPGUARD_TEST_TAG") == tag
    except psutil.Error:
        return False


def test_uncapped_print_run_is_unchanged_and_costed_like_claude(claude):
    with FakeAnthropic(Script()) as server:
        runner = claude(server)
        result = runner.print_run([], "Say hello", "--output-format", "json")
    assert result.rc == 0, result.stderr
    own = json.loads(result.stdout)  # Claude's own JSON result passes through untouched
    assert own["type"] == "result" and own["is_error"] is False
    assert result.report["stop_reason"] is None
    assert result.report["cost_usd"] == pytest.approx(own["total_cost_usd"], rel=0.005)
    assert result.report["steps"] == 1


def test_subagent_spend_is_counted_and_steps_count_the_main_agent(claude):
    with FakeAnthropic(Script()) as server:
        runner = claude(server)
        result = runner.print_run([], "TASK:BASH:echo from-subagent", "--output-format", "json")
    assert result.rc == 0, result.stderr
    own = json.loads(result.stdout)
    assert server.count("subagent") >= 1
    assert result.report["cost_usd"] == pytest.approx(own["total_cost_usd"], rel=0.005)
    assert result.report["steps"] == server.count("main")


def test_resumed_session_counts_only_this_runs_spend(claude):
    session = str(uuid.uuid4())
    with FakeAnthropic(Script()) as server:
        runner = claude(server)
        first = runner.print_run([], "Say hello", "--session-id", session, "--output-format", "json")
        assert first.rc == 0, first.stderr
        second = runner.print_run([], "Say hello again", "--resume", session, "--output-format", "json")
    assert second.rc == 0, second.stderr
    own = json.loads(second.stdout)
    assert own["total_cost_usd"] == pytest.approx(2 * REPLY_USD, rel=0.01)  # Claude's total is cumulative
    assert second.report["cost_usd"] == pytest.approx(REPLY_USD, rel=0.01)  # capguard counts this run
    assert second.report["steps"] == 1


def test_anthropic_cost_budget_is_honoured_as_the_usd_cap(claude):
    with FakeAnthropic(Script(delay_s=0.2)) as server:
        runner = claude(server)
        runner.env["ANTHROPIC_COST_BUDGET"] = "0.03"
        result = runner.print_run([], "LOOP")
    assert result.rc == 122, result.stderr
    assert result.report["caps"]["usd"] == 0.03
    assert result.report["at_stop"]["steps"] == 3
    assert_tree_gone(runner)


def test_config_translates_into_claude_settings(claude):
    with FakeAnthropic(Script()) as server:
        runner = claude(server)
        trusted_config(  # model and effort are no caps: only a trusted repo file may choose them
            runner.repo / ".capguard.toml",
            '[agents.claude]\nmodel = "claude-sonnet-4-6"\nmax_output_tokens = 1000\neffort = "high"\n'
            'task_budget = "50k"\n',
        )
        result = runner.print_run([], "Say hello")
        body = server.requests[-1]["body"]
        beta = server.requests[-1]["anthropic_beta"] or ""
    assert result.rc == 0, result.stderr
    assert body["model"] == "claude-sonnet-4-6" and body["max_tokens"] == 1000
    assert body["output_config"]["effort"] == "high"
    assert body["output_config"]["task_budget"] == {"type": "tokens", "total": 50_000}
    assert "task-budgets-2026-03-13" in beta


def test_task_budget_below_the_minimum_is_refused(claude):
    with FakeAnthropic(Script()) as server:
        runner = claude(server)
        (runner.repo / ".capguard.toml").write_text("[agents.claude]\ntask_budget = 5000\n")
        result = runner.print_run([], "Say hello")
    assert result.rc == 2
    assert "task_budget: 5000 is below Claude's minimum of 20,000 tokens" in result.stderr
    assert server.count() == 0
