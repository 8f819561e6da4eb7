"""A scripted, OpenAI-compatible model server for demos, tests and benchmarks.

Stdlib only. It answers ``POST /v1/chat/completions`` (streaming and not) from a
:class:`Script` of canned :class:`Reply` objects, with the token usage you choose,
so a test can make every reply of a real agent (aider) cost a known amount without
calling a real model API.

Aider's weak-model requests (git commit messages, chat-history summaries) are
recognised from their prompts and answered with a short canned reply that does
NOT consume the main script, so ``server.count("main")`` counts main replies
exactly.

    with FakeOpenAI(runaway_script(prompt_tokens=50_000, completion_tokens=2_000)) as srv:
        run_aider("--openai-api-base", srv.base_url, ...)
        assert srv.count("main") == 4

Command line (foreground, prints the base URL on one line)::

    python -m capguard.demo.fake_openai --port 0 --script runaway|chat [--delay S]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass, field
from typing import Any

from capguard.demo._http import FakeHandler, FakeServer, serve_until_terminated

__all__ = [
    "DEFAULT_COMMIT_MESSAGE",
    "DEFAULT_SUMMARY",
    "RUNAWAY_MARKER",
    "FakeOpenAI",
    "Reply",
    "Script",
    "chat_script",
    "classify",
    "runaway_script",
]

MAIN = "main"
COMMIT = "commit"
SUMMARY = "summary"
KINDS = (MAIN, COMMIT, SUMMARY)

#: Text that the SEARCH section of :func:`runaway_script` edits contains; it never
#: occurs in a real file, so aider's edit always fails and aider reflects.
RUNAWAY_MARKER = "capguard-fake-openai: this line never matches"

DEFAULT_COMMIT_MESSAGE = "chore: canned commit message from capguard fake server"
DEFAULT_SUMMARY = "I asked you about the code. You replied with canned answers from a fake server."

# Prompts aider 0.86.2 sends on its weak-model paths (aider/prompts.py).
_COMMIT_MARKERS = ("one-line Git commit message",)
_SUMMARY_MARKERS = ("summarize this partial conversation",)

_MODELS = ("gpt-4o", "gpt-4o-mini", "fake-model")


@dataclass(frozen=True)
class Reply:
    """One canned answer and the usage the server reports for it."""

    text: str
    prompt_tokens: int = 1000
    completion_tokens: int = 100
    cached_tokens: int = 0
    delay_s: float = 0.0  # total time to deliver the reply (spread across chunks when streaming)

    def usage(self) -> dict:
        return {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.prompt_tokens + self.completion_tokens,
            "prompt_tokens_details": {"cached_tokens": self.cached_tokens, "audio_tokens": 0},
            "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0},
        }


@dataclass
class Script:
    """Main-model replies, in order, and what to do when they run out.

    ``repeat_last=True`` keeps answering with the last reply; ``repeat_last=False``
    cycles from the first one again. Weak-model requests get ``commit_reply`` /
    ``summary_reply`` and never advance the main script.
    """

    replies: list[Reply]
    repeat_last: bool = True
    commit_reply: Reply = field(
        default_factory=lambda: Reply(DEFAULT_COMMIT_MESSAGE, prompt_tokens=200, completion_tokens=12)
    )
    summary_reply: Reply = field(
        default_factory=lambda: Reply(DEFAULT_SUMMARY, prompt_tokens=300, completion_tokens=20)
    )

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


# --------------------------------------------------------------------------- scripts


def runaway_edit_text(filename: str = "hello.py") -> str:
    """A SEARCH/REPLACE edit whose SEARCH text never matches (so aider reflects and retries)."""
    return (
        f"I will update {filename}.\n\n"
        f"{filename}\n"
        "```python\n"
        "<<<<<<< SEARCH\n"
        f"# {RUNAWAY_MARKER}\n"
        "=======\n"
        "# capguard-fake-openai: replacement\n"
        ">>>>>>> REPLACE\n"
        "```\n"
    )


def runaway_script(
    *,
    filename: str = "hello.py",
    prompt_tokens: int = 50_000,
    completion_tokens: int = 2_000,
    cached_tokens: int = 0,
    delay_s: float = 0.0,
) -> Script:
    """Every main reply is a never-applying SEARCH/REPLACE edit of ``filename``.

    Aider answers a failed edit with a reflection (another main request), up to
    3 reflections per user message: 4 main replies per message. Use a file that
    exists in the repo (ideally one added to the chat); for a missing file aider
    first creates it empty. Defaults: gpt-4o at 50,000 / 2,000 tokens = $0.145 per
    reply as aider prices it with ``--no-stream``.
    """
    return Script(
        [
            Reply(
                runaway_edit_text(filename),
                prompt_tokens=prompt_tokens,
                completion_tokens=completion_tokens,
                cached_tokens=cached_tokens,
                delay_s=delay_s,
            )
        ],
        repeat_last=True,
    )


def chat_script(
    texts: list[str] | None = None,
    *,
    prompt_tokens: int = 1000,
    completion_tokens: int = 100,
    cached_tokens: int = 0,
    delay_s: float = 0.0,
    repeat_last: bool = False,
) -> Script:
    """Plain short text answers (no edits, so exactly one main reply per user message)."""
    texts = texts or [
        "Understood. No changes are needed.",
        "Sure. This is a canned answer from the capguard fake server.",
        "Done thinking. Nothing to change.",
    ]
    return Script(
        [
            Reply(
                t,
                prompt_tokens=prompt_tokens,
                completion_tokens=completion_tokens,
                cached_tokens=cached_tokens,
                delay_s=delay_s,
            )
            for t in texts
        ],
        repeat_last=repeat_last,
    )


# --------------------------------------------------------------------------- classification


def _message_text(message: Any) -> str:
    if not isinstance(message, dict):
        return ""
    content = message.get("content")
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # [{"type": "text", "text": ...}, ...]
        return "\n".join(
            part.get("text", "") for part in content if isinstance(part, dict) and isinstance(part.get("text"), str)
        )
    return ""


def classify(body: Any) -> str:
    """``"commit"``, ``"summary"`` or ``"main"`` for a chat-completions request body.

    Aider's weak-model requests are 2 messages: a system prompt asking for a
    "one-line Git commit message", or a system prompt "*Briefly* summarize this
    partial conversation ...". The model name is not used: aider falls back to the
    main model when the weak model fails to summarise.
    """
    messages = body.get("messages") if isinstance(body, dict) else None
    if not isinstance(messages, list) or not messages:
        return MAIN
    # The weak-model prompt is the first (system) message; main requests start with
    # aider's long coder prompt, which never contains these phrases.
    head = _message_text(messages[0])
    if any(m in head for m in _COMMIT_MARKERS):
        return COMMIT
    if any(m in head for m in _SUMMARY_MARKERS):
        return SUMMARY
    return MAIN


# --------------------------------------------------------------------------- HTTP


def _chunks(text: str, n: int) -> list[str]:
    """Split ``text`` into about ``n`` non-empty pieces (by characters; at least 1)."""
    if not text:
        return [""]
    n = max(1, min(n, len(text)))
    size = -(-len(text) // n)
    return [text[i : i + size] for i in range(0, len(text), size)]


class _Handler(FakeHandler):
    server_version = "capguard-fake-openai/1"

    # ---- helpers
    def _not_found(self) -> None:
        self._send_json(
            404,
            {
                "error": {
                    "message": f"Unknown path {self.command} {self.path}",
                    "type": "invalid_request_error",
                    "code": "not_found",
                }
            },
        )

    def _path(self) -> str:
        return self.path.split("?", 1)[0].rstrip("/")

    # ---- verbs
    def do_GET(self) -> None:
        if self._path() == "/v1/models":
            now = int(time.time())
            self._send_json(
                200,
                {
                    "object": "list",
                    "data": [
                        {"id": m, "object": "model", "created": now, "owned_by": "capguard-fake"} for m in _MODELS
                    ],
                },
            )
        else:
            self._not_found()

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length > 0 else b""
        if self._path() != "/v1/chat/completions":
            self._not_found()
            return
        try:
            body = json.loads(raw or b"{}")
            if not isinstance(body, dict):
                raise ValueError("body is not an object")
        except ValueError as err:
            self._send_json(400, {"error": {"message": f"invalid JSON body: {err}", "type": "invalid_request_error"}})
            return
        owner = self.server.owner
        record, reply = owner._record(body)
        owner._begin()
        try:
            if record["stream"]:
                self._stream(body, record, reply)
            else:
                self._complete(body, record, reply)
        except (BrokenPipeError, ConnectionError, OSError):
            self.close_connection = True  # client went away (e.g. aider interrupted)
        finally:
            owner._end()

    def _complete(self, body: dict, record: dict, reply: Reply) -> None:
        if reply.delay_s > 0 and self.server.owner._stopping.wait(reply.delay_s):
            self.close_connection = True
            return
        self._send_json(
            200,
            {
                "id": record["id"],
                "object": "chat.completion",
                "created": int(record["time"]),
                "model": record["model"] or "gpt-4o",
                "system_fingerprint": "fp_capguard_fake",
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": reply.text, "refusal": None},
                        "logprobs": None,
                        "finish_reason": "stop",
                    }
                ],
                "usage": reply.usage(),
            },
        )
        record["billed"] = True  # the whole answer went out: a real API bills this request

    def _write_chunk(self, data: bytes) -> None:
        self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
        self.wfile.flush()

    def _event(self, obj: Any) -> None:
        payload = obj if isinstance(obj, str) else json.dumps(obj)
        self._write_chunk(f"data: {payload}\n\n".encode())

    def _stream(self, body: dict, record: dict, reply: Reply) -> None:
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
            "model": record["model"] or "gpt-4o",
            "system_fingerprint": "fp_capguard_fake",
        }

        def chunk(delta: dict, finish: str | None = None) -> dict:
            return {**base, "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]}

        self._event(chunk({"role": "assistant", "content": ""}))
        pieces = _chunks(reply.text, 10 if reply.delay_s > 0 else 4)
        pause = reply.delay_s / len(pieces) if reply.delay_s > 0 else 0.0
        for piece in pieces:
            if pause and stopping.wait(pause):
                self.close_connection = True
                return
            self._event(chunk({"content": piece}))
        self._event(chunk({}, "stop"))
        opts = body.get("stream_options")
        if isinstance(opts, dict) and opts.get("include_usage"):
            self._event({**base, "choices": [], "usage": reply.usage()})
        self._event("[DONE]")
        self._write_chunk(b"")  # end of chunked body
        record["billed"] = True


class FakeOpenAI(FakeServer):
    """A scripted OpenAI-compatible server on ``host:port`` (port 0 = ephemeral)."""

    handler = _Handler
    kinds = KINDS

    def __init__(self, script: Script, *, host: str = "127.0.0.1", port: int = 0) -> None:
        super().__init__(host=host, port=port)
        self.script = script
        self._main_index = 0

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}/v1"

    # ---- recording
    def _record(self, body: dict) -> tuple[dict, Reply]:
        kind = classify(body)
        with self._cond:
            if kind == MAIN:
                index: int | None = self._main_index
                reply = self.script.main_reply(self._main_index)
                self._main_index += 1
            else:
                index = None
                reply = self.script.commit_reply if kind == COMMIT else self.script.summary_reply
            record = {
                "n": len(self._requests),
                "id": f"chatcmpl-capguard-{len(self._requests) + 1}",
                "time": time.time(),
                "model": body.get("model"),
                "stream": bool(body.get("stream")),
                "kind": kind,
                "main_index": index,
                "usage": reply.usage(),
                "delay_s": reply.delay_s,
                "body": body,
            }
            self._requests.append(record)
            self._cond.notify_all()
        return record, reply

    def billed(self, kind: str = MAIN) -> list[dict]:
        """The requests of `kind` whose answer was sent in full (what a real API would bill)."""
        return [r for r in self.requests if r["kind"] == kind and r.get("billed")]

    @property
    def requests(self) -> list[dict]:
        """A snapshot (copy) of the recorded chat-completions requests, in arrival order."""
        with self._lock:
            return list(self._requests)

    def reset(self) -> None:
        """Forget recorded requests and restart the main script from its first reply."""
        with self._cond:
            self._requests.clear()
            self._main_index = 0


# --------------------------------------------------------------------------- CLI


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m capguard.demo.fake_openai",
        description="Scripted OpenAI-compatible model server (never calls a real model).",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 = pick a free port (default)")
    parser.add_argument("--script", choices=("runaway", "chat"), default="chat")
    parser.add_argument("--delay", type=float, default=0.0, help="seconds per main reply")
    parser.add_argument("--prompt-tokens", type=int, default=None)
    parser.add_argument("--completion-tokens", type=int, default=None)
    parser.add_argument("--cached-tokens", type=int, default=0)
    parser.add_argument("--filename", default="hello.py", help="file the runaway edits target")
    args = parser.parse_args(argv)

    usage: dict[str, Any] = {"cached_tokens": args.cached_tokens, "delay_s": args.delay}
    if args.prompt_tokens is not None:
        usage["prompt_tokens"] = args.prompt_tokens
    if args.completion_tokens is not None:
        usage["completion_tokens"] = args.completion_tokens
    script = runaway_script(filename=args.filename, **usage) if args.script == "runaway" else chat_script(**usage)

    serve_until_terminated(FakeOpenAI(script, host=args.host, port=args.port))
    return 0


if __name__ == "__main__":
    sys.exit(main())
