"""The command line's parsing: global options before or after a subcommand, an agent's arguments left alone."""

from __future__ import annotations

import subprocess
import sys

import pytest

from capguard import cli
from capguard.agents import NAMES
from capguard.cli import dispatch


@pytest.fixture
def agent_calls(monkeypatch):
    """What `capguard AGENT ...` would hand to the supervisor: the agent, its arguments, capguard's flags."""
    calls = []
    monkeypatch.setattr(dispatch, "run_agent", lambda agent, args, flags: calls.append((agent, args, flags)) or 0)
    return calls


def test_everything_after_the_agent_goes_to_it_untouched(agent_calls):
    assert cli.main(["--usd", "1", "aider", "--usd", "5", "--", "--help"]) == 0
    [(agent, args, flags)] = agent_calls
    assert (agent, args) == ("aider", ["--usd", "5", "--", "--help"])
    assert flags["usd"] == "1"


@pytest.mark.parametrize(
    "args",
    [
        ["--ledger", "x.db", "--no-title"],
        ["--help"],
        ["--version"],
        ["-h", "--poll", "report"],
        ["--usd=5", "--"],
        ["--", "--", "--line", "ops"],
        ["config", "--json"],
        ["", "-", "--l"],
    ],
)
def test_an_agent_argument_that_looks_like_a_capguard_flag_is_not_eaten(agent_calls, args):
    assert cli.main(["claude", *args]) == 0
    [(agent, passed, flags)] = agent_calls
    assert (agent, passed) == ("claude", args)
    assert all(value is None for value in flags.values())


def test_options_before_the_agent_in_every_form_argparse_knows(agent_calls):
    cli.main(["--usd=2", "--wal", "30m", "--no-title", "--", "aider", "x.py"])
    [(agent, args, flags)] = agent_calls
    assert (agent, args) == ("aider", ["x.py"])
    assert (flags["usd"], flags["wall"], flags["title"]) == ("2", "30m", "false")


@pytest.mark.parametrize(
    "argv",
    [
        ["--ledger", "{db}", "ledger", "path"],
        ["ledger", "path", "--ledger", "{db}"],
        ["ledger", "--ledger", "{db}", "path"],
        ["--ledger", "elsewhere.db", "ledger", "path", "--ledger", "{db}"],  # the later one wins
    ],
)
def test_ledger_option_works_before_and_after_the_subcommand(argv, tmp_path, capsys):
    db = tmp_path / "mine.db"
    assert cli.main([a.format(db=db) for a in argv]) == 0
    assert capsys.readouterr().out.strip() == str(db)


def test_an_option_a_subcommand_does_not_take_after_its_name_is_an_error(capsys):
    with pytest.raises(SystemExit) as exit:
        cli.main(["trust", "--ledger", "x.db"])
    assert exit.value.code == 2
    assert "unrecognized arguments: --ledger" in capsys.readouterr().err


def test_help_lists_every_agent_and_subcommand_on_one_line_each(capsys):
    with pytest.raises(SystemExit):
        cli.main(["--help"])
    lines = capsys.readouterr().out.splitlines()
    for name in [*NAMES, *cli.COMMANDS]:
        [line] = [line for line in lines if line.split()[:1] == [name]]
        assert len(line.split()) > 2, line


def test_unknown_name_is_one_line_naming_agents_and_commands(capsys):
    assert cli.main(["--usd", "1", "aidr", "x"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("capguard: error: unknown agent or command 'aidr'") and "aider" in err and "report" in err


@pytest.mark.parametrize("argv", [[], ["--usd", "1"], ["--usd", "1", "--"]])
def test_no_agent_is_a_usage_error(argv, capsys):
    with pytest.raises(SystemExit) as exit:
        cli.main(argv)
    assert exit.value.code == 2
    assert "AGENT|COMMAND" in capsys.readouterr().err


@pytest.mark.parametrize("flag", ["--help", "--version"])
def test_help_and_version_load_no_subcommand_and_no_library(flag):
    code = (
        f"import sys\nfrom capguard import cli\ntry:\n    cli.main([{flag!r}])\nexcept SystemExit:\n    pass\n"
        "print(' '.join(sys.modules), file=sys.stderr)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    heavy = ("capguard.config", "capguard.ledger", "capguard.run", "capguard.supervisor", "psutil", "watchdog")
    loaded = done.stderr.split()
    assert "capguard.cli.dispatch" in loaded
    assert not [m for m in loaded if m.startswith(heavy) or m.endswith("_cmd") or m == "dataclasses"]
