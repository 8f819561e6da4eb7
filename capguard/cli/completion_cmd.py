"""`capguard completion bash|zsh|fish`: print a shell completion script made from capguard's own CLI.

The table of subcommands, their parsers and the agents registry are read when the script is printed, so a new
subcommand, option or agent completes without anyone editing a script.
"""

from __future__ import annotations

import argparse
import sys

from capguard.cli.completion_scripts import RENDERERS
from capguard.cli.options import Flags

EPILOG = """\
bash:  source <(capguard completion bash)          # in ~/.bashrc
zsh:   capguard completion zsh > "${fpath[1]}/_capguard"
fish:  capguard completion fish > ~/.config/fish/completions/capguard.fish
"""


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="capguard completion",
        description="Print a shell completion script for capguard's agents, subcommands and options.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("shell", choices=sorted(RENDERERS), help="the shell to complete in")
    return p


def run(ns: argparse.Namespace, flags: Flags) -> int:
    from capguard.cli import completion_spec  # it builds every subcommand's parser: only when a script is asked for

    sys.stdout.write(RENDERERS[ns.shell](completion_spec.build()))
    return 0
