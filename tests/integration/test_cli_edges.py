"""The command line at its edges: every subcommand's --help, a reader that leaves early."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from capguard import cli


def capguard(*args: str, home, **kw) -> subprocess.CompletedProcess:
    env = {**os.environ, "CAPGUARD_HOME": str(home)}
    return subprocess.run([sys.executable, "-m", "capguard", *args], env=env, text=True, timeout=60, **kw)


@pytest.mark.parametrize("command", sorted(cli.COMMANDS))
def test_every_subcommand_has_help_that_prints(command, tmp_path):
    done = capguard(command, "--help", home=tmp_path, capture_output=True)
    assert done.returncode == 0, done.stderr
    assert "usage:" in done.stdout
    assert "Traceback" not in done.stderr


def test_a_reader_that_left_ends_the_report_quietly(tmp_path):
    read_end, write_end = os.pipe()
    os.close(read_end)  # like `capguard report | head` once head has gone: every write fails with EPIPE
    try:
        done = capguard("report", home=tmp_path, stdout=write_end, stderr=subprocess.PIPE)
    finally:
        os.close(write_end)
    assert "Traceback" not in done.stderr and "BrokenPipeError" not in done.stderr
    assert done.stderr == ""
    assert done.returncode == 141
