"""A scripted fake of the Gemini API (generateContent, streamGenerateContent?alt=sse, countTokens) that bills like
the real one, for running the real Gemini CLI on 127.0.0.1 without calling a model.

Usage follows the request (tests/fakes/gemini_billing.py): input = ceil(bytes of the prompt's text / 4), cached =
the prefix shared with an earlier prompt to the same model (at least 1,024 tokens), output = ceil(bytes of what the
reply sends / 4), never above generationConfig.maxOutputTokens. Every stream chunk carries usageMetadata with the
output so far, as the real API's do; the last one is complete. Each request is logged with what it billed.

The CLI's side calls are answered from their JSON schema and never advance the script: the `auto` model's router
(complexity_score), the loop check it makes from the 30th turn of a prompt, and the next-speaker check.

    with FakeGemini(runaway_script()) as srv:
        env["GOOGLE_GEMINI_BASE_URL"] = srv.base_url     # the CLI appends /v1beta/models/<model>:<method>
        ...
        assert sum(r["usage"]["input"] for r in srv.billed("main")) == ...

Command line: ``python tests/fakes/fake_gemini.py --script chat|runaway|shell [--delay S]`` prints the base URL.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make `capguard` and `tests` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from capguard.demo._http import FakeHandler, FakeServer, serve_until_terminated
from tests.fakes import gemini_billing as billing
from tests.fakes.gemini_billing import Usage

__all__ = [
    "KINDS",
    "LOOP_CHECK",
    "MAIN",
    "NEXT_SPEAKER",
    "ROUTER",
    "UTILITY",
    "FakeGemini",
    "Reply",
    "Script",
    "chat_script",
    "classify",
    "runaway_script",
    "shell_script",
]

MAIN = "main"  # a turn of the conversation: streamGenerateContent, consumes the script
ROUTER = "router"  # model `auto`: "how complex is this?" (role utility_router)
LOOP_CHECK = "loop_check"  # "is the conversation stuck?", from the 30th turn of one prompt
NEXT_SPEAKER = "next_speaker"  # "who speaks next?" after a text-only reply
UTILITY = "utility"  # any other side call (e.g. chat compression)
KINDS = (MAIN, ROUTER, LOOP_CHECK, NEXT_SPEAKER, UTILITY)

_PATH = re.compile(r"^/(v1beta|v1|v1alpha)/models/([^/:]+):([A-Za-z]+)$")
_CODE_ASSIST_PATH = re.compile(r"^/v1[a-z0-9]*:([A-Za-z]+)$")  # Google's Code Assist server: /v1internal:<method>
# Vertex AI's countTokens request (CountTokensRequest): the prompt's fields, no generateContentRequest inside
_VERTEX_COUNT_FIELDS = {"contents", "systemInstruction", "tools", "generationConfig", "instances", "model"}
# Vertex AI's: /v1beta1/projects/P/locations/L/publishers/google/models/M:method, or without the project and
# location (express mode, an API key)
_VERTEX_PATH = re.compile(
    r"^/v1(?:beta1)?/(?:projects/[^/]+/locations/([^/]+)/)?publishers/google/models/([^/:]+):([A-Za-z]+)$"
)


@dataclass(frozen=True)
class Reply:
    """One scripted answer: text and/or function calls, optional thinking, and how it is delivered.

    `calls` are (name, args) pairs sent as functionCall parts. `thinking` is billed as thoughtsTokenCount and sent
    as a thought part only when the request asks for thoughts. `cut_after` > 0 drops the connection after that
    many chunks of a stream (nothing more is sent; the request is logged as not billed).
    """

    text: str = ""
    calls: tuple[tuple[str, dict], ...] = ()
    thinking: str = ""
    delay_s: float = 0.0  # total time to deliver, spread over the chunks
    cut_after: int = 0


@dataclass
class Script:
    """Main replies in order; after the last, repeat it (`repeat_last`) or cycle. A reply may be a callable
    (main index -> Reply) so a runaway can vary its tool call and not trip the CLI's identical-call detector."""

    replies: list[Any]
    repeat_last: bool = True
    router_score: int = 10  # 1..100; under the CLI's threshold picks the flash model
    loop_confidence: float = 0.0  # < 0.9: the CLI's loop check says "not stuck" and the run goes on
    utility_text: str = "Canned summary from the capguard fake Gemini server."

    def __post_init__(self) -> None:
        if not self.replies:
            raise ValueError("Script needs at least one reply")
        self.replies = list(self.replies)

    def main_reply(self, index: int) -> Reply:
        n = len(self.replies)
        item = self.replies[index] if index < n else self.replies[-1] if self.repeat_last else self.replies[index % n]
        return item(index) if callable(item) else item


def chat_script(texts: list[str] | None = None, *, delay_s: float = 0.0, thinking: str = "") -> Script:
    """Plain text answers, one per main request, cycling."""
    texts = texts or ["Hello from the fake Gemini server.", "A second canned answer.", "Nothing to change."]
    return Script([Reply(t, delay_s=delay_s, thinking=thinking) for t in texts], repeat_last=False)


def shell_script(command: str, final_text: str = "All done.", *, delay_s: float = 0.0) -> Script:
    """One run_shell_command call, then a text answer (the reply that calls the tool is written twice)."""
    return Script(
        [
            Reply(calls=(("run_shell_command", {"command": command}),), delay_s=delay_s),
            Reply(final_text, delay_s=delay_s),
        ],
        repeat_last=True,
    )


def runaway_script(*, delay_s: float = 0.0, text: str = "") -> Script:
    """Every reply calls the shell tool again (`echo capguard-loop N`, N varying), so the CLI never stops."""

    def reply(i: int) -> Reply:
        return Reply(text, calls=(("run_shell_command", {"command": f"echo capguard-loop {i}"}),), delay_s=delay_s)

    return Script([reply], repeat_last=True)


# --------------------------------------------------------------------------- classification


def _schema(body: dict) -> dict:
    config = body.get("generationConfig")
    if not isinstance(config, dict):
        return {}
    schema = config.get("responseJsonSchema") or config.get("responseSchema")
    return schema if isinstance(schema, dict) else {}


def classify(method: str, body: dict) -> str:
    """Which kind of call this is, from the JSON schema a side call asks for (their prompts change more often)."""
    props = _schema(body).get("properties")
    keys = set(props) if isinstance(props, dict) else set()
    if "complexity_score" in keys or "model_choice" in keys:
        return ROUTER
    if "unproductive_state_confidence" in keys:
        return LOOP_CHECK
    if "next_speaker" in keys:
        return NEXT_SPEAKER
    if method == "streamGenerateContent" and not keys:
        return MAIN
    return UTILITY


def _side_answer(kind: str, script: Script) -> str:
    if kind == ROUTER:  # both router schemas of 0.61.0, so whichever strategy runs finds its fields
        return json.dumps(
            {
                "complexity_reasoning": "Canned by the fake.",
                "complexity_score": script.router_score,
                "reasoning": "Canned by the fake.",
                "model_choice": "flash",
            }
        )
    if kind == LOOP_CHECK:
        return json.dumps(
            {
                "unproductive_state_analysis": "Canned by the fake.",
                "unproductive_state_confidence": script.loop_confidence,
            }
        )
    if kind == NEXT_SPEAKER:
        return json.dumps({"reasoning": "Canned by the fake.", "next_speaker": "user"})
    return script.utility_text


# --------------------------------------------------------------------------- what a reply sends and bills


@dataclass
class Planned:
    """A reply fitted to the request's limits: the parts to send and the usage they bill."""

    text: str
    calls: tuple[tuple[str, dict], ...]
    thinking: str
    usage: Usage
    finish: str = "STOP"
    reply: Reply = field(default_factory=Reply)


def plan(reply: Reply, body: dict, prompt: int, cached: int) -> Planned:
    """Bill `reply` against `body`: thinking first, then calls and text, all within maxOutputTokens."""
    limit = billing.max_output_tokens(body)
    thinking, text, calls, finish = reply.thinking, reply.text, reply.calls, "STOP"
    call_tokens = sum(billing.tokens(billing.compact({"name": n, "args": a})) for n, a in calls)
    if limit is not None:
        if billing.tokens(thinking) > limit:
            thinking, finish = billing.truncate_to_tokens(thinking, limit), "MAX_TOKENS"
        room = limit - billing.tokens(thinking)
        if call_tokens > room:  # a half function call is useless: the real API stops before it
            calls, call_tokens, finish = (), 0, "MAX_TOKENS"
        room -= call_tokens
        if billing.tokens(text) > room:
            text, finish = billing.truncate_to_tokens(text, room), "MAX_TOKENS"
    usage = Usage(
        prompt=prompt, cached=cached, candidates=billing.tokens(text) + call_tokens, thoughts=billing.tokens(thinking)
    )
    return Planned(text, calls, thinking, usage, finish, reply)


def _pieces(text: str, n: int) -> list[str]:
    if not text:
        return []
    n = max(1, min(n, len(text)))
    size = -(-len(text) // n)
    return [text[i : i + size] for i in range(0, len(text), size)]


def _wants_thoughts(body: dict) -> bool:
    config = body.get("generationConfig")
    thinking = config.get("thinkingConfig") if isinstance(config, dict) else None
    return isinstance(thinking, dict) and bool(thinking.get("includeThoughts"))


# --------------------------------------------------------------------------- HTTP


class _Handler(FakeHandler):
    server_version = "capguard-fake-gemini/1"
    json_type = "application/json; charset=UTF-8"

    def _error(self, status: int, code: str, message: str) -> None:
        self._send_json(status, {"error": {"code": status, "message": message, "status": code}})

    def do_GET(self) -> None:
        if self.path.split("?", 1)[0].rstrip("/") in ("/v1beta/models", "/v1/models"):
            self._send_json(200, {"models": [{"name": f"models/{m}"} for m in self.server.owner.seen_models()]})
        else:
            self._error(404, "NOT_FOUND", f"Unknown path {self.path}")

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length > 0 else b""
        path, _, query = self.path.partition("?")
        assist = _CODE_ASSIST_PATH.match(path)
        if assist:
            self._code_assist(assist[1], raw, query)
            return
        match, location = _PATH.match(path), None
        vertex = _VERTEX_PATH.match(path)
        if vertex:  # Vertex AI: an API key (express mode, no location in the path) or a project's token
            location = vertex[1] or "global"
            match = _PATH.match(f"/v1beta/models/{vertex[2]}:{vertex[3]}")
        if not match or match[3] not in ("generateContent", "streamGenerateContent", "countTokens"):
            self._error(404, "NOT_FOUND", f"Unknown path {self.command} {self.path}")
            return
        if not (self.headers.get("x-goog-api-key") or "key=" in query or self.headers.get("Authorization")):
            self._error(403, "PERMISSION_DENIED", "Method doesn't allow unregistered callers.")
            return
        body = self._object(raw)
        if body is None:
            return
        model, method = match[2], match[3]
        owner: FakeGemini = self.server.owner
        if method == "countTokens":  # free on the real API, so never billed here
            if location is not None and set(body) - _VERTEX_COUNT_FIELDS:  # Vertex's takes the prompt's fields only
                self._error(400, "INVALID_ARGUMENT", f"Invalid JSON payload received. Unknown name {sorted(body)}")
                return
            inner = body.get("generateContentRequest", body)
            owner = self.server.owner
            with owner._cond:
                owner.counts.append({"model": model, "vertex_location": location, "fields": sorted(body)})
            self._send_json(200, {"totalTokens": billing.tokens(billing.prompt_text(inner))})
            return
        record, planned = owner._record(model, method, body)
        with owner._cond:  # how the key came (a proxy moves a ?key= to the header)
            record.update(query=query, key_header=bool(self.headers.get("x-goog-api-key")), vertex_location=location)
        self._serve(record, planned, method, query)

    def _object(self, raw: bytes) -> dict | None:
        """The request's JSON object, or None once a 400 is sent."""
        try:
            body = json.loads(raw or b"{}")
            if not isinstance(body, dict):
                raise ValueError("body is not an object")
        except ValueError as err:
            self._error(400, "INVALID_ARGUMENT", f"Invalid JSON payload received. {err}")
            return None
        return body

    def _serve(self, record: dict, planned: Planned, method: str, query: str) -> None:
        owner: FakeGemini = self.server.owner
        owner._begin()
        try:
            if method == "streamGenerateContent":
                self._stream(record, planned, sse="alt=sse" in query)
            else:
                self._complete(record, planned)
        except (BrokenPipeError, ConnectionError, OSError):
            self.close_connection = True  # the CLI went away (killed or aborted)
        finally:
            owner._end()

    def _code_assist(self, method: str, raw: bytes, query: str) -> None:
        """Google's Code Assist server (Gemini CLI's Login with Google): a model call's Gemini request inside
        `{model, project, user_prompt_id, request}`, its reply (each SSE event) inside `{response, traceId}`, with
        no responseId of its own; the account's other methods answer as a free tier's would."""
        owner: FakeGemini = self.server.owner
        if not (self.headers.get("Authorization") or "").startswith("Bearer "):
            self._error(401, "UNAUTHENTICATED", "Request is missing required authentication credential.")
            return
        body = self._object(raw)
        if body is None:
            return
        with owner._cond:
            owner.code_assist_calls.append(method)
        if method == "loadCodeAssist":
            self._send_json(200, {"currentTier": {"id": "free-tier", "name": "Gemini Code Assist for individuals"},
                                  "cloudaicompanionProject": "fake-project-123"})  # fmt: skip
            return
        if method == "countTokens":
            inner = body.get("request") if isinstance(body.get("request"), dict) else {}
            self._send_json(200, {"totalTokens": billing.tokens(billing.prompt_text(inner))})
            return
        if method not in ("generateContent", "streamGenerateContent"):
            self._send_json(200, {})  # quotas, experiments, metrics, settings: nothing a run needs
            return
        model, inner = body.get("model"), body.get("request")
        if not isinstance(model, str) or not isinstance(inner, dict):
            self._error(400, "INVALID_ARGUMENT", "model and request are required")
            return
        record, planned = owner._record(model, method, inner)
        with owner._cond:
            record.update(
                query=query, code_assist=True, project=body.get("project"),
                authorization=self.headers.get("Authorization"),
            )  # fmt: skip
        self._serve(record, planned, method, query)

    def _response(self, record: dict, parts: list, usage: Usage, *, final: bool, finish: str) -> dict:
        candidate: dict[str, Any] = {"content": {"role": "model", "parts": parts}, "index": 0}
        if final:
            candidate["finishReason"] = finish
        reply = {
            "candidates": [candidate],
            "usageMetadata": usage.metadata(final=final),
            "modelVersion": record["model"],
        }
        if record.get("code_assist"):
            return {"response": reply, "traceId": record["id"]}
        return {**reply, "responseId": record["id"]}

    def _parts(self, planned: Planned, body: dict) -> list:
        parts: list = (
            [{"text": planned.thinking, "thought": True}] if planned.thinking and _wants_thoughts(body) else []
        )
        if planned.text:
            parts.append({"text": planned.text})
        parts.extend({"functionCall": {"name": n, "args": a}} for n, a in planned.calls)
        return parts

    def _complete(self, record: dict, planned: Planned) -> None:
        if planned.reply.delay_s > 0 and self.server.owner._stopping.wait(planned.reply.delay_s):
            self.close_connection = True
            return
        parts = self._parts(planned, record["body"]) or [{"text": ""}]
        self._send_json(200, self._response(record, parts, planned.usage, final=True, finish=planned.finish))
        self.server.owner._billed(record)

    def _stream(self, record: dict, planned: Planned, *, sse: bool) -> None:
        """Text in a few chunks, each with the usage so far; thought and call parts in the last one."""
        stopping, reply = self.server.owner._stopping, planned.reply
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream" if sse else "application/json; charset=UTF-8")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        texts = _pieces(planned.text, 10 if reply.delay_s > 0 else 3)
        chunks: list[dict] = []
        sent = ""
        for piece in texts[:-1]:
            sent += piece
            partial = Usage(prompt=planned.usage.prompt, cached=planned.usage.cached, candidates=billing.tokens(sent))
            chunks.append(self._response(record, [{"text": piece}], partial, final=False, finish=""))
        last: list = [{"text": texts[-1]}] if texts else []
        head = [p for p in self._parts(planned, record["body"]) if p.get("thought")]
        calls = [p for p in self._parts(planned, record["body"]) if "functionCall" in p]
        chunks.append(
            self._response(
                record, head + last + calls or [{"text": ""}], planned.usage, final=True, finish=planned.finish
            )
        )
        pause = reply.delay_s / len(chunks) if reply.delay_s > 0 else 0.0
        if not sse:  # without alt=sse the API streams one JSON array
            self._write(b"[")
        for i, chunk in enumerate(chunks):
            if reply.cut_after and i >= reply.cut_after:
                self.close_connection = True  # drop the connection mid-reply: no final chunk
                self.connection.shutdown(2)
                return
            if pause and i and stopping.wait(pause):  # the first chunk at once: a slow reply has begun
                self.close_connection = True
                return
            data = json.dumps(chunk)
            self._write(f"data: {data}\r\n\r\n".encode() if sse else (("," if i else "") + data).encode())
        if not sse:
            self._write(b"]")
        self._write(b"")
        self.server.owner._billed(record)

    def _write(self, data: bytes) -> None:
        self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
        self.wfile.flush()


class FakeGemini(FakeServer):
    """A scripted Gemini API on ``host:port`` (port 0 = ephemeral); `base_url` is what GOOGLE_GEMINI_BASE_URL takes."""

    handler = _Handler
    kinds = KINDS

    def __init__(
        self,
        script: Script,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        cache_min_tokens: int = billing.DEFAULT_CACHE_MIN_TOKENS,
    ) -> None:
        super().__init__(host=host, port=port)
        self.script = script
        self.cache_min_tokens = cache_min_tokens
        self._main_index = 0
        self._prompts: dict[str, list[bytes]] = {}  # model -> earlier prompts, for implicit caching
        self.code_assist_calls: list[str] = []  # each Code Assist method called, in order
        self.counts: list[dict] = []  # each countTokens asked: its model, Vertex's location, the body's fields

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def seen_models(self) -> list[str]:
        with self._lock:
            return sorted({r["model"] for r in self._requests})

    def _record(self, model: str, method: str, body: dict) -> tuple[dict, Planned]:
        kind = classify(method, body)
        prompt_bytes = billing.prompt_text(body).encode()
        with self._cond:
            earlier = self._prompts.setdefault(model, [])
            cached = billing.cached_tokens(prompt_bytes, earlier, self.cache_min_tokens)
            earlier.append(prompt_bytes)
            index = None
            if kind == MAIN:
                index = self._main_index
                self._main_index += 1
                reply = self.script.main_reply(index)
            else:
                reply = Reply(_side_answer(kind, self.script))
            planned = plan(reply, body, -(-len(prompt_bytes) // billing.BYTES_PER_TOKEN), cached)
            record = {
                "id": uuid.uuid4().hex[:22],
                "time": time.time(),
                "model": model,
                "method": method,
                "kind": kind,
                "main_index": index,
                "usage": planned.usage.as_dict(),
                "usage_metadata": planned.usage.metadata(),
                "finish_reason": planned.finish,
                "billed": False,
                "body": body,
            }
            self._requests.append(record)
            self._cond.notify_all()
        return record, planned

    def _billed(self, record: dict) -> None:
        with self._cond:
            record["billed"] = True  # the whole answer went out: a real API bills this request
            self._cond.notify_all()

    @property
    def requests(self) -> list[dict]:
        """A snapshot of the logged requests, in arrival order."""
        with self._lock:
            return [dict(r) for r in self._requests]

    def billed(self, kind: str | None = None) -> list[dict]:
        """The requests (of `kind`) whose answer was sent in full: what a real API would bill."""
        return [r for r in self.requests if r["billed"] and (kind is None or r["kind"] == kind)]

    def totals(self, kind: str | None = None) -> dict:
        """Billed usage summed over requests (of `kind`), as {input, output, cached, thoughts, tool, total}."""
        out = dict.fromkeys(("input", "output", "cached", "thoughts", "tool", "total"), 0)
        for record in self.billed(kind):
            for key in out:
                out[key] += record["usage"][key]
        return out


# --------------------------------------------------------------------------- CLI


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python tests/fakes/fake_gemini.py", description="Scripted fake Gemini API (never calls a real model)."
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 = pick a free port (default)")
    parser.add_argument("--script", choices=("chat", "runaway", "shell"), default="chat")
    parser.add_argument("--command", default="echo hi-from-shell", help="what the shell script runs")
    parser.add_argument("--delay", type=float, default=0.0, help="seconds per main reply")
    parser.add_argument("--log", help="append one JSON line per billed request here (without the body)")
    args = parser.parse_args(argv)
    scripts = {
        "chat": lambda: chat_script(delay_s=args.delay),
        "runaway": lambda: runaway_script(delay_s=args.delay),
        "shell": lambda: shell_script(args.command, delay_s=args.delay),
    }
    server = FakeGemini(scripts[args.script](), host=args.host, port=args.port)
    logged: set[str] = set()

    def flush_log() -> None:
        if not args.log:
            return
        with open(args.log, "a") as fh:
            for record in server.billed():
                if record["id"] not in logged:
                    logged.add(record["id"])
                    fh.write(json.dumps({k: v for k, v in record.items() if k != "body"}) + "\n")

    serve_until_terminated(server, tick=flush_log)
    flush_log()
    return 0


if __name__ == "__main__":
    sys.exit(main())
