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

import msgspec

from capguard.agents.codex.adapter import codex_home
from capguard.agents.codex.logs import RolloutParser, parse_timestamp
from capguard.core.events import Malformed, Reply, json_object
from capguard.core.pricing import Pricer
from capguard.core.sanitize import MAX_NAME, MAX_TOKENS
from capguard.importers.claude_files import project_of
from capguard.importers.state import ImportState, each_new_read, new_counts
from capguard.importers.unit_prices import UnitPricer
from capguard.ledger.bulk import ImportWriter, RunRow
from capguard.ledger.records import normalize_utc

AGENT = "codex"
GLOB = "rollout-*.jsonl"
_THREAD = re.compile(r"([0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12})\.jsonl$")
_MARKS = (b'"token_usage_record"', b'"turn_context"', b'"session_meta"', b'"token_count"')
_CONTEXT, _RECORD, _LEGACY = b'"turn_context"', b'"token_usage_record"', b'"token_count"'
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
    meta: dict[str, Any] | None = None  # the session_meta payload, when the bytes read began with it


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


class _Usage(msgspec.Struct):
    input_tokens: int = 0
    cached_input_tokens: int = 0
    cache_write_input_tokens: int = 0
    output_tokens: int = 0
    reasoning_output_tokens: int = 0


class _Payload(msgspec.Struct):
    response_id: str | None = None
    usage: _Usage | None = None
    model: str | None = None  # a turn_context's


class _Line(msgspec.Struct):
    """What the import reads of a token_usage_record or turn_context line, typed as Codex writes it; a line that
    does not decode this way (a null, a float, broken JSON) goes to the parser, which answers for it."""

    type: str | None = None
    timestamp: str | None = None
    payload: _Payload | None = None


_LINE = msgspec.json.Decoder(_Line)


def _line_starts(data: bytes, legacy_until: int) -> list[tuple[int, bool]]:
    """(start, names turn_context) of each line that names a type the parser reads, in file order: one C-speed
    `find` pass per name (most of a rollout is conversation, never looked at). `token_count` is looked for only
    before `legacy_until` (the first token_usage_record; -1: everywhere): the parser ignores it after that."""
    starts: dict[int, bool] = {}
    for mark in _MARKS:
        at = data.find(mark) if mark != _LEGACY or legacy_until else -1
        while at >= 0 and (mark != _LEGACY or legacy_until < 0 or at < legacy_until):
            start = data.rfind(b"\n", 0, at) + 1
            starts[start] = starts.get(start, False) or mark == _CONTEXT
            end = data.find(b"\n", at)
            at = data.find(mark, end) if end >= 0 else -1
    return sorted(starts.items())


def read_thread(path: str, data: bytes, base: int, run_id: str, pricer: UnitPricer, *, typed: bool = True) -> Thread:
    """Rows (ledger tuples) of every reply in `data`, the bytes of `path` from offset `base`.

    Only the lines that name a type the parser reads are looked at, so a torn or garbled line elsewhere is not
    counted as malformed here. `typed`: a usual token_usage_record or turn_context line is decoded by msgspec into
    the few fields it needs and turned into its row here; any other line, and `typed=False` (the reference the
    tests hold this to), goes through the live meter's parser."""
    first_record = data.find(_RECORD) if typed else -1
    found = _read_lines(path, data, base, run_id, pricer, typed, first_record)
    if found is None:  # the first record line was not one (garbled): token_count lines after it may count
        found = _read_lines(path, data, base, run_id, pricer, typed, -1)
    assert found is not None
    return found


def _read_lines(
    path: str, data: bytes, base: int, run_id: str, pricer: UnitPricer, typed: bool, first_record: int
) -> Thread | None:
    parser = RolloutParser(path)
    found = Thread()
    for start, context in _line_starts(data, first_record):
        end = data.find(b"\n", start)
        end = len(data) if end < 0 else end
        line, offset = data[start:end], base + start
        if context:
            found.resume_at = offset
        if parser.records and _only_token_count(line):
            continue  # a token_count after the records began: the parser drops it undecoded
        row = _typed(line, offset, parser, run_id, pricer, found) if typed else None
        if row is not True:
            for event in parser.feed(line, offset) if row is None else [row]:
                if isinstance(event, Malformed):
                    found.malformed += 1
                    continue
                if isinstance(event, Reply):
                    found.suspicious += event.suspicious is not None
                    event = _row(event, run_id, pricer)
                if isinstance(event, tuple):
                    found.rows.append(event)
                    at = event[2]
                    found.first_utc = found.first_utc or at
                    found.last_utc = at
        if start <= first_record < end and not parser.records:
            return None
    found.model = parser.model
    return found


def _only_token_count(line: bytes) -> bool:
    """A JSON-object line naming none of the types the parser reads once records began (a token_count)."""
    if b'"token_usage_record"' in line or b'"turn_context"' in line or b'"session_meta"' in line:
        return False
    return line.startswith(b"{") and line.rstrip().endswith(b"}")


def _typed(
    line: bytes, offset: int, parser: RolloutParser, run_id: str, pricer: UnitPricer, found: Thread
) -> tuple | bool | None:
    """The row of a usual token_usage_record line; True for a line handled with no row (a turn_context, a
    session_meta); None when the parser must answer (anything unusual). Holds to `_row(parser.feed(...))`."""
    if b'"session_meta"' in line:
        try:
            meta = json_object(line)
        except ValueError:
            return None
        payload = meta.get("payload")
        if meta.get("type") != "session_meta" or not isinstance(payload, dict):
            return None
        parser.meta(payload)
        if offset == 0 and len(line) < _HEAD_BYTES:
            found.meta = payload  # what `read_meta` would read again
        return True
    try:
        entry = _LINE.decode(line)
    except (msgspec.DecodeError, RecursionError):
        return None
    if entry.payload is None:
        return None
    payload = entry.payload
    if entry.type == "turn_context":
        model = payload.model
        if model is not None and (not model or len(model) > MAX_NAME):
            return None
        parser.model = model or parser.model
        return True
    usage, response = payload.usage, payload.response_id
    if entry.type != "token_usage_record" or usage is None or not response or len(response) > MAX_NAME:
        return None
    inp, cached, written = usage.input_tokens, usage.cached_input_tokens, usage.cache_write_input_tokens
    out, reasoning = usage.output_tokens, usage.reasoning_output_tokens
    figures = (inp, cached, written, out, reasoning)
    if min(figures) < 0 or max(figures) >= MAX_TOKENS:
        return None  # negative, or at the bound (suspicious): the parser says how
    parser.records = True
    cached = min(cached, inp)
    written = min(written, inp - cached)
    fresh = inp - cached - written
    model = parser.model
    cost, priced_by = pricer.price(model, fresh, out, cached, written)
    return (
        run_id,
        f"codex:{response}",
        _occurred(entry.timestamp),
        model,
        fresh,
        out,
        cached,
        written,
        cost,
        priced_by,
        parser.source,
        offset,
        f'{{"reasoning_output_tokens": {min(reasoning, out)}}}' if reasoning else None,
    )


def _occurred(stamp: str | None) -> str | None:
    """Codex's `2026-12-06T21:35:36.189Z` as the ledger writes times (`...36.189000Z`): as `_row` makes it from
    the parsed time, without the round trip through a float for the usual millisecond form."""
    if stamp is not None and len(stamp) == 24 and stamp[19] == "." and stamp[23] == "Z" and stamp[20:23].isdigit():
        try:
            datetime.fromisoformat(stamp[:-1])
        except ValueError:
            return None
        return stamp[:-1] + "000Z"
    at = parse_timestamp(stamp)
    return datetime.fromtimestamp(at, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ") if at else None


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
    counts = new_counts(files)
    for path, data, start, stat in each_new_read(files, state, counts, on_progress):
        run_id = run_id_of(path)
        found = read_thread(str(path), data, start, run_id, pricer)
        meta = found.meta if found.meta is not None else read_meta(path)
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
