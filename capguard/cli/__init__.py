"""The command line: `capguard [OPTIONS] AGENT [AGENT ARGS...]` and the subcommands.

Thin: parses, loads settings, calls the library; errors become one line and an exit code here only.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from collections.abc import Callable, Sequence

from capguard import __version__
from capguard.agents import NAMES
from capguard.core.errors import CapguardError

AGENTS = NAMES  # the agents registry (stdlib only: --help and --version still start fast)

EPILOG = """\
exit status:
  the agent's own status when no cap fired (128+N if it died of signal N)
  124  wall-clock cap (as timeout(1))      122  USD cap
  121  token cap                           120  steps cap
  119  aider repo-map cap                  118  stuck loop
  117  monthly cap                         116  unpriced model (unpriced = "stop")
  115  capguard could not count (blind file, failed write): it stopped the agent
  129/143  capguard got SIGHUP/SIGTERM and stopped the agent
  2  bad flags or config    3  ledger error    126/127  agent not executable / not installed

examples:
  capguard --usd 5 --wall 30m aider --model sonnet src/app.py
  alias aider='capguard aider'      # caps from ~/.config/capguard/config.toml or .capguard.toml
  capguard trust                    # let this repo's .capguard.toml do more than tighten caps
  capguard demo                     # a cap firing on a real aider against a local fake model
"""

# flag -> config key; the values stay strings so config.py parses and names them in errors
CAP_FLAGS = {
    "--usd": ("usd", "AMOUNT", "USD cap (5, $5, 0.50)"),
    "--tokens": ("tokens", "N", "token cap, all kinds of tokens (500k, 1.5M)"),
    "--wall": ("wall", "DURATION", "wall-clock cap (90s, 30m, 1h30m)"),
    "--steps": ("steps", "N", "cap on model replies"),
    "--map-tokens": ("map_tokens", "N", "cap on aider's repo map, in tokens"),
    "--stuck": ("stuck", "N", "stop when the same tool call fails N times in a row (default 5)"),
    "--warn-at": ("warn_at", "FRACTION", "soft warning threshold (0.8 or 80%%)"),
    "--grace": ("grace", "DURATION", "time a polite stop may take before SIGTERM (default 3s)"),
    "--kill-after": ("kill_after", "DURATION", "time after SIGTERM before SIGKILL (default 2s)"),
    "--unpriced": ("unpriced", "POLICY", "a model nobody can price: stop | tokens-only | warn"),
    "--report-json": ("report_json", "PATH", "also write the run's JSON report here"),
    "--ledger": ("ledger", "PATH_OR_URL", "ledger database (SQLite path or postgresql:// URL)"),
    "--line": ("line", "NAME", "the budget line this run is charged to (team budgets)"),
}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="capguard",
        usage="capguard [OPTIONS] AGENT [AGENT ARGS...]\n       capguard {config,trust,untrust,status,demo,ledger,report,suggest,import,ack} ...",
        description="Run an AI coding agent (aider, claude) under hard caps: USD, tokens, wall-clock, "
        "steps, repo map. Everything after AGENT goes to the agent untouched.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"capguard {__version__}")
    for flag, (dest, metavar, text) in CAP_FLAGS.items():
        parser.add_argument(flag, dest=dest, metavar=metavar, help=text)
    parser.add_argument(
        "--no-title", dest="title", action="store_const", const="false", help="leave the terminal title alone"
    )
    parser.add_argument(
        "--poll", dest="poll", action="store_const", const="true", help="watch files by polling (network filesystems)"
    )
    parser.add_argument(
        "command",
        metavar="AGENT|COMMAND",
        help="aider, claude; or config, trust, untrust, status, demo, ledger, report, suggest, import, ack",
    )
    parser.add_argument("rest", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
    return parser


def _flags(ns: argparse.Namespace) -> dict[str, str | None]:
    keys = [dest for dest, _, _ in CAP_FLAGS.values()] + ["title", "poll"]
    return {key: getattr(ns, key) for key in keys}


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    ns = _parser().parse_args(argv)
    try:
        return _dispatch(ns)
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


def _dispatch(ns: argparse.Namespace) -> int:
    from capguard.config.settings import load_settings

    if ns.command in AGENTS:
        from capguard.config.settings import notices
        from capguard.run import run_agent

        settings = load_settings(ns.command, flags=_flags(ns))
        for line in notices(settings):  # what a repo file or a flag could not change, before the agent starts
            print(line, file=sys.stderr)
        return run_agent(ns.command, ns.rest, settings)
    command = COMMANDS.get(ns.command)
    if command is None:
        known = ", ".join([*AGENTS, *COMMANDS])
        raise CapguardError(f"unknown agent or command {ns.command!r} (known: {known})")
    return command(ns.rest, _flags(ns))


def _cmd_config(rest: list[str], flags: dict) -> int:
    from capguard.cli import config_cmd

    return config_cmd.main(rest, flags)


def _cmd_status(rest: list[str], flags: dict) -> int:
    from capguard.cli import status_cmd

    return status_cmd.main(rest, flags)


def _cmd_demo(rest: list[str], flags: dict) -> int:
    from capguard.cli import demo_cmd

    return demo_cmd.main(rest, flags)


def _cmd_ledger(rest: list[str], flags: dict) -> int:
    from capguard.cli import ledger_cmd

    return ledger_cmd.main(rest, flags)


def _cmd_import(rest: list[str], flags: dict) -> int:
    import gc

    from capguard.cli import import_cmd

    # The import pauses cyclic GC (`collector_paused`); turned back on, its first collection would walk every
    # object the import left alive (40 ms after a 1 GB import), and so would the one at interpreter exit
    # (frozen objects are left out of it): 60-90 ms in a process that is about to end anyway.
    gc.disable()
    try:
        return import_cmd.main(rest, flags)
    finally:
        gc.freeze()


def _cmd_untrust(rest: list[str], flags: dict) -> int:
    from capguard.cli import trust_cmd

    return trust_cmd.untrust_main(rest, flags)


def _module_command(name: str) -> Callable[[list[str], dict], int]:
    def run(rest: list[str], flags: dict) -> int:
        import importlib

        return importlib.import_module(f"capguard.cli.{name}_cmd").main(rest, flags)

    return run


COMMANDS: dict[str, Callable[[list[str], dict], int]] = {
    "config": _cmd_config,
    "status": _cmd_status,
    "demo": _cmd_demo,
    "ledger": _cmd_ledger,
    "report": _module_command("report"),
    "suggest": _module_command("suggest"),
    "import": _cmd_import,
    "ack": _module_command("ack"),
    "trust": _module_command("trust"),
    "untrust": _cmd_untrust,
}
