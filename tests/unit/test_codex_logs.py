"""codex/logs.py on Codex 0.169.1's real rollout lines (tests/fixtures/codex): one Reply per billed response, equal to
what the fake billed, keyed by the response id; token_count repeats are not counted; a fork adds only its own."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from capguard.agents.codex.adapter import config_overrides, named_model, subcommand, without_daemon
from capguard.agents.codex.logs import RolloutParser
from capguard.core.events import Malformed, Reply
from capguard.core.meter import Meter
from capguard.core.pricing import Pricer

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "codex"
RUNS = ("tool", "sigint-midstream", "sigterm-midstream", "sigint-tool", "cut", "fork-parent", "fork-child")


def lines_of(data: bytes) -> list[tuple[int, bytes]]:
    out, start = [], 0
    while (end := data.find(b"\n", start)) >= 0:
        out.append((start, data[start:end]))
        start = end + 1
    return out


def feed(parser: RolloutParser, data: bytes) -> list:
    return [event for offset, line in lines_of(data) for event in parser.feed(line, offset)]


def replies(name: str, parser: RolloutParser | None = None) -> list[Reply]:
    data = (FIXTURES / f"rollout.{name}.jsonl").read_bytes()
    return [e for e in feed(parser or RolloutParser(name), data) if isinstance(e, Reply)]


def billed(name: str) -> list[dict]:
    return [r for r in json.loads((FIXTURES / f"billed.{name}.json").read_text()) if r["billed"]]


@pytest.mark.parametrize("name", RUNS)
def test_one_reply_per_billed_response_with_its_usage_to_the_token(name):
    got = replies(name)
    bills = billed(name)
    assert [r.key for r in got] == [f"codex:{b['id']}" for b in bills]
    for reply, bill in zip(got, bills):
        usage = bill["usage"]
        cached = usage["input_tokens_details"]["cached_tokens"]
        assert reply.cache_read_tokens == cached
        assert reply.input_tokens == usage["input_tokens"] - cached  # OpenAI's input includes the cached part
        assert reply.output_tokens == usage["output_tokens"]  # ... and its output the reasoning
        assert reply.tokens == usage["total_tokens"]
        assert reply.model == "fake-model"


def test_reasoning_is_part_of_the_output_and_noted():
    first = replies("tool")[0]
    assert first.output_tokens == 20 and first.details == {"reasoning_output_tokens": 12}


def test_cached_input_is_priced_at_the_cache_rate():
    reply = replies("tool")[1]
    assert reply.cache_read_tokens == 7936
    gpt5 = Reply(**{**reply.__dict__, "model": "gpt-5"})
    cost = Pricer().price(gpt5).cost_micro
    # gpt-5: $1.25/M input, $0.125/M cached input, $10/M output
    assert cost == round((reply.input_tokens * 1.25 + 7936 * 0.125 + reply.output_tokens * 10) / 1e6 * 1e6)


def test_token_count_lines_never_count_when_usage_records_exist():
    data = (FIXTURES / "rollout.tool.jsonl").read_bytes()
    events = feed(RolloutParser("tool"), data)
    assert sum(isinstance(e, Reply) for e in events) == 2
    assert not any(isinstance(e, Malformed) for e in events)


def test_a_fork_and_its_parent_count_each_reply_once():
    meter = Meter()
    pricer = Pricer()
    for name in ("fork-parent", "fork-child", "fork-parent"):  # the parent read twice, as a resumed file may be
        for reply in replies(name):
            meter.add_reply(reply, pricer.price(reply))
    bills = billed("fork-parent") + billed("fork-child")
    assert meter.tokens == sum(b["usage"]["total_tokens"] for b in bills)


def test_a_file_followed_from_its_end_prices_with_the_model_named_at_start():
    lines = (FIXTURES / "rollout.tool.jsonl").read_bytes().splitlines()
    record = next(line for line in lines if b'"token_usage_record"' in line)
    [reply] = RolloutParser("x", model="gpt-5").feed(record, 0)
    assert reply.model == "gpt-5"


def test_the_latest_turn_context_names_the_model():
    parser = RolloutParser("x", model="gpt-5")
    parser.feed(json.dumps({"type": "turn_context", "payload": {"model": "gpt-5-codex"}}).encode(), 0)
    assert parser.model == "gpt-5-codex"


def legacy(total: int, last: int) -> bytes:
    usage = {"input_tokens": last - 10, "cached_input_tokens": 0, "output_tokens": 10, "total_tokens": last}
    info = {"total_token_usage": {"total_tokens": total}, "last_token_usage": usage}
    return json.dumps({"type": "event_msg", "payload": {"type": "token_count", "info": info}}).encode()


def test_files_older_than_usage_records_count_token_count_once_per_response():
    parser = RolloutParser("old")
    got = [e for line in (legacy(100, 100), legacy(100, 100), legacy(250, 150)) for e in parser.feed(line, 0)]
    assert [r.tokens for r in got] == [100, 150]


@pytest.mark.parametrize(
    "line",
    [
        b"{not json",
        b"[]",
        json.dumps({"type": "token_usage_record", "payload": {"response_id": "r", "usage": "x"}}).encode(),
        json.dumps(
            {"type": "token_usage_record", "payload": {"response_id": "r", "usage": {"input_tokens": -5}}}
        ).encode(),
        json.dumps(
            {"type": "token_usage_record", "payload": {"response_id": "r", "usage": {"output_tokens": "nan"}}}
        ).encode(),
    ],
)
def test_bad_lines_are_malformed_not_counted(line):
    [event] = RolloutParser("x").feed(line, 7)
    assert isinstance(event, Malformed) and event.offset == 7


def test_a_huge_figure_is_bounded_and_suspicious():
    line = json.dumps(
        {"type": "token_usage_record", "payload": {"response_id": "r", "usage": {"input_tokens": 10**15}}}
    ).encode()
    [reply] = RolloutParser("x").feed(line, 0)
    assert reply.input_tokens == 10**9 and reply.suspicious


def test_tui_arguments_get_no_daemon_where_codex_takes_it():
    assert without_daemon([]) == ["--no-daemon"]
    assert without_daemon(["fix the test"]) == ["--no-daemon", "fix the test"]
    assert without_daemon(["-m", "gpt-5", "resume", "--last"]) == ["-m", "gpt-5", "resume", "--no-daemon", "--last"]
    assert without_daemon(["exec", "go"]) is None and without_daemon(["e", "go"]) is None
    assert subcommand(["-c", "model=x", "exec"]) == (2, "exec")


def test_the_named_model_comes_from_flags_overrides_then_config(tmp_path):
    (tmp_path / "config.toml").write_text('model = "gpt-5"\n')
    assert named_model(["exec", "-m", "gpt-4.1", "x"], tmp_path) == "gpt-4.1"
    assert named_model(["-c", 'model="o3"', "exec", "x"], tmp_path) == "o3"
    assert named_model(["exec", "x"], tmp_path) == "gpt-5"
    assert named_model(["-p", "work", "exec", "x"], tmp_path) is None
    assert config_overrides(["--config=a.b=1", "-c", "model='x'"]) == {"a.b": "1", "model": "x"}


def test_tool_calls_give_their_outcome_from_the_exit_code():
    from capguard.core.events import ToolOutcome

    data = (FIXTURES / "rollout.tool.jsonl").read_bytes()
    outcomes = [e for e in feed(RolloutParser("tool", tools=True), data) if isinstance(e, ToolOutcome)]
    assert outcomes == [ToolOutcome('exec_command {"cmd": "echo hi"}', failed=False)]
    failing = data.replace(b"Process exited with code 0", b"Process exited with code 1")
    outcomes = [e for e in feed(RolloutParser("tool", tools=True), failing) if isinstance(e, ToolOutcome)]
    assert [o.failed for o in outcomes] == [True]
    assert not [e for e in feed(RolloutParser("tool"), data) if isinstance(e, ToolOutcome)]  # import: no tools
