"""The global options (caps, --ledger, --line, switches): one table, added to the main parser and to subcommands.

Stdlib only: the main parser is built from this on every start, --help and --version included.
"""

from __future__ import annotations

import argparse
from collections.abc import Iterable, Mapping
from typing import NamedTuple, TypeAlias

Flags: TypeAlias = Mapping[str, str | None]  # config key -> the flag's raw text; config/settings.py parses and names it


class Option(NamedTuple):  # not a dataclass: that import alone costs --help 5 ms
    flag: str
    dest: str  # the config key it sets
    metavar: str | None  # None: a switch, which sets `const`
    text: str
    const: str | None = None


# the values stay strings so config/settings.py parses them and names them in its errors
OPTIONS: tuple[Option, ...] = (
    Option("--usd", "usd", "AMOUNT", "USD cap (5, $5, 0.50)"),
    Option("--tokens", "tokens", "N", "token cap, all kinds of tokens (500k, 1.5M)"),
    Option("--wall", "wall", "DURATION", "wall-clock cap (90s, 30m, 1h30m)"),
    Option("--steps", "steps", "N", "cap on model replies"),
    Option("--map-tokens", "map_tokens", "N", "cap on aider's repo map, in tokens"),
    Option("--stuck", "stuck", "N", "stop when the same tool call fails N times in a row (default 5)"),
    Option("--warn-at", "warn_at", "FRACTION", "soft warning threshold (0.8 or 80%%)"),
    Option("--grace", "grace", "DURATION", "time a polite stop may take before SIGTERM (default 3s)"),
    Option("--kill-after", "kill_after", "DURATION", "time after SIGTERM before SIGKILL (default 2s)"),
    Option("--unpriced", "unpriced", "POLICY", "a model nobody can price: stop | tokens-only | warn"),
    Option("--report-json", "report_json", "PATH", "also write the run's JSON report here"),
    Option("--ledger", "ledger", "PATH_OR_URL", "ledger database (SQLite path or postgresql:// URL)"),
    Option("--line", "line", "NAME", "the budget line this run is charged to (team budgets)"),
    Option("--notify", "notify", "MODE", "at a cap's warning and at a stop: bell | desktop | off (default)"),
    Option("--no-title", "title", None, "leave the terminal title alone", const="false"),
    Option("--poll", "poll", None, "watch files by polling (network filesystems)", const="true"),
    Option("--quiet", "quiet", None, "no summary line at a normal exit, no notes at start", const="true"),
    Option(
        "--strict", "strict", None, "meter through capguard's proxy: no call uncounted, no cap overshot", const="true"
    ),
    Option("--meter", "meter", "files|proxy", "what counts the spend (default files; proxy = --strict)"),
)
BY_FLAG = {option.flag: option for option in OPTIONS}
CAP_FLAGS = [o.flag for o in OPTIONS if o.metavar is not None]  # the options that take a value

# groups a subcommand names in the table to accept them after its name too
LEDGER = ("--ledger",)
MONTH = ("--ledger", "--line")
CAPS = tuple(f for f in CAP_FLAGS if f not in MONTH)
ALL = tuple(BY_FLAG)


def add_options(
    parser: argparse.ArgumentParser, flags: Iterable[str], *, group: str | None = None, keep_unset: bool = True
) -> None:
    """Add the options named by `flags` to `parser`, or to a group of it titled `group`.

    Without `keep_unset` an option not given leaves no attribute at all, so a subcommand's parse does not undo the
    same option given before the subcommand's name.
    """
    target = parser.add_argument_group(group) if group else parser
    unset = None if keep_unset else argparse.SUPPRESS
    for flag in flags:
        option = BY_FLAG[flag]
        if option.metavar is None:
            target.add_argument(
                flag, dest=option.dest, action="store_const", const=option.const, default=unset, help=option.text
            )
        else:
            target.add_argument(flag, dest=option.dest, metavar=option.metavar, default=unset, help=option.text)


def flags_of(ns: argparse.Namespace, before: Flags | None = None) -> dict[str, str | None]:
    """Every config key a global option sets: from `ns`, else from `before` (given before the subcommand)."""
    before = before or {}
    return {o.dest: getattr(ns, o.dest, before.get(o.dest)) for o in OPTIONS}


def takes_value(token: str) -> bool:
    """Whether the option `token` (before the agent or command) consumes the next token as its value.

    Resolves unique prefixes (`--us 5`) as argparse does; an unknown or ambiguous option takes none, and the parse
    of the options then names it in its error.
    """
    if "=" in token or not token.startswith("--"):
        return False
    found = [o for o in OPTIONS if o.flag == token] or [o for o in OPTIONS if o.flag.startswith(token)]
    return len(found) == 1 and found[0].metavar is not None


def split(argv: list[str]) -> int | None:
    """The index of the agent or command in `argv`: the first word that is neither an option nor an option's value.

    Everything after it belongs to the agent (byte for byte) or to the subcommand's own parser.
    """
    index = 0
    while index < len(argv):
        token = argv[index]
        if token == "--":
            return index + 1 if index + 1 < len(argv) else None
        if not token.startswith("-") or token == "-":
            return index
        index += 2 if takes_value(token) else 1
    return None
