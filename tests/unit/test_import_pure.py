"""The import's small parts: progress lines, the per-file state, aider's sessions, where transcripts are."""

from __future__ import annotations

import io
import os
import random
from pathlib import Path

import pytest

from capguard.importers import aider, claude
from capguard.importers.claude_files import session_of
from capguard.importers.progress import Progress, size
from capguard.importers.state import ImportState
from capguard.importers.unit_prices import UnitPricer
from capguard.ledger.bulk import RunSums

AIDER = Path(__file__).resolve().parents[1] / "fixtures" / "aider" / "shared"


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_waits_a_second_then_never_floods_a_log():
    clock, out = Clock(), io.StringIO()
    progress = Progress(out, clock=clock)
    progress.update(1, 10, 100)
    assert out.getvalue() == ""  # short imports say nothing
    for step in range(1, 60):
        clock.now = 100.0 + step * 0.5
        progress.update(step, step, 100)
    lines = out.getvalue().splitlines()
    assert len(lines) == 3  # at 1 s, 11 s, 21 s of 29.5 s: one line every 10 s when not a terminal
    assert lines[0].startswith("capguard: import: 2 files, 2 B of 100 B (2%)")


def test_progress_rewrites_one_line_on_a_terminal_and_clears_it():
    clock, out = Clock(), Tty()
    progress = Progress(out, clock=clock, label="import claude")
    for step in range(10):
        clock.now = 100.0 + step * 0.6
        progress.update(step, step * 1_500_000, 9_000_000)
    progress.close()
    text = out.getvalue()
    assert text.count("\r") == 5 and text.endswith("\r\x1b[K")  # 4 updates, one a second, then the clearing
    assert "\rcapguard: import claude: 2 files, 3.0 MB of 9.0 MB (33%), 1.2s\x1b[K" in text


def test_quiet_progress_prints_nothing():
    clock, out = Clock(), Tty()
    progress = Progress(out, enabled=False, clock=clock)
    clock.now += 100
    progress.update(1, 1, 1)
    progress.close()
    assert out.getvalue() == ""
    assert (size(999), size(14_100), size(21_300_000), size(1_074_000_000)) == ("999 B", "14.1 kB", "21.3 MB", "1.1 GB")


def test_state_reads_on_from_the_offset_only_while_the_file_only_grew(tmp_path):
    path = tmp_path / "t.jsonl"
    path.write_bytes(b"one\ntwo\n")
    state = ImportState(tmp_path / "state.json", "ledger-a")
    assert state.start_offset(str(path), path.stat()) == 0
    state.mark(str(path), path.stat(), 8, "run-1")
    state.save()
    again = ImportState(tmp_path / "state.json", "ledger-a")
    assert again.start_offset(str(path), path.stat()) is None  # unchanged: not read
    assert again.files[str(path)].run_id == "run-1"
    with open(path, "ab") as handle:
        handle.write(b"three\n")
    assert again.start_offset(str(path), path.stat()) == 8
    path.write_bytes(b"ONE\ntwo\nthree\nfour\n")  # rewritten in place: the bytes before the offset changed
    assert again.start_offset(str(path), path.stat()) == 0
    path.write_bytes(b"o\n")  # truncated
    assert again.start_offset(str(path), path.stat()) == 0
    os.replace(tmp_path / "state.json", tmp_path / "moved.json")
    replaced = tmp_path / "new.jsonl"
    replaced.write_bytes(b"one\ntwo\nthree\n")
    os.replace(replaced, path)  # another inode at the same path
    assert ImportState(tmp_path / "moved.json", "ledger-a").start_offset(str(path), path.stat()) == 0
    assert ImportState(tmp_path / "moved.json", "ledger-b").files == {}  # another ledger starts from scratch


def test_a_broken_state_file_means_start_over(tmp_path):
    (tmp_path / "state.json").write_text("{not json")
    assert ImportState(tmp_path / "state.json", "l").files == {}


def test_aider_history_sessions_and_their_rounded_rows():
    data = (AIDER / "chat.history.md").read_bytes()
    sessions = aider.history_sessions("h.md", data, 0, UnitPricer(), lambda text: text.replace(" ", "T") + ".000000Z")
    assert [s.model for s in sessions] == ["openai/gpt-4o", "openai/gpt-4o", "openai/my-local-model"] + [
        "anthropic/claude-sonnet-4-5"
    ] * 3
    first = sessions[0]
    assert first.started_utc == "2026-11-23T06:15:04.000000Z" and first.offset == data.index(b"# aider chat started")
    (row,) = first.rows
    assert row[1] == f"aider:history:h.md@{first.offset}#0" and row[4:9] == (2500, 9, 0, 0, 6500)
    assert row[-1] == '{"rounded": true}'
    assert sessions[2].rows[0][8:10] == (None, None)  # no cost line, a model nobody prices


def test_aider_analytics_sessions_split_at_launch():
    path = AIDER / "lab" / "openai_stream_multiturn" / ".aider.analytics.jsonl"
    data = path.read_bytes() * 2  # the same session twice: two launches
    sessions = aider.analytics_sessions(str(path), data, 0, UnitPricer())
    assert len(sessions) == 2 and sessions[1].offset == len(data) // 2
    assert [len(s.rows) for s in sessions] == [3, 3] and sessions[0].model == "openai/gpt-4o"
    assert sessions[0].report["exit_reason"] == "Completed main CLI coder.run"
    assert sum(row[8] for row in sessions[0].rows) == 20_896  # aider's own costs, exact


def test_aider_logs_are_found_by_name_and_content(tmp_path):
    (tmp_path / "repo" / ".git").mkdir(parents=True)
    (tmp_path / "repo" / ".aider.chat.history.md").write_text("# aider chat started at 2026-11-23 06:15:04\n")
    (tmp_path / "repo" / "my.analytics.jsonl").write_text('{"event": "launched", "time": 1}\n')
    (tmp_path / "repo" / "other-analytics.jsonl").write_text('{"not": "aider"}\n')
    (tmp_path / "repo" / ".git" / "x.analytics.jsonl").write_text('{"event": "launched", "time": 1}\n')
    analytics, histories = aider.find_logs([tmp_path])
    assert [p.name for p in analytics] == ["my.analytics.jsonl"]
    assert [p.name for p in histories] == [".aider.chat.history.md"]


def test_claude_transcripts_are_found_where_claude_code_keeps_them(tmp_path):
    env = {"CLAUDE_CONFIG_DIR": f"{tmp_path / 'a'}, {tmp_path / 'b'}"}
    assert claude.transcript_roots([], env) == [tmp_path / "a", tmp_path / "b"]
    assert claude.transcript_roots(["~/x"], env) == [Path.home() / "x"]
    assert claude.transcript_roots([], {"XDG_CONFIG_HOME": str(tmp_path)}) == [
        Path.home() / ".claude",
        tmp_path / "claude",
    ]
    session = tmp_path / "a" / "projects" / "-p" / "s1.jsonl"
    sub = tmp_path / "a" / "projects" / "-p" / "s1" / "subagents" / "agent-1.jsonl"
    for path in (session, sub, tmp_path / "a" / "projects" / "-p" / "notes.txt"):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("")
    assert set(claude.list_transcripts([tmp_path / "a", tmp_path / "missing"])) == {
        str(session.resolve()),
        str(sub.resolve()),
    }


def test_claude_listing_skips_what_is_no_transcript(tmp_path):
    base = tmp_path / "c" / "projects" / "-p"
    (base / "s1" / "subagents").mkdir(parents=True)
    (base / "s1.jsonl").write_text("{}\n")
    (base / "s1" / "subagents" / "agent-1.jsonl").write_text("")
    (base / "dir.jsonl").mkdir()  # a folder named like a transcript
    (base / "gone.jsonl").symlink_to(tmp_path / "nowhere")  # a dangling link
    (tmp_path / "elsewhere").mkdir()
    (base / "link").symlink_to(tmp_path / "elsewhere", target_is_directory=True)  # not followed, as os.walk
    (tmp_path / "elsewhere" / "x.jsonl").write_text("")
    listing = claude.list_transcripts([tmp_path / "c"])
    assert list(listing) == [str(base / "s1.jsonl"), str(base / "s1" / "subagents" / "agent-1.jsonl")]  # sorted
    assert listing[str(base / "s1.jsonl")].st_size == 3
    named = tmp_path / "notes.txt"
    named.write_text("")
    assert list(claude.list_transcripts([named])) == [str(named)]  # a file named on the command line


def test_run_sums_count_as_the_ledger_query_counts():
    def row(run, key, source, cost, counts=(1, 2, 3, 4)):
        return (run, key, "2026-11-23T06:05:53.000000Z", "m", *counts, cost, "genai-prices", source, 0, None)

    sums = RunSums.of(
        [
            row("r1", "claude:a", "/p/s.jsonl", 10),
            row("r1", "claude:a+1", "/p/s.jsonl", 5, (0, 1, 0, 0)),  # a correction: no step
            row("r1", "claude:b", "/p/s/subagents/agent-1.jsonl", 7),  # a subagent's reply: no step
            row("r1", "claude:c", "/P/S/SUBAGENTS/agent-2.jsonl", None),  # SQLite's LIKE ignores ASCII case
            row("r2", "claude:d", None, 1),
        ]
    )
    assert sums.runs == {"r1": [22, 31, 1], "r2": [1, 10, 1]} and sums.rows == 5
    more = RunSums.of([row("r2", "claude:e", "/p/t.jsonl", 2)])
    sums.add(more)
    assert sums.runs["r2"] == [3, 20, 2] and (sums.total(0), sums.total(1), sums.rows) == (25, 51, 6)


def test_a_groups_sums_are_its_rows_sums(tmp_path):
    """Workers add up each file as they price it; that must be what `RunSums.of` makes of the rows."""
    import json

    from capguard.core.pricing import Pricer
    from capguard.importers.claude_files import Task, Worker, read_group

    fixtures = Path(__file__).resolve().parents[1] / "fixtures" / "claude"
    line = next(
        json.loads(raw)
        for raw in (fixtures / "shared" / "transcripts" / "A_single_turn.jsonl").read_bytes().splitlines()
        if json.loads(raw).get("type") == "assistant"
    )
    grown = json.loads(json.dumps(line))
    grown["message"]["usage"]["output_tokens"] += 100  # the same reply, counted again larger: a correction
    corrected = tmp_path / "corrected.jsonl"
    corrected.write_text(json.dumps(line) + "\n" + json.dumps(grown) + "\n")
    files = [*sorted(fixtures.rglob("*.jsonl")), corrected]
    tasks = [Task(str(p), 0, p.stat().st_size, p.parent.name == "subagents") for p in files]
    done = read_group(tasks, Worker(UnitPricer(Pricer({}))))
    rows = [row[2:] for row in done.rows]  # without the id and recorded time `stamp_rows` put first
    assert any("/subagents/" in row[10] for row in rows) and any("+" in row[1] for row in rows)
    expected = RunSums.of(rows)
    assert done.sums.runs == expected.runs and done.sums.rows == expected.rows == len(rows) > 0


def test_a_run_is_complete_once_every_file_its_paths_name_is_read():
    from capguard.importers.claude_files import Task

    def task(path: str) -> Task:
        return Task(path, 0, 1, "/subagents/" in path)

    runs = claude.RunsRead(
        [
            task("/p/s1.jsonl"),
            task("/p/s1/subagents/agent-a.jsonl"),
            task("/p/s2.jsonl"),
            task("/p/s3.jsonl"),
            task("/p/s4.jsonl"),
        ]
    )
    runs.file_done("/p/s1.jsonl", "claude-s1")
    assert runs.complete == set()
    runs.file_done("/p/s1/subagents/agent-a.jsonl", "claude-s1")
    runs.file_done("/p/s2.jsonl", None)  # unreadable: done all the same
    assert runs.complete == {"claude-s1", "claude-s2"}
    runs.file_done("/p/s3.jsonl", "claude-s1")  # its lines name another session: neither run counts as complete
    runs.file_done("/p/s4.jsonl", "claude-s4")
    assert runs.complete == {"claude-s2", "claude-s4"}


def test_kept_rates_are_the_probed_ones_and_go_stale_with_the_day_or_the_data(tmp_path, monkeypatch):
    """An import keeps the per-token rates it probed from genai-prices; the next one that day, with the same
    genai-prices data, prices from them without loading genai-prices, to the same micro-dollar."""
    from capguard.importers import unit_prices

    probing = UnitPricer()
    fresh = probing.price("claude-sonnet-4-5", 1200, 340, 50_000, 2_000, 500)
    unit_prices.save_rates(probing.probed(), tmp_path)
    kept = unit_prices.load_rates(tmp_path)
    assert kept == probing.probed() and kept
    seeded = UnitPricer()
    seeded.seed(kept)
    monkeypatch.setattr("capguard.core.unit_prices.UnitPricer._probe", lambda *a: pytest.fail("probed again"))
    assert seeded.price("claude-sonnet-4-5", 1200, 340, 50_000, 2_000, 500) == fresh
    monkeypatch.setattr(unit_prices.time, "gmtime", lambda: unit_prices.time.gmtime(0))  # another day
    assert unit_prices.load_rates(tmp_path) == {}
    monkeypatch.undo()
    (tmp_path / "unit-prices.json").write_text('{"stamp": 1, "rates": [["x", null, null, [1, "a"]]]}')
    assert unit_prices.load_rates(tmp_path) == {}  # another stamp, or junk: nothing


def test_corrections_fold_into_their_requests_row_when_it_is_read_with_them():
    from capguard.importers.claude_files import folded
    from capguard.importers.claude_scan import FoundReply

    def reply(key, *figures):
        return FoundReply(key, "2026-12-01T10:00:00.000000Z", "claude-sonnet-4-5", figures, 0, "+" not in key, None)

    replies = [reply("claude:a", 10, 1, 0, 0, 0, 0), reply("claude:b", 5, 5, 0, 0, 0, 0),
               reply("claude:a+1", 0, 40, 0, 0, 0, 0), reply("claude:a+2", 0, 9, 100, 0, 0, 1),
               reply("claude:z+3", 0, 7, 0, 0, 0, 0)]  # fmt: skip
    out = folded(replies)
    assert [(r.key, r.figures) for r in out] == [
        ("claude:a", (10, 50, 100, 0, 0, 1)),  # the request's largest figures, as max-wins summed them
        ("claude:b", (5, 5, 0, 0, 0, 0)),
        ("claude:z+3", (0, 7, 0, 0, 0, 0)),  # its request was read before: it continues the ledger's
    ]


def test_a_transcripts_session_comes_from_its_path_as_os_path_reads_it():
    """`session_of` slices strings (planning 8,000 files); it gives what os.path's split and splitext give."""
    assert session_of("/h/.claude/projects/-p/4d1c.jsonl") == ("4d1c", False)
    assert session_of("/h/.claude/projects/-p/4d1c/subagents/agent-a1.jsonl") == ("4d1c", True)
    parts = ["a", "subagents", "s1.jsonl", ".jsonl", "..jsonl", "x.y.jsonl", "agent-1.jsonl", "", ".", "..", "é"]
    parts += ["a.b", "subagents.jsonl", ".hidden.jsonl", "...", "s."]
    rng = random.Random(3)
    for _ in range(20_000):
        path = "/" * rng.randint(0, 1) + "/".join(rng.choice(parts) for _ in range(rng.randint(1, 5)))
        folder, name = os.path.split(path)
        parent, folder_name = os.path.split(folder)
        expected = (
            (os.path.basename(parent), True) if folder_name == "subagents" else (os.path.splitext(name)[0], False)
        )
        assert session_of(path) == expected, path


def test_requests_seen_file_by_file_as_row_by_row():
    """`Requests.add_file` (a file's request keys, with dict and set operations) finds the same first files and
    the same requests seen in several files as a loop over every row would."""
    from capguard.importers.claude_merge import Requests

    rng = random.Random(5)
    first: dict[str, str] = {}
    shared: set[str] = set()
    requests = Requests()
    for n in range(60):
        path = f"/p/f{n % 17}.jsonl"  # some paths again: a file read in two parts
        keys = rng.sample([f"claude:r{i}" for i in range(80)], rng.randint(0, 12))
        for key in keys:  # row by row: the request's row, then a correction (skipped)
            if first.setdefault(key, path) != path:
                shared.add(key)
        requests.add_file(path, keys)
    assert (requests.first_file, requests.shared) == (first, shared)
    assert shared and len(first) > 40  # the case has both


def test_a_rows_details_with_its_figures_are_the_json_of_the_dict():
    """The importer writes a row's details with its 1-hour cache writes and web searches by adding them to the
    details' JSON text: the same text as json.dumps of the dict with them."""
    from capguard.agents.claude.decode import details_of
    from capguard.importers.claude_files import _details_json, _with_figures

    shapes = [None, {}]
    for geo in (None, "us", "é"):
        for speed in (None, "standard", "fast"):
            for aborted in (False, True):
                for served in (None, "claude-x", 'a "quoted" name'):
                    shapes.append(details_of(geo, speed, aborted, served))
    for details in shapes:
        text = _details_json(details, (0,) * 6)
        for write_1h, web in ((0, 1), (709, 0), (10**9, 3), (1, 1)):
            figures = (1, 2, 3, 10**9, write_1h, web)
            assert _with_figures(text, figures) == _details_json(details, figures), (details, figures)


def test_a_state_file_keeps_its_shape_and_a_broken_one_means_read_everything_again(tmp_path):
    """The state file holds each ledger's marks as objects with every field (an earlier capguard's file reads the
    same); another ledger's marks survive a save; a file that is not what it should be is an empty state (the
    files are read again, which the dedupe keys make harmless), never a traceback."""
    import json

    path = tmp_path / "t.jsonl"
    path.write_bytes(b"one\n")
    earlier = {"size": 4, "mtime_ns": 1, "inode": 2, "offset": 4, "check": "ab", "run_id": None}
    state_file = tmp_path / "state.json"
    state_file.write_text(json.dumps({"version": 1, "ledgers": {"other": {"/x.jsonl": earlier}}}))
    state = ImportState(state_file, "mine")
    state.mark(str(path), path.stat(), 4, "run-1")
    state.save()
    doc = json.loads(state_file.read_text())
    assert doc["ledgers"]["other"] == {"/x.jsonl": earlier}
    mark = doc["ledgers"]["mine"][str(path)]
    assert set(mark) == set(earlier) and mark["run_id"] == "run-1" and mark["offset"] == 4
    assert ImportState(state_file, "other").files["/x.jsonl"].offset == 4
    for broken in (
        b"not json",
        b"[]",
        b'{"version": 2, "ledgers": {}}',
        b'{"version": 1, "ledgers": {"mine": {"/a": {"size": "big"}}}}',
        b'{"version": 1, "ledgers": {"mine": {"/a": {"size": 1}}}}',
        b'{"version": 1, "ledgers": []}',
    ):
        state_file.write_bytes(broken)
        assert ImportState(state_file, "mine").files == {}
