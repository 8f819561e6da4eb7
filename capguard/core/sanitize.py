"""The one door for numbers and names read from outside: agents' logs, transcripts, telemetry, model servers.

Pure: a value in, a finite, non-negative, bounded number (or a short, printable name) out; nothing else passes.
"""

from __future__ import annotations

import re
from decimal import ROUND_HALF_UP, Decimal

# Beyond these a figure is not believed: it counts AS the bound (so a cap fires: fail closed) and its line is
# reported as suspicious. Far above anything real (the largest context windows hold ~2M tokens), far below any
# overflow: six fields of 10^9 tokens priced at $1,000 per million tokens still fit a 64-bit micro-dollar count.
MAX_TOKENS = 10**9  # per usage field of one reply
MAX_REPLY_USD_MICRO = 10_000 * 10**6  # $10,000 for one reply, as an agent or a server reports it
MAX_TOTAL_USD_MICRO = 1_000_000 * 10**6  # $1,000,000: an agent's own running total for a session
MAX_NAME = 200  # characters kept of a name from outside (model, tool, session id)

_MICRO = Decimal(1_000_000)
_UNPRINTABLE = re.compile("[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069]")
_FORMULA = ("=", "+", "-", "@")  # tab and CR are escaped by `printable` already


class NotANumber(ValueError):
    """A value where a count or an amount belongs that is none: text, a bool, null, NaN, a negative number."""


def _checked(value: object, what: str) -> int | float:
    """`value` if it is a non-negative number (infinity included); NotANumber otherwise."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise NotANumber(f"{what} is not a number: {_short(value)}")
    if value != value:  # NaN
        raise NotANumber(f"{what} is NaN")
    if value < 0:
        raise NotANumber(f"{what} is negative: {_short(value)}")
    return value


def count(value: object, what: str = "count", bound: int = MAX_TOKENS) -> int:
    """A token (or request) count: a whole number in [0, bound]; more, infinity included, is `bound`."""
    if type(value) is int and 0 <= value <= bound:  # the usual case, first
        return value
    value = _checked(value, what)
    return bound if value >= bound else int(value)


def usd_micro(value: object, what: str = "cost", bound: int = MAX_REPLY_USD_MICRO) -> int:
    """An amount in USD (a JSON number) as micro-dollars, rounded half up, in [0, bound]."""
    value = _checked(value, what)
    if value * 1_000_000 >= bound:  # a float product: inf for 1e308, never an exception
        return bound
    # through the shortest repr, as the number was written (0.1 is 100000 micro-dollars, not 99999.99...)
    return int((Decimal(repr(value)) * _MICRO).quantize(Decimal(1), rounding=ROUND_HALF_UP))


def micro(value: object, what: str = "cost_micros", bound: int = MAX_REPLY_USD_MICRO) -> int:
    """An amount already in micro-dollars, in [0, bound]."""
    return count(value, what, bound)


def at_bound(figures: dict[str, int], bound: int = MAX_TOKENS) -> str | None:
    """Why figures that reached the bound are suspicious (they were counted as the bound), or None."""
    names = [name for name, value in figures.items() if value >= bound]
    if not names:
        return None
    return f"{', '.join(names)} at or beyond capguard's bound of {bound:,}: counted as the bound"


def usd_at_bound(micros: int, what: str = "cost", bound: int = MAX_REPLY_USD_MICRO) -> str | None:
    if micros < bound:
        return None
    return f"{what} at or beyond capguard's bound of ${bound / 1e6:,.2f}: counted as the bound"


def name(value: object, limit: int = MAX_NAME) -> str | None:
    """A name from outside as stored: a string cut to `limit` characters; None for anything else or empty."""
    if not isinstance(value, str) or not value:
        return None
    return value if len(value) <= limit else value[:limit]


def printable(text: object) -> str:
    """`text` safe on a terminal: control characters (ESC of ANSI sequences included), line breaks and bidi
    overrides shown as escapes (`\\x1b`), so no name from outside can move the cursor or recolour a report."""
    text = str(text)
    if not _UNPRINTABLE.search(text):
        return text
    return _UNPRINTABLE.sub(
        lambda m: f"\\x{ord(m.group()):02x}" if ord(m.group()) < 0x100 else f"\\u{ord(m.group()):04x}", text
    )


def csv_cell(text: object) -> str:
    """`printable(text)` that a spreadsheet will not run: a leading = + - @ (a formula) gets a `'` before it."""
    text = printable(text)
    return "'" + text if text.startswith(_FORMULA) else text


def _short(value: object) -> str:
    if isinstance(value, int) and abs(value) > 10**40:
        return "a huge integer"  # repr() of one past 4,300 digits raises
    shown = repr(value)
    return shown if len(shown) <= 40 else shown[:39] + "…"
