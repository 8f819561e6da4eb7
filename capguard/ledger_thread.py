"""A run's ledger traffic on a thread of its own: the decision loop never waits for the database.

A commit can take long: a PostgreSQL server's fsync on a busy disk, or another process holding SQLite's write
lock (an import holds it for a few hundred milliseconds; the busy timeout allows 30 s). Meanwhile the loop goes on
metering and stops the agent from what it holds in memory. Order is kept: replies are committed in the order they
were handed in, and a month re-read comes after every reply handed in before it (commit, then read: of two runs
racing to the month's cap, the later reader sees both).
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable, Sequence
from typing import Any

log = logging.getLogger(__name__)
_CLOSE = object()
_MONTH = object()


class LedgerThread:
    """Commits what `record` is handed and re-reads the month on request; `deliver` gets each month read (None:
    the read failed)."""

    def __init__(self, commit: Callable[[Any], None], *, allowance: Callable[[], int | None] | None = None,
                 deliver: Callable[[int | None], None] = lambda value: None) -> None:
        self._commit, self._allowance, self._deliver = commit, allowance, deliver
        self._jobs: queue.SimpleQueue = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._work, name="capguard-ledger", daemon=True)
        self._started = False

    def start(self) -> None:
        self._thread.start()
        self._started = True

    def record(self, items: Sequence[Any]) -> None:
        """Commit these, in order, after everything handed in before."""
        if items:
            self._jobs.put(list(items))

    def read_month(self) -> None:
        """Re-read the month once everything handed in so far is committed; several requests may merge into one."""
        if self._allowance is not None:
            self._jobs.put(_MONTH)

    def close(self) -> None:
        """Returns once everything handed in is committed (a thread never started commits here)."""
        self._jobs.put(_CLOSE)
        if self._started:
            self._thread.join()
        else:
            self._work()

    def _work(self) -> None:
        while True:
            jobs = [self._jobs.get()]
            while not self._jobs.empty():  # a backlog is handled as one: a single month read after its commits
                jobs.append(self._jobs.get())
            month = closing = False
            for job in jobs:
                if job is _CLOSE:
                    closing = True
                elif job is _MONTH:
                    month = True
                else:
                    for item in job:
                        self._commit(item)
            if month and not closing:
                try:
                    value = self._allowance()
                except Exception as err:  # the last allowance read still caps the run
                    log.error("could not read the month's spend from the ledger: %s", err)
                    value = None
                self._deliver(value)  # None for a failed read: the loop waits for an answer either way
            if closing:
                return
