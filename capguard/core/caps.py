"""The cap policy: from the meter and the elapsed time to ok, warn or stop(reason).

Pure and total: every decision the supervisor acts on is made here and tested without processes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from capguard.core.enums import Action, StopReason, UnpricedPolicy
from capguard.core.meter import Meter
from capguard.core.model_caps import Crossed, ModelCap, crossed

# Exit codes for each stop reason, in the spirit of timeout(1) (124 for wall-clock).
EXIT_CODES: dict[StopReason, int] = {
    StopReason.WALL: 124,
    StopReason.USD: 122,
    StopReason.TOKENS: 121,
    StopReason.STEPS: 120,
    StopReason.MAP_TOKENS: 119,
    StopReason.STUCK: 118,
    StopReason.MONTHLY: 117,
    StopReason.UNPRICED: 116,
    StopReason.METER_ERROR: 115,
    StopReason.MODEL: 114,
}
UNPRICED_POLICIES = tuple(policy.value for policy in UnpricedPolicy)  # the strictest first


@dataclass(frozen=True)
class Caps:
    """Every cap is optional; None means uncapped. Money in micro-dollars."""

    usd_micro: int | None = None
    tokens: int | None = None
    wall_s: float | None = None
    steps: int | None = None
    map_tokens: int | None = None
    stuck: int | None = None  # the same tool call failing this many times in a row
    warn_at: float = 0.8
    unpriced: UnpricedPolicy = UnpricedPolicy.STOP
    # What the developer's monthly budgets leave this run (other runs' spend this month subtracted, read from
    # the ledger and refreshed as the run goes); zero or below once they are spent. None: no monthly cap.
    monthly_remaining_micro: int | None = None
    models: tuple[ModelCap, ...] = ()  # caps per model (a glob on its name), from [models."..."]

    def __post_init__(self) -> None:
        for name in ("usd_micro", "tokens", "wall_s", "steps", "stuck"):
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise ValueError(f"{name} must be greater than zero")
        if self.map_tokens is not None and self.map_tokens < 0:
            raise ValueError("map_tokens must not be negative")
        if not 0 < self.warn_at <= 1:
            raise ValueError("warn_at must be in (0, 1]")
        if self.unpriced not in UNPRICED_POLICIES:
            raise ValueError(f"unpriced must be one of {', '.join(UNPRICED_POLICIES)}")
        # a policy given as its text (a config value, a stored cap) is held as the Enum
        object.__setattr__(self, "unpriced", UnpricedPolicy(self.unpriced))

    def as_json(self) -> dict[str, Any]:
        return {
            "usd": None if self.usd_micro is None else self.usd_micro / 1_000_000,
            "tokens": self.tokens,
            "wall_s": self.wall_s,
            "steps": self.steps,
            "map_tokens": self.map_tokens,
            "stuck": self.stuck,
            "warn_at": self.warn_at,
            "unpriced": self.unpriced,
            "monthly_remaining_usd": None
            if self.monthly_remaining_micro is None
            else self.monthly_remaining_micro / 1_000_000,
            "models": [cap.as_json() for cap in self.models],
        }


@dataclass(frozen=True)
class Verdict:
    action: Action
    reason: StopReason | None = None  # set when the action is stop
    warnings: tuple[StopReason, ...] = ()  # caps past the soft threshold

    @property
    def stop(self) -> bool:
        return self.action == Action.STOP


OK = Verdict(Action.OK)


def _crossed(caps: Caps, meter: Meter, elapsed_s: float) -> StopReason | None:
    if meter.meter_error is not None:  # whatever the caps: a run capguard cannot count must not go on
        return StopReason.METER_ERROR
    if _month_spent(caps, meter):
        return StopReason.MONTHLY
    if caps.usd_micro is not None and meter.cost_micro >= caps.usd_micro:
        return StopReason.USD
    if caps.tokens is not None and meter.tokens >= caps.tokens:
        return StopReason.TOKENS
    if model_cap_crossed(caps, meter) is not None:
        return StopReason.MODEL
    if caps.steps is not None and _steps_exhausted(caps.steps, meter):
        return StopReason.STEPS
    if caps.map_tokens is not None and meter.map_tokens > caps.map_tokens:
        return StopReason.MAP_TOKENS
    if caps.stuck is not None and meter.failing_streak >= caps.stuck:
        return StopReason.STUCK
    if meter.unpriced_replies and caps.unpriced is UnpricedPolicy.STOP and _money_capped(caps):
        return StopReason.UNPRICED
    if caps.wall_s is not None and elapsed_s >= caps.wall_s:
        return StopReason.WALL
    return None


def model_cap_crossed(caps: Caps, meter: Meter) -> Crossed | None:
    """The first cap per model that the meter's models reached (their spend or tokens added up)."""
    if not caps.models:
        return None
    return crossed(caps.models, {model: (t.cost_micro, t.tokens) for model, t in meter.by_model.items()})


def _month_spent(caps: Caps, meter: Meter) -> bool:
    left = caps.monthly_remaining_micro
    return left is not None and meter.cost_micro >= left and month_binds(caps)


def month_binds(caps: Caps) -> bool:
    """Whether what the month leaves is the USD ceiling in force rather than the run's own cap: the smaller of
    the two binds, and on a tie the run's own cap is named."""
    left, own = caps.monthly_remaining_micro, caps.usd_micro
    return left is not None and (own is None or left < own)


def usd_ceiling(caps: Caps) -> int | None:
    """The USD cap in force: the run's own, or what the month leaves it (never below zero) if that is smaller."""
    own, left = caps.usd_micro, caps.monthly_remaining_micro
    if left is None:
        return own
    return max(0, left) if own is None else min(own, max(0, left))


def _money_capped(caps: Caps) -> bool:
    return caps.usd_micro is not None or caps.monthly_remaining_micro is not None


def _steps_exhausted(cap: int, meter: Meter) -> bool:
    # An agent that announces its requests is stopped when reply cap+1 starts, so the
    # last allowed reply is applied; otherwise when the cap-th reply has ended.
    if meter.announces_requests:
        return meter.requests > cap
    return meter.steps >= cap


def _warnings(caps: Caps, meter: Meter, elapsed_s: float) -> tuple[StopReason, ...]:
    pairs: tuple[tuple[StopReason, float, float | None], ...] = (
        (StopReason.USD, meter.cost_micro, caps.usd_micro),
        (StopReason.TOKENS, meter.tokens, caps.tokens),
        (StopReason.STEPS, meter.steps, caps.steps),
        (StopReason.WALL, elapsed_s, caps.wall_s),
    )
    found = [name for name, used, cap in pairs if cap and used >= caps.warn_at * cap]
    if meter.unpriced_replies and caps.unpriced is UnpricedPolicy.WARN and _money_capped(caps):
        found.append(StopReason.UNPRICED)
    return tuple(found)


def decide(caps: Caps, meter: Meter, elapsed_s: float) -> Verdict:
    """Stop at 100% of any cap, warn past `warn_at` of any, else ok."""
    reason = _crossed(caps, meter, elapsed_s)
    if reason:
        return Verdict(Action.STOP, reason)
    warnings = _warnings(caps, meter, elapsed_s)
    return Verdict(Action.WARN, warnings=warnings) if warnings else OK


def seconds_until_wall(caps: Caps, elapsed_s: float) -> float | None:
    return None if caps.wall_s is None else max(0.0, caps.wall_s - elapsed_s)
