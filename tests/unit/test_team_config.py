"""The [team] table: layered with the other config files, every error naming the file and the key."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from capguard.config import trust
from capguard.config.settings import load_settings
from capguard.core.errors import ConfigError
from capguard.core.team import KEYS, TeamConfig

EXAMPLE = Path(__file__).parent.parent.parent / "config.example.toml"


@pytest.fixture
def project(tmp_path):
    folder = tmp_path / "project"
    folder.mkdir()
    return folder


def load(project: Path, team_text: str, *, project_text: str | None = None, flags: dict | None = None):
    team_file = project.parent / "team.toml"
    team_file.write_text(team_text)
    if project_text is not None:  # trusted: an untrusted repo file may only lower monthly caps (test_trust_rules)
        (project / ".capguard.toml").write_text(project_text)
        trust.trust(project / ".capguard.toml")
    env = {"CAPGUARD_CONFIG": str(team_file), "XDG_CONFIG_HOME": os.environ["XDG_CONFIG_HOME"]}
    return load_settings(None, env=env, cwd=project, flags=flags)


def test_no_team_table_means_no_monthly_cap(project):
    team = load(project, "usd = 1\n").team
    assert team == TeamConfig()
    assert team.budgets("dev@example.com", "infra") == []


def test_the_issue_example(project):
    settings = load(
        project,
        """
ledger = "postgresql://db.example/capguard"
user = "dev@example.com"
line = "shared-infra"
[team]
monthly_usd = 200
monthly_warn_at = "80%"
timezone = "Europe/Berlin"
[team.users."dev@example.com"]
monthly_usd = 500
[team.lines."shared-infra"]
monthly_usd = 1000
""",
    )
    team = settings.team
    assert (team.monthly_usd, team.warn_at, team.timezone) == (200_000_000, 0.8, "Europe/Berlin")
    assert team.zone.key == "Europe/Berlin"
    assert settings.charge.user == "dev@example.com" and settings.charge.line == "shared-infra"
    assert team.budgets("dev@example.com", "shared-infra") == [
        ("user", "dev@example.com", 500_000_000),
        ("line", "shared-infra", 1_000_000_000),
    ]
    assert team.budgets("other@example.com", None) == [("user", "other@example.com", 200_000_000)]
    assert team.budgets("other@example.com", "unconfigured-line") == [("user", "other@example.com", 200_000_000)]


def test_a_developer_can_be_exempted_with_off(project):
    team = load(project, '[team]\nmonthly_usd = 200\n[team.users."lead@example.com"]\nmonthly_usd = "off"\n').team
    assert team.budgets("lead@example.com", None) == []


def test_later_files_win_key_by_key_and_name_by_name(project):
    settings = load(
        project,
        '[team]\nmonthly_usd = 200\ntimezone = "Europe/Berlin"\n[team.users.a]\nmonthly_usd = 1\n'
        "[team.users.b]\nmonthly_usd = 2\n",
        project_text="[team]\nmonthly_usd = 300\n[team.users.b]\nmonthly_usd = 20\n",
    )
    team = settings.team
    assert (team.monthly_usd, team.timezone) == (300_000_000, "Europe/Berlin")
    assert team.users == {"a": 1_000_000, "b": 20_000_000}
    assert team.origins["monthly_usd"] == str(project / ".capguard.toml")
    assert team.origins["timezone"] == str(project.parent / "team.toml")


def test_line_comes_from_the_flag_over_the_config(project):
    settings = load(project, 'line = "a"\n', flags={"line": "b"})
    assert settings.charge.line == "b" and settings.origin("line") == "--line"


@pytest.mark.parametrize(
    "text,key,why",
    [
        ("[team]\nmonthly = 5\n", "team.monthly", "unknown key"),
        ("[team]\nmonthly_usd = -5\n", "team.monthly_usd", "non-negative"),
        ("[team]\nmonthly_usd = 0\n", "team.monthly_usd", "greater than zero"),
        ("[team]\nmonthly_usd = true\n", "team.monthly_usd", "not an amount"),
        ("[team]\nmonthly_warn_at = 1.5\n", "team.monthly_warn_at", "between 0 and 1"),
        ('[team]\ntimezone = "Mars/Olympus"\n', "team.timezone", "not a known time zone"),
        ("[team]\ntimezone = 1\n", "team.timezone", "not a time zone name"),
        ("team = 3\n", "team", "expected a table"),
        ("[team]\nusers = 3\n", "team.users", "expected tables"),
        ('[team.users]\n"dev@example.com" = 500\n', 'team.users."dev@example.com"', "expected a table"),
        ('[team.users."dev@example.com"]\nmonthly = 500\n', 'team.users."dev@example.com".monthly', "unknown key"),
        ('[team.users."dev@example.com"]\n', 'team.users."dev@example.com"', "missing monthly_usd"),
        ('[team.lines.infra]\nmonthly_usd = "lots"\n', 'team.lines."infra".monthly_usd', "not an amount in USD"),
    ],
)
def test_a_bad_team_value_names_the_file_and_the_key(project, text, key, why):
    with pytest.raises(ConfigError) as info:
        load(project, text)
    message = str(info.value)
    assert message.startswith(f"{project.parent / 'team.toml'}: {key}: ")
    assert why in message and "\n" not in message


def test_the_example_config_documents_every_team_key():
    text = EXAMPLE.read_text()
    for key in [k for k in KEYS if k not in ("users", "lines")]:
        assert re.search(rf"^#? ?{key} = ", text, re.MULTILINE), key
    assert '[team.users."' in text and '[team.lines."' in text
