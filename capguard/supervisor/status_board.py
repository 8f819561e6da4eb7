"""Live status without touching the agent's screen: a status file per run and the terminal title.

`capguard status` reads the files; the title uses xterm's push/pop so the user's own title returns.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import NamedTuple

from capguard.core.caps import Caps
from capguard.core.meter import Meter
from capguard.core.units import format_duration, format_tokens, format_usd
from capguard.private_files import write_private
from capguard.supervisor.compat import start_ticks


def summary(meter: Meter, caps: Caps, elapsed_s: float) -> str:
    """`$1.23/$5.00 · 812k tok · 12 replies · 4m10s/30m00s` (caps shown where set)."""
    parts = [format_usd(meter.cost_micro) + (f"/{format_usd(caps.usd_micro)}" if caps.usd_micro else "")]
    parts.append(format_tokens(meter.tokens) + (f"/{format_tokens(caps.tokens)}" if caps.tokens else "") + " tok")
    parts.append(f"{meter.steps}" + (f"/{caps.steps}" if caps.steps else "") + " replies")
    parts.append(format_duration(elapsed_s) + (f"/{format_duration(caps.wall_s)}" if caps.wall_s else ""))
    return " · ".join(parts)


def _write_atomic(path: Path, data: dict) -> None:
    write_private(path, json.dumps(data, indent=1).encode())


_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


class TmuxPane(NamedTuple):
    """What capguard changes in a tmux pane, as it was before: put back at the end of the run."""

    title: str
    allow_rename: bool  # whether the pane may name its window (`\033k...\033\\`); off by default
    automatic_rename: bool
    window_name: str

    @classmethod
    def read(cls, env: Mapping[str, str]) -> TmuxPane | None:
        """The pane's title and window name from tmux itself (one `tmux display-message`), or None."""
        pane = env.get("TMUX_PANE")
        fields = "#{pane_title}\t#{allow-rename}\t#{automatic-rename}\t#{window_name}"
        try:
            done = subprocess.run(
                ["tmux", "display-message", "-p", *(["-t", pane] if pane else []), fields],
                capture_output=True,
                text=True,
                timeout=2,
                stdin=subprocess.DEVNULL,
            )
        except (OSError, subprocess.SubprocessError):
            return None
        parts = done.stdout.rstrip("\n").split("\t")
        if done.returncode != 0 or len(parts) != 4:
            return None
        title, allow, auto, window = parts
        return cls(_CONTROL.sub("", title), allow in ("1", "on"), auto in ("1", "on"), _CONTROL.sub("", window))


class _Title:
    """The terminal title, only while capguard owns the foreground of a terminal.

    xterm's title stack (push at start, pop at the end) gives the user's title back; inside tmux the pane's title
    and, where tmux lets a pane rename its window (allow-rename), the window's name are also set back explicitly,
    from what tmux said they were (a tmux without the title stack would keep capguard's last title)."""

    def __init__(self, enabled: bool, stream=None, env: Mapping[str, str] | None = None, tmux=TmuxPane.read):
        env = os.environ if env is None else env
        self._stream = stream or sys.stderr
        self._fd = self._stream.fileno() if enabled and self._stream.isatty() else None
        self._last: str | None = None
        self._tmux: TmuxPane | None = tmux(env) if self._fd is not None and env.get("TMUX") else None
        if self._fd is not None:
            self._write("\033[22;0t")  # push the user's title

    def _foreground(self) -> bool:
        try:
            return self._fd is not None and os.tcgetpgrp(self._fd) == os.getpgrp()
        except OSError:
            return False

    def _write(self, text: str) -> None:
        if self._fd is not None and self._foreground():
            try:
                os.write(self._fd, text.encode())  # one write: never split an escape sequence
            except OSError:
                pass

    def set(self, text: str, short: str | None = None) -> None:
        """`text` as the title; inside tmux, `short` (else `text`) also names the window where tmux allows it."""
        if text == self._last:
            return
        self._last = text
        escapes = f"\033]2;{text}\007"
        if self._tmux is not None and self._tmux.allow_rename:
            escapes += f"\033k{short or text}\033\\"
        self._write(escapes)

    def restore(self) -> None:
        if self._fd is None or self._last is None:
            return
        escapes = "\033[23;0t"  # pop: the user's title comes back
        if self._tmux is not None:
            escapes += f"\033]2;{self._tmux.title}\007"
            if self._tmux.allow_rename:  # an empty name gives the window back to tmux's automatic naming
                escapes += "\033k\033\\" if self._tmux.automatic_rename else f"\033k{self._tmux.window_name}\033\\"
        self._write(escapes)
        self._fd = None  # the title is the user's again: the run's last status update (state "ended") leaves it


class StatusBoard:
    """Writes `status.json` in the run directory (atomically) and the title, at most every `every` s."""

    def __init__(self, path: Path, base: dict, *, title: bool, every: float = 1.0, clock=time.monotonic):
        self.path = path
        self._base = dict(base)
        self._title = _Title(title)
        self._every = every
        self._clock = clock
        self._last_write = -every

    def update(
        self, meter: Meter, caps: Caps, elapsed_s: float, *, state: str = "running", warnings=(), force: bool = False
    ) -> None:
        now = self._clock()
        if not force and now - self._last_write < self._every:
            return
        self._last_write = now
        text = summary(meter, caps, elapsed_s)
        data = {
            **self._base,
            "state": state,
            "summary": text,
            "cost_usd": meter.cost_micro / 1_000_000,
            "tokens": meter.tokens,
            "steps": meter.steps,
            "elapsed_s": round(elapsed_s, 3),
            "warnings": list(warnings),
            "updated_at": time.time(),
        }
        try:
            _write_atomic(self.path, data)
        except OSError:
            pass  # status is a convenience; metering and the ledger go on
        agent, mark = self._base.get("agent", "agent"), " ⚠" if warnings else ""
        spent = format_usd(meter.cost_micro) + (f"/{format_usd(caps.usd_micro)}" if caps.usd_micro else "")
        self._title.set(f"{agent} · {text}{mark}", f"{agent} {spent}{mark}")

    def close(self) -> None:
        self._title.restore()


def live_runs(runs_dir: Path) -> list[dict]:
    """Status of every run whose capguard process is still alive, oldest first."""
    found = []
    for path in sorted(runs_dir.glob("*/status.json")):
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if data.get("state") == "ended" or not _alive(data.get("pid"), data.get("pid_ticks")):
            continue
        found.append(data)
    return found


def _alive(pid, ticks) -> bool:
    """The run's capguard still runs: its pid exists and started when the run's capguard did."""
    try:
        now = start_ticks(int(pid))
    except (TypeError, ValueError):
        return False
    return now is not None and (ticks is None or now == ticks)
