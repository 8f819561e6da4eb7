"""Where OpenCode keeps its store and the SQL that reads it (I/O; the rows' meaning is in logs.py).

OpenCode 1.18.33: `$XDG_DATA_HOME/opencode/opencode.db` (default `~/.local/share/opencode/`), or `$OPENCODE_DB`.
Tables read: `session` (id, parent_id, directory, times) and `message` (id, session_id, times, data JSON).
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from capguard.core.errors import ConfigError
from capguard.metering.sqlite_rows import Rows, connect_ro

SESSION_COLUMNS = ("id", "parent_id", "directory", "time_created", "time_updated")
MESSAGE_COLUMNS = ("id", "session_id", "time_created", "time_updated", "data")
_SESSIONS = f"SELECT {', '.join(SESSION_COLUMNS)} FROM session"
_MESSAGES = f"SELECT {', '.join(MESSAGE_COLUMNS)} FROM message"


def db_path(env: Mapping[str, str], cwd: Path) -> Path:
    """The store this OpenCode will write. `OPENCODE_DB=:memory:` writes none: capguard could not meter it."""
    named = env.get("OPENCODE_DB")
    if named:
        if named == ":memory:" or named.startswith("file::memory:"):
            raise ConfigError(
                "OPENCODE_DB=:memory: keeps OpenCode's usage in memory only: capguard meters OpenCode from its store,"
                " so it cannot run it this way; unset OPENCODE_DB or name a file"
            )
        path = Path(named).expanduser()
        return path if path.is_absolute() else cwd / path
    data = env.get("XDG_DATA_HOME") or str(Path(env.get("HOME") or Path.home()) / ".local" / "share")
    return Path(data) / "opencode" / "opencode.db"


def last_message_rowid(path: Path) -> int:
    """The store's newest message row before the run (0 if there is no store yet): rows after it are new."""
    if not path.exists():
        return 0
    try:
        with contextlib.closing(connect_ro(path)) as conn:
            (top,) = conn.execute("SELECT coalesce(max(rowid), 0) FROM message").fetchone()
            return int(top)
    except sqlite3.Error:
        return 0  # unreadable now: the live reader says so (fail closed) once the agent runs


def _dicts(cursor: sqlite3.Cursor, columns: tuple[str, ...]) -> Iterator[dict[str, Any]]:
    for values in cursor:
        yield dict(zip(columns, values, strict=True))


RESCAN_MS = 10_000  # rows updated this long before the newest one seen are read again (writes commit out of order)


def live_rows(after_rowid: int, since_ms: int) -> Rows:
    """The rows a run needs: messages inserted after `after_rowid` or created since `since_ms` in a session touched
    since then (both, so a rowid reused after a deletion cannot hide a message), and their sessions and parents.
    Each read takes only what was updated since shortly before the newest update it saw, so a long session costs
    no more to read than a short one."""
    newest = since_ms

    def rows(conn: sqlite3.Connection) -> Iterator[tuple[str, dict[str, Any]]]:
        nonlocal newest
        recent = max(since_ms, newest - RESCAN_MS)
        touched = {
            row["id"]: row
            for row in _dicts(conn.execute(f"{_SESSIONS} WHERE time_updated >= ?", (recent,)), SESSION_COLUMNS)
        }
        query = f"{_MESSAGES} WHERE rowid > ? AND time_updated >= ?"
        messages = {row["id"]: row for row in _dicts(conn.execute(query, (after_rowid, recent)), MESSAGE_COLUMNS)}
        for sid in list(touched):
            query = f"{_MESSAGES} WHERE session_id = ? AND time_created >= ? AND time_updated >= ?"
            found = conn.execute(query, (sid, since_ms, recent))
            messages.update((row["id"], row) for row in _dicts(found, MESSAGE_COLUMNS))
        wanted = {m["session_id"] for m in messages.values()} - touched.keys()
        while wanted:  # sessions of the messages found, and their parents (a subagent's session names its parent)
            marks = ",".join("?" * len(wanted))
            found_sessions = list(
                _dicts(conn.execute(f"{_SESSIONS} WHERE id IN ({marks})", tuple(wanted)), SESSION_COLUMNS)
            )
            touched.update((row["id"], row) for row in found_sessions)
            wanted = {row["parent_id"] for row in found_sessions if row["parent_id"]} - touched.keys()
        parents = {row["parent_id"] for row in touched.values() if row["parent_id"]} - touched.keys()
        if parents:
            marks = ",".join("?" * len(parents))
            touched.update(
                (row["id"], row)
                for row in _dicts(conn.execute(f"{_SESSIONS} WHERE id IN ({marks})", tuple(parents)), SESSION_COLUMNS)
            )
        stamps = [
            r["time_updated"] for r in (*touched.values(), *messages.values()) if isinstance(r["time_updated"], int)
        ]
        # parents before children, sessions before their messages
        for row in sorted(touched.values(), key=lambda r: (r["time_created"], r["id"])):
            yield "session", row
        for row in sorted(messages.values(), key=lambda r: (r["time_created"], r["id"])):
            yield "message", row
        newest = max([newest, *stamps])

    return rows


def all_rows(conn: sqlite3.Connection, updated_after_ms: int = -1) -> Iterator[tuple[str, dict[str, Any]]]:
    """Every session, then every assistant message updated after `updated_after_ms` (an import)."""
    for row in _dicts(conn.execute(f"{_SESSIONS} ORDER BY time_created, id"), SESSION_COLUMNS):
        yield "session", row
    query = (
        f"{_MESSAGES} WHERE time_updated > ? AND json_extract(data, '$.role') = 'assistant' ORDER BY time_created, id"
    )
    for row in _dicts(conn.execute(query, (updated_after_ms,)), MESSAGE_COLUMNS):
        yield "message", row
