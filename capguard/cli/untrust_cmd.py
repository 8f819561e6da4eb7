"""`capguard untrust [PATH]`: forget a trusted .capguard.toml, which may then only tighten caps again.

The other half of `capguard trust` (trust_cmd.py), whose parser it shares.
"""

from __future__ import annotations

import argparse

from capguard.cli.options import Flags
from capguard.cli.trust_cmd import path_parser, target
from capguard.config import trust


def parser() -> argparse.ArgumentParser:
    return path_parser("capguard untrust", "Forget a trusted .capguard.toml: it may only tighten caps again.")


def run(ns: argparse.Namespace, flags: Flags) -> int:
    path = target(ns)
    if trust.untrust(path):
        print(f"capguard: {path.resolve()} is no longer trusted: it may only tighten caps")
    else:
        print(f"capguard: {path.resolve()} was not trusted")
    return 0
