"""blind.py: when a run's disk or run dir can no longer hold what the agent writes, the meter is blind."""

from __future__ import annotations

import os
from pathlib import Path

from capguard.metering import blind
from capguard.metering.blind import Space


def roomy(folder: Path) -> Space:
    return Space(free_bytes=10 << 30, free_inodes=100_000, read_only=False)


def test_a_roomy_disk_and_a_run_dir_in_place_are_fine(tmp_path):
    assert blind.problem([tmp_path / "not-yet"], tmp_path, roomy) is None


def test_a_full_disk_is_blind():
    why = blind.space_problem(Path("/r"), Space(free_bytes=4096, free_inodes=10, read_only=False))
    assert why == "the disk holding /r is full (4,096 bytes free)"


def test_just_above_the_threshold_is_not_full():
    assert blind.space_problem(Path("/r"), Space(blind.MIN_FREE_BYTES, None, False)) is None


def test_no_free_inodes_is_blind_but_a_filesystem_without_inode_counts_is_not():
    assert "no free inodes" in blind.space_problem(Path("/r"), Space(10 << 30, 0, False))
    assert blind.space_problem(Path("/r"), Space(10 << 30, None, False)) is None


def test_a_read_only_filesystem_is_blind():
    assert blind.space_problem(Path("/r"), Space(10 << 30, 100, True)) == "/r is on a read-only filesystem"


def test_a_vanished_or_replaced_run_dir_is_blind(tmp_path):
    run_dir = tmp_path / "run"
    assert blind.problem([], run_dir, roomy) == f"the run directory {run_dir} is gone"
    run_dir.write_text("a file where the directory was")
    assert blind.problem([], run_dir, roomy) == f"the run directory {run_dir} is gone"


def test_the_folder_of_each_metered_file_is_probed_at_its_nearest_existing_parent(tmp_path):
    probed = []

    def space(folder: Path) -> Space:
        probed.append(folder)
        full = folder == tmp_path / "projects"
        return Space(0 if full else 10 << 30, None, False)

    (tmp_path / "projects").mkdir()
    why = blind.problem([tmp_path / "projects" / "p" / "later"], tmp_path, space)
    assert probed == [tmp_path / "projects"]
    assert why == f"the disk holding {tmp_path / 'projects'} is full (0 bytes free)"


def test_a_probe_that_fails_is_blind_too(tmp_path):
    def broken(folder: Path) -> Space:
        raise OSError(5, "Input/output error")

    assert blind.problem([], tmp_path, broken) == f"cannot check the disk holding {tmp_path}: Input/output error"


def test_the_real_probe_reads_statvfs(tmp_path):
    space = blind.probe(tmp_path)
    st = os.statvfs(tmp_path)
    assert space.free_bytes == st.f_bavail * st.f_frsize and not space.read_only
