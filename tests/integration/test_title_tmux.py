"""The live title inside a real tmux: it keeps moving while the agent idles, names the window where tmux lets a pane
do so, and the pane's title and the window's name are tmux's own again once capguard is done."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from tests.integration.conftest import make_repo, trusted_config

pytestmark = pytest.mark.skipif(
    shutil.which("tmux") is None and not os.environ.get("CAPGUARD_REQUIRE_AGENTS"),
    reason="tmux is not installed (apt-get install tmux)",
)


class Tmux:
    def __init__(self, tmp_path: Path, conf: str):
        self.socket = f"capguard-test-{uuid.uuid4().hex[:12]}"
        self.conf = tmp_path / "tmux.conf"
        self.conf.write_text(conf)

    def __call__(self, *args: str, env: dict | None = None) -> str:
        done = subprocess.run(
            ["tmux", "-L", self.socket, "-f", str(self.conf), *args],
            capture_output=True,
            text=True,
            timeout=10,
            env=env,
        )
        assert done.returncode == 0, done.stderr
        return done.stdout.rstrip("\n")

    def show(self, fields: str) -> str:
        return self("display-message", "-p", "-t", "t", fields)

    def kill(self) -> None:
        subprocess.run(["tmux", "-L", self.socket, "kill-server"], capture_output=True, timeout=10)


def start(tmp_path: Path, conf: str) -> tuple[Tmux, Path]:
    """capguard running an agent that idles 4 s (it writes nothing to meter), in a tmux pane whose title was
    "before"; the pane lives on after capguard exits, and `done` then holds capguard's exit status."""
    agent = tmp_path / "fake-aider"
    agent.write_text(f"#!{sys.executable}\nimport time\ntime.sleep(4)\n")
    agent.chmod(0o755)
    repo = make_repo(tmp_path / "repo")
    trusted_config(repo / ".capguard.toml", f'[agents.aider]\ncommand = "{agent}"\n')
    done = tmp_path / "done"
    script = (
        "printf '\\033]2;before\\007'; sleep 0.3; "
        f"{sys.executable} -m capguard --wall 10m aider; echo $? > {done}; sleep 60"
    )
    tmux = Tmux(tmp_path, conf)
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    env.pop("TMUX", None)  # a tmux of its own, even when the tests run inside one
    tmux("new-session", "-d", "-s", "t", "-x", "150", "-y", "30", "-c", str(repo), "sh", "-c", script, env=env)
    return tmux, done


def watch(tmux: Tmux, done: Path, timeout: float = 30) -> list[tuple[str, str]]:
    """(pane title, window name) as they change, until capguard has exited."""
    seen: list[tuple[str, str]] = []
    deadline = time.monotonic() + timeout
    while not done.exists():
        assert time.monotonic() < deadline, f"capguard did not finish; seen {seen}"
        now = tuple(tmux.show("#{pane_title}\t#{window_name}").split("\t"))
        if not seen or seen[-1] != now:
            seen.append(now)  # type: ignore[arg-type]
        time.sleep(0.1)
    return seen


def test_the_title_moves_while_the_agent_idles_and_tmux_gets_its_own_back(tmp_path):
    tmux, done = start(tmp_path, "set -g allow-rename on\n")
    try:
        seen = watch(tmux, done)
        titles = [title for title, _ in seen if title.startswith("aider · ")]
        # the agent wrote nothing for 4 s, yet the elapsed time in the title went on: 1.0s, 2.0s, ...
        assert len(set(titles)) >= 3, seen
        assert all(title.startswith("aider · $0.00 · 0 tok · 0 replies · ") for title in titles)
        assert titles[-1].endswith("/10m00s")  # the wall cap's
        assert "aider $0.00" in {window for _, window in seen}, seen  # allow-rename: the window is named too
        assert done.read_text().strip() == "0", tmux("capture-pane", "-p", "-t", "t")
        time.sleep(0.3)
        title, window, auto = tmux.show("#{pane_title}\t#{window_name}\t#{automatic-rename}").split("\t")
        assert title == "before"  # the pane's own title again
        assert auto == "1" and window != "aider $0.00"  # tmux names the window again (after the command running)
    finally:
        tmux.kill()


def test_without_allow_rename_the_window_is_left_alone(tmp_path):
    tmux, done = start(tmp_path, "")  # tmux's default: a pane may not rename its window
    try:
        seen = watch(tmux, done)
        assert any(title.startswith("aider · $0.00") for title, _ in seen), seen
        assert not any(window.startswith("aider ") for _, window in seen), seen
        time.sleep(0.3)
        assert tmux.show("#{pane_title}\t#{automatic-rename}") == "before\t1"
    finally:
        tmux.kill()
