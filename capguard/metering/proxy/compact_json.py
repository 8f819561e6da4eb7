"""Reading msgspec's compact JSON as bytes: where a string or an object that starts at a given byte ends.

msgspec writes no spaces and escapes every quote inside a string, so a key shows as `"name":` only where the value
has that key; these let the proxy answer questions about a long request from its bytes instead of a walk.
"""

from __future__ import annotations

import re

import msgspec

# Compact UTF-8, keys in the order given (as json.dumps(separators=(",", ":"), ensure_ascii=False)), ~3x faster.
encode = msgspec.json.Encoder(enc_hook=str).encode
CACHE_CONTROL = b'"cache_control":'  # a Messages request's cache marker: only where some object has that key
_BACKSLASH = 0x5C
_STRUCTURE = re.compile(rb'[{}"]')


def string_end(data: bytes, at: int) -> int:
    """Where the string whose text starts at `at` (after its opening quote) ends: the index of its closing quote,
    the first after an even run of backslashes; len(data) if it never closes."""
    quote = data.find(b'"', at)
    while quote >= 0:
        back = quote - 1
        while data[back] == _BACKSLASH:  # the string's opening quote stops this before `at`
            back -= 1
        if (quote - 1 - back) % 2 == 0:
            return quote
        quote = data.find(b'"', quote + 1)
    return len(data)


def object_end(data: bytes, at: int) -> int:
    """Where the object whose `{` is at `at` ends: the index of its `}` (strings and nested objects skipped);
    len(data) if it never closes."""
    depth = 0
    found = _STRUCTURE.search(data, at)
    while found is not None:
        char = data[found.start()]
        if char == 0x22:  # a string: to its closing quote
            found = _STRUCTURE.search(data, string_end(data, found.start() + 1) + 1)
            continue
        depth += 1 if char == 0x7B else -1
        if depth == 0:
            return found.start()
        found = _STRUCTURE.search(data, found.start() + 1)
    return len(data)
