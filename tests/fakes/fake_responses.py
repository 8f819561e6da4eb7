"""A scripted fake of OpenAI's Responses API (POST /v1/responses, SSE or JSON) that bills like the real server,
for running the real Codex CLI in tests without a real model; stdlib only, billing rule in responses_billing.py.

Each model request gets the next :class:`Reply` of a :class:`Script` (a message, or a function call such as
Codex's ``exec_command``); the usage it reports follows the request and the reply actually sent
(``responses_billing``), and is sent only where the real API sends it: in ``response.completed`` (or
``response.incomplete`` when ``max_output_tokens`` cut the reply), never in a stream that was cut. Every request
is logged with what was billed, so a test can compare an agent's own figures with the server's to the token::

    with FakeResponses(runaway_script()) as server:
        run_codex(base_url=server.base_url)           # config: base_url = server.base_url, wire_api = "responses"
        billed = server.billed_usage()                 # sum over the replies whose usage was sent

Codex's thread-title side requests (TUI; prompt "Generate a concise, single-line task title") are answered
from ``Script.title_reply`` without consuming the main script, and logged with ``kind == "title"``. Its remote
compaction requests (built-in OpenAI provider: a request whose input ends with a ``compaction_trigger`` item) are
answered with one ``compaction`` item from ``Script.compaction_reply``, logged with ``kind == "compaction"``; the
item's ``encrypted_content`` is the summary's text, billed as input wherever a later request carries it back.

Command line (foreground, prints the base URL)::

    python tests/fakes/fake_responses.py --port 0 --script chat|runaway [--delay S]
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make `capguard` and `tests` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from capguard.demo._http import FakeHandler, FakeServer, serve_until_terminated
from tests.fakes import responses_billing as billing
from tests.fakes import sigv4

__all__ = [
    "COMPACTION",
    "TITLE_MARKER",
    "FakeResponses",
    "Reply",
    "Script",
    "ToolCall",
    "chat_script",
    "classify",
    "runaway_script",
    "say",
    "shell",
]

MAIN = "main"
TITLE = "title"
COMPACTION = "compaction"
KINDS = (MAIN, TITLE, COMPACTION)

#: The input item that asks the Responses API for a compaction (Codex 0.169.1's built-in OpenAI provider).
TRIGGER = "compaction_trigger"

#: Codex 0.169.1's thread-title prompt starts with this (binary strings; seen in TUI runs).
TITLE_MARKER = "Generate a concise, single-line task title"


@dataclass(frozen=True)
class ToolCall:
    """A function call the model asks for, e.g. Codex's ``exec_command`` with ``{"cmd": "ls"}``."""

    name: str
    arguments: Any  # a dict (sent as JSON) or the JSON string itself


@dataclass(frozen=True)
class Reply:
    """One scripted model answer: text or a tool call, optional hidden reasoning tokens, and delivery quirks."""

    text: str = ""
    tool_call: ToolCall | None = None
    compaction: str | None = None  # a remote compaction's summary: the reply is one `compaction` item holding it
    reasoning_tokens: int = 0  # billed as output (reasoning part); shown as an empty reasoning item
    delay_s: float = 0.0  # total delivery time, spread over the deltas
    cut_after_deltas: int | None = None  # drop the connection after N deltas: no completion, no usage

    def output_text(self) -> str:
        """The text whose size the output tokens are counted from."""
        if self.tool_call is not None:
            return self.tool_call.name + billing.arguments_text(self.tool_call.arguments)
        return self.compaction if self.compaction is not None else self.text


def say(text: str, **kw: Any) -> Reply:
    """A plain assistant message (ends a Codex turn)."""
    return Reply(text=text, **kw)


def shell(cmd: str, **kw: Any) -> Reply:
    """An ``exec_command`` call (Codex runs ``cmd`` in a shell and sends the result in the next request)."""
    return Reply(tool_call=ToolCall("exec_command", {"cmd": cmd}), **kw)


@dataclass
class Script:
    """Main replies in order; after the last one, repeat it (``repeat_last``) or cycle from the first."""

    replies: list[Reply]
    repeat_last: bool = True
    title_reply: Reply = field(default_factory=lambda: Reply(text="Fake task title"))
    compaction_reply: Reply = field(default_factory=lambda: Reply(compaction="Fake summary of the work so far."))
    # Amazon Bedrock's OpenAI endpoints (Codex's amazon-bedrock providers, at `/openai/v1`): every request must
    # carry a valid Signature Version 4 by these keys for this scope (tests/fakes/sigv4.py), or the Bedrock API key
    # `bearer` (Authorization: Bearer); anything else is refused with a 403 and kept in
    # FakeResponses.refused_signatures
    sigv4: sigv4.Keys | None = None
    bearer: str | None = None

    def __post_init__(self) -> None:
        if not self.replies:
            raise ValueError("Script needs at least one Reply")
        self.replies = list(self.replies)

    def main_reply(self, index: int) -> Reply:
        """The reply for the ``index``-th (0-based) main request."""
        n = len(self.replies)
        if index < n:
            return self.replies[index]
        return self.replies[-1] if self.repeat_last else self.replies[index % n]


class RunawayScript(Script):
    """Every reply is a fresh shell command (``echo loop N``), so the agent never finishes on its own."""

    def main_reply(self, index: int) -> Reply:
        base = self.replies[0]
        return Reply(
            tool_call=ToolCall("exec_command", {"cmd": f"echo loop {index}"}),
            reasoning_tokens=base.reasoning_tokens,
            delay_s=base.delay_s,
        )


def chat_script(texts: list[str] | None = None, *, delay_s: float = 0.0, reasoning_tokens: int = 0) -> Script:
    """Short text answers, one per turn, cycling."""
    texts = texts or ["Hello from the fake Responses server.", "Done. Nothing else to do."]
    return Script([say(t, delay_s=delay_s, reasoning_tokens=reasoning_tokens) for t in texts], repeat_last=False)


def runaway_script(*, delay_s: float = 0.0, reasoning_tokens: int = 0) -> Script:
    """A model that keeps calling tools forever (what a spend cap must stop)."""
    return RunawayScript([Reply(delay_s=delay_s, reasoning_tokens=reasoning_tokens)])


def classify(body: Any) -> str:
    """``"compaction"`` for a remote compaction request (its input ends with a ``compaction_trigger`` item),
    ``"title"`` for Codex's thread-title request (its input asks for a task title), else ``"main"``."""
    if not isinstance(body, dict):
        return MAIN
    items = body.get("input")
    if isinstance(items, list) and items and isinstance(items[-1], dict) and items[-1].get("type") == TRIGGER:
        return COMPACTION
    head = billing.prompt_text({"instructions": body.get("instructions"), "input": body.get("input")})
    return TITLE if TITLE_MARKER in head else MAIN


# --------------------------------------------------------------------------- the reply as sent


@dataclass
class _Plan:
    """What one reply sends and bills once ``max_output_tokens`` is applied."""

    reply: Reply
    shown: str  # the message text, or the call's arguments string, possibly truncated
    reasoning: int
    incomplete: bool

    @property
    def output_tokens(self) -> int:
        if self.reply.tool_call is not None:
            return billing.tokens(self.reply.tool_call.name + self.shown) + self.reasoning
        return billing.tokens(self.shown) + self.reasoning


def _truncate(text: str, max_tokens: int) -> str:
    """The longest prefix of `text` whose token count is at most `max_tokens` (never splits a UTF-8 char)."""
    data = text.encode("utf-8")[: max(0, max_tokens) * billing.BYTES_PER_TOKEN]
    return data.decode("utf-8", errors="ignore")


def plan_reply(reply: Reply, limit: int | None) -> _Plan:
    """Apply a request's ``max_output_tokens``: reasoning spends the budget first, the visible text gets the rest."""
    shown = billing.arguments_text(reply.tool_call.arguments) if reply.tool_call else reply.output_text()
    plan = _Plan(reply, shown, reply.reasoning_tokens, False)
    if limit is None or plan.output_tokens <= limit:
        return plan
    reasoning = min(reply.reasoning_tokens, limit)
    left = limit - reasoning
    if reply.tool_call is not None:
        left -= billing.tokens(reply.tool_call.name)
    return _Plan(reply, _truncate(shown, left), reasoning, True)


def _chunks(text: str, n: int) -> list[str]:
    if not text:
        return [""]
    n = max(1, min(n, len(text)))
    size = -(-len(text) // n)
    return [text[i : i + size] for i in range(0, len(text), size)]


class _Events:
    """Builds the Responses API stream for one reply, event by event (``sequence_number`` counts them)."""

    def __init__(self, record: dict, plan: _Plan) -> None:
        self.record = record
        self.plan = plan
        self.seq = 0
        rid = record["id"]
        self.msg_id = f"msg_{rid}"
        self.call_id = f"call_{rid}"

    def _ev(self, etype: str, **fields: Any) -> dict:
        event = {"type": etype, "sequence_number": self.seq, **fields}
        self.seq += 1
        return event

    def response(self, status: str, output: list, usage: dict | None) -> dict:
        incomplete = {"reason": "max_output_tokens"} if status == "incomplete" else None
        return {
            "id": self.record["id"],
            "object": "response",
            "created_at": int(self.record["time"]),
            "status": status,
            "model": self.record["model"] or "fake-model",
            "output": output,
            "usage": usage,
            "error": None,
            "incomplete_details": incomplete,
            "parallel_tool_calls": True,
            "tool_choice": "auto",
            "tools": [],
            "store": False,
        }

    def output_items(self) -> list[dict]:
        items: list[dict] = []
        if self.plan.reasoning:
            items.append({"type": "reasoning", "id": f"rs_{self.record['id']}", "summary": []})
        call = self.plan.reply.tool_call
        if self.plan.reply.compaction is not None:
            items.append({"type": "compaction", "id": f"cmp_{self.record['id']}", "encrypted_content": self.plan.shown})
        elif call is not None:
            items.append(
                {
                    "type": "function_call",
                    "id": f"fc_{self.record['id']}",
                    "call_id": self.call_id,
                    "name": call.name,
                    "arguments": self.plan.shown,
                    "status": "completed",
                }
            )
        else:
            items.append(
                {
                    "type": "message",
                    "id": self.msg_id,
                    "role": "assistant",
                    "status": "completed",
                    "content": [{"type": "output_text", "text": self.plan.shown, "annotations": []}],
                }
            )
        return items

    def stream(self, pieces: int) -> Iterator[tuple[bool, dict]]:
        """(is_delta, event) pairs, in the order the real API sends them."""
        yield False, self._ev("response.created", response=self.response("in_progress", [], None))
        yield False, self._ev("response.in_progress", response=self.response("in_progress", [], None))
        items = self.output_items()
        for index, item in enumerate(items):
            if item["type"] in ("reasoning", "compaction"):
                yield False, self._ev("response.output_item.added", output_index=index, item=item)
                yield False, self._ev("response.output_item.done", output_index=index, item=item)
            elif item["type"] == "function_call":
                yield (
                    False,
                    self._ev(
                        "response.output_item.added",
                        output_index=index,
                        item={**item, "arguments": "", "status": "in_progress"},
                    ),
                )
                for piece in _chunks(item["arguments"], pieces):
                    yield (
                        True,
                        self._ev(
                            "response.function_call_arguments.delta",
                            item_id=item["id"],
                            output_index=index,
                            delta=piece,
                        ),
                    )
                yield (
                    False,
                    self._ev(
                        "response.function_call_arguments.done",
                        item_id=item["id"],
                        output_index=index,
                        arguments=item["arguments"],
                    ),
                )
                yield False, self._ev("response.output_item.done", output_index=index, item=item)
            else:
                text = item["content"][0]["text"]
                where = {"item_id": item["id"], "output_index": index, "content_index": 0}
                yield (
                    False,
                    self._ev(
                        "response.output_item.added",
                        output_index=index,
                        item={**item, "status": "in_progress", "content": []},
                    ),
                )
                yield (
                    False,
                    self._ev(
                        "response.content_part.added",
                        **where,
                        part={"type": "output_text", "text": "", "annotations": []},
                    ),
                )
                for piece in _chunks(text, pieces):
                    yield True, self._ev("response.output_text.delta", **where, delta=piece)
                yield False, self._ev("response.output_text.done", **where, text=text)
                yield False, self._ev("response.content_part.done", **where, part=item["content"][0])
                yield False, self._ev("response.output_item.done", output_index=index, item=item)
        status = "incomplete" if self.plan.incomplete else "completed"
        yield False, self._ev(f"response.{status}", response=self.response(status, items, self.record["usage"]))


# --------------------------------------------------------------------------- HTTP


class _Handler(FakeHandler):
    server_version = "capguard-fake-responses/1"

    def _error(self, status: int, message: str, code: str) -> None:
        self._send_json(status, {"error": {"message": message, "type": "invalid_request_error", "code": code}})

    def _path(self) -> str:
        return self.path.split("?", 1)[0].rstrip("/")

    def do_GET(self) -> None:
        if self._path() in ("/v1/models", "/models"):
            self._send_json(
                200,
                {
                    "object": "list",
                    "data": [{"id": "fake-model", "object": "model", "created": 0, "owned_by": "capguard-fake"}],
                },
            )
        else:  # includes the WebSocket upgrade Codex's built-in provider tries first: refuse it, HTTPS follows
            self._error(404, f"Unknown path {self.command} {self.path}", "not_found")

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length > 0 else b""
        if self._path().removeprefix("/openai").removeprefix("/v1") not in ("/responses", "/responses/input_tokens"):
            self._error(404, f"Unknown path {self.command} {self.path}", "not_found")
            return
        why = self._refused(raw)
        if why is not None:
            with self.server.owner._cond:
                self.server.owner.refused_signatures.append(why)
            self._error(403, why, "access_denied")
            return
        try:
            body = json.loads(raw or b"{}")
            if not isinstance(body, dict):
                raise ValueError("body is not an object")
        except ValueError as err:
            self._error(400, f"invalid JSON body: {err}", "invalid_json")
            return
        owner: FakeResponses = self.server.owner
        if self._path().endswith("/responses/input_tokens"):
            self._input_tokens(owner, body, raw)
            return
        record, plan = owner._record(body, self.headers.get("User-Agent", ""))
        record["headers"] = dict(self.headers)  # what reached the server (strict mode: never the run's secret)
        owner._begin()
        try:
            if record["stream"]:
                self._stream(record, plan)
            else:
                self._complete(record, plan)
        except (BrokenPipeError, ConnectionError, OSError):
            self.close_connection = True  # the agent went away mid-reply (e.g. interrupted)
            owner._finish(record, "aborted")
        finally:
            owner._end()

    def _refused(self, raw: bytes) -> str | None:
        """Why Bedrock would refuse this request's credentials (Script.sigv4 / Script.bearer), or None."""
        script: Script = self.server.owner.script
        if script.sigv4 is None and script.bearer is None:
            return None
        if script.bearer is not None and self.headers.get("Authorization") == f"Bearer {script.bearer}":
            return None
        if script.sigv4 is None:
            return "Invalid API key"
        return sigv4.check(script.sigv4, self.command, self.path, dict(self.headers.items()), raw)

    def _input_tokens(self, owner: FakeResponses, body: dict, raw: bytes) -> None:
        """``POST /v1/responses/input_tokens``: the prompt's input tokens as a request of it would be billed
        (``count_mode`` other than ``exact`` answers wrongly on purpose, see :class:`FakeResponses`)."""
        with owner._cond:
            owner.counted.append(body)
        counted, mode = billing.tokens(billing.prompt_text(body)), owner.count_mode
        if mode == "error":
            self._error(500, "The server had an error while processing your request.", "server_error")
        elif mode == "huge":
            self._send_json(200, {"object": "response.input_tokens", "input_tokens": 10 * len(raw)})
        elif mode == "garbage":
            self._send_json(200, {"object": "response.input_tokens", "input_tokens": -1})
        else:
            self._send_json(200, {"object": "response.input_tokens", "input_tokens": counted})

    def _complete(self, record: dict, plan: _Plan) -> None:
        owner: FakeResponses = self.server.owner
        if plan.reply.delay_s > 0 and owner._stopping.wait(plan.reply.delay_s):
            self.close_connection = True
            owner._finish(record, "aborted")
            return
        events = _Events(record, plan)
        status = "incomplete" if plan.incomplete else "completed"
        self._send_json(200, events.response(status, events.output_items(), record["usage"]))
        owner._finish(record, status, billed=True)

    def _write_chunk(self, data: bytes) -> None:
        self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
        self.wfile.flush()

    def _stream(self, record: dict, plan: _Plan) -> None:
        owner: FakeResponses = self.server.owner
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        reply = plan.reply
        pieces = 10 if reply.delay_s > 0 else 4
        pause = reply.delay_s / pieces if reply.delay_s > 0 else 0.0
        deltas = 0
        for is_delta, event in _Events(record, plan).stream(pieces):
            if is_delta:
                if reply.cut_after_deltas is not None and deltas >= reply.cut_after_deltas:
                    self.close_connection = True  # no terminating chunk: the client sees a broken stream
                    owner._finish(record, "cut")
                    return
                if pause and owner._stopping.wait(pause):
                    self.close_connection = True
                    owner._finish(record, "aborted")
                    return
                deltas += 1
            self._write_chunk(f"event: {event['type']}\ndata: {json.dumps(event)}\n\n".encode())
        self._write_chunk(b"")  # end of the chunked body
        owner._finish(record, "incomplete" if plan.incomplete else "completed", billed=True)


class FakeResponses(FakeServer):
    """A scripted Responses API server on ``host:port`` (port 0 = ephemeral); ``base_url`` ends in ``/v1``."""

    handler = _Handler
    kinds = KINDS

    def __init__(
        self, script: Script, *, host: str = "127.0.0.1", port: int = 0, caching: bool = True, count_mode: str = "exact"
    ) -> None:
        super().__init__(host=host, port=port)
        self.script = script
        # ``/v1/responses/input_tokens``: ``exact`` (what the request would be billed for its prompt), ``error``
        # (a 500), ``huge`` (ten times its bytes), ``garbage`` (-1); each body asked about is kept in ``counted``
        self.count_mode = count_mode
        self.counted: list[dict] = []
        self.refused_signatures: list[str] = []  # why each request was refused (Script.sigv4, Script.bearer)
        self.cache = billing.PromptCache(enabled=caching)
        self._main_index = 0
        # Response ids are unique per server and survive reset(), like real ones: agents may key on them.
        self._id_prefix = f"resp_fake{uuid.uuid4().hex[:8]}_"
        self._ids = itertools.count(1)

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}/v1"

    def _record(self, body: dict, user_agent: str) -> tuple[dict, _Plan]:
        """Log the request, pick its reply and fix the usage it will be billed (sent only if it completes)."""
        kind = classify(body)
        text = billing.prompt_text(body)
        cached = self.cache.lookup_and_store(billing.cache_key(body), text)
        with self._cond:
            if kind == MAIN:
                index: int | None = self._main_index
                self._main_index += 1
                reply = self.script.main_reply(index)
            else:
                index = None
                reply = self.script.title_reply if kind == TITLE else self.script.compaction_reply
            plan = plan_reply(reply, billing.max_output_tokens(body))
            input_tokens = billing.tokens(text)
            record = {
                "id": f"{self._id_prefix}{next(self._ids)}",
                "time": time.time(),
                "model": body.get("model"),
                "stream": bool(body.get("stream")),
                "kind": kind,
                "main_index": index,
                "user_agent": user_agent,
                "usage": billing.usage_block(input_tokens, cached, plan.output_tokens, plan.reasoning),
                "status": "pending",
                "billed": False,
                "body": body,
            }
            self._requests.append(record)
            self._cond.notify_all()
        return record, plan

    def _finish(self, record: dict, status: str, billed: bool = False) -> None:
        with self._cond:
            record["status"] = status
            record["billed"] = billed
            self._cond.notify_all()

    @property
    def requests(self) -> list[dict]:
        """A snapshot of every request, in arrival order (records are shared; don't mutate them)."""
        with self._lock:
            return list(self._requests)

    def billed(self, kind: str | None = None) -> list[dict]:
        """The requests whose usage the server sent (completed or incomplete), of `kind` if given."""
        return [r for r in self.requests if r["billed"] and (kind is None or r["kind"] == kind)]

    def billed_usage(self, kind: str | None = None) -> dict[str, int]:
        """The billed usage summed: input, cached, output, reasoning and total tokens."""
        total = {"input_tokens": 0, "cached_tokens": 0, "output_tokens": 0, "reasoning_tokens": 0, "total_tokens": 0}
        for r in self.billed(kind):
            u = r["usage"]
            total["input_tokens"] += u["input_tokens"]
            total["cached_tokens"] += u["input_tokens_details"]["cached_tokens"]
            total["output_tokens"] += u["output_tokens"]
            total["reasoning_tokens"] += u["output_tokens_details"]["reasoning_tokens"]
            total["total_tokens"] += u["total_tokens"]
        return total

    def reset(self) -> None:
        """Forget requests and cached prompts; restart the script."""
        with self._cond:
            self._requests.clear()
            self._main_index = 0
        self.cache.clear()


# --------------------------------------------------------------------------- CLI


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python tests/fakes/fake_responses.py",
        description="Scripted fake of OpenAI's Responses API (never calls a real model).",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 = pick a free port (default)")
    parser.add_argument("--script", choices=("chat", "runaway"), default="chat")
    parser.add_argument("--delay", type=float, default=0.0, help="seconds per reply")
    parser.add_argument("--reasoning-tokens", type=int, default=0)
    parser.add_argument("--no-cache", action="store_true", help="never report cached input tokens")
    parser.add_argument("--log", type=Path, help="append one JSON line per finished request (usage, status)")
    args = parser.parse_args(argv)
    make = runaway_script if args.script == "runaway" else chat_script
    server = FakeResponses(
        make(delay_s=args.delay, reasoning_tokens=args.reasoning_tokens),
        host=args.host,
        port=args.port,
        caching=not args.no_cache,
    )
    logged = 0

    def tick() -> None:  # write finished requests to --log, in order
        nonlocal logged
        if args.log is None:
            return
        done = server.requests
        with args.log.open("a") as out:
            while logged < len(done) and done[logged]["status"] != "pending":
                r = done[logged]
                out.write(
                    json.dumps({k: r[k] for k in ("id", "kind", "status", "billed", "usage", "user_agent")}) + "\n"
                )
                logged += 1

    serve_until_terminated(server, tick)
    tick()  # the requests finished since the last tick
    return 0


if __name__ == "__main__":
    sys.exit(main())
