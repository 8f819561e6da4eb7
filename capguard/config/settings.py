"""Layered settings with provenance: defaults < team file < user file < repo file < environment < flags.

Parsed and validated once, into one frozen dataclass per section (`Settings.caps`, `.supervise`, `.charge`,
`.output`, `.launch`, `.prices`, `.team`), each value with its exact type; a bad value is a ConfigError that names
its file (or variable, or flag) and key. Each value remembers where it came from (`Settings.origin(key)`), so
`capguard config` can say why a cap is what it is. A repo file that is not trusted, and every layer above a key
the team file locked, may only make the run stricter (core/tighten.py).

Adding a setting:
- a key (`usd = 5`, also `[agents.<name>] usd = 5`): one field in its section's dataclass below (or in
  core/caps.py's Caps) and one entry in KEYS: `Key(section, parser, default, help)`, with `attr=` when the
  field's name is not the key's and `top_level=False` for a key only an [agents.<name>] table may set. It is then
  read from every file, from CAPGUARD_<KEY> (unless `env=False`), shown by `capguard config`, and read as
  `settings.<section>.<field>`. A key that limits a run also goes in core/tighten.py (how it tightens).
- a table of its own (`[team]`, `[models."glob"]`): one field on Settings and one entry in TABLES, a parser of
  that table's layers [(file, table), ...] (lowest precedence first) returning the field's type and naming file
  and key in its errors.
- a section of its own: a frozen dataclass, its name and class in SECTIONS, and the field on Settings.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any, Literal

from capguard import paths
from capguard.agents import NAMES
from capguard.config import trust
from capguard.core import model_caps, team, tighten, units
from capguard.core.caps import Caps
from capguard.core.enums import UnpricedPolicy
from capguard.core.errors import ConfigError
from capguard.core.pricing import ModelPrice
from capguard.core.team import TeamConfig

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on 3.10 only
    import tomli as tomllib

AGENTS = NAMES  # the agents registry is the only list
LIBRARY = "anthropic-sdk"  # the library's tasks (capguard.Budget) take their defaults from [agents.anthropic-sdk]
LIBRARY_KEYS = ("usd", "tokens", "steps", "wall", "warn_at", "unpriced", "task_budget")  # what a Budget uses
OFF = ("off", "none", "unlimited")
MapOverCap = Literal["refuse", "clamp"]


# ---- the sections: what the rest of capguard reads, typed


@dataclass(frozen=True)
class Supervision:
    """How the agent is stopped (the polite stop's grace, then SIGTERM's) and how its files are watched."""

    grace_s: float
    kill_after_s: float
    poll: bool
    meter: Meter  # "files": the agent's own files; "proxy": capguard's metering proxy (strict mode)


@dataclass(frozen=True)
class Charge:
    """Where runs are written and who they are charged to: under a team config these are the team's to say."""

    ledger: str | None  # a SQLite path or a postgresql:// URL; None: the data dir's ledger
    user: str | None  # None: git user.email, else $USER@host (config/identity.py)
    line: str | None


@dataclass(frozen=True)
class Output:
    """What capguard writes besides the agent's own output."""

    title: bool
    quiet: bool
    report_json: str | None
    notify: str


@dataclass(frozen=True)
class Launch:
    """How the agent is started and the cost knobs it reads itself: mostly [agents.<name>] keys."""

    command: str | None
    args: tuple[str, ...]
    map_over_cap: MapOverCap
    model: str | None
    subagent_model: str | None
    max_output_tokens: int | None
    effort: str | None
    disable_thinking: bool
    task_budget: int | None


SECTIONS: dict[str, type] = {
    "caps": Caps,
    "supervise": Supervision,
    "charge": Charge,
    "output": Output,
    "launch": Launch,
}


# ---- parsers of one raw value (from TOML, an environment variable or a flag)


def _positive(parse: Callable[[Any], int | float]) -> Callable[[Any], int | float | None]:
    def parse_cap(raw: Any) -> int | float | None:
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


def _unpriced(raw: Any) -> UnpricedPolicy:
    return UnpricedPolicy(_choice(*(policy.value for policy in UnpricedPolicy))(raw))


def _text(raw: Any) -> str:
    if not isinstance(raw, str):
        raise ValueError(f"{raw!r} is not a string")
    return raw


METERS = ("files", "proxy")
Meter = Literal["files", "proxy"]


def _strict(raw: Any) -> str:
    """`strict = true` is `meter = "proxy"`; `strict = false` is `meter = "files"`."""
    return "proxy" if units.parse_bool(raw) else "files"


def _arg_list(raw: Any) -> tuple[str, ...]:
    if isinstance(raw, str):
        import shlex

        return tuple(shlex.split(raw))
    if not isinstance(raw, list) or not all(isinstance(x, str) for x in raw):
        raise ValueError(f"{raw!r} is not a list of strings")
    return tuple(raw)


@dataclass(frozen=True)
class Key:
    """One key of the files: the section and field it fills, how its raw value is parsed, its default."""

    section: str  # a name in SECTIONS
    parse: Callable[[Any], object]
    default: object
    help: str
    attr: str = ""  # the section's field, when it is not named as the key
    env: bool = True  # read from CAPGUARD_<NAME>
    top_level: bool = True  # False: only an [agents.<name>] table may set it

    def field_name(self, key: str) -> str:
        return self.attr or key


KEYS: dict[str, Key] = {
    "usd": Key("caps", _positive(units.parse_usd), None, "USD cap per run (5, $5, 0.50)", attr="usd_micro"),
    "tokens": Key("caps", _positive(units.parse_tokens), None, "token cap per run, all token kinds (500k, 1.5M)"),
    "wall": Key("caps", _positive(units.parse_duration), None, "wall-clock cap per run (90s, 30m, 1h30m)", "wall_s"),
    "steps": Key("caps", _positive(units.parse_count), None, "cap on model replies per run"),
    "map_tokens": Key("caps", _map_tokens, None, "cap on aider's repo map, in tokens"),
    "stuck": Key(
        "caps", _positive(units.parse_count), 5, "stop when the same tool call fails this many times in a row"
    ),
    "warn_at": Key("caps", units.parse_fraction, 0.8, "soft threshold, as a fraction of each cap"),
    "grace": Key("supervise", units.parse_duration, 3.0, "time a polite stop may take before SIGTERM", "grace_s"),
    "kill_after": Key("supervise", units.parse_duration, 2.0, "time after SIGTERM before SIGKILL", "kill_after_s"),
    "unpriced": Key("caps", _unpriced, UnpricedPolicy.STOP, "what to do with a model nobody can price"),
    "map_over_cap": Key("launch", _choice("refuse", "clamp"), "refuse", "a user's --map-tokens above the cap"),
    "report_json": Key("output", _text, None, "also write the JSON report to this path"),
    "ledger": Key("charge", _text, None, "ledger: a SQLite path or a postgresql:// URL (default: data dir)"),
    "user": Key("charge", _text, None, "who runs are charged to (default: git user.email, else $USER@host)"),
    "line": Key("charge", _text, None, "the budget line runs are charged to, e.g. shared-infra (team budgets)"),
    "title": Key("output", units.parse_bool, True, "show live spend in the terminal title"),
    "poll": Key("supervise", units.parse_bool, False, "watch files by polling (network filesystems)"),
    "quiet": Key("output", units.parse_bool, False, "no summary line at a normal exit, no notes at start"),
    "notify": Key(
        "output", _choice("off", "bell", "desktop"), "off", "at a cap's warning and at a stop: bell, desktop or off"
    ),
    "meter": Key(
        "supervise",
        _choice(*METERS),
        "files",
        "what counts the spend: the agent's files, or capguard's proxy (strict mode)",
    ),
    "command": Key(
        "launch", _text, None, "the agent's executable (default: its usual name on PATH)", env=False, top_level=False
    ),
    "args": Key(
        "launch", _arg_list, (), "extra arguments given to the agent before the user's", env=False, top_level=False
    ),
    # Claude Code's own cost settings, translated to what it reads (ANTHROPIC_MODEL, --task-budget, ...)
    "model": Key("launch", _text, None, "Claude Code's main model (ANTHROPIC_MODEL)", env=False, top_level=False),
    "subagent_model": Key(
        "launch", _text, None, "Claude Code's subagent model (CLAUDE_CODE_SUBAGENT_MODEL)", env=False, top_level=False
    ),
    "max_output_tokens": Key(
        "launch",
        _positive(units.parse_tokens),
        None,
        "Claude Code's max_tokens per request",
        env=False,
        top_level=False,
    ),
    "effort": Key(
        "launch",
        _choice("low", "medium", "high", "xhigh", "max"),
        None,
        "Claude Code's effort level",
        env=False,
        top_level=False,
    ),
    "disable_thinking": Key(
        "launch", units.parse_bool, False, "turn Claude Code's extended thinking off", env=False, top_level=False
    ),
    "task_budget": Key(
        "launch",
        _positive(units.parse_tokens),
        None,
        "Claude's API-side task budget, >= 20,000 tokens",
        env=False,
        top_level=False,
    ),
}
AGENT_ONLY = tuple(key for key, spec in KEYS.items() if not spec.top_level)

# Top-level tables with a parser of their own: name -> the parser of its tables [(file, table), ...], lowest
# precedence first, returning the type of Settings.<name>. Each validates its own keys, naming file and key.
TABLES: dict[str, Callable[[list[tuple[str, Any]]], object]] = {
    "team": team.parse_layers,  # monthly caps: [team], [team.users."dev@example.com"], [team.lines."infra"]
    "models": model_caps.parse_layers,  # caps per model, allowed and denied models: [models."claude-opus-*"]
}
# Other names of a key: `strict = true` in a file, CAPGUARD_STRICT=1 or --strict is meter = "proxy".
ALIASES: dict[str, tuple[str, Callable[[Any], Any]]] = {"strict": ("meter", _strict)}


@dataclass(frozen=True)
class Value:
    """A key's value as parsed (its typed home is the section's field) and where it came from."""

    value: object
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


@dataclass(frozen=True)
class Settings:
    """The effective configuration of one run (or of `capguard config`), parsed once."""

    agent: str | None
    caps: Caps
    supervise: Supervision
    charge: Charge
    output: Output
    launch: Launch
    team: TeamConfig
    models: model_caps.ModelRules  # [models."glob"]: caps per model (also in caps.models), allow/deny lists
    prices: dict[str, ModelPrice] = field(default_factory=dict)
    provenance: Mapping[str, Value] = field(default_factory=dict)  # every key of KEYS, for `capguard config`
    files: list[Path] = field(default_factory=list)
    layers: list[Layer] = field(default_factory=list)
    locks: frozenset[str] = frozenset()  # keys the team config locked
    lock_origin: str | None = None  # the team config that locked them
    ignored: list[Ignored] = field(default_factory=list)

    def origin(self, key: str) -> str:
        """Where `key`'s value came from: "default", a file (with its [agents.<name>] table), a variable, a flag."""
        return self.provenance[key].origin


def _typed(values: Mapping[str, Value]) -> dict[str, Any]:
    """The sections of SECTIONS, each built from its keys' values (parsed by KEYS, so of the fields' types)."""
    fields: dict[str, dict[str, Any]] = {name: {} for name in SECTIONS}
    for key, spec in KEYS.items():
        fields[spec.section][spec.field_name(key)] = values[key].value
    return {name: cls(**fields[name]) for name, cls in SECTIONS.items()}


def _alias(key: str, raw: Any, where: str) -> Any:
    try:
        return ALIASES[key][1](raw)
    except ValueError as err:
        raise ConfigError(f"{where}: {key}: {err}") from None


def _parse(key: str, raw: Any, where: str) -> object:
    try:
        return KEYS[key].parse(raw)
    except ValueError as err:
        raise ConfigError(f"{where}: {key}: {err}") from None


def parse_key(key: str, raw: Any) -> object:
    """One key's raw value parsed as a file's would be (ValueError says why not): for the library's arguments."""
    return KEYS[key].parse(raw)


def _parse_price(model: str, table: Any, where: str) -> ModelPrice:
    if not isinstance(table, dict):
        raise ConfigError(f"{where}: prices.{model}: expected a table with input and output")
    fields = {"input", "output", "cache_read", "cache_write", "cache_write_1h"}
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


def read_toml(path: Path) -> dict[str, Any]:
    return _parse_toml(path, _read_bytes(path))


def _read_bytes(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as err:
        raise ConfigError(f"{path}: cannot read: {err.strerror}") from None


def _parse_toml(path: Path, content: bytes) -> dict[str, Any]:
    try:
        data: dict[str, Any] = tomllib.loads(content.decode("utf-8"))
        return data
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as err:
        raise ConfigError(f"{path}: not valid TOML: {err}") from None


# Under a team config these keys are locked unless its `unlock` frees them: who pays, where it is written,
# what a model costs and the monthly caps are the team's to say.
TEAM_LOCKS = ("team", "prices", "ledger", "user", "line")
LOCKABLE = (*KEYS, "prices", "team", "models")


def _lock_names(path: Path, data: dict[str, Any], key: str) -> set[str]:
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
        self.tables: dict[str, list[tuple[str, Any]]] = {}
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

    def file(self, path: Path, data: dict[str, Any], *, kind: str = "user", trusted: bool = True) -> None:
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
            elif key in TABLES:
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

    def _team_locks(self, path: Path, data: dict[str, Any]) -> frozenset[str]:
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
            self.tables.setdefault(key, []).append((where, raw))
        elif key == "team":  # monthly caps: only lower ones, checked against what the lower layers set
            offered = team.parse_layers([(where, raw)])
            kept, ignored = tighten.tighter_team(raw, offered, team.parse_layers(self.tables.get("team", [])))
            left_out += ignored
            if kept:
                self.tables.setdefault("team", []).append((where, kept))
        elif key == "models":  # more denies, a narrower allow, lower or new per-model caps
            rules = model_caps.parse_layers([(where, raw)])
            now = model_caps.parse_layers(self.tables.get("models", []))
            kept, ignored = tighten.tighter_models(raw, rules, now)
            left_out += ignored
            if kept:
                self.tables.setdefault("models", []).append((where, kept))
        else:
            TABLES[key]([(where, raw)])  # a bad value is an error whoever offers it
            left_out.append(key)

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
    tables: dict[str, Any] = {name: parse(layers.tables.get(name, [])) for name, parse in TABLES.items()}
    typed = _typed(layers.values)
    typed["caps"] = replace(typed["caps"], models=tables["models"].caps)  # one Caps holds every cap of the run
    return Settings(
        agent,
        **typed,
        **tables,
        prices=layers.prices,
        provenance=layers.values,
        files=[layer.path for layer in read],
        layers=read,
        locks=layers.locks,
        lock_origin=layers.lock_origin,
        ignored=layers.ignored,
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
