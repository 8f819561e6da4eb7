"""`capguard completion bash|zsh|fish`: scripts that parse, name every agent and subcommand, and complete."""

from __future__ import annotations

import re
import shutil
import subprocess

import pytest

from capguard import cli
from capguard.agents import NAMES
from capguard.cli import completion_spec
from capguard.cli.completion_scripts import RENDERERS


def script(shell: str, capsys) -> str:
    assert cli.main(["completion", shell]) == 0
    return capsys.readouterr().out


@pytest.mark.parametrize("shell", sorted(RENDERERS))
def test_completion_script_names_every_agent_and_subcommand(shell, capsys):
    text = script(shell, capsys)
    for name in [*NAMES, *cli.COMMANDS]:
        assert name in text, name
    for flag in ("ledger", "by"):  # a global option, and a subcommand's own (fish writes `-l by`)
        assert re.search(rf"(--|-l ){flag}\b", text), flag


@pytest.mark.parametrize("shell", sorted(RENDERERS))
def test_completion_script_parses(shell, capsys, tmp_path):
    if not shutil.which(shell):
        pytest.skip(f"{shell} is not installed")
    path = tmp_path / f"capguard.{shell}"
    path.write_text(script(shell, capsys))
    done = subprocess.run([shell, "-n", str(path)], capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr


def test_the_spec_follows_the_command_table():
    spec = completion_spec.build()
    assert [c.name for c in spec.commands] == list(cli.COMMANDS)
    assert [a.name for a in spec.agents] == list(NAMES)
    report = {c.name: c for c in spec.commands}["report"]
    assert "--ledger" in {flag for opt in report.options for flag in opt.flags}  # accepted after `report` too
    assert {c.name: c for c in spec.commands}["ledger"].words == ("path", "status", "init", "export", "prune")


def bash_complete(text: str, line: str, tmp_path) -> list[str]:
    """What bash offers for `line` (the cursor at its end), with this script loaded and no bash-completion."""
    path = tmp_path / "capguard.bash"
    path.write_text(text)
    driver = (
        f"source {path}\n"
        f"COMP_LINE='{line}'; read -ra COMP_WORDS <<< \"$COMP_LINE\"\n"
        '[[ $COMP_LINE == *" " ]] && COMP_WORDS+=("")\n'
        "COMP_CWORD=$(( ${#COMP_WORDS[@]} - 1 ))\n"
        '_capguard capguard "${COMP_WORDS[COMP_CWORD]}" "${COMP_WORDS[COMP_CWORD-1]}"\n'
        'printf "%s\\n" "${COMPREPLY[@]}"\n'
    )
    done = subprocess.run(["bash", "--norc", "-c", driver], capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    return [word for word in done.stdout.splitlines() if word]


@pytest.mark.parametrize(
    "line, offered",
    [
        ("capguard rep", ["report"]),
        ("capguard --ledger x.db --usd 5 rep", ["report"]),  # an option's value is not the command
        ("capguard -- cla", ["claude"]),
        ("capguard --usd", ["--usd"]),
        ("capguard report --b", ["--by"]),
        ("capguard report --by da", ["day"]),
        ("capguard report --le", ["--ledger"]),  # a global option, after the subcommand
        ("capguard ledger ", ["path", "status", "init", "export", "prune"]),
        ("capguard completion ", ["bash", "fish", "zsh"]),
        ("capguard --usd 5 aider --us", []),  # the agent's, not capguard's: file names, or the agent's completion
    ],
)
def test_bash_completes_from_the_command_table(line, offered, capsys, tmp_path):
    assert sorted(bash_complete(script("bash", capsys), line, tmp_path)) == sorted(offered)


@pytest.mark.parametrize(
    "line, offered",
    [
        ("capguard rep", ["report"]),
        ("capguard --ledger x.db re", ["report"]),
        ("capguard report --by da", ["day"]),
        ("capguard --usd 3 aider --mo", ["--model"]),  # aider's own completion, handed the rest of the line
        ("capguard aider --us", []),
    ],
)
def test_fish_completes_from_the_command_table(line, offered, capsys, tmp_path):
    if not shutil.which("fish"):
        pytest.skip("fish is not installed")
    path = tmp_path / "capguard.fish"
    path.write_text(script("fish", capsys))
    command = f"source {path}; complete -c aider -l model -x -a 'sonnet opus'; complete -C '{line}'"
    done = subprocess.run(
        ["fish", "--no-config", "-c", command], capture_output=True, text=True, timeout=30, cwd=tmp_path
    )
    assert done.returncode == 0, done.stderr
    assert sorted(line.split("\t")[0] for line in done.stdout.splitlines()) == sorted(offered)
