"""OpenCode's store as events (agents/opencode/logs.py) and the reader of a live store (metering/sqlite_rows.py,
agents/opencode/store.py), on the rows recorded from the real OpenCode 1.18.33 against tests/fakes/fake_chat.py
(tests/fixtures/opencode/), loaded into SQLite databases with OpenCode's own schema."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from capguard.agents.opencode.logs import Scope, StoreParser, model_name, reply_key, row_line
from capguard.agents.opencode.store import all_rows, db_path, last_message_rowid, live_rows
from capguard.core.errors import ConfigError
from capguard.core.events import Malformed, Reply
from capguard.core.pricing import Pricer
from capguard.core.sanitize import MAX_TOKENS
from capguard.metering import sqlite_rows
from capguard.metering.sqlite_rows import SqliteRows
from capguard.metering.tail import Tailer, WatchSpec

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "opencode"
HOME = "~/proj"  # the recorded sessions' directory (scratch paths were rewritten)


def rows(name: str) -> list[dict]:
    return [json.loads(line) for line in (FIXTURES / name / "rows.jsonl").read_text().splitlines()]


def billed(name: str) -> list[dict]:
    return [json.loads(line) for line in (FIXTURES / name / "billed.jsonl").read_text().splitlines()]


def feed(parser: StoreParser, entries: list[dict]) -> list:
    events = []
    for n, entry in enumerate(entries):
        if entry["table"] in ("session", "message"):
            events += parser.feed(row_line(entry["table"], entry["row"]), n)
    return events


def whole_store() -> StoreParser:
    return StoreParser(Scope(), "opencode.db")


def test_each_recorded_step_is_one_reply_with_the_fakes_usage_minus_the_title_call():
    events = feed(whole_store(), rows("shell"))
    replies = [e for e in events if isinstance(e, Reply)]
    main = [b for b in billed("shell") if b["kind"] == "main"]
    assert len(replies) == len(main) == 2
    for reply, bill in zip(replies, main, strict=True):
        usage = bill["usage"]
        cached = usage["prompt_tokens_details"]["cached_tokens"]
        assert reply.input_tokens == usage["prompt_tokens"] - cached
        assert reply.cache_read_tokens == cached
        assert reply.output_tokens == usage["completion_tokens"]  # reasoning included, billed at the output rate
        assert reply.details["reasoning_tokens"] == usage["completion_tokens_details"]["reasoning_tokens"]
        assert reply.tokens == usage["total_tokens"]
        assert reply.model == "fake-model" and reply.step
    assert replies[0].details["reasoning_tokens"] > 0 and replies[1].cache_read_tokens > 0
    # OpenCode's own price of each step, to the micro-dollar
    assert [r.reported_cost_micro for r in replies] == [15364, 3934]
    assert [r.key for r in replies] == [
        reply_key("msg_24d47aed3001KLTdS2oh8BZjo6"),
        reply_key("msg_24d47b595001WRWxAEorO3BzCY"),
    ]
    # the title call (billed first) is in no row: the report names it as a blind spot
    title = [b for b in billed("shell") if b["kind"] == "title"]
    assert len(title) == 1 and sum(r.tokens for r in replies) + title[0]["usage"]["total_tokens"] == sum(
        b["usage"]["total_tokens"] for b in billed("shell")
    )


@pytest.mark.parametrize("name", ["sigterm_stream", "sigterm_tool", "sigint_stream"])
def test_a_step_killed_in_flight_stays_at_zero_and_gives_no_reply(name):
    assert [e for e in feed(whole_store(), rows(name)) if isinstance(e, Reply)] == []
    assert any(b["usage"]["prompt_tokens"] > 0 for b in billed(name))  # yet the fake billed it: a blind spot


def _assistant(mid="msg_1", sid="ses_1", created=2000, **tokens) -> dict:
    t = {"input": 0, "output": 0, "reasoning": 0, "cache": {"read": 0, "write": 0}}
    t.update({k: v for k, v in tokens.items() if k in ("input", "output", "reasoning")})
    t["cache"].update({k[6:]: v for k, v in tokens.items() if k.startswith("cache_")})
    data = {
        "role": "assistant",
        "modelID": "gpt-4o",
        "providerID": "openai",
        "tokens": t,
        "cost": tokens.get("cost", 0),
    }
    return {"id": mid, "session_id": sid, "time_created": created, "time_updated": created, "data": json.dumps(data)}


def _session(sid="ses_1", directory="/repo", created=1500, parent=None) -> dict:
    return {"id": sid, "parent_id": parent, "directory": directory, "time_created": created, "time_updated": created}


def test_a_row_rewritten_in_place_counts_once_and_growth_counts_as_growth():
    parser = StoreParser(Scope(started_ms=1000, directories=frozenset({"/repo"})), "db")
    events = parser.feed(row_line("session", _session()), 0)
    events += parser.feed(row_line("message", _assistant()), 1)  # created at step start: zeros
    assert events == []
    (first,) = parser.feed(row_line("message", _assistant(input=100, output=10, cost=0.5)), 2)
    assert (first.key, first.input_tokens, first.output_tokens, first.reported_cost_micro) == (
        "opencode:msg_1",
        100,
        10,
        500000,
    )
    assert parser.feed(row_line("message", _assistant(input=100, output=10, cost=0.5)), 3) == []  # seen again
    (grown,) = parser.feed(row_line("message", _assistant(input=150, output=10, reasoning=5, cost=0.75)), 4)
    assert (grown.key, grown.input_tokens, grown.output_tokens, grown.reported_cost_micro) == (
        "opencode:msg_1+2",
        50,
        5,
        250000,
    )
    assert not grown.step  # one model call is one step, however often its row grows
    assert parser.feed(row_line("message", _assistant(input=90, output=10, cost=0.4)), 5) == []  # shrank: nothing


def test_a_zero_cost_is_unpriced_not_free():
    parser = StoreParser(Scope(), "db")
    (reply,) = parser.feed(row_line("message", _assistant(input=1000, output=100, cost=0)), 0)
    assert reply.reported_cost_micro is None
    assert reply.model == "openai/gpt-4o"
    assert Pricer().price(reply).priced_by == "genai-prices"  # capguard prices what OpenCode did not
    custom = dict(_assistant(input=1000, output=100))
    custom["data"] = json.dumps({**json.loads(custom["data"]), "providerID": "fake", "modelID": "fake-model"})
    (unknown,) = StoreParser(Scope(), "db").feed(row_line("message", custom), 0)
    assert unknown.model == "fake-model" and Pricer().price(unknown).cost_micro is None  # unpriced: a cap decides


def test_model_names_keep_a_known_provider_only():
    assert model_name("anthropic", "claude-sonnet-4-5") == "anthropic/claude-sonnet-4-5"
    assert model_name("my-proxy", "gpt-4o") == "gpt-4o"
    assert model_name("openai", None) is None


def test_only_this_runs_sessions_count():
    parser = StoreParser(Scope(started_ms=1000, directories=frozenset({"/repo"}), named=frozenset({"ses_named"})), "db")
    lines = [
        row_line("session", _session("ses_new", created=1200)),  # created in our directory during the run
        row_line("session", _session("ses_old", created=500)),  # created before: ours once it gets a new message
        row_line("session", _session("ses_elsewhere", directory="/other", created=1200)),  # a neighbour elsewhere
        row_line("session", _session("ses_named", directory="/other", created=10)),  # --session ID
        row_line("message", _assistant("m1", "ses_new", input=1)),
        row_line("message", _assistant("m2", "ses_old", created=900, input=2)),  # before the start: history
        row_line("message", _assistant("m3", "ses_old", input=4)),
        row_line("message", _assistant("m4", "ses_elsewhere", input=8)),
        row_line("message", _assistant("m5", "ses_named", input=16)),
        # a subagent's session and message, its session row arriving after the message
        row_line("message", _assistant("m6", "ses_child", input=32)),
        row_line("session", _session("ses_child", directory="/repo", created=1300, parent="ses_new")),
    ]
    replies = [e for n, line in enumerate(lines) for e in parser.feed(line, n)]
    assert sorted(r.key.removeprefix("opencode:") for r in replies) == ["m1", "m3", "m5", "m6"]
    assert sum(r.input_tokens for r in replies) == 1 + 4 + 16 + 32
    assert [r.step for r in replies if r.key.endswith("m6")] == [False]  # a subagent's call is not a main step


def test_bad_rows_are_malformed_and_huge_figures_count_at_the_bound():
    parser = StoreParser(Scope(), "db")
    assert isinstance(parser.feed(b"{not json", 3)[0], Malformed)
    assert isinstance(parser.feed(row_line("message", _assistant("m", input=-5)), 4)[0], Malformed)
    assert isinstance(parser.feed(row_line("message", {**_assistant("x"), "data": "[1]"}), 5)[0], Malformed)
    (huge,) = parser.feed(row_line("message", _assistant("h", input=10**30, cost=1e300)), 6)
    assert huge.input_tokens == MAX_TOKENS and huge.suspicious
    assert parser.feed(row_line("part", {"id": "p"}), 7) == []


def test_opencode_db_is_found_and_memory_is_refused(tmp_path):
    assert db_path({"HOME": "/h"}, tmp_path) == Path("/h/.local/share/opencode/opencode.db")
    assert db_path({"XDG_DATA_HOME": "/x"}, tmp_path) == Path("/x/opencode/opencode.db")
    assert db_path({"OPENCODE_DB": "o.db"}, tmp_path) == tmp_path / "o.db"
    with pytest.raises(ConfigError, match="memory"):
        db_path({"OPENCODE_DB": ":memory:"}, tmp_path)


# -- the live store -------------------------------------------------------------------------------


def make_store(path: Path, *names: str) -> sqlite3.Connection:
    """A WAL store with OpenCode's schema holding the recorded rows of `names` (the agent's own connection)."""
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.executescript((FIXTURES / "schema.sql").read_text())
    for name in names:
        for entry in rows(name):
            insert(conn, entry["table"], entry["row"])
    return conn


def insert(conn: sqlite3.Connection, table: str, row: dict) -> None:
    if table not in ("session", "message"):
        return
    row = {k: json.dumps(v) if isinstance(v, (dict, list)) else v for k, v in row.items()}
    marks = ", ".join("?" * len(row))
    conn.execute(f"INSERT OR REPLACE INTO {table} ({', '.join(row)}) VALUES ({marks})", tuple(row.values()))


def test_the_live_reader_gives_each_changed_row_once_and_the_parser_counts_the_run(tmp_path):
    db = tmp_path / "opencode.db"
    agent = make_store(db, "sigterm_tool")  # an earlier session in the store
    baseline = last_message_rowid(db)
    assert baseline > 0
    cursor = SqliteRows(db, live_rows(baseline, since_ms=1796592870000))
    parser = StoreParser(Scope(started_ms=1796592870000, directories=frozenset({HOME})), str(db))
    before = cursor.read_new_lines()
    assert all(json.loads(line)["row"]["id"] != "x" for _, line in before)
    for entry in rows("shell"):  # this run's session, written while capguard reads
        insert(agent, entry["table"], entry["row"])
    lines = cursor.read_new_lines()
    replies = [e for n, line in before + lines for e in parser.feed(line, n) if isinstance(e, Reply)]
    assert sum(r.tokens for r in replies) == sum(
        b["usage"]["total_tokens"] for b in billed("shell") if b["kind"] == "main"
    )
    assert cursor.read_new_lines() == []  # nothing committed since: data_version unchanged, no query
    agent.execute("UPDATE session SET time_updated = time_updated + 1 WHERE id = 'ses_db2b853beffeoVJXXu1AQ65BMd'")
    (changed,) = cursor.read_new_lines()  # the one row that changed, handed out again
    assert json.loads(changed[1])["row"]["id"] == "ses_db2b853beffeoVJXXu1AQ65BMd"
    # a write committed after a later one (its time_updated a few seconds older than the newest seen) is still read
    late = _assistant("msg_late", "ses_db2b853beffeoVJXXu1AQ65BMd", created=1796592875000, input=7)
    (newest,) = agent.execute("SELECT max(time_updated) FROM (SELECT time_updated FROM message UNION ALL"
                              " SELECT time_updated FROM session)").fetchone()  # fmt: skip
    late["time_updated"] = newest - 5000
    insert(agent, "message", late)
    (row,) = cursor.read_new_lines()
    assert json.loads(row[1])["row"]["id"] == "msg_late"
    assert cursor.problem is None
    assert list((tmp_path).glob("*.db-journal")) == []
    cursor.close()
    agent.close()


def test_the_import_reader_sees_every_assistant_message(tmp_path):
    db = tmp_path / "opencode.db"
    make_store(db, "shell", "sigterm_tool").close()
    with sqlite3.connect(db) as conn:
        found = list(all_rows(conn))
    parser = whole_store()
    replies = [e for n, (t, r) in enumerate(found) for e in parser.feed(row_line(t, r), n) if isinstance(e, Reply)]
    assert len(replies) == 2
    assert {t for t, _ in found} == {"session", "message"}


def test_a_store_that_is_not_a_database_makes_the_meter_blind(tmp_path):
    db = tmp_path / "opencode.db"
    db.write_bytes(b"this is not a database" * 200)
    tailer = Tailer([WatchSpec(db, lambda p: StoreParser(Scope(), str(p)), rows=live_rows(0, 0))])
    assert tailer.read_all() == []
    assert "cannot read" in (tailer.problem() or "")
    assert tailer.wants(db.with_name("opencode.db-wal"))  # the WAL file wakes the reader of the store


def test_a_busy_store_is_blind_only_after_patience(tmp_path, monkeypatch):
    db = tmp_path / "opencode.db"
    make_store(db).close()
    now = [0.0]
    cursor = SqliteRows(
        db, lambda conn: (_ for _ in ()).throw(sqlite3.OperationalError("database is locked")), clock=lambda: now[0]
    )
    assert cursor.read_new_lines() == [] and cursor.problem is None
    now[0] = sqlite_rows.PATIENCE + 1
    cursor.read_new_lines()
    assert cursor.problem and "locked" in cursor.problem


def test_a_store_not_yet_in_wal_mode_is_not_opened_until_it_is_then_blind_after_patience(tmp_path):
    """OpenCode creates its store, then switches it to WAL: a reader's lock meanwhile failed its first start
    ("database is locked"). The reader waits for WAL mode (as for a locked store), and is blind past PATIENCE."""
    db = tmp_path / "opencode.db"
    db.write_bytes(b"")
    now = [0.0]
    cursor = SqliteRows(db, live_rows(0, 0), clock=lambda: now[0])
    assert cursor.read_new_lines() == [] and cursor.problem is None  # created, empty
    conn = sqlite3.connect(db)
    conn.execute("CREATE TABLE t (x)")  # a database, in rollback-journal mode
    conn.commit()
    assert sqlite_rows.still_setting_up(db)
    assert cursor.read_new_lines() == [] and cursor.problem is None and cursor._conn is None  # not opened
    conn.close()
    make_store(tmp_path / "wal.db").close()
    assert not sqlite_rows.still_setting_up(tmp_path / "wal.db")
    ready = SqliteRows(tmp_path / "wal.db", live_rows(0, 0), clock=lambda: now[0])
    ready.read_new_lines()
    assert ready._conn is not None and ready.problem is None
    now[0] = sqlite_rows.PATIENCE + 1  # never switched to WAL: fail closed, saying why
    cursor.read_new_lines()
    assert cursor.problem and "not in WAL mode" in cursor.problem
