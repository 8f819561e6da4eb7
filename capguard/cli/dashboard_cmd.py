"""`capguard dashboard [--since WHEN] [--until WHEN] [--no-open]`: the dashboard page, opened in a browser.

Written to the data dir (owner-only: it names developers and their spend); without a desktop, its path is printed.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from datetime import datetime, timezone

from capguard.cli.options import Flags
from capguard.cli.report_cmd import period_of, write_page
from capguard.config.settings import load_settings


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="capguard dashboard",
        description="Spend per day, cost per run, caps fired, tokens by model, the month against its caps: one "
        "self-contained page that works offline (`capguard report --html FILE` writes it anywhere).",
    )
    p.add_argument("--since", metavar="WHEN", default="30d", help="from (default 30d: the last 30 days)")
    p.add_argument("--until", metavar="WHEN", help="to (a date or month is included whole)")
    p.add_argument("--no-open", action="store_true", help="print the page's path instead of opening a browser")
    return p


def run(
    ns: argparse.Namespace, flags: Flags, *, clock: Callable[[], datetime] = lambda: datetime.now(timezone.utc)
) -> int:
    from capguard.reports.html import dashboard_path, show

    now = clock()
    path = write_page(load_settings(None, flags=flags), period_of(ns.since, ns.until, now), dashboard_path(), now)
    if ns.no_open or not show(path):
        print(path)
    return 0
