"""The four APIs the proxy meters, reply side: the exact usage of a JSON body or a stream's events, what a stream
has generated so far (for one cut short), every figure through capguard.core.sanitize. Pure: parsed JSON in."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from capguard.core import sanitize
from capguard.core.anthropic_usage import CallUsage, get, merge_usage
from capguard.metering.proxy.dialects import ANTHROPIC, CHAT, CONVERSE, GEMINI


@dataclass
class Seen:
    """What a reply showed: its id and model, its final usage once it came, and what was generated before."""

    response_id: str | None = None
    model: str | None = None
    usage: CallUsage | None = None  # the exact usage; for Anthropic, message_start's prompt part before the end
    complete: bool = False  # the final usage arrived: `usage` is what the server billed
    output_bytes: int = 0  # UTF-8 bytes of generated text, tool calls and reasoning streamed so far
    failed: bool = False  # the server said the reply failed (an error event)
    unreadable: bool = False  # a usage figure was no number: nothing this reply says about usage is believed
    suspicious: str | None = None  # why a figure was not believed
    _events: int = field(default=0, repr=False)
    prompt_unknown: bool = False  # the final usage left out the prompt's figure: `usage` holds no prompt
    output_stated: bool = False  # ... but stated the output: `usage.output_tokens` is what the server billed
    _stated: set[str] = field(default_factory=set, repr=False)  # the figures the reply's usage has given

    @property
    def events(self) -> int:
        return self._events


def from_body(dialect: str, body: Any) -> Seen:
    """A non-streamed reply (or an error body): its usage when it has a readable one."""
    seen = Seen()
    if dialect == GEMINI:  # a JSON object, or the array a stream without alt=sse is sent as
        tracker = Tracker(GEMINI)
        for item in body if isinstance(body, list) else [body]:
            if isinstance(item, dict):
                tracker.see(item, whole=True)
        return tracker.seen
    if not isinstance(body, dict):
        return seen
    seen.response_id, seen.model = _name(body.get("id")), _name(body.get("model"))
    if body.get("usage") is not None:
        try:
            _take_usage(seen, dialect, body.get("usage"))
        except (TypeError, AttributeError) as err:
            _unreadable(seen, err)
    return seen


def _unreadable(seen: Seen, err: Exception) -> None:
    """A reply with a field of a shape no API sends (a number where a list goes): nothing it says about usage is
    believed, and the call is charged by its bound (a whole reply: its whole output limit)."""
    seen.suspicious = f"the server sent a reply capguard cannot read ({type(err).__name__})"
    seen.unreadable, seen.complete, seen.usage = True, False, None


class Tracker:
    """Follows one stream's events (parsed JSON data) and keeps what they say in `seen`."""

    def __init__(self, dialect: str) -> None:
        self.dialect = dialect
        self.seen = Seen()
        self._figures: dict[str, int] = {}  # Gemini's usageMetadata figures so far

    def see(self, data: dict[str, Any], *, whole: bool = False) -> None:
        self.seen._events += 1
        try:
            if self.dialect == ANTHROPIC:
                self._anthropic(data)
            elif self.dialect == CHAT:
                self._chat(data)
            elif self.dialect == GEMINI:
                self._gemini(data, whole)
            elif self.dialect == CONVERSE:
                self._converse(data)
            else:
                self._responses(data)
        except (TypeError, AttributeError) as err:  # a field of a shape no API sends (a number for a list...)
            _unreadable(self.seen, err)

    def _anthropic(self, data: dict[str, Any]) -> None:
        seen, kind = self.seen, data.get("type")
        if kind == "message_start":
            message = data.get("message")
            seen.response_id, seen.model = _name(get(message, "id")), _name(get(message, "model"))
            _take_usage(seen, ANTHROPIC, get(message, "usage"), final=False)
        elif kind == "content_block_delta":
            delta = data.get("delta")
            for key in ("text", "thinking", "partial_json"):
                seen.output_bytes += _bytes(get(delta, key))
        elif kind == "content_block_start":
            block = data.get("content_block")
            seen.output_bytes += _bytes(get(block, "name")) + _bytes(get(block, "text"))
        elif kind == "message_delta":
            _take_usage(seen, ANTHROPIC, data.get("usage"))
        elif kind == "error":
            seen.failed = True

    def _chat(self, data: dict[str, Any]) -> None:
        seen = self.seen
        seen.response_id = seen.response_id or _name(data.get("id"))
        seen.model = seen.model or _name(data.get("model"))
        for choice in data.get("choices") or ():
            delta = get(choice, "delta")
            for key in ("content", "reasoning_content", "reasoning", "refusal"):
                seen.output_bytes += _bytes(get(delta, key))
            for call in get(delta, "tool_calls") or ():
                function = get(call, "function")
                seen.output_bytes += _bytes(get(function, "name")) + _bytes(get(function, "arguments"))
        if data.get("usage") is not None:
            _take_usage(seen, CHAT, data.get("usage"))
        if data.get("error") is not None:
            seen.failed = True

    def _responses(self, data: dict[str, Any]) -> None:
        seen, kind = self.seen, str(data.get("type") or "")
        response = data.get("response")
        if isinstance(response, dict):
            seen.response_id = _name(response.get("id")) or seen.response_id
            seen.model = _name(response.get("model")) or seen.model
        if kind.endswith(".delta"):
            seen.output_bytes += _bytes(data.get("delta"))
        elif kind in ("response.completed", "response.incomplete", "response.failed"):
            if get(response, "usage") is not None:
                _take_usage(seen, "responses", get(response, "usage"))
            seen.failed = kind == "response.failed" and not seen.complete
        elif kind == "error":
            seen.failed = True

    def _converse(self, data: dict[str, Any]) -> None:
        """A Converse stream's events (eventstream.converse_event): the text, tool input and reasoning streamed, and
        the usage in the `metadata` event that ends it."""
        seen, kind, event = self.seen, data.get("converse"), data.get("event")
        if kind == "contentBlockDelta":
            delta = get(event, "delta")
            seen.output_bytes += _bytes(get(delta, "text")) + _bytes(get(get(delta, "toolUse"), "input"))
            seen.output_bytes += _bytes(get(get(delta, "reasoningContent"), "text"))
        elif kind == "contentBlockStart":
            seen.output_bytes += _bytes(get(get(get(event, "start"), "toolUse"), "name"))
        elif kind == "metadata" and get(event, "usage") is not None:
            _take_usage(seen, CONVERSE, get(event, "usage"))

    def _gemini(self, data: dict[str, Any], whole: bool) -> None:
        """Each chunk carries the usage so far (figures only grow); the reply is over at a finishReason, a blocked
        prompt, or the end of a whole (non-streamed) reply."""
        seen = self.seen
        seen.response_id = seen.response_id or _name(data.get("responseId"))
        seen.model = seen.model or _name(data.get("modelVersion"))
        ended = whole or bool(get(data.get("promptFeedback"), "blockReason"))
        for candidate in data.get("candidates") or ():
            ended = ended or bool(get(candidate, "finishReason"))
            parts = get(get(candidate, "content"), "parts")
            for part in parts if isinstance(parts, list) else ():
                seen.output_bytes += _bytes(get(part, "text"))
                call = get(part, "functionCall")
                if call is not None:
                    seen.output_bytes += _bytes(get(call, "name")) + len(str(get(call, "args") or ""))
        # the chunk that ends the reply carries its whole usage (earlier ones only the prompt's figure so far);
        # one that ends it without usage leaves the output unknown: charged by its bound
        if data.get("usageMetadata") is not None:
            _take_usage(seen, GEMINI, data.get("usageMetadata"), final=ended, so_far=self._figures)
        if data.get("error") is not None:
            seen.failed = True


def is_usage_chunk(data: dict[str, Any]) -> bool:
    """Chat's extra last chunk: no choices, only the usage (what a client that did not ask for it never sees)."""
    return data.get("usage") is not None and not data.get("choices")


def _take_usage(
    seen: Seen, dialect: str, usage: Any, *, final: bool = True, so_far: dict[str, int] | None = None
) -> None:
    """Read `usage` into `seen`; a figure that is no number leaves the usage unknown (the bound is charged)."""
    try:
        if dialect == ANTHROPIC:
            read = seen.usage or CallUsage()
            merge_usage(read, usage)
        elif dialect == GEMINI:
            read = _gemini_usage(usage, {} if so_far is None else so_far)
        elif dialect == CONVERSE:
            read = _converse_usage(usage)
        else:
            read = _openai_usage(dialect, usage)
    except sanitize.NotANumber as err:
        seen.suspicious, seen.unreadable, seen.complete, seen.usage = str(err), True, False, None
        return
    if seen.unreadable:
        return
    seen.usage = read
    stated = seen._stated
    # message_start's output_tokens is a placeholder (1): only a final usage states the output
    stated.update(
        n for n in _REQUIRED.get(dialect, ()) if get(usage, n) is not None and (final or n != "output_tokens")
    )
    missing = [name for name in _REQUIRED.get(dialect, ()) if name not in stated]
    if final and missing:  # the API always states these: a reply without one is charged by its bound, not as 0
        seen.suspicious = f"the reply's usage leaves out {' and '.join(missing)}: charged by its bound"
        seen.prompt_unknown = missing != ["output_tokens"]
        output = {ANTHROPIC: "output_tokens", CONVERSE: "outputTokens"}.get(dialect, "candidatesTokenCount")
        seen.output_stated = output in stated or output in (so_far or {})
        return
    seen.complete = seen.complete or final
    figures = {
        "input_tokens": read.input_tokens,
        "output_tokens": read.output_tokens,
        "cache_read_tokens": read.cache_read_tokens,
        "cache_write_tokens": read.cache_write_tokens,
    }
    seen.suspicious = sanitize.at_bound(figures) or seen.suspicious


# Figures each API's final usage always states (Chat's and the Responses API's are read as required already)
_REQUIRED = {
    ANTHROPIC: ("input_tokens", "output_tokens"),
    GEMINI: ("promptTokenCount",),
    CONVERSE: ("inputTokens", "outputTokens"),
}


def _converse_usage(usage: Any) -> CallUsage:
    """Converse's usage: inputTokens leaves out the cache's reads and writes, given apart (as Anthropic's)."""
    if not isinstance(usage, dict):
        raise sanitize.NotANumber("usage is not an object")
    figures = {name: sanitize.count(usage.get(name) or 0, name) for name in _CONVERSE_FIGURES}
    return CallUsage(
        input_tokens=figures["inputTokens"],
        output_tokens=figures["outputTokens"],
        cache_read_tokens=figures["cacheReadInputTokens"],
        cache_write_tokens=figures["cacheWriteInputTokens"],
    )


_CONVERSE_FIGURES = ("inputTokens", "outputTokens", "cacheReadInputTokens", "cacheWriteInputTokens")


def _openai_usage(dialect: str, usage: Any) -> CallUsage:
    """Chat's prompt/completion tokens or the Responses API's input/output tokens; cached tokens are part of the
    prompt there, apart here (as capguard's Reply counts them)."""
    prompt_key, output_key, details_key = (
        ("prompt_tokens", "completion_tokens", "prompt_tokens_details")
        if dialect == CHAT
        else ("input_tokens", "output_tokens", "input_tokens_details")
    )
    if not isinstance(usage, dict):
        raise sanitize.NotANumber("usage is not an object")
    prompt = sanitize.count(usage.get(prompt_key), prompt_key)
    output = sanitize.count(usage.get(output_key), output_key)
    if usage.get("total_tokens") is not None:  # tokens billed past the completion's count (a server's reasoning)
        output = max(output, sanitize.count(usage["total_tokens"], "total_tokens") - prompt)
    cached = get(get(usage, details_key), "cached_tokens")
    cached = 0 if cached is None else min(prompt, sanitize.count(cached, "cached_tokens"))
    return CallUsage(input_tokens=prompt - cached, output_tokens=output, cache_read_tokens=cached)


def _gemini_usage(usage: Any, figures: dict[str, int]) -> CallUsage:
    """usageMetadata as capguard counts it, as the session-file meter does: promptTokenCount includes the cached
    part, kept apart here; toolUsePromptTokenCount is input; thoughtsTokenCount is output (billed at its rate).
    `figures` holds the stream's figures so far: one a chunk leaves out keeps the value an earlier chunk gave."""
    if not isinstance(usage, dict):
        raise sanitize.NotANumber("usageMetadata is not an object")
    read = {name: sanitize.count(usage[name], name) for name in _GEMINI_FIGURES if usage.get(name) is not None}
    figures.update({name: max(figures.get(name, 0), value) for name, value in read.items()})
    prompt = figures.get("promptTokenCount", 0)
    cached = min(prompt, figures.get("cachedContentTokenCount", 0))
    return CallUsage(
        input_tokens=prompt - cached + figures.get("toolUsePromptTokenCount", 0),
        output_tokens=figures.get("candidatesTokenCount", 0) + figures.get("thoughtsTokenCount", 0),
        cache_read_tokens=cached,
    )


_GEMINI_FIGURES = (
    "promptTokenCount",
    "cachedContentTokenCount",
    "candidatesTokenCount",
    "thoughtsTokenCount",
    "toolUsePromptTokenCount",
)


def _bytes(value: Any) -> int:
    return len(value.encode("utf-8", "replace")) if isinstance(value, str) else 0


def _name(value: Any) -> str | None:
    return sanitize.name(value)


def code_assist_reply(parsed: Any) -> Any:
    """The Gemini reply inside Code Assist's `{"response": ..., "traceId": ...}` (its trace id as the reply's id when
    the reply names none), or None: no reply of a model, so no usage is read from it."""
    inner = parsed.get("response") if isinstance(parsed, dict) else None
    if not isinstance(inner, dict):
        return None
    if not inner.get("responseId") and isinstance(parsed.get("traceId"), str):
        inner = {**inner, "responseId": parsed["traceId"]}
    return inner
