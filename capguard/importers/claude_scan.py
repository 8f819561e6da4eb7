"""Reads Claude Code transcripts fast: the replies in a byte range of a file, counted as the live meter counts them.

Lines are decoded by the decoder the live meter uses (capguard/agents/claude/decode.py): the same keys
(`claude:<requestId>`, or `claude:msg:<message.id>`), models and counts; fork copies, API errors and synthetic
replies skipped; max-wins corrections `<key>+<n>` as `TranscriptParser` makes them. What makes it fast: only lines
that mention `"usage"` are looked at, a line repeating the previous line's usage is skipped unparsed, and the others
go through the decoder's msgspec path (the message's content, most of the bytes, is skipped unparsed). A line it
cannot type that way (a count that is not a whole number, a missing id, broken JSON) is decoded whole and goes to
the decoder's `from_entry`, which answers as the parser does, malformed lines included.

When the compiled reader is built (_claude_scan.c, optional), it does the finding, the skipping and the typing in
C: it gives the fields msgspec would give to `decode.from_fields` (the same rules), or gives up on any line it is
not certain of, which then takes the Python path above. CAPGUARD_PURE_PYTHON=1 forces the Python loop.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any, NamedTuple

from capguard.agents.claude.decode import (
    DECODE_ERRORS,
    MODEL_NAMES,
    SYNTHETIC_MODEL,
    UNUSUAL,
    UsageLine,
    decode,
    details_of,
    from_entry,
    from_fields,
)
from capguard.agents.claude.logs import max_wins
from capguard.core.sanitize import MAX_NAME, MAX_TOKENS
from capguard.ledger.records import normalize_utc

_built: ModuleType | None
try:  # the compiled reader (optional: a build without a C compiler has only this module's loop)
    from capguard.importers import _claude_scan as _built
except ImportError:
    _built = None
_compiled = None if os.environ.get("CAPGUARD_PURE_PYTHON") == "1" else _built  # the tests run both

_USAGE = b'"usage"'
_CONTENT = b'"content":['
_AFTER_CONTENT = b'],"stop_reason":'
_TIMESTAMP = re.compile(rb'"timestamp":"([^"\\]{10,40})"')
_FIELDS = ("input_tokens", "output_tokens", "cache_read_tokens", "cache_write_tokens", "cache_write_1h", "web_searches")


class FoundReply(NamedTuple):
    """One reply (or a correction) as the ledger stores it, before pricing."""

    key: str
    occurred_utc: str | None
    model: str | None
    figures: tuple[int, ...]  # input, output, cache read, cache write, 1h part, web searches
    offset: int
    step: bool
    details: dict | None


# what the compiled reader counts with: the same reply type, details, names and bounds as this module's loop
if _built is not None:
    _built.configure(FoundReply, details_of, MODEL_NAMES, SYNTHETIC_MODEL.encode(), MAX_TOKENS, MAX_NAME)


@dataclass
class Scan:
    """What one pass over a file's new bytes found."""

    replies: list[FoundReply] = field(default_factory=list)
    malformed: int = 0
    suspicious: int = 0  # replies with a figure at capguard.core.sanitize's bound (counted as the bound)
    first_utc: str | None = None
    last_utc: str | None = None
    cwd: str | None = None
    version: str | None = None
    session_id: str | None = None
    folded: bool = False  # corrections added into their requests' rows as they were counted (`scan(fold=True)`)


def canonical_utc(text: object) -> str | None:
    """Claude's `2026-11-23T06:05:53.728Z` as the ledger's canonical UTC text; None if unreadable."""
    if not isinstance(text, str):
        return None
    if len(text) == 24 and text[19] == "." and text[23] == "Z" and text[10] == "T":
        return text[:23] + "000Z"  # the common case, without datetime
    try:
        return normalize_utc(text)
    except ValueError:
        return None


class ReplyCounter:
    """Max-wins per reply key across the lines of one transcript, as `TranscriptParser._counted`.

    `seen` may be seeded with what the ledger already holds when a file is read on from an offset.
    """

    def __init__(self, *, subagent: bool, seen: dict[str, list[int]] | None = None) -> None:
        self.subagent = subagent
        self.seen: dict[str, list[int]] = seen or {}  # key -> largest figures, then the corrections made

    def count(self, key: str, figures: list[int], model, at, offset, details) -> FoundReply | None:
        old = self.seen.get(key)
        if old is not None and old[:6] == figures:
            return None  # the next content block of a reply already counted: the usual repeat, decided at once
        counted = max_wins(self.seen, key, figures)
        if counted is None:
            return None
        reply_key, delta = counted
        return FoundReply(reply_key, at, model, tuple(delta), offset, reply_key == key and not self.subagent, details)


def reply_of(entry: object, counter: ReplyCounter, offset: int) -> FoundReply | None:
    """The reply a decoded transcript line adds, if any; ValueError & co. for a malformed line (as the parser)."""
    if not isinstance(entry, dict):
        raise ValueError("not a JSON object")
    used = from_entry(entry)
    return None if used is None else _count(used, counter, offset)


def _count(used: UsageLine, counter: ReplyCounter, offset: int) -> FoundReply | None:
    stamp = used.timestamp
    at: str | None
    if isinstance(stamp, str) and len(stamp) == 24 and stamp[23] == "Z" and stamp[19] == "." and stamp[10] == "T":
        at = stamp[:23] + "000Z"  # the common case, without datetime
    else:
        at = canonical_utc(stamp)
    return counter.count(used.key, used.figures, used.model, at, offset, used.details)


_DECODER = json.JSONDecoder()


def _loads(raw: bytes) -> object:
    """`json.loads(raw)` for one line, without its encoding detection (transcripts are UTF-8)."""
    text = raw.decode("utf-8")
    try:
        value, end = _DECODER.raw_decode(text)
    except ValueError:
        return json.loads(raw)  # leading whitespace, or an error: json.loads says which
    if end != len(text) and text[end:].strip():
        raise ValueError(f"Extra data at column {end + 1}")
    return value


def _decode(data: bytes, start: int, end: int) -> object:
    """The line as JSON, with the message's content cut out when it sits where Claude Code writes it."""
    cut = data.find(_CONTENT, start, end)
    resume = data.rfind(_AFTER_CONTENT, start, end)
    if 0 <= cut < resume:
        try:
            entry = _loads(b"".join((memoryview(data)[start : cut + len(_CONTENT)], memoryview(data)[resume:end])))
            message = entry.get("message") if isinstance(entry, dict) else None
            if isinstance(message, dict) and message.get("content") == []:
                return entry
        except (ValueError, RecursionError):
            pass  # not the layout we expected: decode the whole line
    return _loads(data[start:end])


_REQUEST = b'"requestId"'
_MESSAGE = b'"message"'


def _flat_tail(data: bytes, tail: int, end: int, marker: bytes) -> bool:
    """Whether `data[tail:end]` holds only the rest of the line's top-level object, flat keys (no `{`, so its one
    `}` closes the line), with `marker` as its one request id (JSON's last key would win) and no message."""
    return (
        data.find(b"{", tail, end) < 0
        and data.count(b"}", tail, end) == 1
        and data.count(_REQUEST, tail, end) == 1
        and data.find(marker, tail, end) >= 0
        and data.find(_MESSAGE, tail, end) < 0
    )


def _repeat_of(data: bytes, at: int, end: int, request_id: object) -> tuple[bytes, bytes] | None:
    """(the bytes from a counted line's first `"usage"` through the end of its message, its request id marker): a
    later line with the same bytes there and a flat tail after them naming the same request id is another content
    block of the same reply, same usage (which max-wins would count as nothing), so it is skipped unparsed. The
    tail may differ (Claude Code 2.1 writes each block's `apiBlockIndex` there). None when the line is not laid
    out so."""
    if not isinstance(request_id, str) or not request_id:
        return None
    try:
        marker = b'"requestId":"' + request_id.encode() + b'"'
    except UnicodeEncodeError:
        return None  # a lone surrogate (from an escape): no line's bytes name it so
    found = data.find(marker, at, end)
    close = data.rfind(b"}", at, found) if found >= 0 else -1
    if close < 0 or not _flat_tail(data, close + 1, end, marker):
        return None
    return data[at : close + 1], marker


def scan(data: bytes, base_offset: int, counter: ReplyCounter, size: int | None = None, *, fold: bool = False) -> Scan:
    """Every reply in `data[:size]` (complete lines; the first starts at file offset `base_offset`). `fold`: each
    correction added into its request's row when that row is among these replies, as `claude_files.folded` does
    (`Scan.folded` says whether it was)."""
    size = len(data) if size is None else size
    if _compiled is not None and type(data) is bytes:
        return _scan_compiled(_compiled.Lines(data, size), data, base_offset, counter, size, fold)
    found = Scan()
    find, view, pos = data.find, memoryview(data), 0
    repeat, marker = b"", b""  # the last counted reply's `_repeat_of`, when its next content blocks can be skipped
    while (at := find(_USAGE, pos, size)) >= 0:
        end = find(b"\n", at, size)
        end = size if end < 0 else end
        pos = end + 1
        if repeat and data.startswith(repeat, at) and _flat_tail(data, at + len(repeat), end, marker):
            continue  # the next content block of the reply just counted (see `_repeat_of`)
        start = data.rfind(b"\n", 0, at) + 1
        try:
            reply, request_id = _decoded(found, data, view, start, end, counter, base_offset)
        except _MALFORMED:
            found.malformed += 1
            continue
        if isinstance(reply, FoundReply):
            if max(reply.figures) >= MAX_TOKENS:
                found.suspicious += 1
            found.replies.append(reply)
            repeat, marker = _repeat_of(data, at, end, request_id) or (b"", b"")
    _note_span(found, data, size)
    return found


_MALFORMED = (ValueError, TypeError, AttributeError, KeyError, RecursionError, ArithmeticError)


def _decoded(
    found: Scan, data: bytes, view: memoryview, start: int, end: int, counter: ReplyCounter, base_offset: int
) -> tuple[FoundReply | None, object]:
    """(the reply of the line data[start:end], if any; its request id), the line decoded in Python; one of
    `_MALFORMED` for a malformed line."""
    reply: FoundReply | None = None
    request_id: object = None
    try:
        typed, used = decode(view[start:end])
        if used is not UNUSUAL:
            request_id = typed.requestId
            if used is not None:
                reply = _count(used, counter, base_offset + start)  # type: ignore[arg-type]
            if found.session_id is None and typed.sessionId:
                found.session_id, found.cwd, found.version = typed.sessionId, typed.cwd, typed.version
    except DECODE_ERRORS:
        used = UNUSUAL
    if used is UNUSUAL:
        entry = _decode(data, start, end)
        reply = reply_of(entry, counter, base_offset + start)
        if isinstance(entry, dict):  # always, once reply_of has returned
            request_id = entry.get("requestId")
            if found.session_id is None:
                _note_file_facts(found, entry)
    return reply, request_id


def _scan_compiled(lines: Any, data: bytes, base_offset: int, counter: ReplyCounter, size: int, fold: bool) -> Scan:
    """`scan` with the compiled reader: the same lines skipped, the same fields (see _claude_scan.c), the common
    line counted (and folded) in C as this loop counts it; a line it leaves here (one it is not certain of, or of a
    rarer shape) is counted or decoded here, as `scan` does."""
    found = Scan(folded=fold)
    view = memoryview(data)
    counted, replies = lines.counted, found.replies
    at: dict[str, int] | None = {} if fold else None  # request key -> its row's index in `replies`
    stamps: list[str] = []  # the times of the replies counted here (folded ones too)
    seen, subagent, rest = counter.seen, counter.subagent, lines.replies
    while (line := rest(seen, subagent, base_offset, replies, found.session_id is None, at)) is not None:
        if len(line) == 3:  # the file's facts, from a line counted in C
            found.session_id, found.cwd, found.version = line
            continue
        start, _, end, fields = line
        try:
            if fields is not None and (used := from_fields(*fields)) is not UNUSUAL:
                request_id = fields[9]
                reply = None if used is None else _count(used, counter, base_offset + start)  # type: ignore[arg-type]
                if found.session_id is None and fields[3]:
                    found.session_id, found.cwd, found.version = fields[3], fields[13], fields[14]
            else:
                reply, request_id = _decoded(found, data, view, start, end, counter, base_offset)
        except _MALFORMED:
            found.malformed += 1
            continue
        if reply is not None:
            if max(reply.figures) >= MAX_TOKENS:
                found.suspicious += 1
            if reply.occurred_utc:
                stamps.append(reply.occurred_utc)
            if at is None:
                replies.append(reply)
            else:
                fold_into(replies, at, reply)
            counted(request_id)
    stamps += [t for t in (lines.first_at, lines.last_at) if t]
    _note_span(found, data, size, stamps)
    return found


def fold_into(replies: list[FoundReply], at: dict[str, int], reply: FoundReply) -> None:
    """`reply` appended to `replies`, or, a correction `<key>+<n>` whose request's row `<key>` is there (`at`:
    key -> index), added into that row: one step of `claude_files.folded`."""
    base, plus, _ = reply.key.partition("+")
    if not plus:
        at[reply.key] = len(replies)
    elif (i := at.get(base)) is not None:
        row = replies[i]
        replies[i] = row._replace(figures=tuple(a + b for a, b in zip(row.figures, reply.figures)))
        return
    replies.append(reply)


def _note_file_facts(found: Scan, entry: dict) -> None:
    """The session, working directory and version, from the first decoded line that names its session."""
    session, cwd, version = entry.get("sessionId"), entry.get("cwd"), entry.get("version")
    if isinstance(session, str) and session:
        found.session_id = session
        found.cwd = cwd if isinstance(cwd, str) else found.cwd
        found.version = version if isinstance(version, str) else found.version


def _note_span(found: Scan, data: bytes, size: int, stamps: list[str] | None = None) -> None:
    """First and last timestamps of the bytes (the session's wall time), from the first and last lines that have one
    and the replies' times (`stamps`, when the replies were folded as they were counted)."""
    first = _TIMESTAMP.search(data, 0, min(size, 1 << 16))
    tail = data.rfind(b'"timestamp":"', max(0, size - (1 << 16)), size)
    last = _TIMESTAMP.match(data, tail, size) if tail >= 0 else None
    found_stamps = [
        s for s in (canonical_utc(m.group(1).decode("ascii", "replace")) if m else None for m in (first, last)) if s
    ]
    found_stamps += [r.occurred_utc for r in found.replies if r.occurred_utc] if stamps is None else stamps
    if found_stamps:
        found.first_utc, found.last_utc = min(found_stamps), max(found_stamps)
