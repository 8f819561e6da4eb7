"""What an Anthropic Messages call used, read from the SDK's objects or stream events; the input of a request.

Pure and duck-typed (attributes or dict keys), so it reads plain dicts in tests and never imports `anthropic`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from capguard.core import sanitize

# Request fields the prompt is made of (what count_tokens counts).
_PROMPT_FIELDS = ("system", "messages", "tools", "tool_choice", "mcp_servers")
# A conservative allowance where the bytes say nothing: an image is at most ~1,600 tokens; a document given by
# URL or file id can be long. Plus the system prompt Anthropic adds for tool use.
_IMAGE_TOKENS = 2_000
_REFERENCED_DOCUMENT_TOKENS = 100_000
_OVERHEAD_TOKENS = 1_000


def get(obj: Any, name: str, default: Any = None) -> Any:
    if obj is None:
        return default
    if isinstance(obj, dict):
        return obj.get(name, default)
    return getattr(obj, name, default)


_COUNTS = (
    ("input_tokens", "input_tokens"),
    ("output_tokens", "output_tokens"),
    ("cache_read_tokens", "cache_read_input_tokens"),
    ("cache_write_tokens", "cache_creation_input_tokens"),
)


@dataclass
class CallUsage:
    """One call's billed usage. `input_tokens` excludes cache reads and writes, as the API reports it.

    Server-side compaction iterations are billed but not included in the top-level fields (Anthropic's SDK
    says so), so they are kept apart in `compaction` and added to the totals.
    """

    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0
    cache_write_1h_tokens: int = 0
    web_search_requests: int = 0
    speed: str | None = None
    inference_geo: str | None = None
    compaction: dict[str, int] = field(default_factory=dict)

    def total(self, name: str) -> int:
        own: int = getattr(self, name)
        return own + self.compaction.get(name, 0)

    @property
    def prompt_tokens(self) -> int:
        """The whole prompt of the call's last sampling: what the conversation has grown to."""
        return self.input_tokens + self.cache_read_tokens + self.cache_write_tokens


def read_usage(usage: Any) -> CallUsage:
    """A `usage` object (Message.usage, BetaUsage, or the dict of a stream event)."""
    out = CallUsage()
    merge_usage(out, usage)
    return out


def merge_usage(out: CallUsage, usage: Any) -> None:
    """Overwrite with the fields `usage` has: a message_delta's counts are cumulative, absent ones keep theirs.

    Every count passes capguard.core.sanitize: beyond its bound it is the bound; a non-number raises NotANumber."""
    for attr, name in _COUNTS:
        value = get(usage, name)
        if value is not None:
            setattr(out, attr, sanitize.count(value, name))
    one_hour = get(get(usage, "cache_creation"), "ephemeral_1h_input_tokens")
    if one_hour is not None:
        out.cache_write_1h_tokens = sanitize.count(one_hour, "ephemeral_1h_input_tokens")
    searches = get(get(usage, "server_tool_use"), "web_search_requests")
    if searches is not None:
        out.web_search_requests = sanitize.count(searches, "web_search_requests")
    out.speed = get(usage, "speed") or out.speed
    out.inference_geo = get(usage, "inference_geo") or out.inference_geo
    iterations = get(usage, "iterations")
    if iterations:
        compactions = [item for item in iterations if get(item, "type") == "compaction"]
        out.compaction = {
            attr: sanitize.count(sum(sanitize.count(get(item, name, 0) or 0, name) for item in compactions), name)
            for attr, name in _COUNTS
        }


@dataclass
class StreamTracker:
    """Follows raw stream events: message_start brings the id, model and prompt usage, message_delta the rest."""

    message_id: str | None = None
    model: str | None = None
    stop_reason: str | None = None
    usage: CallUsage | None = None

    def see(self, event: Any) -> None:
        kind = get(event, "type")
        if kind == "message_start":
            message = get(event, "message")
            self.message_id, self.model = get(message, "id"), get(message, "model")
            self.usage = read_usage(get(message, "usage"))
        elif kind == "message_delta" and self.usage is not None:
            merge_usage(self.usage, get(event, "usage"))
            self.stop_reason = get(get(event, "delta"), "stop_reason") or self.stop_reason

    @property
    def complete(self) -> bool:
        """The reply ended (message_delta carries its stop reason); else the stream was cut short."""
        return self.stop_reason is not None


def estimate_input_tokens(kwargs: dict[str, Any]) -> int:
    """An upper estimate of a request's prompt in tokens, for when count_tokens cannot answer.

    A token is at least one byte of UTF-8 for text, so the JSON size bounds the text; media blocks get the
    allowances above (an image's base64 bytes already exceed its tokens).
    """
    prompt = {name: kwargs[name] for name in _PROMPT_FIELDS if name in kwargs}
    total = len(json.dumps(prompt, default=str, ensure_ascii=False).encode()) + _OVERHEAD_TOKENS
    return total + _media_allowance(prompt)


def _media_allowance(value: Any) -> int:
    if isinstance(value, dict):
        own = 0
        source = value.get("source")
        if value.get("type") == "image" and isinstance(source, dict) and source.get("type") != "base64":
            own = _IMAGE_TOKENS
        elif value.get("type") == "document" and isinstance(source, dict) and source.get("type") in ("url", "file"):
            own = _REFERENCED_DOCUMENT_TOKENS
        return own + sum(_media_allowance(v) for v in value.values())
    if isinstance(value, (list, tuple)):
        return sum(_media_allowance(v) for v in value)
    return 0
