"""Files only their owner may read: the data dir and run dirs 0700; ledger, reports, status, log 0600.

Whatever the umask: modes are given at creation (os.open, os.mkdir) and set again with chmod, since a umask can
only take bits away. A directory or file of ours found open to others loses those bits, with one stderr line.
"""

from __future__ import annotations

import os
import stat
import sys
from pathlib import Path
from typing import TextIO

from capguard.core.errors import DataDirError

DIR_MODE = 0o700
FILE_MODE = 0o600


def _tighten(path: Path, *, stderr: TextIO | None) -> None:
    """Take group's and others' bits off `path` (ours); the owner's stay (a read-only ledger stays read-only).
    Said once, when it changes something."""
    try:
        st = path.stat()
    except OSError:
        return
    current = stat.S_IMODE(st.st_mode)
    if current & 0o077 == 0 or st.st_uid != os.geteuid():
        return  # already private, or someone else's (a shared folder is its owner's business)
    os.chmod(path, current & ~0o077)
    if stderr is not None:
        print(
            f"capguard: note: {path} was open to other users (mode {current:04o}); capguard made it "
            f"{current & ~0o077:04o}",
            file=stderr,
        )


def private_dir(path: Path, *, stderr: TextIO | None = sys.stderr) -> Path:
    """Create `path` (and its parents, with their usual modes) as 0700, or tighten it if it exists.

    Raises DataDirError (one line: the path, the reason, the fix) when it cannot: every folder made here is
    under capguard's data dir, so the fix is the same everywhere."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.mkdir(path, DIR_MODE)
        except FileExistsError:
            if not path.is_dir():
                raise
            _tighten(path, stderr=stderr)
            return path
        os.chmod(path, DIR_MODE)  # a umask such as 0o277 would have taken the owner's bits too
    except OSError as exc:
        raise unwritable(path, exc) from exc
    return path


def unwritable(path: Path, exc: OSError) -> DataDirError:
    """The one line for a data folder that cannot be made: which path is in the way, why, and what to do."""
    if isinstance(exc, (FileExistsError, NotADirectoryError)):
        culprit = Path(exc.filename or path)
        why, fix = f"{culprit} is a file", f"move {culprit} away"
    else:
        # the folder to make writable is the deepest one that exists (a read-only mount, a folder of root's)
        existing = next((p for p in [path, *path.parents] if p.exists()), path)
        why, fix = exc.strerror or str(exc), f"make {existing} writable"
    return DataDirError(
        f"cannot use capguard's data folder {path} ({why}); {fix}, or set CAPGUARD_HOME to a folder you can write"
    )


def private_file(path: Path, *, stderr: TextIO | None = sys.stderr) -> Path:
    """Create `path` empty as 0600 if it does not exist (so a later open keeps that mode), else tighten it."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE)
    except FileExistsError:
        _tighten(path, stderr=stderr)
        return path
    try:
        os.fchmod(fd, FILE_MODE)
    finally:
        os.close(fd)
    return path


def write_private(path: Path, data: bytes) -> None:
    """Replace `path` atomically with `data`, as a 0600 file (a new inode: the old file's mode does not carry over)."""
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, FILE_MODE)
    try:
        try:
            os.fchmod(fd, FILE_MODE)
            with os.fdopen(fd, "wb", closefd=False) as handle:
                handle.write(data)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
