"""`capguard suggest [--per agent|line|project] [--headroom 20%]`: caps from the runs in the ledger, as TOML."""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from datetime import datetime, timezone

from capguard.cli.options import Flags
from capguard.cli.report_cmd import period_of
from capguard.config.settings import load_settings
from capguard.core.errors import ConfigError
from capguard.ledger.reconcile import open_reconciled
from capguard.reports import suggest
from capguard.reports.period import describe
from capguard.reports.query import fetch

EPILOG = """\
Each cap is the 90th percentile of the finished runs (supervised and imported) plus the headroom, rounded up to
two significant figures; wall-clock caps only from supervised runs (an imported session's span includes idle
time); a Claude task budget from output tokens, at least 20,000. Runs a cap stopped count at the figure they
stopped at, so a cap that fires often is suggested low: look at `capguard report` too.

examples:
  capguard suggest                              # [agents.aider] and [agents.claude] for your config
  capguard suggest --per project --since 30d --headroom 50%
  capguard suggest --json
"""


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="capguard suggest",
        description="Suggest caps from the distribution of past runs.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--per",
        choices=suggest.PER,
        default="agent",
        help="one suggestion per agent (default), or per agent and budget line, or per agent and project",
    )
    p.add_argument("--headroom", default="20%", metavar="FRACTION", help="above the p90 (default 20%%; 0.5 or 50%%)")
    p.add_argument("--since", metavar="WHEN", help="only runs from then (2026-11-01, 2026-11, 30d)")
    p.add_argument("--until", metavar="WHEN", help="only runs until then")
    p.add_argument("--min-runs", type=int, default=5, metavar="N", help="suggest nothing from fewer runs (default 5)")
    p.add_argument("--json", action="store_true", help="machine-readable JSON")
    return p


def headroom_of(raw: str) -> float:
    text = raw.strip()
    try:
        value = float(text[:-1]) / 100 if text.endswith("%") else float(text)
    except ValueError:
        raise ConfigError(f"--headroom: {raw!r} is not a fraction (examples: 20%, 0.2)") from None
    if not 0 <= value <= 10:
        raise ConfigError(f"--headroom: {raw!r} must be between 0% and 1000%")
    return value


def run(
    ns: argparse.Namespace, flags: Flags, *, clock: Callable[[], datetime] = lambda: datetime.now(timezone.utc)
) -> int:
    headroom = headroom_of(ns.headroom)
    if ns.min_runs < 1:
        raise ConfigError("--min-runs must be 1 or more")
    period = period_of(ns.since, ns.until, clock())
    settings = load_settings(None, flags=flags)
    with open_reconciled(settings.charge.ledger) as ledger:
        runs, parts = fetch(ledger, period, "run")
    made, few = suggest.suggest(suggest.samples(runs, parts), per=ns.per, headroom=headroom, min_runs=ns.min_runs)
    if ns.json:
        print(
            json.dumps(
                {
                    "per": ns.per,
                    "headroom": headroom,
                    "since_utc": period.since_utc,
                    "until_utc": period.until_utc,
                    "suggestions": [suggest.as_json(s) for s in made],
                    "too_few_runs": [{"agent": a, "scope": s, "runs": n} for a, s, n in few],
                },
                indent=2,
            )
        )
        return 0
    if not made:
        print(
            f"# capguard suggest: no agent{'/' + ns.per if ns.per != 'agent' else ''} has {ns.min_runs} finished"
            f" runs in the ledger ({describe(period.since_utc, period.until_utc)});"
            " `capguard import claude` or `capguard import aider` brings in past sessions"
        )
    else:
        print(
            "\n".join(
                suggest.toml(made, per=ns.per, headroom=headroom, period=describe(period.since_utc, period.until_utc))
            )
        )
    for agent, scope, count in few:
        where = f" on {ns.per} {scope}" if ns.per != "agent" else ""
        print(f"# not enough runs for {agent}{where}: {count} (--min-runs {ns.min_runs})")
    return 0
