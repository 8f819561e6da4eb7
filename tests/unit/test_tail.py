"""tail.py: complete lines only, byte offsets, truncation and replacement, from-end, globbed files."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from capguard import tail
from capguard.tail import FileCursor, Tailer, WatchSpec


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
        assert data[offset:offset + len(line)] == line


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
