"""The interactive Codex TUI under capguard in a real pseudo-terminal (tmux's: the TUI waits for a terminal that
answers its queries, which a bare pty does not). By default the TUI runs its turns in a background daemon that
outlives it and keeps spending; capguard runs it with --no-daemon, so after a stop no request reaches the model
server any more and no Codex process is left."""

from __future__ import annotations

import json
import shlex
import shutil
import subprocess
import time
from pathlib import Path

import psutil
import pytest

from tests.fakes.fake_responses import FakeResponses
from tests.integration.conftest import trusted_config
from tests.integration.test_codex_caps import Codex, codex_bin, runaway  # noqa: F401  (fixture)

pytestmark = [pytest.mark.agent, pytest.mark.pty]
QUIET_S = 6.0


class Tmux:
    """capguard on a tmux pane of a tmux server of its own (started with the runner's environment)."""

    def __init__(self, argv: list[str], cwd: Path, env: dict[str, str], tag: str):
        self.socket = ["tmux", "-L", f"capguard-{tag}", "-f", "/dev/null"]
        self.rc_file = cwd.parent / f"tmux-{tag}.rc"
        command = f"{shlex.join(argv)}; echo $? > {shlex.quote(str(self.rc_file))}"
        subprocess.run(
            [*self.socket, "new-session", "-d", "-x", "120", "-y", "40", "-c", str(cwd), command],
            env={**env, "TERM": "xterm-256color"},
            check=True,
        )

    def screen(self) -> str:
        done = subprocess.run([*self.socket, "capture-pane", "-p"], capture_output=True, text=True)
        return done.stdout

    def wait(self, timeout: float) -> int:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.rc_file.exists() and self.rc_file.read_text().strip():
                return int(self.rc_file.read_text())
            time.sleep(0.2)
        raise AssertionError(f"capguard still running; screen:\n{self.screen()}")

    def close(self) -> None:
        subprocess.run([*self.socket, "kill-server"], capture_output=True)


@pytest.fixture
def session(tmp_path, codex_bin, repo):
    opened = []

    def start(server, caps, args, command=None):
        runner = Codex(tmp_path, codex_bin, repo, server.base_url)
        if command:
            trusted_config(repo / ".capguard.toml", f'[agents.codex]\ncommand = "{command}"\n')
        if shutil.which("tmux") is None:
            pytest.skip("tmux is not installed")
        term = Tmux(runner.argv(caps, args), runner.repo, runner.env, runner.tag)
        opened.append((runner, term))
        return runner, term

    yield start
    for runner, term in opened:
        term.close()
        runner.cleanup()


def codex_processes(codex_home) -> list[psutil.Process]:
    """Codex processes of this test's CODEX_HOME (a daemon is in a session of its own, so look by its binary)."""
    found = []
    for proc in psutil.process_iter():
        try:
            if proc.status() != psutil.STATUS_ZOMBIE and str(codex_home) in " ".join(proc.cmdline()):
                found.append(proc)
        except psutil.Error:
            continue
    return found


def test_tui_stopped_at_the_usd_cap_leaves_no_daemon_spending(session):
    with FakeResponses(runaway(0.2)) as server:
        runner, term = session(
            server, ["--usd", "0.03"], ["--dangerously-bypass-approvals-and-sandbox", "loop over the files forever"]
        )
        rc = term.wait(120)
        screen = term.screen()
        term.close()  # the tmux server carries the test's tag too
        requests_at_exit = len(server.requests)
        time.sleep(QUIET_S)  # a daemon left behind would go on sending the turn's requests
        requests_later = len(server.requests)
    assert rc == 122, screen
    report = json.loads(runner.report_path.read_text())
    assert report["stop_reason"] == "usd" and "--no-daemon" in report["argv"]
    assert report["at_stop"]["cost_usd"] - report["largest_reply_usd"] < 0.03 <= report["at_stop"]["cost_usd"]
    assert requests_at_exit > 3 and requests_later == requests_at_exit, "requests went on after the stop"
    assert all(r["user_agent"].startswith("codex-tui") for r in server.requests)
    # every billed main reply is in the report; the TUI's title request (if any) is the named blind spot
    main = server.billed("main")
    assert report["tokens"] == sum(r["usage"]["total_tokens"] for r in main)
    assert any("thread-title" in spot for spot in report["blind_spots"])
    assert not any("no process held them open" in note for note in report["notes"])  # the TUI holds its file
    assert not (runner.codex_home / "app-server-daemon" / "daemon.pid").exists()
    assert not codex_processes(runner.codex_home) and not runner.survivors()


def test_a_daemon_the_tui_starts_anyway_is_stopped_with_the_run(session, tmp_path, codex_bin):
    """As if Codex ignored --no-daemon (a wrapper drops it): the TUI starts its background daemon, which runs the
    turns in a session of its own and ignores SIGTERM. capguard stops it with the run all the same (SIGINT to a
    daemon of this run, then the tree stop): no request after the stop, no Codex process left."""
    wrapper = tmp_path / "codex-with-daemon"
    wrapper.write_text(
        '#!/bin/sh\nfor a; do shift; [ "$a" = --no-daemon ] || set -- "$@" "$a"; done\n'
        f'exec {shlex.quote(codex_bin)} "$@"\n'
    )
    wrapper.chmod(0o755)
    with FakeResponses(runaway(0.2)) as server:
        runner, term = session(
            server,
            ["--usd", "0.03"],
            ["--dangerously-bypass-approvals-and-sandbox", "loop over the files forever"],
            command=str(wrapper),
        )
        rc = term.wait(120)
        screen = term.screen()
        term.close()
        requests_at_exit = len(server.requests)
        time.sleep(QUIET_S)
        requests_later = len(server.requests)
    assert rc == 122, screen
    assert (runner.codex_home / "app-server-daemon" / "daemon.pid").exists()  # the daemon did start
    report = json.loads(runner.report_path.read_text())
    assert any(note.startswith("sent SIGINT to Codex's background daemon") for note in report["notes"]), report
    assert requests_at_exit > 3 and requests_later == requests_at_exit, "requests went on after the stop"
    assert not codex_processes(runner.codex_home) and not runner.survivors()
