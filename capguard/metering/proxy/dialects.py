"""The three APIs the proxy meters, request side: which paths cost money, what a request asks for, how to lower its
output limit, and each provider's own error format. Pure: a parsed JSON body in, a new body or facts out."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

ANTHROPIC = "anthropic"  # Messages: POST /v1/messages
CHAT = "chat"  # OpenAI Chat Completions: POST /v1/chat/completions
RESPONSES = "responses"  # OpenAI Responses: POST /v1/responses
DIALECTS = (ANTHROPIC, CHAT, RESPONSES)

_METERED = {"/messages": ANTHROPIC, "/chat/completions": CHAT, "/responses": RESPONSES}
# Paths that never cost money: listing models, counting tokens, reading a stored response.
_FREE_POST = ("/messages/count_tokens", "/responses/input_tokens")
_FREE_GET = re.compile(r"(^|/)(models(/[^/]+)?|responses/[^/]+(/input_items)?)$")
# Request tools a client runs itself; any other tool runs on the provider's side, can loop and bill searches and
# their results many times in one request, and has no bound capguard can hold.
_CLIENT_TOOLS = {None, "function", "custom", "local_shell", "shell", "apply_patch"}
_ANTHROPIC_SERVER_TOOL = re.compile(r"^(web_search|web_fetch|code_execution|tool_search)")
_HIDDEN_REASONING_MODEL = re.compile(r"(^|/)(o\d|gpt-5|gpt-oss|codex)", re.I)


@dataclass(frozen=True)
class Route:
    """What the proxy does with a path: meter it (`dialect`), pass it free, or refuse it (`why`)."""

    dialect: str | None = None
    free: bool = False
    why: str | None = None


def route(method: str, tail: str, default_dialect: str) -> Route:
    """`tail` is the path after the secret, e.g. `/v1/messages`; a refusal says why, in words a user reads."""
    path = "/" + tail.strip("/")
    if method == "POST":
        for suffix, dialect in _METERED.items():
            if path.endswith(suffix):
                return Route(dialect=dialect)
        if path.endswith(_FREE_POST):
            return Route(free=True)
    if method in ("GET", "HEAD") and _FREE_GET.search(path.lstrip("/")):
        return Route(free=True)
    return Route(why=f"capguard's metering proxy does not forward {method} {path}: it could cost money unmetered")


@dataclass(frozen=True)
class Ask:
    """What a request asks for, as far as its worst case goes."""

    model: str
    stream: bool
    max_out: int | None  # the output limit the request sets (None: the model's own)
    choices: int  # completions asked for (Chat's `n`)
    cache_write: str | None  # None, "5m" or "1h": the dearest cache write the request can cause
    hidden_reasoning: bool  # the model may bill reasoning it does not stream (a cut stream's output is unknown)
    speed: str | None = None
    geo: str | None = None


def ask(dialect: str, body: dict[str, Any]) -> Ask:
    """The facts of a request; ValueError (shown to the user) for a request capguard cannot bound."""
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise ValueError("the request names no model")
    _check_tools(dialect, body.get("tools"))
    if dialect == ANTHROPIC and body.get("mcp_servers"):
        raise ValueError("capguard cannot bound the cost of remote MCP servers called by the API")
    if dialect == ANTHROPIC:
        thinking = body.get("thinking")
        return Ask(
            model,
            body.get("stream") is True,
            _positive(body.get("max_tokens")),
            1,
            _cache_write(body),
            isinstance(thinking, dict) and thinking.get("type") not in (None, "disabled"),
            _text(body.get("speed")),
            _text(body.get("inference_geo")),
        )
    if body.get("service_tier") in ("priority", "fast"):  # dearer rates the core pricer does not apply
        raise ValueError(f"capguard cannot price service_tier {body['service_tier']!r} yet")
    reasoning = bool(_HIDDEN_REASONING_MODEL.search(model)) or any(
        body.get(k) is not None for k in ("reasoning", "reasoning_effort")
    )
    if dialect == CHAT:
        n = body.get("n")
        choices = n if isinstance(n, int) and not isinstance(n, bool) and n > 1 else 1
        limit = _positive(body.get("max_completion_tokens")) or _positive(body.get("max_tokens"))
        return Ask(model, body.get("stream") is True, limit, choices, None, reasoning)
    if body.get("conversation") is not None or body.get("background") is True:
        raise ValueError("capguard cannot bound a Responses request with a stored conversation or in background")
    return Ask(model, body.get("stream") is True, _positive(body.get("max_output_tokens")), 1, None, reasoning)


def with_max_out(dialect: str, body: dict[str, Any], limit: int) -> dict[str, Any]:
    """The request with its output limit set to `limit`, in the field its API reads."""
    if dialect == ANTHROPIC:
        return {**body, "max_tokens": limit}
    if dialect == RESPONSES:
        return {**body, "max_output_tokens": limit}
    if "max_tokens" in body and "max_completion_tokens" not in body:
        return {**body, "max_tokens": limit}  # an older server may not know max_completion_tokens
    return {**body, "max_completion_tokens": limit}


def with_stream_usage(body: dict[str, Any]) -> tuple[dict[str, Any], bool]:
    """A Chat stream that reports its usage at the end; True when capguard asked for it (the client did not)."""
    options = body.get("stream_options")
    if isinstance(options, dict) and options.get("include_usage") is True:
        return body, False
    return {**body, "stream_options": {**(options if isinstance(options, dict) else {}), "include_usage": True}}, True


def error_body(dialect: str, message: str, kind: str = "invalid_request_error") -> bytes:
    """The provider's own error JSON, so the agent shows `message` to its user as any API error."""
    if dialect == ANTHROPIC:
        body: dict[str, Any] = {"type": "error", "error": {"type": kind, "message": message}}
    else:
        body = {"error": {"message": message, "type": kind, "param": None, "code": "capguard_refused"}}
    return json.dumps(body).encode()


def _check_tools(dialect: str, tools: Any) -> None:
    for tool in tools if isinstance(tools, list) else ():
        kind = tool.get("type") if isinstance(tool, dict) else None
        if kind == "namespace" and dialect == RESPONSES:  # Codex's group of tools: as safe as its members
            _check_tools(dialect, tool.get("tools"))
            continue
        server_side = (
            bool(_ANTHROPIC_SERVER_TOOL.match(str(kind or ""))) if dialect == ANTHROPIC else kind not in _CLIENT_TOOLS
        )
        if server_side:
            raise ValueError(f"capguard cannot bound the cost of the server-side tool {str(kind)[:60]!r}")


def _cache_write(body: dict[str, Any]) -> str | None:
    """The dearest cache write a Messages request asks for: any `cache_control` (top level too) writes."""
    found: str | None = None
    stack: list[Any] = [body]
    while stack:
        value = stack.pop()
        if isinstance(value, dict):
            control = value.get("cache_control")
            if isinstance(control, dict):
                if control.get("ttl") == "1h":
                    return "1h"
                found = "5m"
            stack.extend(v for v in value.values() if isinstance(v, (dict, list)))
        elif isinstance(value, list):
            stack.extend(v for v in value if isinstance(v, (dict, list)))
    return found


def _positive(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else None


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) else None
