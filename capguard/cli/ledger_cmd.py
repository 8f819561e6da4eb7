"""`capguard ledger path|status|init|export|prune`: where the ledger is, what it holds, starting a new one on
purpose, its rows out as CSV or JSON, and deleting the runs of past months."""

from __future__ import annotations

import argparse
import csv
import io
import json
import sys
from collections.abc import Callable
from datetime import datetime, timezone, tzinfo

from capguard.cli.options import Flags
from capguard.cli.report_cmd import period_of
from capguard.config.settings import load_settings
from capguard.core import monthly
from capguard.core.errors import ConfigError
from capguard.core.sanitize import csv_cell
from capguard.core.units import format_usd
from capguard.ledger import Ledger, normalize_utc, open_ledger
from capguard.ledger.reconcile import open_reconciled
from capguard.ledger.store import EXPORT_RUN_COLUMNS, EXPORT_USAGE_COLUMNS
from capguard.reports.period import parse_bound

EPILOG = """\
init: create the ledger, also where one existed before and is gone (a new, empty month).
export: runs (by start) and usage rows (by when they occurred) to stdout. JSON: {"runs": [...], "usage": [...]};
  CSV: one table, a `record` column saying run or usage, and the run's user, line, project, agent on each row.
prune: delete the runs that ended before DATE and their usage rows; DATE may not be in the current month
  (the monthly caps count it). Users and acks stay.

examples:
  capguard ledger export --since 2026-10 --until 2026-10 > october.csv
  capguard ledger export --format json --since 30d
  capguard ledger prune --before 2026-07 --dry-run
"""

# The CSV's columns: which record, then the run's, then the usage row's own (cost and tokens shared by both)
CSV_COLUMNS = ("record", *EXPORT_RUN_COLUMNS, *(c for c in EXPORT_USAGE_COLUMNS if c not in EXPORT_RUN_COLUMNS))


def parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="capguard ledger",
        description="Where the ledger is and what it holds; export its rows; prune past months.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("action", choices=["path", "status", "init", "export", "prune"])
    export = parser.add_argument_group("export")
    export.add_argument("--format", choices=["csv", "json"], default="csv", help="csv (default) or json")
    export.add_argument("--since", metavar="WHEN", help="from: 2026-11-01, 2026-11, 2026-11-01T09:00, or 7d back")
    export.add_argument("--until", metavar="WHEN", help="to (a date or month is included whole)")
    prune = parser.add_argument_group("prune")
    prune.add_argument("--before", metavar="DATE", help="delete the runs that ended before DATE (2026-07-01, 2026-07)")
    prune.add_argument("--dry-run", action="store_true", help="say what would be deleted, delete nothing")
    return parser


def run(
    ns: argparse.Namespace, flags: Flags, *, clock: Callable[[], datetime] = lambda: datetime.now(timezone.utc)
) -> int:
    _check_options(ns)
    settings = load_settings(None, flags=flags)
    if ns.action == "init":
        with open_ledger(settings.charge.ledger, fresh=True) as ledger:
            print(f"ledger: {ledger.path_or_url}")
        with open_reconciled(settings.charge.ledger):  # spools of earlier runs go into it now
            return 0
    now = clock()
    if ns.action == "export":
        period = period_of(ns.since, ns.until, now)  # bad bounds fail before the ledger is opened
    if ns.action == "prune":
        before = _prune_bound(ns.before, now, settings.team.zone)
    with open_reconciled(settings.charge.ledger) as ledger:
        if ns.action == "path":
            print(ledger.path_or_url)
        elif ns.action == "export":
            _export(ledger, ns.format, period.since_utc, period.until_utc)
        elif ns.action == "prune":
            _prune(ledger, before, ns.before, dry_run=ns.dry_run)
        else:
            usd, tokens = ledger.spend()
            print(f"ledger: {ledger.path_or_url}")
            print(f"migrations: {', '.join(ledger.schema_version())}")
            print(f"recorded spend: {format_usd(usd)}, {tokens:,} tokens")
    return 0


def _check_options(ns: argparse.Namespace) -> None:
    """Each action's options with it only: a --before on export is a mistake worth saying, not ignoring."""
    given = {
        "export": [name for name in ("since", "until") if getattr(ns, name)]
        + (["format"] if ns.format != "csv" else []),
        "prune": [name for name in ("before", "dry_run") if getattr(ns, name)],
    }
    for action, names in given.items():
        if names and ns.action != action:
            flags = ", ".join("--" + name.replace("_", "-") for name in names)
            raise ConfigError(f"{flags}: only with `capguard ledger {action}`")
    if ns.action == "prune" and not ns.before:
        raise ConfigError("prune: --before DATE is required (the runs that ended before it are deleted)")


def _prune_bound(raw: str, now: datetime, zone: tzinfo) -> str:
    """--before as UTC text, refused when it reaches into the current month (in the team's time zone): the
    monthly caps count this month's rows, and a prune must never change what a running month allows."""
    try:
        before = parse_bound(raw, now=now)
    except ValueError as err:
        raise ConfigError(f"--before: {err}") from None
    month = monthly.month_of(now, zone)
    start = normalize_utc(month.start_utc.isoformat())
    if before > start:
        raise ConfigError(
            f"--before {raw}: that reaches into the current month ({month.label}, from {start[:16]} UTC), whose rows "
            f"the monthly caps count; give {start[:10]} or earlier"
        )
    return before


def _prune(ledger: Ledger, before: str, raw: str, *, dry_run: bool) -> None:
    done = ledger.prune(before, dry_run=dry_run)
    verb = "would delete" if dry_run else "deleted"
    print(
        f"capguard: {verb} {done.runs:,} run{'s' if done.runs != 1 else ''} that ended before {raw}"
        f" ({before[:16]} UTC) and their {done.usage:,} usage row{'s' if done.usage != 1 else ''}"
        f" ({format_usd(done.cost_micro_usd)}) from {ledger.path_or_url}" + ("; nothing was changed" if dry_run else "")
    )


def _export(ledger: Ledger, form: str, since: str | None, until: str | None) -> None:
    runs = ledger.export_runs(since_utc=since, until_utc=until)
    usage = ledger.export_usage(since_utc=since, until_utc=until)
    if form == "json":
        json.dump({"runs": runs, "usage": usage}, sys.stdout, indent=2, ensure_ascii=False)
        sys.stdout.write("\n")
        return
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for record, rows in (("run", runs), ("usage", usage)):
        for row in rows:
            # every text cell from a name outside capguard's control (model, project, user): no formula runs
            writer.writerow([record, *(_cell(row.get(column)) for column in CSV_COLUMNS[1:])])
    sys.stdout.write(out.getvalue())


def _cell(value: object) -> object:
    if value is None:
        return ""
    return value if isinstance(value, int) else csv_cell(value)
