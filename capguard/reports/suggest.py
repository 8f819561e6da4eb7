"""Caps from the measured distribution of past runs: p90 plus headroom, per agent (and line or project).

Pure. Each suggestion says how many runs it rests on and how many of them it would have stopped (a cap stops a
run when the run reaches it). Rounded up to two significant figures, so the numbers paste well into config.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from capguard.core.units import format_duration, format_tokens, format_usd, parse_tokens
from capguard.reports.aggregate import Part, Run, percentile

TASK_BUDGET_MIN = 20_000  # Claude's minimum for --task-budget (see capguard/agents/claude.py)
TASK_BUDGET_AGENTS = ("claude", "anthropic-sdk")  # Claude Code's --task-budget, the library's task_budget=
PER = ("agent", "line", "project")
CAPS = ("usd", "tokens", "steps", "wall", "task_budget")


@dataclass(frozen=True)
class Sample:
    """One finished run's figures: what a cap would have been compared with."""

    run_id: str
    agent: str
    line: str | None
    project: str | None
    cost_micro: int
    tokens: int
    output_tokens: int
    steps: int
    wall_s: float | None  # supervised runs only: an imported session's span includes idle time


def samples(runs: dict[str, Run], parts: list[Part]) -> list[Sample]:
    """Finished runs (not running) with their usage; steps are the recorded main-agent replies."""
    sums: dict[str, list[int]] = {}
    for part in parts:
        acc = sums.setdefault(part.run_id, [0, 0, 0, 0])
        acc[0] += part.cost_micro
        acc[1] += part.tokens
        acc[2] += part.output_tokens
        acc[3] += part.replies
    found = []
    for run in runs.values():
        if run.status in ("running", "not started"):  # not started: the agent could not be run, nothing to learn
            continue
        cost, tokens, output, replies = sums.get(run.run_id, (0, 0, 0, 0))
        steps = run.steps if run.steps is not None else replies
        found.append(Sample(run.run_id, run.agent, run.line, run.project, cost, tokens, output, steps, run.wall_s))
    return found


def round_up(value: float, digits: int = 2) -> float:
    """The smallest number with `digits` significant figures that is >= value (1234 -> 1300, 0.0123 -> 0.013)."""
    if value <= 0:
        return 0
    exponent = math.floor(math.log10(value)) - digits + 1
    if exponent >= 0:
        return math.ceil(round(value / 10**exponent, 9)) * 10**exponent
    return (
        math.ceil(round(value * 10**-exponent, 9)) / 10**-exponent
    )  # dividing keeps 5.1 from being 5.1000000000000005


@dataclass
class Suggestion:
    agent: str
    scope: str | None  # the line or project for --per line/project
    runs: int
    caps: dict[str, float] = field(default_factory=dict)  # usd (dollars), tokens, steps, wall (seconds), task_budget
    p90: dict[str, float] = field(default_factory=dict)
    would_stop: dict[str, int] = field(default_factory=dict)  # per cap: past runs that reach it
    would_stop_any: int = 0
    wall_runs: int = 0  # supervised runs the wall cap rests on
    left_out: int = 0  # runs without a single reply: a typo, `--help`, a start given up; they say nothing of a task


def taught_nothing(sample: Sample) -> bool:
    """A run that never got a model reply: its zeros would drag every percentile down."""
    return sample.steps == 0 and sample.tokens == 0 and sample.cost_micro == 0


def _value(sample: Sample, cap: str) -> float | None:
    return {
        "usd": sample.cost_micro / 1e6,
        "tokens": sample.tokens,
        "steps": sample.steps,
        "wall": sample.wall_s,
        "task_budget": sample.output_tokens,
    }[cap]


def suggest(
    found: list[Sample], *, per: str = "agent", headroom: float = 0.2, min_runs: int = 5
) -> tuple[list[Suggestion], list[tuple[str, str | None, int]]]:
    """(suggestions, groups with too few runs: (agent, scope, runs)), sorted by scope then agent."""
    if per not in PER:
        raise ValueError(f"--per must be one of {', '.join(PER)}")
    if headroom < 0:
        raise ValueError("headroom must not be negative")
    groups: dict[tuple[str, str | None], list[Sample]] = {}
    for sample in found:
        scope = None if per == "agent" else getattr(sample, per)
        groups.setdefault((sample.agent, scope), []).append(sample)
    made, few = [], []
    for (agent, scope), group in sorted(groups.items(), key=lambda item: (item[0][1] or "", item[0][0])):
        members = [sample for sample in group if not taught_nothing(sample)]
        if len(members) < min_runs:
            few.append((agent, scope, len(members)))
            continue
        made.append(_one(agent, scope, members, headroom, min_runs))
        made[-1].left_out = len(group) - len(members)
    return made, few


def _one(agent: str, scope: str | None, members: list[Sample], headroom: float, min_runs: int) -> Suggestion:
    result = Suggestion(agent, scope, len(members))
    caps = ["usd", "tokens", "steps", "wall"] + (["task_budget"] if agent in TASK_BUDGET_AGENTS else [])
    for cap in caps:
        values = [v for v in (_value(s, cap) for s in members) if v is not None]
        if cap == "wall":
            result.wall_runs = len(values)
            if len(values) < min_runs:
                continue  # imported sessions have no usable wall time
        p90 = percentile(values, 90)
        if not p90:
            continue
        limit = round_up(p90 * (1 + headroom))
        if cap in ("tokens", "steps", "task_budget"):
            limit = math.ceil(limit)
        if cap == "task_budget":
            limit = max(TASK_BUDGET_MIN, limit)
        result.p90[cap], result.caps[cap] = p90, limit
        result.would_stop[cap] = sum(1 for v in values if v >= limit)
    result.would_stop_any = sum(
        1
        for s in members
        if any((v := _value(s, cap)) is not None and v >= limit for cap, limit in result.caps.items())
    )
    return result


# -- output -------------------------------------------------------------------------------------------------


def _toml_value(cap: str, value: float) -> str:
    if cap == "usd":
        return f"{value:.2f}" if value >= 0.01 else f"{value:.4f}"
    if cap in ("tokens", "task_budget"):
        shown = format_tokens(int(value))
        return f'"{shown}"' if shown[-1] in "kM" and parse_tokens(shown) == int(value) else str(int(value))
    if cap == "wall":
        return f'"{_duration(value)}"'
    return str(int(value))


def _duration(seconds: float) -> str:
    whole = math.ceil(seconds)
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    return "".join(f"{n}{unit}" for n, unit in ((hours, "h"), (minutes, "m"), (secs, "s")) if n) or "1s"


def _p90_note(cap: str, p90: float) -> str:
    if cap == "usd":
        return f"p90 {format_usd(round(p90 * 1e6))}"
    if cap == "wall":
        return f"p90 {format_duration(p90)}"
    if cap == "task_budget":
        return f"p90 output {format_tokens(int(p90))}; at least {TASK_BUDGET_MIN:,}"
    return f"p90 {format_tokens(int(p90)) if cap == 'tokens' else int(p90)}"


def toml(suggestions: list[Suggestion], *, per: str, headroom: float, period: str) -> list[str]:
    """A snippet to paste into config: an [agents.<agent>] table per suggestion, its reasoning in comments."""
    lines = [f"# capguard suggest: p90 of past runs ({period}) + {headroom:.0%} headroom, rounded up"]
    for s in suggestions:
        lines.append("")
        if per == "project":
            lines.append(f"# {s.scope or '(no project)'}/.capguard.toml")
        elif per == "line":
            lines.append(
                f'# budget line {s.scope or "(none)"}: in the .capguard.toml of its projects (line = "{s.scope}")'
                if s.scope
                else "# runs on no budget line"
            )
        stops = ", ".join(f"{cap} {n}" for cap, n in s.would_stop.items() if n)
        left_out = f" ({s.left_out:,} without a reply left out)" if s.left_out else ""
        lines.append(
            f"# {s.runs:,} runs{left_out}; these caps would have stopped {s.would_stop_any:,}"
            f" ({s.would_stop_any / s.runs:.0%})" + (f": {stops}" if stops else "")
        )
        lines.append(f"[agents.{s.agent}]")
        for cap in CAPS:
            if cap in s.caps:
                note = _p90_note(cap, s.p90[cap]) + (f" of {s.wall_runs} supervised runs" if cap == "wall" else "")
                lines.append(f"{cap} = {_toml_value(cap, s.caps[cap])}".ljust(24) + f"# {note}")
    return lines


def as_json(suggestion: Suggestion) -> dict:
    caps = dict(suggestion.caps)
    return {
        "agent": suggestion.agent,
        "scope": suggestion.scope,
        "runs": suggestion.runs,
        "caps": caps,
        "p90": suggestion.p90,
        "would_stop": suggestion.would_stop,
        "would_stop_any": suggestion.would_stop_any,
        "wall_runs": suggestion.wall_runs,
        "left_out": suggestion.left_out,
    }
