"""Parsers for the files Claude Code writes: session transcripts, statusLine input, the session registry.

Pure: bytes in, events out (`last_reported_total` alone reads a file). Formats measured on Claude Code
2.1.330 (facts in /work/shared/reference/claude-code.md §4-§8, samples in tests/fixtures/claude/shared).

A transcript holds one line per content block of each API reply, all carrying the same usage; this
parser emits one `Reply` per reply (key `claude:<requestId>`, the id of the API call, which Claude's
telemetry events carry too; `claude:msg:<message.id>` when a gateway leaves the request id out) and, should a later line of
the same reply show larger figures (older versions wrote partial `output_tokens` on earlier blocks), a
correction `Reply` keyed `<key>+<n>` with just the increase: the meter counts each key once.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from datetime import datetime
from pathlib import Path

from capguard.agents.claude.decode import FIGURES, UsageLine, from_entry
from capguard.core import sanitize
from capguard.core.events import Event, Malformed, Reply, ReportedTotal, SessionSeen, ToolOutcome, json_object

_MAX_PARKED = 256  # tool results waiting for a tool_use line written after them
_MAX_SIGNATURE_JSON = 1000
_TAIL_BLOCK = 1 << 20
_SESSION_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,199}")


def max_wins(seen: dict[str, list[int]], key: str, figures: list[int]) -> tuple[str, list[int]] | None:
    """One line's usage for reply `key`, max-wins: (key, figures) for the reply's first line, (`key+n`, the
    increase) for a later line with larger figures, None for one that adds nothing. `seen` keeps each key's
    largest figures and its corrections so far. The live meter and the importer both count with it, so a reply
    gets the same keys either way (an import adds nothing to a run metered live)."""
    old = seen.get(key)
    if old is None:
        seen[key] = [*figures, 0]
        return key, figures
    delta = [max(0, new - before) for new, before in zip(figures, old)]
    delta[4] = min(delta[4], delta[3])  # the 1-hour part of the cache writes never exceeds their increase
    if not any(delta):
        return None
    for i, value in enumerate(figures):
        old[i] = max(old[i], value)
    old[-1] += 1
    return f"{key}+{old[-1]}", delta


class TranscriptParser:
    """One transcript file: `<session>.jsonl`, or `<session>/subagents/agent-*.jsonl` with `subagent=True`.

    `session_id` is the session whose totals cover this file (for a subagent file, the parent's). `seen`: the
    max-wins state of the run's other transcripts (see `max_wins`), shared.
    Lines copied from elsewhere are skipped: a fork's copies of its parent's replies
    (`requestSessionId` differs from `sessionId`), and, when `started_at` (unix seconds) is given,
    any line stamped more than `skew_s` before it. `baseline_micro` is what the session's own total
    (`cost-state`) already held before this run: `last_reported_total` of the file being resumed,
    or of the parent's file for a fork.
    """

    def __init__(
        self,
        *,
        session_id: str,
        subagent: bool = False,
        started_at: float | None = None,
        skew_s: float = 5.0,
        baseline_micro: int = 0,
        source: str | None = None,
        seen: dict[str, list[int]] | None = None,
    ):
        self.session_id = session_id
        self.subagent = subagent
        self.not_before = None if started_at is None else started_at - skew_s
        self.baseline_micro = baseline_micro
        self.source = source or f"claude:{session_id}" + (":subagent" if subagent else "")
        # reply key -> largest usage seen, then corrections made; shared by the parsers of one run's transcripts, so
        # that a request whose lines are in two files (a resumed session's copy) counts its largest line once
        self._usage: dict[str, list[int]] = {} if seen is None else seen
        self._tools: dict[str, str] = {}  # tool_use id -> signature, until its result arrives
        self._parked: dict[str, bool] = {}  # tool_use id -> failed, for results seen before their tool_use

    def feed(self, line: bytes, offset: int) -> list[Event]:
        if not line.strip():
            return []
        try:
            entry = json_object(line)
            kind = entry.get("type")
            if kind == "cost-state":
                return self._cost_state(entry)
            if kind not in ("assistant", "user") or self._copied(entry):
                return []
            if kind == "assistant":
                return self._assistant(entry, offset)
            return self._user(entry)
        except (ValueError, TypeError, AttributeError, KeyError, RecursionError, ArithmeticError) as err:
            return [Malformed(self.source, offset, f"{type(err).__name__}: {err}"[:160])]

    # -- line kinds -----------------------------------------------------------------------------

    def _copied(self, entry: dict) -> bool:
        copied_from = entry.get("requestSessionId")
        if copied_from is not None and copied_from != entry.get("sessionId"):
            return True  # a fork's copy of its parent's history
        if self.not_before is not None:
            at = parse_timestamp(entry.get("timestamp"))
            if at is not None and at < self.not_before:
                return True  # written before this run: history of a resumed session
        return False

    def _cost_state(self, entry: dict) -> list[Event]:
        total = _money(entry.get("totalCostUSD"), "totalCostUSD")
        scope = sanitize.name(entry.get("sessionId")) or self.session_id
        return [
            ReportedTotal(
                scope=scope,
                cost_micro=total,
                source="cost-state",
                baseline_micro=self.baseline_micro,
                suspicious=_total_at_bound(total, "totalCostUSD"),
            )
        ]

    def _assistant(self, entry: dict, offset: int) -> list[Event]:
        used = from_entry(entry)  # the decoder the importer uses too: the same key, model and counts
        if used is None:
            return []
        events: list[Event] = []
        reply = self._counted(used, bool(entry.get("isAbortedMidStream")), offset)
        if reply is not None:
            events.append(reply)
        for block in _blocks(entry["message"].get("content")):
            if block.get("type") == "tool_use" and isinstance(block.get("id"), str):
                events.extend(self._tool_used(block))
        return events

    def _counted(self, used: UsageLine, aborted: bool, offset: int) -> Reply | None:
        """Max-wins per key: the first line emits the reply, a later larger one emits the increase."""
        figures, key = used.figures, used.key
        counted = max_wins(self._usage, key, figures)
        if counted is None:
            return None
        reply_key, delta = counted
        details = dict(used.details or {})
        if aborted:  # usage from message_start: output is an under-count
            details["aborted_mid_stream"] = True
        return Reply(
            key=reply_key,
            model=used.model,
            input_tokens=delta[0],
            output_tokens=delta[1],
            cache_read_tokens=delta[2],
            cache_write_tokens=delta[3],
            cache_write_1h_tokens=delta[4],
            web_search_requests=delta[5],
            at=parse_timestamp(used.timestamp),
            source=self.source,
            offset=offset,
            details=details,
            step=reply_key == key and not self.subagent,
            scope=self.session_id,
            suspicious=sanitize.at_bound(dict(zip(FIGURES, figures))) if max(figures) >= sanitize.MAX_TOKENS else None,
        )

    def _tool_used(self, block: dict) -> list[Event]:
        tool_id = block["id"]
        signature = tool_signature(block.get("name"), block.get("input"))
        if tool_id in self._parked:
            return [ToolOutcome(signature, self._parked.pop(tool_id))]
        self._tools[tool_id] = signature
        return []

    def _user(self, entry: dict) -> list[Event]:
        message = entry.get("message")
        if not isinstance(message, dict):
            return []
        events: list[Event] = []
        for block in _blocks(message.get("content")):
            tool_id = block.get("tool_use_id")
            if block.get("type") != "tool_result" or not isinstance(tool_id, str):
                continue
            failed = bool(block.get("is_error"))
            signature = self._tools.pop(tool_id, None)
            if signature is not None:
                events.append(ToolOutcome(signature, failed))
            elif len(self._parked) < _MAX_PARKED:
                # the tool ran before its tool_use line was written: resolved when that line comes
                self._parked[tool_id] = failed
        return events


# -- helpers shared with the watcher ------------------------------------------------------------


def statusline_events(line: bytes, offset: int, source: str, *, baseline_micro: int = 0) -> list[Event]:
    """The JSON document Claude Code pipes to a statusLine command: its live session total."""
    if not line.strip():
        return []
    try:
        doc = json.loads(line)
        if not isinstance(doc, dict):
            raise ValueError("not a JSON object")
        session_id, cost = doc.get("session_id"), doc.get("cost")
        if not isinstance(session_id, str) or not session_id or not isinstance(cost, dict):
            return []
        if cost.get("total_cost_usd") is None:
            return []
        total = _money(cost.get("total_cost_usd"), "cost.total_cost_usd")
        return [
            ReportedTotal(
                scope=sanitize.name(session_id) or "",  # never empty: session_id is a non-empty str
                cost_micro=total,
                source="statusline",
                baseline_micro=baseline_micro,
                suspicious=_total_at_bound(total, "cost.total_cost_usd"),
            )
        ]
    except (ValueError, TypeError, RecursionError, ArithmeticError) as err:
        return [Malformed(source, offset, f"{type(err).__name__}: {err}"[:160])]


def session_from_registry(data: bytes) -> SessionSeen | None:
    """`~/.claude/sessions/<pid>.json` (whole file): the session the process writes now (`/clear` changes it)."""
    try:
        doc = json.loads(data)
    except (ValueError, RecursionError):
        return None
    session_id = doc.get("sessionId") if isinstance(doc, dict) else None
    # a file name part (capguard follows `<session>.jsonl`): never a path, never unbounded
    return SessionSeen(session_id) if isinstance(session_id, str) and _SESSION_ID.fullmatch(session_id) else None


def last_reported_total(path: str | os.PathLike) -> int:
    """The last `cost-state` total of a transcript, in micro-USD; 0 if none or no file.

    The baseline of a resumed session (and, from the parent's file, of a fork). Reads backwards from
    the end, ignoring a torn last line.
    """
    try:
        handle = open(path, "rb")  # noqa: SIM115 -- a missing file is 0; the with below closes it
    except OSError:
        return 0
    with handle:
        pos = handle.seek(0, os.SEEK_END)
        carry, torn = b"", True
        while pos > 0:
            size = min(_TAIL_BLOCK, pos)
            pos -= size
            handle.seek(pos)
            parts = (handle.read(size) + carry).split(b"\n")
            if torn:  # what follows the last newline: nothing, or a line still being written
                if len(parts) == 1:
                    carry = b""
                    continue
                parts.pop()
                torn = False
            carry = parts.pop(0) if pos > 0 else b""  # may start before this block
            for line in reversed(parts):
                total = _cost_state_total(line)
                if total is not None:
                    return total
    return 0


def _cost_state_total(line: bytes) -> int | None:
    if b"cost-state" not in line:
        return None
    try:
        entry = json.loads(line)
        if isinstance(entry, dict) and entry.get("type") == "cost-state":
            return _money(entry.get("totalCostUSD"), "totalCostUSD")
    except (ValueError, TypeError, RecursionError, ArithmeticError):
        pass
    return None


def encode_project_dir(path: str) -> str:
    """Claude Code's project folder name for a cwd: `[^a-zA-Z0-9]` -> `-` per UTF-16 code unit.

    Names longer than 200 characters are cut to 200, then `-` and the base-36 absolute value of the
    Java-style 32-bit hash of the original path are appended.
    """
    encoded = "".join(ch if ch.isascii() and ch.isalnum() else "--" if ord(ch) > 0xFFFF else "-" for ch in path)
    if len(encoded) <= 200:
        return encoded
    return f"{encoded[:200]}-{_base36(abs(java_hash(path)))}"


def transcript_dir(config_dir: str | os.PathLike, cwd: str | os.PathLike) -> Path:
    """`<config_dir>/projects/<encoded realpath of cwd>`: where the cwd's transcripts go."""
    return Path(config_dir) / "projects" / encode_project_dir(os.path.realpath(cwd))


def java_hash(text: str) -> int:
    """`h = (h << 5) - h + charCode | 0` over UTF-16 code units, as a signed 32-bit int."""
    units = text.encode("utf-16-le", "surrogatepass")
    h = 0
    for i in range(0, len(units), 2):
        h = (h * 31 + (units[i] | units[i + 1] << 8)) & 0xFFFFFFFF
    return h - (1 << 32) if h & 0x80000000 else h


def tool_signature(name: object, tool_input: object) -> str:
    """Tool name + canonical JSON of its input: the same call repeated gives the same signature."""
    canonical = json.dumps(tool_input, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)
    if len(canonical) > _MAX_SIGNATURE_JSON:  # e.g. a Write of a whole file: keep it short but exact
        digest = hashlib.sha256(canonical.encode("utf-8", "surrogatepass")).hexdigest()[:16]
        canonical = f"{canonical[:200]}… sha256:{digest}"
    return f"{sanitize.name(name) or '?'} {canonical}"


def parse_timestamp(value: object) -> float | None:
    """An ISO-8601 timestamp (`2026-11-23T06:05:51.253Z`) as unix seconds; None if absent or unreadable."""
    if not isinstance(value, str) or not value:
        return None
    try:
        stamp = datetime.fromisoformat(value[:-1] + "+00:00" if value.endswith("Z") else value)
    except ValueError:
        return None
    if stamp.tzinfo is None:
        return None  # Claude Code always writes UTC with Z; a naive time would be a guess
    return stamp.timestamp()


def _money(value: object, name: str) -> int:
    """An agent's running total for a session (not one reply's cost): bounded by MAX_TOTAL_USD_MICRO."""
    return sanitize.usd_micro(value, name, sanitize.MAX_TOTAL_USD_MICRO)


def _total_at_bound(micros: int, name: str) -> str | None:
    return sanitize.usd_at_bound(micros, name, sanitize.MAX_TOTAL_USD_MICRO)


def _blocks(content: object) -> list[dict]:
    return [block for block in content if isinstance(block, dict)] if isinstance(content, list) else []


def _base36(number: int) -> str:
    digits = "0123456789abcdefghijklmnopqrstuvwxyz"
    out = ""
    while True:
        number, rest = divmod(number, 36)
        out = digits[rest] + out
        if not number:
            return out
