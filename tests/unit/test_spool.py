"""The run's spool: fsynced lines read back, a torn last line skipped, 0600, and the open-runs list."""

from __future__ import annotations

import os
import stat

from capguard.ledger import RunEnd, RunStart, UsageRecord, spool
from capguard.ledger.records import MAX_STORED, storable

START = RunStart("run1", "aider", ["aider"], "/w", "dev", "host", "2026-01-01T00:00:00Z", {})


def usage(n: int, cost: int = 1000) -> UsageRecord:
    return UsageRecord(f"k{n}", "2026-01-01T00:00:01Z", "m", 10**19 if n == 99 else 10, 1, 0, 0, cost, "config")


def test_spool_round_trip_with_a_torn_last_line(tmp_path):
    run_dir = tmp_path / "run1"
    run_dir.mkdir()
    old = os.umask(0)
    try:
        sp = spool.Spool.create(run_dir, START, ledger="/l.db", pid=42, pid_created=1.5, host="host")
    finally:
        os.umask(old)
    sp.append_usage([usage(1), usage(2)])
    sp.append_usage([usage(99)])
    sp.append_end(RunEnd("2026-01-01T00:01:00Z", "usd", 122, 3000, 30, 3, 0, {"x": 1}))
    sp.close()
    assert stat.S_IMODE(sp.path.stat().st_mode) == 0o600
    assert sp.records == 3 and sp.cost_micro == 3000
    assert spool.open_run_ids() == ["run1"]
    with open(sp.path, "ab") as handle:
        handle.write(b'{"type": "usage", "usage": {"dedupe_')  # a write cut short by a crash
    run = spool.read(sp.path)
    assert run.start == START and (run.pid, run.pid_created, run.host, run.ledger) == (42, 1.5, "host", "/l.db")
    assert [r.dedupe_key for r in run.usage] == ["k1", "k2", "k99"] and run.usage[2].input_tokens == 10**19
    assert run.end.exit_code == 122 and run.torn_lines == 1
    sp.settled()
    assert spool.open_run_ids() == []


def test_storable_clamps_only_what_does_not_fit_and_names_it():
    kept, clamped = storable({"a": 10**19, "b": 5, "c": None})
    assert kept == {"a": MAX_STORED, "b": 5, "c": None} and clamped == {"a": str(10**19)}
    assert storable({"steps": 2**40}, bound=2**31 - 1)[0] == {"steps": 2**31 - 1}
