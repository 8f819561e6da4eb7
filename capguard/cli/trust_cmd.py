"""`capguard trust [PATH]`: allow a repo's .capguard.toml to set every key (`capguard untrust` undoes it).

Like `direnv allow`: the file's resolved path and sha256 go to the trust store; a changed file is untrusted again.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from capguard import paths
from capguard.cli.options import Flags
from capguard.config import trust
from capguard.core.errors import ConfigError


def path_parser(prog: str, what: str) -> argparse.ArgumentParser:
    """The parser of trust and untrust: an optional .capguard.toml."""
    parser = argparse.ArgumentParser(prog=prog, description=what)
    parser.add_argument("path", nargs="?", help="a .capguard.toml (default: the nearest one from here up)")
    return parser


def target(ns: argparse.Namespace) -> Path:
    """The file named, else the nearest .capguard.toml from here up."""
    if ns.path is None:
        found = paths.find_project_file(Path.cwd())
        if found is None:
            raise ConfigError("no .capguard.toml in this directory or above; name the file: capguard trust PATH")
        return found
    path = Path(ns.path)
    if not path.is_file():
        raise ConfigError(f"{path}: no such file")
    return path


def parser() -> argparse.ArgumentParser:
    return path_parser(
        "capguard trust",
        "Trust a repo's .capguard.toml: its every key applies, as long as it "
        "does not change (an untrusted file may only tighten caps).",
    )


def run(ns: argparse.Namespace, flags: Flags) -> int:
    path = target(ns)
    sha = trust.trust(path)
    print(f"capguard: trusted {path.resolve()} (sha256 {sha[:12]}); it is untrusted again when it changes")
    return 0
