"""The fallback stop when the run has no cgroup: freeze the tree with SIGSTOP, then SIGKILL it, sweep by sweep.

The tree is walked through /proc's children lists (Linux); as a subreaper, capguard adopts every orphan of it.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable

MAX_TREE = 100_000  # a walk of the tree stops there: bounded even against a fork bomb
SWEEP_SECONDS = 10.0  # the freeze and the kill sweeps each give up after this (a process stuck in the kernel)


def freeze_sweep(agent_pid: int, known: set[int], say: Callable[[str], None], reap: Callable[[int], object]) -> int:
    """SIGSTOP every process below us until a sweep finds none new twice in a row, then SIGKILL them all and
    sweep until the tree is empty twice in a row. A stopped process cannot fork, and a process with a signal
    pending cannot finish a fork, so even a tree that re-forks every millisecond is caught. Returns how many
    processes were found that `known` (already signalled) did not hold.
    """
    frozen: set[int] = set()
    deadline, quiet, rounds = time.monotonic() + SWEEP_SECONDS, 0, 0
    while quiet < 2 and time.monotonic() < deadline:
        rounds += 1
        reap(agent_pid)  # zombies only slow the walk down
        fresh = set(walk(agent_pid, signal.SIGSTOP)) - frozen
        frozen |= fresh
        quiet = 0 if fresh else quiet + 1
    if not frozen:
        return 0
    say(f"froze {len(frozen)} process(es) of the tree with SIGSTOP ({rounds} sweeps); sending SIGKILL")
    deadline, quiet, left = time.monotonic() + SWEEP_SECONDS, 0, []
    while quiet < 2 and time.monotonic() < deadline:
        left = walk(agent_pid, signal.SIGKILL)
        frozen.update(left)
        reap(agent_pid)  # adopted orphans that died: reaped, they leave the walk
        quiet = 0 if left else quiet + 1
        if left:
            time.sleep(0.005)  # let the kills land before looking again
    if left:
        say(f"{len(left)} process(es) of the tree still there after {SWEEP_SECONDS:g}s ({left[:10]})")
    else:
        say("the tree was empty twice in a row: the whole tree is gone (freeze-sweep)")
    return len(frozen - known)


def walk(agent_pid: int | None = None, sig: int | None = None) -> list[int]:
    """Every live (non-zombie) process below us, from /proc's children lists; bounded by MAX_TREE.

    With `sig`, each process is signalled the moment it is found, before its children are read: a process
    that forks and exits faster than the walk reads /proc is caught alive (stopped) rather than seen dead.
    """
    seen: set[int] = set()
    todo = _children(os.getpid())
    while todo and len(seen) < MAX_TREE:
        pid = todo.pop()
        if pid in seen:
            continue
        seen.add(pid)
        if sig is not None and pid != agent_pid:  # the agent is its Popen's, signalled by the stop sequence
            kill(pid, sig)
        todo += _children(pid)
    return sorted(pid for pid in seen if pid != agent_pid and not _zombie(pid))


def _children(pid: int) -> list[int]:
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return []
    found: list[int] = []
    for task in tasks:
        try:
            with open(f"/proc/{pid}/task/{task}/children") as handle:
                found += [int(x) for x in handle.read().split()]
        except (OSError, ValueError):
            continue
    return found


def _zombie(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            stat = handle.read()
    except OSError:
        return True  # gone
    return stat[stat.rindex(b")") + 2 :][:1] in (b"Z", b"X")


def kill(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass
