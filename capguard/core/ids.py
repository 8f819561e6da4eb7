"""Sortable unique ids for runs and usage rows (ULID-like: time prefix + randomness)."""

from __future__ import annotations

import os
import time

_ALPHABET = "0123456789abcdefghjkmnpqrstvwxyz"  # Crockford base32, lower case


def _encode(value: int, length: int) -> str:
    chars = []
    for _ in range(length):
        value, digit = divmod(value, 32)
        chars.append(_ALPHABET[digit])
    return "".join(reversed(chars))


def new_id(now: float | None = None) -> str:
    """26 characters; ids made later sort later (millisecond resolution)."""
    millis = int((time.time() if now is None else now) * 1000)
    return _encode(millis, 10) + _encode(int.from_bytes(os.urandom(10), "big"), 16)
