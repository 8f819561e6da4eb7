"""agents/gemini: the session-file parser on lines the real Gemini CLI 0.61.0 wrote (tests/fixtures/gemini), hostile
lines, and the launch plan."""

from __future__ import annotations

import json
import signal
from datetime import datetime, timezone
from pathlib import Path

import pytest

from capguard.agents.gemini.adapter import ADAPTER, named_model, project_chats
from capguard.agents.gemini.logs import SessionParser, key_of
from capguard.config.settings import load_settings
from capguard.core import sanitize
from capguard.core.events import Malformed, Reply, ToolOutcome
from capguard.core.pricing import Pricer, genai_price, to_micro
from capguard.metering.tail import Tailer

FIXTURES = Path(__file__).parent.parent / "fixtures" / "gemini"


def feed(parser: SessionParser, data: bytes) -> list:
    events, offset = [], 0
    for line in data.split(b"\n"):
        events += parser.feed(line, offset)
        offset += len(line) + 1
    return events


def replies(events) -> list[Reply]:
    return [e for e in events if isinstance(e, Reply)]


def billed_main(name: str) -> list[dict]:
    rows = [json.loads(line) for line in (FIXTURES / f"billed.{name}.jsonl").read_text().splitlines()]
    return [r["usage"] for r in rows if r["kind"] == "main" and r["billed"]]


@pytest.mark.parametrize("name", ["hello", "shell", "max-turns", "sigint-midstream", "cut-midstream"])
def test_each_billed_main_reply_is_counted_once_with_the_fakes_figures(name):
    """The fake's request log is the truth: one Reply per billed main request, input split into fresh and cached,
    thoughts charged as output; the tool-calling reply written twice counts once."""
    found = replies(feed(SessionParser(), (FIXTURES / f"session.{name}.jsonl").read_bytes()))
    billed = billed_main(name)
    assert len(found) == len(billed) == len({r.key for r in found})
    for reply, usage in zip(found, billed):
        assert reply.input_tokens == usage["input"] - usage["cached"] + usage["tool"]
        assert reply.cache_read_tokens == usage["cached"]
        assert reply.output_tokens == usage["output"] + usage["thoughts"]
        assert reply.cache_write_tokens == 0
        assert reply.tokens == usage["total"]
        assert reply.step and reply.model == "gemini-3.8-flash"


def test_the_tool_calling_reply_written_twice_is_one_key_and_its_tool_one_outcome():
    data = (FIXTURES / "session.shell.jsonl").read_bytes()
    gemini_lines = [line for line in data.splitlines() if b'"type":"gemini"' in line]
    assert len(gemini_lines) == 3  # the first reply twice, then the answer
    events = feed(SessionParser(), data)
    assert [r.key for r in replies(events)] == [
        key_of("9bac402a-70c7-4286-8253-64d748202a9f"),
        key_of("4f273026-c68f-4475-8961-e8283155d136"),
    ]
    assert [e for e in events if isinstance(e, ToolOutcome)] == [
        ToolOutcome('run_shell_command {"command":"echo hi-from-shell"}', False)
    ]


def test_thoughts_are_output_and_priced_as_output():
    (reply,) = replies(feed(SessionParser(), (FIXTURES / "session.hello.jsonl").read_bytes()))
    assert reply.output_tokens == 9 + 4 and reply.details == {"thoughts_tokens": 4}
    priced = Pricer().price(reply)
    assert priced.priced_by == "genai-prices"
    assert priced.cost_micro == to_micro(genai_price("gemini-3.8-flash", 9998, 13, 0, 0))


def test_cached_input_is_priced_as_a_cache_read():
    second = replies(feed(SessionParser(), (FIXTURES / "session.shell.jsonl").read_bytes()))[1]
    assert (second.input_tokens, second.cache_read_tokens, second.output_tokens) == (11936 - 11858, 11858, 3)
    full = genai_price("gemini-3.8-flash", 11936, 3, 0, 0)
    cached = genai_price("gemini-3.8-flash", 78, 3, 11858, 0)
    assert cached is not None and full is not None and cached < full


def line(**fields) -> bytes:
    entry = {"id": "m1", "timestamp": "2026-12-06T21:33:39.334Z", "type": "gemini", "model": "gemini-2.5-flash"}
    entry.update(fields)
    return json.dumps(entry).encode()


TOKENS = {"input": 1000, "output": 50, "cached": 200, "thoughts": 10, "tool": 0, "total": 1060}


def test_a_rewrite_with_larger_figures_adds_only_the_increase():
    parser = SessionParser()
    (first,) = replies(parser.feed(line(tokens=TOKENS), 0))
    assert parser.feed(line(tokens=TOKENS), 10) == []
    (more,) = replies(parser.feed(line(tokens={**TOKENS, "output": 70, "total": 1080}), 20))
    assert more.key == first.key + "+1" and more.output_tokens == 20 and more.input_tokens == 0
    assert not more.step


def test_replies_in_a_set_of_messages_count_once_by_id():
    parser = SessionParser()
    message = json.loads(line(tokens=TOKENS))
    events = parser.feed(json.dumps({"$set": {"messages": [message]}}).encode(), 0)
    events += parser.feed(line(tokens=TOKENS), 100)
    assert len(replies(events)) == 1


def test_history_of_a_resumed_session_and_a_foreign_header_are_skipped():
    parser = SessionParser(not_before=1_900_000_000.0)  # 2030: the fixture's reply is history
    assert replies(parser.feed(line(tokens=TOKENS), 0)) == []
    other = SessionParser(session_id="mine")
    assert other.feed(json.dumps({"sessionId": "theirs", "kind": "main"}).encode(), 0) == []
    assert other.foreign and other.feed(line(tokens=TOKENS), 50) == []


def test_subagent_replies_are_counted_but_are_not_steps():
    (reply,) = replies(SessionParser(subagent=True).feed(line(tokens=TOKENS), 0))
    assert reply.tokens == 1060 and not reply.step


@pytest.mark.parametrize(
    "bad",
    [
        b"{not json",
        b"[1, 2]",
        line(tokens={"input": -5}),
        line(tokens={"input": "many"}),
        line(tokens=[1, 2]),
        line(tokens={"input": float("nan")}),
        line(id=None, tokens=TOKENS),
        json.dumps({"$set": 5}).encode(),
        b"[" * 100_000,
    ],
)
def test_a_hostile_line_is_malformed_and_counts_nothing(bad):
    events = SessionParser(source="f").feed(bad, 7)
    assert len(events) == 1 and isinstance(events[0], Malformed) and events[0].offset == 7


def test_figures_beyond_the_bound_count_as_the_bound_and_are_suspicious():
    (reply,) = replies(SessionParser().feed(line(tokens={"input": 10**30, "output": 1}), 0))
    assert reply.input_tokens == sanitize.MAX_TOKENS and reply.suspicious


def test_cached_above_input_is_clamped_and_names_are_cut():
    (reply,) = replies(SessionParser().feed(line(tokens={"input": 10, "cached": 500}, model="x" * 5000), 0))
    assert (reply.input_tokens, reply.cache_read_tokens) == (0, 10)
    assert reply.model is not None and len(reply.model) == sanitize.MAX_NAME


def test_other_messages_and_a_reply_without_tokens_count_nothing():
    parser = SessionParser()
    assert parser.feed(json.dumps({"id": "u", "type": "user", "content": "hi"}).encode(), 0) == []
    assert parser.feed(json.dumps({"id": "i", "type": "info", "content": "Loop detected"}).encode(), 0) == []
    assert parser.feed(line(tokens=None), 0) == []


# -- the launch plan -------------------------------------------------------------------------------------------


@pytest.fixture
def gemini_env(tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    exe = bin_dir / "gemini"
    exe.write_text("#!/bin/sh\n")
    exe.chmod(0o755)
    home = tmp_path / "home"
    return {"PATH": str(bin_dir), "HOME": str(home)}


def plan(args, env, tmp_path, monkeypatch):
    project = tmp_path / "proj"
    project.mkdir(exist_ok=True)
    monkeypatch.chdir(project)
    run_dir = tmp_path / "run"
    run_dir.mkdir(exist_ok=True)
    return ADAPTER.plan(list(args), load_settings("gemini", flags={}, env={}, cwd=project), run_dir, env, "RUN1")


def test_plan_chooses_the_session_keeps_one_process_and_stops_with_sigterm(gemini_env, tmp_path, monkeypatch):
    launch = plan(["-p", "hi"], gemini_env, tmp_path, monkeypatch)
    assert launch.argv[:3] == [str(tmp_path / "bin" / "gemini"), "-p", "hi"]
    assert launch.argv[3] == "--session-id" and len(launch.argv[4]) == 36
    assert launch.env["GEMINI_CLI_NO_RELAUNCH"] == "true"
    assert "GEMINI_CLI_TRUST_WORKSPACE" not in launch.env  # the user's trust decisions are theirs
    assert launch.polite_stop == [(signal.SIGTERM, 0.0)]
    assert not launch.reports_cost and len(launch.blind_spots) == 3
    assert tmp_path / "home" / ".gemini" / "tmp" in launch.folders  # made at launch (a dry run makes none)


def test_plan_leaves_a_resumed_or_chosen_session_alone(gemini_env, tmp_path, monkeypatch):
    for args in (
        ["-r", "latest"],
        ["--resume=2"],
        ["--session-file", "old.json"],
        ["--session-id", "abc"],
        ["mcp", "list"],
    ):
        launch = plan(args, gemini_env, tmp_path, monkeypatch)
        assert launch.argv.count("--session-id") == ("--session-id" in args), args
    launch = plan([], {**gemini_env, "GEMINI_CLI_NO_RELAUNCH": ""}, tmp_path, monkeypatch)
    assert launch.env["GEMINI_CLI_NO_RELAUNCH"] == ""  # the user's own value, even empty, stands


def test_named_model_skips_geminis_own_aliases():
    assert named_model(["-m", "gemini-2.5-pro"], {}) == "gemini-2.5-pro"
    assert named_model(["--model=gemini-2.5-flash"], {"GEMINI_MODEL": "x"}) == "gemini-2.5-flash"
    assert named_model([], {"GEMINI_MODEL": "gemini-3-pro-preview"}) == "gemini-3-pro-preview"
    for alias in ("auto", "pro", "flash", "flash-lite", "auto-gemini-3"):
        assert named_model(["-m", alias], {}) is None
    assert named_model([], {}) is None


def test_project_chats_comes_from_geminis_registry(tmp_path):
    home = tmp_path / ".gemini"
    home.mkdir()
    assert project_chats(home, tmp_path) is None
    (home / "projects.json").write_text(json.dumps({"projects": {str(tmp_path): "proj-1"}}))
    assert project_chats(home, tmp_path) == home / "tmp" / "proj-1" / "chats"
    (home / "projects.json").write_text(json.dumps({"projects": {str(tmp_path): "../escape"}}))
    assert project_chats(home, tmp_path) is None  # a name that is not a plain folder name is not followed


def test_plan_follows_this_runs_sessions_and_subagents_only(gemini_env, tmp_path, monkeypatch):
    """Old sessions stay unopened until written again; /clear's new session in the same folder counts; another
    project's session does not; a subagent's file below chats/<session>/ counts, not as steps."""
    chats = tmp_path / "home" / ".gemini" / "tmp" / "proj" / "chats"
    other = tmp_path / "home" / ".gemini" / "tmp" / "other" / "chats"
    for folder in (chats, other):
        folder.mkdir(parents=True)
    old = chats / "session-2026-01-01T00-00-aaaaaaaa.jsonl"
    old.write_bytes(b'{"sessionId":"aaaaaaaa-1","kind":"main"}\n' + line(id="old", tokens=TOKENS) + b"\n")
    launch = plan(["-p", "hi"], gemini_env, tmp_path, monkeypatch)
    sid = launch.argv[launch.argv.index("--session-id") + 1]
    tailer = Tailer(launch.watches)
    assert tailer.paths == []  # nothing opened at the start

    def now(message_id: str) -> bytes:
        stamp = datetime.now(timezone.utc).isoformat()
        return line(id=message_id, timestamp=stamp, tokens=TOKENS) + b"\n"

    ours = chats / f"session-2026-12-06T21-33-{sid[:8]}.jsonl"
    ours.write_bytes(json.dumps({"sessionId": sid, "kind": "main"}).encode() + b"\n" + now("r1"))
    found = replies(tailer.read_all())  # the registry did not name the project: this run's own file does
    foreign = other / "session-2026-12-06T21-33-bbbbbbbb.jsonl"
    foreign.write_bytes(b'{"sessionId":"bbbbbbbb-1","kind":"main"}\n' + now("r2"))
    cleared = chats / "session-2026-12-06T21-34-cccccccc.jsonl"
    cleared.write_bytes(b'{"sessionId":"cccccccc-1","kind":"main"}\n' + now("r3"))
    sub = chats / sid / "sub-1.jsonl"
    sub.parent.mkdir()
    sub.write_bytes(b'{"sessionId":"sub-1","kind":"subagent"}\n' + now("r4"))
    with open(old, "ab") as handle:
        handle.write(now("r5"))  # /resume of an old session: only what is written now
    found += replies(tailer.read_all())
    tailer.close()
    assert sorted(r.key for r in found) == [key_of(k) for k in ("r1", "r3", "r4", "r5")]
    assert {r.key: r.step for r in found} == {
        key_of("r1"): True,
        key_of("r3"): True,
        key_of("r4"): False,
        key_of("r5"): True,
    }


# -- the importer's reading (capguard import gemini), on the real files ----------------------------------------


def test_import_reads_a_session_as_live_metering_does(tmp_path):
    from capguard.importers.gemini import find_sessions, read_session
    from capguard.importers.unit_prices import UnitPricer

    chats = tmp_path / "tmp" / "proj" / "chats"
    chats.mkdir(parents=True)
    session = chats / "session-2026-12-06T21-33-77d7b5d0.jsonl"
    session.write_bytes((FIXTURES / "session.shell.jsonl").read_bytes())
    (chats / "77d7b5d0-6ce4-4ecb-b794-061d486677b1").mkdir()
    sub = chats / "77d7b5d0-6ce4-4ecb-b794-061d486677b1" / "sub.jsonl"
    sub.write_bytes(b'{"sessionId":"sub","kind":"subagent"}\n' + line(tokens=TOKENS) + b"\n")
    (tmp_path / "tmp" / "proj" / "logs").mkdir()
    (tmp_path / "tmp" / "proj" / "logs" / "session-x.jsonl").write_text("{}\n")  # not a session file
    assert find_sessions([tmp_path]) == sorted([session.resolve(), sub.resolve()])

    pricer = UnitPricer(Pricer())
    read = read_session(session, session.read_bytes(), 0, pricer, "/home/me/proj")
    live = replies(feed(SessionParser(), session.read_bytes()))
    assert read.run_id == "gemini-77d7b5d0-6ce4-4ecb-b794-061d486677b1"
    assert [row[1] for row in read.rows] == [r.key for r in live]
    assert [row[4:8] for row in read.rows] == [(r.input_tokens, r.output_tokens, r.cache_read_tokens, 0) for r in live]
    assert [row[8] for row in read.rows] == [Pricer().price(r).cost_micro for r in live]
    subagent = read_session(sub, sub.read_bytes(), 0, pricer, None)
    assert subagent.run_id == read.run_id and len(subagent.rows) == 1  # counted in its parent's run
    tail = read_session(session, session.read_bytes()[10:], 10, pricer, None, run_id=read.run_id)
    assert tail.run_id == read.run_id  # read on from an offset, the header behind: the run an earlier import found
