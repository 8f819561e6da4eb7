"""Every parser of outside numbers, fed real captured lines with their numbers made hostile (issue 11 §3).

A figure beyond capguard.core.sanitize's bound counts as the bound and is named suspicious; a non-number makes the line
Malformed (skipped, counted); nothing raises, however deep or strange the line.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from capguard.agents.aider.logs import AnalyticsParser, cost_lines
from capguard.agents.claude.logs import TranscriptParser, session_from_registry, statusline_events, tool_signature
from capguard.agents.claude.otel import OtelParser
from capguard.core.anthropic_usage import read_usage
from capguard.core.events import Malformed, Reply, ReportedTotal
from capguard.core.meter import Meter
from capguard.core.pricing import Priced, Pricer
from capguard.core.sanitize import MAX_NAME, MAX_REPLY_USD_MICRO, MAX_TOKENS, MAX_TOTAL_USD_MICRO
from capguard.importers import aider as aider_import
from capguard.importers.claude_scan import ReplyCounter, scan
from capguard.importers.unit_prices import UnitPricer
from capguard.metering.otel_receiver import api_requests
from capguard.metering.tail import Tailer, WatchSpec

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
AIDER_LOG = FIXTURES / "aider" / "recorded" / "nostream" / "analytics.jsonl"
CLAUDE_A = FIXTURES / "claude" / "shared" / "transcripts" / "A_single_turn.jsonl"
STATUSLINE = FIXTURES / "claude" / "shared" / "interactive" / "statusline_stdin_last.json"
OTLP_POSTS = FIXTURES / "claude" / "recorded" / "otel" / "interactive" / "otlp_posts.jsonl"

# JSON text a hostile server or a corrupt file can put where a number belongs
BEYOND = ["Infinity", "1e300", "1e30", "1e999", "9223372036854775808", "18446744073709551616", "10000000000000000000"]
NOT_NUMBERS = ["NaN", "-Infinity", "-5", "-1e30", "true", "null", '"12"', '"abc"', "[]", "{}"]
DEEP = b"[" * 10_000 + b"]" * 10_000


def aider_line() -> bytes:
    return next(line for line in AIDER_LOG.read_bytes().splitlines() if b'"message_send"' in line)


def claude_line() -> bytes:
    return next(line for line in CLAUDE_A.read_bytes().splitlines() if json.loads(line).get("type") == "assistant")


def otel_line() -> bytes:
    """One line as capguard's receiver writes it from Claude Code's recorded api_request record."""
    for post in OTLP_POSTS.read_text().splitlines():
        found = api_requests(json.loads(post).get("body", json.loads(post)))
        if found:
            return json.dumps(found[0], separators=(",", ":")).encode()
    raise AssertionError("no api_request in the recorded posts")


def with_number(line: bytes, field: str, text: str) -> bytes:
    """The line with `"field": <number>` replaced by `text` (JSON as written, e.g. Infinity)."""
    mutated, n = re.subn(
        rb'("' + field.encode() + rb'": ?)-?[0-9.eE+]+', lambda m: m.group(1) + text.encode(), line, count=1
    )
    assert n == 1, f"{field} not in {line[:200]!r}"
    return mutated


# -- aider's analytics log ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("text", BEYOND)
@pytest.mark.parametrize("field", ["prompt_tokens", "completion_tokens"])
def test_aider_tokens_beyond_the_bound_count_as_the_bound(field, text):
    (reply,) = AnalyticsParser("r", "a.jsonl").feed(with_number(aider_line(), field, text), 40)
    assert isinstance(reply, Reply)
    assert (reply.input_tokens if field == "prompt_tokens" else reply.output_tokens) == MAX_TOKENS
    assert reply.suspicious.startswith(f"{field} at or beyond capguard's bound")
    assert (reply.source, reply.offset) == ("a.jsonl", 40)


@pytest.mark.parametrize("text", BEYOND)
def test_aider_cost_beyond_the_bound_counts_as_ten_thousand_dollars(text):
    (reply,) = AnalyticsParser("r", "a.jsonl").feed(with_number(aider_line(), "cost", text), 0)
    assert reply.reported_cost_micro == MAX_REPLY_USD_MICRO
    assert "cost at or beyond capguard's bound of $10,000.00" in reply.suspicious


@pytest.mark.parametrize("text", NOT_NUMBERS)
@pytest.mark.parametrize("field", ["prompt_tokens", "completion_tokens", "cost"])
def test_aider_non_numbers_make_the_line_malformed(field, text):
    line = with_number(aider_line(), field, text)
    events = AnalyticsParser("r", "a.jsonl").feed(line, 9)
    if field == "cost" and text == "null":  # aider writes no cost for a model it cannot price
        assert isinstance(events[0], Reply) and events[0].reported_cost_micro is None
        return
    (bad,) = events
    assert isinstance(bad, Malformed) and bad.offset == 9


@pytest.mark.parametrize("line", [DEEP, b'{"event":"message_send","properties":' + DEEP + b"}", b"{" * 50_000])
def test_deeply_nested_json_is_malformed_not_a_crash(line):
    (bad,) = AnalyticsParser("r", "a.jsonl").feed(line, 0)
    assert isinstance(bad, Malformed)


def test_an_endless_model_name_is_cut_to_size():
    line = aider_line().replace(b'"main_model": "', b'"main_model": "' + b"x" * 100_000, 1)
    (reply,) = AnalyticsParser("r", "a.jsonl").feed(line, 0)
    assert len(reply.model) == MAX_NAME


def test_the_aider_importer_skips_and_counts_hostile_lines(tmp_path):
    good = AIDER_LOG.read_bytes()
    data = (
        good
        + DEEP
        + b"\n"
        + with_number(aider_line(), "prompt_tokens", '"abc"')
        + b"\n"
        + with_number(aider_line(), "prompt_tokens", "1e999")
        + b"\n"
    )
    sessions = aider_import.analytics_sessions("a.jsonl", data, 0, UnitPricer(Pricer()))
    rows = [row for s in sessions for row in s.rows]
    assert len(rows) == good.count(b'"message_send"') + 1  # the good replies and the clamped one
    assert sum(s.malformed for s in sessions) == 2 and sum(s.suspicious for s in sessions) == 1
    assert max(row[4] for row in rows) == MAX_TOKENS  # input tokens, as the ledger stores them


def test_chat_history_cost_lines_survive_corrupt_and_endless_figures():
    text = (
        "> Tokens: 1.2.3k sent, 5 received. Cost: $0.01 message, $0.01 session.\n"
        f"> Tokens: {'9' * 400} sent, 12 received. Cost: ${'9' * 400} message, $1.00 session.\n"
        "> Tokens: 2.5k sent, 100 received. Cost: $0.02 message, $0.03 session.\n"
    )
    found, skipped = cost_lines(text)
    assert skipped == 1
    assert [(c.sent, c.received) for c in found] == [(MAX_TOKENS, 12), (2_500, 100)]
    sessions = aider_import.history_sessions(
        "h.md",
        b"# aider chat started at 2026-11-23 10:00:00\n" + text.encode(),
        0,
        UnitPricer(Pricer()),
        lambda t: "2026-11-23T10:00:00.000000Z",
    )
    (session,) = sessions
    assert [row[8] for row in session.rows] == [MAX_REPLY_USD_MICRO, 20_000]  # cost: the bound, then $0.02
    assert session.malformed == 1 and session.suspicious == 1


# -- Claude Code: transcripts, cost-state, statusLine, telemetry, the session registry ----------------------------


@pytest.mark.parametrize("text", BEYOND)
@pytest.mark.parametrize(
    "field", ["input_tokens", "output_tokens", "cache_read_input_tokens", "cache_creation_input_tokens"]
)
def test_claude_usage_beyond_the_bound_counts_as_the_bound(field, text):
    (reply,) = TranscriptParser(session_id="s", source="t.jsonl").feed(with_number(claude_line(), field, text), 3)
    figures = {
        "input_tokens": reply.input_tokens,
        "output_tokens": reply.output_tokens,
        "cache_read_input_tokens": reply.cache_read_tokens,
        "cache_creation_input_tokens": reply.cache_write_tokens,
    }
    assert figures[field] == MAX_TOKENS and field in reply.suspicious
    assert Pricer().price(reply).cost_micro < 2**63  # priced, and it fits the ledger


@pytest.mark.parametrize("text", NOT_NUMBERS[:-3] + ["[]"])
def test_claude_usage_non_numbers_make_the_line_malformed(text):
    if text == "null":
        return  # an absent count is zero in Claude's usage (the parser's long-standing rule)
    (bad,) = TranscriptParser(session_id="s", source="t.jsonl").feed(
        with_number(claude_line(), "output_tokens", text), 3
    )
    assert isinstance(bad, Malformed) and bad.offset == 3


@pytest.mark.parametrize("text", BEYOND)
def test_a_cost_state_total_beyond_the_bound_counts_as_the_bound(text):
    line = b'{"type":"cost-state","sessionId":"s","totalCostUSD":' + text.encode() + b"}"
    (total,) = TranscriptParser(session_id="s", source="t.jsonl").feed(line, 0)
    assert isinstance(total, ReportedTotal) and total.cost_micro == MAX_TOTAL_USD_MICRO and total.suspicious


@pytest.mark.parametrize("text", BEYOND + NOT_NUMBERS)
def test_statusline_totals_are_bounded_or_malformed(text):
    doc = STATUSLINE.read_bytes().replace(b"\n", b"")
    doc = re.sub(rb'"total_cost_usd":[0-9.e-]+', b'"total_cost_usd":' + text.encode(), doc)
    events = statusline_events(doc, 0, "statusline")
    if text == "null":
        assert events == []  # no total yet
    elif text in BEYOND:
        assert events[0].cost_micro == MAX_TOTAL_USD_MICRO and events[0].suspicious
    else:
        assert isinstance(events[0], Malformed)


@pytest.mark.parametrize("text", BEYOND)
@pytest.mark.parametrize("field", ["input_tokens", "output_tokens", "cache_read_tokens", "cache_creation_tokens"])
def test_telemetry_tokens_beyond_the_bound_count_as_the_bound(field, text):
    (reply,) = OtelParser("otel").feed(with_number(otel_line(), field, text), 0)
    assert MAX_TOKENS in (reply.input_tokens, reply.output_tokens, reply.cache_read_tokens, reply.cache_write_tokens)
    assert field in reply.suspicious


@pytest.mark.parametrize("text", BEYOND)
def test_telemetry_cost_beyond_the_bound_counts_as_the_bound(text):
    line = with_number(with_number(otel_line(), "cost_usd", text), "cost_usd_micros", "0")
    (reply,) = OtelParser("otel").feed(line, 0)
    assert reply.reported_cost_micro == MAX_REPLY_USD_MICRO and reply.suspicious


@pytest.mark.parametrize("text", NOT_NUMBERS)
def test_telemetry_non_numbers_make_the_line_malformed_not_a_crash(text):
    line = with_number(with_number(otel_line(), "cost_usd", text), "cost_usd_micros", "0")
    events = OtelParser("otel").feed(line, 5)
    if text == "null":
        assert isinstance(events[0], Reply)  # no cost given: the transcript or genai-prices prices it
    else:
        assert isinstance(events[0], Malformed) and events[0].offset == 5


def test_a_recorded_telemetry_line_still_reads_as_before():
    (reply,) = OtelParser("otel").feed(otel_line(), 0)
    assert reply.key.startswith("claude:req_") and reply.input_tokens == 11 and reply.output_tokens == 40
    assert reply.reported_cost_micro and reply.suspicious is None


@pytest.mark.parametrize("session", ["../../../../etc/passwd", "a/b", "x" * 300, "", "\x1b[2J"])
def test_a_session_id_that_is_not_a_file_name_is_not_followed(session):
    assert session_from_registry(json.dumps({"sessionId": session}).encode()) is None
    assert session_from_registry(b'{"sessionId":' + DEEP + b"}") is None


def test_tool_names_are_cut_to_size():
    assert tool_signature("Bash" * 10_000, {"command": "ls"}).startswith("Bash" * (MAX_NAME // 4) + " ")


# -- the importer's fast path (claude_scan) -----------------------------------------------------------------------


def test_the_claude_importer_counts_good_lines_and_bounds_hostile_ones():
    good = CLAUDE_A.read_bytes()
    hostile = [
        with_number(claude_line(), "output_tokens", "18446744073709551616"),  # msgspec decodes any int
        with_number(claude_line(), "input_tokens", "1e30"),
        with_number(claude_line(), "output_tokens", "NaN"),
        b'{"type":"assistant","usage":' + DEEP + b"}",
    ]
    hostile = [line.replace(b'"requestId":"', b'"requestId":"hostile%d' % i) for i, line in enumerate(hostile)]
    found = scan(good + b"\n".join(hostile) + b"\n", 0, ReplyCounter(subagent=False))
    clean = scan(good, 0, ReplyCounter(subagent=False))
    assert found.replies[: len(clean.replies)] == clean.replies  # the good lines, as without the hostile ones
    extra = found.replies[len(clean.replies) :]
    assert [r.figures[1] for r in extra] == [MAX_TOKENS, 41] and extra[1].figures[0] == MAX_TOKENS
    assert found.suspicious == 2 and found.malformed == clean.malformed + 2


# -- the SDK's usage, the tailer, the meter -------------------------------------------------------------------------


def test_sdk_usage_is_bounded():
    usage = read_usage(
        {
            "input_tokens": 2**64,
            "output_tokens": float("inf"),
            "cache_read_input_tokens": 5,
            "iterations": [{"type": "compaction", "input_tokens": 2**70}],
        }
    )
    assert (usage.input_tokens, usage.output_tokens, usage.cache_read_tokens) == (MAX_TOKENS, MAX_TOKENS, 5)
    assert usage.compaction["input_tokens"] == MAX_TOKENS


class _Exploding:
    def feed(self, line: bytes, offset: int):
        if b"boom" in line:
            raise RuntimeError("a parser bug")
        return [Reply(key=str(offset), model="m", output_tokens=1)]


def test_a_parser_that_raises_on_a_line_makes_it_malformed_and_the_tailer_goes_on(tmp_path):
    log = tmp_path / "log"
    log.write_bytes(b"ok\nboom\nok\n")
    events = Tailer([WatchSpec(log, lambda p: _Exploding())]).read(log)
    assert [type(e).__name__ for e in events] == ["Reply", "Malformed", "Reply"]
    assert events[1].offset == 3 and "RuntimeError: a parser bug" in events[1].why


def test_the_meter_names_suspicious_lines_and_keeps_the_first_few():
    meter = Meter()
    for n in range(30):
        reply = Reply(
            key=f"k{n}",
            model="m",
            input_tokens=MAX_TOKENS,
            source="a.jsonl",
            offset=n * 10,
            suspicious="prompt_tokens at or beyond capguard's bound",
        )
        meter.add_reply(reply, Priced("m", 1, "agent"))
    meter.add_reply(Reply(key="k0", model="m", input_tokens=MAX_TOKENS, suspicious="again"), Priced("m", 1, "agent"))
    assert meter.suspicious_lines == 30 and len(meter.suspicious) == 20  # a duplicate reply is not counted again
    assert meter.suspicious[1] == {
        "source": "a.jsonl",
        "offset": 10,
        "why": "prompt_tokens at or beyond capguard's bound",
    }
    assert meter.tokens == 30 * MAX_TOKENS


def test_the_telemetry_receiver_answers_deep_nesting_with_400(tmp_path, capfd):
    import urllib.error
    import urllib.request

    from capguard.metering.otel_receiver import SECRET_HEADER, OtlpReceiver

    receiver = OtlpReceiver(tmp_path / "otel.jsonl")
    receiver.start()
    try:  # with the run's secret: a post that passes the door and is then too deep to read
        request = urllib.request.Request(
            receiver.endpoint + "/v1/logs",
            data=b'{"resourceLogs":' + DEEP + b"}",
            headers={"Content-Type": "application/json", SECRET_HEADER: receiver.secret},
        )
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(request, timeout=10)
        assert err.value.code == 400
    finally:
        receiver.stop()
    assert "Traceback" not in capfd.readouterr().err  # nothing on the agent's terminal
