"""The importers' fast pricer (capguard.core.unit_prices, which the metering proxy prices with too), and its rates
kept between imports.

Loading genai-prices costs an import 0.2-0.3 s before its first file is read (pydantic and the data snapshot). The
per-token rates the pricer probes from it are kept in the cache directory, stamped with the genai-prices data they
came from and the UTC day (a model's price may change on a date): an import that meets only models priced before
reads them there and never loads genai-prices. Anything else (another day, an upgraded genai-prices, an unreadable
file) probes again, as without the file.
"""

from __future__ import annotations

import importlib.util
import json
import os
import time
from pathlib import Path
from typing import Any

from capguard.core.unit_prices import UnitPricer
from capguard.paths import cache_home

__all__ = ["UnitPricer", "load_rates", "save_rates"]

_FORMAT = 1  # the layout of a Rates tuple; a new one makes old files stale
_FILE = "unit-prices.json"


def _stamp() -> dict[str, Any] | None:
    """What the rates depend on: genai-prices' data file (found without importing it) and today's UTC date."""
    spec = importlib.util.find_spec("genai_prices")
    if spec is None or not spec.origin:
        return None
    try:
        data = os.stat(Path(spec.origin).parent / "data.py")
    except OSError:
        return None
    return {
        "format": _FORMAT,
        "data": [data.st_size, data.st_mtime_ns],
        "day": time.strftime("%Y-%m-%d", time.gmtime()),
    }


def load_rates(folder: Path | None = None) -> dict[tuple, Any]:
    """Rates saved today from the same genai-prices data, or nothing."""
    path = (folder or cache_home()) / _FILE
    try:
        doc = json.loads(path.read_text())
        stamp = _stamp()
        if stamp is None or not isinstance(doc, dict) or doc.get("stamp") != stamp:
            return {}
        out: dict[tuple, Any] = {}
        for model, speed, geo, rates in doc["rates"]:
            if all(v is None or isinstance(v, str) for v in (model, speed, geo)) and (
                rates is None or (isinstance(rates, list) and len(rates) == 7 and all(_int_or_none(r) for r in rates))
            ):
                out[(model, speed, geo)] = None if rates is None else tuple(rates)
        return out
    except (OSError, ValueError, TypeError, KeyError):
        return {}


def _int_or_none(value: object) -> bool:
    return value is None or (isinstance(value, int) and not isinstance(value, bool) and value >= 0)


def save_rates(rates: dict[tuple, Any], folder: Path | None = None) -> None:
    """Keep `rates` for the next import (best effort: a cache that cannot be written is simply not kept)."""
    stamp = _stamp()
    if stamp is None or not rates:
        return
    folder = folder or cache_home()
    doc = {
        "stamp": stamp,
        "rates": [[*key, None if r is None else list(r)] for key, r in sorted(rates.items(), key=str)],
    }
    try:
        folder.mkdir(parents=True, exist_ok=True)
        temporary = folder / f".{_FILE}.{os.getpid()}"
        temporary.write_text(json.dumps(doc))
        os.replace(temporary, folder / _FILE)
    except OSError:
        return
