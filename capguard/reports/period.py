"""`--since` / `--until` as users type them: a date, a month, an ISO time, or a duration back from now.

Pure (the clock comes in). Dates are UTC days; an `--until` date or month includes that whole day or month.
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone

from capguard.core import units
from capguard.ledger.records import normalize_utc

_FORMAT = "%Y-%m-%dT%H:%M:%S.%fZ"
_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")
_MONTH = re.compile(r"\d{4}-\d{2}")


def _text(moment: datetime) -> str:
    return moment.astimezone(timezone.utc).strftime(_FORMAT)


def parse_bound(raw: str, *, now: datetime, until: bool = False) -> str:
    """Canonical UTC text for one bound. ValueError with the accepted forms when `raw` is none of them."""
    text = raw.strip()
    if _MONTH.fullmatch(text):
        year, month = map(int, text.split("-"))
        start = datetime(year, month, 1, tzinfo=timezone.utc)
        if until:
            start = datetime(year + month // 12, month % 12 + 1, 1, tzinfo=timezone.utc)
        return _text(start)
    if _DATE.fullmatch(text):
        day = datetime.strptime(text, "%Y-%m-%d").replace(tzinfo=timezone.utc)
        return _text(day + timedelta(days=1) if until else day)
    if re.fullmatch(r"[\d.]+(ms|s|m|h|d)(\d.*)?", text.lower()):
        return _text(now - timedelta(seconds=units.parse_duration(text)))
    try:
        return normalize_utc(text)
    except ValueError:
        raise ValueError(
            f"{raw!r} is not a date (2026-11-01), a month (2026-11), an ISO time "
            "(2026-11-01T09:00, UTC unless it has an offset) or a duration back from now (7d, 12h)"
        ) from None


def describe(since_utc: str | None, until_utc: str | None) -> str:
    """`2026-11-01 .. 2026-11-23 (UTC)`-style title of a period."""

    def short(value: str) -> str:
        return value[:10] if value[10:] == "T00:00:00.000000Z" else value[:16].replace("T", " ")

    if since_utc is None and until_utc is None:
        return "all time"
    start = short(since_utc) if since_utc else "the start"
    if until_utc is None:
        return f"{start} .. now (UTC)"
    end = until_utc
    if end[10:] == "T00:00:00.000000Z":  # an exclusive midnight reads better as the last day included
        end = _text(datetime.strptime(end, _FORMAT).replace(tzinfo=timezone.utc) - timedelta(days=1))[:10]
        return f"{start} .. {end} (UTC)"
    return f"{start} .. {short(end)} (UTC, exclusive)"
