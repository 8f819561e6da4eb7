"""`capguard import aider [PATH...]`: aider's analytics logs and chat histories, one ledger run per aider session.

An analytics log (`--analytics-log`, JSON lines) has aider's exact figures per reply. `.aider.chat.history.md`
has only the `Tokens: ... Cost: ...` lines, which aider rounds (`12k sent`, `$0.02`): they are imported as aider
wrote them and marked `rounded`. A history session that an analytics session or a supervised run already covers
(it started within a few seconds of it, same user) is skipped; an analytics session replaces a history session
imported earlier. Keys: `aider:import:<file>@<offset>` (analytics, AnalyticsParser's form) and
`aider:history:<file>@<session offset>#<n>`; a reply a supervised run already metered from the same analytics
log line is not imported twice.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from capguard.agents.aider.logs import AnalyticsParser, CostLine, cost_lines
from capguard.core import sanitize
from capguard.core.events import Malformed, Reply
from capguard.core.pricing import Pricer
from capguard.importers.claude_files import project_of
from capguard.importers.state import ImportState, each_new_read, new_counts
from capguard.importers.unit_prices import UnitPricer
from capguard.ledger.bulk import ImportWriter, RunRow
from capguard.ledger.records import normalize_utc

AGENT = "aider"
HISTORY_NAME = ".aider.chat.history.md"
_SKIP_DIRS = {".git", "node_modules", ".venv", "venv", "__pycache__", ".tox", ".mypy_cache", "site-packages"}
_HEADER = re.compile(rb"^# aider chat started at (\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2})[ \t]*$", re.MULTILINE)
_MODEL = re.compile(r"^> (?:Main model|Model): (\S+)", re.MULTILINE)
_MODEL_FLAG = re.compile(r"^> aider .*?--model[ =](\S+)", re.MULTILINE)
COVER_S = 2.0  # a history session starting within a covering run's span (this much slack) is that run


# -- finding the files ---------------------------------------------------------------------------------------


def _is_analytics(path: Path) -> bool:
    try:
        with open(path, "rb") as handle:
            head = handle.read(4096)
    except OSError:
        return False
    first = head.split(b"\n", 1)[0]
    try:
        entry = json.loads(first)
    except (ValueError, RecursionError):
        return False
    return isinstance(entry, dict) and "event" in entry and "time" in entry


def find_logs(paths: Iterable[str | os.PathLike]) -> tuple[list[Path], list[Path]]:
    """(analytics logs, chat histories) in or below each path; a file is taken by its content."""
    analytics: set[Path] = set()
    histories: set[Path] = set()
    for given in paths:
        root = Path(given).expanduser()
        if root.is_file():
            (histories if root.name.endswith(".md") else analytics).add(root.resolve())
            continue
        for folder, dirs, files in os.walk(root):
            dirs[:] = sorted(d for d in dirs if d not in _SKIP_DIRS)
            for name in files:
                path = Path(folder, name)
                if name == HISTORY_NAME or name.endswith(".chat.history.md"):
                    histories.add(path.resolve())
                elif name.endswith(".jsonl") and "analytics" in name and _is_analytics(path):
                    analytics.add(path.resolve())
    return sorted(analytics), sorted(histories)


def _file_id(path: str) -> str:
    return hashlib.sha1(path.encode("utf-8", "surrogateescape")).hexdigest()[:12]


def _utc_of_unix(value: object) -> str | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    try:
        return datetime.fromtimestamp(value, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    except (OverflowError, OSError, ValueError):
        return None


def _seconds(utc: str) -> float:
    return datetime.fromisoformat(utc[:-1] + "+00:00").timestamp()


# -- analytics logs ------------------------------------------------------------------------------------------


@dataclass
class Session:
    """One aider session found in a file: where it starts, when, and its usage rows."""

    run_id: str
    path: str
    offset: int
    started_utc: str
    ended_utc: str
    model: str | None = None
    rows: list[tuple] = field(default_factory=list)
    malformed: int = 0
    suspicious: int = 0  # replies with a figure at capguard.core.sanitize's bound, counted as the bound
    report: dict = field(default_factory=dict)


def analytics_sessions(path: str, data: bytes, base: int, pricer: UnitPricer) -> list[Session]:
    """Sessions of an analytics log (a `launched` event starts one) with their priced replies."""
    parser = AnalyticsParser("import", path)
    sessions: list[Session] = []
    pos = 0
    while pos < len(data):
        end = data.find(b"\n", pos)
        end = len(data) if end < 0 else end
        line, offset, pos = data[pos:end], base + pos, end + 1
        if not line.strip():
            continue
        try:
            entry = json.loads(line)
            event, at = (
                (entry.get("event"), _utc_of_unix(entry.get("time"))) if isinstance(entry, dict) else (None, None)
            )
        except (ValueError, RecursionError):  # the parser below counts the line as malformed
            event, at = None, None
        if at and (event == "launched" or not sessions):
            sessions.append(
                Session(
                    f"aider-a{_file_id(path)}-{offset}",
                    path,
                    offset,
                    at,
                    at,
                    report={"imported_from": "aider analytics log", "file": path},
                )
            )
        if not sessions:
            continue
        session = sessions[-1]
        if at and at > session.ended_utc:
            session.ended_utc = at
        if event == "cli session":
            props = entry.get("properties") if isinstance(entry.get("properties"), dict) else {}
            model = sanitize.name(props.get("main_model"))
            if model and "REDACTED" not in model:
                session.model = model
        elif event == "exit" and isinstance(entry.get("properties"), dict):
            reason = entry["properties"].get("reason")
            session.report["exit_reason"] = sanitize.name(reason) if isinstance(reason, str) else None
        for found in parser.feed(line, offset):
            if isinstance(found, Malformed):
                session.malformed += 1
            elif isinstance(found, Reply):
                session.rows.append(_analytics_row(found, session, at, pricer))
                session.suspicious += found.suspicious is not None
    return sessions


def _analytics_row(reply: Reply, session: Session, at: str | None, pricer: UnitPricer) -> tuple:
    model = reply.model if reply.model and "REDACTED" not in reply.model and reply.model != "None" else session.model
    cost: int | None
    priced_by: str | None
    if reply.reported_cost_micro:
        cost, priced_by = reply.reported_cost_micro, "agent"
    else:
        cost, priced_by = pricer.price(model, reply.input_tokens, reply.output_tokens, 0, 0)
    return (
        session.run_id,
        reply.key,
        at or session.ended_utc,
        model,
        reply.input_tokens,
        reply.output_tokens,
        0,
        0,
        cost,
        priced_by,
        session.path,
        reply.offset,
        None,
    )


# -- chat histories ------------------------------------------------------------------------------------------


def history_sessions(
    path: str, data: bytes, base: int, pricer: UnitPricer, local: Callable[[str], str]
) -> list[Session]:
    """Sessions of a chat history (`# aider chat started at ...`, local time) with their cost lines."""
    heads = list(_HEADER.finditer(data))
    sessions = []
    for i, head in enumerate(heads):
        end = heads[i + 1].start() if i + 1 < len(heads) else len(data)
        text = data[head.start() : end].decode("utf-8", "replace")
        started = local(head.group(1).decode())
        offset = base + head.start()
        session = Session(
            f"aider-h{_file_id(path)}-{offset}",
            path,
            offset,
            started,
            started,
            report={"imported_from": "aider chat history (rounded figures)", "file": path},
        )
        model = _MODEL.search(text) or _MODEL_FLAG.search(text)
        session.model = model.group(1) if model else None
        found, session.malformed = cost_lines(text)
        for n, cost_line in enumerate(found):
            session.rows.append(_history_row(cost_line, session, n, pricer))
            session.suspicious += max(cost_line.sent, cost_line.received) >= sanitize.MAX_TOKENS or (
                cost_line.message_usd is not None and cost_line.message_usd * 1e6 >= sanitize.MAX_REPLY_USD_MICRO
            )
        sessions.append(session)
    return sessions


def _history_row(line: CostLine, session: Session, n: int, pricer: UnitPricer) -> tuple:
    fresh = max(0, line.sent - line.cache_hit - line.cache_write)
    cost: int | None
    priced_by: str | None
    if line.message_usd is not None:
        cost, priced_by = sanitize.usd_micro(line.message_usd, "message cost"), "agent"
    else:
        cost, priced_by = pricer.price(session.model, fresh, line.received, line.cache_hit, line.cache_write)
    return (
        session.run_id,
        f"aider:history:{session.path}@{session.offset}#{n}",
        session.started_utc,
        session.model,
        fresh,
        line.received,
        line.cache_hit,
        line.cache_write,
        cost,
        priced_by,
        session.path,
        session.offset,
        '{"rounded": true}',
    )


def local_to_utc(text: str) -> str:
    """aider's header time (this machine's local time, no zone) as canonical UTC."""
    return normalize_utc(datetime.strptime(text, "%Y-%m-%d %H:%M:%S").astimezone().isoformat())


# -- the import ----------------------------------------------------------------------------------------------


def covering_spans(writer: ImportWriter) -> list[tuple[str | None, float, float]]:
    """(project, start, end) in unix seconds of this user's aider runs that are not history imports."""
    sql = (
        "SELECT r.id, r.project, r.started_utc, r.ended_utc FROM runs r JOIN users u ON u.id = r.user_id"
        " WHERE r.agent = ? AND u.name = ?"
    )
    spans = []
    for row in writer.query(sql, (AGENT, writer.user)):
        if row["id"].startswith("aider-h"):
            continue
        start = _seconds(row["started_utc"])
        spans.append((row["project"], start, _seconds(row["ended_utc"]) if row["ended_utc"] else float("inf")))
    return spans


def _covered(project: str | None, at: float, spans: list[tuple[str | None, float, float]]) -> bool:
    return any(p == project and start - COVER_S <= at <= end + COVER_S for p, start, end in spans)


def history_runs(writer: ImportWriter) -> list[tuple[str, str | None, float]]:
    """(run id, project, start) of the history sessions imported earlier: an analytics session may replace one."""
    sql = (
        "SELECT r.id, r.project, r.started_utc FROM runs r JOIN users u ON u.id = r.user_id"
        " WHERE r.agent = ? AND u.name = ? AND r.status = 'imported'"
    )
    return [
        (row["id"], row["project"], _seconds(row["started_utc"]))
        for row in writer.query(sql, (AGENT, writer.user))
        if row["id"].startswith("aider-h")
    ]


def import_logs(
    writer: ImportWriter,
    state: ImportState,
    found: tuple[list[Path], list[Path]],
    *,
    pricer_overrides: dict | None = None,
    line_of: Callable[[str | None], str | None] = lambda p: None,
    on_progress: Callable[[int, int, int], None] | None = None,
    local: Callable[[str], str] = local_to_utc,
) -> dict:
    """Analytics logs first (exact), then histories (rounded) minus the sessions already covered."""
    analytics, histories = found
    pricer = UnitPricer(Pricer(pricer_overrides or {}))
    projects: dict[str, str | None] = {}
    files = analytics + histories
    counts: dict[str, Any] = {**new_counts(files), "rounded_replies": 0, "sessions_covered": 0, "sessions_replaced": 0}
    spans = covering_spans(writer)
    old_history = history_runs(writer)
    for path, data, start, stat in each_new_read(files, state, counts, on_progress):
        if path in analytics:
            sessions = found_here = analytics_sessions(str(path), data, start, pricer)
            sessions = _skip_live_rows(writer, str(path), sessions)
            project = project_of(str(path.parent), projects)
            spans += [(project, _seconds(s.started_utc), _seconds(s.ended_utc)) for s in sessions]
            replaced = [rid for rid, p, at in old_history if p == project and any(_covers(s, at) for s in sessions)]
            writer.drop_runs(replaced)
            counts["sessions_replaced"] += len(replaced)
        else:
            sessions = found_here = history_sessions(str(path), data, start, pricer, local)
            project = project_of(str(path.parent), projects)
            kept = [s for s in sessions if not _covered(project, _seconds(s.started_utc), spans)]
            counts["sessions_covered"] += len(sessions) - len(kept)
            sessions = kept
            counts["rounded_replies"] += sum(len(s.rows) for s in sessions)
        for session in sessions:
            _write_session(writer, session, projects, line_of)
            counts["malformed_lines"] += session.malformed
            counts["suspicious_replies"] += session.suspicious
        writer.finish()
        # the last session may still be running: the next import reads it again (its keys are stable)
        state.mark(str(path), stat, found_here[-1].offset if found_here else start + len(data), None)
        state.save()
    return counts


def _covers(session: Session, at: float) -> bool:
    return _seconds(session.started_utc) - COVER_S <= at <= _seconds(session.ended_utc) + COVER_S


def _skip_live_rows(writer: ImportWriter, path: str, sessions: list[Session]) -> list[Session]:
    """Drop replies a supervised run already metered from this very analytics log (same file, same offset)."""
    sql = "SELECT source_offset FROM usage_events WHERE source_file = ? AND dedupe_key NOT LIKE 'aider:import:%'"
    metered = {row["source_offset"] for row in writer.query(sql, (path,))}
    if metered:
        for session in sessions:
            session.rows = [row for row in session.rows if row[11] not in metered]
    return sessions


def _write_session(writer: ImportWriter, session: Session, projects: dict, line_of: Callable) -> None:
    folder = str(Path(session.path).parent)
    project = project_of(folder, projects)
    run = writer.run(
        RunRow(
            run_id=session.run_id,
            agent=AGENT,
            cwd=folder,
            project=project,
            started_utc=session.started_utc,
            ended_utc=session.ended_utc,
            line=line_of(project),
            report=session.report,
        )
    )
    run.widen(session.started_utc, session.ended_utc)
    run.malformed = session.malformed  # a session is always read whole: this is its count
    writer.add(session.rows)
