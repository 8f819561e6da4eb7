"""`capguard report [--by KEY] [--since WHEN] [--until WHEN] [--json|--csv]`: spend, runs and caps from the ledger."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path

from capguard.cli.options import Flags
from capguard.config.settings import Settings, load_settings
from capguard.core.errors import ConfigError
from capguard.ledger.reconcile import open_reconciled
from capguard.reports import aggregate, render
from capguard.reports.period import describe, parse_bound
from capguard.reports.query import Period, fetch

EPILOG = """\
spend: cost of the usage events in the period (a run that spans the period's edge counts its part in it).
STOPPED: share of the runs capguard supervised that a cap stopped (imported runs had no caps).
Percentiles are per run, nearest-rank. Days and months are UTC.

examples:
  capguard report --by month
  capguard report --by project --since 2026-11 --csv > projects.csv
  capguard report --by model --since 7d --json
  capguard report --since 30d --html spend.html
  capguard report --run 01kbz3m4q2xy   # one run's story (as capguard show)
"""


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="capguard report",
        description="Spend, runs, stops and per-run distributions.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--by", choices=aggregate.BY, default="month", help="group by (default: month)")
    p.add_argument("--since", metavar="WHEN", help="from: 2026-11-01, 2026-11, 2026-11-01T09:00, or 7d back from now")
    p.add_argument("--until", metavar="WHEN", help="to (a date or month is included whole)")
    p.add_argument("--top", type=int, default=5, metavar="N", help="list the N costliest runs (default 5; 0: none)")
    p.add_argument("--run", metavar="RUN_ID", help="the story of one run instead (as `capguard show RUN_ID`)")
    out = p.add_mutually_exclusive_group()
    out.add_argument("--json", action="store_true", help="machine-readable JSON")
    out.add_argument("--csv", action="store_true", help="one CSV row per group")
    out.add_argument("--html", metavar="FILE", help="the dashboard: one self-contained page, works offline")
    return p


def period_of(since: str | None, until: str | None, now: datetime) -> Period:
    bounds = []
    for flag, raw in (("since", since), ("until", until)):
        try:
            bounds.append(parse_bound(raw, now=now, until=flag == "until") if raw else None)
        except ValueError as err:
            raise ConfigError(f"--{flag}: {err}") from None
    if bounds[0] and bounds[1] and bounds[0] >= bounds[1]:
        raise ConfigError(f"--since ({since}) is not before --until ({until})")
    return Period(*bounds)


def run(
    ns: argparse.Namespace, flags: Flags, *, clock: Callable[[], datetime] = lambda: datetime.now(timezone.utc)
) -> int:
    if ns.run is not None:
        if ns.csv or ns.html:
            raise ConfigError("--run shows one run: as text, or with --json")
        from capguard.cli.show_cmd import show

        return show(ns.run, flags, as_json=ns.json)
    if ns.top < 0:
        raise ConfigError("--top must be 0 or more")
    period = period_of(ns.since, ns.until, clock())
    settings = load_settings(None, flags=flags)
    if ns.html:
        write_page(settings, period, Path(ns.html), clock())
        return 0
    with open_reconciled(settings.charge.ledger) as ledger:
        runs, parts = fetch(ledger, period, ns.by)
        where = ledger.path_or_url
    report = build(
        ns.by, runs, parts, describe(period.since_utc, period.until_utc), where, None if ns.by == "run" else ns.top
    )
    if ns.json:
        print(
            json.dumps(render.as_json(report, {"since_utc": period.since_utc, "until_utc": period.until_utc}), indent=2)
        )
    elif ns.csv:
        sys.stdout.write(render.as_csv(report))
    else:
        print("\n".join(render.text(report)))
    return 0


def write_page(settings: Settings, period: Period, path: Path, now: datetime) -> Path:
    """The dashboard for `period` at `path`, with this month's standings against the team's monthly caps."""
    from capguard.budget.allowance import month_standings
    from capguard.reports.html import write_dashboard

    with open_reconciled(settings.charge.ledger) as ledger:
        standings = month_standings(ledger, settings.team, now)
        try:
            return write_dashboard(ledger, period, path, standings=standings, now=now)
        except OSError as err:
            raise ConfigError(f"cannot write the dashboard to {path} ({err.strerror or err})") from None


def build(by: str, runs: dict, parts: list, period: str, ledger: str, top: int | None) -> render.Report:
    """The whole report from the rows: pure, so tests need no database."""
    groups = aggregate.group_runs(runs, parts, by)
    return render.Report(
        by=by,
        period=period,
        ledger=ledger,
        groups=groups,
        total=aggregate.totals(runs, parts),
        top=aggregate.top_runs(runs, parts, top) if top != 0 else [],
        imported=sum(1 for run in runs.values() if run.status == "imported"),
    )
