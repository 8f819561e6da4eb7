"""The import's typed fast path for Codex rollouts (msgspec, a row built without a Reply) answers exactly as the
live meter's parser does: the same rows to the character, the same malformed and suspicious counts, the same
model and resume point, on the real Codex 0.169.1 rollouts and on lines a parser must be careful with."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from capguard.core.pricing import Pricer
from capguard.importers.codex import read_thread
from capguard.importers.unit_prices import UnitPricer

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "codex"
PRICER = UnitPricer(Pricer({}))


def both(data: bytes, base: int = 0):
    fast = read_thread("f.jsonl", data, base, "codex-t", PRICER)
    reference = read_thread("f.jsonl", data, base, "codex-t", PRICER, typed=False)
    fast.meta = None  # kept by the fast path only (to spare a second read of the first line)
    return fast, reference


@pytest.mark.parametrize("name", sorted(p.name for p in FIXTURES.glob("rollout.*.jsonl")))
def test_the_real_rollouts_whole_and_read_on_from_each_turn_context(name):
    data = (FIXTURES / name).read_bytes()
    fast, reference = both(data)
    assert fast == reference, name
    assert fast.rows or b'"token_usage_record"' not in data, name  # two were cut before their first reply
    at = data.find(b'"turn_context"')
    while at >= 0:
        start = data.rfind(b"\n", 0, at) + 1
        fast, reference = both(data[start:], start)
        assert fast == reference
        at = data.find(b'"turn_context"', at + 1)


def _line(kind: str, payload: dict, timestamp: object = "2026-12-06T21:35:36.189Z", **extra) -> bytes:
    return json.dumps({"timestamp": timestamp, **extra, "type": kind, "payload": payload}).encode()


def _record(response: object = "resp_1", usage: object = None, **kw) -> bytes:
    usage = usage if usage is not None else {"input_tokens": 1000, "cached_input_tokens": 600, "output_tokens": 80}
    return _line("token_usage_record", {"thread_id": "t", "response_id": response, "usage": usage}, **kw)


META = _line("session_meta", {"id": "t", "timestamp": "2026-12-06T21:35:00.000Z", "cwd": "/r"})
CONTEXT = _line("turn_context", {"model": "gpt-5"})
LEGACY = _line(
    "event_msg",
    {
        "type": "token_count",
        "info": {
            "last_token_usage": {"input_tokens": 10, "output_tokens": 2},
            "total_token_usage": {"total_tokens": 12},
        },
    },
)
ODD = {
    "null usage figure": _record(usage={"input_tokens": None, "output_tokens": 5}),
    "float figure": _record(usage={"input_tokens": 10.0, "output_tokens": 5}),
    "negative figure": _record(usage={"input_tokens": -3, "output_tokens": 5}),
    "figure at the bound": _record(usage={"input_tokens": 10**9, "output_tokens": 5}),
    "reasoning beyond output": _record(usage={"input_tokens": 9, "output_tokens": 5, "reasoning_output_tokens": 50}),
    "cache beyond input": _record(usage={"input_tokens": 9, "cached_input_tokens": 50, "cache_write_input_tokens": 4}),
    "no response id": _record(response=None, ordinal=7),
    "a long response id": _record(response="r" * 300),
    "a response id that is a number": _record(response=12),
    "seconds only": _record(timestamp="2026-12-06T21:35:36Z"),
    "microseconds": _record(timestamp="2026-12-06T21:35:36.123456Z"),
    "no such date": _record(timestamp="2026-13-06T21:35:36.189Z"),
    "a timestamp that is a number": _record(timestamp=5),
    "an empty model": _line("turn_context", {"model": ""}),
    "a long model": _line("turn_context", {"model": "m" * 300}),
    "a model that is a list": _line("turn_context", {"model": ["gpt-5"]}),
    "no payload": b'{"type":"token_usage_record"}',
    "broken JSON": b'{"type":"token_usage_record","payload":{',
    "not an object": b'["token_usage_record"]',
    "spaced JSON": b'{"type": "token_usage_record", "payload": {"response_id": "r9", "usage": {"input_tokens": 4}}}',
}


@pytest.mark.parametrize("case", sorted(ODD))
def test_unusual_lines_get_the_parsers_answer(case):
    data = b"\n".join([META, CONTEXT, ODD[case], _record("resp_2"), LEGACY, b""])
    fast, reference = both(data)
    assert fast == reference


def test_token_count_lines_count_until_a_record_is_read_even_when_the_first_record_line_is_garbled():
    """Before any token_usage_record a token_count is a reply (older Codex); the fast path looks for it only before
    the first record line, so a first record line that is no record must not hide the token_counts after it."""
    garbled = b'{"type":"token_usage_record","payload":{'
    data = b"\n".join([META, CONTEXT, LEGACY, garbled, LEGACY.replace(b"12}", b"24}"), b""])
    fast, reference = both(data)
    assert fast == reference
    assert len(fast.rows) == 2 and fast.malformed == 1
    data = b"\n".join([META, CONTEXT, LEGACY, _record(), LEGACY.replace(b"12}", b"24}"), b""])
    fast, reference = both(data)
    assert fast == reference and len(fast.rows) == 2  # the legacy one before, the record; not the one after
