"""The file watcher: writes wake the loop, our own reads never do (that feedback loop once burned a core)."""

from __future__ import annotations

import queue

import pytest

from capguard.metering.watch import Watcher


def drain(sink: queue.Queue, seconds: float) -> list:
    items = []
    try:
        while True:
            items.append(sink.get(timeout=seconds))
    except queue.Empty:
        return items


@pytest.mark.parametrize("poll", [False, True], ids=["inotify", "poll"])
def test_appends_are_seen_and_reads_are_not(tmp_path, poll):
    log = tmp_path / "agent.jsonl"
    log.write_text("")
    sink: queue.Queue = queue.Queue()
    watcher = Watcher([(log, False)], lambda path: path == log, sink, poll=poll)
    watcher.start()
    try:
        drain(sink, 0.6)
        with open(log, "a") as handle:
            handle.write('{"event": "message_send"}\n')
        assert ("file", log) in drain(sink, 1.0)
        for _ in range(20):
            log.read_bytes()
        assert drain(sink, 0.8) == []
    finally:
        watcher.stop()


def test_a_file_created_later_in_a_watched_tree_is_seen(tmp_path):
    tree = tmp_path / "projects"
    tree.mkdir()
    target = tree / "session" / "subagents" / "agent-1.jsonl"
    sink: queue.Queue = queue.Queue()
    watcher = Watcher([(tree, True)], lambda path: path.suffix == ".jsonl", sink)
    watcher.start()
    try:
        target.parent.mkdir(parents=True)
        target.write_text("{}\n")
        assert ("file", target) in drain(sink, 1.0)
    finally:
        watcher.stop()
