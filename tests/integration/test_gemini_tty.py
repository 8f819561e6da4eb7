"""The interactive Gemini CLI (its TUI) under capguard in a real terminal, stopped at a cap.

The terminal is tmux's: Gemini's TUI queries the terminal (kitty keyboard, colours, focus) and, on a bare
pseudo-terminal that answers nothing, never takes the keys typed. capguard runs inside the tmux pane exactly as a
user runs it; the keys are typed with `send-keys`.
"""

from __future__ import annotations

import json
import shlex
import shutil
import subprocess
import time

import pytest

from tests.fakes.fake_gemini import MAIN, FakeGemini
from tests.integration.conftest import Result, wait_for
from tests.integration.test_gemini_caps import (  # noqa: F401  (fixture)
    MODEL,
    Gemini,
    assert_ledger_is_the_fakes_log,
    gemini_bin,
    runaway,
)

pytestmark = [pytest.mark.agent, pytest.mark.pty]


class Tmux:
    """A tmux server of its own (its own socket), one session running `argv` in a 120 x 40 window."""

    def __init__(self, name: str, argv: list[str], cwd, env, rc_file):
        self.tmux = shutil.which("tmux")
        if self.tmux is None:
            pytest.skip("tmux is not installed (apt-get install tmux)")
        self.base = [self.tmux, "-L", name, "-f", "/dev/null"]
        self.env = {k: v for k, v in env.items() if k != "TMUX"}
        command = f"{shlex.join(argv)}; echo $? > {shlex.quote(str(rc_file))}; sleep 600"
        subprocess.run(
            [*self.base, "new-session", "-d", "-s", "main", "-x", "120", "-y", "40", "-c", str(cwd), command],
            env={**self.env, "TERM": "xterm-256color"},
            check=True,
        )

    def screen(self) -> str:
        done = subprocess.run(
            [*self.base, "capture-pane", "-p", "-J", "-S", "-300", "-t", "main"], capture_output=True, text=True
        )
        return done.stdout

    def keys(self, text: str) -> None:
        subprocess.run([*self.base, "send-keys", "-t", "main", "-l", text], check=True)

    def enter(self) -> None:
        subprocess.run([*self.base, "send-keys", "-t", "main", "Enter"], check=True)

    def close(self) -> None:
        subprocess.run([*self.base, "kill-server"], capture_output=True)


def test_the_tui_is_stopped_at_the_usd_cap_and_its_tools_with_it(tmp_path, gemini_bin, repo):
    runner = Gemini(tmp_path, gemini_bin, repo)
    rc_file = tmp_path / "rc"
    with FakeGemini(runaway(runner.tag)) as server:
        runner.use(server)
        term = Tmux(
            runner.tag[:12],
            runner.argv(["--usd", "0.006", "--grace", "20"], ["-y", "-m", MODEL]),
            runner.repo,
            runner.env,
            rc_file,
        )
        try:
            wait_for(lambda: "Type your message" in term.screen(), 90, "Gemini's prompt")
            # keys typed while the TUI is still starting are lost: type until the prompt shows them
            wait_for(
                lambda: term.keys("loop until told") or "loop until told" in term.screen(),
                60,
                "the typed prompt",
                interval=3,
            )
            wait_for(lambda: term.enter() or server.requests, 60, "the first request", interval=3)
            wait_for(rc_file.exists, 150, "capguard to end")
            time.sleep(0.3)
            screen = term.screen()
            kinds = {r["kind"] for r in server.requests}
            billed = len(server.billed(MAIN))
        finally:
            term.close()
            left = runner.survivors()
            runner.cleanup()
    rc = int(rc_file.read_text())
    report = json.loads(runner.report_path.read_text())
    assert rc == 122, screen[-2500:]
    assert report["stop_reason"] == "usd" and report["at_stop"]["cost_usd"] >= 0.006
    assert report["at_stop"]["cost_usd"] - report["largest_reply_usd"] < 0.006
    assert "capguard: stopped gemini: cost $0.0" in screen and "reached the $0.0060 cap" in screen
    assert report["stop_steps"][0].startswith("sending SIGTERM to gemini") and report["agent_returncode"] == 0
    assert billed >= 2 and kinds == {MAIN}  # a tool call ran (its result went back): its background sleep started
    assert_ledger_is_the_fakes_log(Result(rc, "", "", report), server)
    assert not left, [(p.pid, p.cmdline()) for p in left]
