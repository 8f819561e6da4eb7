"""Has the meter gone blind? Checks that the agent can still write the files capguard reads, and capguard its own.

The policy is pure over probed facts; the probe (statvfs) is passed in, so a full disk can be faked in tests.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from capguard.metering.watch import nearest_existing

# Below this the agent's next log line may not fit: aider then drops it silently and keeps spending.
MIN_FREE_BYTES = 1 << 20
MIN_FREE_INODES = 16


@dataclass(frozen=True)
class Space:
    """What a directory's filesystem has left, as statvfs tells (for an unprivileged writer)."""

    free_bytes: int
    free_inodes: int | None  # None: the filesystem does not count inodes (btrfs reports 0 of 0)
    read_only: bool


def probe(folder: Path) -> Space:
    st = os.statvfs(folder)
    return Space(
        free_bytes=st.f_bavail * st.f_frsize,
        free_inodes=st.f_favail if st.f_files else None,
        read_only=bool(st.f_flag & os.ST_RDONLY),
    )


def space_problem(folder: Path, space: Space) -> str | None:
    """Why files in `folder` may no longer be written, or None."""
    if space.read_only:
        return f"{folder} is on a read-only filesystem"
    if space.free_bytes < MIN_FREE_BYTES:
        return f"the disk holding {folder} is full ({space.free_bytes:,} bytes free)"
    if space.free_inodes is not None and space.free_inodes < MIN_FREE_INODES:
        return f"the disk holding {folder} has no free inodes left"
    return None


def folder_problem(folder: Path) -> str | None:
    """A directory capguard made for the run (the run dir) must still be there and writable."""
    if not folder.is_dir():
        return f"the run directory {folder} is gone"
    if not os.access(folder, os.W_OK):  # also false for root on a read-only mount
        return f"the run directory {folder} is not writable"
    return None


def problem(watched: Iterable[Path], run_dir: Path | None, space: Callable[[Path], Space] = probe) -> str | None:
    """Why the run is blind, or None: the run dir gone or unwritable, or a disk the metered files need full.

    `watched` are the folders of the metered files (a folder not there yet is checked at its nearest parent).
    """
    if run_dir is not None:
        why = folder_problem(run_dir)
        if why:
            return why
    folders = [nearest_existing(p) for p in watched] + ([run_dir] if run_dir is not None else [])
    for folder in dict.fromkeys(folders):
        try:
            why = space_problem(folder, space(folder))
        except OSError as err:
            why = f"cannot check the disk holding {folder}: {err.strerror or err}"
        if why:
            return why
    return None
