"""Layered settings with provenance: defaults < user file < project file < environment < flags.

Each value remembers where it came from, so `capguard config` can say why a cap is what it is.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

from capguard import paths, team, units
from capguard.caps import UNPRICED_POLICIES, Caps
from capguard.errors import ConfigError
from capguard.pricing import ModelPrice

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on 3.10 only
    import tomli as tomllib

AGENTS = ("aider", "claude")  # cli.AGENTS repeats it (tests check they agree)
LIBRARY = "anthropic-sdk"  # the library's tasks (capguard.Budget) take their defaults from [agents.anthropic-sdk]
LIBRARY_KEYS = ("usd", "tokens", "steps", "wall", "warn_at", "unpriced", "task_budget")  # what a Budget uses
OFF = ("off", "none", "unlimited")


def _positive(parse: Callable[[Any], Any]) -> Callable[[Any], Any]:
    def parse_cap(raw: Any) -> Any:
        if isinstance(raw, str) and raw.strip().lower() in OFF:
            return None
        value = parse(raw)
        if value <= 0:
            raise ValueError(f"{raw!r} must be greater than zero (use \"off\" for no cap)")
        return value

    return parse_cap


def _map_tokens(raw: Any) -> int | None:
    if isinstance(raw, str) and raw.strip().lower() in OFF:
        return None
    return units.parse_tokens(raw)


def _choice(*options: str) -> Callable[[Any], str]:
    def parse(raw: Any) -> str:
        value = str(raw).strip().lower()
        if value not in options:
            raise ValueError(f"{raw!r} is not one of {', '.join(options)}")
        return value

    return parse


def _text(raw: Any) -> str:
    if not isinstance(raw, str):
        raise ValueError(f"{raw!r} is not a string")
    return raw


def _arg_list(raw: Any) -> list[str]:
    if isinstance(raw, str):
        import shlex

        return shlex.split(raw)
    if not isinstance(raw, list) or not all(isinstance(x, str) for x in raw):
        raise ValueError(f"{raw!r} is not a list of strings")
    return list(raw)


@dataclass(frozen=True)
class Key:
    parse: Callable[[Any], Any]
    default: Any
    help: str
    env: bool = True  # read from CAPGUARD_<NAME>


KEYS: dict[str, Key] = {
    "usd": Key(_positive(units.parse_usd), None, "USD cap per run (5, $5, 0.50)"),
    "tokens": Key(_positive(units.parse_tokens), None, "token cap per run, all token kinds (500k, 1.5M)"),
    "wall": Key(_positive(units.parse_duration), None, "wall-clock cap per run (90s, 30m, 1h30m)"),
    "steps": Key(_positive(units.parse_count), None, "cap on model replies per run"),
    "map_tokens": Key(_map_tokens, None, "cap on aider's repo map, in tokens"),
    "stuck": Key(_positive(units.parse_count), 5, "stop when the same tool call fails this many times in a row"),
    "warn_at": Key(units.parse_fraction, 0.8, "soft threshold, as a fraction of each cap"),
    "grace": Key(units.parse_duration, 3.0, "time a polite stop may take before SIGTERM"),
    "kill_after": Key(units.parse_duration, 2.0, "time after SIGTERM before SIGKILL"),
    "unpriced": Key(_choice(*UNPRICED_POLICIES), "stop", "what to do with a model nobody can price"),
    "map_over_cap": Key(_choice("refuse", "clamp"), "refuse", "a user's --map-tokens above the cap"),
    "report_json": Key(_text, None, "also write the JSON report to this path"),
    "ledger": Key(_text, None, "ledger: a SQLite path or a postgresql:// URL (default: data dir)"),
    "user": Key(_text, None, "who runs are charged to (default: git user.email, else $USER@host)"),
    "line": Key(_text, None, "the budget line runs are charged to, e.g. shared-infra (team budgets)"),
    "title": Key(units.parse_bool, True, "show live spend in the terminal title"),
    "poll": Key(units.parse_bool, False, "watch files by polling (network filesystems)"),
    "command": Key(_text, None, "the agent's executable (default: its usual name on PATH)", env=False),
    "args": Key(_arg_list, [], "extra arguments given to the agent before the user's", env=False),
    # Claude Code's own cost settings, translated to what it reads (ANTHROPIC_MODEL, --task-budget, ...)
    "model": Key(_text, None, "Claude Code's main model (ANTHROPIC_MODEL)", env=False),
    "subagent_model": Key(_text, None, "Claude Code's subagent model (CLAUDE_CODE_SUBAGENT_MODEL)", env=False),
    "max_output_tokens": Key(_positive(units.parse_tokens), None, "Claude Code's max_tokens per request", env=False),
    "effort": Key(_choice("low", "medium", "high", "xhigh", "max"), None, "Claude Code's effort level", env=False),
    "disable_thinking": Key(units.parse_bool, False, "turn Claude Code's extended thinking off", env=False),
    "task_budget": Key(_positive(units.parse_tokens), None, "Claude's API-side task budget, >= 20,000 tokens", env=False),
}
AGENT_ONLY = ("command", "args", "model", "subagent_model", "max_output_tokens", "effort", "disable_thinking", "task_budget")


@dataclass(frozen=True)
class Value:
    value: Any
    origin: str


@dataclass
class Settings:
    """The effective configuration of one run (or of `capguard config`)."""

    agent: str | None
    values: dict[str, Value]
    prices: dict[str, ModelPrice] = field(default_factory=dict)
    files: list[Path] = field(default_factory=list)
    sections: dict[str, Any] = field(default_factory=dict)  # parsed extension tables, e.g. "team"

    def __getitem__(self, key: str) -> Any:
        return self.values[key].value

    def origin(self, key: str) -> str:
        return self.values[key].origin

    def caps(self) -> Caps:
        return Caps(
            usd_micro=self["usd"],
            tokens=self["tokens"],
            wall_s=self["wall"],
            steps=self["steps"],
            map_tokens=self["map_tokens"],
            stuck=self["stuck"],
            warn_at=self["warn_at"],
            unpriced=self["unpriced"],
        )


def _parse(key: str, raw: Any, where: str) -> Any:
    try:
        return KEYS[key].parse(raw)
    except ValueError as err:
        raise ConfigError(f"{where}: {key}: {err}") from None


def _parse_price(model: str, table: Any, where: str) -> ModelPrice:
    if not isinstance(table, dict):
        raise ConfigError(f"{where}: prices.{model}: expected a table with input and output")
    fields = {"input", "output", "cache_read", "cache_write"}
    unknown = set(table) - fields
    if unknown:
        raise ConfigError(f"{where}: prices.{model}.{sorted(unknown)[0]}: unknown key (known: {', '.join(sorted(fields))})")
    parsed: dict[str, Decimal] = {}
    for name, raw in table.items():
        try:
            parsed[name] = Decimal(str(raw))
        except InvalidOperation:
            raise ConfigError(f"{where}: prices.{model}.{name}: {raw!r} is not a number (USD per million tokens)") from None
        if not parsed[name].is_finite() or parsed[name] < 0:
            raise ConfigError(f"{where}: prices.{model}.{name}: must be a non-negative number (USD per million tokens)")
    for needed in ("input", "output"):
        if needed not in parsed:
            raise ConfigError(f"{where}: prices.{model}: missing {needed} (USD per million tokens)")
    return ModelPrice(**parsed)


def read_toml(path: Path) -> dict:
    try:
        with open(path, "rb") as handle:
            return tomllib.load(handle)
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"{path}: not valid TOML: {err}") from None
    except OSError as err:
        raise ConfigError(f"{path}: cannot read: {err.strerror}") from None


class _Layers:
    """Accumulates values, later layers overriding earlier ones, with their origins."""

    def __init__(self, agent: str | None):
        self.agent = agent
        self.values = {key: Value(spec.default, "default") for key, spec in KEYS.items()}
        self.prices: dict[str, ModelPrice] = {}
        self.sections: dict[str, list[tuple[str, Any]]] = {}

    def set(self, key: str, raw: Any, where: str) -> None:
        self.values[key] = Value(_parse(key, raw, where), where)

    def file(self, path: Path, data: dict) -> None:
        for key, raw in data.items():
            if key == "agents":
                self._agents(path, raw)
            elif key == "prices":
                self._prices(path, raw)
            elif key in KEYS and key not in AGENT_ONLY:
                self.set(key, raw, str(path))
            elif key in AGENT_ONLY:
                raise ConfigError(f"{path}: {key}: belongs in an agent's section, e.g. [agents.aider] or [agents.claude]")
            elif key in EXTENSION_SECTIONS:
                self.sections.setdefault(key, []).append((str(path), raw))
            else:
                raise ConfigError(f"{path}: {key}: unknown key (see config.example.toml)")
        agent_table = data.get("agents", {}).get(self.agent, {}) if self.agent else {}
        for key, raw in agent_table.items():
            self.set(key, raw, f"{path} [agents.{self.agent}]")

    def _agents(self, path: Path, raw: Any) -> None:
        if not isinstance(raw, dict):
            raise ConfigError(f"{path}: agents: expected tables such as [agents.aider]")
        for name, table in raw.items():
            if name not in (*AGENTS, LIBRARY):
                raise ConfigError(f"{path}: agents.{name}: unknown agent (known: {', '.join((*AGENTS, LIBRARY))})")
            if not isinstance(table, dict):
                raise ConfigError(f"{path}: agents.{name}: expected a table")
            for key, value in table.items():
                if key not in KEYS:
                    raise ConfigError(f"{path}: agents.{name}.{key}: unknown key (see config.example.toml)")
                if name == LIBRARY and key not in LIBRARY_KEYS:
                    raise ConfigError(f"{path}: agents.{name}.{key}: not used by library tasks (they take "
                                      f"{', '.join(LIBRARY_KEYS)})")
                _parse(key, value, f"{path} [agents.{name}]")  # validate even for other agents

    def _prices(self, path: Path, raw: Any) -> None:
        if not isinstance(raw, dict):
            raise ConfigError(f"{path}: prices: expected tables such as [prices.\"openai/my-model\"]")
        for model, table in raw.items():
            self.prices[model] = _parse_price(model, table, str(path))

    def env(self, env: Mapping[str, str]) -> None:
        for key, spec in KEYS.items():
            name = f"CAPGUARD_{key.upper()}"
            if spec.env and env.get(name, "") != "":
                self.set(key, env[name], f"environment {name}")

    def flags(self, flags: Mapping[str, Any]) -> None:
        for key, raw in flags.items():
            if raw is not None:
                self.set(key, raw, f"--{key.replace('_', '-')}")


# Top-level tables owned by other features: name -> the parser of its tables [(file, table), ...], lowest
# precedence first. Each owner validates its own keys (naming file and key); the result is Settings.sections[name].
EXTENSION_SECTIONS: dict[str, Callable[[list[tuple[str, Any]]], Any]] = {
    "team": team.parse_layers,  # monthly caps: [team], [team.users."dev@example.com"], [team.lines."infra"]
}


def config_files(cwd: Path, env: Mapping[str, str] | None = None) -> list[Path]:
    """The files that apply, lowest precedence first: the user file, then the nearest project file."""
    found = []
    user_file = paths.user_config_file(env)
    if user_file.is_file():
        found.append(user_file)
    elif env is not None and env.get("CAPGUARD_CONFIG"):
        raise ConfigError(f"CAPGUARD_CONFIG: {user_file}: no such file")
    project = paths.find_project_file(cwd)
    if project is not None and project.resolve() not in {f.resolve() for f in found}:
        found.append(project)
    return found


def load_settings(
    agent: str | None,
    *,
    flags: Mapping[str, Any] | None = None,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    files: list[Path] | None = None,
) -> Settings:
    """Merge every layer; raises ConfigError naming the file (or variable, or flag) and key.

    `files` replaces the discovered config files (the demo runs on flags alone).
    """
    env = os.environ if env is None else env
    layers = _Layers(agent)
    files = config_files(cwd or Path.cwd(), env) if files is None else files
    for path in files:
        layers.file(path, read_toml(path))
    for name, key in AGENT_ENV.get(agent or "", {}).items():
        if env.get(name, "") != "":
            layers.set(key, env[name], f"environment {name}")
    layers.env(env)  # capguard's own variables beat the agent-flavoured ones
    layers.flags(flags or {})
    sections = {name: parse(layers.sections.get(name, [])) for name, parse in EXTENSION_SECTIONS.items()}
    return Settings(agent, layers.values, layers.prices, files, sections)


# Environment variables an agent's users already set, honoured as capguard caps for that agent.
# (Widely described as Claude Code settings, these two are read by nobody but capguard.)
AGENT_ENV: dict[str, dict[str, str]] = {
    "claude": {"ANTHROPIC_COST_BUDGET": "usd", "ANTHROPIC_TOKEN_BUDGET": "tokens"},
}
