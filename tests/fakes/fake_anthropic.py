"""A scripted Anthropic Messages API server for demos, tests and benchmarks.

Stdlib only. It answers ``POST /v1/messages`` (streaming SSE and plain JSON, as
Claude Code 2.1.330 calls it: ``/v1/messages?beta=true``) and
``POST /v1/messages/count_tokens``, with the token usage you choose, so a test
can make every reply of a real agent (Claude Code, or an SDK) cost a known
amount without calling a real model API. Point the agent at it with
``ANTHROPIC_BASE_URL=<server.base_url>`` (no ``/v1``) and any
``ANTHROPIC_API_KEY``.

Replies are chosen by *directives* in the text of the LAST user message (its
``<system-reminder>`` blocks are ignored; a directive starts a line):

=================  =====================================================================
``BASH:<cmd>``     text + a ``Bash`` tool_use running ``<cmd>``; once the tool_result
                   comes back, a final text (``end_turn``).
``TASK:<prompt>``  text + an ``Agent`` tool_use (``description``, ``prompt``,
                   ``subagent_type: general-purpose``): Claude Code starts a subagent
                   whose first user message is ``<prompt>`` (so ``TASK:BASH:echo hi``
                   makes the subagent run ``echo hi``); final text after the result.
``LOOP``           a ``Bash`` tool_use (``echo loop``) on every request, forever (runaway).
``FAIL``           a ``Bash`` tool_use of a failing command (``exit 3``) on every request,
                   forever (stuck loop: every tool_result has ``is_error: true``).
``SLEEP``          a ``Bash`` tool_use ``echo sleeping; sleep 600`` (a grandchild that must
                   be killed; Claude Code 2.1.330 refuses a bare ``sleep N`` with N >= 2);
                   final text if it ever returns.
``THINK``          a thinking block + a text block.
``SLOW``           a text streamed as ``slow_chunks`` deltas ``slow_delay`` s apart.
``ERROR:<status>`` HTTP ``<status>`` (400/401/403/404/413/429/500/529) with Anthropic's
                   error JSON, on every request of that prompt.
(anything else)    a short text (``Script.text``).
=================  =====================================================================

When the last user message only carries ``tool_result`` blocks, the directive
comes from the prompt that started the tool loop (the nearest earlier user
message with text of its own); after a failed tool call (``is_error``) the final
text is ``Script.final_error_text``. A user message whose only text is
``<system-reminder>`` blocks (e.g. a background subagent's
``<task-notification>``) gets the short text.

Claude Code's side requests are recognised (:func:`classify`) and answered
with a canned text that does not advance the agent reply counter, so
``server.count("main")`` counts the main agent loop's requests exactly and
``"subagent"`` those of Agent-tool subagents (``cc_is_subagent=true`` in the
billing header of ``system``). With ``CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC=1``
the only side request 2.1.330 made (-p and interactive) was ``/compact``'s
summary call (kind ``compact``; answered with ``<analysis>``/``<summary>``
blocks, otherwise claude retries it); ``title``/``aux`` cover tool-less calls.

    with FakeAnthropic(Script(usage=Usage(input_tokens=1000, output_tokens=100))) as srv:
        env = {"ANTHROPIC_BASE_URL": srv.base_url, "ANTHROPIC_API_KEY": "sk-ant-api03-fake"}
        subprocess.run(["claude", "-p", "BASH:echo hi", "--dangerously-skip-permissions"], env=env)
        assert srv.count("main") == 2

Command line (foreground, prints the base URL on one line)::

    python -m tests.fakes.fake_anthropic --port 0 [--delay S] [--input-tokens N] ...
"""

from __future__ import annotations

import argparse
import base64
import json
import re
import sys
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from http.server import BaseHTTPRequestHandler
from typing import Any, Union
from urllib.parse import unquote

from capguard.demo._http import FakeHandler, FakeServer, serve_until_terminated
from tests.fakes import eventstream, sigv4

__all__ = [
    "DEFAULT_TEXT",
    "KINDS",
    "FakeAnthropic",
    "Reply",
    "Script",
    "Usage",
    "agent_reply",
    "bash_reply",
    "classify",
    "error_body",
    "estimate_tokens",
    "parse_directive",
    "prompt_tokens",
    "text_reply",
    "thinking_reply",
    "tool_reply",
]

MAIN = "main"
SUBAGENT = "subagent"
COMPACT = "compact"
TITLE = "title"
AUX = "aux"
COUNT_TOKENS = "count_tokens"
OTHER = "other"
#: Kinds of recorded requests. ``main``/``subagent`` are agent-loop requests
#: (directive replies, they advance the reply counter); ``compact``/``title``/
#: ``aux`` are Claude Code's side requests (canned text); ``count_tokens`` is
#: ``/v1/messages/count_tokens``; ``other`` any unknown path (answered 404).
KINDS = (MAIN, SUBAGENT, COMPACT, TITLE, AUX, COUNT_TOKENS, OTHER)
AGENT_KINDS = (MAIN, SUBAGENT)

DEFAULT_TEXT = "Hello from the fake Anthropic server."
DEFAULT_MODEL = "claude-opus-5-5"

_ERROR_TYPES = {
    400: ("invalid_request_error", "Invalid request (fake server error on demand)."),
    401: ("authentication_error", "invalid x-api-key"),
    403: ("permission_error", "Your API key does not have permission to use the specified resource."),
    404: ("not_found_error", "Not found."),
    413: ("request_too_large", "Request exceeds the maximum allowed number of bytes."),
    429: ("rate_limit_error", "Number of request tokens has exceeded your per-minute rate limit."),
    500: ("api_error", "Internal server error."),
    529: ("overloaded_error", "Overloaded"),
}

_MODELS = (
    ("claude-opus-5-5", "Claude Opus 5.5"),
    ("claude-sonnet-5-5", "Claude Sonnet 5.5"),
    ("claude-haiku-5-5", "Claude Haiku 5.5"),
    ("claude-sonnet-4-5", "Claude Sonnet 4.5"),
    ("claude-haiku-4-5", "Claude Haiku 4.5"),
)

_REMINDER_RE = re.compile(r"<system-reminder>.*?(?:</system-reminder>|\Z)", re.S)
_DIRECTIVE_RE = re.compile(r"^[ \t]*(BASH|TASK|ERROR):(.*)$|^[ \t]*(LOOP|FAIL|SLEEP|THINK|SLOW)\b", re.M)

# Markers of Claude Code 2.1.330's side requests (prompts in the bundled JS).
_COMPACT_MARKERS = ("Your task is to create a detailed summary of",)
_TITLE_MARKERS = ("session title", "title for this", "concise title", "a title for")


def _new_id(prefix: str) -> str:
    return f"{prefix}_fake_{uuid.uuid4().hex[:24]}"


# --------------------------------------------------------------------------- usage & replies


@dataclass(frozen=True)
class Usage:
    """Token usage reported for one reply (what Claude Code bills).

    ``cache_creation_input_tokens`` is ``cache_write_5m + cache_write_1h``; the
    split goes into ``usage.cache_creation.ephemeral_{5m,1h}_input_tokens``.
    ``web_search_requests`` lands in ``usage.server_tool_use`` ($0.01 each).
    """

    input_tokens: int = 11
    output_tokens: int = 40
    cache_write_5m: int = 2000
    cache_write_1h: int = 0
    cache_read: int = 3000
    web_search_requests: int = 0

    @property
    def cache_creation_input_tokens(self) -> int:
        return self.cache_write_5m + self.cache_write_1h

    def api(self, *, output_tokens: int | None = None) -> dict:
        """The ``usage`` object as the Messages API sends it (final, or with ``output_tokens`` overridden)."""
        out: dict[str, Any] = {
            "input_tokens": self.input_tokens,
            "cache_creation_input_tokens": self.cache_creation_input_tokens,
            "cache_read_input_tokens": self.cache_read,
            "cache_creation": {
                "ephemeral_5m_input_tokens": self.cache_write_5m,
                "ephemeral_1h_input_tokens": self.cache_write_1h,
            },
            "output_tokens": self.output_tokens if output_tokens is None else output_tokens,
            "service_tier": "standard",
        }
        if self.web_search_requests:
            out["server_tool_use"] = {"web_search_requests": self.web_search_requests, "web_fetch_requests": 0}
        return out

    def delta(self) -> dict:
        """The cumulative ``usage`` of the ``message_delta`` event."""
        out: dict[str, Any] = {
            "input_tokens": self.input_tokens,
            "cache_creation_input_tokens": self.cache_creation_input_tokens,
            "cache_read_input_tokens": self.cache_read,
            "output_tokens": self.output_tokens,
        }
        if self.web_search_requests:
            out["server_tool_use"] = {"web_search_requests": self.web_search_requests, "web_fetch_requests": 0}
        return out


@dataclass(frozen=True)
class Reply:
    """One canned answer: content blocks (API shapes), usage, stop reason, timing.

    ``usage=None`` takes the script's usage for that reply; ``stop_reason=None``
    is ``tool_use`` when a block is a tool_use, else ``end_turn``. ``delay_s`` is
    the total time to deliver the reply (spread across the SSE events).
    ``chunk_delay_s`` > 0 pauses that long between the text deltas instead
    (SLOW). ``status`` != 200 answers with Anthropic's error JSON instead.
    """

    blocks: tuple = ()
    usage: Usage | None = None
    stop_reason: str | None = None
    delay_s: float = 0.0
    chunk_delay_s: float = 0.0
    text_chunks: int = 2  # text deltas per text block
    status: int = 200
    directive: str | None = None

    def effective_stop_reason(self) -> str:
        if self.stop_reason is not None:
            return self.stop_reason
        return "tool_use" if any(b.get("type") == "tool_use" for b in self.blocks) else "end_turn"


def text_reply(text: str = DEFAULT_TEXT, **kw: Any) -> Reply:
    return Reply(blocks=({"type": "text", "text": text},), **kw)


def thinking_reply(
    thinking: str = "Let me think about this carefully.", text: str = "Thought about it. Answer: 42.", **kw: Any
) -> Reply:
    blocks = (
        {"type": "thinking", "thinking": thinking, "signature": "ZmFrZS1zaWduYXR1cmU="},
        {"type": "text", "text": text},
    )
    return Reply(blocks=blocks, **kw)


def tool_reply(name: str, tool_input: dict, text: str | None = "I'll run that.", **kw: Any) -> Reply:
    blocks: list[dict] = [{"type": "text", "text": text}] if text else []
    blocks.append({"type": "tool_use", "id": None, "name": name, "input": dict(tool_input)})  # id set per request
    return Reply(blocks=tuple(blocks), **kw)


def bash_reply(
    command: str, text: str | None = "I'll run that.", description: str = "Run a command", **kw: Any
) -> Reply:
    return tool_reply("Bash", {"command": command, "description": description}, text=text, **kw)


def agent_reply(
    prompt: str,
    text: str | None = "I'll delegate that.",
    *,
    description: str = "fake subtask",
    subagent_type: str = "general-purpose",
    tool_name: str = "Agent",
    **kw: Any,
) -> Reply:
    return tool_reply(
        tool_name, {"description": description, "prompt": prompt, "subagent_type": subagent_type}, text=text, **kw
    )


def error_body(status: int, request_id: str, message: str | None = None) -> dict:
    etype, default = _ERROR_TYPES.get(status, ("api_error", f"HTTP {status}"))
    return {"type": "error", "error": {"type": etype, "message": message or default}, "request_id": request_id}


UsageSpec = Union[Usage, Sequence[Usage], Callable[[int], Usage]]


@dataclass
class Script:
    """How the server answers.

    ``usage``: a :class:`Usage` for every agent reply, a list (the ``i``-th agent
    reply gets ``usage[min(i, len-1)]``) or ``callable(i) -> Usage``; ``i`` counts
    successful main + subagent replies from 0. ``replies``: explicit :class:`Reply`
    objects for the first agent replies, in order (directives take over after).
    ``errors``: ``{i: status}`` fails the ``i``-th agent request (0-based, all
    attempts counted) with that HTTP status; ``error_status`` fails every agent
    request, or the first ``error_count`` ones. ``delay_s`` spreads each agent
    reply over that many seconds; ``first_byte_delay_s`` waits before the headers.
    """

    usage: UsageSpec = field(default_factory=Usage)
    aux_usage: Usage = field(
        default_factory=lambda: Usage(input_tokens=300, output_tokens=12, cache_write_5m=0, cache_read=0)
    )
    text: str = DEFAULT_TEXT
    final_text: str = "Done. The command finished."
    final_error_text: str = "The tool call failed."
    replies: Sequence[Reply] = ()
    delay_s: float = 0.0
    first_byte_delay_s: float = 0.0
    slow_delay_s: float = 1.0
    slow_chunks: int = 5
    loop_command: str = "echo loop"
    fail_command: str = "exit 3"
    sleep_command: str = "echo sleeping; sleep 600"  # a bare `sleep N` (N >= 2) is blocked by Claude Code
    task_tool: str = "Agent"
    model: str | None = None  # the served model; None echoes the requested one
    errors: Mapping[int, int] = field(default_factory=dict)
    error_status: int | None = None
    error_count: int | None = None
    retry_after: float | None = 0  # `retry-after` header on 429/529 (None = none)
    aux_text: str = "Fake answer to a side request."
    compact_text: str = (
        "<analysis>Fake analysis of the conversation.</analysis>\n"
        "<summary>Fake summary: the user sent test prompts to a fake server.</summary>"
    )
    title_text: str = "Fake session title"
    # As the real API: an agent reply's output_tokens never exceed the request's max_tokens (stop_reason
    # "max_tokens" when cut). Off by default, so existing scripts keep their exact usage.
    honor_max_tokens: bool = False
    # As the real API: the prompt is billed for what the request holds (a token per 4 bytes of the JSON of its
    # prompt fields, ``prompt_tokens``, no cache), side requests included, instead of the script's input and cache
    # figures; ``count_tokens`` answers the same figure for the same prompt.
    bill_prompt: bool = False
    # How ``/v1/messages/count_tokens`` answers (each call recorded as kind ``count_tokens``): ``exact`` the
    # prompt's tokens as billed, ``error`` a 500, ``huge`` ten times its bytes, ``garbage`` a string count,
    # ``slow`` the exact count after ``count_delay_s``, ``half`` half of it (a count below the bill).
    count_mode: str = "exact"
    count_delay_s: float = 10.0
    # A server that bills the prompt but never says so: its usage leaves out input_tokens (and the cache figures)
    # everywhere, in message_start, in message_delta and in a whole reply. What it billed is still recorded.
    hide_prompt_usage: bool = False
    # A stream whose message_delta carries no usage at all (message_start's placeholder output_tokens is the last)
    drop_delta_usage: bool = False
    # On Bedrock's event stream: the event whose message is sent with a broken CRC (a stream cut or tampered with)
    corrupt_bedrock_event: str | None = None
    # As AWS serves Claude to a caller with AWS credentials (Bedrock, Mantle, Claude Platform on AWS): every POST
    # must carry a valid Signature Version 4 by these keys for this scope (checked by tests/fakes/sigv4.py, apart
    # from botocore); any other is refused 403, as AWS refuses it, billed nothing, and its reason is kept in
    # FakeAnthropic.refused_signatures
    sigv4: sigv4.Keys | None = None

    def side_text(self, kind: str) -> str:
        if kind == COMPACT:
            return self.compact_text
        if kind == TITLE:
            return self.title_text
        return self.aux_text

    def usage_for(self, index: int) -> Usage:
        spec = self.usage
        if isinstance(spec, Usage):
            return spec
        if callable(spec):
            return spec(index)
        seq = list(spec)
        if not seq:
            return Usage()
        return seq[min(index, len(seq) - 1)]

    def error_for(self, attempt: int) -> int | None:
        if attempt in self.errors:
            return int(self.errors[attempt])
        if self.error_status is not None and (self.error_count is None or attempt < self.error_count):
            return int(self.error_status)
        return None

    # ---- directive replies
    def reply_for(self, directive: str | None, arg: str, after_tool: bool, tool_error: bool) -> Reply:
        """The reply to an agent request whose prompt carries ``directive``."""
        if directive == "ERROR":
            try:
                status = int(arg.strip().split()[0])
            except (ValueError, IndexError):
                status = 500
            return Reply(status=status, directive=directive)
        if directive == "LOOP":
            return bash_reply(self.loop_command, text="Looping again.", description="Print loop", directive=directive)
        if directive == "FAIL":
            return bash_reply(
                self.fail_command,
                text="Trying the command again.",
                description="Run failing command",
                directive=directive,
            )
        if after_tool and directive in ("BASH", "TASK", "SLEEP"):
            return text_reply(self.final_error_text if tool_error else self.final_text, directive=directive)
        if directive == "BASH":
            return bash_reply(arg.strip(), directive=directive)
        if directive == "SLEEP":
            return bash_reply(
                self.sleep_command, text="Sleeping.", description="Sleep for a long time", directive=directive
            )
        if directive == "TASK":
            return agent_reply(arg.strip(), tool_name=self.task_tool, directive=directive)
        if directive == "THINK":
            return replace(thinking_reply(), directive=directive)
        if directive == "SLOW":
            return replace(
                text_reply("This reply is streamed slowly, one piece at a time, by the fake server."),
                chunk_delay_s=self.slow_delay_s,
                text_chunks=max(1, self.slow_chunks),
                directive=directive,
            )
        return text_reply(self.text, directive=directive)


# --------------------------------------------------------------------------- request parsing


def _text_blocks(content: Any) -> list[str]:
    if isinstance(content, str):
        return [content]
    if isinstance(content, list):
        return [
            b.get("text", "")
            for b in content
            if isinstance(b, dict) and b.get("type") == "text" and isinstance(b.get("text"), str)
        ]
    return []


def _has_tool_result(content: Any) -> bool:
    return isinstance(content, list) and any(isinstance(b, dict) and b.get("type") == "tool_result" for b in content)


def _tool_result_error(content: Any) -> bool:
    return isinstance(content, list) and any(
        isinstance(b, dict) and b.get("type") == "tool_result" and b.get("is_error") for b in content
    )


def _own_text(content: Any) -> str:
    """The user's own text of a message: text blocks minus ``<system-reminder>`` sections."""
    return "\n".join(_REMINDER_RE.sub("", t) for t in _text_blocks(content)).strip()


def parse_directive(text: str) -> tuple[str | None, str]:
    """``(directive, argument)`` of the first directive line of ``text`` (``(None, "")`` if none)."""
    m = _DIRECTIVE_RE.search(text or "")
    if not m:
        return None, ""
    if m.group(1):
        name = m.group(1)
        # BASH/ERROR take the rest of their line; TASK the rest of the text (a whole sub-prompt).
        if name == "TASK":
            return name, text[m.start(2) :].strip()
        return name, m.group(2).strip()
    return m.group(3), ""


def _user_messages(body: dict) -> list[dict]:
    msgs = body.get("messages")
    if not isinstance(msgs, list):
        return []
    return [m for m in msgs if isinstance(m, dict) and m.get("role") == "user"]


def prompt_state(body: dict) -> tuple[str | None, str, bool, bool, str]:
    """``(directive, arg, after_tool, tool_error, prompt_text)`` for an agent request."""
    users = _user_messages(body)
    if not users:
        return None, "", False, False, ""
    last = users[-1]["content"]
    own = _own_text(last)
    if own or not _has_tool_result(last):
        d, a = parse_directive(own)
        return d, a, False, False, own
    err = _tool_result_error(last)
    for msg in reversed(users[:-1]):
        content = msg.get("content")
        text = _own_text(content)
        if text:
            d, a = parse_directive(text)
            return d, a, True, err, text
    return None, "", True, err, ""


def _system_text(body: dict) -> str:
    system = body.get("system")
    if isinstance(system, str):
        return system
    return "\n".join(_text_blocks(system))


def classify(body: Any) -> str:
    """The kind of a ``/v1/messages`` request body: main, subagent, compact, title or aux.

    Claude Code 2.1.330 starts ``system`` with a billing header line
    (``x-anthropic-billing-header: cc_version=...; cc_entrypoint=...;``) that has
    ``cc_is_subagent=true`` for Agent-tool subagents. Its agent loop always sends
    ``tools``; its side requests (titles, ...) send none. A compaction request
    ends with a user message asking to "create a detailed summary of" the
    conversation. Requests without the billing header (an SDK program) are
    ``main`` unless they are compaction requests.
    """
    if not isinstance(body, dict):
        return MAIN
    users = _user_messages(body)
    last_text = "\n".join(_text_blocks(users[-1].get("content"))) if users else ""
    if any(m in last_text for m in _COMPACT_MARKERS):
        return COMPACT
    system = _system_text(body)
    head = system[:400]
    claude_code = "x-anthropic-billing-header:" in head
    if not claude_code:
        return MAIN
    if "cc_is_subagent=true" in head:
        return SUBAGENT
    if body.get("tools"):
        return MAIN
    if any(m in (system + "\n" + last_text).lower() for m in _TITLE_MARKERS):
        return TITLE
    return AUX


def estimate_tokens(body: Any) -> int:
    """A rough token count for ``count_tokens``: about 4 bytes of JSON per token."""
    data = dict(body) if isinstance(body, dict) else {}
    data.pop("model", None)
    return max(1, len(json.dumps(data, ensure_ascii=False, separators=(",", ":"))) // 4)


#: The fields of a request that make its prompt (what ``count_tokens`` takes, ``model`` aside).
PROMPT_FIELDS = ("system", "messages", "tools", "tool_choice", "thinking")


def prompt_tokens(body: Any) -> int:
    """The prompt's tokens as this server bills them (``bill_prompt``) and counts them (``count_tokens``): about 4
    bytes of JSON per token of its prompt fields, so a request and its count agree to the token."""
    data = body if isinstance(body, dict) else {}
    return estimate_tokens({k: data[k] for k in PROMPT_FIELDS if k in data})


# --------------------------------------------------------------------------- HTTP


_BEDROCK_PATH = re.compile(r"^/model/([^/]+)/(invoke|invoke-with-response-stream|count-tokens)$")
_BEDROCK_ANTHROPIC_ID = re.compile(r"^((global|us|eu|apac|jp|au)\.)?anthropic\.claude-")
MANTLE_PREFIX = "/anthropic"  # Mantle's base URL: https://bedrock-mantle.<region>.api.aws/anthropic
_VERTEX_PATH = re.compile(
    r"^/v1/projects/[^/]+/locations/([a-z0-9-]+)/publishers/anthropic/models/([^/:]+):(rawPredict|streamRawPredict)$"
)


def _model(mid: str, name: str) -> dict:
    return {"type": "model", "id": mid, "display_name": name, "created_at": "2026-01-01T00:00:00Z"}


def _split(text: str, n: int) -> list[str]:
    if not text:
        return [""]
    n = max(1, min(n, len(text)))
    size = -(-len(text) // n)
    return [text[i : i + size] for i in range(0, len(text), size)]


class _Handler(FakeHandler):
    server_version = "capguard-fake-anthropic/1"

    # ---- helpers
    def _path(self) -> str:
        return self.path.split("?", 1)[0].rstrip("/")

    def _read_body(self) -> bytes:
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            parts = []
            while True:
                line = self.rfile.readline(65537)
                size = int(line.split(b";", 1)[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline(65537) not in (b"\r\n", b"\n", b""):
                        pass
                    break
                parts.append(self.rfile.read(size))
                self.rfile.readline(65537)
            return b"".join(parts)
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length > 0 else b""

    def _wait(self, seconds: float) -> bool:
        """Sleep ``seconds``; True if the server is stopping (abort the reply)."""
        return seconds > 0 and self.server.owner._stopping.wait(seconds)

    # ---- verbs
    def do_HEAD(self) -> None:
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def do_GET(self) -> None:
        path = self._path()
        if path == "/v1/models":
            data = [_model(m, d) for m, d in _MODELS]
            self._send_json(
                200, {"data": data, "has_more": False, "first_id": data[0]["id"], "last_id": data[-1]["id"]}
            )
            return
        if path.startswith("/v1/models/"):
            mid = path.rsplit("/", 1)[1]
            self._send_json(200, _model(mid, mid))
            return
        self.server.owner._record_other(self)
        self._send_json(404, error_body(404, _new_id("req"), f"Unknown path {self.command} {self.path}"))

    def do_POST(self) -> None:
        raw = self._read_body()
        path = self._path()
        owner = self.server.owner
        keys = owner.script.sigv4
        if keys is not None:
            why = sigv4.check(keys, self.command, self.path, dict(self.headers.items()), raw)
            if why is not None:
                with owner._cond:
                    owner.refused_signatures.append(why)
                self._send_json(403, {"message": why})
                return
        vertex = _VERTEX_PATH.match(path)
        if vertex:  # Claude on Vertex AI: the model and the stream in the path, the rest a Messages body
            self._vertex(raw, *vertex.groups())
            return
        bedrock = _BEDROCK_PATH.match(path)
        if bedrock:  # Claude on Bedrock's InvokeModel API: the model in the path, the stream as AWS's event stream
            if bedrock.group(2) == "count-tokens":
                self._bedrock_count(raw, unquote(bedrock.group(1)))
                return
            self._bedrock(raw, unquote(bedrock.group(1)), bedrock.group(2) == "invoke-with-response-stream")
            return
        if path.startswith(MANTLE_PREFIX + "/"):  # Claude in Amazon Bedrock: the Messages API, Bedrock's ids and keys
            self._mantle(raw, path.removeprefix(MANTLE_PREFIX))
            return
        if path not in ("/v1/messages", "/v1/messages/count_tokens"):
            owner._record_other(self, raw)
            self._send_json(404, error_body(404, _new_id("req"), f"Unknown path {self.command} {self.path}"))
            return
        body = self._json_body(raw)
        if body is None:
            return
        if path == "/v1/messages/count_tokens":
            self._count(body, raw)
            return
        self._messages(body)

    def _json_body(self, raw: bytes) -> dict | None:
        """The request's JSON object, or None once a 400 is sent."""
        try:
            body = json.loads(raw or b"{}")
            if not isinstance(body, dict):
                raise ValueError("body is not an object")
        except ValueError as err:
            self._send_json(400, error_body(400, _new_id("req"), f"invalid JSON body: {err}"))
            return None
        return body

    def _count(self, body: dict, raw: bytes, location: str | None = None) -> None:
        owner = self.server.owner
        record = owner._record(self, body, COUNT_TOKENS)
        record["vertex_location"] = location
        self._answer_count(record, body, raw)
        owner._finish(record)

    def _vertex(self, raw: bytes, location: str, model: str, verb: str) -> None:
        """As Vertex AI serves Claude: `anthropic_version` required in the body (Claude Code sends
        `vertex-2023-10-16`, the Python SDK a date of its own), `model` refused there (the path
        names it); `count-tokens:rawPredict` counts a body that names its model. Billed as the Messages API bills."""
        body = self._json_body(raw)
        if body is None:
            return
        if model == "count-tokens" and verb == "rawPredict":
            self._count(body, raw, location)
            return
        if not isinstance(body.get("anthropic_version"), str) or "model" in body:
            why = "anthropic_version is required and model is not permitted in the body"
            self._send_json(400, error_body(400, _new_id("req"), why))
            return
        self._messages(body, model=model, stream=verb == "streamRawPredict", location=location)

    def _mantle(self, raw: bytes, path: str) -> None:
        """As Bedrock's Mantle endpoint serves Claude: a Bedrock API key as a bearer token, Bedrock's model ids
        (`anthropic.claude-...`); billed as the Messages API bills (at the regional premium: the test prices it)."""
        owner = self.server.owner
        if path != "/v1/messages":
            owner._record_other(self, raw)
            self._send_json(404, error_body(404, _new_id("req"), f"Unknown path {self.command} {self.path}"))
            return
        if owner.script.sigv4 is None and not (self.headers.get("Authorization") or "").startswith("Bearer "):
            self._send_json(403, error_body(403, _new_id("req"), "Authorization: Bearer <Bedrock API key> is required"))
            return
        body = self._json_body(raw)
        if body is None:
            return
        if not str(body.get("model", "")).startswith("anthropic."):
            self._send_json(400, error_body(400, _new_id("req"), "The provided model identifier is invalid."))
            return
        self._messages(body, platform="mantle")

    def _bedrock_count(self, raw: bytes, model_id: str) -> None:
        """Bedrock's CountTokens: the InvokeModel body, base64'd, counted as it would be billed (`inputTokens`)."""
        try:
            inner = json.loads(base64.b64decode(json.loads(raw)["input"]["invokeModel"]["body"], validate=True))
        except (ValueError, KeyError, TypeError):
            self._send_json(400, {"message": "ValidationException: input.invokeModel.body is required"})
            return
        if not isinstance(inner, dict) or inner.get("anthropic_version") != "bedrock-2023-05-31":
            self._send_json(400, {"message": "ValidationException: anthropic_version bedrock-2023-05-31 is required"})
            return
        owner = self.server.owner
        record = owner._record(self, {**inner, "model": model_id}, COUNT_TOKENS)
        record["platform"] = "bedrock"
        self._answer_count(record, inner, raw, key="inputTokens")
        owner._finish(record)

    def _bedrock(self, raw: bytes, model_id: str, stream: bool) -> None:
        """As Bedrock serves Claude: a Bedrock API key as a bearer token, `anthropic_version` bedrock-2023-05-31 in
        the body and no `model` or `stream` there; errors as Bedrock's (`message`)."""
        if self.server.owner.script.sigv4 is None and not (self.headers.get("Authorization") or "").startswith(
            "Bearer "
        ):
            self._send_json(403, {"message": "Authorization header requires a Bedrock API key"})
            return
        try:
            body = json.loads(raw or b"{}")
        except ValueError:
            body = None
        if not isinstance(body, dict) or body.get("anthropic_version") != "bedrock-2023-05-31":
            self._send_json(400, {"message": "ValidationException: anthropic_version bedrock-2023-05-31 is required"})
            return
        if "model" in body or "stream" in body or not _BEDROCK_ANTHROPIC_ID.match(model_id):
            self._send_json(400, {"message": "ValidationException: extraneous key or an invalid model identifier"})
            return
        self._messages(body, model=model_id, stream=stream, platform="bedrock")

    def _messages(
        self,
        body: dict,
        *,
        model: str | None = None,
        stream: bool | None = None,
        location: str | None = None,
        platform: str | None = None,
    ) -> None:
        owner = self.server.owner
        planned = body if model is None else {**body, "model": model, "stream": stream}
        kind = classify(planned)
        record, reply = owner._plan(self, planned, kind, billed=body)
        if location is not None:
            record["vertex_location"] = location
        record["platform"] = platform
        owner._begin()
        try:
            if self._wait(owner.script.first_byte_delay_s if kind in AGENT_KINDS else 0.0):
                self.close_connection = True
                owner._finish(record, aborted=True)
                return
            if reply.status != 200:
                self._error(record, reply)
            elif record["stream"]:
                self._stream(record, reply)
            else:
                self._complete(record, reply)
        except (BrokenPipeError, ConnectionError, OSError):
            self.close_connection = True  # client went away (e.g. claude interrupted)
            owner._finish(record, aborted=True)
        finally:
            owner._end()

    def _error(self, record: dict, reply: Reply) -> None:
        headers = {"request-id": record["request_id"]}
        if reply.status in (429, 529) and self.server.owner.script.retry_after is not None:
            headers["retry-after"] = str(self.server.owner.script.retry_after)
        if reply.status in (429, 529, 500):
            headers["x-should-retry"] = "true"
        self.server.owner._finish(record)  # before the last byte, so a client that has the reply sees it done
        self._send_json(reply.status, error_body(reply.status, record["request_id"]), headers)

    def _message(self, record: dict, content: list, stop_reason: str | None, usage: dict) -> dict:
        return {
            "id": record["message_id"],
            "type": "message",
            "role": "assistant",
            "model": record["served_model"],
            "content": content,
            "stop_reason": stop_reason,
            "stop_sequence": None,
            "usage": usage,
        }

    def _answer_count(self, record: dict, body: dict, raw: bytes, key: str = "input_tokens") -> None:
        script: Script = self.server.owner.script
        mode, headers = script.count_mode, {"request-id": record["request_id"]}
        counted = prompt_tokens(body) if script.bill_prompt else estimate_tokens(body)
        if mode == "error":
            self._send_json(500, error_body(500, record["request_id"]), headers)
        elif mode == "huge":
            self._send_json(200, {key: 10 * len(raw)}, headers)
        elif mode == "garbage":
            self._send_json(200, {key: f"{counted}"}, headers)
        elif mode == "half":
            self._send_json(200, {key: counted // 2}, headers)
        elif mode == "slow" and self._wait(script.count_delay_s):
            self.close_connection = True
        else:
            self._send_json(200, {key: counted}, headers)

    def _complete(self, record: dict, reply: Reply) -> None:
        total = reply.delay_s + reply.chunk_delay_s * max(0, reply.text_chunks - 1)
        if self._wait(total):
            self.close_connection = True
            self.server.owner._finish(record, aborted=True)
            return
        msg = self._message(
            record, record["content"], reply.effective_stop_reason(), self._shown(record["usage_obj"].api())
        )
        self.server.owner._finish(record)
        self._send_json(200, msg, {"request-id": record["request_id"]})

    def _shown(self, usage: dict) -> dict:
        """The usage as the server sends it (without its prompt's figures, for a script that hides them)."""
        if not self.server.owner.script.hide_prompt_usage:
            return usage
        return {k: v for k, v in usage.items() if "input_tokens" not in k and k != "cache_creation"}

    def _write_chunk(self, data: bytes) -> None:
        self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
        self.wfile.flush()

    def _stream(self, record: dict, reply: Reply) -> None:
        owner = self.server.owner
        usage: Usage = record["usage_obj"]
        events: list[tuple[str, dict, float]] = []  # (event, data, pause before it)
        content = record["content"]
        chunk_pause = reply.chunk_delay_s

        events.append(
            (
                "message_start",
                {
                    "type": "message_start",
                    "message": self._message(record, [], None, self._shown(usage.api(output_tokens=1))),
                },
                0.0,
            )
        )
        events.append(("ping", {"type": "ping"}, 0.0))
        for i, block in enumerate(content):
            btype = block["type"]
            if btype == "text":
                start = {"type": "text", "text": ""}
                deltas = [{"type": "text_delta", "text": p} for p in _split(block["text"], reply.text_chunks)]
            elif btype == "thinking":
                start = {"type": "thinking", "thinking": "", "signature": ""}
                deltas = [{"type": "thinking_delta", "thinking": p} for p in _split(block["thinking"], 2)]
                deltas.append({"type": "signature_delta", "signature": block.get("signature", "")})
            elif btype == "tool_use":
                start = {"type": "tool_use", "id": block["id"], "name": block["name"], "input": {}}
                deltas = [{"type": "input_json_delta", "partial_json": ""}] + [
                    {"type": "input_json_delta", "partial_json": p} for p in _split(json.dumps(block["input"]), 3)
                ]
            else:  # any other block type: sent whole in its start event
                start, deltas = block, []
            events.append(
                ("content_block_start", {"type": "content_block_start", "index": i, "content_block": start}, 0.0)
            )
            for j, d in enumerate(deltas):
                pause = chunk_pause if (btype == "text" and j > 0) else 0.0
                events.append(("content_block_delta", {"type": "content_block_delta", "index": i, "delta": d}, pause))
            events.append(("content_block_stop", {"type": "content_block_stop", "index": i}, 0.0))
        events.append(
            (
                "message_delta",
                {
                    "type": "message_delta",
                    "delta": {"stop_reason": reply.effective_stop_reason(), "stop_sequence": None},
                    **({} if owner.script.drop_delta_usage else {"usage": self._shown(usage.delta())}),
                },
                0.0,
            )
        )
        events.append(("message_stop", {"type": "message_stop"}, 0.0))

        bedrock = record.get("platform") == "bedrock"
        if bedrock:  # Bedrock's last chunk also carries its own count of the call
            usage_now = usage.api()
            metrics = {"inputTokenCount": usage_now["input_tokens"], "outputTokenCount": usage_now["output_tokens"],
                       "invocationLatency": 1000, "firstByteLatency": 100}  # fmt: skip
            events[-1] = ("message_stop", {"type": "message_stop", "amazon-bedrock-invocationMetrics": metrics}, 0.0)
        spread = reply.delay_s / len(events) if reply.delay_s > 0 else 0.0
        self.send_response(200)
        kind = "application/vnd.amazon.eventstream" if bedrock else "text/event-stream; charset=utf-8"
        self.send_header("Content-Type", kind)
        self.send_header("Cache-Control", "no-cache")
        self.send_header("request-id", record["request_id"])
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        for name, data, pause in events:
            if self._wait(pause + spread):
                self.close_connection = True
                owner._finish(record, aborted=True)
                return
            if bedrock:
                frame = eventstream.chunk(data)
                if name == owner.script.corrupt_bedrock_event:
                    frame = frame[:-1] + bytes([frame[-1] ^ 0xFF])
                self._write_chunk(frame)
            else:
                self._write_chunk(f"event: {name}\ndata: {json.dumps(data)}\n\n".encode())
            if name == "message_delta":
                owner._mark(record, "t_message_delta")
        owner._finish(record)
        self._write_chunk(b"")  # end of the chunked body


_SECRET_HEADERS = ("x-api-key", "authorization")


def _headers_dict(handler: BaseHTTPRequestHandler) -> dict:
    out = {}
    for k, v in handler.headers.items():
        k = k.lower()
        if k in _SECRET_HEADERS and len(v) > 12:
            v = v[:10] + "..."
        out[k] = v
    return out


class FakeAnthropic(FakeServer):
    """A scripted Anthropic Messages API server on ``host:port`` (port 0 = ephemeral)."""

    handler = _Handler
    kinds = KINDS

    def __init__(self, script: Script | None = None, *, host: str = "127.0.0.1", port: int = 0) -> None:
        super().__init__(host=host, port=port)
        self.script = script if script is not None else Script()
        self.refused_signatures: list[str] = []  # why each request was refused (Script.sigv4)
        self._reply_index = 0  # successful agent replies so far
        self._attempt_index = 0  # agent requests so far (errors included)
        self._kind_index: dict[str, int] = {}

    @property
    def base_url(self) -> str:
        """``http://host:port`` (no ``/v1``): the value for ``ANTHROPIC_BASE_URL``."""
        return f"http://{self.host}:{self.port}"

    # ---- planning & recording
    def _new_record(self, handler: BaseHTTPRequestHandler, body: dict | None, kind: str) -> dict:
        headers = _headers_dict(handler)
        body = body if isinstance(body, dict) else {}
        return {
            "n": len(self._requests),
            "time": time.time(),
            "method": handler.command,
            "path": handler.path,
            "kind": kind,
            "index": self._kind_index.get(kind, 0),
            "model": body.get("model"),
            "stream": bool(body.get("stream")),
            "headers": headers,
            "anthropic_beta": headers.get("anthropic-beta", ""),
            "session_id": headers.get("x-claude-code-session-id"),
            "body": body,
            "request_id": _new_id("req"),
            "status": 200,
        }

    def _append(self, record: dict) -> None:
        self._kind_index[record["kind"]] = self._kind_index.get(record["kind"], 0) + 1
        self._requests.append(record)
        self._cond.notify_all()

    def _record_other(self, handler: BaseHTTPRequestHandler, raw: bytes = b"") -> None:
        with self._cond:
            record = self._new_record(handler, None, OTHER)
            record.update(status=404, raw_body=raw[:4096].decode("utf-8", "replace"), done=True, t_end=record["time"])
            self._append(record)

    def _record(self, handler: BaseHTTPRequestHandler, body: dict, kind: str) -> dict:
        with self._cond:
            record = self._new_record(handler, body, kind)
            record["done"] = False
            self._append(record)
            return record

    def _plan(
        self, handler: BaseHTTPRequestHandler, body: dict, kind: str, billed: dict | None = None
    ) -> tuple[dict, Reply]:
        """`billed`: the body as sent, when `body` adds what the path said (Vertex's model), for the prompt's bill."""
        script = self.script
        directive, arg, after_tool, tool_error, prompt = prompt_state(body)
        with self._cond:
            record = self._new_record(handler, body, kind)
            reply_index: int | None = None
            if kind in AGENT_KINDS:
                attempt = self._attempt_index
                self._attempt_index += 1
                status = script.error_for(attempt)
                if status is not None:
                    reply = Reply(status=status, directive=directive)
                elif self._reply_index < len(script.replies):
                    reply = script.replies[self._reply_index]
                else:
                    reply = script.reply_for(directive, arg, after_tool, tool_error)
                if reply.status == 200:
                    reply_index = self._reply_index
                    self._reply_index += 1
                usage = reply.usage or script.usage_for(reply_index or 0)
                limit = body.get("max_tokens")
                if script.honor_max_tokens and isinstance(limit, int) and 0 < limit < usage.output_tokens:
                    usage = replace(usage, output_tokens=limit)
                    reply = replace(reply, stop_reason="max_tokens")
                delay = reply.delay_s or script.delay_s
                reply = replace(reply, delay_s=delay)
            else:
                reply = text_reply(script.side_text(kind))
                usage = script.aux_usage
                limit = body.get("max_tokens")
                if script.honor_max_tokens and isinstance(limit, int) and 0 < limit < usage.output_tokens:
                    usage = replace(usage, output_tokens=limit)
            if script.bill_prompt:
                usage = replace(
                    usage, input_tokens=prompt_tokens(billed or body), cache_write_5m=0, cache_write_1h=0, cache_read=0
                )
            content = []
            for block in reply.blocks:
                block = dict(block)
                if block.get("type") == "tool_use":
                    block["id"] = block.get("id") or _new_id("toolu")
                content.append(block)
            record.update(
                directive=reply.directive if kind in AGENT_KINDS else None,
                directive_arg=arg if kind in AGENT_KINDS else "",
                after_tool=after_tool,
                tool_error=tool_error,
                reply_index=reply_index,
                status=reply.status,
                message_id=_new_id("msg") if reply.status == 200 else None,
                served_model=script.model or body.get("model") or DEFAULT_MODEL,
                content=content,
                stop_reason=reply.effective_stop_reason() if reply.status == 200 else None,
                usage_obj=usage,
                usage=usage.api() if reply.status == 200 else None,
                tool_uses=[b for b in content if b.get("type") == "tool_use"],
                done=False,
                aborted=False,
            )
            self._append(record)
        return record, reply

    def _mark(self, record: dict, key: str) -> None:
        with self._cond:
            record[key] = time.time()

    def _finish(self, record: dict, aborted: bool = False) -> None:
        with self._cond:
            if record.get("done"):
                record["aborted"] = record.get("aborted") or aborted  # the last write failed after all
                self._cond.notify_all()
                return
            record["done"] = True
            record["aborted"] = aborted
            record["t_end"] = time.time()
            self._cond.notify_all()

    @property
    def requests(self) -> list[dict]:
        """A snapshot of the recorded requests, in arrival order (each a dict copy).

        Keys: ``n, time, t_end, t_message_delta, method, path, kind, index, model,
        stream, headers`` (lower-case; the API key truncated), ``anthropic_beta,
        session_id`` (``x-claude-code-session-id``), ``body, request_id, status,
        message_id, served_model, directive, directive_arg, after_tool,
        tool_error, reply_index, content, stop_reason, usage, tool_uses, done,
        aborted``.
        """
        with self._lock:
            return [{k: v for k, v in r.items() if k != "usage_obj"} for r in self._requests]

    def reset(self) -> None:
        """Forget recorded requests and restart the reply counters."""
        with self._cond:
            self._requests.clear()
            self._reply_index = 0
            self._attempt_index = 0
            self._kind_index.clear()


# --------------------------------------------------------------------------- CLI


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tests.fakes.fake_anthropic",
        description="Scripted Anthropic Messages API server (never calls a real model).",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 = pick a free port (default)")
    parser.add_argument("--delay", type=float, default=0.0, help="seconds to deliver each agent reply")
    parser.add_argument("--slow-delay", type=float, default=1.0, help="seconds between the deltas of SLOW")
    parser.add_argument("--input-tokens", type=int, default=Usage.input_tokens)
    parser.add_argument("--output-tokens", type=int, default=Usage.output_tokens)
    parser.add_argument("--cache-write-5m", type=int, default=Usage.cache_write_5m)
    parser.add_argument("--cache-write-1h", type=int, default=Usage.cache_write_1h)
    parser.add_argument("--cache-read", type=int, default=Usage.cache_read)
    parser.add_argument("--web-search-requests", type=int, default=0)
    parser.add_argument(
        "--error-status", type=int, default=None, help="answer every agent request with this HTTP status"
    )
    parser.add_argument("--log", default=None, help="append one JSON line per finished request to this file")
    parser.add_argument("--log-bodies", action="store_true", help="include the request bodies in --log")
    args = parser.parse_args(argv)

    script = Script(
        usage=Usage(
            input_tokens=args.input_tokens,
            output_tokens=args.output_tokens,
            cache_write_5m=args.cache_write_5m,
            cache_write_1h=args.cache_write_1h,
            cache_read=args.cache_read,
            web_search_requests=args.web_search_requests,
        ),
        delay_s=args.delay,
        slow_delay_s=args.slow_delay,
        error_status=args.error_status,
    )

    server = FakeAnthropic(script, host=args.host, port=args.port)
    written = 0

    def append_log() -> None:
        nonlocal written
        if args.log:
            written = _append_log(server, args.log, written, bodies=args.log_bodies)

    try:
        serve_until_terminated(server, append_log)
    finally:
        if args.log:
            _append_log(server, args.log, written, final=True, bodies=args.log_bodies)
    return 0


def _append_log(server: FakeAnthropic, path: str, written: int, final: bool = False, bodies: bool = False) -> int:
    """Write finished records ``written..`` as JSON lines (bodies only if asked); the new ``written``."""
    recs = server.requests
    with open(path, "a", encoding="utf-8") as fh:
        while written < len(recs) and (final or recs[written].get("done")):
            r = {k: v for k, v in recs[written].items() if bodies or k != "body"}
            body = recs[written].get("body") or {}
            r["body_keys"] = sorted(body)
            r["n_messages"] = len(body.get("messages") or [])
            fh.write(json.dumps(r, default=str) + "\n")
            written += 1
    return written


if __name__ == "__main__":
    sys.exit(main())
