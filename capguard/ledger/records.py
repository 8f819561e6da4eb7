"""Plain data the ledger stores (a run's start and end, one usage observation) and UTC timestamps.

Pure: no I/O. Timestamps are canonical ISO-8601 UTC text so that string order is time order in SQL.
"""

from __future__ import annotations

import datetime as _dt
from dataclasses import dataclass, field
from typing import Any

from capguard.core.usage import Tokens

PRICED_BY = ("agent", "genai-prices", "config")

# The largest count the ledger stores in a BIGINT column: 2^53 - 1, not 2^63 - 1, so that SUM() over a month of
# such rows still fits in a 64-bit integer (SQLite raises "integer overflow", PostgreSQL "bigint out of range")
# and every value stays exact for a JSON reader. INTEGER columns (steps) are 32-bit on PostgreSQL.
MAX_STORED = 2**53 - 1
MAX_STORED_INT32 = 2**31 - 1

_FORMAT = "%Y-%m-%dT%H:%M:%S.%fZ"


def utc_now() -> str:
    """Now as canonical UTC text, e.g. `2026-11-23T08:15:02.123456Z`."""
    return _dt.datetime.now(_dt.timezone.utc).strftime(_FORMAT)


def normalize_utc(value: str) -> str:
    """Any ISO-8601 date or datetime as canonical UTC text; a value without offset is taken as UTC.

    Canonical text compares correctly as a string, which `since_utc`/`until_utc` filters rely on:
    `...00Z` and `...00.000001Z` would otherwise sort the wrong way round.
    """
    text = value.strip()
    if text.endswith(("Z", "z")):
        text = text[:-1] + "+00:00"  # fromisoformat accepts "Z" only from Python 3.11
    try:
        moment = _dt.datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"value {value!r} is not an ISO-8601 UTC timestamp") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=_dt.timezone.utc)
    return moment.astimezone(_dt.timezone.utc).strftime(_FORMAT)


def _check_count(name: str, value: object, *, nullable: bool = False) -> None:
    if value is None and nullable:
        return
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ValueError(f"{name} must be a non-negative integer, not {value!r}")


@dataclass(frozen=True)
class RunStart:
    """What is known when a supervised agent starts; `user` is a name, added to `users` if new."""

    run_id: str
    agent: str
    argv: list[str]
    cwd: str
    user: str
    host: str
    started_utc: str
    caps: dict[str, Any]
    project: str | None = None
    line: str | None = None
    agent_version: str | None = None

    def __post_init__(self) -> None:
        for name in ("run_id", "agent", "user"):
            if not getattr(self, name):
                raise ValueError(f"{name} must not be empty")
        normalize_utc(self.started_utc)


@dataclass(frozen=True)
class UsageRecord:
    """One usage observation (a model reply). `cost_micro_usd` is None when nothing could price it."""

    dedupe_key: str
    occurred_utc: str
    model: str | None
    input_tokens: int
    output_tokens: int
    cache_read_tokens: int
    cache_write_tokens: int
    cost_micro_usd: int | None
    priced_by: str | None
    source_file: str | None = None
    source_offset: int | None = None
    details: dict[str, Any] | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        if not self.dedupe_key:
            raise ValueError("dedupe_key must not be empty")
        normalize_utc(self.occurred_utc)
        for name in ("input_tokens", "output_tokens", "cache_read_tokens", "cache_write_tokens"):
            _check_count(name, getattr(self, name))
        _check_count("cost_micro_usd", self.cost_micro_usd, nullable=True)
        _check_count("source_offset", self.source_offset, nullable=True)
        if self.priced_by not in (*PRICED_BY, None):
            raise ValueError(f"priced_by {self.priced_by!r} is not one of {', '.join(PRICED_BY)} or None")
        if (self.cost_micro_usd is None) != (self.priced_by is None):
            raise ValueError("cost_micro_usd and priced_by must both be set or both be None")

    @property
    def tokens(self) -> int:
        return Tokens.of(self).total


@dataclass(frozen=True)
class RunEnd:
    """How a run ended. `stop_reason` is None when the agent exited by itself.

    `status` defaults to "exited" (no stop_reason) or "stopped"; a run never finished stays "running".
    """

    ended_utc: str
    stop_reason: str | None
    exit_code: int | None
    cost_micro_usd: int
    tokens: int
    steps: int
    malformed_lines: int
    report: dict[str, Any]
    status: str | None = None

    def __post_init__(self) -> None:
        normalize_utc(self.ended_utc)
        for name in ("cost_micro_usd", "tokens", "steps", "malformed_lines"):
            _check_count(name, getattr(self, name))

    @property
    def final_status(self) -> str:
        if self.status:
            return self.status
        return "exited" if self.stop_reason is None else "stopped"


@dataclass(frozen=True)
class AckRecord:
    """`capguard ack`: `user` let the budget (`scope` "user" or "line", `scope_name`) go on to `limit_micro_usd`
    for the rest of `month`, having spent `spent_micro_usd` of its `cap_micro_usd`; `reason` says why."""

    user: str
    scope: str
    scope_name: str
    month: str
    created_utc: str
    host: str
    reason: str
    spent_micro_usd: int
    cap_micro_usd: int
    limit_micro_usd: int

    def __post_init__(self) -> None:
        for name in ("user", "scope_name", "month", "host"):
            if not getattr(self, name):
                raise ValueError(f"{name} must not be empty")
        if self.scope not in ("user", "line"):
            raise ValueError(f"scope must be user or line, not {self.scope!r}")
        if not self.reason.strip():
            raise ValueError("reason must not be empty")
        normalize_utc(self.created_utc)
        for name in ("spent_micro_usd", "cap_micro_usd", "limit_micro_usd"):
            _check_count(name, getattr(self, name))


def storable(values: dict[str, int | None], *, bound: int = MAX_STORED) -> tuple[dict[str, int | None], dict[str, str]]:
    """`values` clamped to what the ledger can store, and the originals of those clamped (as text: a flag for
    whoever reads the row). The caller's numbers, report and exit code are untouched; only the stored copy is."""
    kept: dict[str, int | None] = {}
    clamped: dict[str, str] = {}
    for name, value in values.items():
        if value is not None and value > bound:
            kept[name], clamped[name] = bound, str(value)
        else:
            kept[name] = value
    return kept, clamped
