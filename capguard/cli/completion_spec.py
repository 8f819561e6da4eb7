"""What a shell completes for capguard, read from the CLI's own definition: the main parser, the agents registry
and the table of subcommands with their parsers. The scripts (completion_scripts.py) only render it."""

from __future__ import annotations

import argparse
from typing import NamedTuple

from capguard.agents import NAMES as AGENTS
from capguard.cli import dispatch
from capguard.cli.commands import COMMANDS


class Opt(NamedTuple):
    flags: tuple[str, ...]  # ("-h", "--help")
    help: str
    value: str | None = None  # the metavar of an option that takes a value; None for a switch
    choices: tuple[str, ...] = ()
    files: bool = False  # the value is a path


class Cmd(NamedTuple):
    name: str
    help: str
    options: tuple[Opt, ...] = ()
    words: tuple[str, ...] = ()  # the choices of its first positional argument (ledger path|status|init)
    files: bool = False  # a positional argument is a path


class Spec(NamedTuple):
    options: tuple[Opt, ...]  # before the agent or command
    agents: tuple[Cmd, ...]  # what follows an agent is the agent's to complete
    commands: tuple[Cmd, ...]

    @property
    def valued(self) -> tuple[str, ...]:
        """The global options that take a value: a completer skips that value to find the agent or command."""
        return tuple(flag for opt in self.options if opt.value for flag in opt.flags)


def _is_path(name: str) -> bool:
    return "PATH" in name.upper()


def _actions(parser: argparse.ArgumentParser) -> list[argparse.Action]:
    # argparse has no public list of a parser's arguments; shtab and argcomplete read this same attribute
    return [action for action in parser._actions if action.help != argparse.SUPPRESS]


def _opt(action: argparse.Action) -> Opt:
    name = str(action.metavar or action.dest.upper())
    value = name if action.nargs != 0 else None
    text = " ".join((action.help or "").replace("%%", "%").split())
    choices = tuple(str(c) for c in action.choices or ())
    return Opt(tuple(action.option_strings), text, value, choices, bool(value) and _is_path(name) and not choices)


def _cmd(name: str, summary: str, parser: argparse.ArgumentParser) -> Cmd:
    actions = _actions(parser)
    positionals = [a for a in actions if not a.option_strings]
    words = tuple(str(c) for c in positionals[0].choices or ()) if positionals else ()
    files = any(_is_path(str(a.metavar or a.dest)) for a in positionals)
    return Cmd(name, summary, tuple(_opt(a) for a in actions if a.option_strings), words, files)


def build() -> Spec:
    """The spec of this capguard (imports every subcommand's module: for `capguard completion` only)."""
    main = [_opt(a) for a in _actions(dispatch.parser()) if a.option_strings]
    agents = tuple(Cmd(name, f"run {name} under the caps") for name in AGENTS)
    commands = tuple(_cmd(c.name, c.summary, dispatch.command_parser(c)) for c in COMMANDS.values())
    return Spec(tuple(main), agents, commands)
