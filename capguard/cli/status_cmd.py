"""`capguard status [--json] [--month]`: the runs under capguard right now, and the month's spend against caps."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from capguard import paths
from capguard.budget.allowance import current_standings
from capguard.cli.options import Flags
from capguard.config.settings import load_settings
from capguard.core import monthly
from capguard.core.errors import CapguardError
from capguard.core.sanitize import printable
from capguard.supervisor.status_board import live_runs


def parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="capguard status",
        description="Show the runs capguard is supervising now "
        "and, under team budgets, your spend this month against its caps.",
    )
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    parser.add_argument("--month", action="store_true", help="only this month's spend against the monthly caps")
    return parser


def run(ns: argparse.Namespace, flags: Flags) -> int:
    problem, standings = None, []
    try:  # the month needs the config and the ledger; live runs need neither, so show them regardless
        standings = current_standings(load_settings(None, flags=flags), Path.cwd())
    except CapguardError as err:
        problem = err
    if ns.month:
        if problem:
            raise problem
        print(
            json.dumps(monthly.as_json(standings), indent=2)
            if ns.json
            else "\n".join(monthly.status_lines(standings)) or "capguard: no monthly cap applies"
        )
        return 0
    _print_runs(live_runs(paths.runs_dir()), standings, as_json=ns.json)
    if problem:
        raise problem
    return 0


def _print_runs(runs: list[dict], standings: list, *, as_json: bool) -> None:
    if as_json:
        print(json.dumps(runs, indent=2))
        return
    for line in monthly.status_lines(standings):
        print(line)
    if not runs:
        print("capguard: no supervised runs right now")
    for run in runs:
        warn = f"  warnings: {', '.join(run['warnings'])}" if run.get("warnings") else ""
        # status files are any local writer's input: escaped, never raw on the terminal
        print(printable(f"{run['run_id']}  {run['agent']:<6}  {run['state']:<8}  {run['summary']}  {run['cwd']}{warn}"))
