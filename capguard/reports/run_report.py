"""The end of a run in words and data: the one-line verdict, the JSON report, the exit code.

Pure: takes the run's facts, returns strings and dicts.
"""

from __future__ import annotations

import json
import signal
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from capguard.core.caps import EXIT_CODES, Caps, model_cap_crossed
from capguard.core.enums import StopReason
from capguard.core.meter import Meter
from capguard.core.model_caps import ModelCap, used_by
from capguard.core.redact import redact_argv
from capguard.core.sanitize import printable
from capguard.core.units import format_count, format_duration, format_tokens, format_usd
from capguard.private_files import write_private


@dataclass
class RunFacts:
    run_id: str
    agent: str
    argv: list[str]
    cwd: str
    user: str
    host: str
    started_at: float  # unix time
    ended_at: float
    elapsed_s: float
    caps: Caps
    meter: Meter
    stop_reason: StopReason | None
    agent_returncode: int | None
    signal_received: int | None = None
    model: str | None = None
    notes: list[str] = field(default_factory=list)
    blind_spots: list[str] = field(default_factory=list)
    stop_steps: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    leftovers_stopped: int = 0
    at_stop: dict[str, Any] | None = None
    self_stopped: bool = False
    tree_stop: str = "sweep"  # "cgroup" | "freeze-sweep" | "sweep": how the agent's tree is stopped
    cap_origins: dict[str, str] = field(default_factory=dict)  # cap -> "flag --usd", "config file PATH", ...
    # strict mode: the proxy was the meter; what the agent's own files counted, each call, each refusal
    strict: bool = False
    files_meter: Meter | None = None
    proxy_calls: list[dict[str, Any]] = field(default_factory=list)
    proxy_refusals: list[dict[str, Any]] = field(default_factory=list)


def exit_code(facts: RunFacts) -> int:
    """A cap's own code; 128+N when capguard was told to stop by signal N; else the agent's status."""
    if facts.stop_reason:
        return EXIT_CODES[facts.stop_reason]
    if facts.signal_received:
        return 128 + facts.signal_received
    rc = facts.agent_returncode
    if rc is None:
        return 1
    return 128 - rc if rc < 0 else rc


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _refused_model_cap(facts: RunFacts) -> ModelCap | None:
    """The [models."glob"] cap whose refusal stopped a strict run (the last refusal at a model cap)."""
    for row in reversed(facts.proxy_refusals):
        if row.get("cap") == "model":
            return next((cap for cap in facts.caps.models if cap.pattern == row.get("model_cap")), None)
    return None


def why(facts: RunFacts) -> str:
    """The verdict in words: which cap, the figure that reached it."""
    m, c = facts.meter, facts.caps
    reason = facts.stop_reason
    at = facts.at_stop or {}
    if reason == StopReason.USD and c.usd_micro is not None:
        crossed = round(at.get("cost_usd", m.cost_micro / 1e6) * 1e6)
        if facts.strict and crossed < c.usd_micro:
            return (
                f"cost {format_usd(crossed)}, and the next call's worst case would pass the {format_usd(c.usd_micro)}"
                " cap (the proxy refused it)"
            )
        return f"cost {format_usd(crossed)} reached the {format_usd(c.usd_micro)} cap"
    if reason == StopReason.TOKENS and c.tokens is not None and facts.strict and at.get("tokens", 0) < c.tokens:
        return (
            f"{format_tokens(at.get('tokens', m.tokens))} tokens, and the next call could pass the"
            f" {format_tokens(c.tokens)}-token cap (the proxy refused it)"
        )
    if reason == StopReason.TOKENS and c.tokens is not None:
        return f"{format_tokens(at.get('tokens', m.tokens))} tokens reached the {format_tokens(c.tokens)}-token cap"
    if reason == StopReason.WALL and c.wall_s is not None:
        return f"wall-clock {format_duration(facts.elapsed_s)} reached the {format_duration(c.wall_s)} cap"
    if reason == StopReason.STEPS and c.steps is not None:
        if m.announces_requests:
            return f"reply {c.steps + 1} was starting after the {c.steps}-reply cap"
        return f"{m.steps} replies reached the {c.steps}-reply cap"
    if reason == StopReason.MAP_TOKENS and c.map_tokens is not None:
        return f"a repo map of ~{m.map_tokens:,} tokens exceeded the {c.map_tokens:,}-token map cap"
    if reason == StopReason.UNPRICED:
        model = facts.model or "the model"
        return (
            f'{model} has no known price, so the USD cap cannot be enforced (unpriced = "stop"; '
            f'add [prices."{model}"] to your config)'
        )
    if reason == StopReason.MODEL and (hit := model_cap_crossed(c, m)) is not None:
        return hit.describe()
    if reason == StopReason.MODEL and facts.strict and (cap := _refused_model_cap(facts)) is not None:
        cost, tokens = used_by(cap, {model: (t.cost_micro, t.tokens) for model, t in m.by_model.items()})
        if cap.usd_micro is not None and (cap.tokens is None or cost * cap.tokens >= tokens * cap.usd_micro):
            return (
                f"{cap.pattern} cost {format_usd(cost)}, and the next call's worst case would pass its"
                f" {format_usd(cap.usd_micro)} cap (the proxy refused it)"
            )
        return (
            f"{cap.pattern} used {format_tokens(tokens)} tokens, and the next call could pass its"
            f" {format_tokens(cap.tokens or 0)}-token cap (the proxy refused it)"
        )
    if reason == StopReason.METER_ERROR:
        return f"capguard could not count any more: {m.meter_error or 'metering failed'}"
    if reason == StopReason.STUCK:
        tool = (m.failing_tool or "a tool call").split("\n")[0][:80]
        return f"the same tool call failed {at.get('failing_streak', m.failing_streak)} times in a row ({tool})"
    if reason == StopReason.MONTHLY:
        left = at.get("monthly_remaining_usd")  # what the month left when the stop was decided
        if left is None:
            return "the monthly budget is spent"
        crossed, left_micro = round(at.get("cost_usd", m.cost_micro / 1e6) * 1e6), max(0, round(left * 1e6))
        if facts.strict and crossed < left_micro:
            return (
                f"cost {format_usd(crossed)}, and the next call's worst case would pass the {format_usd(left_micro)}"
                " left of the monthly budget (the proxy refused it)"
            )
        return f"cost {format_usd(crossed)} reached the {format_usd(left_micro)} left of the monthly budget"
    if reason:
        return f"the {reason} cap was reached"
    if facts.signal_received:
        return f"capguard received {signal.Signals(facts.signal_received).name}"
    return "the agent exited"


def stop_line(facts: RunFacts) -> str:
    """`capguard: stopped aider: cost $5.03 reached the $5.00 cap (41 replies, 812k tokens, 12m04s); run 01j...`"""
    m = facts.meter
    in_all = "in all: " if facts.at_stop and facts.at_stop.get("steps") != m.steps else ""
    numbers = in_all + _figures(facts)
    if m.suspicious_lines:
        numbers += f"; {suspicious_note(m.suspicious_lines)}"
    # names in it come from outside (a model, a tool call, an error's text): never raw on the terminal
    if facts.self_stopped:
        return printable(
            f"capguard: {facts.agent} stopped itself at the cap: {why(facts)} ({numbers}); run {facts.run_id}"
        )
    return printable(f"capguard: stopped {facts.agent}: {why(facts)} ({numbers}); run {facts.run_id}")


def _figures(facts: RunFacts) -> str:
    m = facts.meter
    return (
        f"{format_count(m.steps, 'reply', 'replies')}, {format_tokens(m.tokens)} tokens, {format_usd(m.cost_micro)},"
        f" {format_duration(facts.elapsed_s)}"
    )


def exit_line(facts: RunFacts) -> str:
    """`capguard: aider exited (status 0): 3 replies, 156k tokens, $0.44, 8.4s; run 01j...`: the end of a run no
    cap and no signal to capguard stopped."""
    rc = facts.agent_returncode
    if rc is not None and rc < 0:
        try:
            how = f"killed by {signal.Signals(-rc).name}"
        except ValueError:
            how = f"killed by signal {-rc}"
    else:
        how = f"status {exit_code(facts)}"
    return printable(f"capguard: {facts.agent} exited ({how}): {_figures(facts)}; run {facts.run_id}")


def suspicious_note(lines: int) -> str:
    return f"{lines} line{'s' if lines != 1 else ''} with figures beyond capguard's bounds, counted as the bound"


def build_report(facts: RunFacts) -> dict[str, Any]:
    m, c = facts.meter, facts.caps
    overshoot: float | None = None
    at_stop = facts.at_stop or {}
    if facts.stop_reason == StopReason.USD and c.usd_micro is not None:
        overshoot = (m.cost_micro - c.usd_micro) / 1_000_000
    elif facts.stop_reason == StopReason.TOKENS and c.tokens is not None:
        overshoot = m.tokens - c.tokens
    elif facts.stop_reason == StopReason.MODEL and (hit := model_cap_crossed(c, m)) is not None:
        overshoot = hit.over
    elif facts.stop_reason == StopReason.MODEL and facts.strict:
        overshoot = 0  # the proxy refused the call that could have reached the model's cap
    elif facts.stop_reason == StopReason.MONTHLY and "monthly_remaining_usd" in at_stop:
        overshoot = round(m.cost_micro / 1_000_000 - at_stop["monthly_remaining_usd"], 6)
    if facts.strict and overshoot is not None:  # the proxy stops before a cap: nothing past it, never "below"
        overshoot = max(0, overshoot)
    return {
        "meter": meter_kind(facts),
        "run_id": facts.run_id,
        "agent": facts.agent,
        "argv": redact_argv(facts.argv),  # the agent got the real one; the report never holds a key
        "cwd": facts.cwd,
        "user": facts.user,
        "host": facts.host,
        "started_at": _iso(facts.started_at),
        "ended_at": _iso(facts.ended_at),
        "elapsed_s": round(facts.elapsed_s, 3),
        "caps": c.as_json(),
        "cap_origins": facts.cap_origins,
        "model": facts.model,
        "usage": m.usage_json(),
        "cost_usd": m.cost_micro / 1_000_000,
        "unseen_usd": m.unseen_micro / 1_000_000,
        "tokens": m.tokens,
        "steps": m.steps,
        "requests_started": m.requests,
        "stop_reason": facts.stop_reason,
        "stop_detail": why(facts) if facts.stop_reason or facts.signal_received else None,
        "signal_received": facts.signal_received,
        "overshoot": overshoot,
        "largest_reply_usd": m.largest_reply_micro / 1_000_000,
        "agent_returncode": facts.agent_returncode,
        "exit_code": exit_code(facts),
        "malformed_lines": m.malformed_lines,
        "suspicious_lines": m.suspicious_lines,
        "suspicious": m.suspicious,
        "meter_error": m.meter_error,
        "unpriced_replies": m.unpriced_replies,
        "map_tokens_seen": m.map_tokens or None,
        "warnings": facts.warnings,
        "notes": facts.notes,
        "blind_spots": facts.blind_spots,
        "stop_steps": facts.stop_steps,
        "leftovers_stopped": facts.leftovers_stopped,
        "at_stop": facts.at_stop,
        "self_stopped": facts.self_stopped,
        "tree_stop": facts.tree_stop,
        **(_strict_json(facts) if facts.strict else {}),
    }


def meter_kind(facts: RunFacts) -> str:
    """ "files" (the agent's files), "proxy" (strict mode), "both" (strict, and the files had figures to compare)."""
    if not facts.strict:
        return "files"
    files = facts.files_meter
    return "both" if files is not None and (files.by_model or files.unseen_micro) else "proxy"


def calibration(facts: RunFacts) -> dict[str, Any] | None:
    """What the agent's own files counted against what the proxy saw the server bill, where the files had any."""
    files = facts.files_meter
    if files is None or not (files.by_model or files.unseen_micro):
        return None
    proxy, own = facts.meter.cost_micro, files.cost_micro
    calls, replies = len(facts.proxy_calls), sum(t.replies for t in files.by_model.values())
    off = None if proxy == 0 else (own - proxy) / proxy
    words = "the same" if own == proxy else f"{abs(off or 0):.1%} {'low' if own < proxy else 'high'}"
    line = (
        f"the agent's own files counted {format_usd(own)} in {format_count(replies, 'reply', 'replies')}; the"
        f" proxy saw {format_usd(proxy)} billed in {format_count(calls, 'call', 'calls')} (files {words})"
    )
    return {
        "files_usd": own / 1e6,
        "files_replies": replies,
        "files_tokens": files.tokens,
        "proxy_usd": proxy / 1e6,
        "proxy_calls": calls,
        "proxy_tokens": facts.meter.tokens,
        "difference_usd": (own - proxy) / 1e6,
        "difference_pct": None if off is None else round(off * 100, 1),
        "line": line,
    }


def _strict_json(facts: RunFacts) -> dict[str, Any]:
    return {
        "calls": facts.proxy_calls,
        "calls_lowered": sum(1 for call in facts.proxy_calls if call.get("lowered_max_tokens")),
        "refusals": facts.proxy_refusals,
        "calibration": calibration(facts),
    }


def write_all(paths: list[Path], data: dict) -> str | None:
    """Write the report everywhere it goes; a place that fails (a full disk, a vanished run dir) does not stop
    the others. Returns one line naming the failures, or None."""
    failed = []
    for path in paths:
        try:
            write_json(path, data)
        except OSError as err:
            failed.append(f"{path} ({err.strerror or err})")
    return f"capguard: could not write the report to {', '.join(failed)}" if failed else None


def write_json(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    write_private(path, (json.dumps(data, indent=2) + "\n").encode())  # 0600: the run's cwd, user, spend
