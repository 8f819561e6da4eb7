"""What the monthly budgets leave a run, as its loop sees it: when to read the ledger again, and whether a monthly
stop stands (at the turn of the month it waits for the new month's first read). Injected into the Supervisor.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from capguard.core.caps import Verdict
from capguard.core.enums import Action, StopReason

REREAD_EVERY = 2.0  # seconds: other runs' spend, an ack or the 1st of the month is seen at most this late


class MonthlyAdmission(Protocol):
    def read(self) -> int | None:
        """What the month leaves the run's meter, from the ledger; called on the ledger thread."""
        ...

    def begin(self) -> None:
        """The run starts with the allowance read just now (in its caps)."""
        ...

    def review(self, verdict: Verdict, *, spent: bool, now: float) -> tuple[Verdict, bool]:
        """The verdict that stands, and whether to read the month again (`spent`: the meter's cost moved)."""
        ...

    def asked(self, now: float) -> None:
        """A read was requested at `now`."""
        ...

    def answered(self, allowance: int | None, current: int | None) -> int | None:
        """A read is back (None: it failed); the new allowance when it differs from `current`, else None."""
        ...


class NoMonthlyCap:
    """No monthly budget applies: nothing is read and every verdict stands."""

    def read(self) -> int | None:
        return None

    def begin(self) -> None:
        pass

    def review(self, verdict: Verdict, *, spent: bool, now: float) -> tuple[Verdict, bool]:
        return verdict, False

    def asked(self, now: float) -> None:
        pass

    def answered(self, allowance: int | None, current: int | None) -> int | None:
        return None


class LedgerMonth:
    """The month's allowance read through `read` (e.g. MonthGuard.allowance of the run); `month_now` names the month
    it is now without I/O. Re-read after new spend and every REREAD_EVERY; no stop waits for a read except a monthly
    one at the turn of the month, decided by the new month's first read.
    """

    def __init__(
        self, read: Callable[[], int | None], month_now: Callable[[], str], *, every: float = REREAD_EVERY
    ) -> None:
        self.read, self._month_now, self._every = read, month_now, every
        self._month_of_read = ""  # the month the allowance in force is for
        self._pending: str | None = None  # the month a read in flight was asked in
        self._next_read = 0.0

    def begin(self) -> None:
        self._month_of_read = self._month_now()

    def review(self, verdict: Verdict, *, spent: bool, now: float) -> tuple[Verdict, bool]:
        if verdict.reason == StopReason.MONTHLY and self._month_now() != self._month_of_read:
            # last month's allowance: this month's first read decides
            action = Action.WARN if verdict.warnings else Action.OK
            return Verdict(action, None, verdict.warnings), self._pending is None
        return verdict, not verdict.stop and (spent or now >= self._next_read)

    def asked(self, now: float) -> None:
        self._next_read = now + self._every
        self._pending = self._month_now()

    def answered(self, allowance: int | None, current: int | None) -> int | None:
        self._month_of_read, self._pending = self._pending or self._month_of_read, None
        return allowance if allowance is not None and allowance != current else None
