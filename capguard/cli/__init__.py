"""The command line: `capguard [OPTIONS] AGENT [AGENT ARGS...]` and the subcommands in cli/commands.py.

Thin: parses, loads settings, calls the library; errors become one line and an exit code here only.
"""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Sequence

from capguard.cli.commands import COMMANDS
from capguard.cli.dispatch import AGENTS, EPILOG, parser, run, run_command
from capguard.cli.options import CAP_FLAGS
from capguard.core.errors import CapguardError

__all__ = ["AGENTS", "CAP_FLAGS", "COMMANDS", "EPILOG", "main", "parser", "run_command"]


def main(argv: Sequence[str] | None = None) -> int:
    try:
        return run(sys.argv[1:] if argv is None else argv)
    except CapguardError as err:
        from capguard.core.redact import redact_text  # only on the error path: --help and --version stay fast

        print(f"capguard: error: {redact_text(str(err))}", file=sys.stderr)
        return err.exit_code
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # `capguard report | head`: the reader left; say nothing more, as cat(1) does
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # the interpreter's final flush must not raise again
        return 128 + signal.SIGPIPE
