"""What parsers extract from an agent's files: plain data, no I/O.

A parser turns lines into these events; the meter and the policy consume them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from capguard.core.usage import Tokens


@dataclass(frozen=True)
class Reply:
    """One completed model reply and what it used.

    `input_tokens` excludes cache reads and writes. `reported_cost_micro` is the agent's own
    price for the reply (None when the agent reported none or zero).
    """

    key: str
    model: str | None
    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0
    reported_cost_micro: int | None = None
    at: float | None = None
    source: str | None = None
    offset: int | None = None
    details: dict[str, Any] = field(default_factory=dict, compare=False)
    cache_write_1h_tokens: int = 0  # the part of cache_write_tokens written to the 1-hour cache
    web_search_requests: int = 0
    step: bool = True  # a reply of the main agent (counts toward the steps cap); False for subagents
    scope: str | None = None  # the session whose agent-reported total (ReportedTotal) covers this reply
    suspicious: str | None = None  # why a figure is not believed (it reached a bound of capguard.core.sanitize)

    @property
    def tokens(self) -> int:
        return Tokens.of(self).total


@dataclass(frozen=True)
class RequestStarted:
    """The agent started a model request (the next step is under way)."""

    at: float | None = None


@dataclass(frozen=True)
class MapMeasured:
    """The size of a repo map the agent sent to the model, in estimated tokens."""

    tokens: int


@dataclass(frozen=True)
class ReportedTotal:
    """The agent's own running total for one scope (a session), e.g. Claude Code's cost-state line.

    `baseline_micro` is what that total already held before this run (resumed or forked sessions).
    """

    scope: str
    cost_micro: int
    source: str
    baseline_micro: int = 0
    suspicious: str | None = None  # why the total is not believed (it reached capguard.core.sanitize's bound)


@dataclass(frozen=True)
class ToolOutcome:
    """A tool call finished; the same failing call repeated is a stuck loop."""

    signature: str
    failed: bool


@dataclass(frozen=True)
class SessionSeen:
    """The agent is writing (to) a session: its files must be followed from now on."""

    session_id: str


@dataclass(frozen=True)
class Malformed:
    """A line that could not be parsed: skipped, counted, reported."""

    source: str
    offset: int
    why: str


Event = Reply | RequestStarted | MapMeasured | ReportedTotal | ToolOutcome | SessionSeen | Malformed


def json_object(line: bytes) -> dict[str, Any]:
    """One JSON-lines entry that must be an object; ValueError otherwise (the caller makes it Malformed)."""
    try:
        entry = json.loads(line)
    except RecursionError:  # nested thousands deep: a hostile line, not a reason to stop metering
        raise ValueError("JSON nested too deep") from None
    if not isinstance(entry, dict):
        raise ValueError("not a JSON object")
    return entry
