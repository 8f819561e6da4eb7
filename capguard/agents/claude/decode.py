"""One Claude Code transcript line -> the usage it reports: the decoder the live meter and the importer share.

`TranscriptParser` (logs.py) follows a running session and `capguard import claude` (importers/claude_scan.py)
reads months of transcripts; both turn an assistant line into a `UsageLine` here, so they agree on what a line
bills: the request's key (`claude:<requestId>`, or `claude:msg:<message.id>` when a gateway leaves the request
id out), the model (the one Claude Code asked for, else the one that answered), the counts (input, output, cache
read, cache write with its 1-hour part, web searches, bounded by core/sanitize), and the facts a ledger row keeps.
Lines that bill nothing (Claude's own API-error stand-ins, a fork's copies of its parent's replies) decode to
None; a line that claims to bill but cannot be read raises ValueError (or TypeError & co.), which both callers
count as malformed.

Two ways in, one answer: `from_entry` takes the line decoded as a dict (the live meter decodes every line, it also
needs the tool calls); `decode` takes the bytes and decodes only the few fields below with msgspec, skipping the
message content unparsed (the importer's fast path), and answers `UNUSUAL` for a line it cannot type that way,
which then goes to `from_entry`. The tests hold the two to the same answers.
"""

from __future__ import annotations

from typing import Final, NamedTuple

import msgspec

from capguard.core import sanitize

SYNTHETIC_MODEL = "<synthetic>"  # Claude Code's own stand-in replies (API errors): nothing was billed
FIGURES = (
    "input_tokens",
    "output_tokens",
    "cache_read_input_tokens",
    "cache_creation_input_tokens",
    "ephemeral_1h_input_tokens",
    "web_search_requests",
)


class UsageLine(NamedTuple):
    """What one assistant line bills. `figures` are in `FIGURES` order; `details` is one of a few shared dicts
    (speed, inference_geo, aborted_mid_stream, served_model), never to be modified."""

    key: str
    model: str | None
    figures: list[int]
    details: dict | None
    timestamp: object  # as written (Claude Code: `2026-11-23T06:05:53.728Z`); callers convert it as they need
    session_id: object
    request_id: str | None


UNUSUAL: Final = False  # `decode`: the line needs `from_entry`


def from_entry(entry: dict) -> UsageLine | None:
    """The usage of a decoded transcript line; None when it bills nothing or is not an assistant line."""
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
    has_request = isinstance(request_id, str) and bool(request_id)
    usage = message.get("usage")
    if usage is None:
        usage = {}
    if not isinstance(usage, dict):
        raise ValueError("usage is not an object")
    figures = _plain_figures(usage) or usage_figures(usage)
    served = sanitize.name(served)
    model = sanitize.name(get("requestedModel")) or served
    geo, speed = usage.get("inference_geo"), usage.get("speed")
    details = details_of(
        geo if isinstance(geo, str) and geo else None,
        speed if isinstance(speed, str) and speed else None,
        bool(get("isAbortedMidStream")),
        served if served and served != model else None,
    )
    return UsageLine(
        f"claude:{request_id}" if has_request else f"claude:msg:{message_id}",
        model if model is None else MODEL_NAMES.setdefault(model, model),
        figures,
        details,
        get("timestamp"),
        get("sessionId"),
        request_id if has_request else None,
    )


def usage_figures(usage: dict) -> list[int]:
    """A reply's [input, output, cache read, cache write, its 1-hour part, web searches] (see FIGURES), sanitized."""
    cache_creation = usage.get("cache_creation")
    server_tools = usage.get("server_tool_use")
    figures = [
        _count(usage.get("input_tokens"), "input_tokens"),
        _count(usage.get("output_tokens"), "output_tokens"),
        _count(usage.get("cache_read_input_tokens"), "cache_read_input_tokens"),
        _count(usage.get("cache_creation_input_tokens"), "cache_creation_input_tokens"),
        _count(cache_creation.get("ephemeral_1h_input_tokens"), "ephemeral_1h_input_tokens")
        if isinstance(cache_creation, dict)
        else 0,
        _count(server_tools.get("web_search_requests"), "web_search_requests") if isinstance(server_tools, dict) else 0,
    ]
    figures[4] = min(figures[4], figures[3])  # the 1-hour part of the cache writes
    return figures


def _count(value: object, name: str) -> int:
    return 0 if value is None else sanitize.count(value, name)


def _plain_figures(usage: dict) -> list[int] | None:
    """`usage_figures` for the usual case (every count a non-negative int in bounds); None sends the usage to it."""
    get = usage.get
    creation, tools = get("cache_creation"), get("server_tool_use")
    counts = [
        get("input_tokens", 0),
        get("output_tokens", 0),
        get("cache_read_input_tokens", 0),
        get("cache_creation_input_tokens", 0),
        creation.get("ephemeral_1h_input_tokens", 0) if type(creation) is dict else 0,
        tools.get("web_search_requests", 0) if type(tools) is dict else 0,
    ]
    for value in counts:
        if type(value) is not int or value < 0 or value > sanitize.MAX_TOKENS:
            return None
    if counts[4] > counts[3]:
        counts[4] = counts[3]
    return counts


# One `details` dict per distinct shape, shared: a reply's details are a handful of shapes over a whole import, and
# shared objects pickle once per batch. Model names likewise.
_DETAILS: dict[tuple, dict | None] = {}
MODEL_NAMES: dict[str, str] = {}  # the importer's compiled reader interns into it too


def details_of(geo: str | None, speed: str | None, aborted: bool, served: str | None) -> dict | None:
    """The reply's details as a ledger row keeps them (shared dict, or None when there are none)."""
    shape = (geo, speed, aborted, served)
    if shape in _DETAILS:
        return _DETAILS[shape]
    details: dict = {name: value for name, value in (("inference_geo", geo), ("speed", speed)) if value}
    if aborted:
        details["aborted_mid_stream"] = True
    if served:
        details["served_model"] = served
    return _DETAILS.setdefault(shape, details or None)


# -- the fast path: msgspec decodes only these fields, typed as Claude Code writes them -----------------------------


class _CacheCreation(msgspec.Struct):
    ephemeral_1h_input_tokens: int = 0


class _ServerTools(msgspec.Struct):
    web_search_requests: int = 0


class _Usage(msgspec.Struct):
    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_input_tokens: int = 0
    cache_creation_input_tokens: int = 0
    cache_creation: _CacheCreation | None = None
    server_tool_use: _ServerTools | None = None
    speed: str | None = None
    inference_geo: str | None = None


class _Message(msgspec.Struct):
    id: str | None = None
    model: str | None = None
    usage: _Usage | None = None


class Line(msgspec.Struct):
    """The fields of a transcript line the decoder reads, plus the file facts an import keeps (cwd, version); any
    other type fails to decode, and the line goes to `from_entry`."""

    type: str | None = None
    isApiErrorMessage: bool | None = None
    requestSessionId: str | None = None
    sessionId: str | None = None
    message: _Message | None = None
    requestId: str | None = None
    requestedModel: str | None = None
    isAbortedMidStream: bool | None = None
    timestamp: str | None = None
    cwd: str | None = None
    version: str | None = None


DECODE_ERRORS = (msgspec.ValidationError, msgspec.DecodeError, UnicodeDecodeError)
line_decoder = msgspec.json.Decoder(Line)


def decode(raw: bytes | memoryview) -> tuple[Line, UsageLine | bool | None]:
    """(the typed line, its usage: None when it bills nothing, `UNUSUAL` when `from_entry` must decide: no message,
    no id or usage, a count out of bounds, a name too long). Raises one of `DECODE_ERRORS` for a line msgspec cannot
    type (then `from_entry` too). msgspec does not check the bytes it skips: the line must be valid UTF-8."""
    str(raw, "utf-8")  # json.loads (the live meter's) refuses what msgspec would skip over
    line = line_decoder.decode(raw)
    return line, from_line(line)


def from_line(line: Line) -> UsageLine | bool | None:
    """`from_entry`'s answer for a line msgspec typed, or `UNUSUAL`."""
    message = line.message
    usage = None if message is None else message.usage
    figures = None
    if usage is not None:
        creation, tools = usage.cache_creation, usage.server_tool_use
        figures = [
            usage.input_tokens,
            usage.output_tokens,
            usage.cache_read_input_tokens,
            usage.cache_creation_input_tokens,
            0 if creation is None else creation.ephemeral_1h_input_tokens,
            0 if tools is None else tools.web_search_requests,
        ]
    return from_fields(
        line.type,
        line.isApiErrorMessage,
        line.requestSessionId,
        line.sessionId,
        None if message is None else message.id,
        None if message is None else message.model,
        figures,
        None if usage is None else usage.speed,
        None if usage is None else usage.inference_geo,
        line.requestId,
        line.requestedModel,
        line.isAbortedMidStream,
        line.timestamp,
    )


def from_fields(
    kind: str | None,
    api_error: bool | None,
    copied_from: str | None,
    session_id: str | None,
    message_id: str | None,
    served: str | None,
    figures: list[int] | None,
    speed: str | None,
    geo: str | None,
    request_id: str | None,
    requested_model: str | None,
    aborted: bool | None,
    timestamp: str | None,
    cwd: str | None = None,
    version: str | None = None,
) -> UsageLine | bool | None:
    """`from_line` on the typed fields of a line (`Line`'s, `message.usage` flattened: `figures` in `FIGURES`
    order, 0 for an absent count, None when the message or its usage is absent or null). The compiled reader
    (capguard/importers/_claude_scan.c) gives its fields in this order, cwd and version last (not read here)."""
    if kind != "assistant" or api_error:
        return None
    if copied_from is not None and copied_from != session_id:
        return None  # a fork's copy of its parent's reply: counted in the parent's file
    if not message_id or figures is None:
        return UNUSUAL
    if served == SYNTHETIC_MODEL:
        return None
    if min(figures) < 0 or max(figures) > sanitize.MAX_TOKENS:  # msgspec takes any int: `from_entry` bounds them
        return UNUSUAL
    if figures[4] > figures[3]:
        figures[4] = figures[3]
    model = requested_model or served
    if len(model or "") > sanitize.MAX_NAME or len(served or "") > sanitize.MAX_NAME:
        return UNUSUAL  # names from outside are cut to size by `from_entry`
    return UsageLine(
        f"claude:{request_id}" if request_id else f"claude:msg:{message_id}",
        model if model is None else MODEL_NAMES.setdefault(model, model),
        figures,
        details_of(
            geo or None,
            speed or None,
            bool(aborted),
            served if served and served != model else None,
        ),
        timestamp,
        session_id,
        request_id or None,
    )
