"""A run's ledger traffic on a thread of its own: the decision loop never waits for the database.

A commit can take long: a PostgreSQL server's fsync on a busy disk, or another process holding SQLite's write
lock (an import holds it for a few hundred milliseconds; the busy timeout allows 30 s). Meanwhile the loop goes on
metering and stops the agent from what it holds in memory. Order is kept: replies are committed in the order they
were handed in, and a month re-read comes after every reply handed in before it (commit, then read: of two runs
racing to the month's cap, the later reader sees both).

A commit that fails (the server is down, the disk is full) is retried with backoff, and everything handed in after
it waits behind it; whatever is still uncommitted at close is `unsaved`: the run's spool keeps it for the next start.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any

log = logging.getLogger(__name__)
_CLOSE = object()
_MONTH = object()
FIRST_RETRY_S = 0.1
LAST_RETRY_S = 2.0  # the backoff doubles up to this: a server back after an outage is used within 2 s


class LedgerThread:
    """Commits what `record` is handed and re-reads the month on request; `deliver` gets each month read (None:
    the read failed)."""

    def __init__(
        self,
        commit: Callable[[Any], None],
        *,
        allowance: Callable[[], int | None] | None = None,
        deliver: Callable[[int | None], None] = lambda value: None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._commit, self._allowance, self._deliver, self._clock = commit, allowance, deliver, clock
        self._jobs: queue.SimpleQueue = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._work, name="capguard-ledger", daemon=True)
        self._started = False
        self._backlog: deque = deque()  # handed in, not committed yet, in order
        self._delay, self._retry_at = FIRST_RETRY_S, 0.0
        self.failures = 0  # commits that failed (and were retried)
        self.last_error: str | None = None  # why the last commit failed

    @property
    def unsaved(self) -> list[Any]:
        """What never reached the ledger: complete once `close` returned."""
        return list(self._backlog)

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
        """Returns once everything handed in is committed, or tried once more (a thread never started commits
        here)."""
        self._jobs.put(_CLOSE)
        if self._started:
            self._thread.join()
        else:
            self._work()

    def _next_jobs(self) -> list[Any]:
        timeout = max(0.0, self._retry_at - self._clock()) if self._backlog else None
        try:
            jobs = [self._jobs.get(timeout=timeout)]
        except queue.Empty:
            return []  # time to retry the backlog
        while not self._jobs.empty():  # a backlog is handled as one: a single month read after its commits
            jobs.append(self._jobs.get())
        return jobs

    def _work(self) -> None:
        while True:
            month = closing = False
            for job in self._next_jobs():
                if job is _CLOSE:
                    closing = True
                elif job is _MONTH:
                    month = True
                else:
                    self._backlog.extend(job)
            if closing or self._clock() >= self._retry_at:
                self._drain()
            if month and not closing and self._allowance is not None:  # read_month asks only when it is set
                try:
                    value = self._allowance()
                except Exception as err:  # the last allowance read still caps the run
                    log.error("could not read the month's spend from the ledger: %s", err)
                    value = None
                self._deliver(value)  # None for a failed read: the loop waits for an answer either way
            if closing:
                return

    def _drain(self) -> None:
        """Commit the backlog in order; at the first failure, wait (doubling) before the next try."""
        while self._backlog:
            try:
                self._commit(self._backlog[0])
            except Exception as err:  # the cap is enforced in memory and the spool holds the item: retry later
                self.failures += 1
                self.last_error = str(err)
                log.error(
                    "could not record usage in the ledger (%d waiting, retry in %.1fs): %s",
                    len(self._backlog),
                    self._delay,
                    err,
                )
                self._retry_at = self._clock() + self._delay
                self._delay = min(LAST_RETRY_S, self._delay * 2)
                return
            self._backlog.popleft()
        self._delay, self._retry_at = FIRST_RETRY_S, 0.0
