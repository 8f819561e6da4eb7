"""Codex CLI under capguard, end to end: the real `codex` (npm launcher + native binary) against the fake Responses
server on 127.0.0.1, metered from its rollout files, every cap stopping a runaway tool loop, the tree gone.

The model is gpt-5 ($1.25 / $0.125 cached / $10 per million): the fake bills ~8,000 input tokens a request (most
of them cached after the first), so a reply costs about $0.002-0.010.
"""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import pytest

from capguard.core.pricing import Pricer
from tests.fakes.fake_responses import FakeResponses, Reply, RunawayScript, Script, say
from tests.integration.conftest import Capguard, agent_or_skip, wait_for
from tests.integration.test_monthly import USER, seed

pytestmark = pytest.mark.agent
MODEL = "gpt-5"


@pytest.fixture(scope="session")
def codex_bin() -> str:
    return agent_or_skip("codex", "CAPGUARD_TEST_CODEX", "npm install @openai/codex@0.169.1")


class Codex(Capguard):
    """capguard around the real codex, with a scratch HOME/CODEX_HOME whose config points at the fake."""

    agent = "codex"

    def __init__(self, tmp_path: Path, codex: str, repo: Path, base_url: str):
        super().__init__(tmp_path, codex, repo)
        self.codex_home = Path(self.env["HOME"]) / ".codex"
        self.codex_home.mkdir(parents=True, exist_ok=True)
        (self.codex_home / "config.toml").write_text(
            f'model = "{MODEL}"\nmodel_provider = "fake"\n\n'
            "[model_providers.fake]\n"
            f'name = "Fake Responses"\nbase_url = "{base_url}"\nenv_key = "FAKE_API_KEY"\nwire_api = "responses"\n\n'
            f'[projects."{os.path.realpath(repo)}"]\ntrust_level = "trusted"\n'
        )
        for name in [n for n in self.env if n.startswith("CODEX_") or n.endswith("_API_KEY")]:
            del self.env[name]
        self.env.update(FAKE_API_KEY="sk-fake")  # CODEX_HOME stays unset: Codex's default, ~/.codex

    def exec_run(self, caps: list[str], prompt: str = "loop forever", *, timeout: float = 120):
        return self.run(caps, ["exec", "--dangerously-bypass-approvals-and-sandbox", prompt], timeout=timeout)

    def sessions(self) -> list[Path]:
        return sorted((self.codex_home / "sessions").rglob("rollout-*.jsonl"))


@pytest.fixture
def codex(tmp_path, codex_bin, repo):
    runners = []

    def start(server: FakeResponses) -> Codex:
        runner = Codex(tmp_path, codex_bin, repo, server.base_url)
        runners.append(runner)
        return runner

    yield start
    for runner in runners:
        runner.cleanup()


def reply_cost(usage: dict) -> int:
    """What capguard charges for one billed response: gpt-5 through genai-prices."""
    from capguard.core.events import Reply as Used

    cached = usage["input_tokens_details"]["cached_tokens"]
    used = Used("k", MODEL, usage["input_tokens"] - cached, usage["output_tokens"], cache_read_tokens=cached)
    cost = Pricer().price(used).cost_micro
    assert cost is not None
    return cost


def assert_tree_gone(runner):
    survivors = runner.survivors()
    assert not survivors, f"left running: {[(p.pid, p.name(), p.cmdline()) for p in survivors]}"


def assert_dead(pid: int) -> None:
    import psutil

    try:
        assert psutil.Process(pid).status() == psutil.STATUS_ZOMBIE, f"the background sleep {pid} survived"
    except psutil.NoSuchProcess:
        pass


def ledger_rows(run_id: str) -> tuple[dict, list[dict]]:
    from capguard.ledger import open_ledger

    with open_ledger(Path(os.environ["CAPGUARD_HOME"]) / "ledger.db") as ledger:
        return ledger.run(run_id), ledger.usage(run_id)


def assert_counts_what_was_billed(result, server: FakeResponses):
    """Report and ledger equal, to the token and the micro-dollar, what the fake billed (a reply cut by the stop
    was not billed, so nothing is missing)."""
    bills = server.billed("main")
    report = result.report
    assert report["tokens"] == sum(b["usage"]["total_tokens"] for b in bills)
    assert round(report["cost_usd"] * 1e6) == sum(reply_cost(b["usage"]) for b in bills)
    run, rows = ledger_rows(report["run_id"])
    assert run["exit_code"] == result.rc
    assert sorted(r["dedupe_key"] for r in rows) == sorted(f"codex:{b['id']}" for b in bills)
    assert sum(r["cost_micro_usd"] for r in rows) == round(report["cost_usd"] * 1e6)
    assert server.billed("title") == []  # codex exec makes no side requests: nothing unrecorded
    # its rollout file was told to be the run's for certain (held open by its tree), not charged on doubt
    assert not any("no process held them open" in note for note in report["notes"]), report["notes"]


def runaway(delay_s: float = 0.2) -> Script:
    return RunawayScript([Reply(delay_s=delay_s, reasoning_tokens=8)])


def test_usd_cap_stops_a_runaway_exec_within_one_reply(codex):
    with FakeResponses(runaway()) as server:
        runner = codex(server)
        result = runner.exec_run(["--usd", "0.03"])
    assert result.rc == 122, result.stderr
    report = result.report
    assert report["stop_reason"] == "usd" and report["agent"] == "codex"
    at_stop = report["at_stop"]
    assert at_stop["cost_usd"] - report["largest_reply_usd"] < 0.03 <= at_stop["cost_usd"] + 1e-9
    assert report["stop_steps"][0].startswith("sending SIGINT to codex")
    assert "reached the $0.03 cap" in result.stderr
    assert any("cut short by the stop" in b for b in report["blind_spots"])
    assert not any("thread-title" in b for b in report["blind_spots"])  # exec makes none
    assert_counts_what_was_billed(result, server)
    assert_tree_gone(runner)


def test_token_cap_stops_a_runaway_exec(codex):
    with FakeResponses(runaway()) as server:
        runner = codex(server)
        result = runner.exec_run(["--tokens", "40k"])
    assert result.rc == 121, result.stderr
    assert result.report["stop_reason"] == "tokens"
    at_stop = result.report["at_stop"]
    first = server.billed("main")[0]["usage"]["total_tokens"]
    assert 40_000 <= at_stop["tokens"] < 40_000 + 2 * first  # crossed by the last reply, not before
    assert_counts_what_was_billed(result, server)
    assert_tree_gone(runner)


@pytest.mark.parametrize("tree", ["cgroup", "freeze-sweep"])
def test_wall_cap_kills_a_background_tool_in_its_own_session(codex, tree):
    """The tool call starts a background sleep that the shell leaves running (own session, orphaned): the stop at
    the wall cap leaves nothing, whether the tree is stopped by its cgroup or frozen and swept."""
    from capguard.supervisor import cgroup

    if tree == "cgroup" and cgroup.parent_dir() is None:
        pytest.skip("no writable cgroup v2 here")
    script = Script([_background_sleep(), say("waiting", delay_s=60)])
    with FakeResponses(script) as server:
        runner = codex(server)
        if tree == "freeze-sweep":
            runner.env["CAPGUARD_CGROUP"] = "off"
        marker = runner.tmp / "bg.pid"
        runner.env["CAPGUARD_TEST_BG"] = str(marker)
        result = runner.exec_run(["--wall", "6s"])
    assert result.rc == 124, result.stderr
    assert result.report["stop_reason"] == "wall" and result.report["tree_stop"] == tree
    assert marker.exists(), "the tool never started its background sleep"
    assert_counts_what_was_billed(result, server)
    assert_tree_gone(runner)
    assert_dead(int(marker.read_text()))


def _background_sleep() -> Reply:
    from tests.fakes.fake_responses import ToolCall

    cmd = 'setsid sleep 300 >/dev/null 2>&1 & echo $! > "$CAPGUARD_TEST_BG"; echo started'
    return Reply(tool_call=ToolCall("exec_command", {"cmd": cmd}))


def test_exit_code_says_why_even_when_codex_exits_0_after_the_stop(codex):
    """Codex may end 0 or 1 on SIGINT; capguard's code is the cap's either way."""
    with FakeResponses(runaway(0.1)) as server:
        runner = codex(server)
        result = runner.exec_run(["--steps", "3"])
    assert result.rc == 120, result.stderr
    assert result.report["stop_reason"] == "steps" and result.report["at_stop"]["steps"] == 3
    assert_counts_what_was_billed(result, server)
    assert_tree_gone(runner)


def test_an_uncapped_exec_meters_every_reply(codex):
    with FakeResponses(Script([_tool("echo hi"), say("done")])) as server:
        runner = codex(server)
        result = runner.exec_run([], "say hi")
    assert result.rc == 0, result.stderr
    assert result.report["stop_reason"] is None and result.report["steps"] == 2
    assert_counts_what_was_billed(result, server)
    assert_tree_gone(runner)


def _tool(cmd: str) -> Reply:
    from tests.fakes.fake_responses import shell

    return shell(cmd, reasoning_tokens=5)


def test_resumed_exec_counts_only_this_runs_replies_in_the_old_file(codex):
    """`codex exec resume` appends to the thread's original file: only the lines this run adds count."""
    with FakeResponses(Script([say("first"), say("second")])) as server:
        runner = codex(server)
        first = runner.exec_run([], "one")
        assert first.rc == 0, first.stderr
        [path] = runner.sessions()
        thread = path.stem.rsplit("-", 5)[-5:]
        server.reset()
        second = runner.run([], ["exec", "resume", "-".join(thread), "two"])
    assert second.rc == 0, second.stderr
    assert runner.sessions() == [path]  # appended, no new file
    assert second.report["steps"] == 1
    assert_counts_what_was_billed(second, server)


def test_ephemeral_is_refused_since_nothing_could_be_metered(codex):
    with FakeResponses(runaway()) as server:
        runner = codex(server)
        result = runner.run(["--usd", "1"], ["exec", "--ephemeral", "hi"])
    assert result.rc == 2 and "--ephemeral" in result.stderr and server.requests == []


def test_monthly_cap_refuses_to_start_codex(codex, tmp_path):
    with FakeResponses(runaway()) as server:
        runner = codex(server)
        team = tmp_path / "team.toml"
        team.write_text(f'ledger = "{tmp_path / "team.db"}"\nuser = "{USER}"\n[team]\nmonthly_usd = 1\n')
        runner.env["CAPGUARD_CONFIG"] = str(team)
        seed(str(tmp_path / "team.db"), 1.0)
        result = runner.exec_run(["--usd", "5"])
    assert result.rc == 117, result.stderr
    assert result.stderr.startswith("capguard: error: codex not started: monthly cap reached")
    assert server.requests == [] and result.report is None


def test_an_unpriced_model_is_refused_at_start_under_a_usd_cap(codex):
    with FakeResponses(runaway()) as server:
        runner = codex(server)
        result = runner.run(["--usd", "1"], ["exec", "-m", "fake-model", "hi"])
    assert result.rc == 116, result.stderr
    assert "fake-model" in result.stderr and server.requests == []


def test_signal_to_capguard_stops_codex_and_its_tool(codex):
    """SIGTERM to capguard mid tool-call: the whole tree goes, the billed replies are in the ledger."""
    script = Script([_background_sleep(), say("waiting", delay_s=60)])
    with FakeResponses(script) as server:
        runner = codex(server)
        marker = runner.tmp / "bg.pid"
        runner.env["CAPGUARD_TEST_BG"] = str(marker)
        proc = runner.start([], ["exec", "--dangerously-bypass-approvals-and-sandbox", "go"])
        wait_for(marker.exists, 60, "the background sleep")
        time.sleep(0.5)
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=60)
        result = runner.result(proc.returncode, out, err)
    assert result.rc == 143, err
    assert_counts_what_was_billed(result, server)
    assert_tree_gone(runner)
    assert_dead(int(marker.read_text()))


def rollout_usage_ids(runner: Codex) -> list[str]:
    ids = []
    for path in runner.sessions():
        for line in path.read_text().splitlines():
            entry = json.loads(line)
            if entry["type"] == "token_usage_record":
                ids.append(entry["payload"]["response_id"])
    return ids


def test_fork_counts_only_its_own_replies(codex):
    """A fork starts a new file that does not replay its parent's records; each reply is counted once."""
    with FakeResponses(Script([say("parent"), say("child")])) as server:
        runner = codex(server)
        parent = runner.exec_run([], "one")
        assert parent.rc == 0, parent.stderr
        [path] = runner.sessions()
        thread = "-".join(path.stem.rsplit("-", 5)[-5:])
        server.reset()
        child = runner.run([], ["exec", "fork", thread, "two"])
    if child.rc == 2 and "unrecognized" in child.stderr:
        pytest.skip("this codex has no `exec fork`")
    assert child.rc == 0, child.stderr
    assert len(runner.sessions()) == 2
    assert child.report["steps"] == 1
    assert_counts_what_was_billed(child, server)
    ids = rollout_usage_ids(runner)
    assert len(ids) == len(set(ids)) == 2


def test_importing_what_capguard_metered_adds_nothing(codex):
    """`capguard import codex` keys replies as the live meter does: a metered run's replies are already known."""
    import subprocess
    import sys

    with FakeResponses(runaway(0.05)) as server:
        runner = codex(server)
        result = runner.exec_run(["--steps", "4"])
    assert result.rc == 120, result.stderr
    done = subprocess.run(
        [sys.executable, "-m", "capguard", "import", "codex", "--json"],
        env=runner.env,
        cwd=runner.repo,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    assert summary["files_read"] == 1 and summary["replies_added"] == 0
    assert summary["replies_known"] == len(server.billed("main")) == result.report["steps"]


def test_stuck_loop_of_failing_shell_calls_is_stopped(codex):
    """The same shell command failing again and again (exit code 1 in Codex's tool output) is a stuck loop."""
    from tests.fakes.fake_responses import shell

    with FakeResponses(Script([shell("cat missing-file.txt")])) as server:  # repeated forever
        runner = codex(server)
        result = runner.exec_run(["--usd", "5"])
    assert result.rc == 118, result.stderr
    assert result.report["stop_reason"] == "stuck"
    assert result.report["at_stop"]["failing_streak"] == 5
    assert_counts_what_was_billed(result, server)
    assert_tree_gone(runner)


def test_a_neighbour_codex_session_in_the_same_home_is_not_charged(codex, codex_bin):
    """Another `codex exec` (a neighbour in another terminal, not under capguard) loops in the same CODEX_HOME
    against a fake of its own for the whole run: the capped run counts only its own fake's bill, to the token,
    stops at its own cap, and the report says how many of the neighbour's replies it left out."""
    import subprocess

    with FakeResponses(runaway()) as server, FakeResponses(runaway(0.1)) as other:
        runner = codex(server)
        env = {k: v for k, v in runner.env.items() if k != "CAPGUARD_TEST_TAG"}
        neighbour = subprocess.Popen(
            [codex_bin, "exec", "--dangerously-bypass-approvals-and-sandbox", "-c",
             f'model_providers.fake.base_url="{other.base_url}"', "loop forever elsewhere"],
            cwd=runner.repo, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL, start_new_session=True,
        )  # fmt: skip
        try:
            wait_for(lambda: len(other.billed("main")) >= 2, 60, "the neighbour's first replies")
            result = runner.exec_run(["--usd", "0.03"])
            neighbour_during = len(other.billed("main"))
        finally:
            os.killpg(neighbour.pid, signal.SIGINT)
            neighbour.wait(timeout=30)
    assert neighbour_during > 5, "the neighbour was not writing during the run"
    assert result.rc == 122, result.stderr
    assert result.report["stop_reason"] == "usd"
    assert_counts_what_was_billed(result, server)  # its own bill only, not the sum
    notes = " ".join(result.report["notes"])
    assert "written by another Codex session" in notes and "were not charged" in notes, notes
    assert "no process held them open" not in notes, notes  # every file was told apart for certain
    assert len(runner.sessions()) == 2  # both wrote to the same sessions tree
    assert_tree_gone(runner)
