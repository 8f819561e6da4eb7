"""aider_logs.py on aider 0.86.2's real files: analytics log, LLM history (repo map), chat-history cost lines."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from capguard.agents.aider.logs import (
    AnalyticsParser,
    CostLine,
    LlmHistoryMapParser,
    estimate_tokens,
    parse_cost_lines,
)
from capguard.core.events import Malformed, MapMeasured, Reply, RequestStarted


def lines_of(data: bytes) -> list[tuple[int, bytes]]:
    """(offset, line) for each complete line, as the tailer hands them over."""
    out, start = [], 0
    while (end := data.find(b"\n", start)) >= 0:
        out.append((start, data[start:end]))
        start = end + 1
    return out


def feed(parser, data: bytes) -> list:
    return [event for offset, line in lines_of(data) for event in parser.feed(line, offset)]


def analytics(path: Path, run_id: str = "run1") -> list:
    return feed(AnalyticsParser(run_id, str(path)), path.read_bytes())


def replies(events: list) -> list[Reply]:
    return [e for e in events if isinstance(e, Reply)]


MESSAGE_SEND = {
    "event": "message_send",
    "properties": {"main_model": "openai/gpt-4o", "prompt_tokens": 10, "completion_tokens": 2, "cost": 0.001},
    "time": 1,
}


def one(entry) -> list:
    raw = entry if isinstance(entry, bytes) else json.dumps(entry).encode()
    return AnalyticsParser("run1", "log.jsonl").feed(raw, 42)


# -- analytics log --------------------------------------------------------------------------------


def test_no_stream_capture_gives_the_servers_tokens_and_cost(aider_fixture):
    (reply,) = replies(analytics(aider_fixture("analytics.nostream.jsonl")))
    assert (reply.input_tokens, reply.output_tokens) == (50_000, 2_000)
    assert reply.reported_cost_micro == 145_000
    assert reply.model == "openai/REDACTED"


def test_request_start_is_announced_before_the_reply(aider_fixture):
    events = analytics(aider_fixture("analytics.nostream.jsonl"))
    assert [type(e) for e in events] == [RequestStarted, Reply]
    assert events[0].at == 1795414513


def test_other_analytics_events_are_ignored(aider_fixture):
    events = analytics(aider_fixture("analytics.unpriced.jsonl"))  # launched, model warning, repo, ..., exit
    assert len(events) == 2


def test_streamed_reply_carries_aiders_local_count(aider_fixture):
    (reply,) = replies(analytics(aider_fixture("analytics.stream.jsonl")))
    assert (reply.input_tokens, reply.output_tokens, reply.reported_cost_micro) == (2_548, 9, 6_460)


def test_unpriced_model_reports_no_cost_not_zero(aider_fixture):
    (reply,) = replies(analytics(aider_fixture("analytics.unpriced.jsonl")))
    assert reply.reported_cost_micro is None
    assert reply.tokens == 52_000


def test_anthropic_cache_capture_keeps_aiders_exact_cost(aider_fixture):
    (reply,) = replies(analytics(aider_fixture("analytics.anthropic.nostream.jsonl")))
    assert reply.reported_cost_micro == 9_078
    assert (reply.input_tokens, reply.output_tokens) == (7_011, 43)


def test_multi_turn_capture_gives_one_reply_per_message(aider_fixture):
    events = analytics(aider_fixture("lab/openai_stream_multiturn/.aider.analytics.jsonl"))
    found = replies(events)
    assert [r.reported_cost_micro for r in found] == [6_913, 6_905, 7_078]
    assert [r.input_tokens for r in found] == [2_613, 2_698, 2_727]
    assert {r.model for r in found} == {"openai/gpt-4o"}
    assert sum(isinstance(e, RequestStarted) for e in events) == 3


def test_multi_turn_costs_add_up_to_aiders_session_total(aider_fixture):
    found = replies(analytics(aider_fixture("lab/openai_stream_multiturn/.aider.analytics.jsonl")))
    assert sum(r.reported_cost_micro for r in found) == pytest.approx(20_895, abs=len(found))


def test_named_private_model_is_kept(aider_fixture):
    (reply,) = replies(analytics(aider_fixture("lab/unknown_model_with_metadata/.aider.analytics.jsonl")))
    assert (reply.model, reply.reported_cost_micro) == ("openai/my-private-model", 882)


def test_reply_killed_mid_request_leaves_only_the_start(aider_fixture):
    events = analytics(aider_fixture("lab/signals/message_mode_SIGterm/.aider.analytics.jsonl"))
    assert [type(e) for e in events] == [RequestStarted]


def test_reply_remembers_where_its_line_starts(aider_fixture):
    path = aider_fixture("lab/openai_nostream_cached/.aider.analytics.jsonl")
    (reply,) = replies(analytics(path))
    assert path.read_bytes()[reply.offset :].startswith(b'{"event": "message_send", ')
    assert reply.source == str(path)
    assert reply.at == 1795418783


def test_reply_keys_are_stable_across_rereads_and_unique_per_line(aider_fixture):
    path = aider_fixture("lab/openai_stream_multiturn/.aider.analytics.jsonl")
    first = [r.key for r in replies(analytics(path))]
    again = [r.key for r in replies(analytics(path))]
    assert first == again
    assert len(set(first)) == 3
    assert all(key.startswith("aider:run1:") for key in first)


def test_reply_keys_differ_between_runs(aider_fixture):
    path = aider_fixture("analytics.nostream.jsonl")
    assert replies(analytics(path, "run1"))[0].key != replies(analytics(path, "run2"))[0].key


def test_live_keys_are_the_lines_content_not_where_it_sits(aider_fixture):
    # a live run's log may be truncated or replaced under capguard: the same offset then holds another reply
    path = aider_fixture("lab/openai_stream_multiturn/.aider.analytics.jsonl")
    data = path.read_bytes()
    live = replies(feed(AnalyticsParser("run1", str(path), by_content=True), data))
    assert len({r.key for r in live}) == 3 and all(r.key.startswith("aider:run1:") for r in live)
    assert all("@" not in r.key for r in live)
    message_sends = [line for _, line in lines_of(data) if b'"message_send"' in line]
    moved = replies(feed(AnalyticsParser("run1", str(path), by_content=True), b"\n".join(message_sends[1:]) + b"\n"))
    assert [r.key for r in moved] == [r.key for r in live[1:]]  # other offsets, same replies, same keys


def test_live_keys_tell_identical_lines_apart_by_rank():
    # two cost-0 replies of the same size in the same second write the same bytes: two replies, two keys
    line = json.dumps({**MESSAGE_SEND, "properties": {**MESSAGE_SEND["properties"], "cost": 0}}).encode()
    parser = AnalyticsParser("run1", "log", by_content=True)
    first, second = parser.feed(line, 0)[0], parser.feed(line, 200)[0]
    assert first.key.endswith("#1") and second.key.endswith("#2") and first.key[:-2] == second.key[:-2]


def test_blank_line_yields_nothing():
    assert AnalyticsParser("r", "p").feed(b"   ", 0) == []


def test_truncated_line_becomes_malformed_with_its_place(aider_fixture):
    data = aider_fixture("analytics.nostream.jsonl").read_bytes()
    cut = data.index(b'"completion_tokens"')
    torn = data[:cut] + b"\n" + data[data.index(b"\n", cut) + 1 :]
    events = feed(AnalyticsParser("run1", "log"), torn)
    bad = [e for e in events if isinstance(e, Malformed)]
    assert len(bad) == 1
    assert bad[0].source == "log"
    assert torn[bad[0].offset :].startswith(b'{"event": "message_send"')
    assert not replies(events)


def test_lines_after_a_malformed_one_still_parse(aider_fixture):
    data = b"{not json\n" + aider_fixture("analytics.nostream.jsonl").read_bytes()
    events = feed(AnalyticsParser("run1", "log"), data)
    assert isinstance(events[0], Malformed)
    assert len(replies(events)) == 1


@pytest.mark.parametrize(
    "entry",
    [
        b"\xff\xfe not utf-8",
        b"[1, 2, 3]",
        b'"message_send"',
        {"event": "message_send"},
        {"event": "message_send", "properties": "tokens"},
        {**MESSAGE_SEND, "properties": {**MESSAGE_SEND["properties"], "prompt_tokens": -5}},
        {**MESSAGE_SEND, "properties": {**MESSAGE_SEND["properties"], "prompt_tokens": "10"}},
        {**MESSAGE_SEND, "properties": {**MESSAGE_SEND["properties"], "completion_tokens": True}},
        {**MESSAGE_SEND, "properties": {**MESSAGE_SEND["properties"], "cost": "0.5"}},
        {**MESSAGE_SEND, "properties": {**MESSAGE_SEND["properties"], "cost": -0.5}},
        {**MESSAGE_SEND, "properties": {**MESSAGE_SEND["properties"], "cost": True}},
    ],
    ids=[
        "bad-utf8",
        "array",
        "string",
        "no-properties",
        "properties-not-object",
        "negative-tokens",
        "string-tokens",
        "bool-tokens",
        "string-cost",
        "negative-cost",
        "bool-cost",
    ],
)
def test_bad_lines_become_malformed_events_not_exceptions(entry):
    (event,) = one(entry)
    assert isinstance(event, Malformed)
    assert (event.source, event.offset) == ("log.jsonl", 42)
    assert event.why


def test_missing_token_fields_count_as_zero():
    (reply,) = one({"event": "message_send", "properties": {"cost": 0.5}})
    assert (reply.tokens, reply.reported_cost_micro) == (0, 500_000)


def test_model_that_is_not_a_string_is_dropped():
    (reply,) = one({**MESSAGE_SEND, "properties": {**MESSAGE_SEND["properties"], "main_model": 7}})
    assert reply.model is None


# -- LLM history: the repo map ----------------------------------------------------------------------


def test_repo_map_measure_is_a_few_percent_above_tiktoken(aider_fixture):
    data = aider_fixture("lab/repo_map/big_repo_map_tokens_1024_nofiles.llm.history").read_bytes()
    (measured,) = feed(LlmHistoryMapParser(), data)
    assert isinstance(measured, MapMeasured)
    assert 2_066 <= measured.tokens <= 2_066 * 1.05  # tiktoken (gpt-4o) counts ~2066 for this map


def test_each_repo_map_sent_is_measured(aider_fixture):
    data = aider_fixture("lab/openai_stream_multiturn/.aider.llm.history").read_bytes()
    events = feed(LlmHistoryMapParser(), data)
    assert len(events) == 3
    assert all(isinstance(e, MapMeasured) and e.tokens > 50 for e in events)


def test_history_without_a_map_yields_nothing():
    data = b"TO LLM 2026-11-23T07:22:23\n-------\nSYSTEM hello\n-------\nUSER hi\nLLM RESPONSE 2026\nASSISTANT ok\n"
    assert feed(LlmHistoryMapParser(), data) == []


def test_map_block_ends_at_the_next_request_header():
    data = (
        b"USER Here are summaries of some files present in my git repository.\n"
        b"USER a.py:\nUSER def f(): ...\nTO LLM 2026-11-23T07:22:25\n"
    )
    (measured,) = feed(LlmHistoryMapParser(), data)
    expected = estimate_tokens("Here are summaries of some files present in my git repository.\na.py:\ndef f(): ...")
    assert measured == MapMeasured(expected)


def test_map_still_being_written_is_not_measured_yet():
    data = b"USER Here are summaries of some files present in my git repository.\nUSER a.py:\n"
    assert feed(LlmHistoryMapParser(), data) == []


def test_estimate_counts_words_numbers_and_punctuation():
    assert estimate_tokens("") == 0
    assert estimate_tokens("hello world") == 2
    assert estimate_tokens("def f(x):") == 5  # def, f, (, x, ):


# -- chat history cost lines ------------------------------------------------------------------------


def test_cost_lines_of_the_combined_chat_history(aider_fixture):
    found = parse_cost_lines(aider_fixture("chat.history.md").read_text())
    assert [(c.sent, c.received) for c in found] == [
        (2_500, 9),
        (50_000, 2_000),
        (50_000, 2_000),
        (2_500, 5),
        (2_500, 5),
        (7_000, 43),
    ]
    assert found[0].message_usd == 0.0065
    assert found[1].session_usd == 0.14


def test_cost_line_without_a_price_has_no_cost(aider_fixture):
    found = parse_cost_lines(aider_fixture("chat.history.md").read_text())
    assert (found[2].message_usd, found[2].session_usd) == (None, None)


def test_cache_cost_on_the_next_line_without_prefix(aider_fixture):
    last = parse_cost_lines(aider_fixture("chat.history.md").read_text())[-1]
    assert last == CostLine(
        sent=7_000, received=43, cache_write=2_000, cache_hit=3_000, message_usd=0.0091, session_usd=0.0091
    )


def test_lab_anthropic_cache_two_line_report(aider_fixture):
    found = parse_cost_lines(aider_fixture("lab/anthropic_nostream_cache/.aider.chat.history.md").read_text())
    assert found == [
        CostLine(sent=26_000, received=250, cache_write=1_500, cache_hit=20_000, message_usd=0.02, session_usd=0.02)
    ]


def test_small_costs_keep_their_significant_digits(aider_fixture):
    found = parse_cost_lines(aider_fixture("lab/unknown_model_with_metadata/.aider.chat.history.md").read_text())
    assert found == [CostLine(sent=850, received=16, message_usd=0.00088, session_usd=0.00088)]


def test_unknown_model_chat_history_has_tokens_but_no_cost(aider_fixture):
    found = parse_cost_lines(aider_fixture("lab/unknown_model/.aider.chat.history.md").read_text())
    assert found == [CostLine(sent=850, received=16)]


def test_session_cost_grows_across_turns(aider_fixture):
    found = parse_cost_lines(aider_fixture("lab/openai_stream_multiturn/.aider.chat.history.md").read_text())
    assert [c.session_usd for c in found] == [0.0069, 0.01, 0.02]
    assert [c.sent for c in found] == [2_600, 2_700, 2_700]


def test_cost_with_thousands_separator_is_read():
    (line,) = parse_cost_lines("> Tokens: 1,234k sent, 12k received. Cost: $1,234.50 message, $2,000.00 session.")
    assert (line.sent, line.received, line.message_usd, line.session_usd) == (1_234_000, 12_000, 1234.5, 2000.0)


def test_text_without_cost_lines_yields_nothing():
    assert parse_cost_lines("#### explain calc.py\n\nIt adds numbers.\n> Applied edit to calc.py\n") == []
