"""Reading what an Anthropic call used: message usage, stream events, and a prompt's size without the API."""

from __future__ import annotations

import json

from capguard.core.anthropic_usage import StreamTracker, estimate_input_tokens, read_usage

USAGE = {
    "input_tokens": 11,
    "output_tokens": 40,
    "cache_read_input_tokens": 3000,
    "cache_creation_input_tokens": 2500,
    "cache_creation": {"ephemeral_5m_input_tokens": 2000, "ephemeral_1h_input_tokens": 500},
    "server_tool_use": {"web_search_requests": 2},
    "speed": "fast",
    "inference_geo": "us",
}


def test_message_usage_with_cache_writes_by_ttl_and_web_searches():
    usage = read_usage(USAGE)
    assert (usage.input_tokens, usage.output_tokens, usage.cache_read_tokens, usage.cache_write_tokens) == (
        11,
        40,
        3000,
        2500,
    )
    assert (usage.cache_write_1h_tokens, usage.web_search_requests, usage.speed, usage.inference_geo) == (
        500,
        2,
        "fast",
        "us",
    )
    assert usage.prompt_tokens == 5511


def test_server_side_compaction_iterations_are_billed_on_top_of_the_top_level_fields():
    iterations = [
        {
            "type": "compaction",
            "input_tokens": 150_000,
            "output_tokens": 3_000,
            "cache_read_input_tokens": 0,
            "cache_creation_input_tokens": 0,
        },
        {
            "type": "message",
            "input_tokens": 11,
            "output_tokens": 40,
            "cache_read_input_tokens": 3000,
            "cache_creation_input_tokens": 2500,
        },
    ]
    usage = read_usage({**USAGE, "iterations": iterations})
    assert usage.input_tokens == 11 and usage.total("input_tokens") == 150_011
    assert usage.total("output_tokens") == 3_040
    assert usage.total("cache_read_tokens") == 3000


def test_a_stream_is_complete_once_message_delta_brings_the_stop_reason():
    tracker = StreamTracker()
    tracker.see(
        {
            "type": "message_start",
            "message": {"id": "msg_1", "model": "claude-opus-4-7", "usage": {**USAGE, "output_tokens": 1}},
        }
    )
    tracker.see({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "hi"}})
    assert (tracker.message_id, tracker.model, tracker.complete) == ("msg_1", "claude-opus-4-7", False)
    assert tracker.usage.output_tokens == 1
    tracker.see(
        {
            "type": "message_delta",
            "delta": {"stop_reason": "end_turn"},
            "usage": {"output_tokens": 812, "input_tokens": 11},
        }
    )
    assert tracker.complete and tracker.usage.output_tokens == 812
    assert tracker.usage.cache_read_tokens == 3000  # absent from the delta: message_start's value stays


def test_events_before_message_start_are_ignored():
    tracker = StreamTracker()
    tracker.see({"type": "message_delta", "delta": {"stop_reason": "end_turn"}, "usage": {"output_tokens": 5}})
    assert tracker.usage is None and not tracker.complete


def test_the_prompt_estimate_is_at_least_its_bytes_and_allows_for_media():
    text = "héllo wörld " * 500
    request = {"model": "m", "max_tokens": 10, "system": "be brief", "messages": [{"role": "user", "content": text}]}
    size = len(json.dumps({"system": "be brief", "messages": request["messages"]}, ensure_ascii=False).encode())
    assert estimate_input_tokens(request) >= size
    image = {"type": "image", "source": {"type": "url", "url": "https://x/y.png"}}
    document = {"type": "document", "source": {"type": "file", "file_id": "file_1"}}
    with_media = {"messages": [{"role": "user", "content": [image, document]}]}
    assert estimate_input_tokens(with_media) >= 102_000
