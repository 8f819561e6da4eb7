"""`capguard import opencode [PATH...]`: OpenCode's SQLite store into the ledger, one run per root session.

Where from: PATH (a store file, or a folder holding `opencode.db` or `opencode/opencode.db`), else the store OpenCode
itself uses (`$OPENCODE_DB`, else `$XDG_DATA_HOME/opencode/opencode.db`). The store is opened read-only, so an
OpenCode running meanwhile is not disturbed. A session's run holds its messages and its subagents' (child sessions);
its id is `opencode-<root session id>`. Keys are live metering's (`opencode:<message id>`, growth `+n`): what capguard
metered is known and adds nothing, and a session with nothing new creates no run. Incremental: only messages updated
after the newest one the last import of this store took are read (the store's mark in the import state).
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from capguard.agents.opencode.logs import Figures, Scope, StoreParser, reply_key
from capguard.agents.opencode.store import all_rows, db_path
from capguard.core.events import Malformed, Reply
from capguard.core.pricing import Pricer
from capguard.importers.claude_files import project_of
from capguard.importers.state import ImportState
from capguard.importers.unit_prices import UnitPricer
from capguard.ledger.bulk import ImportWriter, RunRow
from capguard.metering.sqlite_rows import connect_ro

AGENT = "opencode"
BATCH = 5_000  # messages a ledger lookup and write covers
CORRECTIONS = 5  # growth keys (`+2` ...) looked up for a message already in the ledger


def find_stores(paths: Iterable[str], env: Mapping[str, str] | None = None) -> list[Path]:
    """The stores to import: each PATH as a file or a folder holding one, else OpenCode's own."""
    env = os.environ if env is None else env
    found: list[Path] = []
    for raw in paths:
        path = Path(raw).expanduser()
        for candidate in (path, path / "opencode.db", path / "opencode" / "opencode.db"):
            if candidate.is_file():
                found.append(candidate.resolve())
                break
        else:
            found.append(path)  # reported as unreadable by the import
    if not list(paths):
        found.append(db_path(env, Path.cwd()))
    return list(dict.fromkeys(found))


def _utc(ms: Any) -> str | None:
    if not isinstance(ms, (int, float)) or isinstance(ms, bool) or ms <= 0:
        return None
    try:
        return datetime.fromtimestamp(ms / 1000, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    except (OverflowError, OSError, ValueError):
        return None


def _root(parser: StoreParser, sid: str) -> str:
    seen = set()
    while sid not in seen:
        seen.add(sid)
        parent = parser.sessions.get(sid)
        if parent is None or parent.parent is None:
            return sid
        sid = parent.parent
    return sid


def _known(writer: ImportWriter, message_ids: list[str]) -> dict[str, tuple[Figures, int]]:
    """What the ledger already holds of these messages: figures summed over their keys, and how many keys."""
    keys = {reply_key(mid, n): mid for mid in message_ids for n in range(1, CORRECTIONS + 1)}
    out: dict[str, tuple[Figures, int]] = {}
    names = list(keys)
    for start in range(0, len(names), 500):
        chunk = names[start : start + 500]
        sql = (
            "SELECT dedupe_key, input_tokens, output_tokens, cache_read_tokens, cache_write_tokens, cost_micro_usd,"
            f" priced_by, details FROM usage_events WHERE dedupe_key IN ({', '.join('?' * len(chunk))})"
        )
        for row in writer.query(sql, chunk):
            mid = keys[row["dedupe_key"]]
            details = row["details"]
            if isinstance(details, str):
                with contextlib.suppress(ValueError):
                    details = json.loads(details)
            reasoning = details.get("reasoning_tokens") if isinstance(details, dict) else 0
            reasoning = reasoning if isinstance(reasoning, int) else 0
            agent_cost = row["cost_micro_usd"] or 0 if row["priced_by"] == "agent" else 0
            have = Figures(
                row["input_tokens"],
                max(0, row["output_tokens"] - reasoning),
                reasoning,
                row["cache_read_tokens"],
                row["cache_write_tokens"],
                agent_cost,
            )
            before, n = out.get(mid, (Figures(), 0))
            out[mid] = (Figures(*(a + b for a, b in zip(before.values(), have.values(), strict=True))), n + 1)
    return out


def import_store(
    writer: ImportWriter,
    state: ImportState,
    stores: list[Path],
    *,
    pricer_overrides: dict | None = None,
    line_of: Callable[[str | None], str | None] = lambda p: None,
    on_progress: Callable[[int, int, int], None] | None = None,
) -> dict:
    overrides = Pricer(pricer_overrides or {})
    pricer = UnitPricer(overrides)  # genai-prices' answer per model, kept (a call takes ~3 ms)
    counts: dict[str, Any] = {
        "files_found": len(stores),
        "files_read": 0,
        "files_unchanged": 0,
        "bytes_read": 0,
        "malformed_lines": 0,
        "suspicious_replies": 0,
        "errors": [],
    }
    projects: dict[str, str | None] = {}
    total = sum(_size(p) for p in stores)
    for index, store in enumerate(stores):
        try:
            _import_one(writer, state, store, overrides, pricer, line_of, projects, counts)
        except (sqlite3.Error, OSError) as err:
            counts["errors"].append(f"{store}: {err}")
        if on_progress:
            on_progress(index + 1, counts["bytes_read"], total)
    return counts


def _size(path: Path) -> int:
    return sum(p.stat().st_size for p in (path, Path(f"{path}-wal")) if p.exists())


def _import_one(
    writer: ImportWriter,
    state: ImportState,
    store: Path,
    overrides: Pricer,
    pricer: UnitPricer,
    line_of: Callable[[str | None], str | None],
    projects: dict[str, str | None],
    counts: dict[str, Any],
) -> None:
    if not store.is_file():
        raise OSError(f"no OpenCode store at {store}")
    stat = os.stat(store)
    mark = state.files.get(str(store))
    after = mark.offset if mark is not None else -1
    parser = StoreParser(Scope(), str(store))
    newest = after
    batch: list[tuple[dict[str, Any], int]] = []
    with contextlib.closing(connect_ro(store)) as conn:
        conn.execute("BEGIN")  # one snapshot of the store for the whole import
        for n, (table, row) in enumerate(all_rows(conn, after)):
            if table == "session":
                parser.feed_row(table, row, n)
                continue
            batch.append((row, n))
            newest = max(newest, row["time_updated"] if isinstance(row["time_updated"], int) else newest)
            if len(batch) >= BATCH:
                _write(writer, parser, batch, overrides, pricer, line_of, projects, counts, str(store))
                batch = []
        _write(writer, parser, batch, overrides, pricer, line_of, projects, counts, str(store))
        conn.execute("COMMIT")
    writer.finish()
    if newest > after:
        counts["files_read"] += 1
        counts["bytes_read"] += _size(store)
        state.mark(str(store), stat, newest, None, check="")
        state.save()
    else:
        counts["files_unchanged"] += 1


def _write(
    writer: ImportWriter,
    parser: StoreParser,
    batch: list[tuple[dict[str, Any], int]],
    overrides: Pricer,
    pricer: UnitPricer,
    line_of: Callable[[str | None], str | None],
    projects: dict[str, str | None],
    counts: dict[str, Any],
    source: str,
) -> None:
    if not batch:
        return
    known = _known(writer, [str(row["id"]) for row, _ in batch])
    for mid, (figures, parts) in known.items():
        parser.counted[mid], parser.parts[mid] = figures, parts
    rows = []
    for row, n in batch:
        for event in parser.feed_row("message", row, n):
            if isinstance(event, Malformed):
                counts["malformed_lines"] += 1
                continue
            if not isinstance(event, Reply):
                continue
            counts["suspicious_replies"] += event.suspicious is not None
            root = _root(parser, str(event.details.get("session")))
            session = parser.sessions.get(root)
            folder = (session.directory if session else None) or ""
            project = project_of(folder, projects) if folder else None
            at = _utc(event.at * 1000 if event.at else row.get("time_updated")) or _utc(row.get("time_created")) or ""
            run = writer.run(
                RunRow(
                    run_id=f"opencode-{root}",
                    agent=AGENT,
                    cwd=folder,
                    project=project,
                    started_utc=at,
                    ended_utc=at,
                    line=line_of(project),
                )
            )
            run.widen(at, at)
            cost: int | None
            priced_by: str | None
            if event.reported_cost_micro and overrides.override_for(event.model) is None:
                cost, priced_by = event.reported_cost_micro, "agent"  # as live metering: your [prices] first
            else:
                cost, priced_by = pricer.price(
                    event.model,
                    event.input_tokens,
                    event.output_tokens,
                    event.cache_read_tokens,
                    event.cache_write_tokens,
                )
            rows.append(
                (
                    run.run_id,
                    event.key,
                    at,
                    event.model,
                    event.input_tokens,
                    event.output_tokens,
                    event.cache_read_tokens,
                    event.cache_write_tokens,
                    cost,
                    priced_by,
                    source,
                    None,
                    _details(event),
                )
            )
    writer.add(rows)
    writer.flush()


def _details(reply: Reply) -> str:
    return json.dumps({k: v for k, v in reply.details.items() if v is not None}, separators=(",", ":"))
