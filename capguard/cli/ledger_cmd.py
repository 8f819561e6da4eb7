"""`capguard ledger path|status|init`: where the ledger is, what it holds, and starting a new one on purpose."""

from __future__ import annotations

import argparse

from capguard.cli.options import Flags
from capguard.config.settings import load_settings
from capguard.core.units import format_usd
from capguard.ledger import open_ledger
from capguard.ledger.reconcile import open_reconciled


def parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="capguard ledger",
        description="Where the ledger is and what it holds.",
        epilog="init: create the ledger, also where one existed before and is gone (a new, empty month).",
    )
    parser.add_argument("action", choices=["path", "status", "init"])
    return parser


def run(ns: argparse.Namespace, flags: Flags) -> int:
    settings = load_settings(None, flags=flags)
    if ns.action == "init":
        with open_ledger(settings["ledger"], fresh=True) as ledger:
            print(f"ledger: {ledger.path_or_url}")
        with open_reconciled(settings["ledger"]):  # spools of earlier runs go into it now
            return 0
    with open_reconciled(settings["ledger"]) as ledger:
        if ns.action == "path":
            print(ledger.path_or_url)
            return 0
        usd, tokens = ledger.spend()
        print(f"ledger: {ledger.path_or_url}")
        print(f"migrations: {', '.join(ledger.schema_version())}")
        print(f"recorded spend: {format_usd(usd)}, {tokens:,} tokens")
    return 0
