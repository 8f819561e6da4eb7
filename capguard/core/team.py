"""The `[team]` table of the config files: monthly caps per developer, per budget line, and a default.

Pure parsing and validation, every error naming the file and the key; the month arithmetic is in monthly.py.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from capguard.core import units
from capguard.core.errors import ConfigError
from capguard.core.monthly import DEFAULT_WARN_AT

if TYPE_CHECKING:
    from zoneinfo import ZoneInfo

OFF = ("off", "none", "unlimited")
KEYS = ("monthly_usd", "monthly_warn_at", "timezone", "users", "lines")
ENTRY_KEYS = ("monthly_usd",)


@dataclass(frozen=True)
class TeamConfig:
    """Monthly caps in micro-dollars (None: no cap); `origins` says which file set each value."""

    monthly_usd: int | None = None  # every developer without an entry of their own
    warn_at: float = DEFAULT_WARN_AT
    timezone: str = "UTC"
    users: Mapping[str, int | None] = field(default_factory=dict)
    lines: Mapping[str, int | None] = field(default_factory=dict)
    origins: Mapping[str, str] = field(default_factory=dict)

    @property
    def zone(self) -> ZoneInfo:
        from zoneinfo import ZoneInfo  # not at start-up: most runs never need a month boundary's zone

        return ZoneInfo(self.timezone)

    def user_cap(self, user: str) -> int | None:
        return self.users.get(user, self.monthly_usd)  # an entry of None ("off") wins over the default

    def line_cap(self, line: str | None) -> int | None:
        return self.lines.get(line) if line else None

    def budgets(self, user: str, line: str | None) -> list[tuple[str, str, int]]:
        """(scope, name, cap) of each monthly budget a run of `user` on `line` is charged to."""
        found = [("user", user, self.user_cap(user)), ("line", line, self.line_cap(line))]
        return [(scope, name, cap) for scope, name, cap in found if name and cap is not None]


def _monthly_usd(raw: Any) -> int | None:
    if isinstance(raw, str) and raw.strip().lower() in OFF:
        return None
    if isinstance(raw, bool):
        raise ValueError(f"{raw!r} is not an amount in USD")
    value = units.parse_usd(raw)
    if value <= 0:
        raise ValueError(f'{raw!r} must be greater than zero (use "off" for no cap)')
    return value


def _zone(raw: Any) -> str:
    if not isinstance(raw, str) or not raw.strip():
        raise ValueError(f"{raw!r} is not a time zone name (examples: UTC, Europe/Berlin)")
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    try:
        ZoneInfo(raw.strip())
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"{raw!r} is not a known time zone (examples: UTC, Europe/Berlin)") from None
    return raw.strip()


_PARSERS = {"monthly_usd": _monthly_usd, "monthly_warn_at": units.parse_fraction, "timezone": _zone}
_FIELDS = {"monthly_usd": "monthly_usd", "monthly_warn_at": "warn_at", "timezone": "timezone"}


def _value(parse: Callable[[Any], Any], raw: Any, where: str, key: str) -> Any:
    try:
        return parse(raw)
    except ValueError as err:
        raise ConfigError(f"{where}: {key}: {err}") from None


def _entries(kind: str, raw: Any, where: str) -> dict[str, int | None]:
    if not isinstance(raw, dict):
        raise ConfigError(f'{where}: team.{kind}: expected tables such as [team.{kind}."name"] with monthly_usd')
    found = {}
    for name, table in raw.items():
        key = f'team.{kind}."{name}"'
        if not isinstance(table, dict):
            raise ConfigError(f"{where}: {key}: expected a table such as [{key}] with monthly_usd = 500")
        unknown = sorted(set(table) - set(ENTRY_KEYS))
        if unknown:
            raise ConfigError(f"{where}: {key}.{unknown[0]}: unknown key (known: {', '.join(ENTRY_KEYS)})")
        if "monthly_usd" not in table:
            raise ConfigError(f"{where}: {key}: missing monthly_usd")
        found[name] = _value(_monthly_usd, table["monthly_usd"], where, f"{key}.monthly_usd")
    return found


def parse_layers(layers: list[tuple[str, Any]]) -> TeamConfig:
    """Merge the [team] tables of the config files, lowest precedence first; later files win key by key
    (and name by name in `users` and `lines`)."""
    values: dict[str, Any] = {}
    users: dict[str, int | None] = {}
    lines: dict[str, int | None] = {}
    origins: dict[str, str] = {}
    for where, table in layers:
        if not isinstance(table, dict):
            raise ConfigError(f"{where}: team: expected a table ([team])")
        for key, raw in table.items():
            if key in ("users", "lines"):
                entries = _entries(key, raw, where)
                (users if key == "users" else lines).update(entries)
                origins.update({f"{key}.{name}": where for name in entries})
            elif key in _PARSERS:
                values[_FIELDS[key]] = _value(_PARSERS[key], raw, where, f"team.{key}")
                origins[key] = where
            else:
                raise ConfigError(f"{where}: team.{key}: unknown key (known: {', '.join(KEYS)})")
    return TeamConfig(**values, users=users, lines=lines, origins=origins)
