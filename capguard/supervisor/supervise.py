"""One agent under caps: spawn it on our terminal, meter its files, stop its whole tree at a cap.

The child keeps the terminal (same process group, inherited stdio); capguard only watches files.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import queue
import signal
import subprocess
import termios
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from capguard.agents.base import LaunchPlan
from capguard.core.caps import OK, Caps, Verdict, decide, seconds_until_wall
from capguard.core.child_env import local_hop_direct
from capguard.core.enums import Action, StopReason
from capguard.core.errors import AgentNotExecutable, AgentNotFound
from capguard.core.events import (
    Event,
    Malformed,
    MapMeasured,
    Reply,
    ReportedTotal,
    RequestStarted,
    SessionSeen,
    ToolOutcome,
)
from capguard.core.meter import Meter
from capguard.core.pricing import Priced, Pricer
from capguard.ledger.writer_thread import LedgerThread
from capguard.metering import blind
from capguard.metering.proxy import Refused
from capguard.metering.tail import Tailer
from capguard.metering.watch import Wake, Watcher
from capguard.supervisor import cgroup, compat, proctree
from capguard.supervisor.admission import MonthlyAdmission, NoMonthlyCap
from capguard.supervisor.clock import MONOTONIC, Clock
from capguard.supervisor.strict import StrictMeter, call_row, refusal_row, stop_reason

log = logging.getLogger(__name__)
TICK = 0.25  # how often the loop looks at signals and the clock when no file changes
SWEEP_EVERY = 2.0  # safety net for missed or coalesced file events


def _where(event: Event) -> str:
    source, offset = getattr(event, "source", None), getattr(event, "offset", None)
    return f"{type(event).__name__} from {source} at byte {offset}" if source else type(event).__name__


@dataclass
class Outcome:
    returncode: int | None
    stop_reason: StopReason | None
    signal_received: int | None
    elapsed_s: float
    meter: Meter
    stop_steps: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    leftovers_stopped: int = 0
    at_stop: dict | None = None  # the meter when the stop was decided; later replies were in flight
    self_stopped: bool = False  # the agent ended itself at the cap (its own native cap fired first)
    ledger_unsaved: list = field(default_factory=list)  # usage the ledger never took (it is in the spool)
    ledger_error: str | None = None  # the ledger's last failure during the run, even if a retry then succeeded
    tree_stop: str = "sweep"  # how the tree is stopped: "cgroup", "freeze-sweep" or "sweep" (proctree.tree_way)
    # strict mode: what the agent's own files counted (the calibration line), each call and each refusal
    files_meter: Meter | None = None
    proxy_calls: list = field(default_factory=list)
    proxy_refusals: list = field(default_factory=list)


@dataclass
class Hooks:
    """What the supervisor tells the rest of capguard; defaults do nothing."""

    # Durable first: each reply becomes a record (`record_of`), the batch goes to the run's spool (`spool`, on the
    # loop's thread, fsynced) and then to the ledger (`on_reply`, one record at a time, on the ledger thread,
    # retried there). A spool that cannot be written stops the run: capguard cannot count durably any more.
    record_of: Callable[[Reply, Priced], Any] = lambda reply, priced: (reply, priced)
    spool: Callable[[list[Any]], None] = lambda records: None
    on_reply: Callable[[Any], object] = lambda record: None  # what it returns is not used
    on_status: Callable[[Meter, float, Verdict, str], None] = lambda meter, elapsed, verdict, state: None


@contextlib.contextmanager
def captured_signals() -> Iterator[list[int]]:
    """Record terminal and stop signals instead of dying; restore the old handlers afterwards.

    A handler (not SIG_IGN) so that exec resets it to the default in the agent: Ctrl-C reaches the agent.
    """
    seen: list[int] = []
    wanted = (signal.SIGINT, signal.SIGQUIT, signal.SIGTERM, signal.SIGHUP)
    previous = {sig: signal.signal(sig, lambda signum, frame: seen.append(signum)) for sig in wanted}
    try:
        yield seen
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


@contextlib.contextmanager
def saved_terminal() -> Iterator[None]:
    """A killed raw-mode TUI leaves the terminal without echo; put back what we found."""
    saved = None
    if os.isatty(0):
        with contextlib.suppress(termios.error):
            saved = termios.tcgetattr(0)
    try:
        yield
    finally:
        if saved is not None:
            with contextlib.suppress(termios.error, OSError):
                termios.tcsetattr(0, termios.TCSADRAIN, saved)


class Supervisor:
    """One agent's run. Its effects on the machine come in as `popen`, `kill`, `clock` and `tree`, and the monthly
    budgets as `month` (what the month leaves the run, read on the ledger thread), so unit tests swap them."""

    def __init__(
        self,
        plan: LaunchPlan,
        caps: Caps,
        pricer: Pricer,
        *,
        name: str,
        grace: float = 3.0,
        kill_after: float = 2.0,
        poll: bool = False,
        hooks: Hooks | None = None,
        clock: Clock = MONOTONIC,
        popen: Callable[..., subprocess.Popen] = subprocess.Popen,
        kill: Callable[[int, int], None] = os.kill,
        tree: proctree.LiveTree | None = None,
        month: MonthlyAdmission | None = None,
        run_id: str | None = None,
        run_dir: Path | None = None,
        space: Callable[[Path], blind.Space] = blind.probe,
        strict: StrictMeter | None = None,
    ):
        if grace < 0 or kill_after < 0:
            raise ValueError("grace and kill_after must not be negative")
        self.plan, self.caps, self.pricer, self.name = plan, caps, pricer, name
        self.grace, self.kill_after, self.poll = grace, kill_after, poll
        self.hooks = hooks or Hooks()
        self._clock, self._popen, self._kill = clock, popen, kill
        self._tree = tree or proctree.LiveTree()
        self.month: MonthlyAdmission = month or NoMonthlyCap()
        self.run_id = run_id or str(os.getpid())
        self._cgroup: cgroup.RunCgroup | None = None  # the run's own cgroup, where the machine allows one
        self._guard: subprocess.Popen | None = None  # kills that cgroup if capguard dies (cgroup.start_guard)
        self.run_dir, self._space, self._next_blind_check = run_dir, space, 0.0
        self.meter = Meter()
        self._queue: queue.Queue[tuple[Wake, Any]] = queue.Queue()
        self._exited = threading.Event()
        self._warned: list[str] = []
        self._started = 0.0
        self._tailer: Tailer | None = None
        self._followed: set[str] = set()
        self._unspooled: list[tuple[Reply, Priced]] = []
        self._unrecorded: list[Any] = []
        self._ledger = LedgerThread(
            self._commit, allowance=self.month.read, deliver=lambda value: self._queue.put((Wake.MONTH, value))
        )
        # Strict mode: the proxy is the meter of cost and tokens; the agent's own figures (its replies and
        # totals) go to `files_meter`, read for the calibration line only, so no call is counted twice.
        self.strict = strict
        self.files_meter = Meter() if strict else None
        self._refused_at: StopReason | None = None
        self._calls: list[dict] = []
        self._refusals: list[dict] = []
        if strict is not None:
            strict.connect(lambda event: self._queue.put((Wake.PROXY, event)))

    # -- the run --------------------------------------------------------------------------------
    def run(self) -> Outcome:
        tailer = self._tailer = Tailer(self.plan.watches)  # before the spawn: "from the end" = before the agent wrote
        targets = [(w.path, w.glob is not None) for w in self.plan.watches] + [(t, True) for t in self.plan.watch_trees]
        # the agent's hops to capguard on 127.0.0.1 (the metering proxy, the OTel receiver) are never proxied
        self.plan.env.update(local_hop_direct(self.plan.env))
        with contextlib.ExitStack() as services:
            if self.strict is not None:  # before the agent: its base URL is the proxy's, or it does not start
                self.plan.env.update(self.strict.start())
                if self.plan.on_proxy is not None:  # an agent told the proxy's URL in a config value
                    self.plan.argv, told = self.plan.on_proxy(self.strict.urls())
                    self.plan.env.update(told)
                services.callback(self.strict.stop)
            for service in self.plan.services:
                service.start()
                services.callback(service.stop)
            services.callback(self._ledger.close)  # every reply committed before the run is over
            self.month.begin()  # the allowance in `caps` was read just now
            self._ledger.start()
            services.callback(self._release_cgroup)  # last resort: whatever is left in the run's cgroup dies
            with saved_terminal(), captured_signals() as seen:
                agent = self._spawn()
                waiter = threading.Thread(target=self._wait, args=(agent,), name="capguard-wait", daemon=True)
                waiter.start()
                watcher = Watcher(targets, tailer.wants, self._queue, poll=self.poll)
                try:
                    for spec in self.plan.on_spawn(agent.pid) if self.plan.on_spawn else []:
                        tailer.add(spec)
                    watcher.start()
                    outcome = self._loop(agent, tailer, seen)
                except BaseException:
                    self._stop_tree(agent, proctree.StopLog(), polite=[])
                    raise
                finally:
                    watcher.stop()
                    waiter.join(timeout=5)
            if self.strict is not None:  # the tree is gone: settle what it left in flight, then count it
                self.strict.stop()
            self._process(tailer.read_all() + self._proxy_events(), enforce=False)  # written while it was stopped
            tailer.close()
            self._flush()
        if self.plan.on_exit:
            self.plan.on_exit(agent.pid)
        outcome.returncode = agent.returncode
        outcome.meter = self.meter
        outcome.warnings = list(self._warned)
        outcome.ledger_unsaved, outcome.ledger_error = self._ledger.unsaved, self._ledger.last_error  # all tried by now
        outcome.files_meter, outcome.proxy_calls, outcome.proxy_refusals = self.files_meter, self._calls, self._refusals
        return outcome

    def _proxy_events(self) -> list[Event]:
        """The proxy's events still on the queue (the run loop is over)."""
        found: list[Event] = []
        rest = []
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                break
            if item[0] is Wake.PROXY:
                found.append(item[1])
            else:
                rest.append(item)
        for item in rest:
            self._queue.put(item)
        return found

    def _follow(self, event: SessionSeen) -> None:
        if self.plan.follow is None or self._tailer is None or event.session_id in self._followed:
            return
        self._followed.add(event.session_id)
        log.info("following session %s", event.session_id)
        for spec in self.plan.follow(event.session_id):
            self._tailer.add(spec)

    def _spawn(self) -> subprocess.Popen:
        group = self._cgroup = self._tree.new_cgroup(self.run_id)
        hook = compat.die_with_parent_hook(group.procs_file if group else None)  # the child joins it before exec
        try:
            # same process group, inherited stdio: the agent keeps the terminal and gets Ctrl-C itself
            agent = self._popen(self.plan.argv, env=self.plan.env, preexec_fn=hook)
        except FileNotFoundError:
            self._release_cgroup()
            raise AgentNotFound(f"{self.plan.argv[0]}: command not found") from None
        except PermissionError:
            self._release_cgroup()
            raise AgentNotExecutable(f"{self.plan.argv[0]}: permission denied") from None
        except OSError as err:  # ENOEXEC (no #! line, a foreign binary), ELOOP, ENOTDIR...: exec said no
            self._release_cgroup()
            why = (
                "not a program this system can run (a script needs a #! line)"
                if err.errno == errno.ENOEXEC
                else err.strerror or str(err)
            )
            raise AgentNotExecutable(f"{self.plan.argv[0]}: cannot run: {why}") from None
        self._started = self._clock.now()
        if group is not None:
            self._check_inside(agent, group)
        return agent

    def _check_inside(self, agent: subprocess.Popen, group: cgroup.RunCgroup) -> None:
        """The agent joined its cgroup before exec, or the run falls back to the freeze-sweep (logged)."""
        if cgroup.joined(group, agent.pid, self.name):
            self._guard = cgroup.start_guard(group)
        else:
            self._cgroup = None

    def _release_cgroup(self) -> None:
        """Once the tree is stopped: kill anything still inside (an error path), remove the cgroup, end the guard."""
        group, guard, self._cgroup, self._guard = self._cgroup, self._guard, None, None
        cgroup.release(group, guard)

    def _wait(self, agent: subprocess.Popen) -> None:
        agent.wait()
        self._exited.set()
        self._queue.put((Wake.EXIT, None))

    def _elapsed(self) -> float:
        return self._clock.now() - self._started

    def _loop(self, agent: subprocess.Popen, tailer: Tailer, seen: list[int]) -> Outcome:
        next_sweep = self._clock.now()
        while True:
            events: list[Event] = []
            item = self._next_item(next_sweep)
            if item is not None and item[0] is Wake.FILE:
                events += tailer.read(item[1])
            elif item is not None and item[0] is Wake.MONTH:
                self._month_read(item[1])
            elif item is not None and item[0] is Wake.PROXY:
                events.append(item[1])
            if self._clock.now() >= next_sweep:
                events += tailer.read_all()
                self._tree.reap_orphans(agent.pid)
                next_sweep = self._clock.now() + SWEEP_EVERY
            self._check_blind(tailer)
            verdict = self._process(events, enforce=True)
            stop_signal = next((s for s in seen if s in (signal.SIGTERM, signal.SIGHUP)), None)
            if verdict.stop or stop_signal is not None:
                # stamped now, written once the first signal is out: no file I/O between decision and signal
                decided = log.makeRecord(
                    log.name,
                    logging.INFO,
                    __file__,
                    0,
                    "stopping %s: %s",
                    (self.name, verdict.reason or f"signal {stop_signal}"),
                    None,
                )
                return self._finish(agent, tailer, verdict.reason, stop_signal, decided=decided)
            self._flush()
            if self._exited.is_set():
                self._process(tailer.read_all(), enforce=False)
                self._flush()
                return self._finish(agent, tailer, self._stopped_itself(agent), None, by_itself=True)

    def _check_blind(self, tailer: Tailer) -> None:
        """Fail closed when the agent's spend can no longer be seen: a metered file that exists but cannot be
        read (known after each read), a full or read-only disk or a vanished run dir (probed every TICK)."""
        why = tailer.problem() or (self.strict.problem() if self.strict is not None else None)
        if why is None and self._clock.now() >= self._next_blind_check:
            self._next_blind_check = self._clock.now() + TICK
            why = blind.problem([s.path if s.glob else s.path.parent for s in tailer.specs], self.run_dir, self._space)
        if why:
            self.meter.fail(why)  # logged with the stop, once the first signal is out

    def _next_item(self, next_sweep: float) -> tuple[Wake, Any] | None:
        timeout = min(TICK, max(0.0, next_sweep - self._clock.now()))
        wall_left = seconds_until_wall(self.caps, self._elapsed())
        if wall_left is not None:
            timeout = min(timeout, wall_left)
        try:
            return self._clock.get(self._queue, timeout)
        except queue.Empty:
            return None

    # -- metering -------------------------------------------------------------------------------
    def _process(self, events: list[Event], *, enforce: bool, quiet: bool = False) -> Verdict:
        cost_before = self.meter.cost_micro
        changed = self._meter_all(events)
        elapsed = self._elapsed()
        verdict = decide(self.caps, self.meter, elapsed)
        if self._refused_at is not None and not verdict.stop:  # the proxy refused a call at a cap
            verdict = Verdict(Action.STOP, self._refused_at)
        if enforce:
            verdict, ask = self.month.review(verdict, spent=self.meter.cost_micro != cost_before, now=self._clock.now())
            if ask:
                self._ask_month()
        if enforce and verdict.stop:
            self._warned.extend(name for name in verdict.warnings if name not in self._warned)
            return verdict  # the signal first: the status and the log are written once it is out
        changed = self._note_warnings(verdict) or changed
        if (enforce or changed) and not quiet:
            self.hooks.on_status(self.meter, elapsed, verdict, "running")
        return verdict if enforce else OK

    def _meter_all(self, events: list[Event]) -> bool:
        """Count the events; True when the caps see something new. Fails closed: an event capguard cannot count
        stops the run (the meter's error), never capguard."""
        changed = False
        for event in events:
            try:
                changed = self._count(event) or changed
            except Exception as err:
                log.exception("could not meter %r", event)
                self.meter.fail(f"{type(err).__name__} while metering {_where(event)}: {err}"[:300])
                changed = True
        return changed

    def _note_warnings(self, verdict: Verdict) -> bool:
        """Log each cap past its soft threshold once; True when one is new."""
        new = [name for name in verdict.warnings if name not in self._warned]
        for name in new:
            self._warned.append(name)
            log.warning("past %d%% of the %s cap", self.caps.warn_at * 100, name)
        return bool(new)

    def _count(self, event: Event) -> bool:
        """One event into the meter; True when it changed what the caps see."""
        if self.files_meter is not None and isinstance(event, (Reply, ReportedTotal)) and event.source != "proxy":
            return self._calibrate(event)
        if isinstance(event, Refused):
            return self._refused(event)
        if isinstance(event, Reply):
            priced = self.pricer.price(event)
            if not self.meter.add_reply(event, priced):
                return False
            if event.source == "proxy":
                self._calls.append(call_row(event, priced))
            self._unspooled.append((event, priced))
            if event.suspicious:
                log.warning("suspicious figures in %s at byte %s: %s", event.source, event.offset, event.suspicious)
        elif isinstance(event, RequestStarted):
            self.meter.request_started()
        elif isinstance(event, MapMeasured):
            self.meter.map_measured(event.tokens)
        elif isinstance(event, ReportedTotal):
            self.meter.reported(event)
        elif isinstance(event, ToolOutcome):
            self.meter.tool_outcome(event)
        elif isinstance(event, SessionSeen):
            self._follow(event)
            return False
        elif isinstance(event, Malformed):
            self.meter.malformed_lines += 1
            log.warning("skipped a malformed line in %s at byte %d: %s", event.source, event.offset, event.why)
            return False
        return True

    def _calibrate(self, event: Reply | ReportedTotal) -> bool:
        """Strict mode: the agent's own figure of a call, kept apart (the proxy counted the call)."""
        assert self.files_meter is not None
        if isinstance(event, Reply):
            self.files_meter.add_reply(event, self.pricer.price(event))
        else:
            self.files_meter.reported(event)
        return False

    def _refused(self, refusal: Refused) -> bool:
        """The proxy answered a request with an error instead of sending it; at a cap, the run stops."""
        self._refusals.append(refusal_row(refusal))
        log.warning("the metering proxy refused a request for %s: %s", refusal.model, refusal.why)
        reason = stop_reason(refusal, self.caps)
        if reason is not None and self._refused_at is None:
            self._refused_at = reason
            return True
        return False

    def _ask_month(self) -> None:
        """Read the month again, after new spend and every sweep (other runs' spend, an ack, the 1st of the month).
        No stop waits for a read but a monthly one at the turn of the month: otherwise the allowance is at most a
        sweep old, or read just after this run's last spend."""
        self._flush()  # commit, then read: of two runs racing to the month's cap, the later reader sees both
        self.month.asked(self._clock.now())
        self._ledger.read_month()  # the answer comes back through the queue and wakes the loop

    def _month_read(self, allowance: int | None) -> None:
        """A month read is back (None: it failed, logged, or no monthly cap applies: the last allowance stands)."""
        allowance = self.month.answered(allowance, self.caps.monthly_remaining_micro)
        if allowance is not None:
            log.info("the month leaves this run $%.6f", allowance / 1e6)
            self.caps = replace(self.caps, monthly_remaining_micro=allowance)
            if self.strict is not None:
                self.strict.sync(self.caps)

    def _spool(self) -> None:
        """Make observed usage durable (one fsync a batch): right after each decision, or once the first stop signal
        is out."""
        pending, self._unspooled = self._unspooled, []
        if not pending:
            return
        for reply, priced in pending:  # logged here, when seen: the log's times are the loop's
            log.info(
                "reply %s: %s, %d tokens, %s by %s",
                reply.key,
                priced.model,
                reply.tokens,
                "unpriced" if priced.cost_micro is None else f"${priced.cost_micro / 1e6:.6f}",
                priced.priced_by,
            )
        records = [self.hooks.record_of(reply, priced) for reply, priced in pending]
        try:
            self.hooks.spool(records)
        except OSError as err:  # fail closed: what is counted from now on could be lost with capguard
            log.error("%s", err)
            self.meter.fail(str(err))
        self._unrecorded += records

    def _flush(self) -> None:
        """Spool observed usage, then hand it to the ledger thread."""
        self._spool()
        pending, self._unrecorded = self._unrecorded, []
        self._ledger.record(pending)

    def _commit(self, item: Any) -> None:
        """On the ledger thread: one record into the ledger; a failure is retried there (ledger_thread.py)."""
        self.hooks.on_reply(item)

    def _stopped_itself(self, agent: subprocess.Popen) -> StopReason | None:
        """An agent that failed at a cap stopped on its own cap (Claude's --max-budget-usd): name that cap."""
        verdict = decide(self.caps, self.meter, self._elapsed())
        return verdict.reason if verdict.stop and agent.returncode not in (0, None) else None

    # -- stopping -------------------------------------------------------------------------------
    def _finish(
        self,
        agent: subprocess.Popen,
        tailer: Tailer,
        reason: StopReason | None,
        stop_signal: int | None,
        *,
        by_itself: bool = False,
        decided: logging.LogRecord | None = None,
    ) -> Outcome:
        stop_log = proctree.StopLog()
        at_stop = self._snapshot() if reason or stop_signal else None
        if by_itself and reason:  # the agent ended at the cap on its own; its tree goes as after any exit
            stop_log.add(f"{self.name} stopped itself at the {reason} cap (exit status {agent.returncode})")
        if (reason or stop_signal) and not by_itself:
            if stop_signal:
                polite = [(signal.Signals(stop_signal), 0.0)]
            elif reason == StopReason.METER_ERROR:  # blind: a polite stop's "is it still spending?" cannot be answered
                polite = [(signal.SIGTERM, 0.0)]
            else:
                polite = self.plan.polite_stop
            leftovers = self._stop_tree(agent, stop_log, polite=polite, tailer=tailer, reason=reason, decided=decided)
        elif self._cgroup.populated() if self._cgroup else self._tree.has_children():
            # the agent is gone; anything of its tree left is ours now
            leftovers = self._tree.stop_leftovers(
                {}, agent.pid, kill_after=self.kill_after, stop_log=stop_log, group=self._cgroup
            )
        else:
            leftovers = 0
        self._tree.reap_orphans(None)
        self._flush()
        return Outcome(
            returncode=agent.returncode,
            stop_reason=reason,
            signal_received=stop_signal,
            elapsed_s=self._elapsed(),
            meter=self.meter,
            stop_steps=stop_log.steps,
            warnings=list(self._warned),
            leftovers_stopped=leftovers,
            at_stop=at_stop,
            self_stopped=by_itself and reason is not None,
            tree_stop=proctree.tree_way(self._cgroup),
        )

    def _snapshot(self) -> dict:
        return {
            "cost_usd": self.meter.cost_micro / 1e6,
            "tokens": self.meter.tokens,
            "steps": self.meter.steps,
            "requests": self.meter.requests,
            "failing_streak": self.meter.failing_streak,
            "elapsed_s": round(self._elapsed(), 3),
            **(
                {"monthly_remaining_usd": self.caps.monthly_remaining_micro / 1e6}
                if self.caps.monthly_remaining_micro is not None
                else {}
            ),
        }

    def _stop_tree(
        self,
        agent: subprocess.Popen,
        stop_log: proctree.StopLog,
        *,
        polite,
        tailer: Tailer | None = None,
        reason: StopReason | None = None,
        decided: logging.LogRecord | None = None,
    ) -> int:
        before: dict = {}
        work = (self.meter.requests, self.meter.steps)

        def signalled() -> None:
            # the first signal is out: now the slower chores (each took milliseconds before the signal)
            if decided is not None and log.isEnabledFor(logging.INFO):
                log.handle(decided)
            if reason and self.plan.on_stop:
                self.plan.on_stop(reason)  # e.g. Claude's hook now denies any tool call still to come
            self._spool()  # what crossed the cap is durable before the wait for the tree
            if self._cgroup is None:  # the cgroup holds the whole tree: no snapshot needed
                before.update(self._tree.descendants())
            self.hooks.on_status(self.meter, self._elapsed(), Verdict(Action.STOP, reason), "stopping")

        def busy() -> bool:
            # keep metering while we wait; a new request or reply means politeness costs money. Nothing is
            # written meanwhile (replies go to the ledger once the tree is gone): no wait on the disk delays the
            # escalation
            if tailer is not None:
                self._process(tailer.read_all(), enforce=False, quiet=True)
            return (self.meter.requests, self.meter.steps) != work

        proctree.stop_agent(
            agent,
            self._exited,
            name=self.name,
            polite=polite,
            grace=self.grace,
            kill_after=self.kill_after,
            stop_log=stop_log,
            busy=busy,
            signalled=signalled,
            clock=self._clock,
            kill=self._kill,
        )
        return self._tree.stop_leftovers(
            before, agent.pid, kill_after=self.kill_after, stop_log=stop_log, group=self._cgroup
        )
