"""The command line at its edges: every subcommand's --help, a reader that leaves early."""

from __future__ import annotations

import json
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


def test_aider_gets_its_arguments_as_typed_even_those_that_look_like_capguard_flags(tmp_path):
    """`capguard --usd 1 aider --usd 5 -- --help`: capguard's cap is $1, and aider sees `--usd 5 -- --help`.

    capguard adds its own aider flags (the analytics log, ...) in one place only: before the user's `--`.
    """
    from tests.integration.conftest import make_repo, trusted_config

    seen = tmp_path / "argv.json"
    agent = tmp_path / "fake-aider"
    agent.write_text(
        f"#!{sys.executable}\nimport json, sys\nopen({str(seen)!r}, 'w').write(json.dumps(sys.argv[1:]))\n"
    )
    agent.chmod(0o755)
    repo = make_repo(tmp_path / "repo")
    trusted_config(repo / ".capguard.toml", f'[agents.aider]\ncommand = "{agent}"\n')
    report = tmp_path / "report.json"
    argv = ["--usd", "1", "--report-json", str(report), "aider", "--usd", "5", "--ledger", "x", "--", "--help"]
    done = capguard(*argv, home=os.environ["CAPGUARD_HOME"], cwd=repo, capture_output=True)  # where the trust is
    assert done.returncode == 0, done.stderr
    args = json.loads(seen.read_text())
    separator = args.index("--")
    assert args[:4] == ["--usd", "5", "--ledger", "x"] and args[separator:] == ["--", "--help"]
    assert not {"--usd", "--ledger", "--help"} & set(args[4:separator])  # only capguard's own flags for aider
    assert json.loads(report.read_text())["caps"]["usd"] == 1


def test_report_html_and_dashboard_write_the_page_from_the_command_line(tmp_path):
    page = tmp_path / "spend.html"
    done = capguard("report", "--html", str(page), home=tmp_path, capture_output=True)
    assert done.returncode == 0, done.stderr
    assert page.read_text().startswith("<!DOCTYPE html>") and (page.stat().st_mode & 0o077) == 0
    shown = capguard("dashboard", "--no-open", home=tmp_path, capture_output=True)
    assert shown.returncode == 0, shown.stderr
    path = shown.stdout.strip()
    assert path == str(tmp_path / "dashboard.html") and "<canvas" in open(path).read()
    refused = capguard("report", "--html", str(tmp_path / "no-such-dir" / "x.html"), home=tmp_path, capture_output=True)
    assert refused.returncode == 2 and refused.stderr.startswith("capguard: error: cannot write the dashboard to ")
    assert "Traceback" not in refused.stderr
