"""`capguard import gemini [PATH...]`: Gemini CLI's session files, one ledger run per session.

Where from: PATH (a `.gemini` folder, its `tmp/`, a project's folder or a session file), else
`$GEMINI_CLI_HOME/.gemini/tmp`, else `~/.gemini/tmp`: every `<project>/chats/session-*.jsonl` and the subagents'
`<project>/chats/<session id>/*.jsonl` (counted in their parent's run). A run's id is `gemini-<session id>`; each
reply keeps the key live metering gives it (`gemini:<message id>`), so importing what capguard metered, or importing
twice, adds nothing. Incremental: a file unchanged since the last import is not read; a grown one is read on from
where the last import stopped. Gemini writes no cost: replies are priced as live metering prices them.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from capguard.agents.gemini.logs import SessionParser
from capguard.core.events import Malformed, Reply
from capguard.core.pricing import Pricer
from capguard.importers.claude_files import project_of
from capguard.importers.state import ImportState, each_new_read, new_counts
from capguard.importers.unit_prices import UnitPricer
from capguard.ledger.bulk import ImportWriter, RunRow

AGENT = "gemini"
_KEYS_PER_QUERY = 500


def session_roots(paths: Iterable[str | os.PathLike] = (), env: Mapping[str, str] | None = None) -> list[Path]:
    """Where to look: the given paths, else Gemini's temp folder (`GEMINI_CLI_HOME` moves it, as it moves Gemini's)."""
    given = [Path(p).expanduser() for p in paths]
    if given:
        return given
    env = os.environ if env is None else env
    base = env.get("GEMINI_CLI_HOME") or env.get("HOME") or str(Path.home())
    return [Path(base) / ".gemini" / "tmp"]


def _is_session_file(path: Path) -> bool:
    """A main session (`chats/session-*.jsonl`) or a subagent's (`chats/<session>/<id>.jsonl`)."""
    if path.suffix != ".jsonl":
        return False
    if path.parent.name == "chats":
        return path.name.startswith("session-")
    return path.parent.parent.name == "chats"


def find_sessions(roots: Iterable[Path]) -> list[Path]:
    found: set[Path] = set()
    for root in roots:
        if root.is_file():
            found.add(root.resolve())
            continue
        base = root / "tmp" if (root / "tmp").is_dir() and not (root / "chats").is_dir() else root
        for folder, dirs, files in os.walk(base):
            dirs.sort()
            for name in files:
                path = Path(folder, name)
                if _is_session_file(path):
                    found.add(path.resolve())
    return sorted(found)


def project_dirs(roots: Iterable[Path]) -> dict[str, str]:
    """Gemini's registry (`projects.json`, next to `tmp/`): a project folder's short name -> its working directory."""
    names: dict[str, str] = {}
    for root in roots:
        for folder in [root, *root.parents][:4]:
            try:
                doc = json.loads((folder / "projects.json").read_text())
            except (OSError, ValueError, RecursionError):
                continue
            projects = doc.get("projects") if isinstance(doc, dict) else None
            if isinstance(projects, dict):
                names.update((short, cwd) for cwd, short in projects.items() if isinstance(short, str))
            break
    return names


def _utc(at: float | None) -> str | None:
    if at is None:
        return None
    try:
        return datetime.fromtimestamp(at, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    except (OverflowError, OSError, ValueError):
        return None


@dataclass
class Session:
    run_id: str
    path: str
    cwd: str | None
    started_utc: str | None = None
    ended_utc: str | None = None
    rows: list[tuple] = field(default_factory=list)
    malformed: int = 0
    suspicious: int = 0


def read_session(
    path: Path, data: bytes, base: int, pricer: UnitPricer, cwd: str | None, run_id: str | None = None
) -> Session:
    """The priced replies of one file's complete lines (`data`, read from byte `base`); `run_id`: the file's run as
    an earlier import found it (a file read on from an offset has its header behind it)."""
    subagent = path.parent.name != "chats"
    parser = SessionParser(source=str(path), subagent=subagent)
    # a subagent's replies belong to the session that ran it: the folder is named after it
    session = Session(f"gemini-{path.parent.name}" if subagent else run_id or "", str(path), cwd)
    pos = 0
    while pos < len(data):
        end = data.find(b"\n", pos)
        end = len(data) if end < 0 else end
        line, offset, pos = data[pos:end], base + pos, end + 1
        for found in parser.feed(line, offset):
            if isinstance(found, Malformed):
                session.malformed += 1
            elif isinstance(found, Reply):
                session.rows.append(_row(found, session, pricer))
                session.suspicious += found.suspicious is not None
        if not session.run_id and parser.file_session:
            session.run_id = f"gemini-{parser.file_session}"
    if not session.run_id:  # read on from an offset: the header is behind us; the file name holds the id's start
        session.run_id = f"gemini-file-{path.stem}"
    session.rows = [(session.run_id, *row[1:]) for row in session.rows]
    return session


def _row(reply: Reply, session: Session, pricer: UnitPricer) -> tuple:
    at = _utc(reply.at)
    if at:
        session.started_utc = min(filter(None, (session.started_utc, at)))
        session.ended_utc = max(filter(None, (session.ended_utc, at)))
    cost, priced_by = pricer.price(reply.model, reply.input_tokens, reply.output_tokens, reply.cache_read_tokens, 0)
    details = json.dumps(reply.details, sort_keys=True) if reply.details else None
    return (
        session.run_id,
        reply.key,
        at or "",
        reply.model,
        reply.input_tokens,
        reply.output_tokens,
        reply.cache_read_tokens,
        0,
        cost,
        priced_by,
        session.path,
        reply.offset,
        details,
    )


def _known(writer: ImportWriter, keys: list[str]) -> set[str]:
    known: set[str] = set()
    for i in range(0, len(keys), _KEYS_PER_QUERY):
        chunk = keys[i : i + _KEYS_PER_QUERY]
        marks = ", ".join("?" * len(chunk))
        sql = f"SELECT dedupe_key FROM usage_events WHERE dedupe_key IN ({marks})"
        known.update(row["dedupe_key"] for row in writer.query(sql, chunk))
    return known


def import_sessions(
    writer: ImportWriter,
    state: ImportState,
    files: list[Path],
    *,
    roots: Iterable[Path] = (),
    pricer_overrides: dict | None = None,
    line_of: Callable[[str | None], str | None] = lambda project: None,
    on_progress: Callable[[int, int, int], None] | None = None,
) -> dict:
    """Read, price and write each file's new lines; sessions whose replies are all in the ledger already (metered
    live, or imported before) create no run. Returns summary figures."""
    pricer = UnitPricer(Pricer(pricer_overrides or {}))
    names = project_dirs(roots)
    projects: dict[str, str | None] = {}
    counts = {**new_counts(files), "sessions_covered": 0}
    for path, data, start, stat in each_new_read(files, state, counts, on_progress):
        chats = path.parent if path.parent.name == "chats" else path.parent.parent
        mark = state.files.get(str(path))
        session = read_session(path, data, start, pricer, names.get(chats.parent.name), mark.run_id if mark else None)
        counts["malformed_lines"] += session.malformed
        counts["suspicious_replies"] += session.suspicious
        known = _known(writer, [row[1] for row in session.rows])
        fresh = [row for row in session.rows if row[1] not in known]
        if session.rows and not fresh:
            counts["sessions_covered"] += 1
        if fresh:
            _write(writer, session, fresh, projects, line_of)
            if writer.pending >= 20_000:
                writer.flush()
        state.mark(str(path), stat, start + len(data), session.run_id)
    writer.finish()
    state.save()
    return counts


def _write(writer: ImportWriter, session: Session, rows: list[tuple], projects: dict, line_of: Callable) -> None:
    project = project_of(session.cwd, projects)
    first = session.started_utc or min(row[2] for row in rows) or "1970-01-01T00:00:00.000000Z"
    last = session.ended_utc or first
    run = writer.run(
        RunRow(
            run_id=session.run_id,
            agent=AGENT,
            cwd=session.cwd or "",
            project=project,
            started_utc=first,
            ended_utc=last,
            line=line_of(project),
            report={"imported_from": "Gemini CLI session file", "file": session.path},
        )
    )
    run.widen(first, last)
    run.malformed += session.malformed
    writer.add([(row[0], row[1], row[2] or first, *row[3:]) for row in rows])
