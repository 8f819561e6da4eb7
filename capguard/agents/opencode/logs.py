"""OpenCode's SQLite store as events: pure. Rows in (as the store's reader hands them), `Reply` events out.

OpenCode 1.18.33 writes one assistant `message` row per model call (a step). The row is created with zero tokens
when the step starts and rewritten in place when it finishes (after its tool ran, for a step that calls one), so
the same row is seen many times: it counts once, by its message id, and a row that later grows counts only what it
grew by (under a key of its own). `tokens` are disjoint: `input` excludes the cache, `output` excludes `reasoning`
(billed at the output rate). `cost` is OpenCode's own price from the configured model price: 0 means "unpriced",
never "free", so a 0 is left to capguard's pricer.

A row is one JSON line `{"table": "session"|"message", "row": {...}}`, the row's columns by name (`data` as the
stored JSON text or already decoded): the reader in agents/opencode/store.py and the recorded fixtures agree.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass, field
from typing import Any

from capguard.core import sanitize
from capguard.core.events import Event, Malformed, Reply, json_object
from capguard.core.pricing import split_provider

KEY_PREFIX = "opencode:"
FIELDS = ("input", "output", "reasoning", "cache_read", "cache_write")
MAX_PENDING = 10_000  # rows of sessions not (yet) known to be this run's, kept in case they become so


def reply_key(message_id: str, part: int = 1) -> str:
    """The dedupe key of a message's usage: the message id; what a row grew by later gets `+2`, `+3`... (the ledger's mark of a correction, not a step)"""
    return f"{KEY_PREFIX}{message_id}" if part == 1 else f"{KEY_PREFIX}{message_id}+{part}"


@functools.lru_cache(maxsize=1024)
def model_name(provider: str | None, model: str | None) -> str | None:
    """`openai/gpt-4o` where capguard knows the provider (genai-prices then prices it as that provider's), else the
    model id alone (a custom provider's name means nothing to a price list)."""
    if not model:
        return None
    if provider and split_provider(f"{provider}/{model}")[0] is not None:
        return f"{provider}/{model}"
    return model


@dataclass(frozen=True)
class Figures:
    """One assistant message's usage as the row states it (cost in micro-dollars, 0 = OpenCode did not price it)."""

    input: int = 0
    output: int = 0
    reasoning: int = 0
    cache_read: int = 0
    cache_write: int = 0
    cost_micro: int = 0

    def grown_from(self, before: Figures) -> Figures:
        """What this row adds to what was counted before; a figure that shrank adds nothing."""
        return Figures(*(max(0, now - then) for now, then in zip(self.values(), before.values(), strict=True)))

    def most(self, other: Figures) -> Figures:
        return Figures(*(max(a, b) for a, b in zip(self.values(), other.values(), strict=True)))

    def values(self) -> tuple[int, ...]:
        return (self.input, self.output, self.reasoning, self.cache_read, self.cache_write, self.cost_micro)

    @property
    def tokens(self) -> int:
        return self.input + self.output + self.reasoning + self.cache_read + self.cache_write


def _data(row: dict[str, Any]) -> dict[str, Any]:
    raw = row.get("data")
    data = json_object(raw.encode() if isinstance(raw, str) else b"null") if not isinstance(raw, dict) else raw
    return data


def figures_of(data: dict[str, Any]) -> tuple[Figures, str | None]:
    """The usage of an assistant message's `data`, through sanitize; and why a figure is suspicious, if one is."""
    tokens = data.get("tokens")
    if tokens is None:
        return Figures(), None
    if not isinstance(tokens, dict):
        raise ValueError("tokens is not an object")
    cache = tokens.get("cache") or {}
    if not isinstance(cache, dict):
        raise ValueError("tokens.cache is not an object")
    counts = {
        "input": sanitize.count(tokens.get("input", 0), "tokens.input"),
        "output": sanitize.count(tokens.get("output", 0), "tokens.output"),
        "reasoning": sanitize.count(tokens.get("reasoning", 0), "tokens.reasoning"),
        "cache_read": sanitize.count(cache.get("read", 0), "tokens.cache.read"),
        "cache_write": sanitize.count(cache.get("write", 0), "tokens.cache.write"),
    }
    cost = data.get("cost")
    cost_micro = 0 if cost is None else sanitize.usd_micro(cost, "cost")
    return Figures(**counts, cost_micro=cost_micro), sanitize.at_bound(counts) or sanitize.usd_at_bound(cost_micro)


@dataclass(frozen=True)
class Scope:
    """Which sessions of the store are this run's.

    A session is the run's when it is named (`--session ID`), or was created in the run's directory at or after the
    start, or got a message at or after the start in the run's directory (continued: `--continue`, or picked in the
    TUI); a session whose parent is the run's (a subagent's) is the run's too. Only messages created at or after the
    start count. `directories` are the spellings of the run's directory (as OpenCode writes it, and resolved); None:
    every session qualifies (an import: the whole store).
    """

    started_ms: int = 0
    directories: frozenset[str] | None = None
    named: frozenset[str] = frozenset()


@dataclass
class _Session:
    parent: str | None
    directory: str | None


@dataclass
class StoreParser:
    """Session and message rows in, `Reply` events out (each message counted once; growth counted as growth)."""

    scope: Scope
    source: str
    counted: dict[str, Figures] = field(default_factory=dict)  # message id -> what was counted of it
    parts: dict[str, int] = field(default_factory=dict)  # message id -> how many Replies it gave
    sessions: dict[str, _Session] = field(default_factory=dict)
    ours: set[str] = field(default_factory=set)
    _pending: dict[str, dict[str, tuple[dict, int]]] = field(default_factory=dict)  # session -> message id -> row
    _pending_rows: int = 0

    def feed(self, line: bytes, offset: int) -> list[Event]:
        try:
            entry = json_object(line)
        except ValueError as err:
            return [Malformed(self.source, offset, str(err)[:160])]
        return self.feed_row(entry.get("table"), entry.get("row"), offset)

    def feed_row(self, table: object, row: object, offset: int) -> list[Event]:
        """One row as the store's reader hands it (an import passes its rows here, without the JSON line)."""
        try:
            if not isinstance(row, dict):
                raise ValueError("row is not an object")
            if table == "session":
                return self._session(row)
            if table == "message":
                return self._message(row, offset)
            return []
        except (ValueError, TypeError) as err:
            return [Malformed(self.source, offset, str(err)[:160])]

    # -- sessions ------------------------------------------------------------------------------
    def _session(self, row: dict[str, Any]) -> list[Event]:
        sid = sanitize.name(row.get("id"))
        if sid is None:
            raise ValueError("session without an id")
        self.sessions[sid] = _Session(sanitize.name(row.get("parent_id")), sanitize.name(row.get("directory"), 4096))
        if sid not in self.ours and self._is_ours(sid, row):
            return self._adopt(sid)
        return []

    def _is_ours(self, sid: str, row: dict[str, Any]) -> bool:
        if sid in self.scope.named or self.scope.directories is None:
            return True
        parent = self.sessions[sid].parent
        if parent is not None and parent in self.ours:
            return True
        created = row.get("time_created")
        return (
            parent is None
            and self.sessions[sid].directory in self.scope.directories
            and isinstance(created, int)
            and created >= self.scope.started_ms
        )

    def _adopt(self, sid: str) -> list[Event]:
        """`sid` is the run's: count its waiting messages, then adopt its known children."""
        self.ours.add(sid)
        events: list[Event] = []
        for row, offset in self._pending.pop(sid, {}).values():
            self._pending_rows -= 1
            events += self._count(row, offset)
        for child, session in list(self.sessions.items()):
            if session.parent == sid and child not in self.ours:
                events += self._adopt(child)
        return events

    # -- messages ------------------------------------------------------------------------------
    def _message(self, row: dict[str, Any], offset: int) -> list[Event]:
        sid = sanitize.name(row.get("session_id"))
        created = row.get("time_created")
        if sid is None or not isinstance(row.get("id"), str):
            raise ValueError("message without an id or a session")
        if not isinstance(created, int) or created < self.scope.started_ms:
            return []  # before this run (a continued session's history)
        if sid in self.ours or self.scope.directories is None:
            return self._count(row, offset)
        session = self.sessions.get(sid)
        if session is not None and session.parent is None and session.directory in self.scope.directories:
            return self._adopt(sid) + self._count(row, offset)  # a session continued in our directory
        waiting = self._pending.setdefault(sid, {})
        if row["id"] not in waiting and self._pending_rows < MAX_PENDING:
            self._pending_rows += 1
            waiting[row["id"]] = (row, offset)
        elif row["id"] in waiting:
            waiting[row["id"]] = (row, offset)
        return []

    def _count(self, row: dict[str, Any], offset: int) -> list[Event]:
        data = _data(row)
        if data.get("role") != "assistant":
            return []
        mid = str(row["id"])[: sanitize.MAX_NAME]
        now, suspicious = figures_of(data)
        before = self.counted.get(mid, Figures())
        grown = now.grown_from(before)
        if grown.tokens == 0:
            return []  # nothing new used (a cost alone changing is a re-pricing, not a call)
        self.counted[mid] = now.most(before)
        part = self.parts[mid] = self.parts.get(mid, 0) + 1
        time = data.get("time")
        time = time if isinstance(time, dict) else {}
        at = time.get("completed") or time.get("created") or row.get("time_updated")
        sid = str(row["session_id"])
        return [
            Reply(
                key=reply_key(mid, part),
                model=model_name(sanitize.name(data.get("providerID")), sanitize.name(data.get("modelID"))),
                input_tokens=grown.input,
                output_tokens=grown.output + grown.reasoning,
                cache_read_tokens=grown.cache_read,
                cache_write_tokens=grown.cache_write,
                reported_cost_micro=grown.cost_micro or None,  # 0: OpenCode had no price; capguard prices it
                at=at / 1000 if isinstance(at, (int, float)) and not isinstance(at, bool) else None,
                source=self.source,
                offset=offset,
                details={"reasoning_tokens": grown.reasoning, "session": sid, "finish": data.get("finish")},
                step=part == 1 and self.sessions.get(sid, _Session(None, None)).parent is None,
                suspicious=suspicious,
            )
        ]


def row_line(table: str, row: dict[str, Any]) -> bytes:
    """A row as the parser reads it (the store's reader writes these)."""
    return json.dumps({"table": table, "row": row}, separators=(",", ":")).encode()
