"""Platform specifics in one place: child subreaper, parent-death signal (Linux prctl), joining a cgroup.

Elsewhere these are no-ops and the supervisor relies on its process-tree snapshots alone.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import signal
import sys

ON_LINUX = sys.platform.startswith("linux")
_PR_SET_PDEATHSIG = 1
_PR_SET_CHILD_SUBREAPER = 36
_libc = None


def _prctl(option: int, value: int) -> bool:
    global _libc
    if not ON_LINUX:  # pragma: no cover - py-not-linux
        return False
    if _libc is None:
        _libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    return _libc.prctl(option, value, 0, 0, 0) == 0


def die_with_parent_hook(cgroup_procs: str | None = None):
    """A preexec_fn: if capguard dies, the agent is killed rather than left running uncapped.

    With `cgroup_procs` (a cgroup's cgroup.procs file) the child also moves itself there before exec, so
    everything it ever starts is born inside. libc is loaded here, before the fork, so the child only makes
    a few system calls; a failed move is seen by the parent, which checks the cgroup after the spawn.
    """
    if not ON_LINUX:  # pragma: no cover - py-not-linux
        return None
    # orphans of the agent's tree are re-parented to us, so none escapes the final sweep (this also loads libc)
    _prctl(_PR_SET_CHILD_SUBREAPER, 1)
    parent = os.getpid()

    def hook() -> None:
        _prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL))
        if os.getppid() != parent:  # capguard died before the prctl took effect
            os._exit(1)
        if cgroup_procs is not None:
            try:
                fd = os.open(cgroup_procs, os.O_WRONLY)
                try:
                    os.write(fd, str(os.getpid()).encode())
                finally:
                    os.close(fd)
            except OSError:
                pass  # run outside it: the parent notices and falls back to the freeze-sweep

    return hook


def start_ticks(pid: int) -> int | None:
    """When a process started, in clock ticks since boot (/proc/<pid>/stat field 22): tells a pid's reuse apart."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            stat = handle.read()
    except OSError:
        return None
    fields = stat[stat.rindex(b")") + 2 :].split()  # after "pid (comm) ", whatever the name holds
    return int(fields[19])
