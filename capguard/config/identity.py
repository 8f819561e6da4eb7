"""Who is running and where: user identity (config, git email, $USER@host), host, project root."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path


def _git(cwd: Path, *args: str) -> str | None:
    try:
        done = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    value = done.stdout.strip()
    return value if done.returncode == 0 and value else None


def host() -> str:
    return os.uname().nodename  # what socket.gethostname() returns, without importing socket at start-up


def user(cwd: Path, configured: str | None = None) -> str:
    """The identity runs are charged to: config `user`, else git `user.email`, else `$USER@host`."""
    return resolve_user(cwd, configured)[0]


def resolve_user(cwd: Path, configured: str | None = None) -> tuple[str, str]:
    """`user()` and where it came from: "configured" (config or CAPGUARD_USER), "git user.email" or "$USER@host"."""
    if configured:
        return configured, "configured"
    email = _git(cwd, "config", "--get", "user.email")
    if email:
        return email, "git user.email"
    import getpass  # only when git names nobody

    try:
        name = getpass.getuser()
    except (KeyError, OSError):
        name = os.environ.get("USER", "unknown")
    return f"{name}@{host()}", "$USER@host"


def project(cwd: Path) -> str:
    """The git root of the working directory (the nearest folder holding `.git`), else the directory itself.

    Looked up on disk rather than with `git rev-parse`: a run's start-up is on every agent launch."""
    here = cwd.resolve()
    for folder in [here, *here.parents]:
        if (folder / ".git").exists():
            return str(folder)
    return str(here)
