"""Stopping a whole process tree: polite signals, then SIGTERM, then SIGKILL; nothing survives.

The agent itself is reaped by its Popen (never by psutil, which would lose its exit status). What is left
of the tree dies by `cgroup.kill` when the run has a cgroup, else it is frozen with SIGSTOP and swept.
"""

from __future__ import annotations

import enum
import logging
import os
import signal
import subprocess
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from capguard.supervisor import cgroup, freeze
from capguard.supervisor.clock import MONOTONIC, Clock

if TYPE_CHECKING:
    import psutil

    from capguard.supervisor.cgroup import RunCgroup

log = logging.getLogger(__name__)
Key = tuple[int, float]  # (pid, create_time): survives pid reuse
# psutil is imported where it is used: a run whose agent leaves nothing behind never needs it (~25 ms at start)


def has_children() -> bool:
    """Whether any process is still our child (as a subreaper, every orphan of the tree is one)."""
    try:
        tasks = os.listdir("/proc/self/task")
        return any(open(f"/proc/self/task/{t}/children").read().strip() for t in tasks)
    except OSError:
        return True  # cannot tell: look properly


def descendants(root: int | None = None) -> dict[Key, psutil.Process]:
    """Every live descendant of `root` (default: this process, a subreaper, so orphans are included)."""
    import psutil

    try:
        children = psutil.Process(root or os.getpid()).children(recursive=True)
    except psutil.Error:
        return {}
    found = {}
    for proc in children:
        try:
            found[(proc.pid, proc.create_time())] = proc
        except psutil.Error:
            continue
    return found


def _alive(proc: psutil.Process) -> bool:
    import psutil

    try:
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def reap_orphans(agent_pid: int | None) -> int:
    """Collect exited adoptees without touching the agent (whose status its Popen must read)."""
    reaped = 0
    while True:
        try:
            info = os.waitid(os.P_ALL, 0, os.WEXITED | os.WNOHANG | os.WNOWAIT)
        except ChildProcessError:
            return reaped
        if info is None or info.si_pid == 0 or info.si_pid == agent_pid:
            return reaped
        try:
            os.waitpid(info.si_pid, os.WNOHANG)
            reaped += 1
        except ChildProcessError:
            return reaped


@dataclass
class StopLog:
    steps: list[str] = field(default_factory=list)

    def add(self, text: str) -> None:
        log.info(text)
        self.steps.append(text)


def _send(proc: psutil.Process, sig: int) -> bool:
    import psutil

    try:
        proc.send_signal(sig)  # psutil checks (pid, create_time) first: no pid-reuse accidents
        return True
    except psutil.Error:
        return False


class Wait(enum.Enum):
    """How a wait during the stop ended."""

    EXITED = "exited"
    BUSY = "busy"  # the agent kept working: politeness ends
    TIMEOUT = "timeout"


def stop_agent(
    agent: subprocess.Popen,
    exited: threading.Event,
    *,
    name: str,
    polite: list[tuple[signal.Signals, float]],
    grace: float,
    kill_after: float,
    stop_log: StopLog,
    busy: Callable[[], bool] = lambda: False,
    signalled: Callable[[], None] = lambda: None,
    clock: Clock = MONOTONIC,
    kill: Callable[[int, int], None] = os.kill,
) -> None:
    """Polite signals to the agent, then SIGTERM after `grace`, then SIGKILL after `kill_after`.

    `busy()` says the agent started more work (a new model request) since the stop began: politeness
    ends there, because every further request is spend past the cap.
    """
    outcome = _polite(agent, exited, name, polite, grace, stop_log, busy, signalled, clock, kill)
    if outcome is Wait.EXITED:
        return
    if outcome is Wait.BUSY:
        stop_log.add(f"{name} kept working during the polite stop; escalating")
    else:
        stop_log.add(f"{name} still running after {grace:g}s grace")
    stop_log.add(f"sending SIGTERM to {name} (pid {agent.pid})")
    _signal_popen(kill, agent, signal.SIGTERM)
    _signal_popen(kill, agent, signal.SIGCONT)  # a stopped process must wake up to die (as timeout(1) does)
    if clock.wait(exited, kill_after):
        return
    stop_log.add(f"sending SIGKILL to {name} (pid {agent.pid})")
    _signal_popen(kill, agent, signal.SIGKILL)
    clock.wait(exited, 5)


def _polite(
    agent: subprocess.Popen,
    exited: threading.Event,
    name: str,
    polite: list[tuple[signal.Signals, float]],
    grace: float,
    stop_log: StopLog,
    busy: Callable[[], bool],
    signalled: Callable[[], None],
    clock: Clock,
    kill: Callable[[int, int], None],
) -> Wait:
    """The polite phase: the agent exited, kept working, or outlasted the grace period."""
    if not polite:
        signalled()
        return Wait.TIMEOUT
    for i, (sig, pause) in enumerate(polite):
        if exited.is_set():
            return Wait.EXITED
        _signal_popen(kill, agent, sig)  # signal first, log after: the log line costs time
        stop_log.add(f"sending {sig.name} to {name} (pid {agent.pid})")
        if i == 0:
            signalled()
        outcome = _wait(exited, pause, busy, clock)
        if outcome is not Wait.TIMEOUT:
            return outcome
    return _wait(exited, grace, busy, clock)


def _wait(exited: threading.Event, seconds: float, busy: Callable[[], bool], clock: Clock) -> Wait:
    """Until the agent exits, `busy()` or `seconds` are up, looking at `busy` every 20 ms."""
    deadline = clock.now() + seconds
    while True:
        left = deadline - clock.now()
        if clock.wait(exited, max(0.0, min(0.02, left))):
            return Wait.EXITED
        if busy():
            return Wait.BUSY
        if left <= 0:
            return Wait.TIMEOUT


def _signal_popen(kill: Callable[[int, int], None], agent: subprocess.Popen, sig: int) -> None:
    try:
        kill(agent.pid, sig)  # Popen.send_signal would poll(), racing the waiter thread
    except ProcessLookupError:
        pass


def can_walk() -> bool:
    """Whether /proc lists each process's children (Linux): the freeze-sweep needs it."""
    me = os.getpid()
    return os.path.exists(f"/proc/{me}/task/{me}/children")


def tree_way(group: RunCgroup | None) -> str:
    """How the tree is stopped, as the report says it: "cgroup", "freeze-sweep" or "sweep"."""
    return "cgroup" if group is not None else "freeze-sweep" if can_walk() else "sweep"


def stop_leftovers(
    before: dict[Key, psutil.Process],
    agent_pid: int,
    *,
    kill_after: float,
    stop_log: StopLog,
    group: RunCgroup | None = None,
) -> int:
    """SIGTERM, then after `kill_after` SIGKILL, to whatever remains of the tree (own sessions and orphans too)."""
    if group is not None:
        return _stop_cgroup(group, agent_pid, kill_after=kill_after, stop_log=stop_log)
    leftovers = {k: p for k, p in {**before, **descendants()}.items() if k[0] != agent_pid and _alive(p)}
    procs = list(leftovers.values())
    if procs:
        pids = ", ".join(str(k[0]) for k in sorted(leftovers))
        stop_log.add(f"sending SIGTERM to {len(leftovers)} leftover process(es) of the tree ({pids})")
        for proc in procs:
            _send(proc, signal.SIGTERM)
            _send(proc, signal.SIGCONT)
        _wait_gone(procs, kill_after)
    if can_walk():  # always: a snapshot can miss a process that re-forks faster than psutil reads /proc
        return len(leftovers) + freeze.freeze_sweep(agent_pid, {k[0] for k in leftovers}, stop_log.add, reap_orphans)
    if procs:
        _sweep(procs, agent_pid, stop_log)
    return len(leftovers)


def _stop_cgroup(group: RunCgroup, agent_pid: int, *, kill_after: float, stop_log: StopLog) -> int:
    """The cgroup holds every descendant, whatever it did (setsid, double fork, re-forking): kill them all."""
    pids = sorted(p for p in group.pids() if p != agent_pid)
    if pids:
        stop_log.add(f"sending SIGTERM to {len(pids)} leftover process(es) of the tree ({', '.join(map(str, pids))})")
        for pid in pids:
            freeze.kill(pid, signal.SIGTERM)
            freeze.kill(pid, signal.SIGCONT)
        group.wait_empty(kill_after)
    if group.populated():
        left = group.pids()
        stop_log.add(f"sending SIGKILL to the {len(left)} process(es) left in the run's cgroup (cgroup.kill)")
        try:
            group.kill()
        except OSError as err:
            stop_log.add(f"cgroup.kill failed ({err}): freezing and sweeping instead")
            return len(pids) + freeze.freeze_sweep(agent_pid, set(pids), stop_log.add, reap_orphans)
        pids = sorted(set(pids) | set(left))
    if not group.wait_empty(freeze.SWEEP_SECONDS):
        stop_log.add(f"the run's cgroup still holds {len(group.pids())} process(es) after {freeze.SWEEP_SECONDS:g}s")
    elif pids:
        stop_log.add(f"the run's cgroup is empty: the whole tree is gone (cgroup {group.path.name})")
    return len(pids)


def _sweep(procs: list[psutil.Process], agent_pid: int, stop_log: StopLog) -> None:
    """Without /proc's children lists: SIGKILL by psutil snapshots, a few rounds (a fast re-forker can escape)."""
    stubborn = [p for p in procs if _alive(p)]
    for _ in range(5):  # bounded: a process stuck in the kernel (state D) cannot be waited out forever
        # a process forked during the sweep is caught by a fresh look
        stubborn += [p for k, p in descendants().items() if k[0] != agent_pid and _alive(p) and p not in stubborn]
        if not stubborn:
            break
        stop_log.add(f"sending SIGKILL to {len(stubborn)} leftover process(es)")
        for proc in stubborn:
            _send(proc, signal.SIGKILL)
        _wait_gone(stubborn, 2.0)
        stubborn = [p for p in stubborn if _alive(p)]


def _wait_gone(procs: list[psutil.Process], timeout: float) -> None:
    import psutil

    if procs:
        psutil.wait_procs(procs, timeout=timeout)


class LiveTree:
    """The machine's process tree, as the Supervisor reaches it; a unit test passes a fake instead."""

    def new_cgroup(self, run_id: str) -> RunCgroup | None:
        return cgroup.create(run_id)

    def reap_orphans(self, agent_pid: int | None) -> int:
        return reap_orphans(agent_pid)

    def has_children(self) -> bool:
        return has_children()

    def descendants(self) -> dict[Key, psutil.Process]:
        return descendants()

    def stop_leftovers(
        self,
        before: dict[Key, psutil.Process],
        agent_pid: int,
        *,
        kill_after: float,
        stop_log: StopLog,
        group: RunCgroup | None = None,
    ) -> int:
        return stop_leftovers(before, agent_pid, kill_after=kill_after, stop_log=stop_log, group=group)
