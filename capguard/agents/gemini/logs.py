"""Parser for the session file Gemini CLI writes: `~/.gemini/tmp/<project>/chats/session-<time>-<id8>.jsonl`.

Pure: bytes in, events out. Format measured on Gemini CLI 0.61.0 (/work/shared/reference/gemini.md §4, samples in
tests/fixtures/gemini/). The file is JSON lines: a header (`sessionId`, `startTime`, `kind`), `{"$set": {...}}`
mutations (the session context, `lastUpdated`), and messages. A `type: "gemini"` message carries one reply's usage
in `tokens {input, output, cached, thoughts, tool, total}`, where `input` is the API's promptTokenCount and includes
`cached`. A reply that calls a tool is written twice with the same `id` (again once its tool has run, with
`toolCalls`): a reply is its `id`, counted once (key `gemini:<id>`, the same in live metering and in import).
No cost is written: capguard prices the reply (thoughts are billed as output, as Google bills them).
"""

from __future__ import annotations

import hashlib
import json
from datetime import datetime
from typing import Any

from capguard.core import sanitize
from capguard.core.events import Event, Malformed, Reply, ToolOutcome, json_object

FIGURES = ("input", "output", "cached", "thoughts", "tool")
_MAX_TOOL_IDS = 10_000  # tool calls remembered per file (a hostile file must not grow memory without bound)
_MAX_SIGNATURE_JSON = 2_000


def key_of(message_id: str) -> str:
    """The dedupe key of one reply: its message id is a UUID, unique across sessions (a resumed session's copy of
    an old reply keeps the id, so it is never counted twice)."""
    return f"gemini:{message_id}"


def parse_timestamp(value: object) -> float | None:
    """`2026-12-06T21:33:39.334Z` as unix seconds; None if absent, unreadable or without a zone."""
    if not isinstance(value, str) or not value:
        return None
    try:
        stamp = datetime.fromisoformat(value[:-1] + "+00:00" if value.endswith("Z") else value)
    except ValueError:
        return None
    return stamp.timestamp() if stamp.tzinfo is not None else None


def token_figures(tokens: object) -> list[int]:
    """A `tokens` object as [input (cached included), output, cached, thoughts, tool], sanitized; ValueError for
    anything but an object of counts."""
    if not isinstance(tokens, dict):
        raise ValueError("tokens is not an object")
    figures = [sanitize.count(tokens.get(name, 0), f"tokens.{name}") for name in FIGURES]
    figures[2] = min(figures[2], figures[0])  # cached is part of input: never more than it
    return figures


def tool_signature(name: object, args: object) -> str:
    """Tool name + canonical JSON of its arguments: the same call repeated gives the same signature."""
    canonical = json.dumps(args, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)
    if len(canonical) > _MAX_SIGNATURE_JSON:
        digest = hashlib.sha256(canonical.encode("utf-8", "surrogatepass")).hexdigest()[:16]
        canonical = f"{canonical[:200]}… sha256:{digest}"
    return f"{sanitize.name(name) or '?'} {canonical}"


class SessionParser:
    """One session file. `session_id`: the session this run writes (a file whose header names another is not
    counted); None counts any session (a resumed one, found by its file). `not_before` (unix seconds): replies
    stamped earlier are history (a resumed session's earlier replies) and are skipped. `subagent`: a subagent's
    file (`chats/<session>/<id>.jsonl`), whose replies are not steps of the main agent."""

    def __init__(
        self,
        *,
        session_id: str | None = None,
        not_before: float | None = None,
        source: str | None = None,
        fallback_model: str | None = None,
        subagent: bool = False,
    ):
        self.session_id = session_id
        self.subagent = subagent
        self.not_before = not_before
        self.source = source or f"gemini:{session_id}"
        self.fallback_model = fallback_model
        self.file_session: str | None = None  # the header's sessionId
        self.foreign = False  # the header names another session than the one expected
        self._figures: dict[str, list[int]] = {}  # reply id -> largest figures counted, then corrections made
        self._tools_done: set[str] = set()

    def feed(self, line: bytes, offset: int) -> list[Event]:
        if not line.strip():
            return []
        try:
            entry = json_object(line)
            if "sessionId" in entry and "type" not in entry and "$set" not in entry:
                return self._header(entry)
            if self.foreign:
                return []
            if "$set" in entry:
                return self._set(entry.get("$set"), offset)
            return self._message(entry, offset)
        except (ValueError, TypeError, AttributeError, KeyError, RecursionError, ArithmeticError) as err:
            return [Malformed(self.source, offset, f"{type(err).__name__}: {err}"[:160])]

    def _header(self, entry: dict) -> list[Event]:
        found = sanitize.name(entry.get("sessionId"))
        self.file_session = found
        self.foreign = self.session_id is not None and found != self.session_id
        return []

    def _set(self, changes: object, offset: int) -> list[Event]:
        """A mutation of the session; one that (re)writes the messages may hold replies: counted once by id."""
        if not isinstance(changes, dict):
            raise ValueError("$set is not an object")
        messages = changes.get("messages")
        if not isinstance(messages, list):
            return []
        events: list[Event] = []
        for message in messages:
            if isinstance(message, dict):
                events += self._message(message, offset)
        return events

    def _message(self, entry: dict, offset: int) -> list[Event]:
        if entry.get("type") != "gemini":
            return []
        message_id = entry.get("id")
        if not isinstance(message_id, str) or not message_id:
            raise ValueError("gemini message without an id")
        at = parse_timestamp(entry.get("timestamp"))
        if self.not_before is not None and at is not None and at < self.not_before:
            return []  # written before this run: history of a resumed session
        events: list[Event] = []
        tokens = entry.get("tokens")
        if tokens is not None:
            reply = self._reply(sanitize.name(message_id) or "", token_figures(tokens), entry, at, offset)
            if reply is not None:
                events.append(reply)
        calls = entry.get("toolCalls")
        if isinstance(calls, list):
            events += self._tools(calls)
        return events

    def _reply(self, message_id: str, figures: list[int], entry: dict, at: float | None, offset: int) -> Reply | None:
        """Max-wins per id: the first write counts the reply; a later write with larger figures (none seen in
        0.61.0, where the second write repeats the first) counts only the increase, under `<key>+<n>`."""
        key = key_of(message_id)
        old = self._figures.get(key)
        if old is None:
            self._figures[key] = [*figures, 0]
            delta, reply_key = figures, key
        else:
            delta = [max(0, new - before) for new, before in zip(figures, old)]
            if not any(delta):
                return None
            for i, value in enumerate(figures):
                old[i] = max(old[i], value)
            old[-1] += 1
            reply_key = f"{key}+{old[-1]}"
        prompt, output, cached, thoughts, tool = delta
        cached = min(cached, prompt)
        details: dict[str, Any] = {}
        if thoughts:
            details["thoughts_tokens"] = thoughts  # billed as output, and counted in output_tokens
        if tool:
            details["tool_use_prompt_tokens"] = tool
        return Reply(
            key=reply_key,
            model=sanitize.name(entry.get("model")) or self.fallback_model,
            input_tokens=prompt - cached + tool,
            output_tokens=output + thoughts,
            cache_read_tokens=cached,
            at=at,
            source=self.source,
            offset=offset,
            details=details,
            step=reply_key == key and not self.subagent,
            scope=self.file_session or self.session_id,
            suspicious=sanitize.at_bound(dict(zip(FIGURES, figures))) if max(figures) >= sanitize.MAX_TOKENS else None,
        )

    def _tools(self, calls: list) -> list[Event]:
        """Each finished tool call once (the reply's second write carries them with their status)."""
        events: list[Event] = []
        for call in calls:
            if not isinstance(call, dict):
                continue
            call_id, status = call.get("id"), call.get("status")
            if not isinstance(call_id, str) or status not in ("success", "error"):
                continue
            if call_id in self._tools_done or len(self._tools_done) >= _MAX_TOOL_IDS:
                continue
            self._tools_done.add(call_id)
            events.append(ToolOutcome(tool_signature(call.get("name"), call.get("args")), status == "error"))
        return events
