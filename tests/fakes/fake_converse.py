"""A fake Amazon Bedrock Converse API (`POST /model/<id>/converse`, `/model/<id>/converse-stream`) for aider through
litellm, billing as fake_chat bills (a token per 4 bytes of the prompt and of the reply, output within
inferenceConfig.maxTokens; Bedrock's default when none is given: the model's maximum, here DEFAULT_MAX_TOKENS).

Shapes as Bedrock's: a reply's `output.message.content` blocks, `stopReason`, `usage` (inputTokens, outputTokens,
totalTokens); a stream as AWS's event stream (messageStart, contentBlockDelta, contentBlockStop, messageStop, then
metadata with the usage); the request id in `x-amzn-RequestId`. Auth: a Bedrock API key as a bearer token, or a
Signature Version 4 by `keys` (checked by tests/fakes/sigv4.py); anything else is refused 403, billed nothing.
The scripted replies and the log are fake_chat's (records carry its usage shape)."""

from __future__ import annotations

import json
import re
from typing import Any
from urllib.parse import unquote

from tests.fakes import eventstream, sigv4
from tests.fakes.fake_chat import FakeChat, Script, _Handler, _pieces, _plan, prompt_text, tokens

_PATH = re.compile(r"^/model/([^/]+)/(converse|converse-stream|count-tokens)$")
DEFAULT_MAX_TOKENS = 8192


def chat_body(body: dict, model: str, stream: bool) -> dict:
    """The Converse request as fake_chat bills one: the system prompt, each message's text blocks and the JSON of its
    other blocks (tool calls and results), and the tools."""
    messages: list[dict[str, Any]] = []
    system = [block.get("text", "") for block in body.get("system") or [] if isinstance(block, dict)]
    if system:
        messages.append({"role": "system", "content": "\n".join(system)})
    for message in body.get("messages") or []:
        blocks = message.get("content") if isinstance(message, dict) else None
        parts = [
            b["text"] if isinstance(b.get("text"), str) else json.dumps(b, separators=(",", ":"))
            for b in blocks or []
            if isinstance(b, dict) and "cachePoint" not in b
        ]
        messages.append({"role": message.get("role"), "content": "\n".join(parts)})
    config = body.get("inferenceConfig") or {}
    tools = (body.get("toolConfig") or {}).get("tools")
    return {
        **({"tools": tools} if tools else {}),
        "model": model,
        "messages": messages,
        "stream": stream,
        "max_tokens": config.get("maxTokens") or DEFAULT_MAX_TOKENS,
        "stream_options": {"include_usage": True},
    }


def converse_usage(usage: dict) -> dict:
    return {
        "inputTokens": usage["prompt_tokens"],
        "outputTokens": usage["completion_tokens"],
        "totalTokens": usage["prompt_tokens"] + usage["completion_tokens"],
    }


class _ConverseHandler(_Handler):
    server_version = "capguard-fake-converse/1"

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length > 0 else b""
        owner: FakeConverse = self.server.owner  # type: ignore[assignment]
        found = _PATH.match(self.path.split("?", 1)[0])
        if found is None:
            self._send_json(404, {"message": f"Unknown path {self.path}"})
            return
        why = owner.refusal(self.command, self.path, dict(self.headers.items()), raw)
        if why is not None:
            with owner._cond:
                owner.refused.append(why)
            self._send_json(403, {"message": why})
            return
        if found.group(2) == "count-tokens":
            self._count(raw, unquote(found.group(1)))
            return
        try:
            body = json.loads(raw or b"{}")
            if not isinstance(body, dict) or not isinstance(body.get("messages"), list) or "model" in body:
                raise ValueError("messages is required and model is not permitted in the body")
        except ValueError as err:
            self._send_json(400, {"message": f"ValidationException: {err}"})
            return
        model, stream = unquote(found.group(1)), found.group(2) == "converse-stream"
        record, reply, meter = owner._record(chat_body(body, model, stream))
        with owner._cond:
            record["converse"] = body
        plan = _plan(reply, record["max_tokens"])
        owner._begin()
        try:
            if stream:
                self._converse_stream(record, reply, plan, meter)
            else:
                self._converse(record, reply, plan, meter)
        except (BrokenPipeError, ConnectionError, OSError):
            self.close_connection = True
        finally:
            owner._finish(record, meter)
            owner._end()

    def _count(self, raw: bytes, model: str) -> None:
        """Bedrock's CountTokens for a Converse request (`{"input": {"converse": {...}}}`): the prompt's tokens as
        the call would bill them."""
        owner: FakeConverse = self.server.owner  # type: ignore[assignment]
        try:
            inner = json.loads(raw)["input"]["converse"]
            if not isinstance(inner.get("messages"), list) or set(inner) - {
                "messages",
                "system",
                "toolConfig",
                "additionalModelRequestFields",
            }:
                raise ValueError("unknown field")
        except (ValueError, KeyError, TypeError, AttributeError):
            self._send_json(400, {"message": "ValidationException: input.converse is malformed"})
            return
        counted = tokens(prompt_text(chat_body(inner, model, False)))
        with owner._cond:
            owner.counts.append(counted)
        self._send_json(200, {"inputTokens": counted})

    def _stop(self, finish: str) -> str:
        return {"length": "max_tokens", "tool_calls": "tool_use"}.get(finish, "end_turn")

    def _converse(self, record: dict, reply: Any, plan: Any, meter: Any) -> None:
        if reply.delay_s > 0 and self.server.owner._stopping.wait(reply.delay_s):
            self.close_connection = True
            return
        meter.visible = len(plan.text.encode()) + sum(len((n + a).encode()) for n, a in plan.calls)
        self.server.owner._finish(record, meter, usage_sent=True)
        content: list[dict[str, Any]] = [{"text": plan.text}] if plan.text else []
        for i, (name, args) in enumerate(plan.calls):
            try:
                content.append({"toolUse": {"toolUseId": f"tooluse_{record['id']}_{i}", "name": name,
                                            "input": json.loads(args)}})  # fmt: skip
            except ValueError:  # cut mid-arguments by the output limit
                pass
        body = json.dumps(
            {
                "output": {"message": {"role": "assistant", "content": content}},
                "stopReason": self._stop(plan.finish),
                "usage": converse_usage(meter.usage()),
                "metrics": {"latencyMs": 12},
            }
        ).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("x-amzn-RequestId", self.server.owner.same_request_id or record["id"])
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _aws_event(self, kind: str, payload: dict) -> None:
        headers = {":message-type": "event", ":event-type": kind, ":content-type": "application/json"}
        self._chunk(eventstream.message(headers, json.dumps({**payload, "p": "abcdef"}).encode()))

    def _converse_stream(self, record: dict, reply: Any, plan: Any, meter: Any) -> None:
        stopping = self.server.owner._stopping
        self.send_response(200)
        self.send_header("Content-Type", "application/vnd.amazon.eventstream")
        self.send_header("x-amzn-RequestId", self.server.owner.same_request_id or record["id"])
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        self._aws_event("messageStart", {"role": "assistant"})
        pieces = _pieces(plan.text, 4)
        pause = reply.delay_s / max(1, len(pieces))
        for piece in pieces:
            if pause and stopping.wait(pause):
                self.close_connection = True
                return
            self._aws_event("contentBlockDelta", {"contentBlockIndex": 0, "delta": {"text": piece}})
            meter.visible += len(piece.encode())
        self._aws_event("contentBlockStop", {"contentBlockIndex": 0})
        for i, (name, args) in enumerate(plan.calls, start=1):
            start = {"toolUse": {"toolUseId": f"tooluse_{record['id']}_{i}", "name": name}}
            self._aws_event("contentBlockStart", {"contentBlockIndex": i, "start": start})
            meter.visible += len(name.encode())
            for piece in _pieces(args, 3):
                self._aws_event("contentBlockDelta", {"contentBlockIndex": i, "delta": {"toolUse": {"input": piece}}})
                meter.visible += len(piece.encode())
            self._aws_event("contentBlockStop", {"contentBlockIndex": i})
        self.server.owner._finish(record, meter, usage_sent=True)  # billed before the client sees the end
        self._aws_event("messageStop", {"stopReason": self._stop(plan.finish)})
        self._aws_event("metadata", {"usage": converse_usage(meter.usage()), "metrics": {"latencyMs": 12}})
        self._chunk(b"")


class FakeConverse(FakeChat):
    """Bedrock's Converse API on ``host:port``, billing as FakeChat does; `keys`: the SigV4 it accepts (else a
    bearer `api_key`)."""

    handler = _ConverseHandler

    def __init__(
        self,
        script: Script,
        *,
        keys: sigv4.Keys | None = None,
        api_key: str | None = None,
        same_request_id: str | None = None,
        host: str = "127.0.0.1",
    ) -> None:
        super().__init__(script, host=host)
        self.keys, self.api_key = keys, api_key
        self.same_request_id = same_request_id  # a hostile server: every reply under one request id
        self.refused: list[str] = []  # why each request was refused 403
        self.counts: list[int] = []  # each CountTokens answer

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def refusal(self, method: str, target: str, headers: dict[str, str], raw: bytes) -> str | None:
        if self.keys is not None:
            return sigv4.check(self.keys, method, target, headers, raw)
        if self.api_key is not None and headers.get("Authorization") != f"Bearer {self.api_key}":
            return "Authorization header requires a Bedrock API key"
        return None
