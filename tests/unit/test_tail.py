"""tail.py: complete lines only, byte offsets, truncation and replacement, from-end, globbed files."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from capguard.metering import tail
from capguard.metering.tail import FileCursor, Tailer, WatchSpec


def append(path: Path, data: bytes) -> None:
    with open(path, "ab") as handle:
        handle.write(data)


def replace(path: Path, data: bytes) -> None:
    """Write a new file and rename it over `path`: a new inode, as editors and log rotation do."""
    fresh = path.with_name(path.name + ".new")
    fresh.write_bytes(data)
    os.replace(fresh, path)


class Recorder:
    """A parser that turns each line into (file name, offset, text)."""

    def __init__(self, path: Path):
        self.name = path.name

    def feed(self, line: bytes, offset: int) -> list:
        return [(self.name, offset, line.decode())]


# -- FileCursor --------------------------------------------------------------------------------------


def test_complete_lines_come_with_their_byte_offsets(tmp_path):
    log = tmp_path / "log"
    log.write_bytes(b"one\ntwo\n")
    assert FileCursor(log).read_new_lines() == [(0, b"one"), (4, b"two")]


def test_only_new_lines_are_returned_on_the_next_read(tmp_path):
    log = tmp_path / "log"
    log.write_bytes(b"one\n")
    cursor = FileCursor(log)
    cursor.read_new_lines()
    append(log, b"two\n")
    assert cursor.read_new_lines() == [(4, b"two")]
    assert cursor.read_new_lines() == []


def test_partial_last_line_is_kept_until_completed(tmp_path):
    log = tmp_path / "log"
    log.write_bytes(b'one\n{"event": "mess')
    cursor = FileCursor(log)
    assert cursor.read_new_lines() == [(0, b"one")]
    append(log, b'age_send"}')
    assert cursor.read_new_lines() == []
    append(log, b"\nthree\n")
    assert cursor.read_new_lines() == [(4, b'{"event": "message_send"}'), (30, b"three")]


def test_missing_file_reads_as_nothing(tmp_path):
    assert FileCursor(tmp_path / "absent").read_new_lines() == []


def test_file_created_later_is_read_from_the_start(tmp_path):
    log = tmp_path / "log"
    cursor = FileCursor(log)
    assert cursor.read_new_lines() == []
    log.write_bytes(b"first\n")
    assert cursor.read_new_lines() == [(0, b"first")]


def test_from_end_skips_what_the_file_already_held(tmp_path):
    log = tmp_path / "log"
    log.write_bytes(b"old run\n")
    cursor = FileCursor(log, from_end=True)
    assert cursor.read_new_lines() == []
    append(log, b"this run\n")
    assert cursor.read_new_lines() == [(8, b"this run")]


def test_from_end_on_a_missing_file_reads_it_from_the_start_once_created(tmp_path):
    log = tmp_path / "log"
    cursor = FileCursor(log, from_end=True)
    log.write_bytes(b"first\n")
    assert cursor.read_new_lines() == [(0, b"first")]


def test_truncated_file_is_read_again_from_the_start(tmp_path):
    log = tmp_path / "log"
    log.write_bytes(b"a long first line\nsecond\n")
    cursor = FileCursor(log)
    cursor.read_new_lines()
    log.write_bytes(b"new\n")  # same inode, shorter
    assert cursor.read_new_lines() == [(0, b"new")]


def test_replaced_file_is_read_from_the_start_even_when_longer(tmp_path):
    log = tmp_path / "log"
    log.write_bytes(b"one\n")
    cursor = FileCursor(log)
    cursor.read_new_lines()
    replace(log, b"alpha\nbeta\ngamma\n")
    assert cursor.read_new_lines() == [(0, b"alpha"), (6, b"beta"), (11, b"gamma")]


def test_replacement_drops_the_old_files_partial_line(tmp_path):
    log = tmp_path / "log"
    log.write_bytes(b"one\npart")
    cursor = FileCursor(log)
    cursor.read_new_lines()
    replace(log, b"fresh\n")
    assert cursor.read_new_lines() == [(0, b"fresh")]


def test_lines_spanning_read_chunks_are_joined(tmp_path, monkeypatch):
    monkeypatch.setattr(tail, "MAX_READ", 4)
    log = tmp_path / "log"
    log.write_bytes(b"abcdefghij\nkl\nmnopq\n")
    assert FileCursor(log).read_new_lines() == [(0, b"abcdefghij"), (11, b"kl"), (14, b"mnopq")]


def test_offsets_point_at_the_lines_in_the_file(tmp_path):
    data = b'{"a": 1}\n\n{"b": 22}\n{"c": 333}\n'
    log = tmp_path / "log"
    log.write_bytes(data)
    for offset, line in FileCursor(log).read_new_lines():
        assert data[offset : offset + len(line)] == line


# -- Tailer ------------------------------------------------------------------------------------------


def test_tailer_feeds_new_lines_to_the_files_parser(tmp_path):
    log = tmp_path / "a.jsonl"
    log.write_bytes(b"x\n")
    tailer = Tailer([WatchSpec(log, Recorder)])
    assert tailer.read(log) == [("a.jsonl", 0, "x")]
    append(log, b"y\n")
    assert tailer.read(log) == [("a.jsonl", 2, "y")]


def test_tailer_respects_from_end(tmp_path):
    log = tmp_path / "a.jsonl"
    log.write_bytes(b"before\n")
    tailer = Tailer([WatchSpec(log, Recorder, from_end=True)])
    append(log, b"during\n")
    assert tailer.read(log) == [("a.jsonl", 7, "during")]


def test_tailer_ignores_paths_it_does_not_watch(tmp_path):
    other = tmp_path / "other"
    other.write_bytes(b"x\n")
    tailer = Tailer([WatchSpec(tmp_path / "a.jsonl", Recorder)])
    assert tailer.read(other) == []
    assert not tailer.wants(other)
    assert tailer.wants(tmp_path / "a.jsonl")


def test_glob_spec_picks_up_a_file_created_after_start(tmp_path):
    folder = tmp_path / "sessions"
    folder.mkdir()
    tailer = Tailer([WatchSpec(folder, Recorder, glob="*.jsonl")])
    assert tailer.paths == []
    new = folder / "s1.jsonl"
    new.write_bytes(b"hello\n")
    assert tailer.wants(new)
    assert tailer.read(new) == [("s1.jsonl", 0, "hello")]


def test_glob_spec_finds_files_in_subdirectories_on_the_sweep(tmp_path):
    folder = tmp_path / "sessions"
    (folder / "sub").mkdir(parents=True)
    tailer = Tailer([WatchSpec(folder, Recorder, glob="*.jsonl")])
    (folder / "sub" / "agent.jsonl").write_bytes(b"one\n")
    (folder / "sub" / "notes.txt").write_bytes(b"ignored\n")
    assert tailer.read_all() == [("agent.jsonl", 0, "one")]
    assert tailer.paths == [folder / "sub" / "agent.jsonl"]


def test_glob_spec_from_end_skips_old_files_content_but_reads_new_files_whole(tmp_path):
    folder = tmp_path / "sessions"
    folder.mkdir()
    old = folder / "old.jsonl"
    old.write_bytes(b"earlier run\n")
    tailer = Tailer([WatchSpec(folder, Recorder, from_end=True, glob="*.jsonl")])
    append(old, b"more\n")
    (folder / "new.jsonl").write_bytes(b"all mine\n")
    assert sorted(tailer.read_all()) == [("new.jsonl", 0, "all mine"), ("old.jsonl", 12, "more")]


def test_glob_spec_ignores_names_that_do_not_match(tmp_path):
    folder = tmp_path / "sessions"
    folder.mkdir()
    tailer = Tailer([WatchSpec(folder, Recorder, glob="*.jsonl")])
    stray = folder / "x.txt"
    stray.write_bytes(b"no\n")
    assert not tailer.wants(stray)
    assert tailer.read(stray) == []


def test_glob_spec_on_a_missing_directory_waits_for_it(tmp_path):
    folder = tmp_path / "later"
    tailer = Tailer([WatchSpec(folder, Recorder, glob="*.jsonl")])
    folder.mkdir()
    (folder / "a.jsonl").write_bytes(b"z\n")
    assert tailer.read_all() == [("a.jsonl", 0, "z")]


def test_sweep_reads_every_watched_file_once(tmp_path):
    one, two = tmp_path / "one", tmp_path / "two"
    one.write_bytes(b"1\n")
    two.write_bytes(b"2\n")
    tailer = Tailer([WatchSpec(one, Recorder), WatchSpec(two, Recorder)])
    assert sorted(tailer.read_all()) == [("one", 0, "1"), ("two", 0, "2")]
    assert tailer.read_all() == []


@pytest.mark.parametrize("from_end", [False, True])
def test_watching_a_file_that_never_appears_is_harmless(tmp_path, from_end):
    tailer = Tailer([WatchSpec(tmp_path / "never", Recorder, from_end=from_end)])
    assert tailer.read_all() == []


# -- never blind, never twice: truncation, rotation, deletion, replacement -----------------------------


def lines(cursor: FileCursor) -> list[bytes]:
    return [line for _, line in cursor.read_new_lines()]


def test_lines_appended_after_a_truncation_count_even_when_the_file_regrows_past_the_offset(tmp_path):
    log = tmp_path / "log"
    log.write_bytes(b'{"n": 1, "t": 100}\n')
    cursor = FileCursor(log)
    assert lines(cursor) == [b'{"n": 1, "t": 100}']
    os.truncate(log, 0)
    append(log, b'{"n": 2, "t": 101}\n{"n": 3, "t": 102}\n')  # longer than before: no shrink is ever seen
    assert lines(cursor) == [b'{"n": 2, "t": 101}', b'{"n": 3, "t": 102}']


def test_a_line_of_the_same_length_written_after_a_truncation_counts(tmp_path):
    log = tmp_path / "log"
    log.write_bytes(b'{"n": 1}\n')
    cursor = FileCursor(log)
    lines(cursor)
    os.truncate(log, 0)
    append(log, b'{"n": 2}\n')  # the same size as before the truncation
    assert lines(cursor) == [b'{"n": 2}']


def test_old_lines_written_back_after_a_truncation_are_not_handed_out_again(tmp_path):
    log = tmp_path / "log"
    log.write_bytes(b"one\ntwo\n")
    cursor = FileCursor(log)
    lines(cursor)
    log.write_bytes(b"one\ntwo\nthree\n")  # truncated and rewritten in place, with one new line
    assert lines(cursor) == [b"three"]


def test_a_replacement_holding_the_old_lines_hands_out_only_the_new_ones(tmp_path):
    log = tmp_path / "log"
    log.write_bytes(b"one\ntwo\n")
    cursor = FileCursor(log)
    lines(cursor)
    replace(log, b"one\ntwo\nthree\n")
    assert lines(cursor) == [b"three"]


def test_identical_lines_within_one_file_are_distinct_lines(tmp_path):
    log = tmp_path / "log"
    log.write_bytes(b"same\nsame\n")
    cursor = FileCursor(log)
    assert lines(cursor) == [b"same", b"same"]
    replace(log, b"same\nsame\nsame\n")  # the copy holds both old ones and one more
    assert lines(cursor) == [b"same"]


def test_lines_written_to_a_renamed_file_before_the_new_one_appears_are_read(tmp_path):
    log = tmp_path / "log"
    log.write_bytes(b"one\n")
    cursor = FileCursor(log)
    lines(cursor)
    append(log, b"two\n")  # written, not yet read...
    os.rename(log, tmp_path / "log.1")  # ...when the log is rotated
    log.write_bytes(b"three\n")
    assert lines(cursor) == [b"two", b"three"]


def test_lines_written_just_before_the_file_was_deleted_are_read(tmp_path):
    log = tmp_path / "log"
    log.write_bytes(b"one\n")
    cursor = FileCursor(log)
    lines(cursor)
    append(log, b"two\n")
    log.unlink()
    assert lines(cursor) == [b"two"]
    assert cursor.problem is None  # a missing file is one the agent will create again
    log.write_bytes(b"three\n")
    assert lines(cursor) == [b"three"]


def test_repeated_rotations_lose_and_repeat_nothing(tmp_path):
    # each rotation comes with unread lines in the old file; a read between two rotations (capguard reads
    # within milliseconds of each write it is told of; two renames in that time would lose the middle file)
    log = tmp_path / "log"
    log.write_bytes(b"line 0\n")
    cursor = FileCursor(log)
    seen = lines(cursor)
    for n in range(1, 20):
        append(log, f"line {n}\n".encode())
        if n % 4 == 0:
            os.rename(log, tmp_path / f"log.{n}")
        elif n % 5 == 0:
            replace(log, log.read_bytes())
        if n % 4 == 0 or n % 5 == 0 or n % 3 == 0:
            seen += lines(cursor)
    seen += lines(cursor)
    assert seen == [f"line {n}".encode() for n in range(20)]


def test_a_directory_in_the_files_place_is_a_problem_not_a_crash(tmp_path):
    log = tmp_path / "log"
    log.write_bytes(b"one\n")
    cursor = FileCursor(log)
    lines(cursor)
    log.unlink()
    log.mkdir()
    assert cursor.read_new_lines() == []
    assert "cannot read" in cursor.problem and str(log) in cursor.problem


def test_a_fifo_in_the_files_place_does_not_hang(tmp_path):
    log = tmp_path / "log"
    os.mkfifo(log)
    cursor = FileCursor(log)
    assert cursor.read_new_lines() == []
    assert "not a regular file" in cursor.problem


def test_a_read_error_is_a_problem_and_clears_once_the_file_reads_again(tmp_path, monkeypatch):
    log = tmp_path / "log"
    log.write_bytes(b"one\n")
    cursor = FileCursor(log)
    real = os.pread
    monkeypatch.setattr(tail.os, "pread", lambda *a: (_ for _ in ()).throw(OSError(5, "Input/output error")))
    assert cursor.read_new_lines() == []
    assert cursor.problem == f"cannot read {log}: Input/output error"
    monkeypatch.setattr(tail.os, "pread", real)
    assert lines(cursor) == [b"one"] and cursor.problem is None


def test_tailer_names_the_first_file_it_cannot_read(tmp_path):
    good, bad = tmp_path / "good", tmp_path / "bad"
    good.write_bytes(b"x\n")
    bad.mkdir()
    tailer = Tailer([WatchSpec(good, Recorder), WatchSpec(bad, Recorder)])
    tailer.read_all()
    assert tailer.problem() == f"cannot read {bad}: not a regular file"
    tailer.close()


def test_dormant_glob_spec_opens_old_files_only_once_they_grow_and_reads_them_from_their_size_at_start(tmp_path):
    folder = tmp_path / "sessions" / "2026" / "11" / "01"
    folder.mkdir(parents=True)
    old, quiet = folder / "old.jsonl", folder / "quiet.jsonl"
    old.write_bytes(b"earlier run\n")
    quiet.write_bytes(b"never touched\n")
    tailer = Tailer([WatchSpec(tmp_path / "sessions", Recorder, from_end=True, glob="*.jsonl", dormant=True)])
    assert tailer.paths == [] and tailer.read_all() == []  # measured, not opened
    append(old, b"resumed\n")
    append(old, b"again\n")  # both written before the first read: both are this run's
    (folder / "new.jsonl").write_bytes(b"all mine\n")
    assert sorted(tailer.read_all()) == [
        ("new.jsonl", 0, "all mine"),
        ("old.jsonl", 12, "resumed"),
        ("old.jsonl", 20, "again"),
    ]
    assert quiet not in tailer.paths
    assert tailer.read(old) == []


def test_a_dormant_file_replaced_during_the_run_is_read_whole(tmp_path):
    old = tmp_path / "old.jsonl"
    old.write_bytes(b"earlier run\n")
    tailer = Tailer([WatchSpec(tmp_path, Recorder, from_end=True, glob="*.jsonl", dormant=True)])
    replace(old, b"rewritten\n")
    assert tailer.read(old) == [("old.jsonl", 0, "rewritten")]


def test_a_dormant_glob_opens_no_old_file_until_it_grows_then_reads_only_the_new_lines(tmp_path):
    old = tmp_path / "old.log"
    old.write_bytes(b"history\n")
    tailer = Tailer([WatchSpec(tmp_path, Recorder, glob="*.log", from_end=True, dormant=True)])
    assert tailer.paths == [] and tailer.wants(old)
    assert tailer.read_all() == []  # unchanged: still not opened
    assert tailer.paths == []
    append(old, b"resumed\n")
    (tmp_path / "new.log").write_bytes(b"fresh\n")
    assert sorted(tailer.read_all()) == [("new.log", 0, "fresh"), ("old.log", 8, "resumed")]
    tailer.close()


def test_a_dormant_file_rewritten_shorter_is_read_from_the_top(tmp_path):
    old = tmp_path / "old.log"
    old.write_bytes(b"a long history line\n")
    tailer = Tailer([WatchSpec(tmp_path, Recorder, glob="*.log", from_end=True, dormant=True)])
    replace(old, b"short\n")
    assert tailer.read(old) == [("old.log", 0, "short")]
    tailer.close()
