"""Parser for the rollout files Codex CLI writes (`$CODEX_HOME/sessions/YYYY/MM/DD/rollout-*.jsonl`).

Pure: bytes in, events out. Format measured on Codex 0.169.1 (tests/fixtures/codex, /work/shared/reference/codex.md).
One `token_usage_record` line per model response, written as soon as the response completes, with that response's
usage and id; the model comes from the latest `turn_context` line. The `token_count` event repeats the same usage
(after the tool finishes), so it is counted only in files that never carry a `token_usage_record` (versions before
it existed). Keys are `codex:<response id>`, the same live and in import, so a reply counts once whichever file or
process reads it (a resumed thread appends to its old file; a fork starts a new file without its parent's records).
"""

from __future__ import annotations

import hashlib
import json
import re
from datetime import datetime

from capguard.core import sanitize
from capguard.core.events import Event, Malformed, Reply, ToolOutcome, json_object

# Only lines naming one of these are decoded (most of a rollout is conversation): Codex writes compact JSON, so a
# line of one of these types holds its type's name as written here
_WANTED = (b"token_usage_record", b"turn_context", b"session_meta")
_LEGACY = (*_WANTED, b"token_count")
_TOOLS = b'"function_call'  # a tool call and its output (`function_call_output`), for the stuck-loop cap
_EXIT = re.compile(r"Process exited with code (-?\d+)")
_MAX_PENDING_CALLS = 256
_MAX_SIGNATURE = 1000
USAGE_FIGURES = ("input_tokens", "cached_input_tokens", "cache_write_input_tokens", "output_tokens")


def parse_timestamp(value: object) -> float | None:
    """Codex's `2026-12-06T21:35:36.189Z` as unix seconds; None if absent or unreadable."""
    if not isinstance(value, str) or not value.endswith("Z"):
        return None
    try:
        return datetime.fromisoformat(value[:-1] + "+00:00").timestamp()
    except ValueError:
        return None


def reply_of(
    usage: object, *, key: str, model: str | None, at: float | None, source: str, offset: int, scope: str | None
) -> Reply:
    """One response's usage block as a Reply. OpenAI's meaning: `input_tokens` includes the cached (and any
    cache-write) input, `output_tokens` includes the reasoning; capguard's Reply keeps cache reads apart."""
    if not isinstance(usage, dict):
        raise ValueError("usage is not an object")
    figures = {name: _count(usage.get(name), name) for name in USAGE_FIGURES}
    cached = min(figures["cached_input_tokens"], figures["input_tokens"])
    written = min(figures["cache_write_input_tokens"], figures["input_tokens"] - cached)
    details = {}
    reasoning = _count(usage.get("reasoning_output_tokens"), "reasoning_output_tokens")
    if reasoning:
        details["reasoning_output_tokens"] = min(reasoning, figures["output_tokens"])
    return Reply(
        key=key,
        model=model,
        input_tokens=figures["input_tokens"] - cached - written,
        output_tokens=figures["output_tokens"],
        cache_read_tokens=cached,
        cache_write_tokens=written,
        at=at,
        source=source,
        offset=offset,
        details=details,
        scope=scope,
        suspicious=sanitize.at_bound(figures) if max(figures.values()) >= sanitize.MAX_TOKENS else None,
    )


# Codex's built-in providers whose model ids are priced under another provider than OpenAI: Amazon Bedrock's
# (`openai.gpt-6-sol`), as genai-prices lists them under `aws` (litellm's prefix `bedrock/`)
PRICED_UNDER = {"amazon-bedrock": "bedrock", "amazon-bedrock-runtime": "bedrock"}


def priced_name(model: str | None, provider: str | None) -> str | None:
    """`model` as capguard prices it when Codex's `provider` serves it (`bedrock/openai.gpt-6-sol`)."""
    prefix = PRICED_UNDER.get(provider or "")
    if not model or prefix is None or model.lower().startswith(f"{prefix}/"):
        return model
    return f"{prefix}/{model}"


class RolloutParser:
    """One rollout file. `model` is the model known before the first line read (a file followed from its end)."""

    def __init__(self, source: str, *, model: str | None = None, tools: bool = False):
        """`tools`: also follow tool calls and their exit codes (ToolOutcome), as the live meter does."""
        self.source = source
        self.model = model
        self.provider: str | None = None  # session_meta's model_provider
        self.tools = tools
        self._calls: dict[str, str] = {}  # call_id -> signature, until its output comes
        self.thread_id: str | None = None
        self.started_utc: str | None = None  # session_meta's timestamp
        self.records = False  # a token_usage_record was seen: token_count lines repeat them from then on
        self._legacy_totals: set[int] = set()

    def feed(self, line: bytes, offset: int) -> list[Event]:
        line = line.strip()
        if not line:
            return []
        if not any(word in line for word in (_WANTED if self.records else _LEGACY)) and not (
            self.tools and _TOOLS in line
        ):
            if line[:1] == b"{" and line[-1:] == b"}":
                return []  # conversation, tool output, events: no usage, not decoded
            return [Malformed(self.source, offset, "not a JSON object")]
        try:
            entry = json_object(line)
            kind, payload = entry.get("type"), entry.get("payload")
            if not isinstance(payload, dict):
                return []
            if kind == "turn_context":
                self.model = sanitize.name(payload.get("model")) or self.model
            elif kind == "session_meta":
                self.meta(payload)
            elif kind == "token_usage_record":
                return [self._record(entry, payload, offset)]
            elif kind == "event_msg" and payload.get("type") == "token_count" and not self.records:
                return self._legacy(entry, payload, offset)
            elif kind == "response_item" and self.tools:
                return self._tool(payload)
            return []
        except (ValueError, TypeError, AttributeError, RecursionError, ArithmeticError) as err:
            return [Malformed(self.source, offset, f"{type(err).__name__}: {err}"[:160])]

    def _tool(self, payload: dict) -> list[Event]:
        """A shell call failing the same way again and again is a stuck loop: its exit code says whether it failed."""
        kind, call_id = payload.get("type"), payload.get("call_id")
        if not isinstance(call_id, str):
            return []
        if kind == "function_call":
            if len(self._calls) < _MAX_PENDING_CALLS:
                self._calls[call_id] = tool_signature(payload.get("name"), payload.get("arguments"))
            return []
        signature = self._calls.pop(call_id, None) if kind == "function_call_output" else None
        output = payload.get("output")
        if signature is None or not isinstance(output, str):
            return []
        code = _EXIT.search(output[:400])
        return [ToolOutcome(signature, failed=code is not None and code.group(1) != "0")]

    def meta(self, payload: dict) -> None:
        """The thread's id and start from its session_meta payload (the first one read wins)."""
        thread = sanitize.name(payload.get("id"))
        if self.thread_id is None and thread:
            self.thread_id = thread
        if self.started_utc is None and isinstance(payload.get("timestamp"), str):
            self.started_utc = payload["timestamp"]
        if self.provider is None and isinstance(payload.get("model_provider"), str):
            self.provider = payload["model_provider"]

    def _record(self, entry: dict, payload: dict, offset: int) -> Reply:
        self.records = True
        thread = sanitize.name(payload.get("thread_id")) or self.thread_id
        response = sanitize.name(payload.get("response_id"))
        # a response id is unique to one billed response; without one, the line's place in its thread stands in
        key = f"codex:{response}" if response else f"codex:{thread}#{_count(entry.get('ordinal'), 'ordinal')}"
        return reply_of(
            payload.get("usage"),
            key=key,
            model=priced_name(self.model, self.provider),
            at=parse_timestamp(entry.get("timestamp")),
            source=self.source,
            offset=offset,
            scope=thread,
        )

    def _legacy(self, entry: dict, payload: dict, offset: int) -> list[Event]:
        """Before token_usage_record existed: `last_token_usage` of each token_count whose running total moved
        (Codex repeats the same token_count; the running total tells a repeat from a new response)."""
        info = payload.get("info")
        if not isinstance(info, dict) or not isinstance(info.get("last_token_usage"), dict):
            return []
        total = info.get("total_token_usage")
        running = _count(total.get("total_tokens"), "total_tokens") if isinstance(total, dict) else None
        if running is not None:
            if running in self._legacy_totals:
                return []
            self._legacy_totals.add(running)
        key = f"codex:{self.thread_id}:total:{running}" if running is not None else f"codex:{self.source}@{offset}"
        return [
            reply_of(
                info["last_token_usage"],
                key=key,
                model=priced_name(self.model, self.provider),
                at=parse_timestamp(entry.get("timestamp")),
                source=self.source,
                offset=offset,
                scope=self.thread_id,
            )
        ]


def tool_signature(name: object, arguments: object) -> str:
    """Tool name + its arguments as canonical JSON: the same call repeated gives the same signature."""
    try:
        canonical = json.dumps(json.loads(arguments), sort_keys=True) if isinstance(arguments, str) else ""
    except (ValueError, RecursionError):
        canonical = str(arguments)
    if len(canonical) > _MAX_SIGNATURE:
        digest = hashlib.sha256(canonical.encode("utf-8", "surrogatepass")).hexdigest()[:16]
        canonical = f"{canonical[:200]}… sha256:{digest}"
    return f"{sanitize.name(name) or '?'} {canonical}"


def _count(value: object, name: str) -> int:
    return 0 if value is None else sanitize.count(value, name)
