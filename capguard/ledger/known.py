"""The SQLite ledgers this data dir has used, so that a missing one is an error and not a fresh, empty month.

A list in the data dir (one JSON string a line, appended): a path on it whose file is gone was deleted or moved.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

from capguard import paths
from capguard.core.errors import DataDirError, LedgerError
from capguard.private_files import private_dir

log = logging.getLogger(__name__)


def known_file() -> Path:
    return paths.data_home() / "known-ledgers"


def _key(path: Path) -> str:
    return os.path.realpath(path)


def known() -> set[str]:
    try:
        text = known_file().read_text(encoding="utf-8")
    except OSError:
        return set()
    found = set()
    for line in text.splitlines():
        try:
            found.add(json.loads(line))
        except ValueError:
            continue  # a torn last line: the next remember() appends the path again
    return found


def check_present(path: Path) -> None:
    """Refuse a ledger file that was used before and is gone now; a path never used before is a new ledger."""
    if path.exists() or _key(path) not in known():
        return
    raise LedgerError(
        f"ledger {path} is gone: capguard used it before, and a new empty ledger would forget this month's spend;"
        " restore it from a backup, or start a new ledger there with: capguard ledger init"
    )


def remember(path: Path) -> None:
    """Record that the ledger at `path` exists (once per path). Best effort: an unwritable data dir only loses the
    check above, never the run."""
    key = _key(path)
    if key in known():
        return
    try:
        target = known_file()
        private_dir(target.parent, stderr=None)  # capguard's data dir: created 0700, as every other path makes it
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            os.write(fd, (json.dumps(key) + "\n").encode("utf-8"))  # O_APPEND: one write per line, never interleaved
        finally:
            os.close(fd)
    except (OSError, DataDirError) as exc:
        log.warning("could not record ledger %s in %s: %s", key, known_file(), exc)
