"""The table of subcommands: the only list of them. Each is a module here with `parser()` and `run(ns, flags)`.

Stdlib only and lazy: `capguard --help` lists the table without importing any subcommand's module.
"""

from __future__ import annotations

import argparse
import importlib
from typing import NamedTuple, Protocol, cast

from capguard.cli import options
from capguard.cli.options import Flags


class CommandModule(Protocol):
    def parser(self) -> argparse.ArgumentParser: ...

    def run(self, ns: argparse.Namespace, flags: Flags) -> int: ...


class Command(NamedTuple):  # not a dataclass: that import alone costs --help 5 ms
    name: str
    module: str  # under capguard.cli
    summary: str  # one line in `capguard --help`
    accepts: tuple[str, ...] = ()  # the global options it also accepts after its name
    pause_gc: bool = False  # cyclic GC off for the rest of the process (see dispatch)

    def load(self) -> CommandModule:
        return cast(CommandModule, importlib.import_module(f"capguard.cli.{self.module}"))


_TABLE = (
    Command("config", "config_cmd", "the effective settings and where each came from", options.ALL),
    Command("trust", "trust_cmd", "let a repo's .capguard.toml set more than stricter caps"),
    Command("untrust", "untrust_cmd", "stop trusting a repo's .capguard.toml"),
    Command(
        "explain", "explain_cmd", "what a run would be (as --dry-run): argv, env, caps, meter, ledger", options.ALL
    ),
    Command("status", "status_cmd", "the runs under capguard now, and the month against its caps", options.MONTH),
    Command("ack", "ack_cmd", "go on past a spent monthly cap, on the record", options.LEDGER),
    Command("demo", "demo_cmd", "a cap firing on the real aider against a local fake model", options.CAPS),
    Command("ledger", "ledger_cmd", "where the ledger is, what it holds; start a new one", options.LEDGER),
    Command("report", "report_cmd", "spend, runs and stops from the ledger", options.LEDGER),
    Command("show", "show_cmd", "the story of one run: caps and their origins, replies, the stop", options.LEDGER),
    Command("dashboard", "dashboard_cmd", "the dashboard page: charts of spend, runs and caps", options.LEDGER),
    Command("suggest", "suggest_cmd", "caps from the distribution of past runs, as TOML", options.LEDGER),
    Command("import", "import_cmd", "the agents' existing logs into the ledger", options.LEDGER, pause_gc=True),
    Command("completion", "completion_cmd", "a shell completion script: bash, zsh or fish"),
)
COMMANDS: dict[str, Command] = {command.name: command for command in _TABLE}
