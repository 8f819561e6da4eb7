"""Parsers for the files aider writes: the analytics log, the LLM history, the chat history.

Pure: bytes in, events out. Formats measured on aider 0.86.2 (see tests/fixtures and shared/fixtures).
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

from capguard.core import sanitize
from capguard.core.events import Event, Malformed, MapMeasured, Reply, RequestStarted, json_object

MAP_HEADER = "Here are summaries of some files present in my git repository."
_PIECE = re.compile(r" ?[A-Za-z]+| ?\d{1,3}| ?[^\sA-Za-z\d]+|\s+")


def estimate_tokens(text: str) -> int:
    """A GPT-style pre-tokenizer count: within a few % of tiktoken on aider's repo maps, slightly above."""
    return len(_PIECE.findall(text))


class AnalyticsParser:
    """`--analytics-log` JSON lines: `message_send` after each main-model reply, `message_send_starting` before.

    A reply's key is its line's content (`by_content`, for live runs: the file may be truncated, rotated or
    replaced under us, so offsets repeat), or `<file>@<offset>` (imports: a file read whole, keys kept stable).
    aider's line carries its time and the session's running `total_cost`, so two replies' lines differ; the
    n-th identical line fed to one parser (a cost-0 reply in the same second) gets `#n`.
    """

    def __init__(self, run_id: str, path: str, *, by_content: bool = False):
        self._key_prefix = f"aider:{run_id}:" if by_content else f"aider:{run_id}:{path}@"
        self._path = path
        self._by_content = by_content
        self._ranks: dict[str, int] = {}

    def feed(self, line: bytes, offset: int) -> list[Event]:
        if not line.strip():
            return []
        try:
            entry = json_object(line)
            name = entry.get("event")
            if name == "message_send_starting":
                return [RequestStarted(at=entry.get("time"))]
            if name != "message_send":
                return []
            return [self._reply(entry, self._key(line, offset), offset)]
        except (ValueError, TypeError, AttributeError) as err:
            return [Malformed(self._path, offset, str(err)[:120])]

    def _key(self, line: bytes, offset: int) -> str:
        if not self._by_content:
            return f"{self._key_prefix}{offset}"
        digest = hashlib.blake2b(line.strip(), digest_size=12).hexdigest()
        rank = self._ranks[digest] = self._ranks.get(digest, 0) + 1
        return f"{self._key_prefix}{digest}#{rank}"

    def _reply(self, entry: dict, key: str, offset: int) -> Reply:
        props = entry.get("properties")
        if not isinstance(props, dict):
            raise ValueError("message_send without properties")
        cost = props.get("cost")
        cost_micro = 0 if cost is None else sanitize.usd_micro(cost, "cost")
        tokens = {name: sanitize.count(props.get(name, 0), name) for name in ("prompt_tokens", "completion_tokens")}
        return Reply(
            key=key,
            model=sanitize.name(props.get("main_model")),
            input_tokens=tokens["prompt_tokens"],
            output_tokens=tokens["completion_tokens"],
            reported_cost_micro=cost_micro or None,
            at=entry.get("time"),
            source=self._path,
            offset=offset,
            suspicious=sanitize.at_bound(tokens) or sanitize.usd_at_bound(cost_micro),
        )


class LlmHistoryMapParser:
    """Measures each repo map aider sends, from the `USER Here are summaries ...` block of `--llm-history-file`."""

    def __init__(self) -> None:
        self._lines: list[str] | None = None

    def feed(self, line: bytes, offset: int) -> list[Event]:
        text = line.decode("utf-8", errors="replace")
        if self._lines is None:
            if text == "USER " + MAP_HEADER:
                self._lines = [MAP_HEADER]
            return []
        if text == "-------" or text.startswith(("TO LLM ", "LLM RESPONSE ")):
            block, self._lines = "\n".join(self._lines), None
            return [MapMeasured(estimate_tokens(block))]
        self._lines.append(text[5:] if text.startswith("USER ") else text)
        return []


_TOKENS_LINE = re.compile(r"Tokens: (?P<body>.*?)\.(?: Cost: (?P<cost>.*))?$")
_COST = re.compile(r"\$(?P<message>[\d.,]+) message, \$(?P<session>[\d.,]+) session")


@dataclass(frozen=True)
class CostLine:
    """One `Tokens: ... Cost: ...` report of the chat history (rounded by aider)."""

    sent: int
    received: int
    cache_write: int = 0
    cache_hit: int = 0
    message_usd: float | None = None
    session_usd: float | None = None


def _rounded(count: str) -> int:
    """`12k`, `1,234`, `0.5k` as aider rounded them; a number past capguard's bound counts as the bound."""
    count = count.strip()
    scale = 1000 if count.endswith("k") else 1
    try:
        value = float(count.removesuffix("k")) * scale
    except ValueError:
        raise sanitize.NotANumber(f"{count!r} is not a number") from None
    return sanitize.count(value, "tokens")


def _usd(text: str) -> float:
    try:
        return float(text.replace(",", ""))
    except ValueError:
        raise sanitize.NotANumber(f"${text} is not a number") from None


def parse_cost_lines(text: str) -> list[CostLine]:
    """Every usage report in a chat history; the cost may sit on the next line, without `> `."""
    return cost_lines(text)[0]


def cost_lines(text: str) -> tuple[list[CostLine], int]:
    """(every usage report in a chat history, how many report lines were skipped as unreadable)."""
    found: list[CostLine] = []
    skipped = 0
    lines = text.splitlines()
    for i, raw in enumerate(lines):
        match = _TOKENS_LINE.search(raw.removeprefix("> ").rstrip())
        if not match:
            continue
        cost = match.group("cost")
        if cost is None and i + 1 < len(lines) and lines[i + 1].removeprefix("> ").startswith("Cost: "):
            cost = lines[i + 1].removeprefix("> ").rstrip()[len("Cost: ") :]
        try:
            found.append(_cost_line(match.group("body"), cost))
        except ValueError:  # `1.2.3k sent`: a corrupt report, skipped and counted
            skipped += 1
    return found, skipped


def _cost_line(body: str, cost: str | None) -> CostLine:
    parts = dict(part for part in (_part(p) for p in body.split(", ")) if part)
    money = _COST.search(cost or "")
    return CostLine(
        sent=parts.get("sent", 0),
        received=parts.get("received", 0),
        cache_write=parts.get("cache write", 0),
        cache_hit=parts.get("cache hit", 0),
        message_usd=_usd(money.group("message")) if money else None,
        session_usd=_usd(money.group("session")) if money else None,
    )


def _part(piece: str) -> tuple[str, int] | None:
    match = re.fullmatch(r"([\d.,]+k?) (sent|received|cache write|cache hit)", piece.strip())
    return (match.group(2), _rounded(match.group(1).replace(",", ""))) if match else None
