"""`capguard show RUN_ID [--json]` (also `capguard report --run RUN_ID`): the story of one run from the ledger."""

from __future__ import annotations

import argparse
import json

from capguard import paths
from capguard.cli.options import Flags
from capguard.config.settings import load_settings
from capguard.ledger.reconcile import open_reconciled
from capguard.reports import run_story

EPILOG = """\
RUN_ID may be the start of a run id, as the RUN column of `capguard report` prints it, if only one run has it.

examples:
  capguard show 01kbz3m4q2xy
  capguard show 01kbz3m4q2xy --json
  capguard report --run 01kbz3m4q2xy
"""


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="capguard show",
        description="The story of one run: its caps and where each came from, every reply with its cost and the "
        "running total, how it was stopped, notes and blind spots.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("run_id", metavar="RUN_ID", help="a run id, or the start of one")
    p.add_argument("--json", action="store_true", help="machine-readable JSON")
    return p


def run(ns: argparse.Namespace, flags: Flags) -> int:
    return show(ns.run_id, flags, as_json=ns.json)


def show(prefix: str, flags: Flags, *, as_json: bool) -> int:
    settings = load_settings(None, flags=flags)
    with open_reconciled(settings.charge.ledger) as ledger:
        data = run_story.load(ledger, prefix, paths.runs_dir())
    print(json.dumps(data, indent=2, default=str) if as_json else "\n".join(run_story.text(data)))
    return 0
