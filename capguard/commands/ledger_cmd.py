"""`capguard ledger path|status`: where the ledger is and what it holds."""

from __future__ import annotations

import argparse

from capguard.config import load_settings
from capguard.ledger import open_ledger
from capguard.units import format_usd


def main(rest: list[str], flags: dict) -> int:
    parser = argparse.ArgumentParser(prog="capguard ledger", description="Where the ledger is and what it holds.")
    parser.add_argument("action", choices=["path", "status"])
    ns = parser.parse_args(rest)
    settings = load_settings(None, flags=flags)
    with open_ledger(settings["ledger"]) as ledger:
        if ns.action == "path":
            print(ledger.path_or_url)
            return 0
        usd, tokens = ledger.spend()
        print(f"ledger: {ledger.path_or_url}")
        print(f"migrations: {', '.join(ledger.schema_version())}")
        print(f"recorded spend: {format_usd(usd)}, {tokens:,} tokens")
    return 0
