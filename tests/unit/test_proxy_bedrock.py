"""Strict mode's proxy for Claude on Amazon Bedrock's InvokeModel API, pure parts: AWS's event stream cut from
bytes as they come (the CRCs checked, a broken stream read no further), Bedrock's chunks back to the Messages API's
events, the routes (the model and the stream in the path, the regional premium by the id's profile), Bedrock's
error format, and Claude Code's front (an API key, or a refusal)."""

from __future__ import annotations

import json
import random

import pytest

from capguard.agents.claude.adapter import strict_fronts as claude_fronts
from capguard.core.errors import ConfigError
from capguard.core.pricing import BEDROCK_REGIONAL
from capguard.metering.proxy.dialects import ANTHROPIC, BEDROCK, ask, error_body, route
from capguard.metering.proxy.eventstream import MessageSplitter, bedrock_event, is_exception
from capguard.metering.proxy.usage import Tracker
from tests.fakes import eventstream as aws

EVENTS = [
    {
        "type": "message_start",
        "message": {"id": "msg_bdrk", "model": "claude-opus-5-5", "usage": {"input_tokens": 1200, "output_tokens": 1}},
    },
    {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "héllo " * 50}},
    {"type": "message_delta", "delta": {"stop_reason": "end_turn"}, "usage": {"output_tokens": 321}},
    {"type": "message_stop", "amazon-bedrock-invocationMetrics": {"inputTokenCount": 1200, "outputTokenCount": 321}},
]
STREAM = b"".join(aws.chunk(event) for event in EVENTS)


def read(chunks: list[bytes]) -> tuple[list[dict], MessageSplitter]:
    splitter, events = MessageSplitter(), []
    for chunk in chunks:
        for message in splitter.feed(chunk):
            event = bedrock_event(message)
            if event is not None:
                events.append(event)
    return events, splitter


@pytest.mark.parametrize("seed", range(20))
def test_the_events_come_back_however_the_bytes_are_cut(seed):
    rng, cuts, at = random.Random(seed), [], 0
    while at < len(STREAM):
        size = rng.choice([1, 2, 3, 7, 12, 13, 64, 500, 4096])
        cuts.append(STREAM[at : at + size])
        at += size
    events, splitter = read(cuts)
    assert events == EVENTS and splitter.broken is None


def test_the_usage_is_read_off_the_events():
    events, _ = read([STREAM])
    tracker = Tracker(ANTHROPIC)
    for event in events:
        tracker.see(event)
    seen = tracker.seen
    assert seen.complete and seen.usage is not None and seen.response_id == "msg_bdrk"
    assert (seen.usage.input_tokens, seen.usage.output_tokens) == (1200, 321)


@pytest.mark.parametrize(
    ("damage", "why"),
    [
        (lambda b: b[:5] + bytes([b[5] ^ 1]) + b[6:], "prelude failed its CRC"),  # the headers' length
        (lambda b: b[:40] + bytes([b[40] ^ 1]) + b[41:], "failed its CRC"),  # a byte of the first payload
        (lambda b: b[:-1] + bytes([b[-1] ^ 1]), "failed its CRC"),  # the last message's CRC
    ],
)
def test_a_damaged_message_stops_the_reading_and_says_why(damage, why):
    events, splitter = read([damage(STREAM)])
    assert splitter.broken is not None and why in splitter.broken
    assert events == EVENTS[: len(events)] and len(events) < len(EVENTS)  # nothing after it is believed
    assert splitter.feed(aws.chunk(EVENTS[0])) == []  # nor anything that follows


def test_a_length_no_message_has_breaks_the_stream_without_buffering_it():
    import struct
    import zlib

    prelude = struct.pack(">II", 1 << 30, 0)
    splitter = MessageSplitter()
    assert splitter.feed(prelude + struct.pack(">I", zlib.crc32(prelude))) == []
    assert splitter.broken is not None and "claims" in splitter.broken


def test_bedrocks_exception_and_other_messages():
    (message,) = MessageSplitter().feed(aws.exception("throttlingException", "Too many tokens"))
    assert is_exception(message) and bedrock_event(message) is None
    (message,) = MessageSplitter().feed(aws.message({":message-type": "event", ":event-type": "chunk"}, b"{}"))
    assert bedrock_event(message) is None and not is_exception(message)  # no `bytes`: no event
    bad = aws.message({":message-type": "event", ":event-type": "chunk"}, b'{"bytes": "not base64!"}')
    assert bedrock_event(MessageSplitter().feed(bad)[0]) is None


# ---- routes, facts, errors


@pytest.mark.parametrize(
    ("tail", "expected"),
    [
        ("model/us.anthropic.claude-opus-5-5/invoke-with-response-stream", ("claude-opus-5-5", True, "regional")),
        ("model/global.anthropic.claude-sonnet-4-5-20250929-v1:0/invoke",
         ("claude-sonnet-4-5-20250929", False, "global")),
        ("model/anthropic.claude-haiku-4-5-20251001-v1:0/invoke", ("claude-haiku-4-5-20251001", False, "regional")),
    ],
)  # fmt: skip
def test_bedrocks_paths_name_the_model_and_the_stream(tail, expected):
    found = route("POST", tail, BEDROCK)
    assert (found.dialect, found.platform, found.why) == (ANTHROPIC, BEDROCK, None)
    assert (found.model, found.stream, found.location) == expected


@pytest.mark.parametrize(
    ("tail", "why"),
    [
        ("model/amazon.nova-pro-v1:0/invoke", "prices Anthropic's models on Bedrock"),
        ("model/arn:aws:bedrock:us-east-1:1:application-inference-profile/abc/invoke", "ARN"),
        ("model/us.anthropic.claude-opus-5-5/converse-async", "does not forward"),
        ("model/us.anthropic.claude-opus-5-5/invoke-async", "does not forward"),
    ],
)
def test_what_the_proxy_cannot_price_on_bedrock_is_refused(tail, why):
    found = route("POST", tail, BEDROCK)
    assert found.why is not None and why in found.why
    assert route("POST", "model/us.anthropic.claude-opus-5-5/count-tokens", BEDROCK).free


def test_a_bedrock_request_is_priced_by_its_profile():
    body = {"anthropic_version": "bedrock-2023-05-31", "max_tokens": 100, "messages": []}
    for location, geo in (("regional", BEDROCK_REGIONAL), ("global", None)):
        facts = ask(ANTHROPIC, body, model="claude-opus-5-5", stream=True, location=location, platform=BEDROCK)
        assert (facts.model, facts.stream, facts.geo, facts.platform) == ("claude-opus-5-5", True, geo, BEDROCK)
    older = ask(ANTHROPIC, body, model="claude-sonnet-4-20250514", location="regional", platform=BEDROCK)
    assert older.geo is None  # before Sonnet 4.5: no premium


def test_bedrocks_refusals_are_in_its_own_format():
    assert json.loads(error_body(BEDROCK, "over the cap")) == {"message": "over the cap"}


# ---- Claude Code's front


def test_bedrock_with_an_api_key_is_fronted_and_without_one_refused(tmp_path):
    cwd, home = tmp_path / "repo", tmp_path / ".claude"
    cwd.mkdir()
    on = {"CLAUDE_CODE_USE_BEDROCK": "1", "AWS_REGION": "eu-central-1", "AWS_BEARER_TOKEN_BEDROCK": "ABSK-k"}
    (front,) = claude_fronts([], on, cwd, home)
    assert (front.mount, front.upstream, front.dialect, front.env) == (
        "bedrock", "https://bedrock-runtime.eu-central-1.amazonaws.com", BEDROCK, ("ANTHROPIC_BEDROCK_BASE_URL",)
    )  # fmt: skip
    (front,) = claude_fronts([], {**on, "AWS_REGION": "us-gov-west-1"}, cwd, home)
    assert front.upstream == "https://bedrock-runtime-fips.us-gov-west-1.amazonaws.com"
    (front,) = claude_fronts([], {**on, "ANTHROPIC_BEDROCK_BASE_URL": "https://vpce-1.example/"}, cwd, home)
    assert front.upstream == "https://vpce-1.example/"
    signed = {k: v for k, v in on.items() if k != "AWS_BEARER_TOKEN_BEDROCK"}
    # with AWS credentials instead (none here): the proxy would sign, and says it cannot
    with pytest.raises(ConfigError, match="without an API key .AWS_BEARER_TOKEN_BEDROCK.*no AWS credentials"):
        claude_fronts([], signed, cwd, home)


# ---- Bedrock's CountTokens (free): the InvokeModel body whole, base64'd


def test_a_metered_path_has_bedrocks_count_next_to_it_and_the_count_takes_the_whole_body():
    import base64

    from capguard.metering.proxy import bounds
    from capguard.metering.proxy.dialects import count_tail

    assert count_tail(ANTHROPIC, "model/us.anthropic.claude-opus-5-5/invoke-with-response-stream") == (
        "model/us.anthropic.claude-opus-5-5/count-tokens"
    )
    assert count_tail(ANTHROPIC, "model/global.anthropic.claude-opus-5-5/invoke") == (
        "model/global.anthropic.claude-opus-5-5/count-tokens"
    )
    body = {
        "anthropic_version": "bedrock-2023-05-31",
        "anthropic_beta": ["interleaved-thinking-2025-05-14"],  # a field Anthropic's count would not take
        "max_tokens": 32_000,
        "system": "x" * 20_000,
        "messages": [{"role": "user", "content": "y" * 20_000}],
    }
    bound = bounds.input_bound(ANTHROPIC, body, bounds.Conversations())
    asked = bounds.count_request(ANTHROPIC, body, bound, "anthropic/claude-opus-5-5", BEDROCK)
    assert asked is not None
    assert json.loads(base64.b64decode(asked["input"]["invokeModel"]["body"])) == body
    assert bounds.count_request(ANTHROPIC, body, bound, "anthropic/claude-opus-5-5") is None  # not on the API
    counted = bounds.counted_bound(bound, {"inputTokens": 10_000})
    assert counted.counted and 10_000 < counted.tokens < bound.tokens
    assert bounds.counted_bound(bound, {"inputTokens": "10000"}) == bound  # no count: the bytes' bound stays
