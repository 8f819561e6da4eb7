"""The Supervisor's loop and stop sequence on a fake clock with a fake agent: no process is started or signalled.

The fake agent dies on the signals it honours; the fake clock moves only when the supervisor waits, so a grace
period of seconds takes none, and every signal is stamped with the fake time it was sent at.
"""

from __future__ import annotations

import queue
import signal
import threading
from collections.abc import Callable
from typing import Any

from capguard.agents.base import LaunchPlan
from capguard.core.caps import Caps
from capguard.core.pricing import Pricer
from capguard.metering import blind
from capguard.supervisor.admission import LedgerMonth
from capguard.supervisor.proctree import StopLog
from capguard.supervisor.supervise import Supervisor

REAL_WAIT = 5.0  # seconds: for the supervisor's own threads (the waiter, the ledger thread) to catch up


class FakeAgent:
    """A Popen look-alike that dies (status -signal) on a signal it honours, or exits when told to."""

    pid = 424242  # never signalled for real: the supervisor's `kill` is the fake's

    def __init__(self, clock: FakeClock, honours: set[int]) -> None:
        self.clock, self.honours = clock, honours
        self.signals: list[tuple[float, signal.Signals]] = []
        self.returncode: int | None = None
        self._dead = threading.Event()

    def kill(self, pid: int, sig: int) -> None:
        assert pid == self.pid
        self.signals.append((round(self.clock.now(), 3), signal.Signals(sig)))
        if sig in self.honours:
            self.exit(-sig)

    def exit(self, status: int) -> None:
        if self.returncode is None:
            self.returncode = status
            self._dead.set()

    @property
    def dead(self) -> bool:
        return self._dead.is_set()

    def wait(self) -> int:
        self._dead.wait()
        assert self.returncode is not None
        return self.returncode

    def sent(self) -> list[signal.Signals]:
        return [sig for _, sig in self.signals]


class FakeClock:
    """Time moves when the supervisor waits for it; `at(t, do)` runs `do` once time reaches t."""

    def __init__(self) -> None:
        self.t = 0.0
        self.agent: FakeAgent | None = None
        self._due: list[tuple[float, Callable[[], None]]] = []

    def now(self) -> float:
        return self.t

    def at(self, moment: float, do: Callable[[], None]) -> None:
        self._due.append((moment, do))

    def _advance(self, seconds: float) -> None:
        self.t += seconds
        for item in [item for item in self._due if item[0] <= self.t]:
            self._due.remove(item)
            item[1]()

    def _settling(self) -> bool:
        return self.agent is not None and self.agent.dead  # the waiter thread is about to say so

    def wait(self, event: threading.Event, seconds: float) -> bool:
        if event.is_set() or (self._settling() and event.wait(REAL_WAIT)):
            return True
        self._advance(seconds)
        return event.is_set()

    def get(self, items: queue.Queue[Any], seconds: float) -> Any:
        try:  # a moment for the ledger thread's answers; then time moves on
            return items.get(timeout=REAL_WAIT if self._settling() else 0.01)
        except queue.Empty:
            self._advance(seconds)
            raise


class NoTree:
    """The process tree of an agent that starts nothing: no cgroup, no children, nothing to sweep."""

    def __init__(self) -> None:
        self.swept = 0

    def new_cgroup(self, run_id: str) -> None:
        return None

    def reap_orphans(self, agent_pid: int | None) -> int:
        return 0

    def has_children(self) -> bool:
        return False

    def descendants(self) -> dict:
        return {}

    def stop_leftovers(self, before: dict, agent_pid: int, *, kill_after: float, stop_log: StopLog, group=None) -> int:
        self.swept += 1
        return 0


def supervisor(
    caps: Caps,
    *,
    honours: set[int],
    polite: list[tuple[signal.Signals, float]] | None = None,
    **kwargs: Any,
) -> tuple[Supervisor, FakeAgent, FakeClock]:
    clock = FakeClock()
    agent = clock.agent = FakeAgent(clock, honours)
    plan = LaunchPlan(argv=["fake-agent"], env={}, watches=[], polite_stop=polite or [(signal.SIGTERM, 0.0)])

    def popen(argv: list[str], **options: Any) -> FakeAgent:
        assert argv == ["fake-agent"]
        return agent

    built = Supervisor(
        plan,
        caps,
        Pricer(),
        name="fake",
        grace=3.0,
        kill_after=2.0,
        clock=clock,
        popen=popen,
        kill=agent.kill,
        tree=NoTree(),
        **kwargs,
    )
    return built, agent, clock


def test_a_cap_stop_sends_the_polite_signals_then_escalates_on_the_clock():
    run, agent, clock = supervisor(Caps(wall_s=10), honours={signal.SIGKILL}, polite=[(signal.SIGINT, 1.0)])
    outcome = run.run()
    assert outcome.stop_reason == "wall"
    assert agent.sent() == [signal.SIGINT, signal.SIGTERM, signal.SIGCONT, signal.SIGKILL]
    times = dict((sig, t) for t, sig in agent.signals)
    assert abs(times[signal.SIGINT] - 10) < 0.05  # at the cap
    assert abs(times[signal.SIGTERM] - 14) < 0.05  # after the polite pause (1 s) and the grace (3 s)
    assert abs(times[signal.SIGKILL] - 16) < 0.05  # after kill_after (2 s)
    assert outcome.returncode == -signal.SIGKILL
    assert outcome.stop_steps == [
        f"sending SIGINT to fake (pid {agent.pid})",
        "fake still running after 3s grace",
        f"sending SIGTERM to fake (pid {agent.pid})",
        f"sending SIGKILL to fake (pid {agent.pid})",
    ]


def test_an_agent_that_honours_the_polite_signal_is_not_escalated():
    run, agent, clock = supervisor(Caps(wall_s=10), honours={signal.SIGINT}, polite=[(signal.SIGINT, 1.0)])
    outcome = run.run()
    assert (outcome.stop_reason, agent.sent(), outcome.returncode) == ("wall", [signal.SIGINT], -signal.SIGINT)


def test_a_monthly_allowance_that_drops_mid_run_stops_with_reason_monthly():
    clock_box: list[FakeClock] = []

    def allowance() -> int:  # other runs spend the month at t=3
        return 5_000_000 if clock_box[0].now() < 3 else 0

    month = LedgerMonth(allowance, lambda: "2026-11")
    run, agent, clock = supervisor(
        Caps(usd_micro=10_000_000, monthly_remaining_micro=5_000_000),
        honours={signal.SIGTERM},
        month=month,
    )
    clock_box.append(clock)
    outcome = run.run()
    assert outcome.stop_reason == "monthly"
    assert agent.sent() == [signal.SIGTERM]
    assert 3 <= agent.signals[0][0] < 6  # at the first read after t=3 (a read every 2 s)
    assert outcome.at_stop is not None and outcome.at_stop["monthly_remaining_usd"] == 0


def test_the_month_turning_over_lifts_a_spent_months_stop_once_the_new_month_is_read():
    months = iter(["2026-11"])  # the allowance in the caps was read in November; the loop runs in December

    def month_now() -> str:
        return next(months, "2026-12")

    reads: list[float] = []

    def december() -> int:
        reads.append(clock.now())
        return 5_000_000

    run, agent, clock = supervisor(
        Caps(usd_micro=10_000_000, monthly_remaining_micro=0),
        honours={signal.SIGTERM},
        month=LedgerMonth(december, month_now),
    )
    clock.at(4.0, lambda: agent.exit(0))
    outcome = run.run()
    assert (outcome.stop_reason, agent.sent(), outcome.returncode) == (None, [], 0)
    assert reads and reads[0] < 0.5  # asked at once, not at the next periodic read
    assert run.caps.monthly_remaining_micro == 5_000_000


def test_a_spent_month_read_in_the_same_month_stops_at_once():
    run, agent, clock = supervisor(
        Caps(usd_micro=10_000_000, monthly_remaining_micro=0),
        honours={signal.SIGTERM},
        month=LedgerMonth(lambda: 0, lambda: "2026-11"),
    )
    outcome = run.run()
    assert (outcome.stop_reason, agent.sent()) == ("monthly", [signal.SIGTERM])
    assert agent.signals[0][0] == 0


def test_a_meter_error_stops_at_once_with_sigterm_whatever_the_polite_stop(tmp_path):
    def space(folder):  # the disk fills at t=1
        return blind.Space(0 if clock_box[0].now() >= 1 else 10 << 30, None, False)

    clock_box: list[FakeClock] = []
    run, agent, clock = supervisor(
        Caps(usd_micro=10_000_000),
        honours={signal.SIGTERM},
        polite=[(signal.SIGINT, 5.0)],
        run_dir=tmp_path,
        space=space,
    )
    clock_box.append(clock)
    outcome = run.run()
    assert outcome.stop_reason == "meter_error"
    assert agent.sent() == [signal.SIGTERM]
    assert 1 <= agent.signals[0][0] < 1.5
    assert outcome.meter.meter_error == f"the disk holding {tmp_path} is full (0 bytes free)"


def test_an_agent_that_exits_by_itself_is_not_signalled():
    run, agent, clock = supervisor(Caps(usd_micro=10_000_000), honours=set())
    clock.at(2.0, lambda: agent.exit(3))
    outcome = run.run()
    assert (outcome.stop_reason, outcome.returncode, agent.sent()) == (None, 3, [])
