"""wrappers/: the team wrapper points capguard at the team's config and ledger; the aliases route the agents."""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

WRAPPERS = Path(__file__).resolve().parents[2] / "wrappers"


@pytest.fixture
def bin_dir(tmp_path):
    """A PATH folder with `capguard` running this checkout's capguard."""
    folder = tmp_path / "bin"
    folder.mkdir()
    shim = folder / "capguard"
    shim.write_text(f'#!/bin/sh\nexec {sys.executable} -m capguard "$@"\n')
    shim.chmod(0o755)
    return folder


def env_with(bin_dir: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CAPGUARD_") or k == "CAPGUARD_HOME"}
    env["PATH"] = f"{bin_dir}{os.pathsep}/usr/bin{os.pathsep}/bin"
    env["PYTHONPATH"] = str(WRAPPERS.parent)
    return {**env, **extra}


def test_team_wrapper_runs_capguard_with_the_team_config_and_its_ledger(tmp_path, bin_dir):
    team = tmp_path / "team.toml"
    ledger = tmp_path / "team-ledger.db"
    team.write_text(f'ledger = "{ledger}"\n[team]\nmonthly_usd = 200\n')
    env = env_with(bin_dir, CAPGUARD_TEAM_CONFIG=str(team), CAPGUARD_LEDGER=str(tmp_path / "mine.db"))
    done = subprocess.run(
        [str(WRAPPERS / "capguard-team"), "config", "--json"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    config = json.loads(done.stdout)
    assert config["files"] == [str(team)]
    # not the developer's own, and locked: nobody above the team file may change it
    assert config["values"]["ledger"] == {"value": str(ledger), "origin": str(team), "locked": True}
    assert config["team"]["monthly_usd"] == 200


def test_team_wrapper_can_name_the_ledger_itself(tmp_path, bin_dir):
    team = tmp_path / "team.toml"
    team.write_text("[team]\nmonthly_usd = 200\n")
    env = env_with(bin_dir, CAPGUARD_TEAM_CONFIG=str(team), CAPGUARD_TEAM_LEDGER="postgresql://db.example/capguard")
    done = subprocess.run(
        [str(WRAPPERS / "capguard-team"), "config", "--json"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert json.loads(done.stdout)["values"]["ledger"]["value"] == "postgresql://db.example/capguard"


def test_team_wrapper_without_its_config_says_so(tmp_path, bin_dir):
    env = env_with(bin_dir, CAPGUARD_TEAM_CONFIG=str(tmp_path / "missing.toml"))
    done = subprocess.run([str(WRAPPERS / "capguard-team"), "status"], env=env, capture_output=True, text=True)
    assert done.returncode == 2
    assert done.stderr == (
        f"capguard-team: error: team config {tmp_path / 'missing.toml'} not found;"
        " set CAPGUARD_TEAM_CONFIG to your team's config file\n"
    )


@pytest.fixture
def echo_dir(tmp_path):
    """A PATH folder whose `capguard` (and optionally `capguard-team`) print how they were called."""
    folder = tmp_path / "echo"
    folder.mkdir()
    for name in ("capguard", "capguard-team"):
        script = folder / name
        script.write_text(f'#!/bin/sh\necho "{name} $*"\n')
        script.chmod(0o755)
    return folder


SHELLS = {
    "bash": lambda snippet: ["bash", "-c", f"shopt -s expand_aliases\n. {snippet}\naider --model x\nclaude -p hi\n"],
    # zsh parses a whole -c string before running it: the aliases apply to what is parsed after the snippet ran
    "zsh": lambda snippet: ["zsh", "-f", "-c", f". {snippet}\neval 'aider --model x'\neval 'claude -p hi'\n"],
    "fish": lambda snippet: ["fish", "--no-config", "-c", f"source {snippet}; aider --model x; claude -p hi"],
}


@pytest.mark.parametrize("shell", SHELLS)
@pytest.mark.parametrize("team", [False, True])
def test_aliases_route_aider_and_claude_through_capguard(shell, team, echo_dir):
    if not shutil.which(shell):
        pytest.skip(f"{shell} is not installed")
    if not team:
        (echo_dir / "capguard-team").unlink()
    env = {"PATH": f"{echo_dir}{os.pathsep}/usr/bin{os.pathsep}/bin", "HOME": str(echo_dir)}
    done = subprocess.run(
        SHELLS[shell](WRAPPERS / f"aliases.{shell}"), env=env, capture_output=True, text=True, timeout=60
    )
    command = "capguard-team" if team else "capguard"
    assert done.stdout.splitlines() == [f"{command} aider --model x", f"{command} claude -p hi"], done.stderr


@pytest.mark.parametrize("line", [None, "infra"])
def test_a_team_refusal_names_capguard_team_ack_which_then_lifts_the_spent_month(tmp_path, bin_dir, line):
    from tests.integration.test_monthly import seed

    user = "dev@example.com"
    team, ledger, agent = tmp_path / "team.toml", tmp_path / "team.db", tmp_path / "agent"
    agent.write_text("#!/bin/sh\necho agent-ran\n")
    agent.chmod(0o755)
    caps = f"[team.lines.{line}]\nmonthly_usd = 0.5\n" if line else f'[team.users."{user}"]\nmonthly_usd = 0.5\n'
    on_line = f'line = "{line}"\n' if line else ""  # the team file sets (and locks) the budget line
    team.write_text(
        f'ledger = "{ledger}"\nuser = "{user}"\n{on_line}[agents.aider]\ncommand = "{agent}"\n[team]\n{caps}'
    )
    seed(str(ledger), 1.0, user=user, line=line)
    env = env_with(bin_dir, CAPGUARD_TEAM_CONFIG=str(team))

    def team_run(*args: str) -> subprocess.CompletedProcess:
        argv = [str(WRAPPERS / "capguard-team"), *args]
        return subprocess.run(argv, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=60)

    refused = team_run("aider")
    assert refused.returncode == 117, refused.stderr
    hint = "capguard-team ack" + (f" --line {line}" if line else "") + ' --reason "..."'
    assert refused.stderr.rstrip().endswith(f"To go on this month: {hint}")
    assert "agent-ran" not in refused.stdout

    typed = shlex.split(hint.replace('"..."', '"release day"'))
    acked = team_run(*typed[1:])  # the hint, as a user would type it
    assert acked.returncode == 0, acked.stderr
    assert "acknowledged for" in acked.stdout and str(ledger) in acked.stdout

    started = team_run("--no-title", "aider")
    assert started.returncode == 0, started.stderr
    assert "agent-ran" in started.stdout


def test_a_refusal_outside_the_team_wrapper_names_capguard_ack(tmp_path, bin_dir):
    from tests.integration.test_monthly import seed

    config, ledger = tmp_path / "config.toml", tmp_path / "mine.db"
    config.write_text(
        f'ledger = "{ledger}"\nuser = "me@example.com"\n[agents.aider]\ncommand = "/bin/true"\n'
        "[team]\nmonthly_usd = 0.5\n"
    )
    seed(str(ledger), 1.0, user="me@example.com")
    env = env_with(bin_dir, CAPGUARD_CONFIG=str(config))
    done = subprocess.run(
        [str(bin_dir / "capguard"), "aider"], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 117
    assert done.stderr.rstrip().endswith('To go on this month: capguard ack --reason "..."')
