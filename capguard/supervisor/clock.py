"""Time and waiting for the supervisor, injected so that a unit test runs the loop and a stop sequence on a fake
clock; production reads time.monotonic and waits on the real event or queue.
"""

from __future__ import annotations

import queue
import threading
import time
from typing import Any, Protocol


class Clock(Protocol):
    def now(self) -> float:
        """Seconds on a monotonic scale."""
        ...

    def wait(self, event: threading.Event, seconds: float) -> bool:
        """Wait up to `seconds` for `event`; whether it is set."""
        ...

    def get(self, items: queue.Queue[Any], seconds: float) -> Any:
        """The next item, waiting up to `seconds`; raises queue.Empty."""
        ...


class Monotonic:
    """The real clock (never the wall clock: a clock set back must not stretch a grace period)."""

    def now(self) -> float:
        return time.monotonic()

    def wait(self, event: threading.Event, seconds: float) -> bool:
        return event.wait(seconds)

    def get(self, items: queue.Queue[Any], seconds: float) -> Any:
        return items.get(timeout=seconds)


MONOTONIC = Monotonic()
