"""Strict mode's proxy, pure parts: routes, worst-case bounds, max-tokens lowering, settle parsing per dialect,
hostile usage, and the Gate's holds (no sockets)."""

from __future__ import annotations

import hashlib
import json
import random
import re
import threading

import pytest

from capguard.core.model_caps import ModelRules
from capguard.core.pricing import Pricer
from capguard.core.sanitize import MAX_TOKENS
from capguard.metering.proxy import bounds, compact_json, dialects, sse
from capguard.metering.proxy.dialects import ANTHROPIC, CHAT, RESPONSES, ask, route, with_max_out, with_stream_usage
from capguard.metering.proxy.gate import Admission, Gate, Refused
from capguard.metering.proxy.usage import Tracker, from_body, is_usage_chunk
from tests.fakes import fake_chat, responses_billing

CAP = 1_000_000  # $1


def chat_body(text: str = "hello", **extra) -> dict:
    return {"model": "gpt-4o", "messages": [{"role": "user", "content": text}], **extra}


def messages_body(text: str = "hello", max_tokens: int = 4096, **extra) -> dict:
    return {
        "model": "claude-sonnet-4-5",
        "max_tokens": max_tokens,
        "messages": [{"role": "user", "content": text}],
    } | extra


# ---- routes: what may pass unmetered


@pytest.mark.parametrize(
    "method, tail, dialect, free",
    [
        ("POST", "v1/messages", ANTHROPIC, False),
        ("POST", "v1/chat/completions", CHAT, False),
        ("POST", "chat/completions", CHAT, False),
        ("POST", "v1/responses", RESPONSES, False),
        ("POST", "v1/messages/count_tokens", None, True),
        ("GET", "v1/models", None, True),
        ("GET", "v1/models/claude-sonnet-4-5", None, True),
    ],
)
def test_model_calls_are_metered_and_free_paths_pass(method, tail, dialect, free):
    found = route(method, tail, ANTHROPIC)
    assert (found.dialect, found.free, found.why) == (dialect, free, None)


@pytest.mark.parametrize(
    "method, tail", [("POST", "v1/embeddings"), ("POST", "v1/messages/batches"), ("DELETE", "v1/x")]
)
def test_paths_that_could_cost_money_unmetered_are_refused(method, tail):
    assert "could cost money unmetered" in route(method, tail, CHAT).why


def test_a_server_side_tool_is_refused_as_unbounded():
    with pytest.raises(ValueError, match="server-side tool"):
        ask(ANTHROPIC, messages_body(tools=[{"type": "web_search_20250305", "name": "web_search"}]))
    with pytest.raises(ValueError, match="server-side tool"):
        ask(RESPONSES, {"model": "gpt-4o", "input": "x", "tools": [{"type": "web_search"}]})
    assert ask(RESPONSES, {"model": "gpt-4o", "input": "x", "tools": [{"type": "function", "name": "f"}]})


# ---- request shaping


def test_output_limit_lands_in_the_field_each_api_reads():
    assert with_max_out(ANTHROPIC, messages_body(), 10)["max_tokens"] == 10
    assert with_max_out(RESPONSES, {"model": "m"}, 10)["max_output_tokens"] == 10
    assert with_max_out(CHAT, chat_body(), 10)["max_completion_tokens"] == 10
    assert with_max_out(CHAT, chat_body(max_tokens=99), 10) == chat_body(max_tokens=10)


def test_chat_stream_usage_is_asked_for_only_when_the_client_did_not():
    sent, injected = with_stream_usage(chat_body(stream=True))
    assert injected and sent["stream_options"] == {"include_usage": True}
    asked = chat_body(stream=True, stream_options={"include_usage": True})
    assert with_stream_usage(asked) == (asked, False)


def test_cache_write_rate_follows_what_the_request_asks():
    assert ask(ANTHROPIC, messages_body()).cache_write is None
    five = messages_body(system=[{"type": "text", "text": "s", "cache_control": {"type": "ephemeral"}}])
    assert ask(ANTHROPIC, five).cache_write == "5m"
    hour = messages_body(system=[{"type": "text", "text": "s", "cache_control": {"type": "ephemeral", "ttl": "1h"}}])
    assert ask(ANTHROPIC, hour).cache_write == "1h"
    pricer = Pricer()
    costs = [
        bounds.worst_cost(pricer, "anthropic/claude-sonnet-4-5", 10_000, ask(ANTHROPIC, b), ANTHROPIC).cost(0)
        for b in (messages_body(), five, hour)
    ]
    assert costs[0] < costs[1] < costs[2]  # 1x, 1.25x, 2x input


# ---- worst-case bounds


@pytest.mark.parametrize("text", ["hello", "x" * 50_000, "héllo wörld ✓ " * 3000, "日本語のテキスト" * 2000])
def test_prompt_bound_covers_what_a_server_bills(text):
    body = chat_body(text, tools=[{"type": "function", "function": {"name": "bash", "parameters": {}}}])
    billed = fake_chat.tokens(fake_chat.prompt_text(body))
    bound = bounds.input_bound(CHAT, body, bounds.Conversations())
    assert bound.tokens >= len(fake_chat.prompt_text(body).encode()) >= billed  # a token per byte at most


def test_a_known_conversation_makes_the_next_prompt_bound_tighter():
    known = bounds.Conversations()
    first = chat_body("x" * 40_000)
    bound = bounds.input_bound(CHAT, first, known)
    known.remember(bound.key, 10_000, None, 0)  # the server billed 10k tokens for it
    follow = dict(first, messages=[*first["messages"], {"role": "assistant", "content": "ok"}])
    tight = bounds.input_bound(CHAT, follow, known)
    assert tight.tight and 10_000 < tight.tokens < 10_200
    other_model = dict(follow, model="gpt-4o-mini")  # a different head: not the same conversation
    assert not bounds.input_bound(CHAT, other_model, known).tight


def remembered(dialect: str, body: dict, known: bounds.Conversations, billed: int) -> bounds.InputBound:
    bound = bounds.input_bound(dialect, body, known)
    known.remember(bound.key, billed, None, 0, bound.prefixes)
    return bound


def test_a_prompt_that_shares_an_earlier_ones_start_up_to_a_users_message_is_bounded_by_its_bill():
    """aider re-sends its history with the model's reply and the next message inserted before a closing reminder:
    the earlier prompt is no prefix of the next, but its parts up to the user's last message are."""
    known = bounds.Conversations()
    system = {"role": "system", "content": "s" * 20_000}
    reminder = {"role": "system", "content": "reminder " * 500}
    asked = {"role": "user", "content": "u" * 20_000}
    remembered(CHAT, {"model": "gpt-4o", "messages": [system, asked, reminder]}, known, 10_000)
    reply, again = {"role": "assistant", "content": "a" * 3_000}, {"role": "user", "content": "v" * 1_000}
    nxt = {"model": "gpt-4o", "messages": [system, asked, reply, again, reminder]}
    bound = bounds.input_bound(CHAT, nxt, known)
    tail = sum(len(bounds._dumps(part)) + bounds.MESSAGE_OVERHEAD for part in (reply, again, reminder))
    assert bound.tight and bound.tokens == 10_000 + tail + bounds.MESSAGE_OVERHEAD
    assert bound.from_bytes == tail + bounds.MESSAGE_OVERHEAD
    assert bound.tokens < bounds.input_bound(CHAT, nxt, bounds.Conversations()).tokens // 2


@pytest.mark.parametrize(
    "last",
    [
        {"role": "assistant", "content": "a" * 30_000},
        {"role": "tool", "tool_call_id": "t", "content": "r" * 30_000},
    ],
)
def test_a_shared_start_ending_with_the_models_turn_or_a_tools_result_is_not_bounded_by_a_bill(last):
    """Templates strip an earlier turn's reasoning only when a user's message follows it: a prompt cut after the
    model's turn or a tool's result might bill that turn more than the earlier prompt did."""
    known = bounds.Conversations()
    system = {"role": "system", "content": "s" * 1_000}
    remembered(CHAT, {"model": "gpt-4o", "messages": [system, last, {"role": "user", "content": "n"}]}, known, 600)
    cut = {"model": "gpt-4o", "messages": [system, last, {"role": "user", "content": "m" * 5}]}
    assert not bounds.input_bound(CHAT, cut, known).tight


def test_the_least_bill_that_held_a_shared_start_bounds_it():
    known = bounds.Conversations()
    system = {"role": "system", "content": "s" * 20_000}
    asked = {"role": "user", "content": "u" * 20_000}
    long_tail = {"role": "assistant", "content": "t" * 40_000}
    remembered(CHAT, {"model": "gpt-4o", "messages": [system, asked, long_tail, asked]}, known, 30_000)
    remembered(
        CHAT, {"model": "gpt-4o", "messages": [system, asked, {"role": "assistant", "content": "x"}]}, known, 9_000
    )
    nxt = {"model": "gpt-4o", "messages": [system, asked, {"role": "assistant", "content": "y"}]}
    assert bounds.input_bound(CHAT, nxt, known).tokens < 9_100  # the 9k bill, not the 30k one


@pytest.mark.parametrize(
    ("dialect", "item", "own"),
    [
        (CHAT, {"role": "user", "content": "hi"}, True),
        (CHAT, {"role": "user", "content": [{"type": "text", "text": "hi"}, {"type": "image_url"}]}, True),
        (CHAT, {"role": "tool", "content": "r"}, False),
        (ANTHROPIC, {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t"}]}, False),
        (ANTHROPIC, {"role": "user", "content": [{"type": "text", "text": "hi"}]}, True),
        (ANTHROPIC, {"role": "assistant", "content": "a"}, False),
        (RESPONSES, {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "q"}]}, True),
        (RESPONSES, {"type": "function_call_output", "call_id": "c", "output": "o"}, False),
        ("gemini", {"role": "user", "parts": [{"text": "q"}]}, True),
        ("gemini", {"role": "user", "parts": [{"functionResponse": {"name": "f"}}]}, False),
        ("gemini", {"role": "model", "parts": [{"text": "a"}]}, False),
        (CHAT, "a bare string", False),
        (CHAT, {"role": "user", "content": []}, False),
        (ANTHROPIC, {"role": "user", "content": [{"type": "text", "text": "q"}, {"type": "tool_result"}]}, False),
        (ANTHROPIC, {"role": "user", "content": [{"type": "server_tool_use"}]}, False),
        (ANTHROPIC, {"role": "user", "content": [{"type": "text", "text": "q", "cache_control": {}}]}, True),
        ("gemini", {"role": "user", "parts": [{"text": "q"}, {"inlineData": {"data": "AA"}}]}, True),
        ("gemini", {"role": "user", "parts": [{"text": "q", "thoughtSignature": "s"}]}, False),
        ("gemini", {"role": "user", "parts": [{}]}, False),
    ],
)
def test_a_users_own_message_is_told_from_a_tools_result_and_the_models_turn(dialect, item, own):
    assert bounds._users_own(item) is own


def test_a_moved_cache_marker_or_a_lone_text_block_keeps_the_conversation_known():
    """Claude Code moves its cache markers to the newest message each turn and sends a message as one text block,
    then as its text: the same prompt, so the same prefix (strict's `_uncached`, after serializing once)."""
    known = bounds.Conversations()
    marker = {"type": "ephemeral"}
    turn = [
        {"role": "user", "content": [{"type": "text", "text": "x" * 40_000, "cache_control": marker}]},
        {"role": "assistant", "content": [{"type": "text", "text": "ok"}]},
    ]
    first = messages_body(system=[{"type": "text", "text": "s", "cache_control": marker}], messages=turn)
    known.remember(bounds.input_bound(ANTHROPIC, first, known).key, 10_000, None, 0)
    moved = [{"role": "user", "content": "x" * 40_000}, {"role": "assistant", "content": "ok"}]
    moved.append({"role": "user", "content": [{"type": "text", "text": "next", "cache_control": marker}]})
    follow = messages_body(system=[{"type": "text", "text": "s"}], messages=moved)
    tight = bounds.input_bound(ANTHROPIC, follow, known)
    assert tight.tight and 10_000 < tight.tokens < 10_200
    changed = messages_body(
        system=[{"type": "text", "text": "s"}], messages=[{"role": "user", "content": "y" * 40_000}]
    )
    assert not bounds.input_bound(ANTHROPIC, changed, known).tight  # a different prompt is not taken for it


def test_what_is_kept_from_a_parts_bytes_changes_no_bound(monkeypatch):
    """Conversations that grow, move their cache markers, share messages after different starts, and are sent
    again: every bound and link is the one computed from scratch (nothing kept), call after call."""
    rng = random.Random(17)
    marker = {"type": "ephemeral"}
    shared = {"role": "user", "content": "a message two conversations send after different starts"}

    def message(i: int) -> dict:
        kind = rng.choice(["text", "blocks", "tool", "image"])
        role = "user" if i % 2 == 0 else "assistant"
        if kind == "text":
            return {"role": role, "content": rng.choice(["hi", "x" * rng.randint(1, 300)])}
        if kind == "image":
            return {"role": "user", "content": [{"type": "image", "source": {"type": "url", "url": "u"}}]}
        if kind == "tool":
            return {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t", "content": "r"}]}
        return {"role": role, "content": [{"type": "text", "text": rng.choice(["a", "b" * 50])}]}

    def marked(messages: list) -> list:
        out = json.loads(json.dumps(messages))  # new objects each call, as a decoded request is
        last = out[-1]
        if isinstance(last["content"], str):
            last["content"] = [{"type": "text", "text": last["content"]}]
        last["content"][-1]["cache_control"] = marker
        return out

    calls = []
    for conversation in range(6):
        messages: list = [message(0)] + ([shared] if conversation % 2 else [])
        for turn in range(12):
            messages.append(message(turn + 1))
            body = messages_body(system=[{"type": "text", "text": f"s{conversation % 3}", "cache_control": marker}])
            calls.append({**body, "messages": marked(messages)})
            if rng.random() < 0.3:
                calls.append({**body, "messages": marked(messages)})  # sent again
    kept, fresh = bounds.Conversations(), bounds.Conversations()
    for i, body in enumerate(calls):
        with monkeypatch.context() as nothing_kept:
            nothing_kept.setattr(bounds, "_KEPT", bounds._Kept(0, 0))
            expected = bounds.input_bound(ANTHROPIC, json.loads(json.dumps(body)), fresh)
            expected_marked = bounds.Prompt.of(ANTHROPIC, body).marked()
        got = bounds.input_bound(ANTHROPIC, body, kept)
        assert got == expected, i
        assert bounds.Prompt.of(ANTHROPIC, body).marked() == expected_marked
        for known in (kept, fresh):  # billed: later calls are held tighter
            known.remember(got.key, 50 + i, None, 0, got.prefixes)
    assert sum(bound.tight for bound in [bounds.input_bound(ANTHROPIC, b, kept) for b in calls]) > len(calls) // 2


def test_what_is_kept_is_bounded_in_bytes_and_the_oldest_goes_first():
    kept = bounds._Kept(budget=100, largest=60)
    a, b, c, d = ((b"x", bytes([n]) * 40) for n in range(4))
    kept.put(a, 40, 1)
    kept.put(b, 40, 2)
    kept.put(a, 40, 9)  # kept already: unchanged
    assert kept.get(a) == 1 and kept.get((b"y", a[1])) is None  # the link before a part is part of its key
    kept.put(c, 40, 3)  # 120 bytes: the oldest goes
    assert kept.get(a) is None and kept.get(b) == 2 and kept.get(c) == 3
    kept.put(d, 61, 4)  # larger than any part it keeps
    assert kept.get(d) is None and kept.get(b) == 2 and kept.get(c) == 3


@pytest.mark.parametrize(
    "part",
    [
        {"role": "user", "content": "plain"},
        {"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]},
        {"role": "user", "content": [{"text": "t", "type": "text"}]},
        {"role": "user", "content": [{"type": "tool_result", "content": [{"type": "text", "text": "r"}]}]},
        {"text": 'a "cache_control": {} and "content":[{"type":"text","text":"x"}] inside a string'},
        [{"type": "text", "text": "s", "cache_control": {"type": "ephemeral", "ttl": "1h"}}],
        {"role": "user", "content": [{"type": "text", "text": 'quote " and backslash \\ and "}]'}]},
        {"role": "user", "content": [{"type": "text", "text": "ends in a backslash \\"}]},
        {"role": "user", "content": [{"type": "text", "text": 'ends in \\"'}, {"type": "text", "text": "b"}]},
        {"role": "user", "content": [{"type": "text", "text": "a", "cache_control": None}]},
        {"role": "user", "content": [{"type": "text", "text": "x"}], "extra": [{"type": "text", "text": "y"}]},
        {"role": "user", "content": [{"type": "tool_result", "content": [{"text": "r", "type": "text"}]}]},
        {"role": "user", "content": [{"type": "text", "text": '"}]'}, {"type": "image"}]},
        {"role": "assistant", "content": [{"type": "text", "text": "t"}, {"type": "tool_use", "input": {}}]},
        {"content": [{"type": "text", "text": "no role, one block"}]},
        {"content": [{"type": "text", "text": "x", "citations": []}]},
        {"content": [{"type": "text"}]},
        {"content": [{"text": 5, "type": "text"}]},
    ],
)
def test_the_hashed_bytes_are_the_uncached_parts_serialization(part):
    assert bounds.Part.of(part, b"before").link == hashed_link(b"before", part)


def hashed_link(before: bytes, part: dict) -> bytes:
    """The chain's link after a part, as defined: its serialization without cache markers or lone text blocks."""
    return hashlib.sha256(before + bounds._dumps(bounds._uncached(part))).digest()


def test_the_hashed_bytes_match_on_random_parts():
    """The bytes' shortcut (no cache marker and no lone text block: the part's own bytes) against the rewrite."""
    rng = random.Random(7)
    texts = ["t", 'q"', "b\\", '"}]', '\\"', "é", '"content":[{"type":"text","text":"x"}]']

    def block() -> dict:
        keys = rng.sample(["type", "text", "cache_control", "content", "id"], rng.randint(1, 3))
        out: dict = {}
        for key in keys:
            if key == "type":
                out[key] = rng.choice(["text", "tool_result", "image"])
            elif key == "text":
                out[key] = rng.choice(texts) * rng.randint(1, 3)
            elif key == "cache_control":
                out[key] = rng.choice([{"type": "ephemeral"}, None, {"type": "ephemeral", "ttl": "1h"}])
            elif key == "content":
                out[key] = rng.choice([rng.choice(texts), [block() for _ in range(rng.randint(0, 2))]])
            else:
                out[key] = rng.choice(texts)
        return out

    for _ in range(3_000):
        part = {"role": "user", "content": [block() for _ in range(rng.randint(1, 3))]}
        assert bounds.Part.of(part, b"before").link == hashed_link(b"before", part), part


# The per-mark searches the one-pass scan replaced: a media block's type or Gemini's inline data anywhere in a part.
SEARCHED_MEDIA = re.compile(rb'"type":"(?:input_)?(?:image|document|file|audio)|"inline_?[dD]ata":')


@pytest.mark.parametrize(
    "part",
    [
        {"role": "user", "content": [{"type": "text", "text": "x"}, {"type": "image", "source": {"type": "url"}}]},
        {"content": [{"type": "text", "text": "lone"}], "x": {"type": "document", "source": {"type": "file"}}},
        {"content": [{"text": "lone", "type": "text"}], "parts": [{"inlineData": {"mimeType": "image/png"}}]},
        {"content": [{"type": "text", "text": "a", "cache_control": {}}], "y": {"type": "input_file"}},
        {"content": [{"type": "text", "text": '"type":"image"'}]},
        {'a"cache_control': 1, 'b"content': [{"type": "text", "text": "x"}]},  # keys that end like marks
        {"content": [{"type": "text", "text": "t"}, {"type": "text", "text": "u"}], "z": {"type": "input_audio"}},
    ],
)
def test_one_scan_finds_what_the_searches_found(part):
    dumped = bounds._dumps(part)
    rewrite, media = bounds._scan(dumped)
    assert media == bool(SEARCHED_MEDIA.search(dumped))
    assert rewrite == (bounds._dumps(bounds._uncached(part)) != dumped or bounds.CACHE_CONTROL in dumped)


def test_one_scan_finds_what_the_searches_found_on_random_parts():
    """Marks in any order and nesting, text that looks like a mark: the scan's answers are the searches' and the
    rewrite's (a part it calls plain is exactly its own bytes without markers or lone blocks)."""
    rng = random.Random(13)
    texts = ["t", '"type":"image"', '"cache_control":', '"}]', "\\", '"content":[{"type":"text","text":"x"}]']
    kinds = ["text", "tool_result", "image", "input_image", "document", "file", "input_audio", "tool_use"]

    def block(depth: int) -> dict:
        keys = rng.sample(["type", "text", "cache_control", "content", "inlineData", "id"], rng.randint(1, 3))
        out: dict = {}
        for key in keys:
            if key == "type":
                out[key] = rng.choice(kinds)
            elif key == "content" and depth < 3:
                out[key] = rng.choice([rng.choice(texts), [block(depth + 1) for _ in range(rng.randint(0, 2))]])
            elif key == "cache_control":
                out[key] = rng.choice([{"type": "ephemeral"}, None])
            elif key == "inlineData":
                out[key] = {"mimeType": "image/png", "data": "AAAA"}
            else:
                out[key] = rng.choice(texts) * rng.randint(1, 2)
        return out

    answers = set()
    for _ in range(4_000):
        part = {"role": "user", "content": [block(0) for _ in range(rng.randint(1, 3))]}
        dumped = bounds._dumps(part)
        rewrite, media = bounds._scan(dumped)
        plain = bounds._dumps(bounds._uncached(part)) == dumped and bounds.CACHE_CONTROL not in dumped
        assert media == bool(SEARCHED_MEDIA.search(dumped)), part
        assert rewrite != plain, part
        answers.add((rewrite, media))
    assert answers == {(False, False), (False, True), (True, False), (True, True)}


def walked_cache_write(body: dict) -> str | None:
    """The dearest cache write, by a walk of every object: any cache_control object writes, "1h" if its ttl says."""
    found = None
    stack: list = [body]
    while stack:
        value = stack.pop()
        if isinstance(value, dict):
            control = value.get("cache_control")
            if isinstance(control, dict):
                if control.get("ttl") == "1h":
                    return "1h"
                found = "5m"
            stack.extend(v for v in value.values() if isinstance(v, (dict, list)))
        elif isinstance(value, list):
            stack.extend(v for v in value if isinstance(v, (dict, list)))
    return found


@pytest.mark.parametrize(
    "body",
    [
        {"messages": [{"role": "user", "content": "hi"}]},
        {"system": [{"type": "text", "text": "s", "cache_control": {"type": "ephemeral"}}]},
        {"messages": [{"role": "user", "content": [{"type": "text", "text": "a", "cache_control": {"ttl": "1h"}}]}]},
        {"messages": [{"role": "user", "content": [{"type": "text", "text": "a", "ttl": "1h"}]}]},
        {"messages": [], "tools": [{"name": "t", "input_schema": {"properties": {"ttl": {"enum": ["1h"]}}}}]},
        {"cache_control": {"type": "ephemeral"}, "metadata": {"ttl": "1h"}},
        {"messages": [{"role": "user", "content": [{"type": "text", "text": "a", "cache_control": None}]}]},
        {"messages": [{"role": "user", "content": 'a "cache_control":{"ttl":"1h"} in the text'}]},
        {"tools": [{"name": "t", "input_schema": {"properties": {"cache_control": {"type": "object"}}}}]},
        {"system": [{"type": "text", "text": "s", "cache_control": {"type": "ephemeral", "ttl": "5m"}}]},
        {"x": [[{"cache_control": {"ttl": "1h"}}]], "y": {"cache_control": {}}},
    ],
)
def test_the_cache_write_read_off_the_bytes_is_the_walks(body):
    assert dialects._cache_write(body) == walked_cache_write(body)
    assert dialects._cache_write(body, bounds.Prompt.of(ANTHROPIC, body).marked()) == walked_cache_write(body)


def test_the_cache_write_read_off_the_bytes_is_the_walks_on_random_bodies():
    rng = random.Random(11)
    strings = ["1h", "5m", '"ttl":"1h"', "{", "}", '\\"}', "cache_control", '"cache_control":{']

    def value(depth: int):
        kind = rng.randint(0, 5 if depth < 4 else 1)
        if kind == 0:
            return rng.choice(strings)
        if kind == 1:
            return rng.choice([None, 1, True])
        if kind == 2:
            return [value(depth + 1) for _ in range(rng.randint(0, 3))]
        keys = rng.sample(["cache_control", "ttl", "type", "text", "content", "x"], rng.randint(1, 4))
        return {key: value(depth + 1) for key in keys}

    seen = set()
    for _ in range(4_000):
        body = {"messages": [value(0) for _ in range(rng.randint(1, 3))]}
        for key in rng.sample(["system", "tools", "metadata", "input", "thinking"], rng.randint(0, 2)):
            body[key] = value(1)  # a marker in the head, in a key that is no prompt, in another API's messages
        expected = walked_cache_write(body)
        seen.add(expected)
        assert dialects._cache_write(body) == expected, body
        marked = bounds.Prompt.of(ANTHROPIC, body).marked()  # read off the pieces the gate serialized
        assert dialects._cache_write(body, marked) == expected, body
    assert seen == {None, "5m", "1h"}  # every answer was reached


@pytest.mark.parametrize(
    "value",
    [{}, {"a": "}"}, {"a": {"b": "{"}}, {"a": 'q\\"}', "b": [{"c": "\\"}]}, {"cache_control": {"ttl": "1h"}}],
)
def test_an_objects_end_and_a_strings_end_in_compact_json(value):
    encoded = b'[1,"x\\\\",' + bounds._dumps(value) + b',"tail"]'
    start = encoded.index(b"{")
    assert compact_json.object_end(encoded, start) == start + len(bounds._dumps(value)) - 1
    assert compact_json.string_end(encoded, 4) == encoded.index(b'",{')  # "x\\" ends after its two backslashes
    assert (
        compact_json.object_end(b'{"a":"}', 0) == 7 and compact_json.string_end(b'"ab\\"', 1) == 5
    )  # unclosed: its end


def test_a_response_continued_by_id_is_bounded_by_what_it_billed_or_refused():
    known = bounds.Conversations()
    body = {"model": "gpt-4o", "input": "next", "previous_response_id": "resp_1"}
    with pytest.raises(ValueError, match="did not see"):
        bounds.input_bound(RESPONSES, body, known)
    known.remember(b"k", 5_000, "resp_1", 700)
    assert bounds.input_bound(RESPONSES, body, known).tokens >= 5_700


def test_media_by_reference_gets_an_allowance_and_inline_media_its_bytes():
    url = {"type": "image", "source": {"type": "url", "url": "https://x/y.png"}}
    inline = {"type": "image", "source": {"type": "base64", "data": "AAAA"}}
    assert bounds.media_allowance([url]) == bounds.IMAGE_TOKENS
    assert bounds.media_allowance([inline]) == 0
    assert bounds.media_allowance({"type": "input_file", "file_id": "f"}) == bounds.REFERENCED_DOCUMENT_TOKENS


def test_a_cut_stream_is_charged_what_it_streamed_never_zero():
    assert bounds.cut_output_tokens(0, 0, 4096, False) == bounds.CUT_SLACK
    assert bounds.cut_output_tokens(400, 10, 4096, False) == 400 + 20 + bounds.CUT_SLACK
    assert bounds.cut_output_tokens(10**6, 10, 4096, False) == 4096
    assert bounds.cut_output_tokens(0, 0, 4096, True) == 4096  # reasoning it never streamed


# ---- the gate: holds, lowering, refusals


def gate(cap: int | None = CAP, events: list | None = None, **kw) -> Gate:
    return Gate(Pricer(), cap_micro=cap, on_event=(events.append if events is not None else None), **kw)


def test_a_request_that_fits_goes_unchanged_and_holds_its_worst_case():
    g = gate()
    body = messages_body(max_tokens=1000)
    admission = g.admit(ANTHROPIC, body)
    assert isinstance(admission, Admission) and admission.body is body and not admission.lowered
    assert g.held_micro == admission.hold.micro > 0


def test_max_tokens_is_lowered_so_the_worst_case_fits_the_budget():
    g = gate(cap=200_000)  # $0.20: 64k output tokens of sonnet ($15/M) would be $0.96
    admission = g.admit(ANTHROPIC, messages_body(max_tokens=64_000))
    assert isinstance(admission, Admission) and admission.lowered
    assert 1_024 <= admission.body["max_tokens"] < 64_000
    assert admission.hold.micro <= 200_000


def test_a_thinking_budget_comes_down_with_max_tokens():
    g = gate(cap=200_000)
    body = messages_body(max_tokens=64_000, thinking={"type": "enabled", "budget_tokens": 60_000})
    admission = g.admit(ANTHROPIC, body)
    assert admission.body["thinking"]["budget_tokens"] < admission.body["max_tokens"]


def test_chat_without_a_limit_gets_one_only_when_lowered():
    assert "max_completion_tokens" not in gate(cap=2_000_000).admit(CHAT, chat_body()).body  # 128k out: $1.28
    lowered = gate(cap=20_000).admit(CHAT, chat_body())
    assert 1_024 <= lowered.body["max_completion_tokens"] <= 2_000  # $0.02 at $10/M


def test_no_room_for_a_useful_reply_is_refused_naming_the_cap():
    events: list = []
    g = gate(cap=10_000, events=events, min_output=1_024)  # $0.01: a 1,024-token sonnet reply costs ~$0.015
    refusal = g.admit(ANTHROPIC, messages_body(max_tokens=4096))
    assert isinstance(refusal, Refused) and refusal.at_cap
    assert "spending cap of $0.01 reached" in refusal.why
    assert events == [refusal] and g.held_micro == 0


def test_concurrent_admissions_never_hold_more_than_the_cap():
    g = gate(cap=300_000)
    admitted: list = []

    def go() -> None:
        found = g.admit(ANTHROPIC, messages_body(max_tokens=8_000))
        if isinstance(found, Admission):
            admitted.append(found)

    threads = [threading.Thread(target=go) for _ in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert 0 < len(admitted) < 20
    assert sum(a.hold.micro for a in admitted) == g.held_micro <= 300_000


def test_settling_the_exact_usage_releases_the_hold_and_emits_a_reply():
    events: list = []
    g = gate(events=events)
    admission = g.admit(ANTHROPIC, messages_body())
    seen = from_body(ANTHROPIC, {"id": "msg_1", "usage": {"input_tokens": 1000, "output_tokens": 100}})
    reply = g.settle(admission, seen)
    assert g.held_micro == 0 and g.spent_micro == 3000 + 1500  # $3/M in, $15/M out
    assert reply.key == "proxy:anthropic:msg_1" and reply.details["charged"] == "usage"
    assert events == [reply]
    assert g.settle(admission, seen) is None and g.spent_micro == 4500  # settled once


def test_an_upstream_error_without_usage_releases_the_hold():
    g = gate()
    g.release(g.admit(CHAT, chat_body()))
    assert (g.held_micro, g.spent_micro) == (0, 0)


def test_the_remaining_budget_can_change_mid_run():
    g = gate(cap=CAP)
    g.settle(g.admit(CHAT, chat_body()), from_body(CHAT, {"usage": {"prompt_tokens": 1000, "completion_tokens": 0}}))
    g.set_remaining(1_000)  # the month's allowance shrank to a tenth of a cent
    assert g.cap_micro == g.spent_micro + 1_000
    assert isinstance(g.admit(CHAT, chat_body()), Refused)


def test_an_unpriceable_or_denied_model_is_refused():
    assert "cannot price" in gate().admit(CHAT, chat_body(model="no-such-model")).why
    denied = gate(models=ModelRules(deny=("claude-opus-*",))).admit(ANTHROPIC, messages_body(model="claude-opus-4-1"))
    assert "denied" in denied.why and not denied.at_cap


# ---- settle parsing per dialect, and hostile usage


def stream_events(dialect: str, events: list[dict]) -> Tracker:
    tracker = Tracker(dialect)
    for event in events:
        tracker.see(event)
    return tracker


def test_anthropic_stream_usage_comes_from_message_start_and_message_delta():
    usage = {"input_tokens": 10, "cache_read_input_tokens": 3000, "cache_creation_input_tokens": 200}
    seen = stream_events(
        ANTHROPIC,
        [
            {"type": "message_start", "message": {"id": "msg_9", "model": "m", "usage": {**usage, "output_tokens": 1}}},
            {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "héllo"}},
            {"type": "message_delta", "delta": {"stop_reason": "end_turn"}, "usage": {"output_tokens": 42}},
        ],
    ).seen
    assert seen.complete and seen.response_id == "msg_9" and seen.output_bytes == 6
    assert (seen.usage.input_tokens, seen.usage.cache_read_tokens, seen.usage.output_tokens) == (10, 3000, 42)


def test_chat_usage_comes_from_the_final_chunk_with_cached_tokens_apart():
    chunk = {"id": "c1", "choices": [{"delta": {"content": "abcd"}}]}
    final = {"id": "c1", "choices": [], "usage": {"prompt_tokens": 2000, "completion_tokens": 5,
                                                  "prompt_tokens_details": {"cached_tokens": 1024}}}  # fmt: skip
    seen = stream_events(CHAT, [chunk, final]).seen
    assert is_usage_chunk(final) and not is_usage_chunk(chunk)
    assert (seen.usage.input_tokens, seen.usage.cache_read_tokens, seen.usage.output_tokens) == (976, 1024, 5)


def test_responses_usage_comes_from_completed_or_incomplete():
    usage = responses_billing.usage_block(500, 128, 40, 10)
    for kind in ("response.completed", "response.incomplete"):
        seen = stream_events(RESPONSES, [{"type": kind, "response": {"id": "r1", "usage": usage}}]).seen
        assert seen.complete and (seen.usage.input_tokens, seen.usage.cache_read_tokens) == (372, 128)


def test_a_stream_without_final_usage_is_charged_its_bound_not_zero():
    g = gate()
    admission = g.admit(CHAT, chat_body(stream=True, max_tokens=4096))
    cut = stream_events(CHAT, [{"id": "c", "choices": [{"delta": {"content": "x" * 100}}]}]).seen
    reply = g.settle(admission, cut)
    assert reply.details["charged"] == "bound"
    assert reply.output_tokens >= 100 and reply.input_tokens >= 1
    assert 0 < g.spent_micro <= admission.hold.micro


@pytest.mark.parametrize("figure", [10**15, float("inf")])
def test_an_absurd_usage_counts_as_the_bound_and_is_suspicious(figure):
    seen = from_body(CHAT, {"usage": {"prompt_tokens": 10, "completion_tokens": figure}})
    assert seen.usage.output_tokens == MAX_TOKENS and "bound" in seen.suspicious
    g = gate()
    reply = g.settle(g.admit(CHAT, chat_body()), seen)
    assert reply.suspicious and g.spent_micro >= CAP  # the cap fires: fail closed


def assert_charged_the_whole_hold(dialect: str, body: dict, seen, g: Gate | None = None) -> None:
    """`body` admitted, then settled with `seen`: charged by its bound, its whole output limit, all it held."""
    g = g or gate()
    admission = g.admit(dialect, body)
    reply = g.settle(admission, seen)
    assert reply.details["charged"] == "bound" and reply.output_tokens == body["max_tokens"]
    assert g.spent_micro == admission.hold.micro


@pytest.mark.parametrize("figure", ["12", -5, None, float("nan"), True])
def test_a_usage_figure_that_is_no_number_is_charged_the_whole_hold(figure):
    seen = from_body(CHAT, {"usage": {"prompt_tokens": 10, "completion_tokens": figure}})
    assert seen.unreadable and not seen.complete
    assert_charged_the_whole_hold(CHAT, chat_body(max_tokens=500), seen)


@pytest.mark.parametrize(
    ("dialect", "event"),
    [
        (CHAT, {"choices": 5, "usage": {"prompt_tokens": 10, "completion_tokens": 5}}),
        (CHAT, {"choices": [{"delta": {"tool_calls": 1.5}}]}),
        (ANTHROPIC, {"type": "message_delta", "usage": {"output_tokens": 5, "iterations": 2.0}}),
        ("gemini", {"candidates": True, "usageMetadata": {"promptTokenCount": 3, "candidatesTokenCount": 1}}),
    ],
)
def test_a_reply_of_a_shape_no_api_sends_is_charged_its_whole_hold(dialect, event):
    """A model server's field of the wrong shape (a number where a list goes) is no usage to believe: the call is
    charged by its bound, never left uncounted, and nothing raises into the stream."""
    tracker = Tracker(dialect)
    tracker.see(event)
    assert tracker.seen.unreadable and not tracker.seen.complete and "cannot read" in tracker.seen.suspicious
    if dialect == ANTHROPIC:  # the same in a whole (non-streamed) reply
        whole = from_body(ANTHROPIC, {"id": "msg_1", **event})
        assert whole.unreadable and not whole.complete
        assert_charged_the_whole_hold(ANTHROPIC, messages_body(max_tokens=500), whole)


@pytest.mark.parametrize("rates", [{}, {"speed": "fast"}, {"inference_geo": "us"}])
def test_a_call_charged_by_its_bound_is_priced_at_the_rates_it_was_held_at(rates):
    """Fast mode costs several times the standard rates and US-only inference 1.1 times: a reply whose usage cannot
    be read is charged at them, as its hold was, never at the standard rates."""
    unreadable = from_body(ANTHROPIC, {"id": "msg_1", "usage": {"output_tokens": "many"}})
    body = messages_body(max_tokens=500, model="claude-opus-5-5", **rates)
    assert_charged_the_whole_hold(ANTHROPIC, body, unreadable, gate(cap=10**9))


def test_a_request_field_of_a_shape_capguard_cannot_read_is_refused_not_sent(monkeypatch):
    """Gemini's tools as a number: refused in one line. Any other shape that breaks the reading of a request is
    refused the same way (the gate's net, reached here by a reader that fails): nothing is held or sent."""
    g = Gate(Pricer(), cap_micro=CAP)
    body = {"contents": [{"role": "user", "parts": [{"text": "hi"}]}], "tools": 5}
    refused = g.admit("gemini", body, model="gemini-2.5-flash")
    assert isinstance(refused, Refused) and refused.why == "the request's tools are not a list"

    def breaks(*args, **kwargs):
        raise TypeError("'int' object is not iterable")

    monkeypatch.setattr(bounds.Prompt, "of", breaks)
    refused = g.admit(CHAT, chat_body())
    assert isinstance(refused, Refused) and "cannot read this request" in refused.why and "TypeError" in refused.why
    assert g.spent_micro == 0 and g._holds.held_micro == 0


ODD = [None, True, 0, -1, 2**70, 1.5, 1e308, "", "x", "1h", [], {}, [1], {"a": 1}, {"type": "ephemeral", "ttl": "1h"},
       [{"type": "web_search"}], [{"type": "function", "name": "f"}], "message_delta", "response.completed"]  # fmt: skip
REQUEST_KEYS = {
    ANTHROPIC: ["model", "max_tokens", "messages", "system", "tools", "thinking", "stream", "speed", "inference_geo",
                "cache_control", "mcp_servers", "output_config", "task_budget"],
    CHAT: ["model", "max_tokens", "max_completion_tokens", "messages", "tools", "n", "stream", "stream_options",
           "reasoning_effort", "modalities", "audio"],
    RESPONSES: ["model", "max_output_tokens", "input", "instructions", "tools", "previous_response_id", "reasoning",
                "stream", "background"],
    "gemini": ["contents", "systemInstruction", "tools", "generationConfig", "cachedContent", "toolConfig"],
}  # fmt: skip
REPLY_KEYS = ["type", "usage", "message", "delta", "input_tokens", "output_tokens", "cache_read_input_tokens",
              "cache_creation", "server_tool_use", "iterations", "choices", "prompt_tokens", "completion_tokens",
              "prompt_tokens_details", "tool_calls", "response", "usageMetadata", "promptTokenCount",
              "candidatesTokenCount", "candidates", "content", "parts", "text", "id", "model", "error"]  # fmt: skip


def odd_value(rng: random.Random, keys: list[str], depth: int = 0):
    roll = rng.random()
    if roll < 0.45 or depth > 3:
        return rng.choice(ODD)
    if roll < 0.7:
        return [odd_value(rng, keys, depth + 1) for _ in range(rng.randint(0, 3))]
    return {key: odd_value(rng, keys, depth + 1) for key in rng.sample(keys, rng.randint(1, 5))}


def test_no_request_or_reply_of_any_shape_raises_out_of_the_gate_or_the_trackers():
    """Requests and replies with odd values in every field capguard reads (a number where a list goes, a list where
    a number goes): each request is admitted, refused or counted, each reply read or marked unreadable; nothing
    raises into the proxy, where it would be a 500, a cut stream and a traceback on the agent's screen."""
    rng = random.Random(23)
    answers = set()
    for _ in range(3_000):
        dialect = rng.choice(list(REQUEST_KEYS))
        keys = REQUEST_KEYS[dialect]
        body = {key: odd_value(rng, keys) for key in rng.sample(keys, rng.randint(0, len(keys)))}
        if dialect != "gemini" and rng.random() < 0.6:
            body["model"] = rng.choice(["claude-sonnet-4-5", "gpt-4o", "gpt-5"])
        g = Gate(Pricer(), cap_micro=rng.choice([None, 10, CAP]), task_budget=rng.choice([None, 50_000]))
        model = "gemini-2.5-flash" if dialect == "gemini" else None
        answer = g.admit(dialect, body, model=model, stream=rng.random() < 0.5, may_count=rng.random() < 0.5)
        answers.add(type(answer).__name__)
        if isinstance(answer, Admission):
            tracker = Tracker(dialect)
            for _ in range(rng.randint(0, 3)):
                event = odd_value(rng, REPLY_KEYS)
                if isinstance(event, dict):
                    tracker.see(event)
            g.settle(answer, rng.choice([tracker.seen, from_body(dialect, odd_value(rng, REPLY_KEYS))]))
    assert answers == {"Admission", "Refused", "Count"}


# ---- SSE


def test_sse_events_are_cut_across_chunks_and_line_endings():
    raw = b'event: a\ndata: {"x": 1}\n\nevent: b\r\ndata: {"y": 2}\r\n\r\n'
    splitter = sse.EventSplitter()
    out = [e for i in range(len(raw)) for e in splitter.feed(raw[i : i + 1])]
    assert b"".join(out) == raw
    assert [sse.parse(e)[0] for e in out] == ["a", "b"]
    assert sse.json_data(sse.parse(out[1])[1]) == {"y": 2}
    assert sse.json_data("[DONE]") is None and sse.json_data(json.dumps([1])) is None


def test_a_request_bound_counts_media_by_reference_in_every_dialect():
    """input_bound skips the media walk for parts whose bytes show no media type: it must still find each one."""
    known = bounds.Conversations()
    text = {"role": "user", "content": [{"type": "text", "text": "x"}]}
    for dialect, block in (
        ("anthropic", {"type": "image", "source": {"type": "url", "url": "https://e/x.png"}}),
        ("anthropic", {"type": "document", "source": {"type": "file", "file_id": "f"}}),
        ("chat", {"type": "image_url", "image_url": {"url": "https://e/x.png"}}),
        ("responses", {"type": "input_file", "file_id": "f"}),
        ("responses", {"type": "input_image", "image_url": "https://e/x.png"}),
    ):
        key = "input" if dialect == "responses" else "messages"
        plain = bounds.input_bound(dialect, {"model": "m", key: [text]}, known).tokens
        with_media = {"role": "user", "content": [{"type": "text", "text": "x"}, block]}
        assert bounds.input_bound(dialect, {"model": "m", key: [with_media]}, known).tokens >= plain + min(
            bounds.IMAGE_TOKENS, bounds.REFERENCED_DOCUMENT_TOKENS
        ), block


def test_tokens_a_server_bills_past_the_completions_count_are_output():
    """xAI-style usage: reasoning billed outside completion_tokens, inside total_tokens; the call is settled at what
    the total says (never less than the completion's count, whatever the total)."""
    seen = from_body(CHAT, {"usage": {"prompt_tokens": 100, "completion_tokens": 20, "total_tokens": 170}})
    assert (seen.usage.input_tokens, seen.usage.output_tokens) == (100, 70)
    seen = from_body(CHAT, {"usage": {"prompt_tokens": 100, "completion_tokens": 20, "total_tokens": 50}})
    assert seen.usage.output_tokens == 20
    seen = from_body(RESPONSES, {"usage": {"input_tokens": 10, "output_tokens": 5, "total_tokens": 15}})
    assert seen.usage.output_tokens == 5


# ---- a reply whose usage leaves out a figure the API always states


def settled_without(events: list[dict], *, stream: bool = True) -> tuple[Admission, object, Gate]:
    g = gate()
    admission = g.admit(ANTHROPIC, messages_body(max_tokens=1000, stream=stream))
    assert isinstance(admission, Admission)
    tracker = Tracker(ANTHROPIC)
    for event in events:
        tracker.see(event)
    return admission, g.settle(admission, tracker.seen), g


def test_a_stream_whose_usage_never_states_its_prompt_is_charged_the_prompts_bound_not_zero():
    """A server whose message_start has no usage and whose message_delta says only output_tokens: settled before
    at an input of 0 (its prompt free); now at the prompt's bound and the larger of the stated and streamed output."""
    admission, reply, g = settled_without([
        {"type": "message_start", "message": {"id": "m1", "model": "claude-sonnet-4-5"}},
        {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "hi"}},
        {"type": "message_delta", "delta": {"stop_reason": "end_turn"}, "usage": {"output_tokens": 200}},
        {"type": "message_stop"},
    ])  # fmt: skip
    assert reply.details["charged"] == "bound" and "leaves out input_tokens" in reply.suspicious
    assert reply.input_tokens == admission.input.tokens > 0 and reply.output_tokens == 200  # the stated output


def test_a_stream_whose_usage_never_states_its_output_keeps_its_prompt_and_bounds_its_output():
    admission, reply, _ = settled_without([
        {"type": "message_start", "message": {"id": "m1", "usage": {"input_tokens": 900}}},
        {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "x" * 400}},
        {"type": "message_delta", "delta": {"stop_reason": "end_turn"}, "usage": {"cache_read_input_tokens": 0}},
    ])  # fmt: skip
    assert reply.details["charged"] == "bound" and "leaves out output_tokens" in reply.suspicious
    assert reply.input_tokens == 900 and reply.output_tokens >= 400


def test_a_stream_whose_message_delta_has_no_usage_is_not_charged_message_starts_placeholder_output():
    """message_start says output_tokens 1 (a placeholder); a message_delta without usage left that as the output."""
    admission, reply, _ = settled_without([
        {"type": "message_start", "message": {"id": "m1", "usage": {"input_tokens": 900, "output_tokens": 1}}},
        {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "x" * 400}},
        {"type": "message_delta", "delta": {"stop_reason": "end_turn"}},
        {"type": "message_stop"},
    ])  # fmt: skip
    assert reply.details["charged"] == "bound" and "leaves out output_tokens" in reply.suspicious
    assert reply.input_tokens == 900 and reply.output_tokens >= 400


def test_a_whole_reply_whose_usage_leaves_out_a_figure_is_charged_the_bound_for_that_figure():
    g = gate()
    admission = g.admit(ANTHROPIC, messages_body(max_tokens=1000))
    reply = g.settle(admission, from_body(ANTHROPIC, {"id": "m1", "usage": {"output_tokens": 10}}))
    assert reply.details["charged"] == "bound" and "leaves out input_tokens" in reply.suspicious
    assert (reply.input_tokens, reply.output_tokens) == (admission.input.tokens, 10)  # the bound, the stated output
    assert g.spent_micro == admission.worst.cost(10)  # priced as held: the prompt at its dearest rate
    g = gate()
    admission = g.admit(ANTHROPIC, messages_body(max_tokens=1000))
    reply = g.settle(admission, from_body(ANTHROPIC, {"id": "m2", "usage": {"input_tokens": 7}}))
    assert (reply.input_tokens, reply.output_tokens) == (7, 1000)  # no output figure: its whole limit


def test_a_gemini_reply_that_never_states_its_prompt_is_charged_by_its_bound():
    from capguard.metering.proxy.dialects import GEMINI

    g = gate()
    body = {"contents": [{"role": "user", "parts": [{"text": "word " * 1000}]}]}
    admission = g.admit(GEMINI, body, model="gemini-2.5-flash", stream=True)
    assert isinstance(admission, Admission)
    tracker = Tracker(GEMINI)
    tracker.see({"candidates": [{"content": {"parts": [{"text": "ok"}]}, "finishReason": "STOP"}],
                 "usageMetadata": {"candidatesTokenCount": 2}, "responseId": "r1"})  # fmt: skip
    reply = g.settle(admission, tracker.seen)
    assert reply.details["charged"] == "bound" and "promptTokenCount" in reply.suspicious
    assert reply.input_tokens == admission.input.tokens > 0
