"""The import's fast transcript reader counts exactly what TranscriptParser counts; its pricer prices as Pricer."""

from __future__ import annotations

import json
import random
from decimal import Decimal
from pathlib import Path
from types import SimpleNamespace

import pytest

from capguard.agents.claude import decode as claude_decode
from capguard.agents.claude.logs import TranscriptParser
from capguard.core.events import Malformed, Reply
from capguard.core.pricing import ModelPrice, Pricer
from capguard.importers import claude_scan
from capguard.importers.claude_scan import ReplyCounter, canonical_utc, scan
from capguard.importers.unit_prices import UnitPricer

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "claude"
TRANSCRIPTS = sorted(FIXTURES.rglob("*.jsonl"))
A = FIXTURES / "shared" / "transcripts" / "A_single_turn.jsonl"


def complete(data: bytes) -> bytes:
    return data[: data.rfind(b"\n") + 1]


def reference(data: bytes, subagent: bool = False) -> tuple[list[tuple], int]:
    parser, found, malformed, start = TranscriptParser(session_id="s", subagent=subagent), [], 0, 0
    while (end := data.find(b"\n", start)) >= 0:
        for event in parser.feed(data[start:end], start):
            if isinstance(event, Reply):
                figures = (
                    event.input_tokens,
                    event.output_tokens,
                    event.cache_read_tokens,
                    event.cache_write_tokens,
                    event.cache_write_1h_tokens,
                    event.web_search_requests,
                )
                found.append((event.key, event.model, figures, event.offset, event.step, event.details or None))
            elif isinstance(event, Malformed) and b'"usage"' in data[start:end]:
                malformed += 1
        start = end + 1
    return found, malformed


def fast(data: bytes, subagent: bool = False) -> tuple[list[tuple], int]:
    result = scan(data, 0, ReplyCounter(subagent=subagent))
    return [(r.key, r.model, r.figures, r.offset, r.step, r.details) for r in result.replies], result.malformed


@pytest.mark.parametrize("path", TRANSCRIPTS, ids=lambda p: str(p.relative_to(FIXTURES)))
def test_every_captured_transcript_gives_the_parsers_replies(path):
    data = complete(path.read_bytes())
    subagent = path.parent.name == "subagents"
    assert fast(data, subagent) == reference(data, subagent)


def assistant_line() -> dict:
    for line in A.read_bytes().splitlines():
        entry = json.loads(line)
        if entry.get("type") == "assistant":
            return entry
    raise AssertionError("no assistant line")


def dumps(entry: dict) -> bytes:
    return json.dumps(entry, separators=(",", ":")).encode() + b"\n"


def variants() -> list[bytes]:
    """Lines in shapes Claude Code writes and some it might: each must count as the parser counts it."""
    base = assistant_line()
    out = []
    for i, output in enumerate((3, 42, 42, 7, 50)):  # streaming snapshots of one reply: max-wins corrections
        entry = json.loads(json.dumps(base))
        entry["message"]["usage"]["output_tokens"] = output
        entry["uuid"] = f"u{i}"
        out.append(dumps(entry))
    no_request = json.loads(json.dumps(base))
    del no_request["requestId"]
    no_request["message"]["id"] = "msg_other"
    out.append(dumps(no_request))
    copied = json.loads(json.dumps(base))
    copied["requestId"], copied["requestSessionId"] = "req_copied", "parent-session"
    out.append(dumps(copied))
    nested = json.loads(json.dumps(base))  # a tool input with its own "usage" and "requestId" keys
    nested["requestId"] = "req_nested"
    nested["message"]["content"] = [
        {
            "type": "tool_use",
            "id": "t1",
            "name": "mcp",
            "input": {"usage": {"input_tokens": 999999}, "requestId": "req_fake", "model": "x"},
        }
    ]
    out.append(dumps(nested))
    reordered = json.loads(json.dumps(base))  # usage before content, keys in another order
    reordered["requestId"] = "req_reordered"
    message = reordered.pop("message")
    reordered["message"] = {
        "usage": message["usage"],
        "model": message["model"],
        "id": "msg_r",
        "content": message["content"],
    }
    out.append(dumps(reordered))
    spaced = json.loads(json.dumps(base))
    spaced["requestId"] = "req_spaced"
    out.append(json.dumps(spaced, indent=None).encode() + b"\n")  # ", " and ": " separators
    user = {
        "type": "user",
        "message": {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t1"}]},
        "toolUseResult": {"usage": {"input_tokens": 5, "output_tokens": 6}, "totalTokens": 11},
    }
    out.append(dumps(user))
    geo = json.loads(json.dumps(base))
    geo["requestId"] = "req_geo"
    geo["message"]["usage"].update(inference_geo="us", speed="fast", cache_creation={"ephemeral_1h_input_tokens": 500})
    geo["message"]["model"], geo["isAbortedMidStream"] = "claude-haiku-4-5", True
    out.append(dumps(geo))
    synthetic = json.loads(json.dumps(base))
    synthetic["requestId"], synthetic["message"]["model"] = "req_syn", "<synthetic>"
    synthetic.pop("requestedModel")
    out.append(dumps(synthetic))
    error = json.loads(json.dumps(base))
    error["requestId"], error["isApiErrorMessage"] = "req_err", True
    out.append(dumps(error))
    out += [
        b'{"type":"assistant","message":{"id":"m","usage":{"output_tokens":-1}}}\n',
        b'{"type":"assistant","message":{"id":"m","usage":{"input_tokens":"9"}}}\n',
        b'{"type":"assistant","message":"oops","usage":{}}\n',
        b'{"type":"assistant","message":{"usage":{"output_tokens":1}}}\n',
        b'{"usage": not json\n',
        b"\n",
        b'{"type":"summary","summary":"no usage here"}\n',
    ]
    return out


def test_unusual_lines_count_as_the_parser_counts_them():
    data = b"".join(variants())
    mine, theirs = fast(data), reference(data)
    assert mine == theirs
    assert mine[1] == 5  # the malformed lines that carry usage
    keys, key = [r[0] for r in mine[0]], f"claude:{assistant_line()['requestId']}"
    assert keys[:3] == [key, f"{key}+1", f"{key}+2"]
    assert "claude:msg:msg_other" in keys and "claude:req_nested" in keys and "claude:req_copied" not in keys


def test_shuffled_and_damaged_fixture_lines_still_match_the_parser():
    rng = random.Random(5)
    lines = [line + b"\n" for path in TRANSCRIPTS for line in path.read_bytes().splitlines() if b'"usage"' in line]
    rng.shuffle(lines)
    damaged = []
    for line in lines[:200]:
        cut = rng.randrange(len(line))
        damaged.append(line[:cut].replace(b"\n", b"") + b"\n" if rng.random() < 0.3 else line)
    data = b"".join(damaged)
    assert fast(data) == reference(data)


def test_content_blocks_are_skipped_only_when_nothing_after_the_usage_could_differ():
    base = assistant_line()
    blocks = []
    for i in range(3):  # Claude Code's usual: one line per content block, same usage, same request id
        entry = json.loads(json.dumps(base))
        entry["uuid"], entry["message"]["content"] = f"b{i}", [{"type": "text", "text": f"block {i}"}]
        blocks.append(dumps(entry))
    last_wins = json.loads(json.dumps(base))  # same bytes up to its request id, then a second one (JSON: last wins)
    last_wins["uuid"] = "dup"
    line = dumps(last_wins)
    line = line[:-2] + b',"requestId":"req_last_wins"}\n'
    nested = json.loads(json.dumps(base))  # same usage and request id, then an object: decoded, not skipped
    nested["uuid"], nested["toolUseResult"] = "n", {"usage": {"output_tokens": 10**6}}
    deeper = json.loads(json.dumps(base))  # another reply with the same usage: counted
    deeper["requestId"] = "req_deeper"
    data = b"".join([*blocks, line, dumps(nested), dumps(deeper)])
    mine, theirs = fast(data), reference(data)
    assert mine == theirs
    keys = [reply[0] for reply in mine[0]]
    assert keys.count(f"claude:{base['requestId']}") == 1 and "claude:req_last_wins" in keys
    assert "claude:req_deeper" in keys


def test_content_blocks_that_differ_after_the_message_are_skipped_unparsed(monkeypatch):
    base = assistant_line()
    blocks = []
    assert list(base).index("apiBlockIndex") == list(base).index("message") + 1
    for i in range(4):  # Claude Code 2.1: each block's own apiBlockIndex between the message and the request id
        entry = json.loads(json.dumps(base))
        entry["message"]["content"] = [{"type": "text", "text": f"block {i}"}]
        entry["apiBlockIndex"], entry["uuid"] = i, f"b{i}"
        blocks.append(dumps(entry))
    decoded = []
    real = claude_decode.line_decoder
    monkeypatch.setattr(
        claude_decode, "line_decoder", SimpleNamespace(decode=lambda line: decoded.append(1) or real.decode(line))
    )
    data = b"".join(blocks)
    mine = fast(data)
    assert mine == reference(data)
    assert [reply[0] for reply in mine[0]] == [f"claude:{base['requestId']}"]
    assert len(decoded) == (1 if claude_scan._compiled is None else 0)  # the first block; the others are skipped (the
    # compiled reader reads the first itself: test_claude_scan_compiled.py)

    # the same bytes through the message, then a second `message` key (JSON: the last wins): the parser's
    # malformed line, so it is decoded
    clash = blocks[1][:-2] + b',"message":"not an object"}\n'
    data = b"".join([blocks[0], clash])
    assert fast(data) == reference(data) and fast(data)[1] == 1


def test_offsets_are_file_offsets_from_the_base():
    data = complete(A.read_bytes())
    result = scan(data, 1000, ReplyCounter(subagent=False))
    assert [r.offset for r in result.replies] == [1000 + r[3] for r in reference(data)[0]]
    assert result.first_utc <= result.last_utc and result.cwd and result.version == "2.1.330"


def test_a_counter_seeded_from_the_ledger_continues_max_wins():
    data = dumps(assistant_line())
    first = scan(data, 0, ReplyCounter(subagent=False)).replies[0]
    seen = {first.key: [*first.figures, 0]}
    bigger = assistant_line()
    bigger["message"]["usage"]["output_tokens"] += 10
    (fix,) = scan(dumps(bigger), 500, ReplyCounter(subagent=False, seen=seen)).replies
    assert fix.key == first.key + "+1" and fix.figures[1] == 10 and not fix.step
    assert scan(data, 900, ReplyCounter(subagent=False, seen=seen)).replies == []


def test_canonical_times():
    assert canonical_utc("2026-11-23T06:05:53.728Z") == "2026-11-23T06:05:53.728000Z"
    assert canonical_utc("2026-11-23T07:05:53+01:00") == "2026-11-23T06:05:53.000000Z"
    assert canonical_utc("yesterday") is None and canonical_utc(None) is None


REPLIES = [
    ("claude-sonnet-4-5-20250929", 11, 40, 3000, 2000, 0, 0, None, None),
    ("claude-sonnet-4-5-20250929", 3, 900, 150_000, 60_000, 0, 0, None, None),  # above the 200k tier
    ("claude-opus-4-5-20251101", 5, 1234, 45_678, 9_999, 9_999, 2, None, None),  # 1h cache writes, web searches
    ("claude-opus-5-5", 1, 2, 3, 4, 1, 0, "fast", "us"),
    ("claude-haiku-4-5-20251001", 0, 0, 0, 0, 0, 0, None, None),
    ("no-such-model-anywhere", 10, 10, 0, 0, 0, 0, None, None),
    (None, 10, 10, 0, 0, 0, 0, None, None),
    ("openai/my-local-model", 1000, 2000, 0, 0, 0, 0, None, None),  # a config price
]


@pytest.mark.parametrize("reply", REPLIES, ids=lambda r: f"{r[0]}-{r[1]}-{r[3]}")
def test_unit_pricer_agrees_with_pricer(reply):
    model, inp, out, read, write, write_1h, web, speed, geo = reply
    overrides = {"openai/my-local-model": ModelPrice(Decimal("0.5"), Decimal("1.5"))}
    details = {k: v for k, v in (("speed", speed), ("inference_geo", geo)) if v}
    expected = Pricer(overrides).price(
        Reply(
            key="k",
            model=model,
            input_tokens=inp,
            output_tokens=out,
            cache_read_tokens=read,
            cache_write_tokens=write,
            cache_write_1h_tokens=write_1h,
            web_search_requests=web,
            details=details,
        )
    )
    fast_pricer = UnitPricer(Pricer(overrides))
    for _ in range(2):  # the second call uses the cached rates
        assert fast_pricer.price(model, inp, out, read, write, write_1h, web, speed=speed, geo=geo) == (
            expected.cost_micro,
            expected.priced_by,
        )


def test_unit_pricer_on_many_random_replies():
    rng, pricer, fast_pricer = random.Random(3), Pricer(), UnitPricer()
    for _ in range(300):
        model = rng.choice(["claude-sonnet-4-5-20250929", "claude-opus-4-1-20250805", "claude-sonnet-4-6"])
        write = rng.randint(0, 40_000)
        figures = (
            rng.randint(0, 3000),
            rng.randint(0, 20_000),
            rng.randint(0, 190_000),
            write,
            rng.choice([0, write]),
            rng.choice([0, 0, 1]),
        )
        expected = pricer.price(
            Reply("k", model, *figures[:4], cache_write_1h_tokens=figures[4], web_search_requests=figures[5])
        )
        assert fast_pricer.price(model, *figures) == (expected.cost_micro, expected.priced_by)


def test_the_decoders_two_ways_in_give_the_same_usage_for_every_captured_line():
    """The importer's msgspec path and the dict path the live meter takes are one decoder: same key, model,
    counts, details, time and session for every assistant line of the captures."""
    from capguard.agents.claude.decode import UNUSUAL, decode, from_entry

    fixtures = Path(__file__).resolve().parents[1] / "fixtures" / "claude"
    compared = 0
    for path in sorted(fixtures.rglob("*.jsonl")):
        for raw in path.read_bytes().splitlines():
            if b'"usage"' not in raw:
                continue
            _, typed = decode(raw)
            if typed is not UNUSUAL:
                assert typed == from_entry(json.loads(raw)), (path.name, raw[:80])
                compared += typed is not None
    assert compared > 20
