"""Notifications where people look (`notify = "bell" | "desktop" | "off"`): at a cap's warning and at a stop.

The terminal bell draws nothing on the agent's screen; a desktop notification goes through `notify-send`. Neither
can fail a run: a missing or failing notify-send is said once, before the agent starts or after it ended.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Mapping
from typing import IO

from capguard.core.caps import Caps, Verdict
from capguard.core.meter import Meter
from capguard.core.sanitize import printable
from capguard.supervisor.status_board import summary

MODES = ("off", "bell", "desktop")
_WAIT_S = 2.0  # at the end, how long the last notify-send may take to report


class Notifier:
    """Rings or notifies; `popen`, `which` and the terminal are injected for tests."""

    def __init__(
        self,
        mode: str,
        *,
        env: Mapping[str, str] | None = None,
        terminal: IO[str] | None = None,
        which: Callable[..., str | None] = shutil.which,
        popen: Callable[..., subprocess.Popen] = subprocess.Popen,
    ):
        if mode not in MODES:
            raise ValueError(f"notify must be one of {', '.join(MODES)}")
        env = os.environ if env is None else env
        self.mode = mode
        self._popen = popen
        self._sent: list[subprocess.Popen] = []
        self._failed: str | None = None
        self._command = which("notify-send", path=env.get("PATH", os.defpath)) if mode == "desktop" else None
        stream = terminal or sys.stderr
        try:
            self._bell_fd = stream.fileno() if mode == "bell" and stream.isatty() else None
        except (OSError, ValueError):
            self._bell_fd = None

    def start_note(self) -> str | None:
        """The one line said before the agent starts when the notifications asked for cannot be given."""
        if self.mode == "desktop" and self._command is None:
            return 'capguard: notify = "desktop" but notify-send is not on PATH: no desktop notifications this run'
        if self.mode == "bell" and self._bell_fd is None:
            return 'capguard: notify = "bell" but stderr is not a terminal: no bell this run'
        return None

    def __call__(self, summary: str, body: str, *, urgent: bool = False) -> None:
        if self._bell_fd is not None:
            try:
                os.write(self._bell_fd, b"\a")  # BEL: the terminal rings or flashes; nothing is drawn
            except OSError:
                self._bell_fd = None
        elif self._command is not None and self._failed is None and not self._any_failed():
            urgency = "critical" if urgent else "normal"
            try:
                self._sent.append(
                    self._popen(
                        [self._command, "--app-name=capguard", f"--urgency={urgency}", summary, body],
                        stdin=subprocess.DEVNULL,
                        stdout=subprocess.DEVNULL,
                        stderr=subprocess.PIPE,
                        start_new_session=True,  # not in the terminal's group: a Ctrl-C meant for the agent misses it
                    )
                )
            except OSError as err:
                self._failed = f"capguard: notify-send could not run ({err.strerror or err}); no desktop notifications"

    def _any_failed(self) -> bool:
        """Whether a notification sent earlier has failed (then no more are tried: one failure said is enough)."""
        return any(proc.poll() is not None and proc.returncode != 0 for proc in self._sent)

    def close(self) -> str | None:
        """Wait briefly for the notifications sent; the one line to say if any failed, else None."""
        for proc in self._sent:
            try:
                _, err = proc.communicate(timeout=_WAIT_S)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.communicate()
                continue
            if proc.returncode != 0 and self._failed is None:
                why = (err or b"").decode("utf-8", "replace").strip().splitlines()
                detail = f": {printable(why[0][:120])}" if why else ""  # its words are a stranger's
                self._failed = (
                    f"capguard: notify-send failed (exit {proc.returncode}{detail}); notifications may be missing"
                )
        self._sent = []
        return self._failed


class RunAlerts:
    """From the supervisor's status updates to notifications: each cap's first warning, and the stop."""

    def __init__(self, notify: Notifier, agent: str, caps: Caps):
        self.notify, self.agent, self.caps = notify, agent, caps
        self._warned: set[str] = set()
        self._stopped = False

    def status(self, meter: Meter, elapsed_s: float, verdict: Verdict, state: str) -> None:
        if self.notify.mode == "off":
            return
        figures = summary(meter, self.caps, elapsed_s)
        for name in verdict.warnings:
            if name not in self._warned:
                self._warned.add(name)
                self.notify(f"capguard: {self.agent} past {self.caps.warn_at:.0%} of its {name} cap", figures)
        if state == "stopping" and verdict.reason and not self._stopped:
            self._stopped = True
            self.notify(f"capguard: stopping {self.agent}: the {verdict.reason} cap", figures, urgent=True)
