"""What a Budget tells its caller: BudgetExceeded when a call is refused, BudgetWarning past the soft threshold,
and the sentences in them, with the CLI's units.

Pure: figures in, exceptions and strings out.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from capguard.core import monthly
from capguard.core.caps import EXIT_CODES, Caps, decide
from capguard.core.enums import StopReason
from capguard.core.errors import CapguardError
from capguard.core.meter import Meter
from capguard.core.monthly import Standing
from capguard.core.units import format_duration, format_tokens, format_usd

if TYPE_CHECKING:
    from capguard.budget.allowance import Opening

ACK_HINT = 'To go on this month: capguard ack --reason "..."'  # as monthly.refusal ends


class BudgetExceeded(CapguardError):
    """A ceiling is reached, so the call was not made.

    `reason` names the cap (usd, tokens, steps, wall, unpriced, monthly), `figures` are the task's numbers when the call
    was refused (cost_usd, tokens, steps, elapsed_s, held_usd, calls_in_flight, caps), and `exit_code` is the
    CLI's code for that cap, for a harness that exits with it.
    """

    def __init__(self, reason: StopReason, message: str, figures: dict[str, Any]) -> None:
        super().__init__(message)
        self.reason = reason
        self.figures = figures
        self.exit_code = EXIT_CODES.get(reason, 1)


@dataclass(frozen=True)
class BudgetWarning:
    """A cap passed its soft threshold (`warn_at`); each cap warns once per task."""

    cap: StopReason  # usd | tokens | steps | wall | unpriced | monthly
    used: float
    limit: float | None
    message: str


def reached(reason: StopReason, caps: Caps, figures: dict[str, Any]) -> str:
    """Why a reached cap refuses the next call, e.g. `cost $0.52 reached the $0.50 cap`."""
    if reason == StopReason.USD and caps.usd_micro is not None:
        return f"cost {_usd(figures['cost_usd'])} reached the {format_usd(caps.usd_micro)} cap"
    if reason == StopReason.TOKENS and caps.tokens is not None:
        return f"{format_tokens(figures['tokens'])} tokens reached the {format_tokens(caps.tokens)}-token cap"
    if reason == StopReason.STEPS:
        in_flight = figures["calls_in_flight"]
        also = f" and {in_flight} calls in flight" if in_flight else ""
        return f"{figures['steps']} replies{also} reached the {caps.steps}-reply cap"
    if reason == StopReason.WALL and caps.wall_s is not None:
        return f"wall-clock {format_duration(figures['elapsed_s'])} reached the {format_duration(caps.wall_s)} cap"
    if reason == StopReason.UNPRICED:
        model = figures.get("model") or "the model"
        return (
            f'{model} has no known price, so the USD cap cannot be enforced (unpriced = "stop"; '
            f'add [prices."{model}"] to your config)'
        )
    return f"the {reason} cap was reached"


def no_room(
    model: str,
    prompt_tokens: int,
    floor: int,
    floor_micro: int | None,
    headroom_micro: int,
    caps: Caps,
    figures: dict[str, Any],
    *,
    month: Standing | None = None,
) -> str:
    """Why a call whose smallest useful reply could cross the USD cap (or, given `month`, the month's
    remainder) is refused."""
    worst = "more than that" if floor_micro is None else f"up to {format_usd(floor_micro)}"
    spent = f"{_usd(figures['cost_usd'])} spent"
    if figures["calls_in_flight"]:
        spent += f", {_usd(figures['held_usd'])} held by {figures['calls_in_flight']} calls in flight"
    of = "the monthly budget" if month or caps.usd_micro is None else f"the {format_usd(caps.usd_micro)} cap"
    return (
        f"a reply of {floor:,} tokens from {model} to a ~{prompt_tokens:,}-token prompt could cost {worst}, "
        f"more than the {format_usd(headroom_micro)} left of {of} ({spent})" + month_context(month)
    )


def month_reached(cost_micro: int, left_micro: int, month: Standing | None) -> str:
    """Why the month refuses the next call, in the CLI's words (`cost $0.30 reached the $0.30 left of the monthly
    budget`), then whose budget it is, what other runs spent of it, when it resets and how to go on."""
    return (
        f"cost {format_usd(cost_micro)} reached the {format_usd(max(0, left_micro))} left of the monthly budget"
        + month_context(month)
    )


def month_context(month: Standing | None) -> str:
    """` (dev@example.com: other runs have spent $0.39 of the $0.50 monthly cap for 2026-11); it resets ...`"""
    if month is None:
        return ""
    return (
        f" ({month.who}: other runs have spent {format_usd(month.spent_micro)} of {month.limit_text} for"
        f" {month.month.label}); it resets {month.month.resets}. {ACK_HINT}"
    )


def warning(name: StopReason, used: float, limit: float | None) -> BudgetWarning:
    """E.g. `usd at 84% of its cap ($0.42 of $0.50)`."""
    if name == StopReason.UNPRICED or not limit:
        text = f'{int(used)} replies of a model nobody can price count as $0 (unpriced = "warn")'
        return BudgetWarning(name, used, limit, text)
    shown: dict[StopReason, Callable[[float], str]] = {
        StopReason.USD: _usd,
        StopReason.TOKENS: lambda v: format_tokens(int(v)),
        StopReason.STEPS: lambda v: f"{int(v)} replies",
        StopReason.WALL: format_duration,
    }
    show = shown.get(name, str)
    text = f"{name} at {used / limit:.0%} of its cap ({show(used)} of {show(limit)})"
    return BudgetWarning(name, used, limit, text)


def due_warnings(caps: Caps, meter: Meter, elapsed_s: float, warned: list[StopReason]) -> list[BudgetWarning]:
    """The caps newly past the soft threshold, each once: they are added to `warned`."""
    used: dict[StopReason, tuple[float, float | None]] = {
        StopReason.USD: (meter.cost_micro / 1e6, None if caps.usd_micro is None else caps.usd_micro / 1e6),
        StopReason.TOKENS: (meter.tokens, caps.tokens),
        StopReason.STEPS: (meter.steps, caps.steps),
        StopReason.WALL: (elapsed_s, caps.wall_s),
        StopReason.UNPRICED: (meter.unpriced_replies, None),
    }
    due = [name for name in decide(caps, meter, elapsed_s).warnings if name in used and name not in warned]
    warned.extend(due)
    return [warning(name, *used[name]) for name in due]


def month_opening(opening: Opening, task_id: str, figures: dict[str, Any], caps: Caps) -> list[BudgetWarning]:
    """A task's start against its month: BudgetExceeded when the month is spent (the CLI's refusal), else a
    warning for each monthly budget past its soft threshold (the CLI's sentences)."""
    if opening.refusal:
        at_start = {
            "reason": StopReason.MONTHLY,
            **figures,
            "caps": caps.as_json(),
            "month": monthly.as_json(opening.standings),
        }
        raise BudgetExceeded(StopReason.MONTHLY, f"task {task_id} not started: {opening.refusal}", at_start)
    warned = [s for s in opening.standings if s.state == "warn"]
    return [
        BudgetWarning(StopReason.MONTHLY, s.spent_micro / 1e6, s.limit_micro / 1e6, text)
        for s, text in zip(warned, opening.warnings, strict=True)
    ]


def _usd(dollars: float) -> str:
    return format_usd(round(dollars * 1_000_000))
