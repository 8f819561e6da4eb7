"""Which telemetry records are this run's cost: those of the sessions this run follows, and no others.

Pure: wraps the OTel parser; whoever sent a record (a nested `claude`, anyone who has the run's secret), a
record of another session, or of none, is not counted. A session learnt later (from Claude's registry) lets
the records held for it through.
"""

from __future__ import annotations

from collections.abc import Callable, Collection

from capguard.core.events import Event, Reply

HELD_MAX = 1000  # records held for a session not (yet) known; beyond, the oldest are dropped


class ThisRunsSessions:
    def __init__(self, parser, sessions: Callable[[], Collection[str]]):
        self.parser = parser
        self._sessions = sessions
        self._held: list[Reply] = []
        self.dropped = 0  # records for no session, or pushed out of the held list

    def feed(self, line: bytes, offset: int) -> list[Event]:
        ours = self._sessions()
        out: list[Event] = [r for r in self._held if r.scope in ours]
        self._held = [r for r in self._held if r.scope not in ours]
        for event in self.parser.feed(line, offset):
            if not isinstance(event, Reply) or event.scope in ours:
                out.append(event)
            elif not event.scope:
                self.dropped += 1
            else:
                self._held.append(event)
        if len(self._held) > HELD_MAX:
            self.dropped += len(self._held) - HELD_MAX
            self._held = self._held[-HELD_MAX:]
        return out

    @property
    def foreign(self) -> int:
        """Records not counted: of no session, or of one this run never followed."""
        return self.dropped + len(self._held)

    def notes(self) -> list[str]:
        return [f"{self.foreign} telemetry record(s) of another session not counted"] if self.foreign else []
