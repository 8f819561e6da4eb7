"""`capguard config` shows the ledger and the user in force, and where each came from, not `-`."""

from __future__ import annotations

import json
import subprocess

import pytest

from capguard import cli


@pytest.fixture
def here(tmp_path, monkeypatch):
    """A folder outside any repo, with no git identity anywhere: global and system git config out of the way."""
    monkeypatch.setenv("GIT_CONFIG_GLOBAL", str(tmp_path / "no-gitconfig"))
    monkeypatch.setenv("GIT_CONFIG_NOSYSTEM", "1")
    monkeypatch.setenv("USER", "dana")
    monkeypatch.setenv("LOGNAME", "dana")
    folder = tmp_path / "work"
    folder.mkdir()
    monkeypatch.chdir(folder)
    return folder


def config_json(capsys) -> dict:
    assert cli.main(["config", "--json"]) == 0
    return json.loads(capsys.readouterr().out)["values"]


def config_lines(capsys) -> dict[str, str]:
    assert cli.main(["config"]) == 0
    rows = [line.split(None, 1) for line in capsys.readouterr().out.splitlines() if line.startswith("  ")]
    return {row[0]: row[1] for row in rows if len(row) == 2}


def test_the_default_ledger_is_the_file_under_the_data_dir(here, tmp_path, capsys):
    default = str(tmp_path / "capguard-home" / "ledger.db")
    assert config_json(capsys)["ledger"] == {
        "value": default,
        "origin": "default (data dir from CAPGUARD_HOME)",
        "locked": False,
    }
    line = config_lines(capsys)["ledger"]
    assert line.startswith(default) and line.endswith("default (data dir from CAPGUARD_HOME)")


def test_a_ledger_url_is_shown_with_its_password_masked(here, monkeypatch, capsys):
    monkeypatch.setenv("CAPGUARD_LEDGER", "postgresql://cg:hunter2@db.example/capguard")
    value = config_json(capsys)["ledger"]
    assert (value["value"], value["origin"]) == (
        "postgresql://cg:<redacted>@db.example/capguard",
        "environment CAPGUARD_LEDGER",
    )
    line = config_lines(capsys)["ledger"]
    assert "hunter2" not in line and "<redacted>" in line


def test_the_user_without_git_is_the_login_at_this_host(here, capsys):
    import os

    value = config_json(capsys)["user"]
    assert (value["value"], value["origin"]) == (f"dana@{os.uname().nodename}", "$USER@host")
    assert config_lines(capsys)["user"].split() == [f"dana@{os.uname().nodename}", "$USER@host"]


def test_the_user_in_a_repo_is_its_git_email(here, capsys):
    subprocess.run(["git", "init", "-q"], cwd=here, check=True)
    subprocess.run(["git", "config", "user.email", "dana@example.com"], cwd=here, check=True)
    value = config_json(capsys)["user"]
    assert (value["value"], value["origin"]) == ("dana@example.com", "git user.email")


def test_capguard_user_wins_over_git(here, monkeypatch, capsys):
    monkeypatch.setenv("CAPGUARD_USER", "ci-bot")
    value = config_json(capsys)["user"]
    assert (value["value"], value["origin"]) == ("ci-bot", "environment CAPGUARD_USER")


def test_config_shows_the_cache_rates_a_run_charges_for_a_price_override(here, monkeypatch, capsys):
    config = here / "user.toml"
    config.write_text('[prices."claude-house-9"]\ninput = 10\noutput = 50\ncache_read = 0.5\n')
    monkeypatch.setenv("CAPGUARD_CONFIG", str(config))
    assert cli.main(["config"]) == 0
    line = next(x for x in capsys.readouterr().out.splitlines() if "price claude-house-9" in x)
    # the given read rate; Anthropic's 1.25x and 2x of input for the writes left out
    assert line.endswith("cache read $0.5/M, cache write $12.5/M (1 h $20/M)")
    assert cli.main(["config", "--json"]) == 0
    prices = json.loads(capsys.readouterr().out)["prices"]
    assert prices["claude-house-9"] == {
        "input": "10", "output": "50", "cache_read": "0.5", "cache_write": "12.5", "cache_write_1h": "20",
    }  # fmt: skip
