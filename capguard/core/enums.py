"""The closed sets of capguard as Enums: why a run stopped, what a cap decision does, what an unpriced model does.

Each is a `str` too, so comparisons with text, JSON output and ledger values are the plain value ("usd").
"""

from __future__ import annotations

from enum import Enum


class TextEnum(str, Enum):
    """A str Enum that prints and formats as its value on every Python (StrEnum is 3.11+)."""

    def __str__(self) -> str:
        return str.__str__(self)

    def __format__(self, spec: str) -> str:
        return str.__format__(self, spec)


class StopReason(TextEnum):
    """Why capguard stopped a run (or refused a call): the cap reached, or why it could not count."""

    USD = "usd"
    TOKENS = "tokens"
    WALL = "wall"
    STEPS = "steps"
    MAP_TOKENS = "map_tokens"
    STUCK = "stuck"
    MONTHLY = "monthly"
    UNPRICED = "unpriced"
    METER_ERROR = "meter_error"  # capguard cannot count (blind file, failed write, bad numbers): fail closed
    MODEL = "model"  # a cap on one model's spend or tokens ([models."claude-opus-*"])


class Action(TextEnum):
    """What a cap decision tells the supervisor (or the library) to do."""

    OK = "ok"
    WARN = "warn"
    STOP = "stop"


class UnpricedPolicy(TextEnum):
    """What a reply of a model nobody can price does to a money cap; from the strictest to the loosest."""

    STOP = "stop"
    TOKENS_ONLY = "tokens-only"
    WARN = "warn"
