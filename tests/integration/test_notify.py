"""Notifications (`notify = "bell" | "desktop"`, off by default) at a cap's warning and at the stop, from the real
capguard process: a fake notify-send on PATH records what it was asked to show; a bell is read from a pty. A
notify-send that is missing or fails never changes the run's outcome, and is said once."""

from __future__ import annotations

import json
import os
import pty
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.integration.conftest import make_repo, trusted_config


@pytest.fixture
def setup(tmp_path):
    """A repo whose aider is an agent that idles 20 s, and a folder with a notify-send that logs its argv."""
    agent = tmp_path / "fake-aider"
    agent.write_text(  # leaves on Ctrl-C (capguard's polite stop for aider) without a traceback
        f"#!{sys.executable}\nimport signal, sys, time\nsignal.signal(signal.SIGINT, lambda *a: sys.exit(130))\n"
        "time.sleep(20)\n"
    )
    agent.chmod(0o755)
    repo = make_repo(tmp_path / "repo")
    trusted_config(repo / ".capguard.toml", f'[agents.aider]\ncommand = "{agent}"\n')
    return repo, tmp_path / "bin", tmp_path / "notified.jsonl"


def notify_send(folder: Path, log: Path, *, exit_code: int = 0, error: str = "") -> None:
    folder.mkdir(exist_ok=True)
    script = folder / "notify-send"
    script.write_text(
        f"#!{sys.executable}\nimport json, sys\n"
        f"open({str(log)!r}, 'a').write(json.dumps(sys.argv[1:]) + '\\n')\n"
        f"sys.stderr.write({error!r})\nsys.exit({exit_code})\n"
    )
    script.chmod(0o755)


def capguard(repo: Path, path: str, *caps: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PATH": path}
    argv = [sys.executable, "-m", "capguard", "--wall", "2s", "--warn-at", "0.5", *caps, "aider"]
    return subprocess.run(argv, cwd=repo, env=env, capture_output=True, text=True, timeout=60)


def shown(log: Path) -> list[list[str]]:
    return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []


def test_desktop_notifications_at_the_warning_and_at_the_stop(setup):
    repo, folder, log = setup
    notify_send(folder, log)
    done = capguard(repo, f"{folder}:{os.environ['PATH']}", "--notify", "desktop")
    assert done.returncode == 124, done.stderr  # the wall cap, as without notifications
    calls = shown(log)
    assert [call[:3] for call in calls] == [
        ["--app-name=capguard", "--urgency=normal", "capguard: aider past 50% of its wall cap"],
        ["--app-name=capguard", "--urgency=critical", "capguard: stopping aider: the wall cap"],
    ]
    assert calls[1][3].startswith("$0.00 · 0 tok · 0 replies · 2.") and calls[1][3].endswith("/2.0s")
    assert "notify" not in done.stderr


def test_notify_from_the_config_file_and_off_by_default(setup, tmp_path):
    repo, folder, log = setup
    notify_send(folder, log)
    path = f"{folder}:{os.environ['PATH']}"
    assert capguard(repo, path).returncode == 124
    assert shown(log) == []  # off unless asked for
    config = tmp_path / "xdg-config" / "capguard" / "config.toml"
    config.parent.mkdir(parents=True, exist_ok=True)
    config.write_text('notify = "desktop"\n')
    assert capguard(repo, path).returncode == 124
    assert [call[2] for call in shown(log)] == [
        "capguard: aider past 50% of its wall cap",
        "capguard: stopping aider: the wall cap",
    ]


def test_a_failing_notify_send_is_said_once_and_changes_nothing(setup):
    repo, folder, log = setup
    notify_send(folder, log, exit_code=1, error="Could not connect: No such file or directory\n")
    done = capguard(repo, f"{folder}:{os.environ['PATH']}", "--notify", "desktop")
    assert done.returncode == 124 and "capguard: stopped aider: wall-clock" in done.stderr
    said = [line for line in done.stderr.splitlines() if "notify-send" in line]
    assert said == [
        "capguard: notify-send failed (exit 1: Could not connect: No such file or directory); "
        "notifications may be missing"
    ]
    assert len(shown(log)) == 1  # after the first failure capguard stopped asking
    assert "Traceback" not in done.stderr


def test_a_missing_notify_send_is_said_once_before_the_agent_starts(setup, tmp_path):
    repo, _, _ = setup
    empty = tmp_path / "empty-bin"
    empty.mkdir()
    done = capguard(repo, str(empty), "--notify", "desktop")
    assert done.returncode == 124, done.stderr
    lines = done.stderr.splitlines()
    assert lines[0] == 'capguard: notify = "desktop" but notify-send is not on PATH: no desktop notifications this run'
    assert sum("notify-send" in line for line in lines) == 1, done.stderr


def test_the_bell_rings_at_the_warning_and_at_the_stop(setup):
    repo, _, _ = setup
    argv = [sys.executable, "-m", "capguard", "--no-title", "--notify", "bell", "--wall", "2s", "--warn-at", "0.5"]
    pid, master = pty.fork()
    if pid == 0:  # the child: capguard on a terminal of its own, as a user runs it
        os.chdir(repo)
        os.execv(sys.executable, [*argv, "aider"])
    out = b""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            chunk = os.read(master, 4096)
        except OSError:  # EIO: the child is gone
            break
        if not chunk:
            break
        out += chunk
    _, status = os.waitpid(pid, 0)
    os.close(master)
    assert os.waitstatus_to_exitcode(status) == 124, out
    assert out.count(b"\a") == 2, out  # one BEL at the warning, one at the stop (and no title's escapes)
    assert out.index(b"\a") < out.index(b"capguard: stopped aider")
