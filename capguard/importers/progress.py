"""Progress of a long import on stderr: nothing for the first second, then at most one update a second on a
terminal (rewriting one line) or one line every 10 seconds otherwise. Never on stdout, never a flood."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TextIO

from capguard.core.units import format_duration


def size(count: int) -> str:
    """Bytes as people read them: 1.0 GB, 21.3 MB, 14.1 kB."""
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if count >= scale:
            return f"{count / scale:.1f} {unit}"
    return f"{count} B"


class Progress:
    def __init__(
        self,
        stream: TextIO,
        *,
        enabled: bool = True,
        label: str = "import",
        clock: Callable[[], float] = time.monotonic,
        delay: float = 1.0,
    ) -> None:
        self._stream = stream
        self._enabled = enabled
        self._label = label
        self._clock = clock
        self._tty = bool(getattr(stream, "isatty", lambda: False)())
        self._every = 1.0 if self._tty else 10.0
        self._start = clock()
        self._next = self._start + delay
        self._shown = False

    def update(self, files: int, done: int, total: int) -> None:
        now = self._clock()
        if not self._enabled or now < self._next:
            return
        self._next = now + self._every
        share = f" ({100 * done / total:.0f}%)" if total else ""
        text = (
            f"capguard: {self._label}: {files:,} files, {size(done)} of {size(total)}{share},"
            f" {format_duration(now - self._start)}"
        )
        if self._tty:
            self._stream.write("\r" + text + "\x1b[K")
        else:
            self._stream.write(text + "\n")
        self._stream.flush()
        self._shown = True

    def close(self) -> None:
        if self._shown and self._tty:
            self._stream.write("\r\x1b[K")
            self._stream.flush()
