"""Interactive aider under capguard in a real pseudo-terminal: typing, Ctrl-C, and a cap that fires.

The pty is capguard's controlling terminal, as when a developer types `capguard aider` at a prompt.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import select
import subprocess
import termios
import time

import pytest

from capguard.demo.fake_openai import FakeOpenAI, chat_script, runaway_script
from tests.integration.conftest import aider_flags, wait_for

pytestmark = [pytest.mark.agent, pytest.mark.pty]
ANSI = re.compile(rb"\x1b\[[0-9;?]*[ -/]*[@-~]|\x1b\][^\x07]*\x07|\r")
CURSOR_FORWARD = re.compile(rb"\x1b\[(\d*)C")  # Ink draws runs of spaces as cursor moves


class Terminal:
    """A pty whose slave is the controlling terminal of the process started on it."""

    def __init__(self, argv: list[str], cwd, env):
        self.master, self.slave = os.openpty()
        # A developer's terminal, not CI's: with CI set, Ink (Claude Code's UI) draws only the last frame, at exit
        env = {k: v for k, v in env.items() if k not in ("CI", "CONTINUOUS_INTEGRATION") and not k.startswith("CI_")}
        fcntl.ioctl(self.slave, termios.TIOCSWINSZ, b"\x00\x28\x00\x78\x00\x00\x00\x00")  # 40 x 120
        self.proc = subprocess.Popen(
            argv,
            cwd=cwd,
            env={**env, "TERM": "xterm"},
            stdin=self.slave,
            stdout=self.slave,
            stderr=self.slave,
            start_new_session=True,
            preexec_fn=lambda: fcntl.ioctl(0, termios.TIOCSCTTY, 0),
        )
        self.output = b""

    def pump(self, seconds: float = 0.1) -> None:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            ready, _, _ = select.select([self.master], [], [], max(0.0, end - time.monotonic()))
            if not ready:
                continue
            try:
                self.output += os.read(self.master, 65536)
            except OSError:
                return

    def text(self) -> str:
        spaced = CURSOR_FORWARD.sub(lambda m: b" " * int(m.group(1) or 1), self.output)
        return ANSI.sub(b"", spaced).decode("utf-8", "replace")

    def expect(self, pattern: str, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.pump(0.1)
            if re.search(pattern, self.text()):
                return
        raise AssertionError(f"{pattern!r} never appeared; screen ends with:\n{self.text()[-1500:]}")

    def type(self, data: bytes) -> None:
        os.write(self.master, data)

    def wait(self, timeout: float = 60) -> int:
        deadline = time.monotonic() + timeout
        while self.proc.poll() is None and time.monotonic() < deadline:
            self.pump(0.1)
        self.pump(0.3)
        assert self.proc.poll() is not None, f"still running; screen ends with:\n{self.text()[-1500:]}"
        return self.proc.returncode

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        os.close(self.master)
        os.close(self.slave)


@pytest.fixture
def terminal(capguard):
    opened = []

    def start(caps, agent_args):
        term = Terminal(capguard.argv(caps, agent_args), capguard.repo, capguard.env)
        opened.append(term)
        return term

    yield start
    for term in opened:
        term.close()


def test_typed_input_reaches_aider_and_a_cap_stops_the_session(capguard, terminal):
    with FakeOpenAI(runaway_script(delay_s=0.2)) as server:
        term = terminal(["--usd", "0.40"], [*aider_flags(server.base_url), "--fancy-input", "hello.py"])
        saved = termios.tcgetattr(term.slave)
        term.expect(r"hello\.py\s*\n\s*>")  # aider's prompt, with the file in the chat
        term.pump(1.0)  # prompt_toolkit settles (it asks the terminal for the cursor position)
        term.type(b"Please fix the greeting\r")
        rc = term.wait(90)
        first = server.requests[0]["body"]["messages"]
    assert rc == 122, term.text()[-2000:]
    assert any("Please fix the greeting" in json.dumps(m) for m in first)
    assert "capguard: stopped aider: cost $0.44 reached the $0.40 cap" in term.text()
    report = json.loads(capguard.report_path.read_text())
    assert report["stop_reason"] == "usd" and report["at_stop"]["steps"] == 3
    # the terminal is given back as capguard found it (echo and line editing on)
    restored = termios.tcgetattr(term.slave)
    assert restored[3] & termios.ECHO and restored[3] & termios.ICANON
    assert restored[3] == saved[3]
    assert not capguard.survivors()


def test_ctrl_c_reaches_aider_and_capguard_keeps_supervising(capguard, terminal):
    # plain input (cooked mode): the terminal turns Ctrl-C into SIGINT for the whole foreground group. Each reply
    # takes 3 s, so the stop at the second reply's start lands before that reply ends, however loaded the machine
    # (with instant replies the second was sometimes written, and counted, before capguard's stop reached aider)
    with FakeOpenAI(chat_script(delay_s=3.0)) as server:
        term = terminal(["--steps", "1"], [*aider_flags(server.base_url), "--no-fancy-input"])
        term.expect(r">\s*$")
        term.type(b"\x03")
        term.expect(r"\^C again to exit")  # aider's answer to one Ctrl-C
        assert term.proc.poll() is None, "capguard died of Ctrl-C"
        term.type(b"Just tell me something\r")
        wait_for(lambda: server.count("main") >= 1, 60, "the typed message to reach the model")
        term.type(b"And again\r")  # the second reply is over the 1-step cap
        rc = term.wait(90)
    assert rc == 120, term.text()[-2000:]
    report = json.loads(capguard.report_path.read_text())
    assert report["stop_reason"] == "steps" and report["steps"] == 1
    assert report["signal_received"] is None  # capguard noted Ctrl-C and left it to aider
    assert not capguard.survivors()


def test_double_ctrl_c_ends_aider_and_capguard_passes_its_status(capguard, terminal):
    with FakeOpenAI(chat_script()) as server:
        term = terminal([], [*aider_flags(server.base_url), "--no-fancy-input"])
        term.expect(r">\s*$")
        term.type(b"\x03")
        term.expect(r"\^C again to exit")
        term.type(b"\x03")
        rc = term.wait(30)
    assert rc == 0  # aider exits 0 on a double Ctrl-C; capguard passes it through
    assert "capguard: stopped" not in term.text()
    assert not capguard.survivors()
