"""claude_logs.py on Claude Code 2.1.330's real files: transcripts, statusLine input, session registry.

Accuracy: capguard's price of each transcript (Pricer over the parsed replies, main + subagent files,
deduped by the Meter) against Claude Code's own `total_cost_usd` from the same run.
"""

from __future__ import annotations

import json
import os
import random
from pathlib import Path

import pytest

from capguard.agents.claude import logs as claude_logs
from capguard.agents.claude.logs import (
    TranscriptParser,
    encode_project_dir,
    java_hash,
    last_reported_total,
    parse_timestamp,
    session_from_registry,
    statusline_events,
    tool_signature,
    transcript_dir,
)
from capguard.core.events import Malformed, Reply, ReportedTotal, SessionSeen, ToolOutcome
from capguard.core.meter import Meter
from capguard.core.pricing import Pricer

SHARED = Path(__file__).resolve().parents[1] / "fixtures" / "claude" / "shared"
TRANSCRIPTS = SHARED / "transcripts"
B = TRANSCRIPTS / "B_multi_turn_tool_use.jsonl"
D_SESSION = "af3d562a-7f82-4b45-bbe8-914ae96cfb9a"
D_MAIN = TRANSCRIPTS / "D_subagent" / f"{D_SESSION}.jsonl"
D_SUB = TRANSCRIPTS / "D_subagent" / D_SESSION / "subagents" / "agent-aaca06e05c7f857ad.jsonl"
J_PARENT_ID = "11111111-2222-4333-8444-555555555555"
J_FORK_ID = "280fb41a-a3b2-4c58-889d-9ff5d7018cad"
J_PARENT = TRANSCRIPTS / "J_resume_fork" / f"{J_PARENT_ID}.jsonl"
J_FORK = TRANSCRIPTS / "J_resume_fork" / f"{J_FORK_ID}.jsonl"
L_SESSION = "0809e9f1-9725-4075-8fd1-c9f13febd565"
L_MAIN = SHARED / "interactive" / "transcript" / f"{L_SESSION}.jsonl"
L_SUB = SHARED / "interactive" / "transcript" / L_SESSION / "subagents" / "agent-a75f092da0a16efc1.jsonl"


def lines_of(data: bytes) -> list[tuple[int, bytes]]:
    """(offset, line) for each complete line, as FileCursor hands them over."""
    out, start = [], 0
    while (end := data.find(b"\n", start)) >= 0:
        out.append((start, data[start:end]))
        start = end + 1
    return out


def feed(parser: TranscriptParser, data: bytes, base: int = 0) -> list:
    return [event for offset, line in lines_of(data) for event in parser.feed(line, base + offset)]


def parse(path: Path, *, subagent: bool = False, session_id: str = "s", **kw) -> list:
    return feed(TranscriptParser(session_id=session_id, subagent=subagent, source=str(path), **kw), path.read_bytes())


def replies(events: list) -> list[Reply]:
    return [e for e in events if isinstance(e, Reply)]


def metered(*event_lists: list) -> Meter:
    """What the supervisor does with the events: price each reply, count each key once."""
    meter, pricer = Meter(), Pricer()
    for events in event_lists:
        for event in events:
            if isinstance(event, Reply):
                meter.add_reply(event, pricer.price(event))
            elif isinstance(event, ReportedTotal):
                meter.reported(event)
            elif isinstance(event, ToolOutcome):
                meter.tool_outcome(event)
    return meter


def reported_usd(run: str) -> float:
    """Claude Code's own `total_cost_usd` for a print-mode run (json, or the last stream-json line)."""
    text = (SHARED / "print" / f"{run}.out").read_text()
    result = json.loads(text.strip().splitlines()[-1])
    assert result["type"] == "result"
    return result["total_cost_usd"]


def micro(usd: float) -> int:
    return round(usd * 1_000_000)


def line_where(path: Path, **match) -> bytes:
    for _, line in lines_of(path.read_bytes()):
        entry = json.loads(line)
        if all(entry.get(k) == v for k, v in match.items()):
            return line
    raise AssertionError(f"no line {match} in {path}")


def j1_prefix() -> bytes:
    """The resumed session's file as it was before `--resume`: up to J1's cost-state."""
    data = J_PARENT.read_bytes()
    first_cost_state = next(off for off, line in lines_of(data) if json.loads(line)["type"] == "cost-state")
    return data[: data.index(b"\n", first_cost_state) + 1]


# -- accuracy against Claude Code's own total -----------------------------------------------------------

ACCURACY = {
    # print run: (transcript files, with subagent flag)
    "A_single_json": [("A_single_turn.jsonl", False)],
    "B_tool_json": [("B_multi_turn_tool_use.jsonl", False)],
    "C_tool_stream_json": [("C_multi_turn_tool_use_stream_run.jsonl", False)],
    "D_subagent_json": [(D_MAIN, False), (D_SUB, True)],
    "E_max_turns_json": [("E_max_turns.jsonl", False)],
    "F_max_budget_json": [("F_max_budget.jsonl", False)],
    "G_api_error_400_json": [("G_api_error_400.jsonl", False)],
    "H_thinking_json": [("H_thinking_two_blocks.jsonl", False)],
    "J2_resume_json": [(J_PARENT, False)],  # the file holds J1 + J2; the total is cumulative
    "J3_fork_json": [(J_PARENT, False), (J_FORK, False)],  # the fork's total includes its parent's
}


@pytest.mark.parametrize("run", sorted(ACCURACY))
def test_priced_replies_reproduce_claudes_total_cost(run):
    events = [parse(TRANSCRIPTS / f, subagent=sub) for f, sub in ACCURACY[run]]
    meter = metered(*events)
    expected = micro(reported_usd(run))
    assert meter.unpriced_replies == 0
    assert meter.replies_micro == pytest.approx(expected, rel=0.005, abs=1)
    assert meter.replies_micro == expected  # in fact exact on every one of these runs


def test_j1_prefix_reproduces_the_first_runs_total():
    meter = metered(feed(TranscriptParser(session_id=J_PARENT_ID), j1_prefix()))
    assert meter.replies_micro == micro(reported_usd("J1_first_json")) == 11_944


@pytest.mark.parametrize(
    "run",
    [
        "A_single_json",
        "B_tool_json",
        "D_subagent_json",
        "E_max_turns_json",
        "F_max_budget_json",
        "G_api_error_400_json",
        "H_thinking_json",
        "J2_resume_json",
    ],
)
def test_last_cost_state_is_claudes_total(run):
    events = [e for f, sub in ACCURACY[run] for e in parse(TRANSCRIPTS / f, subagent=sub)]
    totals = [e for e in events if isinstance(e, ReportedTotal)]
    assert totals[-1].source == "cost-state"
    assert totals[-1].cost_micro == micro(reported_usd(run))


def test_aborted_stream_is_under_counted_by_claudes_output_estimate():
    """SIGINT mid-stream (I): the transcript keeps message_start's usage (output 1); claude charges an estimate."""
    events = parse(TRANSCRIPTS / "I_print_sigint_midstream.jsonl")
    (reply,) = replies(events)
    assert reply.output_tokens == 1 and reply.details.get("aborted_mid_stream") is True
    ours, theirs = metered(events).replies_micro, micro(reported_usd("I_sigint_midstream_json"))
    assert (ours, theirs) == (10_664, 10_964)
    assert 0 < theirs - ours < 0.05 * theirs  # capguard is below, by 15 estimated output tokens x $20/M
    # and this run's cost-state, written before the aborted line, says 0: no reconciliation to be had
    assert [e.cost_micro for e in events if isinstance(e, ReportedTotal)] == [0]


def test_interactive_session_matches_its_cost_state_and_statusline():
    main = parse(L_MAIN, session_id=L_SESSION)
    sub = parse(L_SUB, session_id=L_SESSION, subagent=True)
    meter = metered(main, sub)
    cost_states = [e for e in main if isinstance(e, ReportedTotal)]
    assert [e.cost_micro for e in cost_states] == [96_352, 96_352]
    assert {e.scope for e in cost_states} == {L_SESSION}
    # 6 main replies (one aborted by Esc) + 2 of the subagent; the gap is the aborted reply's output estimate
    assert meter.steps == 6 and len(replies(sub)) == 2
    assert meter.replies_micro == 96_052
    assert meter.replies_micro == pytest.approx(96_352, rel=0.005)
    assert meter.cost_micro == 96_352  # the meter takes the agent's own total where it is larger
    (last,) = statusline_events((SHARED / "interactive" / "statusline_stdin_last.json").read_bytes(), 0, "sl")
    assert last == ReportedTotal(scope=L_SESSION, cost_micro=96_352, source="statusline")


# -- one reply per API response ------------------------------------------------------------------------


def test_one_reply_per_response_not_per_content_block():
    events = parse(TRANSCRIPTS / "H_thinking_two_blocks.jsonl", session_id="h")  # thinking + text lines
    (reply,) = replies(events)
    assert reply.key == "claude:req_fake_be943430e3ab42bd8264"
    assert (
        reply.model,
        reply.input_tokens,
        reply.output_tokens,
        reply.cache_read_tokens,
        reply.cache_write_tokens,
        reply.cache_write_1h_tokens,
        reply.web_search_requests,
    ) == ("claude-opus-5-5", 11, 63, 3000, 2000, 0, 0)
    assert reply.at == pytest.approx(parse_timestamp("2026-11-23T06:05:59.993Z"))
    assert reply.step is True and reply.scope == "h"
    assert reply.source.endswith("H_thinking_two_blocks.jsonl") and reply.offset == 82019


@pytest.mark.parametrize("copy_first", [False, True], ids=["original-first", "copy-first"])
def test_a_request_in_two_followed_transcripts_counts_its_largest_line_once(copy_first):
    """A resumed session's transcript copies a request's final line; the original holds its streaming snapshots.
    The run's parsers share max-wins, so whichever file the meter reads first, the request counts once, largest."""
    entry = json.loads(line_where(B, uuid="c49be725-66f0-40fa-b089-2a014cd7a724"))

    def with_output(n: int) -> bytes:
        entry["message"]["usage"]["output_tokens"] = n
        return json.dumps(entry).encode()

    shared: dict[str, list[int]] = {}
    original = TranscriptParser(session_id="s", seen=shared)
    resumed = TranscriptParser(session_id="r", seen=shared)
    feeds = [(original, with_output(3)), (original, with_output(20)), (original, with_output(42))]
    copy = (resumed, with_output(42))
    feeds = [copy, *feeds] if copy_first else [*feeds, copy]
    events = [event for parser, line in feeds for event in parser.feed(line, 0)]
    meter = metered(events)
    assert meter.by_model["claude-opus-5-5"].output_tokens == 42 and meter.steps == 1


def test_subagent_replies_are_not_steps_and_belong_to_the_parent_session():
    main, sub = parse(D_MAIN, session_id=D_SESSION), parse(D_SUB, session_id=D_SESSION, subagent=True)
    assert [r.step for r in replies(main)] == [True, True, True]
    assert [r.step for r in replies(sub)] == [False, False]
    assert {r.scope for r in replies(main) + replies(sub)} == {D_SESSION}
    assert metered(main, sub).steps == 3


def test_larger_figures_on_a_later_block_line_emit_a_correction_max_wins():
    """Older versions wrote partial output_tokens on earlier block lines of the same reply."""
    entry = json.loads(line_where(B, uuid="c49be725-66f0-40fa-b089-2a014cd7a724"))
    key = f"claude:{entry['requestId']}"

    def with_output(n: int) -> bytes:
        entry["message"]["usage"]["output_tokens"] = n
        return json.dumps(entry).encode()

    parser = TranscriptParser(session_id="s")
    (first,) = parser.feed(with_output(3), 10)
    assert (first.key, first.output_tokens, first.step) == (key, 3, True)
    (fix,) = parser.feed(with_output(42), 20)
    assert (fix.key, fix.step, fix.offset) == (f"{key}+1", False, 20)
    assert (fix.input_tokens, fix.output_tokens, fix.cache_read_tokens, fix.cache_write_tokens) == (0, 39, 0, 0)
    assert parser.feed(with_output(42), 30) == []  # same figures: nothing new
    assert parser.feed(with_output(7), 40) == []  # smaller: the max stands
    (fix2,) = parser.feed(with_output(50), 50)
    assert (fix2.key, fix2.output_tokens) == (f"{key}+2", 8)
    meter = metered([first, fix, fix2])
    assert meter.steps == 1 and meter.by_model["claude-opus-5-5"].output_tokens == 50
    full = Pricer().price(
        Reply(
            key="k",
            model="claude-opus-5-5",
            input_tokens=11,
            output_tokens=50,
            cache_read_tokens=3000,
            cache_write_tokens=2000,
        )
    )
    assert meter.replies_micro == full.cost_micro


def test_reply_without_request_id_is_keyed_on_the_message_id():
    entry = json.loads(line_where(TRANSCRIPTS / "A_single_turn.jsonl", type="assistant"))
    del entry["requestId"]
    (reply,) = TranscriptParser(session_id="s").feed(json.dumps(entry).encode(), 0)
    assert reply.key == "claude:msg:msg_fake_e86c3fcd06c8489c9c2a"


def test_requested_model_is_priced_not_the_served_one():
    entry = json.loads(line_where(TRANSCRIPTS / "A_single_turn.jsonl", type="assistant"))
    entry["message"]["model"] = "claude-haiku-4-5"
    (reply,) = TranscriptParser(session_id="s").feed(json.dumps(entry).encode(), 0)
    assert reply.model == "claude-opus-5-5" and reply.details["served_model"] == "claude-haiku-4-5"
    del entry["requestedModel"]
    (reply,) = TranscriptParser(session_id="s").feed(json.dumps(entry).encode(), 0)
    assert reply.model == "claude-haiku-4-5"


def test_one_hour_cache_writes_web_searches_geo_and_speed_are_carried():
    entry = json.loads(line_where(TRANSCRIPTS / "A_single_turn.jsonl", type="assistant"))
    usage = entry["message"]["usage"]
    usage["cache_creation"] = {"ephemeral_1h_input_tokens": 500, "ephemeral_5m_input_tokens": 1500}
    usage["server_tool_use"] = {"web_search_requests": 2, "web_fetch_requests": 1}
    usage["inference_geo"], usage["speed"] = "us", "fast"
    (reply,) = TranscriptParser(session_id="s").feed(json.dumps(entry).encode(), 0)
    assert (reply.cache_write_tokens, reply.cache_write_1h_tokens, reply.web_search_requests) == (2000, 500, 2)
    assert reply.details == {"inference_geo": "us", "speed": "fast"}
    # claude's formula at standard speed, no geo: 11x4 + 41x20 + 3000x0.2 + 1500x5 + 500x8 per MTok, + 2 x $0.01
    standard = Reply(**{**reply.__dict__, "details": {}})
    assert Pricer().price(standard).cost_micro == 44 + 820 + 600 + 7500 + 4000 + 20_000


def test_genai_prices_has_the_fast_mode_variant_pricing_py_would_select():
    from genai_prices import Usage, calc_price

    usage = Usage(input_tokens=1_000_000, output_tokens=1_000_000)
    standard = calc_price(usage, "claude-opus-5-5", provider_id="anthropic").total_price
    fast = calc_price(usage, "claude-opus-5-5", provider_id="anthropic", price_context={"speed": "fast"}).total_price
    assert (standard, fast) == (24, 48)  # claude: opus-5-5 fast is $8 / $40


def test_api_errors_and_synthetic_replies_are_skipped():
    events = parse(TRANSCRIPTS / "G_api_error_400.jsonl")
    assert replies(events) == []
    entry = json.loads(line_where(TRANSCRIPTS / "A_single_turn.jsonl", type="assistant"))
    entry["message"]["model"] = "<synthetic>"
    del entry["requestedModel"]
    assert TranscriptParser(session_id="s").feed(json.dumps(entry).encode(), 0) == []


# -- resume and fork -----------------------------------------------------------------------------------


def test_fork_copies_are_not_counted_and_the_parents_total_is_the_baseline():
    baseline = last_reported_total(J_PARENT)
    assert baseline == micro(reported_usd("J2_resume_json")) == 23_908
    events = parse(J_FORK, session_id=J_FORK_ID, baseline_micro=baseline)
    (own,) = replies(events)  # the two copied replies (requestSessionId = parent) are skipped
    assert own.key == "claude:req_fake_61d7719d56fd4c9c9c91"
    (total,) = [e for e in events if isinstance(e, ReportedTotal)]
    assert total == ReportedTotal(J_FORK_ID, micro(reported_usd("J3_fork_json")), "cost-state", baseline)
    meter = metered(events)
    assert meter.replies_micro == total.cost_micro - baseline == 11_984
    assert meter.cost_micro == 11_984  # what this run spent, not the parent's history


def test_copied_replies_keep_the_parents_keys_so_following_both_files_counts_once():
    """Even without the requestSessionId mark, a fork's copies would not be counted twice."""
    unmarked = b"".join(
        json.dumps({k: v for k, v in json.loads(line).items() if k != "requestSessionId"}).encode() + b"\n"
        for _, line in lines_of(J_FORK.read_bytes())
    )
    parent = replies(parse(J_PARENT))
    fork = replies(feed(TranscriptParser(session_id=J_FORK_ID), unmarked))
    assert len(fork) == 3 and {r.key for r in parent} < {r.key for r in fork}
    assert metered(parent, fork).replies_micro == 23_908 + 11_984


def test_resumed_session_counts_only_what_the_resumed_run_spent(tmp_path):
    before = tmp_path / f"{J_PARENT_ID}.jsonl"
    before.write_bytes(j1_prefix())
    baseline = last_reported_total(before)
    assert baseline == micro(reported_usd("J1_first_json")) == 11_944
    # the supervisor follows the file from where it ended before the resume
    appended = J_PARENT.read_bytes()[len(j1_prefix()) :]
    events = feed(TranscriptParser(session_id=J_PARENT_ID, baseline_micro=baseline), appended, len(j1_prefix()))
    (reply,) = replies(events)
    (total,) = [e for e in events if isinstance(e, ReportedTotal)]
    spent = micro(reported_usd("J2_resume_json")) - baseline
    meter = metered(events)
    assert total.cost_micro - total.baseline_micro == spent == meter.replies_micro == meter.cost_micro == 11_964


def test_resumed_session_read_from_the_top_with_started_at():
    j2_start = parse_timestamp("2026-11-23T06:06:04.130Z")  # J2's first line (queue-operation)
    baseline = 11_944
    events = parse(J_PARENT, session_id=J_PARENT_ID, started_at=j2_start, skew_s=0.2, baseline_micro=baseline)
    assert [r.output_tokens for r in replies(events)] == [66]  # J1's reply (0.45 s earlier) is skipped
    assert metered(events).cost_micro == 11_964  # J1's old cost-state nets to 0 against the baseline
    # the default 5 s skew cannot tell runs this close apart: then only reading from the old end helps
    loose = parse(J_PARENT, session_id=J_PARENT_ID, started_at=j2_start)
    assert len(replies(loose)) == 2


def test_started_at_skips_the_forks_copied_user_lines_too():
    fork_start = parse_timestamp("2026-11-23T06:06:04.703Z")
    events = parse(J_FORK, session_id=J_FORK_ID, started_at=fork_start, skew_s=0.2)
    assert len(replies(events)) == 1


# -- last_reported_total --------------------------------------------------------------------------------


def test_last_reported_total_edge_cases(tmp_path, monkeypatch):
    assert last_reported_total(tmp_path / "missing.jsonl") == 0
    assert last_reported_total(TRANSCRIPTS / "D_subagent" / D_SESSION / "subagents" / D_SUB.name) == 0
    assert last_reported_total(L_MAIN) == 96_352
    torn = tmp_path / "torn.jsonl"
    torn.write_bytes(j1_prefix() + b'{"type":"cost-state","sessionId":"x","totalCostUSD":9.9')
    assert last_reported_total(torn) == 11_944
    complete = tmp_path / "complete.jsonl"
    complete.write_bytes(J_PARENT.read_bytes() + b'{"type":"user"}\n\n')
    monkeypatch.setattr(claude_logs, "_TAIL_BLOCK", 7)  # lines straddle many blocks
    assert last_reported_total(complete) == 23_908
    assert last_reported_total(torn) == 11_944


# -- tool outcomes (stuck-loop input) -------------------------------------------------------------------


def test_tool_results_become_outcomes_with_the_calls_signature():
    outcomes = [e for e in parse(TRANSCRIPTS / "E_max_turns.jsonl") if isinstance(e, ToolOutcome)]
    assert outcomes == [
        ToolOutcome(f'Bash {{"command":"echo loop {i}","description":"loop step"}}', False) for i in range(3)
    ]


def test_failed_result_before_its_tool_use_line_and_unknown_ids():
    use = line_where(B, uuid="cd32aeb3-309b-4523-908a-79b3a84140a2")
    result = json.loads(line_where(B, uuid="d263ce57-70b5-46d0-b3e5-f21c60e5a265"))
    result["message"]["content"][0]["is_error"] = True
    signature = 'Bash {"command":"echo hi-from-bash","description":"run cmd"}'

    parser = TranscriptParser(session_id="s")
    assert [e for e in parser.feed(use, 0) if isinstance(e, ToolOutcome)] == []
    assert parser.feed(json.dumps(result).encode(), 1) == [ToolOutcome(signature, True)]

    # the tool ran before its tool_use line was written: the outcome comes with that line
    parser = TranscriptParser(session_id="s")
    assert parser.feed(json.dumps(result).encode(), 1) == []
    assert [e for e in parser.feed(use, 0) if isinstance(e, ToolOutcome)] == [ToolOutcome(signature, True)]

    result["message"]["content"][0]["tool_use_id"] = "toolu_never_seen"
    assert TranscriptParser(session_id="s").feed(json.dumps(result).encode(), 1) == []


def test_tool_signature_is_canonical_and_bounded():
    assert tool_signature("Bash", {"b": 1, "a": "é"}) == tool_signature("Bash", {"a": "é", "b": 1})
    assert tool_signature("Bash", {"b": 1, "a": "é"}) == 'Bash {"a":"é","b":1}'
    big = tool_signature("Write", {"content": "x" * 100_000})
    assert len(big) < 300 and big.startswith('Write {"content":"xxx')
    assert big != tool_signature("Write", {"content": "x" * 99_999})


# -- malformed input, torn lines ------------------------------------------------------------------------


def test_torn_last_line_is_malformed_and_leaves_the_parser_untouched():
    line = line_where(TRANSCRIPTS / "A_single_turn.jsonl", type="assistant")
    parser = TranscriptParser(session_id="s", source="t.jsonl")
    (bad,) = parser.feed(line[: len(line) // 2], 500)
    assert isinstance(bad, Malformed) and (bad.source, bad.offset) == ("t.jsonl", 500)
    (reply,) = parser.feed(line, 500)  # completed later: counted normally, not as a duplicate
    assert reply.output_tokens == 41 and reply.step


@pytest.mark.parametrize(
    "raw",
    [
        b"not json",
        b"[1, 2]",
        b'"text"',
        b"\xff\xfe{",
        b"[" * 100_000,
        b'{"type":"assistant","message":"oops"}',
        b'{"type":"assistant","message":{"usage":{}}}',
        b'{"type":"assistant","message":{"id":"m","usage":{"output_tokens":-1}}}',
        b'{"type":"assistant","message":{"id":"m","usage":{"input_tokens":"9"}}}',
        b'{"type":"assistant","message":{"id":"m","usage":[]}}',
        b'{"type":"cost-state","totalCostUSD":"1"}',
        b'{"type":"cost-state","totalCostUSD":NaN}',
    ],
)
def test_malformed_lines(raw):
    (event,) = TranscriptParser(session_id="s", source="f").feed(raw, 7)
    assert isinstance(event, Malformed) and event.offset == 7


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"   ",
        b'{"type":"attachment"}',
        b'{"type":"system","subtype":"turn_duration"}',
        b'{"type":"user","message":{"content":"hi"}}',
        b'{"no":"type"}',
        b'{"type":"assistant","isApiErrorMessage":true}',
    ],
)
def test_other_lines_give_no_event(raw):
    assert TranscriptParser(session_id="s").feed(raw, 0) == []


def test_never_raises_on_damaged_fixture_lines():
    rng = random.Random(7)
    parser = TranscriptParser(session_id="s")
    for path in (B, L_MAIN):
        for offset, line in lines_of(path.read_bytes()):
            cut = line[: rng.randrange(len(line) + 1)]
            flipped = bytearray(line)
            for _ in range(3):
                flipped[rng.randrange(len(flipped))] = rng.randrange(256)
            for damaged in (cut, bytes(flipped)):
                for event in parser.feed(damaged, offset):
                    assert isinstance(event, (Reply, ReportedTotal, ToolOutcome, Malformed))


# -- statusLine, registry -------------------------------------------------------------------------------


def test_statusline_samples_give_a_growing_total():
    totals = []
    for offset, line in lines_of((SHARED / "interactive" / "statusline_stdin_samples.jsonl").read_bytes()):
        doc = json.dumps(json.loads(line)["stdin"]).encode()
        (event,) = statusline_events(doc, offset, "statusline.jsonl")
        assert event.scope == L_SESSION and event.source == "statusline"
        totals.append(event.cost_micro)
    assert totals == sorted(totals) and totals[0] == 0 and totals[-1] == 96_352


def test_statusline_edge_cases():
    assert statusline_events(b"", 0, "x") == []
    assert statusline_events(b'{"session_id":"s"}', 0, "x") == []
    (bad,) = statusline_events(b"{torn", 3, "x")
    assert bad == Malformed("x", 3, bad.why)
    (event,) = statusline_events(b'{"session_id":"s","cost":{"total_cost_usd":0.5}}', 0, "x", baseline_micro=100)
    assert event == ReportedTotal("s", 500_000, "statusline", 100)


def test_session_registry():
    for name in ("sessions_pid_at_startup.json", "sessions_pid_idle_after_turn1.json", "sessions_pid_busy.json"):
        assert session_from_registry((SHARED / "interactive" / name).read_bytes()) == SessionSeen(L_SESSION)
    for junk in (b"", b"{", b"[]", b'{"sessionId": 5}', b'{"pid": 1}'):
        assert session_from_registry(junk) is None


# -- where transcripts go -------------------------------------------------------------------------------


def test_path_encoding_examples_from_the_reference():
    assert encode_project_dir("/home/dev/enc/proj.dot_under score") == "-home-dev-enc-proj-dot-under-score"
    assert encode_project_dir("Ünï-çødé") == "-n----d-"
    assert encode_project_dir("/home/dev/fx/fxL") == "-home-dev-fx-fxL"  # as in the statusLine's transcript_path
    assert encode_project_dir("/a/\U0001f600b") == "-a---b"  # outside the BMP: two UTF-16 units, two dashes


def test_long_paths_are_cut_at_200_with_a_java_hash_suffix():
    assert java_hash("hello") == 99162322  # Java's "hello".hashCode()
    assert java_hash("polygenelubricants") == -(2**31)  # the one whose abs() overflows in Java, not in JS
    path = "/home/dev/" + "deep/" * 65  # 335 characters
    assert len(path) == 335
    encoded = encode_project_dir(path)
    assert encoded == encode_project_dir(path[:200]) + "-" + _base36(abs(java_hash(path)))
    assert encode_project_dir("/" + "a" * 199) == "-" + "a" * 199  # exactly 200: kept whole
    long_unicode = "/" + "é" * 250
    assert encode_project_dir(long_unicode).endswith("-" + _base36(abs(java_hash(long_unicode))))
    assert _base36(2**31) == "zik0zk"  # (2147483648).toString(36) in JS


def _base36(n: int) -> str:
    return claude_logs._base36(n)


def test_transcript_dir_uses_the_realpath(tmp_path):
    real = tmp_path / "real_dir"
    real.mkdir()
    link = tmp_path / "link"
    link.symlink_to(real)
    expected = tmp_path / "cfg" / "projects" / encode_project_dir(str(real.resolve()))
    assert transcript_dir(tmp_path / "cfg", link) == expected
    assert transcript_dir(str(tmp_path / "cfg"), str(real)) == expected


# -- a transcript truncated, rotated or rewritten under a live run ------------------------------------------


@pytest.mark.parametrize("fault", ["truncate", "rewrite", "replace", "rotate"])
def test_a_transcript_disturbed_mid_run_is_counted_once(tmp_path, fault):
    from capguard.metering.tail import Tailer, WatchSpec

    data = B.read_bytes()
    parser = TranscriptParser(session_id="s")  # cut just after the tool's result: a line that must count once
    cut = next(
        off + len(line) + 1
        for off, line in lines_of(data)
        if any(isinstance(e, ToolOutcome) for e in parser.feed(line, off))
    )
    path = tmp_path / "s.jsonl"
    path.write_bytes(data[:cut])
    tailer = Tailer([WatchSpec(path, lambda p: TranscriptParser(session_id="s", source=str(p)))])
    events = tailer.read(path)
    if fault == "truncate":  # emptied in place, then Claude appends its next lines
        path.write_bytes(data[cut:])
    elif fault == "rewrite":  # emptied and written back whole: the first half comes round again
        path.write_bytes(data)
    elif fault == "replace":  # a copy holding every line renamed over it
        (tmp_path / "copy").write_bytes(data)
        os.replace(tmp_path / "copy", path)
    else:  # renamed away; Claude opens the path again for its next lines
        os.rename(path, tmp_path / "s.jsonl.1")
        path.write_bytes(data[cut:])
    events += tailer.read(path)
    tailer.close()
    whole = metered(parse(B))
    meter = metered(events)
    assert (meter.cost_micro, meter.tokens, meter.steps) == (whole.cost_micro, whole.tokens, whole.steps)
    assert (meter.failing_tool, meter.failing_streak) == (whole.failing_tool, whole.failing_streak)
    assert sum(isinstance(e, ToolOutcome) for e in events) == sum(isinstance(e, ToolOutcome) for e in parse(B))
