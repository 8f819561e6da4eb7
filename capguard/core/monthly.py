"""Monthly budgets as pure arithmetic: which month it is in the team's time zone, what is spent, what is left.

No I/O: spend figures, caps, acks and the current time come in; standings, limits and one-line messages go out.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from datetime import datetime, timezone, tzinfo
from typing import Any

from capguard.core.units import format_usd

DEFAULT_WARN_AT = 0.75
ACK_SHARE = 0.25  # what an ack allows when no amount is given: a quarter of the cap


@dataclass(frozen=True)
class Month:
    """A calendar month in a time zone, as the UTC instants where it starts (inclusive) and resets (exclusive)."""

    label: str  # "2026-11"
    start_utc: datetime
    end_utc: datetime
    zone: tzinfo

    @property
    def zone_name(self) -> str:
        return getattr(self.zone, "key", None) or str(self.zone)

    @property
    def resets(self) -> str:
        """`2026-12-01 00:00 Europe/Berlin`: the reset in the team's own time zone."""
        return f"{self.end_utc.astimezone(self.zone):%Y-%m-%d %H:%M} {self.zone_name}"


def month_of(now: datetime, zone: tzinfo) -> Month:
    """The month `now` falls in, in `zone`; the reset is local midnight on the 1st of the next month."""
    if now.tzinfo is None:
        raise ValueError("now must carry a time zone (a naive datetime is ambiguous)")
    local = now.astimezone(zone)
    year, month = local.year, local.month
    next_year, next_month = (year + 1, 1) if month == 12 else (year, month + 1)
    start = datetime(year, month, 1, tzinfo=zone).astimezone(timezone.utc)
    end = datetime(next_year, next_month, 1, tzinfo=zone).astimezone(timezone.utc)
    return Month(f"{year:04d}-{month:02d}", start, end, zone)


@dataclass(frozen=True)
class Standing:
    """One monthly budget a run is charged to, this month: the developer's own, or a budget line's.

    `acked_limit_micro` is the highest limit an ack granted this month; the limit is never below the cap.
    """

    scope: str  # "user" | "line"
    name: str  # "dev@example.com" | "shared-infra"
    cap_micro: int
    spent_micro: int
    month: Month
    warn_at: float = DEFAULT_WARN_AT
    acked_limit_micro: int | None = None

    def __post_init__(self) -> None:
        if self.scope not in ("user", "line"):
            raise ValueError(f"scope must be user or line, not {self.scope!r}")
        if self.cap_micro <= 0:
            raise ValueError("cap_micro must be greater than zero")

    @property
    def limit_micro(self) -> int:
        return max(self.cap_micro, self.acked_limit_micro or 0)

    @property
    def remaining_micro(self) -> int:
        return self.limit_micro - self.spent_micro

    @property
    def share(self) -> float:
        return self.spent_micro / self.limit_micro

    @property
    def state(self) -> str:
        """`over` at 100% of the limit, `warn` from `warn_at` of it, else `ok`."""
        if self.spent_micro >= self.limit_micro:
            return "over"
        return "warn" if self.spent_micro >= self.warn_at * self.limit_micro else "ok"

    @property
    def who(self) -> str:
        return self.name if self.scope == "user" else f"budget line {self.name}"

    @property
    def limit_text(self) -> str:
        if self.limit_micro == self.cap_micro:
            return f"the {format_usd(self.cap_micro)} monthly cap"
        return f"the {format_usd(self.limit_micro)} limit (monthly cap {format_usd(self.cap_micro)}, raised by ack)"

    def summary(self) -> str:
        """`dev@example.com: $380.00 of $500.00 (76%), $120.00 left`"""
        left = format_usd(max(0, self.remaining_micro))
        return (
            f"{self.who}: {format_usd(self.spent_micro)} of {format_usd(self.limit_micro)}"
            f" ({self.share:.0%}), {left} left"
        )


def as_json(standings: list[Standing]) -> dict[str, Any] | None:
    """The month and each budget in it, in dollars; None when no monthly cap applies."""
    if not standings:
        return None
    month = standings[0].month
    return {
        "month": month.label,
        "timezone": month.zone_name,
        "resets": month.resets,
        "start_utc": month.start_utc.isoformat(),
        "end_utc": month.end_utc.isoformat(),
        "budgets": [
            {
                "scope": s.scope,
                "name": s.name,
                "state": s.state,
                "cap_usd": s.cap_micro / 1e6,
                "limit_usd": s.limit_micro / 1e6,
                "spent_usd": s.spent_micro / 1e6,
                "remaining_usd": s.remaining_micro / 1e6,
                "warn_at": s.warn_at,
            }
            for s in standings
        ],
    }


def remaining(standings: list[Standing]) -> int | None:
    """What the month still allows: the smallest remainder of every budget; None when none applies."""
    return min((s.remaining_micro for s in standings), default=None)


def ack_hint(command: str = "capguard", line: str | None = None) -> str:
    """The command that lifts a spent month: `command` is `capguard-team` under the team wrapper (a plain
    `capguard ack` would not see the team's config); `--line` when a budget line is spent, so the ack finds it."""
    line_flag = f" --line {shlex.quote(line)}" if line else ""
    return f'To go on this month: {command} ack{line_flag} --reason "..."'


def refusal(standings: list[Standing], command: str = "capguard") -> str | None:
    """Why a new run may not start (a budget at 100%), in one sentence; None when it may."""
    over = [s for s in standings if s.state == "over"]
    if not over:
        return None
    first = over[0]
    spent = "; ".join(f"{s.who} has spent {format_usd(s.spent_micro)} of {s.limit_text}" for s in over)
    line = next((s.name for s in over if s.scope == "line"), None)
    return f"monthly cap reached: {spent} for {first.month.label}; it resets {first.month.resets}. " + ack_hint(
        command, line
    )


def warnings(standings: list[Standing]) -> list[str]:
    """One line per budget past its soft threshold but not yet spent."""
    return [
        f"{s.who} has spent {format_usd(s.spent_micro)} ({s.share:.0%}) of {s.limit_text} for {s.month.label}"
        f" (warning at {s.warn_at:.0%}); it resets {s.month.resets}"
        for s in standings
        if s.state == "warn"
    ]


def status_lines(standings: list[Standing]) -> list[str]:
    """`month 2026-11 (Europe/Berlin): dev@example.com: $380.00 of $500.00 (76%), $120.00 left ⚠; ...`"""
    if not standings:
        return []
    marks = {"ok": "", "warn": f" ⚠ past {standings[0].warn_at:.0%}", "over": " ✗ spent: new runs are refused"}
    month = standings[0].month
    parts = [s.summary() + marks[s.state] for s in standings]
    return [f"month {month.label} ({month.zone_name}): " + "; ".join(parts) + f"; resets {month.resets}"]


def ack_limit(standing: Standing, allow_micro: int | None = None) -> int:
    """The limit an ack sets for the rest of the month: what is spent now plus the allowance.

    The allowance defaults to a quarter of the cap; the overshoot before the ack is not charged to it.
    """
    if allow_micro is not None and allow_micro <= 0:
        raise ValueError("an ack's allowance must be greater than zero")
    allowance = allow_micro if allow_micro is not None else round(standing.cap_micro * ACK_SHARE)
    return standing.spent_micro + allowance
