"""Live status without touching the agent's screen: a status file per run and the terminal title.

`capguard status` reads the files; the title uses xterm's push/pop so the user's own title returns.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

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


class _Title:
    """The terminal title, only while capguard owns the foreground of a terminal."""

    def __init__(self, enabled: bool, stream=None):
        self._stream = stream or sys.stderr
        self._fd = self._stream.fileno() if enabled and self._stream.isatty() else None
        self._last: str | None = None
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

    def set(self, text: str) -> None:
        if text != self._last:
            self._last = text
            self._write(f"\033]2;{text}\007")

    def restore(self) -> None:
        if self._fd is not None and self._last is not None:
            self._write("\033[23;0t")  # pop: the user's title comes back


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
        self._title.set(f"{self._base.get('agent', 'agent')} · {text}" + (" ⚠" if warnings else ""))

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
