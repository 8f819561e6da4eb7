"""Runs and their spend grouped by user, month, day, agent, model, line, project or run; percentiles per run.

Pure: plain rows from the ledger in, figures out. Money stays integer micro-dollars; percentiles are nearest-rank
(an actual run's figure, never an interpolation).
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field

BY_RUN = ("user", "agent", "line", "project", "run")  # keys a run has once; by the others, it may fall in several
BY = ("user", "month", "day", "agent", "model", "line", "project", "run")
NONE_KEY = "(none)"


@dataclass(frozen=True)
class Run:
    """One run as reports see it (from `runs` and `users`)."""

    run_id: str
    user: str
    agent: str
    project: str | None
    line: str | None
    status: str
    stop_reason: str | None
    started_utc: str
    ended_utc: str | None
    steps: int | None = None

    @property
    def supervised(self) -> bool:
        return self.status not in ("imported", "running")

    @property
    def wall_s(self) -> float | None:
        """Wall-clock seconds of a supervised run that ended; None otherwise (an import's span includes idle time)."""
        if not self.supervised or not self.ended_utc:
            return None
        return max(0.0, _seconds(self.ended_utc) - _seconds(self.started_utc))


@dataclass(frozen=True)
class Part:
    """A run's usage within one group (all of it, or one model's, one day's...): sums of its usage events."""

    run_id: str
    key: str | None
    cost_micro: int = 0
    tokens: int = 0
    output_tokens: int = 0
    replies: int = 0
    unpriced: int = 0


def _seconds(utc: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(utc[:-1] + "+00:00" if utc.endswith("Z") else utc).timestamp()


def percentile(values: list[float], p: float) -> float | None:
    """Nearest rank: p90 of 10 values is the 9th smallest. None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(1, math.ceil(p / 100 * len(ordered))) - 1]


def distribution(values: list[float]) -> dict[str, float | None]:
    return {"p50": percentile(values, 50), "p90": percentile(values, 90), "p99": percentile(values, 99)}


def run_key(run: Run, by: str) -> str:
    value = {"user": run.user, "agent": run.agent, "line": run.line, "project": run.project, "run": run.run_id}[by]
    return value or NONE_KEY


@dataclass
class Group:
    """The figures of one group; `runs` counts each run once even when only part of it falls here."""

    key: str
    runs: int = 0
    cost_micro: int = 0
    tokens: int = 0
    replies: int = 0
    unpriced: int = 0
    supervised: int = 0
    stops: dict[str, int] = field(default_factory=dict)
    cost_dist: dict = field(default_factory=dict)
    tokens_dist: dict = field(default_factory=dict)

    @property
    def avg_cost_micro(self) -> int:
        return round(self.cost_micro / self.runs) if self.runs else 0

    @property
    def stopped(self) -> int:
        return sum(self.stops.values())

    @property
    def stop_rate(self) -> float | None:
        """Share of the supervised runs that a cap stopped; None when none was supervised."""
        return self.stopped / self.supervised if self.supervised else None

    def stop_rates(self) -> dict[str, float]:
        return {reason: n / self.supervised for reason, n in sorted(self.stops.items())} if self.supervised else {}


def parts_by_group(runs: dict[str, Run], parts: list[Part], by: str) -> dict[str, list[Part]]:
    """Each run's parts keyed by group. A run without usage in the period still counts, with zero spend: under
    its own key for run-level groupings, its start day/month, or `(none)` for models."""
    grouped: dict[str, dict[str, Part]] = {}
    used: set[str] = set()
    for part in parts:
        if part.run_id not in runs:
            continue
        key = run_key(runs[part.run_id], by) if by in BY_RUN else (part.key or NONE_KEY)
        grouped.setdefault(key, {})
        grouped[key][part.run_id] = _merge(grouped[key].get(part.run_id), part, key)
        used.add(part.run_id)
    for run in runs.values():
        if run.run_id not in used:
            key = run_key(run, by) if by in BY_RUN else _idle_key(run, by)
            grouped.setdefault(key, {})[run.run_id] = Part(run.run_id, key)
    return {key: list(members.values()) for key, members in grouped.items()}


def _idle_key(run: Run, by: str) -> str:
    return {"month": run.started_utc[:7], "day": run.started_utc[:10]}.get(by, NONE_KEY)


def _merge(old: Part | None, new: Part, key: str | None) -> Part:
    if old is None:
        return Part(new.run_id, key, new.cost_micro, new.tokens, new.output_tokens, new.replies, new.unpriced)
    return Part(
        new.run_id,
        key,
        old.cost_micro + new.cost_micro,
        old.tokens + new.tokens,
        old.output_tokens + new.output_tokens,
        old.replies + new.replies,
        old.unpriced + new.unpriced,
    )


def summarize(key: str, members: list[Part], runs: dict[str, Run]) -> Group:
    group = Group(key=key, runs=len(members))
    for part in members:
        group.cost_micro += part.cost_micro
        group.tokens += part.tokens
        group.replies += part.replies
        group.unpriced += part.unpriced
        run = runs[part.run_id]
        if run.supervised:
            group.supervised += 1
            if run.stop_reason:
                group.stops[run.stop_reason] = group.stops.get(run.stop_reason, 0) + 1
    group.cost_dist = distribution([p.cost_micro for p in members])
    group.tokens_dist = distribution([p.tokens for p in members])
    return group


def group_runs(runs: dict[str, Run], parts: list[Part], by: str) -> list[Group]:
    """One Group per key, sorted by key (time keys oldest first) — by cost for run-level identities."""
    if by not in BY:
        raise ValueError(f"cannot group by {by!r} (choose from {', '.join(BY)})")
    groups = [summarize(key, members, runs) for key, members in parts_by_group(runs, parts, by).items()]
    if by in ("month", "day"):
        return sorted(groups, key=lambda g: g.key)
    return sorted(groups, key=lambda g: (-g.cost_micro, g.key))


def totals(runs: dict[str, Run], parts: list[Part]) -> Group:
    """Every run in the period as one group."""
    return summarize("(all)", list(_per_run(runs, parts).values()), runs)


def _per_run(runs: dict[str, Run], parts: list[Part]) -> dict[str, Part]:
    merged: dict[str, Part] = {run_id: Part(run_id, None) for run_id in runs}
    for part in parts:
        if part.run_id in merged:
            merged[part.run_id] = _merge(merged[part.run_id], part, None)
    return merged


@dataclass(frozen=True)
class TopRun:
    run: Run
    cost_micro: int
    tokens: int
    replies: int


def top_runs(runs: dict[str, Run], parts: list[Part], limit: int | None) -> list[TopRun]:
    """The costliest runs (spend within the period), most expensive first; ties by start time."""
    per_run = _per_run(runs, parts)
    ranked = sorted(per_run.values(), key=lambda p: (-p.cost_micro, -p.tokens, runs[p.run_id].started_utc))
    chosen = ranked if limit is None else ranked[:limit]
    return [TopRun(runs[p.run_id], p.cost_micro, p.tokens, p.replies) for p in chosen]


def stop_reasons(groups: list[Group]) -> list[str]:
    """Every stop reason seen, most frequent first."""
    counted: Counter[str] = Counter()
    for group in groups:
        counted.update(group.stops)
    return [reason for reason, _ in counted.most_common()]
