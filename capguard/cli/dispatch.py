"""From argv to an agent's run or a subcommand: the main parser, the split at the agent or command, one dispatch.

Global options go before the agent or command, and also after a command's name; after an agent, nothing is parsed.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING

from capguard import __version__
from capguard.agents import NAMES as AGENTS
from capguard.cli import options
from capguard.cli.commands import COMMANDS, Command
from capguard.cli.options import Flags
from capguard.core.errors import CapguardError

if TYPE_CHECKING:  # --help and --version import no settings
    from capguard.config.settings import Settings

USAGE = "capguard [OPTIONS] AGENT [AGENT ARGS...]\n       capguard [OPTIONS] COMMAND [COMMAND OPTIONS...]"

EPILOG = """\
exit status:
  the agent's own status when no cap fired (128+N if it died of signal N)
  124  wall-clock cap (as timeout(1))      122  USD cap
  121  token cap                           120  steps cap
  119  aider repo-map cap                  118  stuck loop
  117  monthly cap                         116  unpriced model (unpriced = "stop")
  115  capguard could not count (blind file, failed write): it stopped the agent
  114  a cap on one model's spend or tokens ([models."claude-opus-*"])
  129/143  capguard got SIGHUP/SIGTERM and stopped the agent
  2  bad flags or config    3  ledger error    126/127  agent not executable / not installed

examples:
  capguard --usd 5 --wall 30m aider --model sonnet src/app.py
  alias aider='capguard aider'      # caps from ~/.config/capguard/config.toml or .capguard.toml
  capguard report --by project --ledger postgresql://db/capguard
  capguard trust                    # let this repo's .capguard.toml do more than tighten caps
  capguard demo                     # a cap firing on a real aider against a local fake model
"""


def listing() -> str:
    """One line per agent and per subcommand, for `capguard --help`."""
    width = max(len(name) for name in [*AGENTS, *COMMANDS]) + 2
    lines = ["agents (everything after the agent's name goes to it untouched):"]
    lines += [f"  {name:<{width}}run {name} under the caps" for name in AGENTS]
    lines += ["", "commands (capguard COMMAND --help; --ledger and the like also after COMMAND):"]
    lines += [f"  {c.name:<{width}}{c.summary}" for c in COMMANDS.values()]
    return "\n".join(lines) + "\n\n"


def parser() -> argparse.ArgumentParser:
    """The main parser: the global options and the agent or command (what follows it is not its business)."""
    main = argparse.ArgumentParser(
        prog="capguard",
        usage=USAGE,
        description="Run an AI coding agent under hard caps: USD, tokens, wall-clock, steps, repo map. "
        "Everything after AGENT goes to the agent untouched.",
        epilog=listing() + EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    main.add_argument("--version", action="version", version=f"capguard {__version__}")
    options.add_options(main, options.ALL)
    main.add_argument(
        "--dry-run",
        action="store_true",
        help="say what the run would be (argv, env, caps and their origins, meter, ledger) and start nothing",
    )
    main.add_argument("command", metavar="AGENT|COMMAND", help="an agent or a command, listed below")
    return main


def run(argv: Sequence[str]) -> int:
    argv = list(argv)
    at = options.split(argv)
    main = parser()
    if at is None:
        main.parse_args(argv)  # --help, --version, or argparse's error for the missing agent: each exits
        main.error("the following arguments are required: AGENT|COMMAND")
    # only the options and the name go through argparse: what follows the name is never seen by it
    ns = main.parse_args(argv[: at + 1])
    flags = options.flags_of(ns)
    if ns.command in AGENTS:
        if ns.dry_run:
            return dry_run(ns.command, argv[at + 1 :], flags)
        return run_agent(ns.command, argv[at + 1 :], flags)
    if ns.dry_run:
        raise CapguardError(f"--dry-run goes with an agent (capguard --dry-run aider ...), not with {ns.command!r}")
    command = COMMANDS.get(ns.command)
    if command is None:
        known = ", ".join([*AGENTS, *COMMANDS])
        raise CapguardError(f"unknown agent or command {ns.command!r} (known: {known})")
    return _last_in_process(command, argv[at + 1 :], flags)


def run_agent(agent: str, args: list[str], flags: Flags) -> int:
    from capguard.run import run_agent as supervise

    return supervise(agent, args, _settings(agent, flags))


def dry_run(agent: str, args: list[str], flags: Flags) -> int:
    """`capguard --dry-run AGENT ...`: what the run would be (`capguard explain`), nothing started."""
    from capguard.cli.explain_cmd import explain

    return explain(agent, args, _settings(agent, flags))


def _settings(agent: str, flags: Flags) -> Settings:
    from capguard.config.settings import load_settings, notices

    settings = load_settings(agent, flags=flags)
    for line in notices(settings):  # what a repo file or a flag could not change, before the agent starts
        print(line, file=sys.stderr)
    return settings


def command_parser(command: Command) -> argparse.ArgumentParser:
    """The subcommand's own parser, with the global options it takes after its name."""
    sub = command.load().parser()
    if command.accepts:
        options.add_options(sub, command.accepts, group="global options (here or before the command)", keep_unset=False)
    return sub


def run_command(command: Command | str, args: Sequence[str], before: Flags) -> int:
    """Run a subcommand on its arguments; `before` holds the global options given before its name."""
    command = command if isinstance(command, Command) else COMMANDS[command]
    ns = command_parser(command).parse_args(list(args))
    flags = options.flags_of(ns, before)  # an option after the name wins over the same one before it
    return command.load().run(ns, flags)


def _last_in_process(command: Command, args: Sequence[str], before: Flags) -> int:
    """`run_command` in a process that ends with it (the console script, not a test calling `run_command`)."""
    if not command.pause_gc:
        return run_command(command, args, before)
    import gc

    # The import pauses cyclic GC (`collector_paused`); turned back on, its first collection would walk every
    # object the import left alive (40 ms after a 1 GB import), and so would the one at interpreter exit
    # (frozen objects are left out of it): 60-90 ms in a process that is about to end anyway.
    gc.disable()
    try:
        return run_command(command, args, before)
    finally:
        gc.freeze()
