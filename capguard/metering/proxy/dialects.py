"""The four APIs the proxy meters, request side: which paths cost money, what a request asks for, how to lower its
output limit, and each provider's own error format. Pure: a parsed JSON body in, a new body or facts out."""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any
from urllib.parse import parse_qsl, unquote, urlencode

import msgspec

from capguard.core.pricing import (
    BEDROCK_REGIONAL,
    FOUNDRY_DATA_ZONE,
    NO_REGIONAL_PREMIUM,
    VERTEX_REGIONAL,
    bedrock_model,
)
from capguard.metering.proxy.compact_json import CACHE_CONTROL, encode, object_end

ANTHROPIC = "anthropic"  # Messages: POST /v1/messages
CHAT = "chat"  # OpenAI Chat Completions: POST /v1/chat/completions
RESPONSES = "responses"  # OpenAI Responses: POST /v1/responses
GEMINI = "gemini"  # Google's Gemini API: POST /v1beta/models/<model>:generateContent (the model in the path)
DIALECTS = (ANTHROPIC, CHAT, RESPONSES, GEMINI)
# Claude on Google Vertex AI: a mount's style, not a dialect. Its requests are Messages bodies without `model`;
# the path names the model, the stream and the location (`/projects/P/locations/L/publishers/anthropic/models/M:V`)
VERTEX = "vertex"
# Gemini on Google Vertex AI (Gemini CLI's `vertex-ai` sign-in): Gemini bodies under
# `/v1beta1/[projects/P/locations/L/]publishers/google/models/M:method` (no project and location: express mode)
VERTEX_GEMINI = "vertex-gemini"
# Claude in Amazon Bedrock (bedrock-mantle): the Messages API as Anthropic's, at one region's endpoint, with Bedrock's
# model ids (`anthropic.claude-opus-4-7`): priced as Anthropic's model of that name, at the regional endpoint's premium
MANTLE = "bedrock-mantle"
# Claude on Amazon Bedrock's InvokeModel API: Messages bodies without `model` and `stream`; the path names the model
# (`/model/<id>/invoke`, `/model/<id>/invoke-with-response-stream`, whose reply is AWS's event stream, not SSE)
BEDROCK = "bedrock"
# Bedrock's Converse API (`/model/<id>/converse`, `/model/<id>/converse-stream`: AWS's event stream), as litellm calls
# Bedrock for aider: its own request and reply shapes (messages of content blocks, inferenceConfig.maxTokens, usage
# as inputTokens/outputTokens/cacheReadInputTokens/cacheWriteInputTokens); a dialect, served at a BEDROCK mount
CONVERSE = "converse"
# Gemini CLI's Login with Google (and Compute Engine credentials): Google's Code Assist server, a mount's style.
# Its model calls are `POST /v1internal:generateContent` and `:streamGenerateContent?alt=sse`, Gemini bodies wrapped
# as {model, project, user_prompt_id, request}; replies (each SSE event) wrapped as {response, traceId}; its other
# methods (loadCodeAssist, quotas, experiments, metrics, settings, countTokens) cost nothing
CODE_ASSIST = "code-assist"
# Claude in Microsoft Foundry: the Messages API at a resource's endpoint; the model is a deployment's name (Claude
# Code names its deployments after the models); billed at Anthropic's rates, a US Data Zone deployment at 1.1x
FOUNDRY = "foundry"
# Where Claude's task budget is not sent: `claude -p --task-budget` sends none on these (measured with 2.1.330), and
# does on Foundry, Claude Platform on AWS and Claude on Google Cloud
NO_TASK_BUDGET = frozenset({VERTEX, BEDROCK, MANTLE})
# A Vertex mount's upstream when the user set no base URL: the host of the path's location, as the SDKs pick it
# (vertex_base); written as the template it stands for, as notes and `capguard explain` show it
VERTEX_BY_LOCATION = "https://{location}-aiplatform.googleapis.com"

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
    model: str | None = None  # named by the path, not the body (Gemini, Vertex)
    stream: bool = False  # the path asks for a stream (Gemini's streamGenerateContent, Vertex's streamRawPredict)
    location: str | None = None  # Vertex's: it decides the host and the price
    platform: str | None = None  # the cloud that serves it (VERTEX, BEDROCK, MANTLE, FOUNDRY...), None: the API


def route(method: str, tail: str, default_dialect: str) -> Route:
    """`tail` is the path after the secret, e.g. `/v1/messages`; a refusal says why, in words a user reads."""
    path = "/" + tail.strip("/")
    if default_dialect in (MANTLE, FOUNDRY):  # Anthropic's paths, at Bedrock's or Foundry's endpoint
        found = route(method, tail, ANTHROPIC)
        return replace(found, platform=default_dialect) if found.dialect == ANTHROPIC else found
    if default_dialect == GEMINI:
        return _gemini_route(method, path)
    if default_dialect == CODE_ASSIST:
        return _code_assist_route(method, path)
    if default_dialect == VERTEX:
        return _vertex_route(method, path)
    if default_dialect == VERTEX_GEMINI:
        return _vertex_gemini_route(method, path)
    if default_dialect == BEDROCK:
        return _bedrock_route(method, path)
    if method == "POST":
        for suffix, dialect in _METERED.items():
            if path.endswith(suffix):
                return Route(dialect=dialect)
        if path.endswith(_FREE_POST):
            return Route(free=True)
    if method in ("GET", "HEAD") and _FREE_GET.search(path.lstrip("/")):
        return Route(free=True)
    return Route(why=f"capguard's metering proxy does not forward {method} {path}: it could cost money unmetered")


_COUNT_SUFFIX = {ANTHROPIC: ("/messages", "/count_tokens"), RESPONSES: ("/responses", "/input_tokens")}
_CHAT_COUNT = ("/chat/completions", "/responses/input_tokens")  # OpenAI's: Chat Completions has no count of its own


def count_tail(dialect: str, tail: str) -> str | None:
    """The path of the provider's free prompt count next to a metered request's path (`v1/messages` ->
    `v1/messages/count_tokens`, Gemini's `:generateContent` -> `:countTokens`, Vertex's `models/<model>:rawPredict`
    -> `models/count-tokens:rawPredict`, Bedrock's `model/<id>/invoke` or `/converse` -> `model/<id>/count-tokens`,
    OpenAI's `v1/chat/completions` -> `v1/responses/input_tokens`: its Responses count), or None."""
    path = tail.rstrip("/")
    found_bedrock = _BEDROCK_PATH.match("/" + path) if dialect in (ANTHROPIC, CONVERSE) else None
    if found_bedrock and found_bedrock[2] in (_BEDROCK_STREAMS if dialect == ANTHROPIC else _CONVERSE_STREAMS):
        return f"model/{found_bedrock[1]}/count-tokens"  # Bedrock's CountTokens: free, as its pricing says
    found_vertex = _VERTEX_PATH.match("/" + path) if dialect == ANTHROPIC else None
    if found_vertex and found_vertex[4] in _VERTEX_METERED:  # Vertex's is free too (Google's Claude pages say so)
        return f"{path.split('/models/', 1)[0]}/models/{_VERTEX_COUNT}:rawPredict"
    if dialect == GEMINI:  # `v1beta/models/<model>:streamGenerateContent` -> `v1beta/models/<model>:countTokens`
        found_gemini = _GEMINI_PATH.match("/" + path)
        verb = found_gemini[2] if found_gemini else None
        if found_gemini is None and (on_vertex := _VERTEX_GEMINI_PATH.match("/" + path)):  # Vertex's, alike
            verb = on_vertex[3]
        return f"{path.rsplit(':', 1)[0]}:countTokens" if verb in _GEMINI_METERED else None
    if dialect == CHAT:
        if not ("/" + path).endswith(_CHAT_COUNT[0]):
            return None
        return (("/" + path)[: -len(_CHAT_COUNT[0])] + _CHAT_COUNT[1]).lstrip("/")
    found = _COUNT_SUFFIX.get(dialect)
    if found is None or not ("/" + path).endswith(found[0]):
        return None
    return path + found[1]


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
    # the request sets no output limit and the model's own is no figure capguard can trust: the limit held is
    # written into the request, so the server enforces it (Gemini: without one a thinking model may run on)
    write_limit: bool = False
    platform: str | None = None  # Route.platform: a cloud's endpoint, whose premium the usage does not say


def ask(
    dialect: str,
    body: dict[str, Any],
    *,
    model: str | None = None,
    stream: bool = False,
    marked: Sequence[bytes] | None = None,
    location: str | None = None,
    platform: str | None = None,
) -> Ask:
    """The facts of a request; ValueError (shown to the user) for a request capguard cannot bound. `model` and
    `stream` come from the path where the API names them there (Gemini, Vertex: the path's model is the one
    served and billed, whatever the body says); `location`: Vertex's. `marked`: the body's compact JSON in pieces
    that hold every cache marker it has (bounds.Prompt.marked), when it was serialized already. `platform`:
    Route.platform (Bedrock's model ids are read as Anthropic's names)."""
    if dialect == GEMINI:
        return _gemini_ask(body, model, stream, platform)
    if dialect == CONVERSE:
        return _converse_ask(body, model, stream, location)
    model = model if model is not None else body.get("model")
    if not isinstance(model, str) or not model:
        raise ValueError("the request names no model")
    if platform in (MANTLE, BEDROCK):
        model = bedrock_model(model)
    _check_tools(dialect, body.get("tools"))
    if dialect == ANTHROPIC and body.get("mcp_servers"):
        raise ValueError("capguard cannot bound the cost of remote MCP servers called by the API")
    if dialect == ANTHROPIC:
        thinking = body.get("thinking")
        return Ask(
            model,
            stream or body.get("stream") is True,
            _positive(body.get("max_tokens")),
            1,
            _cache_write(body, marked),
            isinstance(thinking, dict) and thinking.get("type") not in (None, "disabled"),
            _text(body.get("speed")),
            # on a cloud the endpoint decides it (Vertex and Bedrock take no `inference_geo`)
            _text(body.get("inference_geo"))
            if location is None and platform is None
            else platform_geo(model, location, platform),
            platform=platform or (VERTEX if location is not None else None),
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
    if dialect == CONVERSE:
        return _converse_with_max_out(body, limit)
    if dialect == RESPONSES:
        return {**body, "max_output_tokens": limit}
    if dialect == GEMINI:
        return _gemini_with_max_out(body, limit)
    if "max_tokens" in body and "max_completion_tokens" not in body:
        return {**body, "max_tokens": limit}  # an older server may not know max_completion_tokens
    return {**body, "max_completion_tokens": limit}


def with_stream_usage(body: dict[str, Any]) -> tuple[dict[str, Any], bool]:
    """A Chat stream that reports its usage at the end; True when capguard asked for it (the client did not)."""
    options = body.get("stream_options")
    if isinstance(options, dict) and options.get("include_usage") is True:
        return body, False
    return {**body, "stream_options": {**(options if isinstance(options, dict) else {}), "include_usage": True}}, True


def error_body(dialect: str, message: str, kind: str = "invalid_request_error", status: int | None = None) -> bytes:
    """The provider's own error JSON, so the agent shows `message` to its user as any API error."""
    if dialect in (GEMINI, VERTEX_GEMINI, CODE_ASSIST):
        code = status or 400
        body_: dict[str, Any] = {
            "error": {"code": code, "message": message, "status": _GOOGLE_STATUS.get(code, "UNKNOWN")}
        }
        if dialect == CODE_ASSIST and code == 429:  # a spent quota, as the server says it: Gemini CLI stops at once
            body_["error"]["details"] = [
                {"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "QUOTA_EXHAUSTED",
                 "domain": "cloudcode-pa.googleapis.com", "metadata": {}}
            ]  # fmt: skip
        return json.dumps(body_).encode()
    if dialect in (BEDROCK, CONVERSE):  # Bedrock's own: its SDKs read `message`
        return json.dumps({"message": message}).encode()
    if dialect in (ANTHROPIC, VERTEX, MANTLE, FOUNDRY):  # Claude on the clouds answers in Anthropic's format
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


_CACHE_OBJECT, _ONE_HOUR = CACHE_CONTROL + b"{", b'"ttl":"1h"'  # in compact JSON: only that key with that value


def _cache_write(body: dict[str, Any], marked: Sequence[bytes] | None = None) -> str | None:
    """The dearest cache write a Messages request asks for: any `cache_control` (top level too) writes. Read off
    the body's compact JSON (a conversation of 300 KB: ~0.1 ms, a walk of it ~1.4 ms), or off `marked` (pieces of
    it that hold every marker): each cache_control object (nested ones too), decoded alone when it may hold a
    1-hour TTL. The same answer as a walk of it (tests)."""
    found: str | None = None
    for encoded in [encode(body)] if marked is None else marked:
        at = encoded.find(_CACHE_OBJECT)
        while at >= 0:
            start = at + len(_CACHE_OBJECT) - 1  # its "{"
            control = encoded[start : object_end(encoded, start) + 1]
            if _ONE_HOUR in control and msgspec.json.decode(control).get("ttl") == "1h":
                return "1h"
            found = "5m"
            at = encoded.find(_CACHE_OBJECT, start)  # from inside it: a cache_control within one counts too
    return found


def _positive(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else None


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) else None


# ---- Gemini: the model and the method are in the path; the body is a GenerateContentRequest

_GEMINI_PATH = re.compile(r"^/v\d+(?:alpha|beta)?\d*/models/([A-Za-z0-9._-]{1,200}):([A-Za-z]+)$")
_GEMINI_LIST = re.compile(r"^/v\d+(?:alpha|beta)?\d*/models(?:/[A-Za-z0-9._-]{1,200})?$")
_GEMINI_METERED = {"generateContent": False, "streamGenerateContent": True}  # method -> streams
_GEMINI_FREE = ("countTokens",)
# Models whose output is not text at text rates (images, speech, video, music), or that are embeddings: the
# core pricer has no figure for what they generate.
_GEMINI_NOT_TEXT = re.compile(r"(image|tts|audio|live|embedding|veo|imagen|lyria)", re.I)
_GEMINI_CLIENT_TOOL_KEYS = frozenset({"functionDeclarations", "function_declarations"})
# The output ceiling of a model (the API rejects a larger maxOutputTokens on some models): 65,536 for Gemini 2.5
# and later, 8,192 for the older models and Gemma. genai-prices knows context windows, not output ceilings.
GEMINI_MAX_OUTPUT = 65_536
_GEMINI_SMALL_OUTPUT = re.compile(r"^(gemini-(1\.|2\.0|pro\b|pro-vision)|gemma)", re.I)
_GEMINI_SMALL_MAX_OUTPUT = 8_192
_MIN_THINKING_BUDGET = 512  # the least thinkingBudget every Gemini thinking model takes (2.5 Flash-Lite's)
_GOOGLE_STATUS = {
    400: "INVALID_ARGUMENT",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    429: "RESOURCE_EXHAUSTED",
    500: "INTERNAL",
    502: "UNAVAILABLE",
    503: "UNAVAILABLE",
}


_VERTEX_PATH = re.compile(
    r"^/projects/([a-z0-9][a-z0-9.:-]{0,127})/locations/([a-z0-9-]{1,63})/publishers/anthropic/models/"
    r"([A-Za-z0-9._@-]{1,200}):([A-Za-z]+)$"
)
_VERTEX_METERED = {"rawPredict": False, "streamRawPredict": True}  # verb -> streams
_VERTEX_COUNT = "count-tokens"  # the model segment of Vertex's free prompt count
# The locations Claude Code and Anthropic's SDKs accept; each maps to one Google host (vertex_base)
_GCP_LOCATION = re.compile(r"^([a-z]+-[a-z]+\d{1,2}|global|eu|us)$")


def vertex_host(location: str) -> str | None:
    """Vertex AI's host for a location, as Anthropic's and Google's SDKs pick it; None for a name no location has
    (the host is built from the path, so nothing else may reach it)."""
    if not _GCP_LOCATION.match(location):
        return None
    if location == "global":
        return "https://aiplatform.googleapis.com"
    if location in ("us", "eu"):
        return f"https://aiplatform.{location}.rep.googleapis.com"
    return f"https://{location}-aiplatform.googleapis.com"


def vertex_base(location: str) -> str | None:
    """The base URL Anthropic's SDKs give Claude on Vertex (the API version in it, the rest of the path after)."""
    host = vertex_host(location)
    return None if host is None else f"{host}/v1"


def vertex_geo(location: str, model: str) -> str | None:
    """The premium a Vertex call is billed at: 10% on a regional or multi-region endpoint for Claude Sonnet 4.5,
    Haiku 4.5 and every later model (Anthropic's Vertex AI page); none on `global`."""
    return None if location == "global" or NO_REGIONAL_PREMIUM.match(model) else VERTEX_REGIONAL


def platform_geo(model: str, location: str | None, platform: str | None) -> str | None:
    """The premium a cloud's endpoint adds (None on Anthropic's API: the request's `inference_geo` says it)."""
    if platform in (MANTLE, BEDROCK):  # Mantle's endpoints are each one region's; Bedrock's `global.` ids are not
        regional = platform == MANTLE or location != "global"
        return BEDROCK_REGIONAL if regional and not NO_REGIONAL_PREMIUM.match(model) else None
    if platform == FOUNDRY:  # a deployment may be US Data Zone, and no request says which
        return None if NO_REGIONAL_PREMIUM.match(model) else FOUNDRY_DATA_ZONE
    if location is not None:
        return vertex_geo(location, model)
    return None


# Bedrock's InvokeModel paths: an Anthropic model's id or cross-region profile (an inference profile's ARN names no
# model capguard can price: refused)
_BEDROCK_PATH = re.compile(
    r"^/model/([A-Za-z0-9._:%-]{1,200})/(invoke|invoke-with-response-stream|converse|converse-stream|count-tokens)$"
)
_BEDROCK_STREAMS = {"invoke": False, "invoke-with-response-stream": True}
_CONVERSE_STREAMS = {"converse": False, "converse-stream": True}


def _bedrock_route(method: str, path: str) -> Route:
    found = _BEDROCK_PATH.match(path)
    if method == "POST" and found:
        model_id, verb = found.groups()
        if verb == "count-tokens":  # free, as Bedrock's pricing says
            return Route(free=True)
        model_id = unquote(model_id)  # the SDKs send a versioned id's colon encoded
        model = bedrock_model(model_id)
        if model == model_id:
            return Route(why=f"capguard's metering proxy prices Anthropic's models on Bedrock, not {model_id!r}")
        location = "global" if model_id.startswith("global.") else "regional"
        if verb in _CONVERSE_STREAMS:
            return Route(CONVERSE, model=model, stream=_CONVERSE_STREAMS[verb], location=location, platform=BEDROCK)
        return Route(ANTHROPIC, model=model, stream=_BEDROCK_STREAMS[verb], location=location, platform=BEDROCK)
    if path.startswith("/model/arn"):
        return Route(why="capguard cannot tell which model a Bedrock ARN serves: name the model's id or profile")
    return Route(why=f"capguard's metering proxy does not forward {method} {path}: it could cost money unmetered")


def _vertex_route(method: str, path: str) -> Route:
    found = _VERTEX_PATH.match(path)
    if method == "POST" and found:
        location, model, verb = found.group(2), found.group(3), found.group(4)
        if model == _VERTEX_COUNT and verb == "rawPredict":
            return Route(free=True, location=location)
        if verb in _VERTEX_METERED and model != _VERTEX_COUNT:
            return Route(ANTHROPIC, model=model, stream=_VERTEX_METERED[verb], location=location, platform=VERTEX)
    return Route(why=f"capguard's metering proxy does not forward {method} {path}: it could cost money unmetered")


_VERTEX_GEMINI_PATH = re.compile(
    r"^/v1(?:beta1)?/(?:projects/[a-z0-9][a-z0-9.:-]{0,127}/locations/([a-z0-9-]{1,63})/)?publishers/google/models/"
    r"([A-Za-z0-9._-]{1,200}):([A-Za-z]+)$"
)


def _vertex_gemini_route(method: str, path: str) -> Route:
    found = _VERTEX_GEMINI_PATH.match(path)
    if method == "POST" and found:
        location, model, verb = found.group(1) or "global", found.group(2), found.group(3)
        if verb in _GEMINI_METERED:
            stream = _GEMINI_METERED[verb]
            return Route(GEMINI, model=model, stream=stream, location=location, platform=VERTEX_GEMINI)
        if verb in _GEMINI_FREE:
            return Route(free=True, location=location)
    return Route(why=f"capguard's metering proxy does not forward {method} {path}: it could cost money unmetered")


def _gemini_route(method: str, path: str) -> Route:
    found = _GEMINI_PATH.match(path)
    if method == "POST" and found:
        model, verb = found.group(1), found.group(2)
        if verb in _GEMINI_METERED:
            return Route(dialect=GEMINI, model=model, stream=_GEMINI_METERED[verb])
        if verb in _GEMINI_FREE:
            return Route(free=True)
    if method in ("GET", "HEAD") and _GEMINI_LIST.match(path):
        return Route(free=True)
    return Route(why=f"capguard's metering proxy does not forward {method} {path}: it could cost money unmetered")


_CODE_ASSIST_PATH = re.compile(r"^/(v1[a-z0-9]*):([A-Za-z]+)$")
_CODE_ASSIST_METERED = {"generateContent": False, "streamGenerateContent": True}
_CODE_ASSIST_FREE = frozenset(
    {"loadCodeAssist", "onboardUser", "retrieveUserQuota", "listExperiments", "recordCodeAssistMetrics",
     "fetchAdminControls", "getCodeAssistGlobalUserSetting", "setCodeAssistGlobalUserSetting", "countTokens"}
)  # fmt: skip
_CODE_ASSIST_OPERATION = re.compile(r"^/v1[a-z0-9]*/operations/[A-Za-z0-9_.-]+$")  # onboardUser's, polled by GET
# The names Gemini CLI 0.61 gives models on the Code Assist server where they differ from its own (its
# ModelMappingContentGenerator: LEGACY_CCPA_FLASH_MODEL): priced as the model the CLI asked for
CODE_ASSIST_MODELS = {"gemini-3-flash": "gemini-3.5-flash"}


def _code_assist_route(method: str, path: str) -> Route:
    found = _CODE_ASSIST_PATH.match(path)
    if method == "POST" and found:
        if found[2] in _CODE_ASSIST_METERED:
            return Route(dialect=GEMINI, stream=_CODE_ASSIST_METERED[found[2]])
        if found[2] in _CODE_ASSIST_FREE:
            return Route(free=True)
    if method == "GET" and _CODE_ASSIST_OPERATION.match(path):
        return Route(free=True)
    return Route(why=f"capguard's metering proxy does not forward {method} {path}: it could cost money unmetered")


def gemini_output_ceiling(model: str) -> int:
    """The most output tokens (thoughts included) the model gives one reply."""
    return _GEMINI_SMALL_MAX_OUTPUT if _GEMINI_SMALL_OUTPUT.match(model) else GEMINI_MAX_OUTPUT


def _gemini_ask(body: dict[str, Any], model: str | None, stream: bool, platform: str | None = None) -> Ask:
    """Gemini's request facts. maxOutputTokens bounds thoughts and the reply together (Gemini 2.5 and 3 stop with
    MAX_TOKENS when thinking reaches it; a thinkingBudget is only a hint the model may pass), so the worst case is
    maxOutputTokens of output, and a request without one gets the limit capguard holds written into it."""
    if not model:
        raise ValueError("the request names no model")
    if _GEMINI_NOT_TEXT.search(model):
        raise ValueError(f"capguard prices text replies only, not those of {model[:100]!r}")
    if body.get("cachedContent") is not None:
        raise ValueError("capguard cannot bound a request that reads a stored context cache (cachedContent)")
    tools = body.get("tools") or []
    if not isinstance(tools, list):
        raise ValueError("the request's tools are not a list")
    for tool in tools:
        extra = sorted(set(tool) - _GEMINI_CLIENT_TOOL_KEYS) if isinstance(tool, dict) else ["?"]
        if extra:
            raise ValueError(f"capguard cannot bound the cost of the server-side tool {str(extra[0])[:60]!r}")
    if _has_file_reference(body):
        raise ValueError("capguard cannot bound a file given by its URI (fileData): its size is unknown")
    config = body.get("generationConfig")
    config = config if isinstance(config, dict) else {}
    modalities = config.get("responseModalities")
    if isinstance(modalities, list) and any(str(m).upper() != "TEXT" for m in modalities):
        raise ValueError("capguard prices text replies only (responseModalities asks for more)")
    count = config.get("candidateCount")
    choices = count if isinstance(count, int) and not isinstance(count, bool) and count > 1 else 1
    thinking = config.get("thinkingConfig")
    no_thinking = isinstance(thinking, dict) and thinking.get("thinkingBudget") == 0
    limit = _positive(config.get("maxOutputTokens"))
    return Ask(
        model,
        stream,
        limit or gemini_output_ceiling(model),
        choices,
        None,  # implicit caching writes at no charge; an explicit cache (cachedContent) is refused above
        not no_thinking,  # thoughts are billed and never streamed whole: a cut stream may have used its limit
        write_limit=limit is None,
        platform=platform,
    )


def _has_file_reference(body: dict[str, Any]) -> bool:
    contents = body.get("contents")
    for content in [body.get("systemInstruction"), *(contents if isinstance(contents, list) else [contents])]:
        parts = content.get("parts") if isinstance(content, dict) else None
        for part in parts if isinstance(parts, list) else ():
            if isinstance(part, dict) and ("fileData" in part or "file_data" in part):
                return True
    return False


def _gemini_with_max_out(body: dict[str, Any], limit: int) -> dict[str, Any]:
    """maxOutputTokens set to `limit`; a thinkingBudget that would leave no room for the reply comes down to half."""
    config = body.get("generationConfig")
    config = dict(config) if isinstance(config, dict) else {}
    config["maxOutputTokens"] = limit
    thinking = config.get("thinkingConfig")
    budget = thinking.get("thinkingBudget") if isinstance(thinking, dict) else None
    if isinstance(budget, int) and not isinstance(budget, bool) and budget > limit // 2 and isinstance(thinking, dict):
        config["thinkingConfig"] = {**thinking, "thinkingBudget": max(_MIN_THINKING_BUDGET, limit // 2)}
    return {**body, "generationConfig": config}


def gemini_key_to_header(query: str, headers: dict[str, str]) -> tuple[str, dict[str, str]]:
    """An API key given as `?key=` moved to the x-goog-api-key header (the API takes either): the URL the proxy
    requests, which an error may show, then never holds it. Returns the query string left and the headers."""
    pairs = parse_qsl(query, keep_blank_values=True)
    keys = [value for name, value in pairs if name == "key"]
    if not keys:
        return query, headers
    if not any(name.lower() == "x-goog-api-key" for name in headers):
        headers = {**headers, "x-goog-api-key": keys[-1]}
    return urlencode([(name, value) for name, value in pairs if name != "key"]), headers


# ---- Bedrock's Converse API (Anthropic's models only: the route refuses any other)

# Request keys whose cost capguard cannot bound or price: a guardrail is billed by text unit apart from the tokens,
# a prompt from Bedrock's prompt management holds text the request does not show, a latency-optimized or priority
# call costs more than the rates the core prices
_CONVERSE_REFUSED = {
    "guardrailConfig": "a Bedrock Guardrail (billed by text unit, apart from the tokens)",
    "promptVariables": "a prompt from Bedrock's prompt management (its text is not in the request)",
    "performanceConfig": "Bedrock's latency-optimized inference (it costs more)",
    "serviceTier": "a Bedrock service tier other than the standard one",
}
_S3_SOURCE = b'"s3Location":'


def _converse_ask(body: dict[str, Any], model: str | None, stream: bool, location: str | None) -> Ask:
    """A Converse request's facts: the model and the stream from the path (an Anthropic model, Bedrock's id read as
    its name); the output limit in inferenceConfig.maxTokens; a cachePoint block writes to the cache."""
    if not model:
        raise ValueError("the request names no model")
    for key, what in _CONVERSE_REFUSED.items():
        value = body.get(key)
        if value is not None and not (key == "serviceTier" and get_type(value) in ("default", "standard")):
            raise ValueError(f"capguard cannot bound {what}")
    whole = encode(body)  # one pass of C over the body (marked pieces hold cache_control only, not cachePoint)
    if _S3_SOURCE in whole:
        raise ValueError("capguard cannot bound media given by its S3 location: its size is unknown")
    tools = get_dict(body, "toolConfig").get("tools")
    for tool in tools if isinstance(tools, list) else ():
        if isinstance(tool, dict) and not set(tool) <= {"toolSpec", "cachePoint"}:
            kind = next(iter(set(tool) - {"toolSpec", "cachePoint"}))
            raise ValueError(f"capguard cannot bound the cost of the server-side tool {str(kind)[:60]!r}")
    config = get_dict(body, "inferenceConfig")
    fields = get_dict(body, "additionalModelRequestFields")
    thinking = fields.get("thinking")
    if b'"cachePoint":' in whole and b'"ttl":"1h"' in whole:  # Converse's usage does not split writes by TTL
        raise ValueError("capguard cannot price Converse's 1-hour cache writes apart from its 5-minute ones")
    return Ask(
        model,
        stream,
        _positive(config.get("maxTokens")),
        1,
        "5m" if b'"cachePoint":' in whole else None,
        isinstance(thinking, dict) and thinking.get("type") not in (None, "disabled"),
        geo=platform_geo(model, location, BEDROCK),
        platform=BEDROCK,
    )


def _converse_with_max_out(body: dict[str, Any], limit: int) -> dict[str, Any]:
    """inferenceConfig.maxTokens set to `limit`; a thinking budget at or above it comes down below it (Anthropic's
    rule), or thinking goes off when no budget of 1,024 tokens fits."""
    sent = {**body, "inferenceConfig": {**get_dict(body, "inferenceConfig"), "maxTokens": limit}}
    fields = get_dict(body, "additionalModelRequestFields")
    thinking = fields.get("thinking")
    budget = thinking.get("budget_tokens") if isinstance(thinking, dict) else None
    if isinstance(thinking, dict) and isinstance(budget, int) and budget >= limit:
        lowered = {**thinking, "budget_tokens": limit - 1} if limit - 1 >= 1_024 else {"type": "disabled"}
        sent["additionalModelRequestFields"] = {**fields, "thinking": lowered}
    return sent


def get_dict(body: Any, key: str) -> dict[str, Any]:
    value = body.get(key) if isinstance(body, dict) else None
    return value if isinstance(value, dict) else {}


def get_type(value: Any) -> Any:
    return value.get("type") if isinstance(value, dict) else value
