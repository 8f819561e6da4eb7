"""Parsing and formatting of the units users type: dollars, token counts, durations.

Pure functions; money is kept as integer micro-dollars so sums never drift.
"""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation

MICRO = 1_000_000

_TOKEN_SUFFIX = {"": 1, "k": 1_000, "m": 1_000_000, "g": 1_000_000_000, "b": 1_000_000_000}
_DURATION_UNIT = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")


def parse_usd(text: str | int | float) -> int:
    """`5`, `$5`, `0.50`, `5 USD` -> micro-dollars (5_000_000)."""
    raw = str(text).strip().replace(",", "").replace("_", "")
    raw = raw.removeprefix("$").removesuffix("USD").removesuffix("usd").strip()
    try:
        amount = Decimal(raw)
    except InvalidOperation:
        raise ValueError(f"{text!r} is not an amount in USD (examples: 5, $5, 0.50)") from None
    if not amount.is_finite() or amount < 0:
        raise ValueError(f"{text!r} must be a non-negative amount in USD")
    return int((amount * MICRO).to_integral_value())


def parse_tokens(text: str | int) -> int:
    """`500000`, `500k`, `1.5M`, `2_000_000` -> a token count."""
    if isinstance(text, bool):
        raise ValueError(f"{text!r} is not a token count")
    raw = str(text).strip().replace(",", "").replace("_", "").lower()
    match = re.fullmatch(r"(\d+(?:\.\d+)?)\s*([kmgb]?)", raw)
    if not match:
        raise ValueError(f"{text!r} is not a token count (examples: 500000, 500k, 1.5M)")
    value = Decimal(match.group(1)) * _TOKEN_SUFFIX[match.group(2)]
    if value != value.to_integral_value():
        raise ValueError(f"{text!r} is not a whole number of tokens")
    return int(value)


def parse_count(text: str | int) -> int:
    """A plain non-negative integer (steps)."""
    if isinstance(text, bool):
        raise ValueError(f"{text!r} is not a whole number")
    raw = str(text).strip().replace("_", "")
    if not raw.isdigit():
        raise ValueError(f"{text!r} is not a non-negative whole number")
    return int(raw)


def parse_duration(text: str | int | float) -> float:
    """`90s`, `30m`, `1h30m`, `250ms`, or bare seconds (`90`) -> seconds."""
    if isinstance(text, bool):
        raise ValueError(f"{text!r} is not a duration")
    if isinstance(text, (int, float)):
        if text < 0:
            raise ValueError(f"{text!r} must not be negative")
        return float(text)
    raw = text.strip().lower().replace(" ", "")
    if re.fullmatch(r"\d+(?:\.\d+)?", raw):
        return float(raw)
    parts = _DURATION_PART.findall(raw)
    if not parts or "".join(n + u for n, u in parts) != raw:
        raise ValueError(f"{text!r} is not a duration (examples: 90s, 30m, 1h30m)")
    return sum(float(n) * _DURATION_UNIT[u] for n, u in parts)


def parse_fraction(text: str | int | float) -> float:
    """`0.8`, `80%` -> 0.8; must lie in (0, 1]."""
    raw = str(text).strip()
    try:
        value = float(raw[:-1]) / 100 if raw.endswith("%") else float(raw)
    except ValueError:
        raise ValueError(f"{text!r} is not a fraction (examples: 0.8, 80%)") from None
    if not 0 < value <= 1:
        raise ValueError(f"{text!r} must be between 0 and 1 (or 1% and 100%)")
    return value


def parse_bool(text: str | bool) -> bool:
    if isinstance(text, bool):
        return text
    raw = str(text).strip().lower()
    if raw in ("1", "true", "yes", "on"):
        return True
    if raw in ("0", "false", "no", "off", ""):
        return False
    raise ValueError(f"{text!r} is not a boolean (true or false)")


def format_usd(micro: int) -> str:
    """Cents for amounts of a cent or more, four decimals below that."""
    dollars = Decimal(micro) / MICRO
    if micro and abs(micro) < 10_000:
        return f"${dollars:.4f}"
    return f"${dollars:,.2f}"


def format_tokens(count: int) -> str:
    """812345 -> `812k`, 1234567 -> `1.23M`, 950 -> `950`."""
    if count >= 1_000_000:
        return f"{count / 1_000_000:.2f}M"
    if count >= 10_000:
        return f"{count // 1000}k"
    if count >= 1_000:
        return f"{count / 1000:.1f}k"
    return str(count)


def format_count(n: int, one: str, many: str) -> str:
    """1 -> `1 reply`, 2 -> `2 replies`, 12345 -> `12,345 replies`."""
    return f"{n:,} {one if n == 1 else many}"


def format_duration(seconds: float) -> str:
    """724.3 -> `12m04s`, 3725 -> `1h02m05s`, 4.2 -> `4.2s`."""
    if seconds < 60:
        return f"{seconds:.1f}s"
    whole = int(seconds)
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes:02d}m{secs:02d}s"
    return f"{minutes}m{secs:02d}s"
