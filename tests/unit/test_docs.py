"""The documentation matches the code: example config, exit codes, subcommands."""

from __future__ import annotations

import re
from pathlib import Path

from capguard import cli
from capguard.config.settings import KEYS, load_settings
from capguard.core.caps import EXIT_CODES

ROOT = Path(__file__).parent.parent.parent
README = (ROOT / "README.md").read_text()
EXAMPLE = ROOT / "config.example.toml"


def test_config_example_parses_as_a_user_file(tmp_path):
    settings = load_settings("aider", env={"CAPGUARD_CONFIG": str(EXAMPLE)}, cwd=tmp_path)
    assert settings.files == [EXAMPLE]
    for key, spec in KEYS.items():
        assert getattr(getattr(settings, spec.section), spec.field_name(key)) == spec.default, key


def test_config_example_documents_every_key():
    text = EXAMPLE.read_text()
    missing = [key for key in KEYS if not re.search(rf"^#? ?{key} = ", text, re.MULTILINE)]
    assert not missing


def readme_exit_codes() -> dict[str, int]:
    block = README.split("<!-- exit-codes")[1].split("<!-- /exit-codes -->")[0]
    return {m.group(2): int(m.group(1)) for m in re.finditer(r"^\| (\d+) \| `(\w+)`", block, re.MULTILINE)}


def test_readme_exit_code_table_matches_the_code():
    assert readme_exit_codes() == EXIT_CODES


def test_help_lists_every_exit_code(capsys):
    epilog = cli.EPILOG
    for reason, code in EXIT_CODES.items():
        assert str(code) in epilog, reason


def test_every_subcommand_is_documented():
    for name in cli.COMMANDS:
        assert f"capguard {name}" in README, name
        assert name in cli.parser().format_help(), name


def test_every_flag_is_in_the_readme():
    for flag in [*cli.CAP_FLAGS, "--no-title", "--poll"]:
        assert f"`{flag}" in README, flag


def test_cli_and_config_agree_on_the_agents():
    from capguard.config import settings as config

    assert cli.AGENTS == config.AGENTS
