"""The supervisor with a fast stand-in agent: escalation, signals to capguard, bad input, missing pieces.

The real-aider tests show the caps work on the real thing; these pin down the edges quickly.
"""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import time

import pytest

from tests.integration.conftest import FAKES, Capguard, make_repo, trusted_config, wait_for


@pytest.fixture
def fake(tmp_path):
    repo = make_repo(tmp_path / "repo")
    wrapper = tmp_path / "fake-aider"
    wrapper.write_text(f'#!/bin/sh\nexec {sys.executable} {FAKES / "fake_aider.py"} "$@"\n')
    wrapper.chmod(0o755)
    trusted_config(repo / ".capguard.toml", f'[agents.aider]\ncommand = "{wrapper}"\n')
    runner = Capguard(tmp_path, str(wrapper), repo)
    yield runner
    runner.cleanup()


@pytest.mark.parametrize("watch", ["inotify", "poll"])
def test_usd_cap_fires_with_either_file_watcher(fake, watch):
    fake.env.update(FAKE_REPLIES="50", FAKE_COST="0.10", FAKE_INTERVAL="0.05")
    result = fake.run(["--usd", "0.35", *(["--poll"] if watch == "poll" else [])], [])
    assert result.rc == 122, result.stderr
    if watch == "inotify":
        assert result.report["at_stop"]["steps"] == 4  # $0.40 >= $0.35
        assert result.report["steps"] <= 5
    else:  # polling sees writes up to 0.25 s late: at 0.05 s a reply, a few more replies pass
        assert 4 <= result.report["at_stop"]["steps"] <= 12
    assert not fake.survivors()


def test_malformed_lines_are_skipped_counted_and_reported(fake):
    fake.env.update(FAKE_MALFORMED="2", FAKE_REPLIES="3", FAKE_COST="0.01", FAKE_EXIT="3")
    result = fake.run(["--usd", "5"], [])
    assert result.rc == 3  # the agent's own status: a bad line is never fatal
    assert result.report["malformed_lines"] == 4
    assert result.report["steps"] == 3 and result.report["cost_usd"] == pytest.approx(0.03)
    assert "4 malformed log line(s) skipped" in result.stderr


def test_agent_that_ignores_polite_signals_and_sigterm_is_killed(fake):
    fake.env.update(FAKE_REPLIES="3", FAKE_COST="0.2", FAKE_IGNORE="INT,TERM,HUP", FAKE_IDLE="60")
    started = time.monotonic()
    result = fake.run(["--usd", "0.5", "--grace", "0.5s", "--kill-after", "0.5s"], [])
    assert result.rc == 122, result.stderr
    steps = result.report["stop_steps"]
    assert [s.split()[1] for s in steps if s.startswith("sending")] == ["SIGINT", "SIGINT", "SIGTERM", "SIGKILL"]
    assert time.monotonic() - started < 30
    assert not fake.survivors()


@pytest.mark.parametrize("sig,code", [(signal.SIGHUP, 129), (signal.SIGTERM, 143)])
def test_signal_to_capguard_is_passed_on_and_reported(fake, tmp_path, sig, code):
    marker = tmp_path / "started"
    fake.env.update(FAKE_IDLE="60", FAKE_STARTED=str(marker))
    proc = fake.start([], [])
    wait_for(marker.exists, 30, "the agent to start")
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=30)
    result = fake.result(proc.returncode, out, err)
    assert result.rc == code
    assert result.report["signal_received"] == sig
    assert result.report["stop_steps"][0].startswith(f"sending {signal.Signals(sig).name}")
    assert not fake.survivors()


def test_agent_killed_by_a_signal_gives_128_plus_n(fake):
    fake.env.update(FAKE_EXIT="segv")
    result = fake.run([], [])
    assert result.rc == 128 + signal.SIGSEGV
    assert result.report["agent_returncode"] == -signal.SIGSEGV


def test_wall_cap_on_an_idle_agent(fake):
    fake.env.update(FAKE_IDLE="60")
    result = fake.run(["--wall", "1s"], [])
    assert result.rc == 124
    assert result.report["stop_reason"] == "wall" and 1 <= result.report["elapsed_s"] < 15


def test_missing_agent_exits_127_with_an_install_hint(tmp_path):
    repo = make_repo(tmp_path / "repo")
    trusted_config(repo / ".capguard.toml", '[agents.aider]\ncommand = "no-such-aider-here"\n')
    runner = Capguard(tmp_path, sys.executable, repo)
    result = runner.run(["--usd", "1"], [])
    assert result.rc == 127
    assert result.stderr.strip() == (
        "capguard: error: no-such-aider-here: command not found; "
        "install it with: python -m pip install aider-chat  (or: pipx install aider-chat)"
    )


def test_unusable_ledger_refuses_to_start_the_agent(fake, tmp_path):
    marker = tmp_path / "started"
    bad = tmp_path / "ledger.db"
    bad.write_text("this is not a database")
    bad.chmod(0o600)  # private, as capguard keeps a ledger: the one line is about the ledger, not its mode
    fake.env.update(FAKE_STARTED=str(marker), FAKE_REPLIES="1")
    result = fake.run(["--usd", "1", "--ledger", str(bad)], [])
    assert result.rc == 3
    assert result.stderr.count("\n") == 1 and str(bad) in result.stderr
    assert not marker.exists()


def test_bad_config_value_names_file_and_key_and_starts_nothing(fake, tmp_path):
    marker = tmp_path / "started"
    fake.env.update(FAKE_STARTED=str(marker))
    config = fake.repo / ".capguard.toml"
    config.write_text(config.read_text() + 'wall = "ten minutes"\n')
    result = fake.run([], [])
    assert result.rc == 2
    assert result.stderr.startswith(f"capguard: error: {config}") and ": wall: " in result.stderr
    assert result.stderr.count("\n") == 1 and not marker.exists()


def test_status_shows_a_running_run_and_forgets_it_when_done(fake, tmp_path):
    import json

    marker = tmp_path / "started"
    fake.env.update(FAKE_REPLIES="2", FAKE_COST="0.25", FAKE_IDLE="60", FAKE_STARTED=str(marker))
    proc = fake.start(["--usd", "2", "--wall", "40s"], [])
    status = [sys.executable, "-m", "capguard", "status", "--json"]

    def live():
        out = subprocess.run(status, env=fake.env, capture_output=True, text=True, check=True).stdout
        runs = json.loads(out)
        return runs if runs and runs[0]["steps"] == 2 else None

    runs = wait_for(live, 30, "capguard status to show the run")
    assert runs[0]["agent"] == "aider" and runs[0]["cost_usd"] == pytest.approx(0.5)
    assert "$0.50/$2.00" in runs[0]["summary"] and runs[0]["state"] == "running"
    text = subprocess.run(status[:-1], env=fake.env, capture_output=True, text=True).stdout
    assert runs[0]["run_id"] in text and "$0.50/$2.00" in text
    proc.send_signal(signal.SIGTERM)
    proc.communicate(timeout=30)
    after = subprocess.run(status, env=fake.env, capture_output=True, text=True, check=True).stdout
    assert json.loads(after) == []


def test_a_normal_exit_ends_with_one_summary_line(fake):
    fake.env.update(FAKE_REPLIES="3", FAKE_COST="0.10", FAKE_TOKENS="52000", FAKE_EXIT="0")
    result = fake.run(["--usd", "5", "--wall", "10m"], ["--no-stream"])
    assert result.rc == 0, result.stderr
    run_id = result.report["run_id"]
    assert re.fullmatch(
        rf"capguard: aider exited \(status 0\): 3 replies, 156k tokens, \$0\.30, \d+\.\ds; run {run_id}\n",
        result.stderr,
    ), result.stderr


def test_quiet_silences_the_summary_line_but_not_a_stop(fake):
    fake.env.update(FAKE_REPLIES="1", FAKE_COST="0.10", FAKE_EXIT="3")
    assert fake.run(["--quiet"], []).stderr == ""
    config = fake.repo / ".capguard.toml"
    trusted_config(config, config.read_text() + "quiet = true\n")
    fake.env.update(FAKE_REPLIES="5")
    stopped = fake.run(["--usd", "0.25"], ["--no-stream"])
    assert stopped.rc == 122, stopped.stderr
    assert "no cap" not in stopped.stderr and "exited" not in stopped.stderr
    assert stopped.stderr.splitlines()[-1].startswith(
        "capguard: stopped aider: cost $0.30"
    )  # the fake's traceback before it


def test_a_run_with_no_cap_says_once_that_it_only_meters(fake):
    fake.env.update(FAKE_REPLIES="1", FAKE_COST="0.10")
    lines = fake.run([], []).stderr.splitlines()
    assert lines[0] == "capguard: no cap set: metering only (set --usd, --tokens, --wall, --steps or a config file)"
    assert len(lines) == 2 and lines[1].startswith("capguard: aider exited (status 0): 1 reply,")


@pytest.mark.parametrize(
    "how",
    [[], ["--stream"], ["--no-stream", "--stream"]],
)
def test_streaming_aider_under_a_usd_cap_says_its_counts_are_aiders_estimates(fake, how):
    fake.env.update(FAKE_REPLIES="1", FAKE_COST="0.10")
    result = fake.run(["--usd", "5"], how)
    assert result.stderr.splitlines()[0] == (
        "capguard: note: aider streams by default and then logs its own estimates;"
        " add --no-stream for the server's figures"
    )


@pytest.mark.parametrize("how", ["flag", "env", "config"])
def test_aider_without_streaming_gets_no_estimates_note(fake, how):
    fake.env.update(FAKE_REPLIES="1", FAKE_COST="0.10")
    if how == "env":
        fake.env["AIDER_STREAM"] = "false"
    if how == "config":
        (fake.repo / ".aider.conf.yml").write_text("model: gpt-4o\nstream: false\n")
    result = fake.run(["--tokens", "1M"], ["--no-stream"] if how == "flag" else [])
    assert "estimates" not in result.stderr
    assert result.stderr.startswith("capguard: aider exited (status 0)"), result.stderr


def test_unpriced_named_model_is_noted_at_start_not_refused_when_the_agent_prices_its_replies(fake, tmp_path):
    # aider prices its own replies (the stand-in's are priced): a model capguard cannot price is said once at start
    # and the run goes on; a reply nobody prices stops it (test_aider_caps.py, with the real aider)
    marker = tmp_path / "started"
    fake.env.update(FAKE_STARTED=str(marker), FAKE_REPLIES="1")
    result = fake.run(["--usd", "1"], ["--model", "openai/my-private-model", "--no-stream"])
    assert result.rc == 0 and marker.exists(), result.stderr
    lines = result.stderr.splitlines()
    assert lines[0].startswith("capguard: note: openai/my-private-model has no price in genai-prices")
    assert lines[1].startswith("capguard: aider exited (status 0): 1 reply,") and len(lines) == 2


def test_unpriced_named_model_warns_at_start_or_says_nothing_by_policy(fake):
    fake.env.update(FAKE_REPLIES="1", FAKE_COST="0.10")
    model = ["--model", "openai/my-private-model", "--no-stream"]
    warned = fake.run(["--usd", "1", "--unpriced", "warn"], model)
    assert warned.rc == 0, warned.stderr
    assert warned.stderr.splitlines()[0].startswith("capguard: warning: openai/my-private-model has no known price")
    assert warned.stderr.count("no known price") == 1
    quiet = fake.run(["--usd", "1", "--unpriced", "tokens-only"], model)
    assert quiet.rc == 0 and "price" not in quiet.stderr
    uncapped = fake.run(["--wall", "10m"], model)  # no USD cap: the price does not matter
    assert uncapped.rc == 0 and "price" not in uncapped.stderr
