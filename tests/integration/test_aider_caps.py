"""Every cap, end to end: the real capguard CLI, the real aider, a fake OpenAI server on 127.0.0.1.

Each cap test asserts the stop reason, the exit code, the report, that the overshoot is at most one
reply, and that no process of the agent's tree is left.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import psutil
import pytest

from capguard.demo.fake_openai import FakeOpenAI, chat_script, runaway_script
from capguard.supervisor import cgroup
from tests.integration.conftest import FAKES, aider_flags, make_repo, trusted_config, wait_for

pytestmark = pytest.mark.agent

RUNAWAY_INPUT = "Please fix the greeting in hello.py\n" * 10  # up to 4 replies each: a 40-reply runaway
REPLY_USD = 0.145  # gpt-4o, 50,000 prompt + 2,000 completion tokens, as aider prices it with --no-stream


def assert_stopped_within_one_reply(result, server, cap_usd=None):
    report, at_stop = result.report, result.report["at_stop"]
    assert at_stop["steps"] >= 1
    if cap_usd is not None:
        # the stop came on the first reply that crossed: one reply less was under the cap
        assert at_stop["cost_usd"] - report["largest_reply_usd"] < cap_usd <= at_stop["cost_usd"]
    how = f"at stop {at_stop}, in the end {report['steps']} replies; {report['stop_steps']}"
    # past the crossing reply, at most the one request already in flight was answered
    assert report["steps"] <= at_stop["steps"] + 1, how
    # and at most one more was started: the polite SIGINT lets aider take its next piped message (a typing user
    # has none queued); that request sets off the escalation at once
    assert server.count("main") <= at_stop["steps"] + 2, how


def assert_tree_gone(capguard):
    survivors = capguard.survivors()
    assert not survivors, f"left running: {[(p.pid, p.name()) for p in survivors]}"


def test_usd_cap_stops_runaway_aider(capguard):
    with FakeOpenAI(runaway_script(delay_s=0.3)) as server:
        result = capguard.run(
            ["--usd", "1.00"], [*aider_flags(server.base_url), "--no-fancy-input", "hello.py"], input=RUNAWAY_INPUT
        )
    assert result.rc == 122, result.stderr
    assert result.report["stop_reason"] == "usd"
    assert result.report["exit_code"] == 122
    assert result.report["at_stop"]["steps"] == 7  # $0.145 a reply: the 7th ($1.015) crosses $1.00
    assert result.report["steps"] == 7  # a model that takes 0.3 s per reply is interrupted, not answered
    assert result.report["cost_usd"] == pytest.approx(7 * REPLY_USD)
    assert result.report["usage"]["openai/gpt-4o"]["input_tokens"] == 7 * 50_000
    assert "capguard: stopped aider: cost $1.02 reached the $1.00 cap (7 replies" in result.stderr
    assert_stopped_within_one_reply(result, server, cap_usd=1.00)
    assert_tree_gone(capguard)


def test_usd_cap_stops_streaming_runaway(capguard):
    # streaming: aider prices its own local token count (the server's usage is ignored)
    with FakeOpenAI(runaway_script()) as server:
        result = capguard.run(
            ["--usd", "0.03"],
            [*aider_flags(server.base_url, stream=True), "--no-fancy-input", "hello.py"],
            input=RUNAWAY_INPUT,
        )
    assert result.rc == 122, result.stderr
    assert result.report["stop_reason"] == "usd"
    assert result.report["steps"] >= 2
    assert all(r["stream"] for r in server.requests if r["kind"] == "main")
    assert_stopped_within_one_reply(result, server, cap_usd=0.03)
    assert_tree_gone(capguard)


def test_token_cap_stops_runaway_aider(capguard):
    # a model that takes 0.3 s a reply, as real ones take seconds: with instant replies aider answers every ~30 ms,
    # and "one reply past the stop" would measure the CI machine's scheduler rather than capguard
    with FakeOpenAI(runaway_script(delay_s=0.3)) as server:
        result = capguard.run(
            ["--tokens", "120k"], [*aider_flags(server.base_url), "--no-fancy-input", "hello.py"], input=RUNAWAY_INPUT
        )
    assert result.rc == 121, result.stderr
    assert result.report["stop_reason"] == "tokens"
    assert result.report["at_stop"]["tokens"] == 156_000  # 3 x 52,000: the third reply crosses 120k
    assert "156k tokens reached the 120k-token cap" in result.stderr
    assert_stopped_within_one_reply(result, server)
    assert_tree_gone(capguard)


def test_steps_cap_stops_before_the_next_reply(capguard):
    with FakeOpenAI(runaway_script(delay_s=0.3)) as server:  # a model that takes 0.3 s is cut mid-reply
        result = capguard.run(
            ["--steps", "2"], [*aider_flags(server.base_url), "--no-fancy-input", "hello.py"], input=RUNAWAY_INPUT
        )
    assert result.rc == 120, result.stderr
    assert result.report["stop_reason"] == "steps"
    assert result.report["at_stop"]["steps"] == 2 and result.report["at_stop"]["requests"] == 3
    assert result.report["steps"] == 2  # the third request was cut off before its reply
    # the polite SIGINT lets aider move on to its next queued message: that request is cut at once
    assert result.report["requests_started"] <= 4 and server.count("main") <= 4
    assert "reply 3 was starting after the 2-reply cap" in result.stderr
    assert_tree_gone(capguard)


def test_wall_cap_stops_idle_interactive_aider(capguard):
    with FakeOpenAI(chat_script()) as server:
        # aider idles at its prompt on a stdin that stays open (communicate() would close a PIPE: EOF ends aider)
        read_end, write_end = os.pipe()
        try:
            proc = capguard.start(["--wall", "4s"], [*aider_flags(server.base_url), "--no-fancy-input"], stdin=read_end)
            os.close(read_end)
            out, err = proc.communicate(timeout=90)
        finally:
            os.close(write_end)
        result = capguard.result(proc.returncode, out, err)
    assert result.rc == 124, err
    assert result.report["stop_reason"] == "wall"
    assert result.report["elapsed_s"] >= 4
    assert result.report["steps"] == 0 and server.count() == 0
    assert "wall-clock" in err and "reached the 4.0s cap" in err
    assert_tree_gone(capguard)


def test_uncapped_run_passes_exit_code_through(capguard):
    with FakeOpenAI(chat_script()) as server:
        result = capguard.run([], [*aider_flags(server.base_url), "--message", "Just tell me something"])
    assert result.rc == 0, result.stderr
    assert result.report["stop_reason"] is None
    assert result.report["steps"] == 1 and server.count("main") == 1
    assert "capguard: stopped" not in result.stderr


def test_agent_failure_code_passes_through(capguard):
    result = capguard.run([], ["--no-such-aider-flag"])
    assert result.rc == 2
    assert "unrecognized arguments: --no-such-aider-flag" in result.stderr  # aider's words, not capguard's
    assert result.report["agent_returncode"] == 2 and result.report["stop_reason"] is None


def test_map_tokens_above_cap_is_refused_before_start(capguard):
    with FakeOpenAI(chat_script()) as server:
        result = capguard.run(
            ["--map-tokens", "2048"], [*aider_flags(server.base_url), "--map-tokens", "4096", "--message", "hi"]
        )
    assert result.rc == 2
    assert "--map-tokens 4096 lets aider build a repo map of up to 10240 tokens" in result.stderr
    assert result.stderr.count("\n") == 1  # one line
    assert server.count() == 0 and result.report is None


def test_aider_map_tokens_env_above_cap_is_refused(capguard):
    capguard.env["AIDER_MAP_TOKENS"] = "8192"
    result = capguard.run(["--map-tokens", "4096"], ["--message", "hi"])
    assert result.rc == 2
    assert "AIDER_MAP_TOKENS 8192" in result.stderr


def test_map_tokens_clamped_when_config_says_so(capguard):
    trusted_config(capguard.repo / ".capguard.toml", 'map_tokens = 2048\nmap_over_cap = "clamp"\n')
    with FakeOpenAI(chat_script()) as server:
        result = capguard.run([], [*aider_flags(server.base_url), "--map-tokens", "4096", "--message", "hi"])
    assert result.rc == 0, result.stderr
    argv = result.report["argv"]
    assert argv[len(argv) - 1 - argv[::-1].index("--map-tokens") + 1] == "819"  # 2048 / (2 x 1.25)
    assert any("clamped to 819" in note for note in result.report["notes"])


def big_repo(path: Path) -> Path:
    files = {
        f"pkg/module_{i}.py": "".join(
            f"def function_{i}_{j}(alpha, beta, gamma):\n    return alpha + beta * gamma - {j}\n\n\n" for j in range(12)
        )
        for i in range(60)
    }
    return make_repo(path, files)


def test_repo_map_measured_above_cap_stops_the_run(tmp_path, capguard):
    # aider's own config file raises the no-files multiplier: capguard cannot see it, the measurement can
    capguard.repo = big_repo(tmp_path / "big")
    (capguard.repo / ".aider.conf.yml").write_text("map-multiplier-no-files: 16\n")
    with FakeOpenAI(chat_script()) as server:
        result = capguard.run(
            ["--map-tokens", "1024"], [*aider_flags(server.base_url), "--message", "What does pkg do?"]
        )
    assert result.rc == 119, result.stderr
    assert result.report["stop_reason"] == "map_tokens"
    assert result.report["map_tokens_seen"] > 1024
    assert "exceeded the 1,024-token map cap" in result.stderr
    assert_tree_gone(capguard)


def test_repo_map_within_cap_runs_normally(tmp_path, capguard):
    capguard.repo = big_repo(tmp_path / "big")
    with FakeOpenAI(chat_script()) as server:
        result = capguard.run(
            ["--map-tokens", "1024"], [*aider_flags(server.base_url), "--message", "What does pkg do?"]
        )
    assert result.rc == 0, result.stderr
    assert 0 < result.report["map_tokens_seen"] <= 1024


def write_wrapper(tmp_path: Path, aider: str) -> Path:
    wrapper = tmp_path / "aider-with-children"
    wrapper.write_text(f'#!/bin/sh\nexec {sys.executable} {FAKES / "agent_with_children.py"} "$@"\n')
    wrapper.chmod(0o755)
    return wrapper


def test_cap_stop_kills_children_that_ignore_sigterm_or_leave_the_session(tmp_path, capguard, aider_bin):
    children = tmp_path / "children.txt"
    capguard.env.update(CAPGUARD_TEST_CHILDREN=str(children), CAPGUARD_TEST_REAL_AGENT=aider_bin)
    trusted_config(
        capguard.repo / ".capguard.toml", f'[agents.aider]\ncommand = "{write_wrapper(tmp_path, aider_bin)}"\n'
    )
    with FakeOpenAI(runaway_script()) as server:
        result = capguard.run(
            ["--usd", "0.40"], [*aider_flags(server.base_url), "--no-fancy-input", "hello.py"], input=RUNAWAY_INPUT
        )
    assert result.rc == 122, result.stderr
    pids = [int(line.split()[1]) for line in children.read_text().splitlines()]
    assert len(pids) == 2
    assert not [p for p in pids if psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE]
    assert result.report["leftovers_stopped"] >= 2
    assert any("SIGKILL" in step for step in result.report["stop_steps"])  # the stubborn one needed it
    if cgroup.parent_dir() is not None:  # this machine gives capguard a cgroup: the stop used it
        assert result.report["tree_stop"] == "cgroup"
        assert any("cgroup.kill" in step for step in result.report["stop_steps"])
    else:
        assert result.report["tree_stop"] == "freeze-sweep"
    assert_tree_gone(capguard)


def test_cap_stop_without_a_cgroup_freezes_and_sweeps_the_tree(tmp_path, capguard, aider_bin):
    children = tmp_path / "children.txt"
    capguard.env.update(CAPGUARD_TEST_CHILDREN=str(children), CAPGUARD_TEST_REAL_AGENT=aider_bin, CAPGUARD_CGROUP="off")
    trusted_config(
        capguard.repo / ".capguard.toml", f'[agents.aider]\ncommand = "{write_wrapper(tmp_path, aider_bin)}"\n'
    )
    # replies take time, as a real API's do: with instant replies aider can finish one inside the 0.4 s between
    # the polite stop's two Ctrl-C, which says nothing about the tree
    with FakeOpenAI(runaway_script(delay_s=0.3)) as server:
        result = capguard.run(
            ["--usd", "0.40"], [*aider_flags(server.base_url), "--no-fancy-input", "hello.py"], input=RUNAWAY_INPUT
        )
    assert result.rc == 122, result.stderr
    assert result.report["tree_stop"] == "freeze-sweep"
    assert any("SIGSTOP" in step for step in result.report["stop_steps"]), result.report["stop_steps"]
    pids = [int(line.split()[1]) for line in children.read_text().splitlines()]
    assert len(pids) == 2
    assert not [p for p in pids if psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE]
    assert_stopped_within_one_reply(result, server, cap_usd=0.40)
    assert_tree_gone(capguard)


def idle_session(capguard, server, caps=()):
    proc = capguard.start(list(caps), [*aider_flags(server.base_url), "--no-fancy-input"], stdin=subprocess.PIPE)
    # aider is idle once it has logged its launch to the analytics log capguard gave it
    runs = Path(capguard.env.get("CAPGUARD_HOME") or os.environ["CAPGUARD_HOME"]) / "runs"
    wait_for(
        lambda: any("launched" in p.read_text() for p in runs.glob("*/aider.analytics.jsonl")), 60, "aider to start"
    )
    return proc


def test_sigterm_to_capguard_stops_the_agent_and_exits_143(capguard):
    with FakeOpenAI(chat_script()) as server:
        proc = idle_session(capguard, server)
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=30)
    assert proc.returncode == 143, err
    report = json.loads(capguard.report_path.read_text())
    assert report["signal_received"] == signal.SIGTERM and report["stop_reason"] is None
    assert "capguard received SIGTERM" in err
    assert_tree_gone(capguard)


def test_agent_dies_when_capguard_is_killed(capguard):
    with FakeOpenAI(chat_script()) as server:
        proc = idle_session(capguard, server)
        agent = [p for p in psutil.Process(proc.pid).children() if "aider" in " ".join(p.cmdline())]
        assert agent, "aider is not a child of capguard"
        proc.kill()  # SIGKILL: capguard cannot clean up; the kernel's parent-death signal must
        proc.communicate(timeout=10)
        gone, alive = psutil.wait_procs(agent, timeout=10)
    assert not alive, "aider kept running uncapped after capguard died"


def test_users_own_analytics_log_is_metered_from_its_end(tmp_path, capguard):
    own = tmp_path / "mine.jsonl"
    earlier = {
        "event": "message_send",
        "properties": {"prompt_tokens": 9, "completion_tokens": 9, "cost": 99.0},
        "time": 1,
    }
    own.write_text(json.dumps(earlier) + "\n")
    with FakeOpenAI(runaway_script()) as server:
        result = capguard.run(
            ["--usd", "0.40"],
            [*aider_flags(server.base_url), "--analytics-log", str(own), "--no-fancy-input", "hello.py"],
            input=RUNAWAY_INPUT,
        )
    assert result.rc == 122, result.stderr
    assert result.report["at_stop"]["cost_usd"] == pytest.approx(3 * REPLY_USD)  # the $99 line predates the run
    assert own.read_text().count('"message_send"') == 1 + result.report["steps"]
    assert any(str(own) in note for note in result.report["notes"])
    assert_tree_gone(capguard)


def test_unpriced_model_named_at_start_is_noted_and_stops_at_its_first_reply(capguard):
    # aider prices replies itself (litellm's data may know a model genai-prices does not): no refusal at start, a
    # note before aider takes the terminal, and the first reply nobody could price stops the run
    with FakeOpenAI(chat_script(delay_s=0.3)) as server:
        result = capguard.run(
            ["--usd", "1"],
            [*aider_flags(server.base_url, model="openai/my-private-model"), "--no-fancy-input"],
            input="hello\nagain\nmore\n",
        )
    assert result.rc == 116, result.stderr
    assert result.stderr.startswith("capguard: note: openai/my-private-model has no price in genai-prices")
    assert result.report["stop_reason"] == "unpriced" and result.report["at_stop"]["steps"] == 1
    assert_tree_gone(capguard)


def test_unpriced_model_stops_under_a_usd_cap(capguard):
    # the model is named in aider's own config file, which capguard does not read: known only from the replies
    (capguard.repo / ".aider.conf.yml").write_text("model: openai/my-private-model\n")
    with FakeOpenAI(chat_script(delay_s=0.3)) as server:
        flags = aider_flags(server.base_url)
        at = flags.index("--model")
        del flags[at : at + 2]
        result = capguard.run(["--usd", "1"], [*flags, "--no-fancy-input"], input="hello\nagain\nmore\n")
    assert result.rc == 116, result.stderr
    assert result.report["stop_reason"] == "unpriced"
    assert result.report["at_stop"]["steps"] == 1  # the first reply nobody could price
    assert result.report["unpriced_replies"] == result.report["steps"] <= 2
    assert "has no known price" in result.stderr  # the stop line names the model capguard knew at start
    assert_tree_gone(capguard)


def test_config_prices_an_unknown_model(capguard):
    trusted_config(capguard.repo / ".capguard.toml", '[prices."openai/my-private-model"]\ninput = 1.0\noutput = 2.0\n')
    with FakeOpenAI(runaway_script()) as server:
        result = capguard.run(
            ["--usd", "0.15"],
            [*aider_flags(server.base_url, model="openai/my-private-model"), "--no-fancy-input", "hello.py"],
            input=RUNAWAY_INPUT,
        )
    assert result.rc == 122, result.stderr
    assert result.report["at_stop"]["steps"] == 3  # $0.054 a reply at $1/M in and $2/M out
    assert result.report["at_stop"]["cost_usd"] == pytest.approx(3 * 0.054)
    assert_tree_gone(capguard)


def test_ledger_holds_every_counted_reply(capguard):
    from capguard.ledger import open_ledger

    with FakeOpenAI(runaway_script()) as server:
        result = capguard.run(
            ["--usd", "0.40"], [*aider_flags(server.base_url), "--no-fancy-input", "hello.py"], input=RUNAWAY_INPUT
        )
    assert result.rc == 122
    with open_ledger(Path(os.environ["CAPGUARD_HOME"]) / "ledger.db") as ledger:
        run = ledger.run(result.report["run_id"])
        rows = ledger.usage(result.report["run_id"])
    assert run["stop_reason"] == "usd" and run["exit_code"] == 122
    assert len(rows) == result.report["steps"]  # every reply aider logged, the in-flight one included
    assert sum(r["cost_micro_usd"] for r in rows) == round(result.report["cost_usd"] * 1e6)
