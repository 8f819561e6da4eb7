"""Reads Claude Code transcripts fast: the replies in a byte range of a file, counted as the live meter counts them.

`TranscriptParser` (capguard/agents/claude_logs.py) is the reference: the same keys (`claude:<requestId>`, or
`claude:msg:<message.id>`), max-wins corrections `<key>+<n>`, fork copies, API errors and synthetic replies
skipped. What makes it fast: only lines that mention `"usage"` are looked at; a line whose request id and usage
bytes equal an earlier line of the same reply (Claude writes one line per content block) is skipped unparsed; and
the message's content (thinking, code, tool input: most of the bytes) is cut out before `json.loads`.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import NamedTuple

from capguard.agents.claude_logs import SYNTHETIC_MODEL, _figures, max_wins
from capguard.ledger.records import normalize_utc

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
    figures: tuple[int, int, int, int, int, int]  # input, output, cache read, cache write, 1h part, web searches
    offset: int
    step: bool
    details: dict | None


@dataclass
class Scan:
    """What one pass over a file's new bytes found."""

    replies: list[FoundReply] = field(default_factory=list)
    malformed: int = 0
    first_utc: str | None = None
    last_utc: str | None = None
    cwd: str | None = None
    version: str | None = None
    session_id: str | None = None


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
        self.plain: dict[bytes, bytes] = {}  # request id -> usage bytes of the last line counted

    def count(self, key: str, figures: list[int], model, at, offset, details) -> FoundReply | None:
        counted = max_wins(self.seen, key, figures)
        if counted is None:
            return None
        reply_key, delta = counted
        return FoundReply(reply_key, at, model, tuple(delta), offset, reply_key == key and not self.subagent, details)


def reply_of(entry: object, counter: ReplyCounter, offset: int) -> FoundReply | None:
    """The reply a decoded transcript line adds, if any; ValueError & co. for a malformed line (as the parser)."""
    if not isinstance(entry, dict):
        raise ValueError("not a JSON object")
    get = entry.get
    if get("type") != "assistant" or get("isApiErrorMessage"):
        return None
    copied_from = get("requestSessionId")
    if copied_from is not None and copied_from != get("sessionId"):
        return None  # a fork's copy of its parent's reply: counted in the parent's file
    message = get("message")
    if not isinstance(message, dict):
        raise ValueError("assistant line without a message")
    served = message.get("model")
    if served == SYNTHETIC_MODEL:
        return None
    message_id = message.get("id")
    if not isinstance(message_id, str) or not message_id:
        raise ValueError("assistant line without message.id")
    request_id = get("requestId")
    key = f"claude:{request_id}" if isinstance(request_id, str) and request_id else f"claude:msg:{message_id}"
    usage = message.get("usage")
    if usage is None:
        usage = {}
    if not isinstance(usage, dict):
        raise ValueError("usage is not an object")
    figures = _plain_figures(usage) or _figures(usage)
    requested = get("requestedModel")
    model = requested if isinstance(requested, str) and requested else served if isinstance(served, str) else None
    geo, speed = usage.get("inference_geo"), usage.get("speed")
    shape = (geo if isinstance(geo, str) and geo else None, speed if isinstance(speed, str) and speed else None,
             bool(get("isAbortedMidStream")), served if isinstance(served, str) and served and served != model else None)
    details = _DETAILS.get(shape) if shape in _DETAILS else _details(shape)
    stamp = get("timestamp")
    if isinstance(stamp, str) and len(stamp) == 24 and stamp[23] == "Z" and stamp[19] == "." and stamp[10] == "T":
        at = stamp[:23] + "000Z"
    else:
        at = canonical_utc(stamp)
    return counter.count(key, figures, model if model is None else _MODELS.setdefault(model, model), at, offset,
                         details)


# One `details` dict per distinct shape, shared (never to be modified): a reply's details are a handful of shapes
# over a whole import, and shared objects pickle once per batch. Model names likewise.
_DETAILS: dict[tuple, dict | None] = {}
_MODELS: dict[str, str] = {}


def _details(shape: tuple) -> dict | None:
    geo, speed, aborted, served = shape
    details = {name: value for name, value in (("inference_geo", geo), ("speed", speed)) if value}
    if aborted:
        details["aborted_mid_stream"] = True
    if served:
        details["served_model"] = served
    return _DETAILS.setdefault(shape, details or None)


def _plain_figures(usage: dict) -> list[int] | None:
    """`_figures` for the usual case (every count a non-negative int); None sends the usage to `_figures`."""
    get = usage.get
    counts = [get("input_tokens", 0), get("output_tokens", 0), get("cache_read_input_tokens", 0),
              get("cache_creation_input_tokens", 0)]
    creation, tools = get("cache_creation"), get("server_tool_use")
    counts.append(creation.get("ephemeral_1h_input_tokens", 0) if type(creation) is dict else 0)
    counts.append(tools.get("web_search_requests", 0) if type(tools) is dict else 0)
    for value in counts:
        if type(value) is not int or value < 0:
            return None
    counts[4] = min(counts[4], counts[3])
    return counts


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


def _plain_line(data: bytes, at: int, end: int) -> tuple[bytes, int, object] | None:
    """(request id, end of usage, the usage decoded) when the line has Claude Code's layout: one `"usage":{...}`
    and, after it, only flat keys (the message's last keys, then the top-level ones, `requestId` among them).
    None otherwise."""
    if not data.startswith(b":{", at + 7) or data[end - 1] != 125:  # `"usage":{`, and the line ends with "}"
        return None
    try:
        text = data[at + 8 : end].decode()
        usage, used = _DECODER.raw_decode(text)  # the usage object alone, and where it ends
    except (ValueError, RecursionError):
        return None
    if not text.isascii() and not text[:used].isascii():
        return None  # characters and bytes differ before the end: leave such a line to the full decode
    usage_end = at + 8 + used
    if data.find(b"{", usage_end, end) >= 0 or data.find(_USAGE, usage_end, end) >= 0:
        return None
    request = data.find(b'"requestId":"', usage_end, end)
    if request < 0:
        return None
    request += 13
    close = data.find(b'"', request, end)
    if close < 0 or data.find(b"\\", request, close) >= 0:
        return None
    return data[request:close], usage_end, usage


_HEAD = b'"message":{"id":"'
_AFTER_ID = b'","type":"message","role":"assistant","model":"'
_AFTER_MODEL = b'","content":['
_PREFIX = re.compile(rb'\{(?:"(?:parentUuid|logicalParentUuid|isSidechain|agentId)":(?:null|true|false|"[^"\\]*"),)*')
_NOT_FAST = (b'"isApiErrorMessage":', b'"requestSessionId":', b'"isAbortedMidStream":')


def _fast_reply(data: bytes, at: int, start: int, end: int, usage_end: int, request_id: bytes, usage: object,
                counter: ReplyCounter, offset: int) -> FoundReply | None | bool:
    """The reply of a line in Claude Code 2.x's exact layout without decoding its JSON: False when the layout
    differs in any way (then the line is decoded). The same answer as `reply_of` (the tests hold it to that)."""
    prefix = _PREFIX.match(data, start, at)
    if prefix is None or not data.startswith(_HEAD, prefix.end()):
        return False
    id_at = prefix.end() + len(_HEAD)
    id_end = data.find(b'"', id_at, at)
    if id_end <= id_at or not data.startswith(_AFTER_ID, id_end):
        return False
    model_at = id_end + len(_AFTER_ID)
    model_end = data.find(b'"', model_at, at)
    if model_end < 0 or not data.startswith(_AFTER_MODEL, model_end) or data.find(b"\\", id_at, model_end) >= 0:
        return False
    for key in _NOT_FAST:
        if data.find(key, usage_end, end) >= 0:
            return False
    kind = data.find(b'"type":"assistant"', usage_end, end)
    stamp_at = data.find(b'"timestamp":"', usage_end, end)
    if kind < 0 or stamp_at < 0:
        return False
    stamp_at += 13
    stamp_end = data.find(b'"', stamp_at, end)
    requested_at = data.find(b'"requestedModel":"', usage_end, end)
    requested = None
    if requested_at >= 0:
        requested_at += 18
        requested_end = data.find(b'"', requested_at, end)
        if requested_end < 0 or data.find(b"\\", requested_at, requested_end) >= 0:
            return False
        requested = data[requested_at:requested_end].decode()
    served = data[model_at:model_end].decode()
    if served == SYNTHETIC_MODEL:
        return None
    if not isinstance(usage, dict):
        return False
    figures = _plain_figures(usage) or _figures(usage)
    model = requested or served
    geo, speed = usage.get("inference_geo"), usage.get("speed")
    shape = (geo if isinstance(geo, str) and geo else None, speed if isinstance(speed, str) and speed else None,
             False, served if served and served != model else None)
    details = _DETAILS.get(shape) if shape in _DETAILS else _details(shape)
    stamp = data[stamp_at:stamp_end].decode()
    at_utc = stamp[:23] + "000Z" if len(stamp) == 24 and stamp[23] == "Z" and stamp[19] == "." else canonical_utc(stamp)
    key = f"claude:{request_id.decode()}"
    return counter.count(key, figures, _MODELS.setdefault(model, model), at_utc, offset, details)


def scan(data: bytes, base_offset: int, counter: ReplyCounter, size: int | None = None) -> Scan:
    """Every reply in `data[:size]` (complete lines; the first starts at file offset `base_offset`)."""
    found = Scan()
    last = counter.plain
    repeat_usage = repeat_request = None  # the last counted line's `"usage":{...}` and `"requestId":"..."`
    find, pos = data.find, 0
    size = len(data) if size is None else size
    while (at := find(_USAGE, pos, size)) >= 0:
        end = find(b"\n", at, size)
        end = size if end < 0 else end
        pos = end + 1
        if repeat_usage is not None and data.startswith(repeat_usage, at) and data[end - 1] == 125:  # "}"
            # the next content block of the reply just counted: same usage object, same request id after it,
            # nothing but flat keys after it (so that request id is the line's own)
            tail = at + len(repeat_usage)
            if find(b"{", tail, end) < 0 and find(repeat_request, tail, end) >= 0:
                continue
        plain = _plain_line(data, at, end)
        if plain is not None and last.get(plain[0]) == data[at + 8 : plain[1]]:
            continue  # another content block of a reply already counted, same figures
        start = data.rfind(b"\n", 0, at) + 1
        try:
            reply = False
            if plain is not None and found.session_id is not None:  # the file's first reply is decoded: its facts
                reply = _fast_reply(data, at, start, end, plain[1], plain[0], plain[2], counter, base_offset + start)
            if reply is False:
                entry = _decode(data, start, end)
                reply = reply_of(entry, counter, base_offset + start)
                if found.session_id is None and isinstance(entry, dict):
                    _note_file_facts(found, entry)
        except (ValueError, TypeError, AttributeError, KeyError, RecursionError, ArithmeticError):
            found.malformed += 1
            continue
        if reply is None:
            continue
        if plain is not None:
            last[plain[0]] = data[at + 8 : plain[1]]
            repeat_usage, repeat_request = data[at : plain[1]], b'"requestId":"' + plain[0] + b'"'
        found.replies.append(reply)
    _note_span(found, data, size)
    return found


def _note_file_facts(found: Scan, entry: dict) -> None:
    """The session, working directory and version, from the first decoded line that names its session."""
    session, cwd, version = entry.get("sessionId"), entry.get("cwd"), entry.get("version")
    if isinstance(session, str) and session:
        found.session_id = session
        found.cwd = cwd if isinstance(cwd, str) else found.cwd
        found.version = version if isinstance(version, str) else found.version


def _note_span(found: Scan, data: bytes, size: int) -> None:
    """First and last timestamps of the bytes (the session's wall time), from the first and last lines that have one."""
    first = _TIMESTAMP.search(data, 0, min(size, 1 << 16))
    tail = data.rfind(b'"timestamp":"', max(0, size - (1 << 16)), size)
    last = _TIMESTAMP.match(data, tail, size) if tail >= 0 else None
    stamps = [s for s in (canonical_utc(m.group(1).decode("ascii", "replace")) if m else None for m in (first, last)) if s]
    stamps += [r.occurred_utc for r in found.replies if r.occurred_utc]
    if stamps:
        found.first_utc, found.last_utc = min(stamps), max(stamps)
