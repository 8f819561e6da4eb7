"""Platform specifics in one place: child subreaper and parent-death signal (Linux prctl).

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


def become_subreaper() -> bool:
    """Orphans of the agent's tree are re-parented to us, so none escapes the final sweep."""
    return _prctl(_PR_SET_CHILD_SUBREAPER, 1)


def die_with_parent_hook():
    """A preexec_fn: if capguard dies, the agent is killed rather than left running uncapped.

    libc is loaded here, before the fork, so the child only makes one system call.
    """
    if not ON_LINUX:  # pragma: no cover - py-not-linux
        return None
    _prctl(_PR_SET_CHILD_SUBREAPER, 1)  # loads libc; harmless to repeat
    parent = os.getpid()

    def hook() -> None:
        _prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL))
        if os.getppid() != parent:  # capguard died before the prctl took effect
            os._exit(1)

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
