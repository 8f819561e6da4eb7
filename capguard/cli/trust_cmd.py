"""`capguard trust [PATH]` / `capguard untrust [PATH]`: allow a repo's .capguard.toml to set every key, or stop.

Like `direnv allow`: the file's resolved path and sha256 go to the trust store; a changed file is untrusted again.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from capguard import paths
from capguard.config import trust
from capguard.core.errors import ConfigError


def _target(prog: str, rest: list[str], what: str) -> Path:
    parser = argparse.ArgumentParser(prog=prog, description=what)
    parser.add_argument("path", nargs="?", help="a .capguard.toml (default: the nearest one from here up)")
    ns = parser.parse_args(rest)
    if ns.path is None:
        found = paths.find_project_file(Path.cwd())
        if found is None:
            raise ConfigError("no .capguard.toml in this directory or above; name the file: capguard trust PATH")
        return found
    path = Path(ns.path)
    if not path.is_file():
        raise ConfigError(f"{path}: no such file")
    return path


def main(rest: list[str], flags: dict) -> int:
    path = _target(
        "capguard trust",
        rest,
        "Trust a repo's .capguard.toml: its every key applies, as long as it "
        "does not change (an untrusted file may only tighten caps).",
    )
    sha = trust.trust(path)
    print(f"capguard: trusted {path.resolve()} (sha256 {sha[:12]}); it is untrusted again when it changes")
    return 0


def untrust_main(rest: list[str], flags: dict) -> int:
    path = _target("capguard untrust", rest, "Forget a trusted .capguard.toml: it may only tighten caps again.")
    if trust.untrust(path):
        print(f"capguard: {path.resolve()} is no longer trusted: it may only tighten caps")
    else:
        print(f"capguard: {path.resolve()} was not trusted")
    return 0
