"""The `[models]` table of the config files: caps per model (a glob on its name) and the models a run may use.

    [models]
    deny = ["*-preview"]            # refused by the metering proxy, in the provider's error format
    allow = ["claude-*", "gpt-5*"]  # when set, every other model is refused
    [models."claude-opus-*"]
    usd = 2                         # this model's spend in the run, whichever meter runs
    tokens = "2M"

Pure parsing, matching and the cap decision; every error names the file and the key.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from capguard.core import units
from capguard.core.errors import ConfigError

OFF = ("off", "none", "unlimited")
LISTS = ("allow", "deny")
CAP_KEYS = ("usd", "tokens")


@dataclass(frozen=True)
class ModelCap:
    """A cap on the models whose name matches `pattern` (their spend and tokens added up); None: no cap."""

    pattern: str
    usd_micro: int | None = None
    tokens: int | None = None
    origin: str = ""

    def as_json(self) -> dict[str, Any]:
        return {
            "models": self.pattern,
            "usd": None if self.usd_micro is None else self.usd_micro / 1_000_000,
            "tokens": self.tokens,
        }


@dataclass(frozen=True)
class ModelRules:
    caps: tuple[ModelCap, ...] = ()
    allow: tuple[str, ...] = ()  # empty: every model is allowed
    deny: tuple[str, ...] = ()


def matches(pattern: str, model: str | None) -> bool:
    """Whether a glob names `model`: case-insensitive, with or without its provider prefix
    (`claude-opus-*` matches `anthropic/claude-opus-4-1`, `anthropic/*` matches it too)."""
    if not model:
        return False
    low, glob = model.lower(), pattern.lower()
    return fnmatch.fnmatchcase(low, glob) or ("/" in low and fnmatch.fnmatchcase(low.rsplit("/", 1)[1], glob))


def refusal(rules: ModelRules, model: str, shown: str | None = None) -> str | None:
    """Why `model` may not be used in this run, or None; the whole name is matched, `shown` is how the message
    names it (a name from a request, made printable and short)."""
    name = model if shown is None else shown
    for pattern in rules.deny:
        if matches(pattern, model):
            return f"model {name} is denied by the configuration ([models] deny has {pattern!r})"
    if rules.allow and not any(matches(pattern, model) for pattern in rules.allow):
        return f"model {name} is not in the allowed models ([models] allow = {list(rules.allow)!r})"
    return None


def caps_of(rules: ModelRules, model: str) -> list[ModelCap]:
    return [cap for cap in rules.caps if matches(cap.pattern, model)]


@dataclass(frozen=True)
class Crossed:
    """A model cap reached: which, and by what (`usd` or `tokens`, used so far)."""

    cap: ModelCap
    kind: str
    used: int

    def describe(self) -> str:
        if self.kind == "usd":
            return (
                f"{self.cap.pattern} cost {units.format_usd(self.used)} reached its "
                f"{units.format_usd(self.cap.usd_micro or 0)} cap"
            )
        return (
            f"{self.cap.pattern} used {units.format_tokens(self.used)} tokens, reaching its "
            f"{units.format_tokens(self.cap.tokens or 0)}-token cap"
        )

    @property
    def over(self) -> float:
        """How far past the cap (USD or tokens)."""
        if self.kind == "usd":
            return (self.used - (self.cap.usd_micro or 0)) / 1_000_000
        return self.used - (self.cap.tokens or 0)


def used_by(cap: ModelCap, by_model: Mapping[str, tuple[int, int]]) -> tuple[int, int]:
    """(micro-USD, tokens) of the models this cap names, from {model: (micro-USD, tokens)}."""
    cost = tokens = 0
    for model, (micro, count) in by_model.items():
        if matches(cap.pattern, model):
            cost, tokens = cost + micro, tokens + count
    return cost, tokens


def crossed(caps: Iterable[ModelCap], by_model: Mapping[str, tuple[int, int]]) -> Crossed | None:
    """The first model cap the spend so far reached, or None."""
    for cap in caps:
        cost, tokens = used_by(cap, by_model)
        if cap.usd_micro is not None and cost >= cap.usd_micro:
            return Crossed(cap, "usd", cost)
        if cap.tokens is not None and tokens >= cap.tokens:
            return Crossed(cap, "tokens", tokens)
    return None


def _cap_value(raw: Any, parse: Any) -> int | None:
    if isinstance(raw, str) and raw.strip().lower() in OFF:
        return None
    if isinstance(raw, bool):
        raise ValueError(f"{raw!r} is not a number")
    value = int(parse(raw))
    if value <= 0:
        raise ValueError(f'{raw!r} must be greater than zero (use "off" for no cap)')
    return value


def _globs(raw: Any, where: str, key: str) -> tuple[str, ...]:
    if not isinstance(raw, list) or not all(isinstance(x, str) and x.strip() for x in raw):
        raise ConfigError(f'{where}: models.{key}: expected a list of model names or globs, e.g. ["claude-opus-*"]')
    return tuple(x.strip() for x in raw)


def parse_layers(layers: list[tuple[str, Any]]) -> ModelRules:
    """[(file, the [models] table)], lowest precedence first: a later file's cap on the same glob and its lists
    replace an earlier one's. ConfigError names the file and the key."""
    caps: dict[str, ModelCap] = {}
    allow: tuple[str, ...] = ()
    deny: tuple[str, ...] = ()
    for where, table in layers:
        if not isinstance(table, dict):
            raise ConfigError(f'{where}: models: expected a table such as [models."claude-opus-*"]')
        for key, value in table.items():
            if key == "allow":
                allow = _globs(value, where, key)
            elif key == "deny":
                deny = _globs(value, where, key)
            elif isinstance(value, dict):
                caps[key] = _cap(key, value, where)
            else:
                raise ConfigError(
                    f'{where}: models.{key}: expected allow, deny or a table per model, e.g. [models."{key}"] usd = 2'
                )
    return ModelRules(tuple(caps.values()), allow, deny)


def _cap(pattern: str, table: dict[str, Any], where: str) -> ModelCap:
    if not pattern.strip():
        raise ConfigError(f"{where}: models: a model name or glob cannot be empty")
    unknown = sorted(set(table) - set(CAP_KEYS))
    if unknown:
        raise ConfigError(f'{where}: models."{pattern}".{unknown[0]}: unknown key (known: {", ".join(CAP_KEYS)})')
    values: dict[str, int | None] = {}
    for key, parse in (("usd", units.parse_usd), ("tokens", units.parse_tokens)):
        if key in table:
            try:
                values[key] = _cap_value(table[key], parse)
            except ValueError as err:
                raise ConfigError(f'{where}: models."{pattern}".{key}: {err}') from None
    return ModelCap(pattern, values.get("usd"), values.get("tokens"), where)
