"""Monthly budgets against the ledger: a developer's and a budget line's spend and acks this month.

The I/O half of monthly.py, with an injected clock. Runs read it before they start and, through `allowance()`,
while they run, so that every concurrent run of the developer counts; `capguard ack` records through it.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from capguard.config import identity
from capguard.config.settings import Settings
from capguard.core import monthly
from capguard.core.monthly import Month, Standing
from capguard.core.team import TeamConfig
from capguard.ledger import AckRecord, Ledger, normalize_utc
from capguard.ledger.reconcile import open_reconciled


def utc_clock() -> datetime:
    return datetime.now(timezone.utc)


def utc_text(moment: datetime) -> str:
    """Canonical ledger text of an aware datetime."""
    return normalize_utc(moment.isoformat())


def capguard_command(env: Mapping[str, str] | None = None) -> str:
    """The command a hint should name: `capguard-team` when the team wrapper started us (it exports
    CAPGUARD_TEAM_CONFIG); a plain `capguard ack` typed in the user's shell would not see the team's config."""
    env = os.environ if env is None else env
    return "capguard-team" if env.get("CAPGUARD_TEAM_CONFIG") else "capguard"


@dataclass(frozen=True)
class Opening:
    """The month at a run's start: each budget's standing, the refusal (None: it may start), the warnings past
    the soft threshold, and what the month leaves the run (None: no monthly cap)."""

    standings: list[Standing]
    refusal: str | None
    warnings: list[str]
    remaining: int | None


class MonthGuard:
    """The monthly budgets one developer's run on one budget line is charged to (none: `active` is False)."""

    def __init__(
        self,
        ledger: Ledger,
        team: TeamConfig,
        user: str,
        line: str | None,
        *,
        clock: Callable[[], datetime] = utc_clock,
    ):
        self.ledger, self.team, self.user, self.line = ledger, team, user, line
        self.budgets = team.budgets(user, line)
        self._clock = clock

    @property
    def active(self) -> bool:
        return bool(self.budgets)

    def month(self, now: datetime | None = None) -> Month:
        return monthly.month_of(now or self._clock(), self.team.zone)

    def standings(self, *, not_run: str | None = None, now: datetime | None = None) -> list[Standing]:
        """Each budget's spend and limit this month; `not_run` leaves that run's own spend out."""
        month = self.month(now)
        return [standing_of(self.ledger, self.team, budget, month, not_run=not_run) for budget in self.budgets]

    def opening(self) -> Opening:
        """What a run or task about to start is told: refused at a spent month, warned past the soft threshold,
        and capped at what the month leaves."""
        standings = self.standings()
        return Opening(
            standings,
            monthly.refusal(standings, capguard_command()),
            monthly.warnings(standings),
            monthly.remaining(standings),
        )

    def allowance(self, run_id: str) -> int | None:
        """What run `run_id`'s own meter may reach: the month's remainder without this run's spend, plus what
        the run spent before the month began (a run that crosses midnight on the 1st starts the new month afresh).
        """
        return self.allowance_and_standings(run_id)[0]

    def allowance_and_standings(self, run_id: str) -> tuple[int | None, list[Standing]]:
        """allowance(), and the standings it comes from (without this run's spend), for a stop's message."""
        standings = self.standings(not_run=run_id)
        if not standings:
            return None, []
        before, _ = self.ledger.spend(run=run_id, until_utc=utc_text(standings[0].month.start_utc))
        return min(s.remaining_micro for s in standings) + before, standings  # never empty here

    def ack(self, reason: str, *, allow_micro: int | None, host: str) -> list[tuple[Standing, int]]:
        """Record an ack for every spent budget; returns each with the limit it now has for the month."""
        granted, now = [], self._clock()
        for standing in self.standings(now=now):
            if standing.state != "over":
                continue
            limit = monthly.ack_limit(standing, allow_micro)
            self.ledger.record_ack(
                AckRecord(
                    user=self.user,
                    scope=standing.scope,
                    scope_name=standing.name,
                    month=standing.month.label,
                    created_utc=utc_text(now),
                    host=host,
                    reason=reason.strip(),
                    spent_micro_usd=standing.spent_micro,
                    cap_micro_usd=standing.cap_micro,
                    limit_micro_usd=limit,
                )
            )
            granted.append((standing, limit))
        return granted


def standing_of(
    ledger: Ledger, team: TeamConfig, budget: tuple[str, str, int], month: Month, *, not_run: str | None = None
) -> Standing:
    """One budget's (scope, name, cap) spend and acks in `month`; `not_run` leaves that run's own spend out."""
    scope, name, cap = budget
    since, until = utc_text(month.start_utc), utc_text(month.end_utc)
    who = {"user": name} if scope == "user" else {"line": name}
    spent, _ = ledger.spend(**who, since_utc=since, until_utc=until, not_run=not_run)
    acks = ledger.acks(scope, name, since_utc=since, until_utc=until)
    acked = max((row["limit_micro_usd"] for row in acks), default=None)
    return Standing(scope, name, cap, spent, month, team.warn_at, acked)


def team_standings(ledger: Ledger, team: TeamConfig, users: list[str], month: Month) -> list[Standing]:
    """Every monthly budget of the team in `month`: each of `users` (and each user the config names) that has a
    cap, then each capped budget line; the dashboard shows them all."""
    budgets = [("user", user, team.user_cap(user)) for user in sorted(set(users) | set(team.users))]
    budgets += [("line", line, cap) for line, cap in sorted(team.lines.items())]
    return [standing_of(ledger, team, (scope, name, cap), month) for scope, name, cap in budgets if cap is not None]


def month_standings(ledger: Ledger, team: TeamConfig, now: datetime) -> list[Standing]:
    """Every monthly budget of the team this month (`now` in the team's zone), for the dashboard."""
    from capguard.reports.query import user_names  # the ledger's developers; reports sit below budget

    return team_standings(ledger, team, user_names(ledger), monthly.month_of(now, team.zone))


def current_standings(settings: Settings, cwd: Path) -> list[Standing]:
    """This month's standings of the configured user and line; the ledger is opened only if a cap applies."""
    team, line = settings.team, settings.charge.line
    user = identity.user(cwd, settings.charge.user)
    if not team.budgets(user, line):
        return []
    with open_reconciled(settings.charge.ledger) as ledger:
        return MonthGuard(ledger, team, user, line).standings()
