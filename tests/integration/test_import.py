"""`capguard import`, `report` and `suggest` on real ledgers: SQLite always, PostgreSQL when CAPGUARD_TEST_PG_DSN is set.

Imports the captured Claude Code and aider files and checks the ledger against the parsers' own totals, that a
second import adds nothing, and that appended lines (only those) are added.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import csv
import functools
import io
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from capguard.agents.aider.logs import AnalyticsParser, parse_cost_lines
from capguard.agents.claude.logs import TranscriptParser
from capguard.cli import run_command
from capguard.core.events import Reply
from capguard.core.meter import Meter
from capguard.core.pricing import Pricer, to_micro
from capguard.importers import state
from capguard.ledger import RunEnd, RunStart, UsageRecord, open_ledger

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
CLAUDE = FIXTURES / "claude" / "shared"
AIDER = FIXTURES / "aider" / "shared"
PG_DSN = os.environ.get("CAPGUARD_TEST_PG_DSN")
BACKENDS = [
    "sqlite",
    pytest.param("postgresql", marks=pytest.mark.skipif(not PG_DSN, reason="CAPGUARD_TEST_PG_DSN is not set")),
]


@pytest.fixture(autouse=True)
def _home(tmp_path, monkeypatch):
    monkeypatch.setenv("CAPGUARD_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("TZ", "UTC")  # aider's chat history stamps sessions in local time
    time.tzset()
    monkeypatch.chdir(tmp_path)
    yield
    monkeypatch.delenv("TZ")
    time.tzset()


@pytest.fixture(params=BACKENDS)
def ledger_target(request, tmp_path):
    if request.param == "sqlite":
        yield str(tmp_path / "ledger.db")
        return
    import psycopg

    schema = f"cg_import_{os.getpid()}_{time.monotonic_ns()}"
    with psycopg.connect(PG_DSN, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
    yield PG_DSN + ("&" if "?" in PG_DSN else "?") + "options=" + f"-csearch_path={schema}".replace("=", "%3D")
    with psycopg.connect(PG_DSN, autocommit=True) as conn:
        conn.execute(f"DROP SCHEMA {schema} CASCADE")


def command(name: str) -> Callable[[list[str], dict], int]:
    """Subcommand `name` as the CLI runs it: its own arguments, and the global options given before its name."""
    return functools.partial(run_command, name)


def run_json(main, args: list[str], target: str, capsys) -> dict:
    assert main([*args, "--json"], {"ledger": target}) == 0
    return json.loads(capsys.readouterr().out)


def imported(target: str, agent: str, paths: list, capsys, *extra: str) -> dict:
    return run_json(command("import"), [agent, *map(str, paths), "--user", "dev@example.com", *extra], target, capsys)


def spend(target: str) -> tuple[int, int]:
    with open_ledger(target) as ledger:
        return ledger.spend()


def rows(target: str, sql: str, params=()) -> list[dict]:
    with open_ledger(target) as ledger:
        return ledger.query(sql, params)


# -- Claude Code -----------------------------------------------------------------------------------------------


def parsed_claude(paths: list[Path]) -> Meter:
    """What the live meter makes of these transcripts: every reply priced, each key counted once."""
    meter, pricer = Meter(), Pricer()
    for path in paths:
        subagent = path.parent.name == "subagents"
        parser = TranscriptParser(session_id=path.stem, subagent=subagent)
        data, start = path.read_bytes(), 0
        while (end := data.find(b"\n", start)) >= 0:
            for event in parser.feed(data[start:end], start):
                if isinstance(event, Reply):
                    meter.add_reply(event, pricer.price(event))
            start = end + 1
    return meter


def transcripts(root: Path) -> list[Path]:
    return sorted(root.rglob("*.jsonl"))


def test_claude_import_equals_the_parsers_totals_one_run_per_session(ledger_target, capsys):
    summary = imported(ledger_target, "claude", [CLAUDE], capsys)
    meter = parsed_claude(transcripts(CLAUDE))
    assert spend(ledger_target) == (meter.replies_micro, meter.tokens)
    assert summary["replies_added"] == sum(m.replies for m in meter.by_model.values())
    assert (summary["cost_added_usd"], summary["tokens_added"]) == (meter.replies_micro / 1e6, meter.tokens)
    assert summary["files_read"] == len(transcripts(CLAUDE)) and summary["malformed_lines"] == 0
    runs = {r["id"]: r for r in rows(ledger_target, "SELECT * FROM runs")}
    subagent_session = "af3d562a-7f82-4b45-bbe8-914ae96cfb9a"
    run = runs[f"claude-{subagent_session}"]
    assert (run["status"], run["agent"], run["steps"]) == ("imported", "claude", 3)  # the subagent's 2 are no steps
    events = rows(ledger_target, "SELECT * FROM usage_events WHERE run_id = ?", (run["id"],))
    assert len(events) == 5 and run["cost_micro_usd"] == sum(e["cost_micro_usd"] for e in events)
    assert run["cwd"] == "/home/dev/fx/fxD" and run["agent_version"] == "2.1.330"
    assert run["started_utc"] < run["ended_utc"]
    assert len(runs) == len({r["run_id"] for r in rows(ledger_target, "SELECT DISTINCT run_id FROM usage_events")})
    # the totals a first import keeps in memory are what its rows add up to
    for run_id, run in runs.items():
        events = rows(ledger_target, "SELECT * FROM usage_events WHERE run_id = ?", (run_id,))
        steps = sum("+" not in e["dedupe_key"] and "/subagents/" not in e["source_file"] for e in events)
        tokens = sum(
            e["input_tokens"] + e["output_tokens"] + e["cache_read_tokens"] + e["cache_write_tokens"] for e in events
        )
        assert (run["cost_micro_usd"], run["tokens"], run["steps"]) == (
            sum(e["cost_micro_usd"] or 0 for e in events),
            tokens,
            steps,
        ), run_id


@pytest.mark.parametrize("group_bytes", [1, 1 << 30], ids=["a-group-per-file", "one-group"])
def test_runs_whose_files_are_all_in_are_written_complete(tmp_path, capsys, monkeypatch, group_bytes):
    """A run goes into the ledger with its totals when all its files are read; `finish` rewrites only the others
    (here: a session whose subagent's transcript came in another group). Either way every run adds up."""
    from capguard.importers import claude, claude_files
    from capguard.ledger import bulk as ledger_io

    monkeypatch.setattr(claude_files, "GROUP_BYTES", group_bytes)
    monkeypatch.setattr(claude, "WRITE_ROWS", 1)  # a transaction per group
    finished, executemany = [], ledger_io.executemany

    def spy(db, sql, batch):
        if sql == ledger_io._FINISH:
            finished.extend(row[-1] for row in batch)
        return executemany(db, sql, batch)

    monkeypatch.setattr(ledger_io, "executemany", spy)
    target = str(tmp_path / "ledger.db")
    imported(target, "claude", [CLAUDE], capsys, "--jobs", "1")
    runs = rows(target, "SELECT id, cost_micro_usd, tokens, steps FROM runs")
    sums = {
        r["run_id"]: r
        for r in rows(
            target,
            """SELECT run_id, SUM(COALESCE(cost_micro_usd, 0)) AS cost,
        SUM(input_tokens + output_tokens + cache_read_tokens + cache_write_tokens) AS tokens FROM usage_events
        GROUP BY run_id""",
        )
    }
    assert [(r["cost_micro_usd"], r["tokens"]) for r in runs] == [
        (sums[r["id"]]["cost"], sums[r["id"]]["tokens"]) for r in runs
    ]
    # Rewritten: the runs of a file whose lines name another session than its name (these fixtures are named
    # for what they show; Claude Code names a transcript for its session), and, a group per file, the session
    # whose subagent's transcript came in another group.
    (marks,) = json.loads(state.default_path().read_text())["ledgers"].values()
    by_file = {path: mark["run_id"] for path, mark in marks.items() if mark["run_id"]}
    named = {path: claude_files.run_id_of(claude_files.session_of(path)[0]) for path in by_file}
    expected = {run for path in by_file if by_file[path] != named[path] for run in (by_file[path], named[path])}
    if group_bytes == 1:  # sessions with a subagent: its transcript came in another group
        expected |= {named[path] for path in by_file if "/subagents/" in path}
    assert sorted(finished) == sorted(expected & {r["id"] for r in runs})
    assert len(finished) < len(runs)
    assert next(r for r in runs if r["id"] == "claude-af3d562a-7f82-4b45-bbe8-914ae96cfb9a")["steps"] == 3


@functools.cache
def shaped_corpus(root: Path) -> tuple[Path, int, set[Path]]:
    """A small corpus from bench's generator with streaming snapshots and resumed sessions (whose transcripts copy
    their history's final lines): its folder, the generator's token total (each request counted once, largest
    line) and the resumed sessions' transcripts."""
    out = root / "shaped"
    generator = Path(__file__).resolve().parents[2] / "bench" / "gen_claude_corpus.py"
    argv = [sys.executable, str(generator), "--out", str(out), "--target-mb", "4", "--projects", "3", "--seed", "5"]
    subprocess.run([*argv, "--streaming", "0.3", "--resumed", "0.3"], check=True, capture_output=True)
    manifest = json.loads((out / "manifest.json").read_text())
    return out, manifest["total_tokens"], {out / name for name in manifest["resumed_files"]}


@pytest.fixture(scope="module")
def shaped(tmp_path_factory) -> tuple[Path, int, set[Path]]:
    return shaped_corpus(tmp_path_factory.mktemp("corpus"))


def run_totals(target: str) -> dict[str, tuple]:
    """Each run's (cost, tokens, steps) as its row in `runs` holds them."""
    found = rows(target, "SELECT id, cost_micro_usd, tokens, steps FROM runs")
    return {r["id"]: (r["cost_micro_usd"], r["tokens"], r["steps"]) for r in found}


def rows_by_run(target: str) -> dict[str, tuple]:
    """Each run's (cost, tokens, steps) summed from its usage rows (a step: a request's row, not a correction,
    not from a subagent's transcript): what `runs` must hold after an import."""
    found = rows(
        target,
        """SELECT r.id AS id, COALESCE(SUM(e.cost_micro_usd), 0) AS cost,
        COALESCE(SUM(e.input_tokens + e.output_tokens + e.cache_read_tokens + e.cache_write_tokens), 0) AS tokens,
        COALESCE(SUM(CASE WHEN e.dedupe_key LIKE '%+%' OR e.source_file LIKE '%/subagents/%' THEN 0 ELSE 1 END), 0)
        AS steps FROM runs r LEFT JOIN usage_events e ON e.run_id = r.id GROUP BY r.id""",
    )
    return {r["id"]: (r["cost"], r["tokens"], r["steps"]) for r in found}


def ledger_rows(target: str) -> list[tuple]:
    return [
        tuple(r.values())
        for r in rows(
            target,
            "SELECT run_id, dedupe_key, occurred_utc, input_tokens, output_tokens, cache_read_tokens,"
            " cache_write_tokens, cost_micro_usd, source_file FROM usage_events ORDER BY dedupe_key",
        )
    ]


@pytest.mark.parametrize("aged", [False, True], ids=["written-now", "settled"])
@pytest.mark.parametrize("order", ["sorted", "reversed", "resumed-first"])
def test_the_largest_line_of_a_request_wins_across_files_whatever_their_order(
    ledger_target, capsys, tmp_path, monkeypatch, shaped, order, aged
):
    """A resumed session's transcript holds copies of its history's final lines; the original holds the same
    requests' streaming snapshots. Whichever file a worker reads first, each request counts its largest line once:
    the totals are the generator's, the same rows land in the same runs, and importing again adds nothing; alike
    when each file's corrections are folded into its requests' rows (`settled`: files nothing writes to now)."""
    from capguard.importers import claude, claude_files

    corpus, truth, resumed = shaped
    if aged:
        copy = tmp_path / "aged"
        shutil.copytree(corpus, copy)
        for path in copy.rglob("*.jsonl"):
            os.utime(path, (time.time() - 3600,) * 2)
        resumed = {copy / p.relative_to(corpus) for p in resumed}
        corpus = copy
    reference = str(tmp_path / "reference.db")
    imported(reference, "claude", [corpus], capsys, "--jobs", "1")
    assert spend(reference)[1] == truth

    monkeypatch.setattr(claude_files, "PARALLEL_BYTES", 0)
    monkeypatch.setattr(claude_files, "GROUP_BYTES", 200_000)  # many groups, finishing in any order
    copies = {os.path.realpath(p) for p in resumed}
    assert copies  # the generator resumed some sessions

    def reorder(tasks, size=None):
        tasks = sorted(tasks, key=lambda t: t.path)
        if order == "reversed":
            tasks.reverse()
        elif order == "resumed-first":
            tasks.sort(key=lambda t: t.path not in copies)
        return [[task] for task in tasks]

    monkeypatch.setattr(claude, "groups", reorder)
    summary = imported(ledger_target, "claude", [corpus], capsys, "--jobs", "2")
    assert spend(ledger_target)[1] == truth == summary["tokens_added"]
    assert ledger_rows(ledger_target) == ledger_rows(reference)
    assert run_totals(ledger_target) == rows_by_run(ledger_target) == rows_by_run(reference)
    again = imported(ledger_target, "claude", [corpus], capsys, "--jobs", "2")
    assert again["files_read"] == 0 and again["replies_added"] == 0
    state.default_path().unlink()  # read everything again: every request is known, nothing is added
    reread = imported(ledger_target, "claude", [corpus], capsys, "--jobs", "2")
    assert reread["replies_added"] == 0 and reread["replies_known"] == summary["replies_added"]
    assert ledger_rows(ledger_target) == ledger_rows(reference)


def test_a_settled_files_corrections_fold_into_their_requests_rows(capsys, tmp_path, monkeypatch, shaped):
    """Files nothing has written to for a while (no session capguard meters live) give one row per request, its
    corrections folded in: the same tokens as the generator's and as a row-per-line import, run by run, the cost
    within a micro-dollar per folded row; a third fewer rows on this streamed corpus; importing again adds nothing.
    A file written just now keeps its corrections (a live meter may be writing the same keys)."""
    from capguard.importers import claude

    corpus, truth, _ = shaped
    aged = tmp_path / "aged"
    shutil.copytree(corpus, aged)
    now = time.time()
    for path in aged.rglob("*.jsonl"):
        os.utime(path, (now - 3600, now - 3600))
    monkeypatch.setattr(claude, "PARALLEL_BYTES", 0)  # workers, and the deferred indexes, as a large import
    fresh, folded = str(tmp_path / "fresh.db"), str(tmp_path / "folded.db")
    imported(fresh, "claude", [corpus], capsys, "--jobs", "2")
    state.default_path().unlink()
    summary = imported(folded, "claude", [aged], capsys, "--jobs", "2")
    assert spend(folded)[1] == spend(fresh)[1] == truth == summary["tokens_added"]
    corrections = "SELECT COUNT(*) AS n FROM usage_events WHERE dedupe_key LIKE '%+%'"
    unfolded = rows(fresh, corrections)[0]["n"]
    assert unfolded > 0 and rows(folded, corrections)[0]["n"] < unfolded / 10  # cross-file replays only
    count = "SELECT COUNT(*) AS n FROM usage_events"
    assert rows(folded, count)[0]["n"] <= rows(fresh, count)[0]["n"] - 0.9 * unfolded
    per_run = (
        "SELECT run_id, SUM(input_tokens + output_tokens + cache_read_tokens + cache_write_tokens) AS t,"
        " SUM(cost_micro_usd) AS c, COUNT(*) AS n FROM usage_events GROUP BY run_id ORDER BY run_id"
    )
    before, after = rows(fresh, per_run), rows(folded, per_run)
    assert [(r["run_id"], r["t"]) for r in before] == [(r["run_id"], r["t"]) for r in after]
    for b, a in zip(before, after):
        assert abs(b["c"] - a["c"]) <= b["n"] - a["n"]  # each priced part rounded once less
    steps = "SELECT id, steps, tokens FROM runs ORDER BY id"
    assert rows(folded, steps) == rows(fresh, steps)
    again = imported(folded, "claude", [aged], capsys, "--jobs", "2")
    assert again["files_read"] == 0 and again["replies_added"] == 0
    state.default_path().unlink()  # everything read again: every request is known, nothing is added
    reread = imported(folded, "claude", [aged], capsys, "--jobs", "2")
    assert reread["replies_added"] == 0 and spend(folded)[1] == truth


def test_a_resumed_copy_imported_before_its_original_adds_only_what_the_original_adds(
    ledger_target, capsys, tmp_path, shaped
):
    """The copies first (one import), the originals later (another): the originals' streaming snapshots add
    nothing on top of the final lines already in the ledger, and the total is the generator's."""
    corpus, truth, resumed = shaped
    staged = tmp_path / "claude"
    shutil.copytree(corpus, staged)
    copies = {staged / p.relative_to(corpus) for p in resumed}
    held = [p for p in staged.rglob("*.jsonl") if p not in copies]
    aside = {p: p.with_suffix(".held") for p in held}
    for path, other in aside.items():
        path.rename(other)
    imported(ledger_target, "claude", [staged], capsys)
    for path, other in aside.items():
        other.rename(path)
    imported(ledger_target, "claude", [staged], capsys)
    assert spend(ledger_target)[1] == truth


def test_claude_import_twice_adds_nothing_even_without_the_state_file(ledger_target, capsys):
    first = imported(ledger_target, "claude", [CLAUDE], capsys)
    before = (spend(ledger_target), rows(ledger_target, "SELECT COUNT(*) AS n FROM runs")[0]["n"])
    again = imported(ledger_target, "claude", [CLAUDE], capsys)
    assert (again["files_read"], again["files_unchanged"], again["replies_added"]) == (0, first["files_read"], 0)
    state.default_path().unlink()
    reread = imported(ledger_target, "claude", [CLAUDE], capsys)
    assert (reread["files_read"], reread["replies_added"], reread["replies_known"]) == (
        first["files_read"],
        0,
        first["replies_added"],
    )
    assert (spend(ledger_target), rows(ledger_target, "SELECT COUNT(*) AS n FROM runs")[0]["n"]) == before


def test_appended_lines_and_only_those_are_added(ledger_target, capsys, tmp_path):
    source = CLAUDE / "interactive" / "transcript"
    projects = tmp_path / "claude" / "projects" / "-home-dev-fx-fxL"
    shutil.copytree(source, projects)
    main = next(projects.glob("*.jsonl"))
    full = main.read_bytes()
    lines = full.splitlines(keepends=True)
    half = sum(len(line) for line in lines[: len(lines) // 2])
    main.write_bytes(full[:half] + full[half : half + 40])  # half the lines, then a line being written
    first = imported(ledger_target, "claude", [tmp_path / "claude"], capsys)
    assert first["replies_added"] > 0
    with open(main, "ab") as handle:
        handle.write(full[half + 40 :])
    second = imported(ledger_target, "claude", [tmp_path / "claude"], capsys)
    assert second["files_read"] == 1 and second["files_unchanged"] == 1  # the subagent's file did not change
    assert second["bytes_read"] == len(full) - half  # read on from the end of the last complete line
    meter = parsed_claude(transcripts(source))
    assert first["replies_added"] + second["replies_added"] == sum(m.replies for m in meter.by_model.values())
    assert second["replies_known"] == 0
    assert spend(ledger_target) == (meter.replies_micro, meter.tokens)


def test_replies_a_supervised_run_metered_are_not_imported_again(ledger_target, capsys):
    path = CLAUDE / "transcripts" / "B_multi_turn_tool_use.jsonl"
    meter = parsed_claude([path])
    parser, pricer = TranscriptParser(session_id="s"), Pricer()
    first = next(e for line in path.read_bytes().splitlines() for e in parser.feed(line, 0) if isinstance(e, Reply))
    with open_ledger(ledger_target) as ledger:
        ledger.start_run(
            RunStart(
                run_id="live1",
                agent="claude",
                argv=["claude"],
                cwd="/w",
                user="dev@example.com",
                host="h",
                started_utc="2026-11-23T06:05:00Z",
                caps={"usd": 5},
            )
        )
        ledger.record_usage(
            "live1",
            UsageRecord(
                dedupe_key=first.key,
                occurred_utc="2026-11-23T06:05:53Z",
                model=first.model,
                input_tokens=first.input_tokens,
                output_tokens=first.output_tokens,
                cache_read_tokens=first.cache_read_tokens,
                cache_write_tokens=first.cache_write_tokens,
                cost_micro_usd=pricer.price(first).cost_micro,
                priced_by="genai-prices",
                source_file="claude:s",
            ),
        )
        ledger.finish_run(
            "live1",
            RunEnd(
                ended_utc="2026-11-23T06:06:00Z",
                stop_reason="usd",
                exit_code=122,
                cost_micro_usd=1,
                tokens=1,
                steps=1,
                malformed_lines=0,
                report={},
            ),
        )
    summary = imported(ledger_target, "claude", [path], capsys)
    assert (
        summary["replies_known"] == 1
        and summary["replies_added"] == sum(m.replies for m in meter.by_model.values()) - 1
    )
    assert spend(ledger_target) == (meter.replies_micro, meter.tokens)


def test_unreadable_and_malformed_lines_are_skipped_and_counted(ledger_target, capsys, tmp_path):
    folder = tmp_path / "projects" / "p"
    folder.mkdir(parents=True)
    good = (CLAUDE / "transcripts" / "A_single_turn.jsonl").read_bytes()
    broken = good.replace(b'"usage":{"input_tokens":11', b'"usage":{"input_tokens":"eleven"', 1)
    (folder / "11111111-0000-4000-8000-000000000001.jsonl").write_bytes(broken + b'{"usage": not json\n')
    summary = imported(ledger_target, "claude", [tmp_path], capsys)
    assert summary["malformed_lines"] == 2 and summary["replies_added"] == 0
    assert rows(ledger_target, "SELECT malformed_lines FROM runs")[0]["malformed_lines"] == 2


# -- aider -----------------------------------------------------------------------------------------------------


def analytics_totals(paths: list[Path]) -> tuple[int, int, int]:
    cost = tokens = replies = 0
    for path in paths:
        parser = AnalyticsParser("t", str(path))
        for offset, line in enumerate(path.read_bytes().splitlines()):
            for event in parser.feed(line, offset):
                if isinstance(event, Reply):
                    cost += event.reported_cost_micro or 0
                    tokens += event.tokens
                    replies += 1
    return cost, tokens, replies


def test_aider_analytics_logs_are_imported_exactly(ledger_target, capsys):
    logs = sorted(AIDER.glob("analytics.*.jsonl"))
    summary = imported(ledger_target, "aider", logs, capsys)
    cost, tokens, replies = analytics_totals(logs)
    assert summary["replies_added"] == replies and spend(ledger_target) == (cost, tokens)
    assert summary["sessions"] == len(logs) and summary.get("rounded_replies") == 0
    unpriced = rows(
        ledger_target, "SELECT model, priced_by, input_tokens FROM usage_events WHERE cost_micro_usd IS NULL"
    )
    assert unpriced == [{"model": None, "priced_by": None, "input_tokens": 50_000}]  # aider redacted it: tokens only


def test_aider_chat_history_cost_lines_are_imported_as_aider_rounded_them(ledger_target, capsys):
    history = AIDER / "chat.history.md"
    summary = imported(ledger_target, "aider", [history], capsys)
    lines = parse_cost_lines(history.read_text())
    priced = sum(to_micro(line.message_usd) for line in lines if line.message_usd is not None)
    assert summary["rounded_replies"] == len(lines) == summary["replies_added"]
    cost, tokens = spend(ledger_target)
    assert tokens == sum(line.sent + line.received for line in lines)
    assert cost == priced  # the line without a price is a model nobody can price
    details = rows(ledger_target, "SELECT DISTINCT details FROM usage_events")
    assert details == [{"details": '{"rounded": true}'}]
    assert summary["sessions"] == history.read_text().count("# aider chat started at")


def test_a_history_session_an_analytics_log_covers_is_not_counted_twice(ledger_target, capsys, tmp_path):
    folder = tmp_path / "repo"
    shutil.copytree(AIDER / "lab" / "openai_stream_multiturn", folder)
    summary = imported(ledger_target, "aider", [folder], capsys)
    cost, tokens, replies = analytics_totals([folder / ".aider.analytics.jsonl"])
    assert summary["sessions_covered"] == 1 and summary["replies_added"] == replies
    assert spend(ledger_target) == (cost, tokens)


def test_an_analytics_log_replaces_the_rounded_history_imported_before(ledger_target, capsys, tmp_path):
    folder = tmp_path / "repo"
    shutil.copytree(AIDER / "lab" / "openai_stream_multiturn", folder)
    first = imported(ledger_target, "aider", [folder / ".aider.chat.history.md"], capsys)
    assert first["rounded_replies"] == 3
    second = imported(ledger_target, "aider", [folder / ".aider.analytics.jsonl"], capsys)
    assert second["sessions_replaced"] == 1
    cost, tokens, _ = analytics_totals([folder / ".aider.analytics.jsonl"])
    assert spend(ledger_target) == (cost, tokens)
    assert [r["id"][:7] for r in rows(ledger_target, "SELECT id FROM runs")] == ["aider-a"]


def test_a_supervised_aider_run_covers_its_history_session(ledger_target, capsys, tmp_path):
    folder = tmp_path / "repo"
    shutil.copytree(AIDER / "lab" / "anthropic_nostream_cache", folder)
    with open_ledger(ledger_target) as ledger:  # the session header says 2026-11-23 07:26:27 (TZ=UTC)
        ledger.start_run(
            RunStart(
                run_id="live",
                agent="aider",
                argv=["aider"],
                cwd=str(folder),
                user="dev@example.com",
                host="h",
                started_utc="2026-11-23T07:26:26Z",
                caps={},
                project=str(folder),
            )
        )
    summary = imported(ledger_target, "aider", [folder], capsys)
    assert (summary["sessions_covered"], summary["replies_added"]) == (1, 0)


def test_aider_history_grows_by_a_session_and_only_it_is_added(ledger_target, capsys, tmp_path):
    history = tmp_path / ".aider.chat.history.md"
    text = (AIDER / "chat.history.md").read_text()
    cut = text.index("# aider chat started at", 10)
    history.write_text(text[:cut])
    first = imported(ledger_target, "aider", [history], capsys)
    history.write_text(text)
    second = imported(ledger_target, "aider", [history], capsys)
    assert first["replies_added"] + second["replies_added"] == len(parse_cost_lines(text))
    assert second["replies_known"] == first["replies_added"]  # the last session is read again, its keys are stable
    assert imported(ledger_target, "aider", [history], capsys)["files_unchanged"] == 1


# -- report and suggest on the imported ledger -------------------------------------------------------------------


def supervised(target: str) -> None:
    """Ten supervised aider runs: two stopped by the USD cap, one by the wall cap."""
    with open_ledger(target) as ledger:
        for i in range(10):
            run_id = f"sup{i}"
            ledger.start_run(
                RunStart(
                    run_id=run_id,
                    agent="aider",
                    argv=["aider"],
                    cwd="/w",
                    user="dev@example.com",
                    host="h",
                    started_utc=f"2026-11-2{i % 3}T10:00:00Z",
                    caps={"usd": 1},
                    project="/w",
                )
            )
            ledger.record_usage(
                run_id,
                UsageRecord(
                    dedupe_key=f"aider:{run_id}:x@0",
                    occurred_utc=f"2026-11-2{i % 3}T10:01:00Z",
                    model="gpt-4o",
                    input_tokens=1000 * (i + 1),
                    output_tokens=100,
                    cache_read_tokens=0,
                    cache_write_tokens=0,
                    cost_micro_usd=100_000 * (i + 1),
                    priced_by="agent",
                ),
            )
            stop = "usd" if i in (8, 9) else "wall" if i == 7 else None
            ledger.finish_run(
                run_id,
                RunEnd(
                    ended_utc=f"2026-11-2{i % 3}T10:{10 + i:02d}:00Z",
                    stop_reason=stop,
                    exit_code=0,
                    cost_micro_usd=0,
                    tokens=0,
                    steps=i + 1,
                    malformed_lines=0,
                    report={},
                ),
            )


def test_report_shapes_on_both_engines(ledger_target, capsys):
    imported(ledger_target, "claude", [CLAUDE], capsys)
    supervised(ledger_target)
    doc = run_json(command("report"), ["--by", "agent"], ledger_target, capsys)
    groups = {g["key"]: g for g in doc["groups"]}
    assert groups["aider"]["runs"] == 10 and groups["aider"]["stops"] == {"usd": 2, "wall": 1}
    assert groups["aider"]["stop_rate"] == pytest.approx(0.3) and groups["aider"]["stop_rates"]["usd"] == 0.2
    assert groups["aider"]["cost_usd"] == pytest.approx(5.5)
    assert groups["aider"]["cost_usd_per_run"] == {"p50": 0.5, "p90": 0.9, "p99": 1.0}
    assert groups["claude"]["supervised_runs"] == 0 and groups["claude"]["stop_rate"] is None
    assert doc["total"]["runs"] == 10 + groups["claude"]["runs"] and doc["top_runs"][0]["run_id"] == "sup9"
    days = run_json(
        command("report"), ["--by", "day", "--since", "2026-11-21", "--until", "2026-11-21"], ledger_target, capsys
    )
    assert [g["key"] for g in days["groups"]] == ["2026-11-21"] and days["total"]["runs"] == 3
    for by in ("user", "month", "model", "line", "project", "run"):
        assert command("report")(["--by", by], {"ledger": ledger_target}) == 0
        text = capsys.readouterr().out
        assert max(map(len, text.splitlines())) <= 80, text
    assert command("report")(["--by", "model", "--csv"], {"ledger": ledger_target}) == 0
    table = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert {"gpt-4o", "claude-opus-5-5", "(all)"} <= {row["model"] for row in table}


def test_suggest_from_the_imported_and_supervised_runs(ledger_target, capsys):
    imported(ledger_target, "claude", [CLAUDE], capsys)
    supervised(ledger_target)
    doc = run_json(command("suggest"), ["--min-runs", "5", "--headroom", "50%"], ledger_target, capsys)
    by_agent = {s["agent"]: s for s in doc["suggestions"]}
    aider = by_agent["aider"]
    assert aider["runs"] == 10 and aider["p90"]["usd"] == pytest.approx(0.9) and aider["caps"]["usd"] == 1.4
    assert aider["caps"]["steps"] == 14 and aider["wall_runs"] == 10 and "wall" in aider["caps"]
    assert by_agent["claude"]["caps"]["task_budget"] == 20_000 and "wall" not in by_agent["claude"]["caps"]
    assert command("suggest")(["--per", "project"], {"ledger": ledger_target}) == 0
    assert "# /w/.capguard.toml" in capsys.readouterr().out


def test_worker_processes_import_what_one_process_imports(ledger_target, capsys, tmp_path, monkeypatch):
    """Large imports read files in worker processes (SQLite: the rows come back to one writer; PostgreSQL: each
    worker writes its own)."""
    from capguard.importers import claude_files

    single = imported(str(tmp_path / "single.db"), "claude", [CLAUDE], capsys, "--jobs", "1")
    monkeypatch.setattr(claude_files, "PARALLEL_BYTES", 0)
    monkeypatch.setattr(claude_files, "GROUP_BYTES", 100_000)  # a dozen groups for two workers
    pools = []

    class Pool(concurrent.futures.ProcessPoolExecutor):
        def __init__(self, *args, **kw):
            pools.append(args[0])
            super().__init__(*args, **kw)

    monkeypatch.setattr(concurrent.futures, "ProcessPoolExecutor", Pool)  # run_groups imports it when it runs
    parallel = imported(ledger_target, "claude", [CLAUDE], capsys, "--jobs", "2")
    assert pools == [2]
    keys = (
        "files_read",
        "sessions",
        "runs_created",
        "replies_added",
        "replies_known",
        "cost_added_usd",
        "tokens_added",
    )
    assert {k: parallel[k] for k in keys} == {k: single[k] for k in keys}
    assert spend(ledger_target) == spend(str(tmp_path / "single.db"))
    runs = "SELECT id, started_utc, ended_utc, cost_micro_usd, tokens, steps, cwd, project FROM runs ORDER BY id"
    assert rows(ledger_target, runs) == rows(str(tmp_path / "single.db"), runs)
    again = imported(ledger_target, "claude", [CLAUDE], capsys, "--jobs", "2")
    assert again["files_unchanged"] == parallel["files_read"]


def usage_indexes(target: str) -> set[str]:
    """The usage table's own indexes as the file has them (read with sqlite3: opening the ledger builds any missing)."""
    import sqlite3

    with contextlib.closing(sqlite3.connect(target)) as db:
        found = db.execute("SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'usage_events'")
        return {name for (name,) in found if not name.startswith("sqlite_autoindex")}


def test_a_large_first_import_builds_the_usage_indexes_once_at_its_end(capsys, tmp_path, monkeypatch, shaped):
    """An import adding more rows than the ledger holds drops the usage table's secondary indexes and builds them
    at its end: the same rows, totals and reports as an import that kept them, and the indexes are there after."""
    from capguard.importers import claude
    from capguard.ledger import bulk

    corpus, truth, _ = shaped
    reference = str(tmp_path / "reference.db")
    imported(reference, "claude", [corpus], capsys, "--jobs", "1")
    state.default_path().unlink()
    dropped: list[bool] = []
    real = bulk.ImportWriter.defer_indexes

    def watched(self, new_rows):
        dropped.append(real(self, new_rows))
        if dropped[-1]:  # the import writes without them from here
            assert usage_indexes(target) == set()
        return dropped[-1]

    monkeypatch.setattr(bulk.ImportWriter, "defer_indexes", watched)
    monkeypatch.setattr(claude, "PARALLEL_BYTES", 0)
    target = str(tmp_path / "ledger.db")
    summary = imported(target, "claude", [corpus], capsys, "--jobs", "2")
    assert dropped == [True]
    assert usage_indexes(target) == usage_indexes(reference) == {"usage_events_run", "usage_events_occurred"}
    assert spend(target)[1] == truth == summary["tokens_added"]
    assert ledger_rows(target) == ledger_rows(reference)
    by_run = "SELECT run_id, SUM(cost_micro_usd) AS c FROM usage_events GROUP BY run_id ORDER BY run_id"
    assert rows(target, by_run) == rows(reference, by_run)
    state.default_path().unlink()  # everything read again into a ledger that holds it: the indexes stay
    again = imported(target, "claude", [corpus], capsys, "--jobs", "2")
    assert dropped == [True, False] and again["replies_added"] == 0
    assert usage_indexes(target) == {"usage_events_run", "usage_events_occurred"}


def test_an_import_that_fails_leaves_the_usage_indexes_built(capsys, tmp_path, monkeypatch, shaped):
    """A write that fails mid-import (a full disk, say): the indexes dropped for it are built again, by the import
    on its way out or, if it died outright, by the ledger's next open."""
    from capguard.importers import claude
    from capguard.ledger import bulk

    corpus, _, _ = shaped
    monkeypatch.setattr(claude, "PARALLEL_BYTES", 0)

    def failing(self, *args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(bulk.ImportWriter, "write_rows", failing)
    target = str(tmp_path / "ledger.db")
    with pytest.raises(OSError):
        command("import")(["claude", str(corpus), "--jobs", "1"], {"ledger": target})
    assert usage_indexes(target) == {"usage_events_run", "usage_events_occurred"}
    with open_ledger(target) as ledger, ledger.backend.write() as db:  # as if the import had been killed between
        db.execute("DROP INDEX usage_events_run")
        db.execute("DROP INDEX usage_events_occurred")
    assert usage_indexes(target) == set()
    open_ledger(target).close()
    assert usage_indexes(target) == {"usage_events_run", "usage_events_occurred"}  # the open built them


def test_an_import_keeps_its_rates_for_the_next(tmp_path):
    import json

    from capguard.importers import unit_prices
    from capguard.paths import cache_home

    assert cache_home() == tmp_path / "xdg-cache" / "capguard"  # the suite's own, never the user's
    doc = {"type": "assistant", "requestId": "req_1", "sessionId": "s1", "timestamp": "2026-12-01T10:00:00.000Z",
           "message": {"id": "msg_1", "model": "claude-sonnet-4-5", "content": [],
                       "usage": {"input_tokens": 10, "output_tokens": 20}}}  # fmt: skip
    folder = tmp_path / "projects" / "p"
    folder.mkdir(parents=True)
    (folder / "s1.jsonl").write_text(json.dumps(doc) + "\n")
    import subprocess
    import sys

    argv = [sys.executable, "-m", "capguard", "--ledger", str(tmp_path / "l.db"), "import", "claude", str(tmp_path)]
    subprocess.run([*argv, "--user", "u@example.invalid"], check=True, capture_output=True, timeout=60)
    assert ("claude-sonnet-4-5", None, None) in unit_prices.load_rates()
