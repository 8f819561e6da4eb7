"""Which rollout files a Codex run is charged for: the ones its tree holds open; one held only outside the tree is
left out; one nobody holds is charged on doubt and named (real processes holding real files)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from capguard.agents.codex.logs import RolloutParser
from capguard.agents.codex.threads import Attribution, Owner, OwnThreads
from capguard.core.events import Reply

RECORD = {
    "timestamp": "2026-12-06T21:35:36.189Z",
    "type": "token_usage_record",
    "payload": {
        "thread_id": "t1",
        "response_id": "resp_1",
        "usage": {"input_tokens": 1000, "cached_input_tokens": 200, "output_tokens": 50},
    },
}


def _rollout(tmp_path: Path) -> Path:
    path = tmp_path / "rollout-2026-12-06T21-35-36-t1.jsonl"
    path.write_text("")
    return path


@pytest.fixture
def holder():
    procs = []

    def hold(path: Path, mode: str = "a") -> subprocess.Popen:
        code = f"import time; f = open({str(path)!r}, {mode!r}); print(1, flush=True); time.sleep(60)"
        proc = subprocess.Popen(
            [sys.executable, "-c", code],
            stdout=subprocess.PIPE,
        )  # fmt: skip
        assert proc.stdout is not None and proc.stdout.readline()  # the file is open
        procs.append(proc)
        return proc

    yield hold
    for proc in procs:
        proc.kill()
        proc.wait()


def _feed(path: Path, attribution: Attribution) -> list:
    parser = OwnThreads(path, RolloutParser(str(path)), attribution)
    return parser.feed(json.dumps(RECORD).encode(), 0)


def test_a_file_the_tree_holds_is_the_runs_and_stays_so(tmp_path, holder):
    path = _rollout(tmp_path)
    proc = holder(path)
    attribution = Attribution()  # this process is the root: the holder is in its tree
    events = _feed(path, attribution)
    assert [e.key for e in events if isinstance(e, Reply)] == ["codex:resp_1"]
    proc.kill()
    proc.wait()
    assert attribution.whose(str(path.resolve())) is Owner.OWN  # its writer gone, still the run's
    assert attribution.notes() == []


def test_a_file_held_only_outside_the_tree_is_left_out_and_counted_in_the_notes(tmp_path, holder):
    path = _rollout(tmp_path)
    holder(path)
    outsider = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        attribution = Attribution(root=outsider.pid)  # a tree that holds nothing: the holder is outside it
        assert _feed(path, attribution) == []
        assert attribution.dropped_replies == 1 and attribution.dropped_tokens == 1050
        assert "1 replies (1050 tokens) written by another Codex session" in attribution.notes()[0]
    finally:
        outsider.kill()
        outsider.wait()


def test_a_file_nobody_holds_is_charged_and_named(tmp_path):
    path = _rollout(tmp_path)
    attribution = Attribution()
    events = _feed(path, attribution)
    assert len([e for e in events if isinstance(e, Reply)]) == 1  # fail safe: counted
    assert attribution.doubtful == {str(path.resolve())}
    assert "no process held them open" in attribution.notes()[0]


def test_a_file_an_outsider_only_reads_is_charged_on_doubt(tmp_path, holder):
    """`tail -f`, an editor or another capguard's tailer reading the run's file after its writer exited: no sign
    of another session, so the replies count (and the report says it could not tell)."""
    path = _rollout(tmp_path)
    holder(path, "r")
    outsider = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        attribution = Attribution(root=outsider.pid)
        assert len(_feed(path, attribution)) == 1
        assert attribution.dropped_replies == 0 and attribution.doubtful == {str(path.resolve())}
    finally:
        outsider.kill()
        outsider.wait()
