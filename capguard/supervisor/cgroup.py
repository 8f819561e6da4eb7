"""A cgroup v2 of its own for each run: every descendant of the agent is born inside and dies with `cgroup.kill`.

Used where the machine allows it (a writable cgroup2 directory, kernel >= 5.14); otherwise capguard freezes and sweeps.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from capguard.supervisor import compat

log = logging.getLogger(__name__)
PREFIX = "capguard-"  # capguard-<run id>-<capguard pid>-<its start ticks>: the name says who owns it
GUARD = Path(__file__).with_name("cgroup_guard.py")


def disabled() -> bool:
    """CAPGUARD_CGROUP=off: never use a cgroup (tests of the fallback; a machine whose cgroups misbehave)."""
    return os.environ.get("CAPGUARD_CGROUP", "").strip().lower() in ("off", "0", "no", "false")


def _unescape(field: str) -> str:
    """mountinfo escapes space, tab, newline and backslash as octal (\\040)."""
    for code in ("\\040", "\\011", "\\012", "\\134"):
        field = field.replace(code, chr(int(code[1:], 8)))
    return field


def cgroup2_mount(mountinfo: str) -> str | None:
    """The first cgroup2 mount point in a /proc/self/mountinfo text."""
    for line in mountinfo.splitlines():
        fields = line.split()
        if " - " not in line or len(fields) < 5:
            continue
        after = line.split(" - ", 1)[1].split()
        if after and after[0] == "cgroup2":
            return _unescape(fields[4])
    return None


def own_path(proc_cgroup: str) -> str | None:
    """This process's cgroup v2 path (the "0::" line of /proc/self/cgroup)."""
    for line in proc_cgroup.splitlines():
        if line.startswith("0::"):
            return line[3:].strip() or "/"
    return None


def parent_dir() -> Path | None:
    """The writable cgroup2 directory capguard's own cgroups go in (the one capguard runs in), or None."""
    if not compat.ON_LINUX or disabled():
        return None
    try:
        mount = cgroup2_mount(Path("/proc/self/mountinfo").read_text())
        own = own_path(Path("/proc/self/cgroup").read_text())
    except OSError:
        return None
    if mount is None or own is None:
        return None
    parent = Path(mount) / own.lstrip("/")
    return parent if parent.is_dir() and os.access(parent, os.W_OK | os.X_OK) else None


@dataclass
class RunCgroup:
    path: Path

    @property
    def procs_file(self) -> str:
        return str(self.path / "cgroup.procs")

    def pids(self) -> list[int]:
        """Every process in the cgroup and in any cgroup the agent made below it."""
        found: list[int] = []
        for directory in self._dirs():
            try:
                found += [int(x) for x in (directory / "cgroup.procs").read_text().split()]
            except (OSError, ValueError):
                continue
        return found

    def populated(self) -> bool:
        try:
            return "populated 1" in (self.path / "cgroup.events").read_text()
        except FileNotFoundError:
            return False
        except OSError:
            return True  # cannot tell: assume the worst

    def kill(self) -> None:
        """SIGKILL to every process inside, at once, with no fork race (Linux >= 5.14)."""
        (self.path / "cgroup.kill").write_text("1")

    def wait_empty(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while self.populated():
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.01)
        return True

    def remove(self) -> bool:
        """rmdir, deepest first; a cgroup still populated cannot go, and is left for the next start."""
        for directory in reversed(self._dirs()):
            try:
                directory.rmdir()
            except FileNotFoundError:
                continue
            except OSError as err:
                log.warning("could not remove cgroup %s: %s", directory, err)
                return False
        return True

    def _dirs(self) -> list[Path]:
        """This cgroup and its descendants, parents before children."""
        if not self.path.is_dir():
            return []
        out = [self.path]
        for root, dirs, _ in os.walk(self.path):
            out += [Path(root) / d for d in sorted(dirs)]
        return out


def create(run_id: str) -> RunCgroup | None:
    """A fresh cgroup for this run under a writable parent, or None (logged) where there is none to be had."""
    parent = parent_dir()
    if parent is None:
        log.info(
            "no writable cgroup v2 here%s: the tree is frozen and swept at the stop",
            " (CAPGUARD_CGROUP=off)" if disabled() else "",
        )
        return None
    me = os.getpid()
    path = parent / f"{PREFIX}{run_id}-{me}-{compat.start_ticks(me)}"
    try:
        path.mkdir()
    except OSError as err:
        log.info("cannot create a cgroup in %s (%s): the tree is frozen and swept at the stop", parent, err)
        return None
    group = RunCgroup(path)
    if not (path / "cgroup.kill").exists():  # kernels before 5.14: no race-free kill, so no point
        log.info("cgroup.kill is missing (kernel < 5.14): the tree is frozen and swept at the stop")
        group.remove()
        return None
    return group


def joined(group: RunCgroup, pid: int, name: str) -> bool:
    """Whether our child `pid` (not reaped yet) joined `group` before exec; if not, the cgroup goes (logged)."""
    if pid in group.pids() or not _still_running(pid):  # one that already exited: its children were born inside
        log.info("%s runs in its own cgroup %s; the tree is stopped with cgroup.kill", name, group.path)
        return True
    log.warning("%s could not join its cgroup %s: the tree is frozen and swept at the stop", name, group.path)
    group.remove()
    return False


def _still_running(pid: int) -> bool:
    try:
        return os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is None  # WNOWAIT: Popen reaps it
    except ChildProcessError:
        return False


def release(group: RunCgroup | None, guard: subprocess.Popen | None) -> None:
    """The run is over: kill anything still inside (only on an error path), remove the cgroup, end the guard."""
    if group is not None:
        try:
            if group.populated():
                log.warning("killing what is left in the run's cgroup %s", group.path)
                group.kill()
                group.wait_empty(10)
            group.remove()
        except OSError as err:
            log.warning("could not clean up the run's cgroup %s: %s", group.path, err)
    stop_guard(guard)


def start_guard(group: RunCgroup) -> subprocess.Popen | None:
    """A tiny process outside the cgroup that kills it when capguard's end of a pipe closes, however capguard died.

    Without it, a capguard killed by SIGKILL would leave the agent's grandchildren running (the kernel's
    death signal reaches the agent alone) until the next capguard start.
    """
    try:
        return subprocess.Popen(
            [sys.executable, "-I", "-S", str(GUARD), str(group.path)],
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env={},
            start_new_session=True,
            close_fds=True,
        )  # own session: no Ctrl-C, no SIGHUP
    except OSError as err:
        log.warning("could not start the cgroup guard: %s", err)
        return None


def stop_guard(guard: subprocess.Popen | None) -> None:
    if guard is None:
        return
    try:
        if guard.stdin is not None:  # started with a pipe (start_guard)
            guard.stdin.close()  # EOF: the guard finds the cgroup gone (or kills what is left) and exits
        guard.wait(timeout=15)
    except (OSError, subprocess.TimeoutExpired) as err:
        log.warning("the cgroup guard did not end: %s", err)


def _owner(name: str) -> tuple[int, int | None] | None:
    """(pid, start ticks) of the capguard that made a cgroup called `name`, or None if not one of ours."""
    if not name.startswith(PREFIX):
        return None
    parts = name[len(PREFIX) :].split("-")
    if len(parts) != 3 or not parts[1].isdigit():
        return None
    return int(parts[1]), int(parts[2]) if parts[2].isdigit() else None


def _abandoned(parent: Path) -> Iterator[RunCgroup]:
    for entry in sorted(parent.iterdir()):
        owner = _owner(entry.name)
        if owner is None or not entry.is_dir():
            continue
        pid, ticks = owner
        now = compat.start_ticks(pid)
        if now is None or (ticks is not None and now != ticks):  # that capguard is gone (its pid reused or free)
            yield RunCgroup(entry)


def kill_leftovers() -> int:
    """At start: kill and remove the cgroups of runs whose capguard died (SIGKILL, a crash, a power cut...).

    Returns how many were removed. Never raises: a leftover that cannot be removed is logged and left.
    """
    parent = parent_dir()
    if parent is None:
        return 0
    removed = 0
    try:
        leftovers = list(_abandoned(parent))
    except OSError as err:
        log.warning("could not look for leftover cgroups in %s: %s", parent, err)
        return 0
    for group in leftovers:
        try:
            if group.populated():
                log.warning("killing what is left in %s, a cgroup of a capguard that died", group.path)
                group.kill()
                group.wait_empty(5.0)
            removed += group.remove()
        except OSError as err:
            log.warning("could not clean up the leftover cgroup %s: %s", group.path, err)
    return removed
