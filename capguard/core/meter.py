"""Cumulative usage of one run, by model: what the caps are checked against.

Pure: fed with parsed events and their prices, never touches files or clocks.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from capguard.core.events import Reply, ReportedTotal, ToolOutcome
from capguard.core.pricing import Priced
from capguard.core.usage import Tokens

MAX_SUSPICIOUS_NAMED = 20  # a hostile source may flag every line: the report names the first ones, counts all


@dataclass
class ModelTotals:
    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0
    cost_micro: int = 0
    replies: int = 0
    unpriced_replies: int = 0

    @property
    def tokens(self) -> int:
        return Tokens.of(self).total


@dataclass
class Meter:
    by_model: dict[str, ModelTotals] = field(default_factory=dict)
    steps: int = 0  # completed model replies
    requests: int = 0  # requests the agent announced before sending them
    unpriced_replies: int = 0
    malformed_lines: int = 0
    map_tokens: int = 0  # largest repo map seen
    largest_reply_micro: int = 0
    last_reply_micro: int = 0
    failing_tool: str | None = None  # the tool call that failed last, and how many times in a row
    failing_streak: int = 0
    # Why capguard can no longer count this run (a blind file, a failed write, metering that broke); once set,
    # every decision is a stop with reason "meter_error". The first cause is kept.
    meter_error: str | None = None
    # Lines whose figures reached a bound of capguard.core.sanitize (counted as the bound): the first few, named
    suspicious: list[dict[str, Any]] = field(default_factory=list)
    suspicious_lines: int = 0
    _seen: set[str] = field(default_factory=set, repr=False)
    _stepped: set[str] = field(default_factory=set, repr=False)
    _scope_cost: dict[str, int] = field(default_factory=dict, repr=False)  # replies' cost per session
    _reported: dict[str, int] = field(default_factory=dict, repr=False)  # the agent's own totals, net
    _config_priced: set[str] = field(default_factory=set, repr=False)  # sessions with a reply priced by [prices]

    @property
    def replies_micro(self) -> int:
        return sum(m.cost_micro for m in self.by_model.values())

    @property
    def unseen_micro(self) -> int:
        """Spend the agent reported that no reply line showed (e.g. compaction calls). Not for a session with a
        reply priced by the user's [prices]: the agent's total prices that model its own way (Claude Code guesses
        a model it does not know), and the user's explicit price is the one rule that holds."""
        return sum(
            max(0, net - self._scope_cost.get(scope, 0))
            for scope, net in self._reported.items()
            if scope not in self._config_priced
        )

    @property
    def cost_micro(self) -> int:
        # per session, the larger of what the replies add up to and what the agent says it spent, unless the
        # session's replies were priced by the user's [prices] (then the replies alone)
        return self.replies_micro + self.unseen_micro

    @property
    def tokens(self) -> int:
        return sum(m.tokens for m in self.by_model.values())

    @property
    def announces_requests(self) -> bool:
        return self.requests > 0

    def add_reply(self, reply: Reply, priced: Priced) -> bool:
        """Count a reply once per key; returns False for a duplicate.

        Two sources may report one API call (a transcript line and a telemetry event): the first counts,
        and the call is a step if either source says it was the main agent's.
        """
        if reply.key in self._seen:
            if reply.step and reply.key not in self._stepped:
                self._stepped.add(reply.key)
                self.steps += 1
            return False
        self._seen.add(reply.key)
        if reply.step:
            self._stepped.add(reply.key)
        totals = self.by_model.setdefault(priced.model or "unknown", ModelTotals())
        totals.input_tokens += reply.input_tokens
        totals.output_tokens += reply.output_tokens
        totals.cache_read_tokens += reply.cache_read_tokens
        totals.cache_write_tokens += reply.cache_write_tokens
        totals.replies += 1
        cost = priced.cost_micro or 0
        totals.cost_micro += cost
        if reply.scope is not None:
            self._scope_cost[reply.scope] = self._scope_cost.get(reply.scope, 0) + cost
            if priced.priced_by == "config":
                self._config_priced.add(reply.scope)
        if priced.cost_micro is None:
            totals.unpriced_replies += 1
            self.unpriced_replies += 1
        if reply.step:
            self.steps += 1
        if reply.suspicious:
            self.note_suspicious(reply.source, reply.offset, reply.suspicious)
        self.last_reply_micro = cost
        self.largest_reply_micro = max(self.largest_reply_micro, cost)
        return True

    def reported(self, total: ReportedTotal) -> None:
        """The agent's own running total for a session; totals only grow, so keep the largest."""
        net = max(0, total.cost_micro - total.baseline_micro)
        self._reported[total.scope] = max(self._reported.get(total.scope, 0), net)
        if total.suspicious:
            self.note_suspicious(total.source, None, total.suspicious)

    def note_suspicious(self, source: str | None, offset: int | None, why: str) -> None:
        self.suspicious_lines += 1
        if len(self.suspicious) < MAX_SUSPICIOUS_NAMED:
            self.suspicious.append({"source": source, "offset": offset, "why": why})

    def tool_outcome(self, outcome: ToolOutcome) -> None:
        if not outcome.failed:
            self.failing_tool, self.failing_streak = None, 0
        elif outcome.signature == self.failing_tool:
            self.failing_streak += 1
        else:
            self.failing_tool, self.failing_streak = outcome.signature, 1

    def fail(self, why: str) -> None:
        """Capguard cannot count any more: the next decision stops the run (fail closed)."""
        if self.meter_error is None:
            self.meter_error = why

    def request_started(self) -> None:
        self.requests += 1

    def map_measured(self, tokens: int) -> None:
        self.map_tokens = max(self.map_tokens, tokens)

    def usage_json(self) -> dict[str, dict[str, Any]]:
        out: dict[str, dict[str, Any]] = {}
        for model, totals in self.by_model.items():
            row = asdict(totals)
            row["cost_usd"] = row.pop("cost_micro") / 1_000_000
            out[model] = row
        if self.unseen_micro:
            out["reported by the agent, not in its replies"] = {"cost_usd": self.unseen_micro / 1_000_000}
        return out
