"""`capguard import opencode`: OpenCode's store (the rows recorded from the real OpenCode, in SQLite with its schema)
into the ledger, to the token and the micro-dollar; again adds nothing; a grown or new message is read on."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from capguard.ledger import open_ledger
from tests.unit.test_opencode_logs import _assistant, billed, insert, make_store


def import_opencode(*args: str, env: dict | None = None) -> dict:
    proc = subprocess.run(
        [sys.executable, "-m", "capguard", "import", "--json", "opencode", *args],
        capture_output=True,
        text=True,
        env=env or dict(os.environ),
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def test_import_counts_each_step_once_and_again_adds_nothing(tmp_path):
    store = tmp_path / "data" / "opencode" / "opencode.db"
    store.parent.mkdir(parents=True)
    agent = make_store(store, "shell", "sigterm_tool")  # kept open: the store stays in WAL, as OpenCode leaves it
    main = [b for b in billed("shell") if b["kind"] == "main"]

    first = import_opencode(str(store))
    assert first["replies_added"] == 2 and first["runs_created"] == 1 and not first["errors"]
    assert first["tokens_added"] == sum(b["usage"]["total_tokens"] for b in main)  # the title call is in no row
    assert round(first["cost_added_usd"] * 1e6) == 15364 + 3934  # OpenCode's own price of each step

    with open_ledger(Path(os.environ["CAPGUARD_HOME"]) / "ledger.db") as ledger:
        run = ledger.run("opencode-ses_db2b853beffeoVJXXu1AQ65BMd")
        rows = ledger.usage(run["id"])
    assert run["agent"] == "opencode" and run["steps"] == 2 and run["status"] == "imported"
    assert sorted((r["input_tokens"], r["cache_read_tokens"], r["output_tokens"]) for r in rows) == sorted(
        (b["usage"]["prompt_tokens"] - b["usage"]["prompt_tokens_details"]["cached_tokens"],
         b["usage"]["prompt_tokens_details"]["cached_tokens"], b["usage"]["completion_tokens"]) for b in main
    )  # fmt: skip

    again = import_opencode(str(store))  # by folder, as the data dir: the same store
    assert again["replies_added"] == 0 and again["runs_created"] == 0 and again["files_unchanged"] == 1

    # a message that grew since (counted as growth, a correction key) and a new step in the same session
    sid = "ses_db2b853beffeoVJXXu1AQ65BMd"
    grown = _assistant("msg_24d47b595001WRWxAEorO3BzCY", sid, created=1796592874901, input=67 + 10, output=3,
                       cache_read=7552, cost=0.004)  # fmt: skip
    grown["time_updated"] = 1796592999000
    new = _assistant("msg_zz_new", sid, created=1796592999000, input=500, output=20, cost=0.00116)
    insert(agent, "message", grown)
    insert(agent, "message", new)
    third = import_opencode(str(store.parent))
    assert third["replies_added"] == 2 and third["tokens_added"] == 10 + 520 and third["runs_created"] == 0
    with open_ledger(Path(os.environ["CAPGUARD_HOME"]) / "ledger.db") as ledger:
        keys = sorted(r["dedupe_key"] for r in ledger.usage("opencode-" + sid))
        run = ledger.run("opencode-" + sid)
    assert "opencode:msg_24d47b595001WRWxAEorO3BzCY+2" in keys and "opencode:msg_zz_new" in keys
    assert run["steps"] == 3  # the growth is a correction, not a step
    agent.close()


def test_a_missing_store_is_one_warning(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "capguard", "import", "opencode", str(tmp_path / "nowhere")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0 and "Traceback" not in proc.stderr
    assert proc.stderr.count("capguard: warning: cannot read") == 1 and "no OpenCode store" in proc.stderr
