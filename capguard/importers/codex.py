"""`capguard import codex [PATH...]`: Codex CLI rollout files, one ledger run per thread (one file per thread).

Where from: PATH (a Codex home, a sessions folder or a rollout file), else `$CODEX_HOME` (default `~/.codex`): its
`sessions/` and `archived_sessions/`. Replies are read by the live meter's parser (`agents/codex/logs.py`), with
its keys (`codex:<response id>`): a reply capguard metered live, or read before from another file, adds nothing.
A thread resumed later appends to its file: the next import reads on from the last `turn_context` it saw (which
names the model of what follows), so nothing is read twice in full and nothing is priced with the wrong model.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from capguard.agents.codex.adapter import codex_home
from capguard.agents.codex.logs import RolloutParser
from capguard.core.events import Malformed, Reply
from capguard.core.pricing import Pricer
from capguard.importers.claude_files import project_of
from capguard.importers.state import ImportState
from capguard.importers.unit_prices import UnitPricer
from capguard.ledger.bulk import ImportWriter, RunRow
from capguard.ledger.records import normalize_utc

AGENT = "codex"
GLOB = "rollout-*.jsonl"
_THREAD = re.compile(r"([0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12})\.jsonl$")
_MARK = re.compile(rb'"(?:token_usage_record|turn_context|session_meta|token_count)"')
_HEAD_BYTES = 1 << 20  # session_meta is the first line (~25 KB: it holds the base instructions)


def rollout_roots(paths: Iterable[str | os.PathLike] = (), env: Mapping[str, str] | None = None) -> list[Path]:
    given = [Path(p).expanduser() for p in paths]
    if given:
        return given
    home = codex_home(os.environ if env is None else env)
    return [home / "sessions", home / "archived_sessions"]


def find_rollouts(roots: Iterable[Path]) -> list[Path]:
    """Every rollout file in or below each root (a Codex home's `sessions/` and `archived_sessions/` included)."""
    found: set[Path] = set()
    for root in roots:
        if root.is_file():
            found.add(root.resolve())
        elif root.is_dir():
            found.update(p.resolve() for p in root.rglob(GLOB) if p.is_file())
    return sorted(found)


def run_id_of(path: Path) -> str:
    """`codex-<thread id>`: the thread's id ends the file's name (a resumed thread keeps its file, so its run)."""
    match = _THREAD.search(path.name)
    if match:
        return f"codex-{match.group(1).lower()}"
    return f"codex-f{hashlib.sha1(str(path).encode('utf-8', 'surrogateescape')).hexdigest()[:16]}"


@dataclass
class Thread:
    """What one read of a rollout file found."""

    rows: list[tuple] = field(default_factory=list)
    malformed: int = 0
    suspicious: int = 0
    first_utc: str | None = None
    last_utc: str | None = None
    resume_at: int | None = None  # offset of the last turn_context read: the next import starts there
    model: str | None = None


def read_meta(path: Path) -> dict[str, Any]:
    """The thread's session_meta payload (its first line), {} if unreadable."""
    try:
        with open(path, "rb") as handle:
            first = handle.readline(_HEAD_BYTES)
        entry = json.loads(first)
    except (OSError, ValueError, RecursionError):
        return {}
    payload = entry.get("payload") if isinstance(entry, dict) and entry.get("type") == "session_meta" else None
    return payload if isinstance(payload, dict) else {}


def read_thread(path: str, data: bytes, base: int, run_id: str, pricer: UnitPricer) -> Thread:
    """Rows (ledger tuples) of every reply in `data`, the bytes of `path` from offset `base`.

    Only the lines that name a type the parser reads are handed to it (found by one regex pass over the bytes: most
    of a rollout is conversation), so a torn or garbled line elsewhere is not counted as malformed here."""
    parser = RolloutParser(path)
    found = Thread()
    last = -1
    for match in _MARK.finditer(data):
        start = data.rfind(b"\n", 0, match.start()) + 1
        if start <= last:
            continue  # a second mark on a line already read
        last = start
        end = data.find(b"\n", match.end())
        end = len(data) if end < 0 else end
        line, offset = data[start:end], base + start
        if match.group() == b'"turn_context"':
            found.resume_at = offset
        for event in parser.feed(line, offset):
            if isinstance(event, Malformed):
                found.malformed += 1
            elif isinstance(event, Reply):
                found.rows.append(_row(event, run_id, pricer))
                found.suspicious += event.suspicious is not None
                at = found.rows[-1][2]
                found.first_utc = found.first_utc or at
                found.last_utc = at
    found.model = parser.model
    return found


def _row(reply: Reply, run_id: str, pricer: UnitPricer) -> tuple:
    cost, priced_by = pricer.price(
        reply.model, reply.input_tokens, reply.output_tokens, reply.cache_read_tokens, reply.cache_write_tokens
    )
    at = reply.at
    occurred = datetime.fromtimestamp(at, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ") if at else None
    return (
        run_id,
        reply.key,
        occurred,
        reply.model,
        reply.input_tokens,
        reply.output_tokens,
        reply.cache_read_tokens,
        reply.cache_write_tokens,
        cost,
        priced_by,
        reply.source,
        reply.offset,
        json.dumps(reply.details) if reply.details else None,
    )


def _read_from(path: Path, state: ImportState) -> tuple[bytes, int, os.stat_result] | None:
    """The file's complete lines from where the last import left off (None: unchanged), its offset, its stat."""
    try:
        stat = path.stat()
        start = state.start_offset(str(path), stat)
        if start is None:
            return None
        with open(path, "rb") as handle:
            handle.seek(start)
            data = handle.read(stat.st_size - start)
    except OSError:
        return None
    return data[: data.rfind(b"\n") + 1], start, stat  # Codex may be writing the last line


def import_rollouts(
    writer: ImportWriter,
    state: ImportState,
    files: list[Path],
    *,
    pricer_overrides: dict | None = None,
    line_of: Callable[[str | None], str | None] = lambda p: None,
    on_progress: Callable[[int, int, int], None] | None = None,
) -> dict:
    """Each rollout file into its thread's run; files unchanged since the last import are skipped."""
    pricer = UnitPricer(Pricer(pricer_overrides or {}))
    projects: dict[str, str | None] = {}
    counts: dict[str, Any] = {
        "files_found": len(files),
        "files_read": 0,
        "files_unchanged": 0,
        "bytes_read": 0,
        "malformed_lines": 0,
        "suspicious_replies": 0,
        "errors": [],
    }
    total = sum(_size(path) for path in files)
    for index, path in enumerate(files):
        read = _read_from(path, state)
        if read is None:
            counts["files_unchanged"] += 1
            continue
        data, start, stat = read
        counts["files_read"] += 1
        counts["bytes_read"] += len(data)
        run_id = run_id_of(path)
        found = read_thread(str(path), data, start, run_id, pricer)
        meta = read_meta(path)
        cwd = meta.get("cwd") if isinstance(meta.get("cwd"), str) else None
        project = project_of(cwd, projects)
        started = _utc(meta.get("timestamp")) or found.first_utc
        if started or found.rows:
            run = writer.run(
                RunRow(
                    run_id=run_id,
                    agent=AGENT,
                    cwd=cwd or str(path.parent),
                    project=project,
                    started_utc=started or found.first_utc or "",
                    ended_utc=found.last_utc or started or "",
                    agent_version=meta.get("cli_version") if isinstance(meta.get("cli_version"), str) else None,
                    line=line_of(project),
                    report={"imported_from": "codex rollout", "file": str(path)},
                    read_on=start > 0,
                )
            )
            run.widen(found.first_utc, found.last_utc)
            run.malformed += found.malformed
            writer.add(found.rows)
        counts["malformed_lines"] += found.malformed
        counts["suspicious_replies"] += found.suspicious
        if writer.pending >= 20_000:
            writer.flush()
        resume = found.resume_at if found.resume_at is not None else start
        state.mark(str(path), stat, resume, run_id)
        if on_progress:
            on_progress(index + 1, counts["bytes_read"], total)
    writer.finish()
    state.save()
    return counts


def _utc(value: object) -> str | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        return normalize_utc(value)
    except ValueError:
        return None


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0
