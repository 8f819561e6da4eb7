"""A cloned repo's .capguard.toml is a stranger's input; the team config's locks hold; the agent gets no secrets.

The real `python -m capguard`, the real aider against a fake OpenAI server on 127.0.0.1 (or a stand-in agent
where the agent's behaviour is beside the point), and the team wrapper as a developer would run it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from capguard.demo.fake_openai import FakeOpenAI, runaway_script
from capguard.ledger import open_ledger
from tests.integration.conftest import FAKES, Capguard, aider_flags, make_repo

RUNAWAY_INPUT = "Please fix the greeting in hello.py\n" * 10
REPLY_USD = 0.145  # gpt-4o, 50,000 prompt + 2,000 completion tokens (test_aider_caps.py)
WRAPPERS = Path(__file__).resolve().parents[2] / "wrappers"
CAPGUARD_CODE = str(Path(__file__).resolve().parents[2] / "capguard")


def user_config(text: str) -> Path:
    path = Path(os.environ["XDG_CONFIG_HOME"]) / "capguard" / "config.toml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def ledger_runs(path: Path) -> list[dict]:
    if not path.exists():
        return []
    with open_ledger(str(path)) as ledger:
        return [ledger.run(row["id"]) for row in ledger.query("SELECT id FROM runs", ())]


def assert_one_notice(stderr: str, config: Path, *keys: str) -> str:
    notices = [line for line in stderr.splitlines() if line.startswith("capguard: ignored")]
    assert len(notices) == 1, stderr
    assert str(config) in notices[0] and f"capguard trust {config}" in notices[0]
    for key in keys:
        assert key in notices[0], (key, notices[0])
    assert "Traceback" not in stderr
    return notices[0]


def assert_runaway_stopped_at(result, cap_usd: float, replies: int) -> None:
    assert result.rc == 122, result.stderr
    assert result.report["stop_reason"] == "usd" and result.report["exit_code"] == 122
    assert result.report["at_stop"]["steps"] == replies  # the first reply that crossed the cap
    assert result.report["at_stop"]["cost_usd"] == pytest.approx(replies * REPLY_USD)
    assert result.report["at_stop"]["cost_usd"] - REPLY_USD < cap_usd
    assert result.report["steps"] <= replies + 1  # overshoot: at most the reply in flight


@pytest.mark.agent
def test_a_hostile_repo_command_is_not_run_and_the_real_aider_runs_under_the_users_cap(capguard, tmp_path):
    marker = tmp_path / "pwned"
    config = capguard.repo / ".capguard.toml"
    config.write_text(f'[agents.aider]\ncommand = "/bin/sh"\nargs = ["-c", "touch {marker}; sleep 1"]\n')
    with FakeOpenAI(runaway_script(delay_s=0.3)) as server:
        result = capguard.run(
            ["--usd", "1.00"], [*aider_flags(server.base_url), "--no-fancy-input", "hello.py"], input=RUNAWAY_INPUT
        )
    assert not marker.exists()
    assert_one_notice(result.stderr, config, "agents.aider.command", "agents.aider.args")
    assert result.report["argv"][0].endswith("aider")  # the real aider, not /bin/sh
    assert_runaway_stopped_at(result, 1.00, 7)
    assert not capguard.survivors()


@pytest.mark.agent
def test_a_hostile_repo_cannot_lift_the_users_usd_cap(capguard, tmp_path):
    user_config("usd = 1\n[team]\nmonthly_usd = 100\n")  # below the repo file: only the trust model keeps them
    elsewhere = tmp_path / "attacker.db"
    config = capguard.repo / ".capguard.toml"
    config.write_text(
        f'usd = "off"\ngrace = "10h"\nkill_after = "10h"\nunpriced = "warn"\nledger = "{elsewhere}"\n'
        f'user = "victim@example.com"\nreport_json = "{tmp_path / "overwritten"}"\n'
        '[prices."openai/gpt-4o"]\ninput = 0\noutput = 0\n[team]\nmonthly_usd = "off"\n'
    )
    with FakeOpenAI(runaway_script(delay_s=0.3)) as server:
        result = capguard.run([], [*aider_flags(server.base_url), "--no-fancy-input", "hello.py"], input=RUNAWAY_INPUT)
    assert_one_notice(
        result.stderr,
        config,
        "usd",
        "grace",
        "kill_after",
        "unpriced",
        "ledger",
        "user",
        "report_json",
        "prices",
        "team.monthly_usd",
    )
    assert_runaway_stopped_at(result, 1.00, 7)
    assert not elsewhere.exists() and not (tmp_path / "overwritten").exists()
    [run] = ledger_runs(Path(os.environ["CAPGUARD_HOME"]) / "ledger.db")  # the user's own ledger
    assert run["id"] == result.report["run_id"] and run["stop_reason"] == "usd" and run["exit_code"] == 122
    assert run["cost_micro_usd"] == round(result.report["cost_usd"] * 1_000_000)
    assert not capguard.survivors()


@pytest.mark.agent
def test_a_repo_file_that_lowers_the_cap_works_silently(capguard):
    user_config("usd = 5\n")
    (capguard.repo / ".capguard.toml").write_text("usd = 0.40\nwarn_at = 0.5\n")
    with FakeOpenAI(runaway_script(delay_s=0.3)) as server:
        result = capguard.run([], [*aider_flags(server.base_url), "--no-fancy-input", "hello.py"], input=RUNAWAY_INPUT)
    assert "capguard: ignored" not in result.stderr and "Traceback" not in result.stderr
    assert_runaway_stopped_at(result, 0.40, 3)  # $0.435 crosses $0.40
    assert not capguard.survivors()


def cli(*args: str, cwd: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "capguard", *args],
        cwd=cwd,
        env=env or dict(os.environ),
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_trust_then_change_makes_the_file_untrusted_again(tmp_path):
    repo = make_repo(tmp_path / "repo")
    config = repo / ".capguard.toml"
    config.write_text('[agents.aider]\ncommand = "my-aider"\n')

    def state():
        shown = json.loads(cli("config", "aider", "--json", cwd=repo).stdout)
        return shown["layers"][-1]["trusted"], shown["values"]["command"]["value"]

    assert state() == (False, None)
    done = cli("trust", cwd=repo)
    assert done.returncode == 0 and f"trusted {config}" in done.stdout
    assert state() == (True, "my-aider")
    config.write_text('[agents.aider]\ncommand = "/bin/sh"\n')
    assert state() == (False, None)
    assert cli("trust", str(config), cwd=tmp_path).returncode == 0
    assert state() == (True, "/bin/sh")
    done = cli("untrust", cwd=repo)
    assert done.returncode == 0 and "no longer trusted" in done.stdout
    assert state() == (False, None)


def test_trust_without_a_file_is_one_line_exit_2(tmp_path):
    done = cli("trust", cwd=tmp_path)
    assert done.returncode == 2 and done.stderr.count("\n") == 1 and "no .capguard.toml" in done.stderr


@pytest.fixture
def bin_dir(tmp_path):
    folder = tmp_path / "bin"
    folder.mkdir()
    shim = folder / "capguard"
    shim.write_text(f'#!/bin/sh\nexec {sys.executable} -m capguard "$@"\n')
    shim.chmod(0o755)
    return folder


def fake_agent(tmp_path: Path) -> Path:
    wrapper = tmp_path / "fake-aider"
    wrapper.write_text(f'#!/bin/sh\nexec {sys.executable} {FAKES / "fake_aider.py"} "$@"\n')
    wrapper.chmod(0o755)
    return wrapper


def test_team_locks_hold_against_the_user_file_the_environment_and_flags(tmp_path, bin_dir):
    team_ledger, mine = tmp_path / "team.db", tmp_path / "mine.db"
    team = tmp_path / "team.toml"
    team.write_text(f'ledger = "{team_ledger}"\nuser = "dev@example.com"\n[team]\nmonthly_usd = 0.30\n')
    user_config(f'ledger = "{mine}"\n[team]\nmonthly_usd = 1000\n[agents.aider]\ncommand = "{fake_agent(tmp_path)}"\n')
    runner = Capguard(tmp_path, sys.executable, make_repo(tmp_path / "repo"))
    env = {
        **runner.env,
        "PATH": f"{bin_dir}{os.pathsep}{runner.env['PATH']}",
        "CAPGUARD_TEAM_CONFIG": str(team),
        "CAPGUARD_LEDGER": str(mine),
        "CAPGUARD_USER": "someone@else",
        "PYTHONPATH": str(WRAPPERS.parent),
        "FAKE_REPLIES": "40",
        "FAKE_COST": "0.10",
        "FAKE_INTERVAL": "0.05",
    }
    try:
        done = subprocess.run(
            [str(WRAPPERS / "capguard-team"), "--ledger", str(mine), "--usd", "5", "aider"],
            cwd=runner.repo,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            stdin=subprocess.DEVNULL,
        )
    finally:
        runner.cleanup()
    assert done.returncode == 117, done.stderr  # the team's $0.30 a month, not the user file's $1000
    notices = [line for line in done.stderr.splitlines() if line.startswith("capguard: ignored")]
    assert any("ledger, team.monthly_usd" in line and "locked by the team config" in line for line in notices)
    assert any(line.startswith(f"capguard: ignored --ledger {mine}: ledger locked") for line in notices), notices
    assert CAPGUARD_CODE not in done.stderr  # no traceback of capguard's (the stand-in agent dies of its SIGINT)
    assert not mine.exists()
    [run] = ledger_runs(team_ledger)
    assert run["stop_reason"] == "monthly" and 0.30 <= run["cost_micro_usd"] / 1e6 <= 0.40 + 1e-9
    assert not runner.survivors()


def test_the_agent_gets_no_ledger_secrets(tmp_path):
    dump = tmp_path / "env.json"
    agent = tmp_path / "dump-env"
    agent.write_text(f"#!{sys.executable}\nimport json, os\njson.dump(dict(os.environ), open({str(dump)!r}, 'w'))\n")
    agent.chmod(0o755)
    user_config(f'[agents.aider]\ncommand = "{agent}"\n')
    runner = Capguard(tmp_path, sys.executable, make_repo(tmp_path / "repo"))
    runner.env.update(
        PGPASSWORD="hunter2",
        PGPASSFILE=str(tmp_path / "pgpass"),
        OPENAI_API_KEY="sk-agents-own",
        CAPGUARD_TEAM_LEDGER="postgresql://capguard:hunter2@db.example/capguard",
    )
    result = runner.run(["--usd", "1"], [])
    assert result.rc == 0, result.stderr
    seen = json.loads(dump.read_text())
    assert not {"PGPASSWORD", "PGPASSFILE", "CAPGUARD_TEAM_LEDGER"} & set(seen)
    assert "hunter2" not in json.dumps(seen)
    assert seen["OPENAI_API_KEY"] == "sk-agents-own" and seen["CAPGUARD_TEST_TAG"] == runner.tag
    assert seen["HOME"] == runner.env["HOME"] and seen["PATH"] == runner.env["PATH"]


def test_a_command_without_an_interpreter_line_is_exit_126_in_one_line(tmp_path):
    agent = tmp_path / "no-shebang"
    agent.write_text("echo this is not a program\n")
    agent.chmod(0o755)
    user_config(f'[agents.aider]\ncommand = "{agent}"\n')
    runner = Capguard(tmp_path, sys.executable, make_repo(tmp_path / "repo"))
    result = runner.run(["--usd", "1"], ["--no-stream"])  # no start note about aider's streamed estimates
    assert result.rc == 126
    assert (
        result.stderr == f"capguard: error: {agent}: cannot run: not a program this system can run "
        "(a script needs a #! line)\n"
    )
    [run] = ledger_runs(Path(os.environ["CAPGUARD_HOME"]) / "ledger.db")
    assert run["status"] == "not started" and run["exit_code"] == 126
