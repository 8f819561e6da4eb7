"""The ledger thread: commits in order, a month read only after the commits handed in before it, errors kept."""

from __future__ import annotations

import queue
import threading

from capguard.ledger.writer_thread import LedgerThread


def test_commits_in_order_and_reads_the_month_after_them():
    committed, gate, reads = [], threading.Event(), queue.Queue()

    def commit(item):
        gate.wait(10)  # a slow database: everything below queues up meanwhile
        committed.append(item)

    thread = LedgerThread(commit, allowance=lambda: list(committed), deliver=reads.put)
    thread.start()
    thread.record([1, 2])
    thread.read_month()
    thread.record([3])
    thread.read_month()
    gate.set()
    first = reads.get(timeout=10)
    thread.read_month()
    later = reads.get(timeout=10)
    thread.close()
    assert committed == [1, 2, 3]
    assert first in ([1, 2], [1, 2, 3]) and later == [1, 2, 3]  # a read sees every commit handed in before it
    assert reads.empty() or reads.get() == [1, 2, 3]


def test_a_failed_read_is_delivered_as_none_and_the_thread_goes_on():
    answers, delivered, committed = iter([RuntimeError("server gone"), 7]), queue.Queue(), []

    def allowance():
        value = next(answers)
        if isinstance(value, Exception):
            raise value
        return value

    thread = LedgerThread(committed.append, allowance=allowance, deliver=delivered.put)
    thread.start()
    thread.read_month()
    assert delivered.get(timeout=10) is None
    thread.record(["a"])
    thread.read_month()
    assert delivered.get(timeout=10) == 7
    thread.close()
    assert committed == ["a"]


def test_close_commits_everything_and_reads_nothing_more():
    committed, delivered = [], []
    thread = LedgerThread(committed.append, allowance=lambda: 1, deliver=delivered.append)
    thread.record(["x", "y"])
    thread.read_month()
    thread.close()  # never started: the caller commits; a read asked with the close is moot, the run is over
    assert committed == ["x", "y"] and delivered == []
    quiet = LedgerThread(committed.append, deliver=delivered.append)
    quiet.start()
    quiet.read_month()  # no allowance hook: nothing to read
    quiet.record(["z"])
    quiet.close()
    assert committed == ["x", "y", "z"] and delivered == []


class FakeClock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def test_a_failed_commit_is_retried_in_order_and_nothing_is_lost():
    down, committed, tries = threading.Event(), [], []
    down.set()

    def commit(item):
        tries.append(item)
        if down.is_set():
            raise RuntimeError("server gone")
        committed.append(item)

    thread = LedgerThread(commit)
    thread.start()
    thread.record([1, 2])
    deadline = threading.Event()
    while len(tries) < 3 and not deadline.wait(0.01):  # retried with backoff, always the first in line
        pass
    thread.record([3])
    assert set(tries) == {1}
    down.clear()
    thread.close()
    assert committed == [1, 2, 3] and thread.unsaved == []
    assert thread.failures >= 3 and thread.last_error == "server gone"


def test_what_never_reached_the_ledger_is_unsaved_after_close():
    def commit(item):
        raise RuntimeError("disk full")

    thread = LedgerThread(commit)
    thread.start()
    thread.record(["a", "b"])
    thread.close()
    assert thread.unsaved == ["a", "b"] and thread.last_error == "disk full"
