"""An unwritable data dir (a file in its way, a read-only mount): one line naming the path and the fix, exit 3."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

COMMANDS = [
    pytest.param(["aider", "--version"], id="agent"),
    pytest.param(["report"], id="report"),
    pytest.param(["status"], id="status"),
    pytest.param(["import", "claude", "{empty}"], id="import"),
    pytest.param(["ledger", "status"], id="ledger"),
]


def capguard(args: list[str], tmp_path: Path, **env: str | None) -> subprocess.CompletedProcess:
    """Run capguard with `env` on top of ours; a None value unsets that variable."""
    empty = tmp_path / "no-transcripts"
    empty.mkdir(exist_ok=True)
    team = tmp_path / "team.toml"  # monthly caps: `status` then needs the ledger too
    team.write_text("[team]\nmonthly_usd = 5\n")
    merged = {**os.environ, "CAPGUARD_TEAM_CONFIG": str(team), **env}
    full = {k: v for k, v in merged.items() if v is not None}
    argv = [a.format(empty=empty) for a in args]
    return subprocess.run(
        [sys.executable, "-m", "capguard", *argv], env=full, text=True, capture_output=True, timeout=60
    )


def assert_one_line(done: subprocess.CompletedProcess, *needles: str) -> None:
    assert done.returncode == 3, done.stderr
    assert "Traceback" not in done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("capguard: error:")]
    assert len(errors) == 1, done.stderr
    for needle in (*needles, "CAPGUARD_HOME"):
        assert needle in errors[0]


@pytest.mark.parametrize("args", COMMANDS)
def test_a_file_where_capguard_home_should_be_is_one_line_and_exit_3(args, tmp_path):
    blocker = tmp_path / "in-the-way"
    blocker.write_text("")
    done = capguard(args, tmp_path, CAPGUARD_HOME=str(blocker / "capguard"))
    assert_one_line(done, f"{blocker} is a file", f"move {blocker} away")


@pytest.mark.parametrize("args", COMMANDS)
def test_a_file_where_xdg_data_home_should_be_is_one_line_and_exit_3(args, tmp_path):
    blocker = tmp_path / "xdg-data"
    blocker.write_text("")
    done = capguard(args, tmp_path, CAPGUARD_HOME=None, XDG_DATA_HOME=str(blocker))
    assert_one_line(done, str(blocker / "capguard"), f"move {blocker} away")


@pytest.fixture
def read_only_dir(tmp_path):
    """A folder on a read-only bind mount: as root, chmod would not stop a write, a read-only mount does."""
    folder = tmp_path / "ro"
    folder.mkdir()
    if os.geteuid() != 0:
        folder.chmod(0o500)
        yield folder
        folder.chmod(0o700)
        return
    mounted = subprocess.run(["mount", "--bind", "-o", "ro", str(folder), str(folder)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot make a read-only bind mount here: {mounted.stderr.decode().strip()}")
    try:
        yield folder
    finally:
        subprocess.run(["umount", str(folder)], check=True)


@pytest.mark.parametrize("args", COMMANDS)
def test_a_read_only_data_dir_is_one_line_and_exit_3(args, tmp_path, read_only_dir):
    done = capguard(args, tmp_path, CAPGUARD_HOME=str(read_only_dir / "capguard"))
    assert_one_line(done, str(read_only_dir / "capguard"), f"make {read_only_dir} writable")
