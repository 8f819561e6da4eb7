"""A fake OpenAI Chat Completions server that bills like a real one: usage follows each request's size and the
reply it sends, with prefix caching, streamed usage only when asked for, and a thread-safe log of what it billed."""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a file: make the repo root importable for capguard.demo._http
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from capguard.demo._http import FakeHandler, FakeServer, serve_until_terminated

# Billing rule (one token per 4 bytes, rounded up; all counts are of UTF-8 bytes):
#
# * ``prompt_tokens`` = ceil(len(prompt_text) / 4), where ``prompt_text`` (see :func:`prompt_text`) joins with newlines
#   the request's ``tools`` as compact sorted JSON, then per message its text content (a string, or the ``text`` of
#   its text parts) and, for each assistant ``tool_calls`` entry, the function's name and arguments.
# * ``cached_tokens`` (``prompt_tokens_details``) = the longest byte prefix ``prompt_text`` shares with an earlier
#   request's, floor-divided by 4 and rounded down to a multiple of 128, and 0 below 1024 (OpenAI's prompt caching
#   works in those steps). Turn it off with ``Script(cache=False)``.
# * ``completion_tokens`` = ``reasoning_tokens`` + ceil(visible bytes / 4), where the visible bytes are the content
#   sent plus each tool call's name and arguments, and ``reasoning_tokens`` = ceil(bytes of the ``reasoning_content``
#   sent / 4). Never above the request's ``max_completion_tokens`` / ``max_tokens``: the reply is cut to fit and ends
#   with ``finish_reason: "length"``.
# * Streaming sends usage in one last chunk (``choices: []``) only when ``stream_options.include_usage`` is true;
#   a non-streamed reply always carries it. A reply cut mid-stream (``Reply.cut_after``) or abandoned by the client
#   is billed for what was sent, and its record says the client never saw the usage.
#
#     with FakeChat(Script([Reply(tool_calls=(bash("echo hi"),)), Reply("done")])) as server:
#         run_agent(base_url=server.base_url)
#         assert server.totals() == what_the_agent_recorded
#
# * ``POST /v1/responses/input_tokens`` (OpenAI's free prompt count, in the Responses API's shapes) answers
#   ``{"input_tokens": n}``: the ``prompt_tokens`` a Chat request with the same prompt would be billed (its input
#   items as messages, its function calls as tool calls, its tools in Chat's shape). ``Script(counts=False)``: 404,
#   as an OpenAI-compatible server without that endpoint answers.
#
# Command line: ``python tests/fakes/fake_chat.py [--port N] [--script chat|shell|runaway|slow|cut] [--log F]``.

__all__ = [
    "MAIN",
    "TITLE",
    "FakeChat",
    "Reply",
    "Script",
    "ToolCall",
    "bash",
    "cached_tokens_for",
    "chat_body_of_count",
    "chat_script",
    "classify_opencode",
    "prompt_text",
    "runaway_script",
    "shell_script",
    "tokens",
]

MAIN = "main"
TITLE = "title"
BYTES_PER_TOKEN = 4
CACHE_MIN_TOKENS = 1024  # OpenAI caches prompts of at least 1024 tokens ...
CACHE_STEP_TOKENS = 128  # ... in steps of 128 tokens
CACHE_MEMORY = 256  # earlier prompts remembered for prefix matching (bounded)
DEFAULT_MAX_TOKENS = 4096  # when the request names no limit

TITLE_TEXT = "Fake session title"


def tokens(text: str | bytes) -> int:
    """Tokens billed for a text: one per 4 UTF-8 bytes, rounded up."""
    data = text.encode() if isinstance(text, str) else text
    return -(-len(data) // BYTES_PER_TOKEN)


@dataclass(frozen=True)
class ToolCall:
    """A function call the model makes; ``arguments`` is sent as compact JSON."""

    name: str
    arguments: dict

    def arguments_json(self) -> str:
        return json.dumps(self.arguments, separators=(",", ":"))


def bash(command: str, description: str = "run it") -> ToolCall:
    """A call of OpenCode's bash tool (its arguments are ``command`` and ``description``)."""
    return ToolCall("bash", {"command": command, "description": description})


@dataclass(frozen=True)
class Reply:
    """One answer: text and/or tool calls, optional reasoning, how slowly it streams, and where it is cut."""

    text: str = ""
    tool_calls: tuple[ToolCall, ...] = ()
    reasoning: str = ""  # streamed as delta.reasoning_content (DeepSeek/vLLM style) and billed as reasoning
    delay_s: float = 0.0  # total time to deliver the reply, spread over its chunks
    cut_after: int | None = None  # stream: drop the connection after this many content chunks


@dataclass
class Script:
    """Main replies in order (or from ``generate(index)``), and what to do when they run out.

    Requests that ``classify`` calls anything but ``"main"`` (OpenCode's title request) get ``title_reply`` and
    do not advance the script, so ``count("main")`` counts the agent's own steps.
    """

    replies: Sequence[Reply] = ()
    repeat_last: bool = True
    generate: Callable[[int], Reply] | None = None
    title_reply: Reply = field(default_factory=lambda: Reply(TITLE_TEXT))
    classify: Callable[[dict], str] = field(default_factory=lambda: classify_opencode)
    cache: bool = True
    counts: bool = True  # serve OpenAI's Responses count (POST /v1/responses/input_tokens)
    # a hostile server: the stream's usage chunk as it goes out (billed all the same), e.g. a field of the wrong shape
    mangle_usage_chunk: Callable[[dict], dict] | None = None

    def __post_init__(self) -> None:
        self.replies = list(self.replies)
        if not self.replies and self.generate is None:
            raise ValueError("Script needs replies or generate")

    def main_reply(self, index: int) -> Reply:
        if self.generate is not None:
            return self.generate(index)
        n = len(self.replies)
        if index < n:
            return self.replies[index]
        return self.replies[-1] if self.repeat_last else self.replies[index % n]


def chat_script(*texts: str, delay_s: float = 0.0) -> Script:
    """Plain text answers, one per main request, the last repeated."""
    return Script([Reply(t, delay_s=delay_s) for t in (texts or ("Understood. No changes are needed.",))])


def shell_script(command: str, final: str = "All done.", reasoning: str = "") -> Script:
    """One bash tool call, then a plain answer: two main steps."""
    return Script([Reply(tool_calls=(bash(command),), reasoning=reasoning), Reply(final)])


def runaway_script(command: str = "echo loop {n}", delay_s: float = 0.0) -> Script:
    """Every main reply is another bash call (``{n}`` = the step), so the agent never stops on its own."""
    return Script(generate=lambda n: Reply(tool_calls=(bash(command.format(n=n), "loop step"),), delay_s=delay_s))


# --------------------------------------------------------------------------- billing


def _content_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # [{"type": "text", "text": ...}, {"type": "image_url", ...}]
        return "\n".join(p["text"] for p in content if isinstance(p, dict) and isinstance(p.get("text"), str))
    return ""


def prompt_text(body: dict) -> str:
    """The text a request is billed for (module docstring): tools, then each message's content and tool calls."""
    parts: list[str] = []
    tools = body.get("tools")
    if tools:
        parts.append(json.dumps(tools, sort_keys=True, separators=(",", ":")))
    for message in body.get("messages") or []:
        if not isinstance(message, dict):
            continue
        parts.append(_content_text(message.get("content")))
        for call in message.get("tool_calls") or []:
            fn = call.get("function") if isinstance(call, dict) else None
            if isinstance(fn, dict):
                parts.append(f"{fn.get('name', '')}{fn.get('arguments', '')}")
    return "\n".join(parts)


def chat_body_of_count(body: dict) -> dict:
    """A Responses count request's prompt as the Chat request it stands for (for ``prompt_text``)."""
    messages: list[dict] = []
    for item in body.get("input") or []:
        if not isinstance(item, dict):
            continue
        if item.get("type") == "function_call":
            call = {"id": item.get("call_id"), "type": "function",
                    "function": {"name": item.get("name", ""), "arguments": item.get("arguments", "")}}  # fmt: skip
            if messages and messages[-1]["role"] == "assistant":
                messages[-1].setdefault("tool_calls", []).append(call)
            else:
                messages.append({"role": "assistant", "content": None, "tool_calls": [call]})
        elif item.get("type") == "function_call_output":
            messages.append({"role": "tool", "content": item.get("output", "")})
        else:
            content = item.get("content")
            if isinstance(content, list):
                content = [{"type": "text", "text": p["text"]} if "text" in p else p for p in content]
            messages.append({"role": item.get("role"), "content": content})
    out: dict = {"messages": messages}
    if body.get("tools"):
        out["tools"] = [
            {"type": "function",
             "function": {k: v for k, v in tool.items() if k != "type" and (v is not None or k == "name")}}
            for tool in body["tools"]
        ]  # fmt: skip
    return out


def cached_tokens_for(prompt: bytes, earlier: Sequence[bytes], prompt_tokens: int) -> int:
    """Tokens of ``prompt`` served from the prefix cache, given earlier prompts (module docstring)."""
    best = 0
    for old in earlier:
        lo, hi = best, min(len(old), len(prompt))  # binary search on slice equality: C speed on long prompts
        if old[:lo] != prompt[:lo]:
            continue
        while lo < hi:
            mid = (lo + hi + 1) // 2
            if old[:mid] == prompt[:mid]:
                lo = mid
            else:
                hi = mid - 1
        best = lo
    cached = (best // BYTES_PER_TOKEN) // CACHE_STEP_TOKENS * CACHE_STEP_TOKENS
    return min(cached, prompt_tokens) if cached >= CACHE_MIN_TOKENS else 0


def _max_tokens(body: dict) -> int:
    for key in ("max_completion_tokens", "max_tokens"):
        value = body.get(key)
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value
    return DEFAULT_MAX_TOKENS


def _cut_bytes(text: str, limit: int) -> str:
    """The longest prefix of ``text`` whose UTF-8 encoding fits in ``limit`` bytes."""
    data = text.encode()
    if len(data) <= limit:
        return text
    return data[:limit].decode(errors="ignore")


@dataclass
class _Plan:
    """What will be sent for one reply after fitting it into the request's output limit."""

    reasoning: str
    text: str
    calls: list[tuple[str, str]]  # (name, arguments json)
    finish: str


def _plan(reply: Reply, budget: int) -> _Plan:
    reasoning = _cut_bytes(reply.reasoning, budget * BYTES_PER_TOKEN)
    left = (budget - tokens(reasoning)) * BYTES_PER_TOKEN  # bytes of visible output still allowed
    text = _cut_bytes(reply.text, left)
    left -= len(text.encode())
    truncated = text != reply.text or reasoning != reply.reasoning
    calls: list[tuple[str, str]] = []
    for call in reply.tool_calls:
        name, args = call.name, call.arguments_json()
        if truncated or len((name + args).encode()) > left:
            truncated = True
            if len(name.encode()) <= left:  # a real model cut short leaves invalid JSON arguments behind
                calls.append((name, _cut_bytes(args, left - len(name.encode()))))
            break
        calls.append((name, args))
        left -= len((name + args).encode())
    finish = "length" if truncated else ("tool_calls" if calls else "stop")
    return _Plan(reasoning, text, calls, finish)


class _Meter:
    """Counts what a reply has sent so far; its usage is what the request is billed."""

    def __init__(self, prompt_tokens: int, cached: int) -> None:
        self.prompt_tokens = prompt_tokens
        self.cached = cached
        self.visible = 0  # bytes
        self.reasoning = 0  # bytes

    def usage(self) -> dict:
        reasoning = -(-self.reasoning // BYTES_PER_TOKEN)
        completion = reasoning + -(-self.visible // BYTES_PER_TOKEN)
        return {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": completion,
            "total_tokens": self.prompt_tokens + completion,
            "prompt_tokens_details": {"cached_tokens": self.cached, "audio_tokens": 0},
            "completion_tokens_details": {
                "reasoning_tokens": reasoning,
                "audio_tokens": 0,
                "accepted_prediction_tokens": 0,
                "rejected_prediction_tokens": 0,
            },
        }


def classify_opencode(body: dict) -> str:
    """``"title"`` for OpenCode's title-generation request (no tools; its system prompt asks for a title), else
    ``"main"``."""
    if body.get("tools"):
        return MAIN
    messages = body.get("messages") or []
    head = _content_text(messages[0].get("content")) if messages and isinstance(messages[0], dict) else ""
    return TITLE if "title" in head.lower() else MAIN


# --------------------------------------------------------------------------- HTTP


def _pieces(text: str, n: int) -> list[str]:
    if not text:
        return []
    size = -(-len(text) // max(1, min(n, len(text))))
    return [text[i : i + size] for i in range(0, len(text), size)]


class _Handler(FakeHandler):
    server_version = "capguard-fake-chat/1"

    def _path(self) -> str:
        return self.path.split("?", 1)[0].rstrip("/")

    def do_GET(self) -> None:
        if self._path() == "/v1/models":
            self._send_json(
                200,
                {
                    "object": "list",
                    "data": [
                        {
                            "id": "fake-model",
                            "object": "model",
                            "created": int(time.time()),
                            "owned_by": "capguard-fake",
                        }
                    ],
                },
            )
        else:
            self._send_json(404, {"error": {"message": f"Unknown path {self.path}", "type": "invalid_request_error"}})

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length > 0 else b""
        owner: FakeChat = self.server.owner  # type: ignore[assignment]
        if self._path() == "/v1/responses/input_tokens" and owner.script.counts:
            counted = self._body(raw, "input")
            if counted is None:
                return
            n = tokens(prompt_text(chat_body_of_count(counted)))
            with owner._cond:
                owner.counted.append({"body": counted, "input_tokens": n})
            self._send_json(200, {"object": "response.input_tokens", "input_tokens": n})
            return
        if self._path() != "/v1/chat/completions":
            self._send_json(404, {"error": {"message": f"Unknown path {self.path}", "type": "invalid_request_error"}})
            return
        body = self._body(raw, "messages")
        if body is None:
            return
        record, reply, meter = owner._record(body)
        plan = _plan(reply, record["max_tokens"])
        owner._begin()
        try:
            if record["stream"]:
                self._stream(record, reply, plan, meter)
            else:
                self._complete(record, reply, plan, meter)
        except (BrokenPipeError, ConnectionError, OSError):
            self.close_connection = True  # the client went away mid-reply (e.g. the agent was killed)
        finally:
            owner._finish(record, meter)  # no-op when the reply already settled its bill
            owner._end()

    def _body(self, raw: bytes, items: str) -> dict | None:
        """The request's JSON object with a list at `items`, or None once a 400 is sent."""
        try:
            body = json.loads(raw or b"{}")
            if not isinstance(body, dict) or not isinstance(body.get(items), list):
                raise ValueError(f"body must be an object with a {items} list")
        except ValueError as err:
            self._send_json(400, {"error": {"message": f"invalid request: {err}", "type": "invalid_request_error"}})
            return None
        return body

    def _complete(self, record: dict, reply: Reply, plan: _Plan, meter: _Meter) -> None:
        if reply.delay_s > 0 and self.server.owner._stopping.wait(reply.delay_s):
            self.close_connection = True
            return
        if reply.cut_after is not None:  # no answer at all: nothing generated reached the client
            self.close_connection = True
            return
        message: dict[str, Any] = {"role": "assistant", "content": plan.text or None}
        if plan.reasoning:
            message["reasoning_content"] = plan.reasoning
        if plan.calls:
            message["tool_calls"] = [
                {"id": f"call_{record['id']}_{i}", "type": "function", "function": {"name": name, "arguments": args}}
                for i, (name, args) in enumerate(plan.calls)
            ]
        meter.reasoning = len(plan.reasoning.encode())
        meter.visible = len(plan.text.encode()) + sum(len((n + a).encode()) for n, a in plan.calls)
        self.server.owner._finish(record, meter, usage_sent=True)  # settled before the client can read it
        self._send_json(
            200,
            {
                "id": record["id"],
                "object": "chat.completion",
                "created": int(record["time"]),
                "model": record["model"],
                "system_fingerprint": "fp_capguard_fake",
                "choices": [{"index": 0, "message": message, "logprobs": None, "finish_reason": plan.finish}],
                "usage": meter.usage(),
            },
        )

    def _chunk(self, data: bytes) -> None:
        self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
        self.wfile.flush()

    def _event(self, obj: Any) -> None:
        self._chunk(f"data: {obj if isinstance(obj, str) else json.dumps(obj)}\n\n".encode())

    def _deltas(self, record: dict, plan: _Plan) -> Iterator[tuple[dict, int, int]]:
        """(delta, reasoning bytes, visible bytes) per content chunk of the stream."""
        for piece in _pieces(plan.reasoning, 4):
            yield {"reasoning_content": piece}, len(piece.encode()), 0
        for piece in _pieces(plan.text, 4):
            yield {"content": piece}, 0, len(piece.encode())
        for i, (name, args) in enumerate(plan.calls):
            head = {
                "index": i,
                "id": f"call_{record['id']}_{i}",
                "type": "function",
                "function": {"name": name, "arguments": ""},
            }
            yield {"tool_calls": [head]}, 0, len(name.encode())
            for piece in _pieces(args, 3):
                yield {"tool_calls": [{"index": i, "function": {"arguments": piece}}]}, 0, len(piece.encode())

    def _stream(self, record: dict, reply: Reply, plan: _Plan, meter: _Meter) -> None:
        stopping = self.server.owner._stopping
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        base = {
            "id": record["id"],
            "object": "chat.completion.chunk",
            "created": int(record["time"]),
            "model": record["model"],
            "system_fingerprint": "fp_capguard_fake",
        }

        def chunk(delta: dict, finish: str | None = None) -> dict:
            return {**base, "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]}

        self._event(chunk({"role": "assistant", "content": ""}))
        deltas = list(self._deltas(record, plan))
        pause = reply.delay_s / max(1, len(deltas))
        for sent, (delta, reasoning_bytes, visible_bytes) in enumerate(deltas):
            if reply.cut_after is not None and sent >= reply.cut_after:
                self.close_connection = True  # cut mid-stream: no finish, no usage, no [DONE]
                return
            if pause and stopping.wait(pause):
                self.close_connection = True
                return
            self._event(chunk(delta))
            meter.reasoning += reasoning_bytes
            meter.visible += visible_bytes
        if reply.cut_after is not None and len(deltas) >= reply.cut_after:
            self.close_connection = True
            return
        # everything is generated: settle the bill before the client can see the end of the stream
        self.server.owner._finish(record, meter, usage_sent=record["include_usage"])
        self._event(chunk({}, plan.finish))
        if record["include_usage"]:
            usage_chunk = {**base, "choices": [], "usage": meter.usage()}
            mangle = self.server.owner.script.mangle_usage_chunk
            self._event(usage_chunk if mangle is None else mangle(usage_chunk))
        self._event("[DONE]")
        self._chunk(b"")  # end of the chunked body


class FakeChat(FakeServer):
    """A Chat Completions server on ``host:port`` (port 0 = ephemeral) that bills each request by its size."""

    handler = _Handler
    kinds = (MAIN, TITLE)

    def __init__(self, script: Script, *, host: str = "127.0.0.1", port: int = 0) -> None:
        super().__init__(host=host, port=port)
        self.script = script
        self._main_index = 0
        self._prompts: list[bytes] = []  # earlier prompt texts, for the prefix cache
        self.counted: list[dict] = []  # each count asked (POST /v1/responses/input_tokens): its body and answer

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}/v1"

    def _record(self, body: dict) -> tuple[dict, Reply, _Meter]:
        kind = self.script.classify(body)
        prompt = prompt_text(body).encode()
        prompt_tokens = tokens(prompt)
        opts = body.get("stream_options")
        with self._cond:
            cached = cached_tokens_for(prompt, self._prompts, prompt_tokens) if self.script.cache else 0
            self._prompts = (self._prompts + [prompt])[-CACHE_MEMORY:]
            index: int | None = None
            if kind == MAIN:
                index = self._main_index
                reply = self.script.main_reply(index)
                self._main_index += 1
            else:
                reply = self.script.title_reply
            record = {
                "n": len(self._requests),
                "id": f"chatcmpl-fake-{len(self._requests) + 1}",
                "time": time.time(),
                "kind": kind,
                "main_index": index,
                "model": body.get("model") or "fake-model",
                "stream": bool(body.get("stream")),
                "include_usage": isinstance(opts, dict) and opts.get("include_usage") is True,
                "max_tokens": _max_tokens(body),
                "body": body,
                "usage": None,
                "usage_sent": False,
                "complete": False,
                "finished_at": None,
            }
            self._requests.append(record)
            self._cond.notify_all()
        return record, reply, _Meter(prompt_tokens, cached)

    def _finish(self, record: dict, meter: _Meter, *, usage_sent: bool | None = None) -> None:
        """Settle a request's bill once: the prompt plus whatever was generated and sent. ``usage_sent`` is given
        for a reply that completed (whether its usage reaches the client); None for one cut or abandoned."""
        with self._cond:
            if record["usage"] is not None:
                return
            record["usage"] = meter.usage()
            record["finished_at"] = time.time()
            if usage_sent is not None:
                record["complete"] = True
                record["usage_sent"] = usage_sent
            self._cond.notify_all()

    @property
    def requests(self) -> list[dict]:
        """A snapshot of the request log, in arrival order (each record: kind, body, usage billed, ...)."""
        with self._lock:
            return [dict(r) for r in self._requests]

    def billed(self, kind: str | None = None) -> list[dict]:
        """Records (of ``kind``) whose reply is over, i.e. whose ``usage`` is final."""
        return [r for r in self.requests if r["usage"] is not None and (kind is None or r["kind"] == kind)]

    def totals(self, kind: str | None = None) -> dict[str, int]:
        """Summed billed usage: prompt, cached, completion and reasoning tokens (of ``kind`` if given)."""
        out = {"prompt": 0, "cached": 0, "completion": 0, "reasoning": 0}
        for r in self.billed(kind):
            u = r["usage"]
            out["prompt"] += u["prompt_tokens"]
            out["cached"] += u["prompt_tokens_details"]["cached_tokens"]
            out["completion"] += u["completion_tokens"]
            out["reasoning"] += u["completion_tokens_details"]["reasoning_tokens"]
        return out

    def reset(self) -> None:
        """Forget the log, the prefix cache and the script position."""
        with self._cond:
            self._requests.clear()
            self._prompts.clear()
            self.counted.clear()
            self._main_index = 0


# --------------------------------------------------------------------------- CLI

_SCRIPTS: dict[str, Callable[[float], Script]] = {
    "chat": lambda d: chat_script(delay_s=d),
    "shell": lambda d: shell_script("sleep 3; echo hi-from-shell"),
    "runaway": lambda d: runaway_script(delay_s=d),
    "slow": lambda d: chat_script("A slow answer, " * 20, delay_s=d or 10.0),
    "cut": lambda d: Script([Reply("This reply is cut off in the middle of the stream.", cut_after=2)]),
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python tests/fakes/fake_chat.py",
        description="Fake OpenAI Chat Completions server that bills by the request.",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 = pick a free port (default)")
    parser.add_argument("--script", choices=sorted(_SCRIPTS), default="chat")
    parser.add_argument("--delay", type=float, default=0.0, help="seconds per main reply")
    parser.add_argument("--log", type=Path, help="append each finished request's record here as JSON lines")
    args = parser.parse_args(argv)
    server = FakeChat(_SCRIPTS[args.script](args.delay), host=args.host, port=args.port)
    written: set[int] = set()

    def tick() -> None:  # the log file follows the in-memory log, one line per finished request
        fresh = [r for r in server.billed() if r["n"] not in written]
        if args.log and fresh:
            with args.log.open("a") as f:
                for r in fresh:
                    f.write(json.dumps(r) + "\n")
                    written.add(r["n"])

    serve_until_terminated(server, tick)
    return 0


if __name__ == "__main__":
    sys.exit(main())
