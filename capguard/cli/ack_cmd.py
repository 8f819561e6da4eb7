"""`capguard ack --reason TEXT [--allow AMOUNT] [--line NAME]`: go on past a spent monthly cap, on the record.

For every monthly budget of yours that is spent (your own, and your budget line's), the ack sets this month's
limit to what is spent now plus the allowance (default: a quarter of the cap), and records who, when and why.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from capguard.budget.allowance import MonthGuard, capguard_command
from capguard.cli.options import Flags
from capguard.config import identity
from capguard.config.settings import load_settings
from capguard.core import monthly, units
from capguard.core.errors import ConfigError
from capguard.core.units import format_usd
from capguard.ledger.reconcile import open_reconciled


def parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="capguard ack",
        description="Acknowledge a spent monthly cap: new runs may start again this month, within an allowance. "
        "Recorded in the ledger with your reason.",
    )
    parser.add_argument("--reason", required=True, help="why you go on past the cap (recorded in the ledger)")
    parser.add_argument(
        "--allow",
        metavar="AMOUNT",
        help=f"how much more may be spent this month (default: {monthly.ACK_SHARE * 100:.0f}%% of the cap)",
    )
    parser.add_argument("--line", metavar="NAME", help="the budget line (default: --line or the `line` config key)")
    return parser


def _allowance(raw: str | None) -> int | None:
    if raw is None:
        return None
    try:
        value = units.parse_usd(raw)
    except ValueError as err:
        raise ConfigError(f"--allow: {err}") from None
    if value <= 0:
        raise ConfigError(f"--allow: {raw!r} must be greater than zero")
    return value


def run(ns: argparse.Namespace, flags: Flags) -> int:
    reason = ns.reason.strip()
    if not reason:
        raise ConfigError("--reason: say why you go on past the cap; it is recorded in the ledger")
    allow = _allowance(ns.allow)
    settings = load_settings(None, flags={**flags, "line": ns.line or flags.get("line")})
    user = identity.user(Path.cwd(), settings.charge.user)
    with open_reconciled(settings.charge.ledger) as ledger:
        guard = MonthGuard(ledger, settings.team, user, settings.charge.line)
        if not guard.active:
            print(
                f"capguard: no monthly cap applies to {user}"
                + (f" or budget line {settings.charge.line}" if settings.charge.line else "")
                + "; nothing to acknowledge"
                # the team's caps live in its config, which only the wrapper points at
                + (" (a team budget? use capguard-team ack)" if capguard_command() == "capguard" else ""),
                file=sys.stderr,
            )
            return 1
        granted = guard.ack(reason, allow_micro=allow, host=identity.host())
        if not granted:
            standings = guard.standings()
            print(
                "capguard: nothing to acknowledge, no monthly cap is spent: "
                + "; ".join(s.summary() for s in standings),
                file=sys.stderr,
            )
            return 1
    for standing, limit in granted:
        print(
            f"capguard: acknowledged for {standing.who}: {format_usd(standing.spent_micro)} spent of"
            f" {standing.limit_text}; new runs may spend {format_usd(limit - standing.spent_micro)} more"
            f" (limit {format_usd(limit)}) until {standing.month.resets}. Recorded in {ledger.path_or_url}."
        )
    return 0
