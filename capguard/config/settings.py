"""Layered settings with provenance: defaults < team file < user file < repo file < environment < flags.

Each value remembers where it came from, so `capguard config` can say why a cap is what it is. A repo file that
is not trusted, and every layer above a key the team file locked, may only make the run stricter (tighten.py).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

from capguard import paths
from capguard.agents import NAMES
from capguard.config import trust
from capguard.core import team, tighten, units
from capguard.core.caps import UNPRICED_POLICIES, Caps
from capguard.core.errors import ConfigError
from capguard.core.pricing import ModelPrice

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on 3.10 only
    import tomli as tomllib

AGENTS = NAMES  # the agents registry is the only list
LIBRARY = "anthropic-sdk"  # the library's tasks (capguard.Budget) take their defaults from [agents.anthropic-sdk]
LIBRARY_KEYS = ("usd", "tokens", "steps", "wall", "warn_at", "unpriced", "task_budget")  # what a Budget uses
OFF = ("off", "none", "unlimited")


def _positive(parse: Callable[[Any], Any]) -> Callable[[Any], Any]:
    def parse_cap(raw: Any) -> Any:
        if isinstance(raw, str) and raw.strip().lower() in OFF:
            return None
        value = parse(raw)
        if value <= 0:
            raise ValueError(f'{raw!r} must be greater than zero (use "off" for no cap)')
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


def _patterns(raw: Any) -> list[str]:
    """Model name patterns (fnmatch, e.g. "claude-opus-*"): a TOML list, or a comma-separated string."""
    if isinstance(raw, str):
        return [part.strip() for part in raw.split(",") if part.strip()]
    if not isinstance(raw, list) or not all(isinstance(x, str) and x.strip() for x in raw):
        raise ValueError(f"{raw!r} is not a list of model patterns")
    return [x.strip() for x in raw]


METERS = ("files", "proxy")


def _strict(raw: Any) -> str:
    """`strict = true` is `meter = "proxy"`; `strict = false` is `meter = "files"`."""
    return "proxy" if units.parse_bool(raw) else "files"


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
    "quiet": Key(units.parse_bool, False, "no summary line at a normal exit, no notes at start"),
    "meter": Key(
        _choice(*METERS), "files", "what counts the spend: the agent's files, or capguard's proxy (strict mode)"
    ),
    "allow": Key(_patterns, [], "strict mode: the only models the proxy forwards (patterns, e.g. claude-*)"),
    "deny": Key(_patterns, [], "strict mode: models the proxy refuses (patterns, e.g. claude-opus-*)"),
    "command": Key(_text, None, "the agent's executable (default: its usual name on PATH)", env=False),
    "args": Key(_arg_list, [], "extra arguments given to the agent before the user's", env=False),
    # Claude Code's own cost settings, translated to what it reads (ANTHROPIC_MODEL, --task-budget, ...)
    "model": Key(_text, None, "Claude Code's main model (ANTHROPIC_MODEL)", env=False),
    "subagent_model": Key(_text, None, "Claude Code's subagent model (CLAUDE_CODE_SUBAGENT_MODEL)", env=False),
    "max_output_tokens": Key(_positive(units.parse_tokens), None, "Claude Code's max_tokens per request", env=False),
    "effort": Key(_choice("low", "medium", "high", "xhigh", "max"), None, "Claude Code's effort level", env=False),
    "disable_thinking": Key(units.parse_bool, False, "turn Claude Code's extended thinking off", env=False),
    "task_budget": Key(
        _positive(units.parse_tokens), None, "Claude's API-side task budget, >= 20,000 tokens", env=False
    ),
}
# Other names of a key: `strict = true` in a file, CAPGUARD_STRICT=1 or --strict is meter = "proxy".
ALIASES: dict[str, tuple[str, Callable[[Any], Any]]] = {"strict": ("meter", _strict)}
AGENT_ONLY = (
    "command",
    "args",
    "model",
    "subagent_model",
    "max_output_tokens",
    "effort",
    "disable_thinking",
    "task_budget",
)


@dataclass(frozen=True)
class Value:
    value: Any
    origin: str


@dataclass(frozen=True)
class Layer:
    """One config file and how far it is believed: the team file and the user's own file are; a repo's file
    only once `capguard trust` recorded its content."""

    path: Path
    kind: str  # "team" | "user" | "repo"
    trusted: bool


@dataclass(frozen=True)
class Ignored:
    """Keys a source set that did not apply: an untrusted file loosening the run, or a team-locked key."""

    source: str  # a file, "environment NAME" or "--flag"
    keys: tuple[str, ...]
    why: str  # "untrusted" | "locked"


@dataclass
class Settings:
    """The effective configuration of one run (or of `capguard config`)."""

    agent: str | None
    values: dict[str, Value]
    prices: dict[str, ModelPrice] = field(default_factory=dict)
    files: list[Path] = field(default_factory=list)
    sections: dict[str, Any] = field(default_factory=dict)  # parsed extension tables, e.g. "team"
    layers: list[Layer] = field(default_factory=list)
    locks: frozenset[str] = frozenset()  # keys the team config locked
    lock_origin: str | None = None  # the team config that locked them
    ignored: list[Ignored] = field(default_factory=list)

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


def _alias(key: str, raw: Any, where: str) -> Any:
    try:
        return ALIASES[key][1](raw)
    except ValueError as err:
        raise ConfigError(f"{where}: {key}: {err}") from None


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
        raise ConfigError(
            f"{where}: prices.{model}.{sorted(unknown)[0]}: unknown key (known: {', '.join(sorted(fields))})"
        )
    parsed: dict[str, Decimal] = {}
    for name, raw in table.items():
        try:
            parsed[name] = Decimal(str(raw))
        except InvalidOperation:
            raise ConfigError(
                f"{where}: prices.{model}.{name}: {raw!r} is not a number (USD per million tokens)"
            ) from None
        if not parsed[name].is_finite() or parsed[name] < 0:
            raise ConfigError(f"{where}: prices.{model}.{name}: must be a non-negative number (USD per million tokens)")
    for needed in ("input", "output"):
        if needed not in parsed:
            raise ConfigError(f"{where}: prices.{model}: missing {needed} (USD per million tokens)")
    return ModelPrice(**parsed)


def read_toml(path: Path) -> dict:
    return _parse_toml(path, _read_bytes(path))


def _read_bytes(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as err:
        raise ConfigError(f"{path}: cannot read: {err.strerror}") from None


def _parse_toml(path: Path, content: bytes) -> dict:
    try:
        return tomllib.loads(content.decode("utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as err:
        raise ConfigError(f"{path}: not valid TOML: {err}") from None


# Under a team config these keys are locked unless its `unlock` frees them: who pays, where it is written,
# what a model costs and the monthly caps are the team's to say.
TEAM_LOCKS = ("team", "prices", "ledger", "user", "line")
LOCKABLE = (*KEYS, "prices", "team")


def _lock_names(path: Path, data: dict, key: str) -> set[str]:
    raw = data.get(key, [])
    if not isinstance(raw, list) or not all(isinstance(x, str) for x in raw):
        raise ConfigError(f'{path}: {key}: expected a list of keys, e.g. {key} = ["usd", "ledger"]')
    unknown = sorted(set(raw) - set(LOCKABLE))
    if unknown:
        raise ConfigError(
            f"{path}: {key}: {unknown[0]!r} is not a key that can be locked (known: {', '.join(LOCKABLE)})"
        )
    return set(raw)


class _Layers:
    """Accumulates values, later layers overriding earlier ones, with their origins.

    A layer that is not trusted, and any layer above the team config for a key it locked, is *held*: it may
    only make the run stricter (tighten.py); what it cannot set is collected in `ignored`.
    """

    def __init__(self, agent: str | None):
        self.agent = agent
        self.values = {key: Value(spec.default, "default") for key, spec in KEYS.items()}
        self.prices: dict[str, ModelPrice] = {}
        self.sections: dict[str, list[tuple[str, Any]]] = {}
        self.locks: frozenset[str] = frozenset()
        self.lock_origin: str | None = None
        self.ignored: list[Ignored] = []

    def set(self, key: str, raw: Any, where: str) -> None:
        self.values[key] = Value(_parse(key, raw, where), where)

    def offer(self, key: str, raw: Any, where: str, *, held: bool, left_out: list[str], name: str = "") -> None:
        if key in ALIASES:
            name = name or key
            key, raw = ALIASES[key][0], _alias(key, raw, where)
        value = _parse(key, raw, where)  # a bad value is an error whoever offers it
        held = held or key in self.locks
        if held and not tighten.stricter_or_same(key, value, self.values[key].value):
            left_out.append(name or key)
        elif not (held and value == self.values[key].value):  # a held repeat leaves the origin where it was
            self.values[key] = Value(value, where)

    def _note(self, source: str, left_out: list[str], why: str) -> None:
        if left_out:
            self.ignored.append(Ignored(source, tuple(dict.fromkeys(left_out)), why))

    def file(self, path: Path, data: dict, *, kind: str = "user", trusted: bool = True) -> None:
        locks = self._team_locks(path, data) if kind == "team" else None
        held = not trusted
        left_out: list[str] = []
        for key, raw in data.items():
            if key in ("lock", "unlock"):
                if kind != "team":
                    raise ConfigError(f"{path}: {key}: only the team config (CAPGUARD_TEAM_CONFIG) locks keys")
            elif key == "agents":
                self._agents(path, raw)
            elif key == "prices":
                self._prices(path, raw, held, left_out)
            elif (key in KEYS or key in ALIASES) and key not in AGENT_ONLY:
                self.offer(key, raw, str(path), held=held, left_out=left_out)
            elif key in AGENT_ONLY:
                raise ConfigError(
                    f"{path}: {key}: belongs in an agent's section, e.g. [agents.aider] or [agents.claude]"
                )
            elif key in EXTENSION_SECTIONS:
                self._section(key, raw, str(path), held, left_out)
            else:
                raise ConfigError(f"{path}: {key}: unknown key (see config.example.toml)")
        agent_table = data.get("agents", {}).get(self.agent, {}) if self.agent else {}
        for key, raw in agent_table.items():
            self.offer(
                key,
                raw,
                f"{path} [agents.{self.agent}]",
                held=held,
                left_out=left_out,
                name=f"agents.{self.agent}.{key}",
            )
        self._note(str(path), left_out, "untrusted" if held else "locked")
        if locks is not None:  # the team file's own keys are not held by its locks; every later layer is
            self.locks, self.lock_origin = locks, str(path)

    def team_ledger(self, env: Mapping[str, str]) -> None:
        """The team wrapper's CAPGUARD_TEAM_LEDGER, when the team config names no ledger itself."""
        if env.get("CAPGUARD_TEAM_LEDGER", "") != "" and self.values["ledger"].origin == "default":
            self.set("ledger", env["CAPGUARD_TEAM_LEDGER"], "environment CAPGUARD_TEAM_LEDGER")

    def _team_locks(self, path: Path, data: dict) -> frozenset[str]:
        return frozenset((set(TEAM_LOCKS) | _lock_names(path, data, "lock")) - _lock_names(path, data, "unlock"))

    def _agents(self, path: Path, raw: Any) -> None:
        if not isinstance(raw, dict):
            raise ConfigError(f"{path}: agents: expected tables such as [agents.aider]")
        for name, table in raw.items():
            if name not in (*AGENTS, LIBRARY):
                raise ConfigError(f"{path}: agents.{name}: unknown agent (known: {', '.join((*AGENTS, LIBRARY))})")
            if not isinstance(table, dict):
                raise ConfigError(f"{path}: agents.{name}: expected a table")
            for key, value in table.items():
                if key not in KEYS and key not in ALIASES:
                    raise ConfigError(f"{path}: agents.{name}.{key}: unknown key (see config.example.toml)")
                if name == LIBRARY and key not in LIBRARY_KEYS:
                    raise ConfigError(
                        f"{path}: agents.{name}.{key}: not used by library tasks (they take {', '.join(LIBRARY_KEYS)})"
                    )
                if key in ALIASES:
                    _alias(key, value, f"{path} [agents.{name}]")
                else:
                    _parse(key, value, f"{path} [agents.{name}]")  # validate even for other agents

    def _prices(self, path: Path, raw: Any, held: bool, left_out: list[str]) -> None:
        if not isinstance(raw, dict):
            raise ConfigError(f'{path}: prices: expected tables such as [prices."openai/my-model"]')
        held = held or "prices" in self.locks  # a price of zero would switch every USD cap off
        for model, table in raw.items():
            price = _parse_price(model, table, str(path))
            if held and self.prices.get(model) != price:
                left_out.append("prices")
            elif not held:
                self.prices[model] = price

    def _section(self, key: str, raw: Any, where: str, held: bool, left_out: list[str]) -> None:
        if not (held or key in self.locks):
            self.sections.setdefault(key, []).append((where, raw))
        elif key != "team":
            left_out.append(key)
        else:  # monthly caps: only lower ones, checked against what the lower layers set
            offered = team.parse_layers([(where, raw)])
            kept, ignored = tighten.tighter_team(raw, offered, team.parse_layers(self.sections.get("team", [])))
            left_out += ignored
            if kept:
                self.sections.setdefault("team", []).append((where, kept))

    def env(self, env: Mapping[str, str], names: Mapping[str, str] | None = None) -> None:
        """CAPGUARD_<KEY> (or the `names` given: variable -> key); the team's locks hold here too."""
        names = names or {
            **{f"CAPGUARD_{key.upper()}": key for key, spec in KEYS.items() if spec.env},
            **{f"CAPGUARD_{alias.upper()}": alias for alias in ALIASES},
        }
        for name, key in names.items():
            if env.get(name, "") != "":
                left_out: list[str] = []
                self.offer(key, env[name], f"environment {name}", held=False, left_out=left_out)
                self._note(f"environment {name}", left_out, "locked")

    def flags(self, flags: Mapping[str, Any]) -> None:
        for key, raw in flags.items():
            if raw is not None:
                flag = f"--{key.replace('_', '-')}"
                left_out: list[str] = []
                self.offer(key, raw, flag, held=False, left_out=left_out)
                self._note(f"{flag} {raw}", left_out, "locked")


# Top-level tables owned by other features: name -> the parser of its tables [(file, table), ...], lowest
# precedence first. Each owner validates its own keys (naming file and key); the result is Settings.sections[name].
EXTENSION_SECTIONS: dict[str, Callable[[list[tuple[str, Any]]], Any]] = {
    "team": team.parse_layers,  # monthly caps: [team], [team.users."dev@example.com"], [team.lines."infra"]
}


def discover(cwd: Path, env: Mapping[str, str] | None = None) -> list[tuple[Path, str]]:
    """The files that apply and their kind, lowest precedence first: the team config ($CAPGUARD_TEAM_CONFIG,
    set by wrappers/capguard-team), the user file, then the nearest repo file (.capguard.toml)."""
    found: list[tuple[Path, str]] = []
    env = os.environ if env is None else env
    if env.get("CAPGUARD_TEAM_CONFIG"):
        team_file = Path(env["CAPGUARD_TEAM_CONFIG"])
        if not team_file.is_file():
            raise ConfigError(f"CAPGUARD_TEAM_CONFIG: {team_file}: no such file")
        found.append((team_file, "team"))
    user_file = paths.user_config_file(env)
    if user_file.is_file():
        found.append((user_file, "user"))
    elif env.get("CAPGUARD_CONFIG"):
        raise ConfigError(f"CAPGUARD_CONFIG: {user_file}: no such file")
    project = paths.find_project_file(cwd)
    if project is not None:
        found.append((project, "repo"))
    seen: set[Path] = set()
    unique = []
    for path, kind in found:  # a file named twice is read once, as the most trusted of its kinds
        if path.resolve() not in seen:
            seen.add(path.resolve())
            unique.append((path, kind))
    return unique


def config_files(cwd: Path, env: Mapping[str, str] | None = None) -> list[Path]:
    """The files that apply, lowest precedence first."""
    return [path for path, _ in discover(cwd, env)]


def load_settings(
    agent: str | None,
    *,
    flags: Mapping[str, Any] | None = None,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    files: list[Path] | None = None,
) -> Settings:
    """Merge every layer; raises ConfigError naming the file (or variable, or flag) and key.

    `files` replaces the discovered config files, all trusted (the demo runs on flags alone).
    """
    env = os.environ if env is None else env
    layers = _Layers(agent)
    found = discover(cwd or Path.cwd(), env) if files is None else [(path, "user") for path in files]
    read: list[Layer] = []
    for path, kind in found:
        content = _read_bytes(path)  # hashed and parsed from the same bytes: what is trusted is what is used
        layer = Layer(path, kind, kind != "repo" or trust.is_trusted(path, content))
        layers.file(path, _parse_toml(path, content), kind=kind, trusted=layer.trusted)
        if kind == "team":
            layers.team_ledger(env)
        read.append(layer)
    if AGENT_ENV.get(agent or ""):
        layers.env(env, AGENT_ENV[agent or ""])
    layers.env(env)  # capguard's own variables beat the agent-flavoured ones
    layers.flags(flags or {})
    sections = {name: parse(layers.sections.get(name, [])) for name, parse in EXTENSION_SECTIONS.items()}
    return Settings(
        agent,
        layers.values,
        layers.prices,
        [layer.path for layer in read],
        sections,
        read,
        layers.locks,
        layers.lock_origin,
        layers.ignored,
    )


def notices(settings: Settings) -> list[str]:
    """One stderr line per source whose keys were ignored, saying why and what to do."""
    lines = []
    for item in settings.ignored:
        keys = ", ".join(item.keys)
        if item.why == "untrusted":
            lines.append(
                f"capguard: ignored {keys} in {item.source}: an untrusted repo file may only tighten caps;"
                f" to trust it: capguard trust {item.source}"
            )
        else:
            lines.append(
                f"capguard: ignored {item.source}: {keys} locked by the team config {settings.lock_origin}"
                " (only a stricter value is allowed)"
            )
    return lines


# Environment variables an agent's users already set, honoured as capguard caps for that agent.
# (Widely described as Claude Code settings, these two are read by nobody but capguard.)
AGENT_ENV: dict[str, dict[str, str]] = {
    "claude": {"ANTHROPIC_COST_BUDGET": "usd", "ANTHROPIC_TOKEN_BUDGET": "tokens"},
}
