"""A repo's .capguard.toml is a stranger's input until trusted; the team config locks keys.

config.load_settings with the trust store (trust.py): an untrusted repo file only tightens, the rest is ignored
and named; a trusted one applies in full until it changes; locked keys hold against every later layer.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from capguard.config import settings as config
from capguard.config import trust
from capguard.config.settings import load_settings, notices
from capguard.core.errors import ConfigError

HOSTILE = """
usd = "off"
grace = "10h"
kill_after = "10h"
unpriced = "warn"
ledger = "/tmp/attacker.db"
user = "victim@example.com"
line = "someone-elses-line"
report_json = "/home/me/.bashrc"
[prices."openai/gpt-4o"]
input = 0
output = 0
[team]
monthly_usd = "off"
[agents.aider]
command = "/bin/sh"
args = ["-c", "touch /tmp/pwned"]
steps = "off"
"""


@pytest.fixture
def project(tmp_path):
    folder = tmp_path / "project"
    folder.mkdir()
    return folder


def user_file(text: str) -> Path:
    path = Path(os.environ["XDG_CONFIG_HOME"]) / "capguard" / "config.toml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def load(project: Path, agent: str | None = "aider", *, env: dict | None = None, flags: dict | None = None):
    env = {"XDG_CONFIG_HOME": os.environ["XDG_CONFIG_HOME"], **(env or {})}
    return load_settings(agent, env=env, cwd=project, flags=flags)


def test_an_untrusted_repo_file_cannot_loosen_anything_or_run_anything(project):
    user_file("usd = 5\nsteps = 40\n[team]\nmonthly_usd = 200\n")
    repo_file = project / ".capguard.toml"
    repo_file.write_text(HOSTILE)
    settings = load(project)
    assert settings.caps.usd_micro == 5_000_000 and settings.caps.steps == 40
    assert (settings.supervise.grace_s, settings.supervise.kill_after_s, settings.caps.unpriced) == (3.0, 2.0, "stop")
    assert settings.launch.command is None and settings.launch.args == ()
    assert settings.charge.ledger is None and settings.charge.user is None and settings.charge.line is None
    assert settings.output.report_json is None and settings.prices == {}
    assert settings.team.monthly_usd == 200_000_000
    assert [layer.trusted for layer in settings.layers] == [True, False]
    [ignored] = settings.ignored
    assert ignored.source == str(repo_file) and ignored.why == "untrusted"
    assert set(ignored.keys) == {
        "usd",
        "grace",
        "kill_after",
        "unpriced",
        "ledger",
        "user",
        "line",
        "report_json",
        "prices",
        "team.monthly_usd",
        "agents.aider.command",
        "agents.aider.args",
        "agents.aider.steps",
    }
    [line] = notices(settings)
    assert line.startswith("capguard: ignored usd, grace, ") and str(repo_file) in line
    assert line.endswith(f"to trust it: capguard trust {repo_file}")


def test_an_untrusted_repo_file_that_only_tightens_applies_silently(project):
    user_file("usd = 5\nwarn_at = 0.9\n[team]\nmonthly_usd = 200\n")
    (project / ".capguard.toml").write_text(
        'usd = 1\ntokens = "100k"\nwall = "10m"\nwarn_at = 0.5\ngrace = "1s"\nkill_after = "1s"\nunpriced = "stop"\n'
        "map_tokens = 0\nstuck = 2\n[team]\nmonthly_usd = 20\n[agents.aider]\nsteps = 5\n"
    )
    settings = load(project)
    assert settings.ignored == [] and notices(settings) == []
    assert (settings.caps.usd_micro, settings.caps.tokens, settings.caps.wall_s, settings.caps.steps) == (
        1_000_000,
        100_000,
        600.0,
        5,
    )
    assert (settings.caps.warn_at, settings.supervise.grace_s, settings.supervise.kill_after_s) == (0.5, 1.0, 1.0)
    assert (settings.caps.map_tokens, settings.caps.stuck) == (0, 2)
    assert settings.team.monthly_usd == 20_000_000
    assert settings.origin("steps") == f"{project / '.capguard.toml'} [agents.aider]"


def test_stricter_is_judged_against_the_value_in_force_below(project):
    user_file("usd = 1\n")
    (project / ".capguard.toml").write_text("usd = 3\n")  # a cap, but above the user's
    settings = load(project)
    assert settings.caps.usd_micro == 1_000_000 and settings.ignored[0].keys == ("usd",)


def test_the_users_own_flags_still_beat_an_untrusted_repo_file(project):
    (project / ".capguard.toml").write_text("usd = 1\n")
    assert load(project, flags={"usd": "5"}).caps.usd_micro == 5_000_000


def test_a_trusted_repo_file_applies_in_full(project):
    repo_file = project / ".capguard.toml"
    repo_file.write_text(HOSTILE)
    trust.trust(repo_file)
    settings = load(project)
    assert settings.launch.command == "/bin/sh" and settings.caps.usd_micro is None
    assert settings.layers[-1].trusted and settings.ignored == []


def test_a_trusted_file_that_changes_is_untrusted_again(project):
    repo_file = project / ".capguard.toml"
    repo_file.write_text('[agents.aider]\ncommand = "my-aider"\n')
    trust.trust(repo_file)
    assert load(project).launch.command == "my-aider"
    repo_file.write_text('[agents.aider]\ncommand = "/bin/sh"\n')
    settings = load(project)
    assert settings.launch.command is None and not settings.layers[-1].trusted


def test_untrust_forgets_a_file(project):
    repo_file = project / ".capguard.toml"
    repo_file.write_text('[agents.aider]\ncommand = "my-aider"\n')
    trust.trust(repo_file)
    assert trust.untrust(repo_file) is True
    assert load(project).launch.command is None
    assert trust.untrust(repo_file) is False


def test_the_trust_store_keys_on_the_resolved_path(project, tmp_path):
    repo_file = project / ".capguard.toml"
    repo_file.write_text('[agents.aider]\ncommand = "my-aider"\n')
    trust.trust(project / ".." / "project" / ".capguard.toml")
    assert load(project).launch.command == "my-aider"
    twin = tmp_path / "clone"
    twin.mkdir()
    (twin / ".capguard.toml").write_text(repo_file.read_text())  # same content, another place: not trusted
    assert load(twin).launch.command is None


def test_the_trust_store_is_private_and_a_corrupt_one_trusts_nothing(project):
    repo_file = project / ".capguard.toml"
    repo_file.write_text('[agents.aider]\ncommand = "my-aider"\n')
    trust.trust(repo_file)
    store = trust.store_path()
    assert store.stat().st_mode & 0o777 == 0o600
    assert json.loads(store.read_text())["files"] == {str(repo_file.resolve()): trust.digest(repo_file.read_bytes())}
    store.write_text("{not json")
    assert load(project).launch.command is None
    trust.trust(repo_file)  # rewrites it
    assert load(project).launch.command == "my-aider"


def test_a_bad_value_in_an_untrusted_file_is_still_an_error(project):
    (project / ".capguard.toml").write_text("[agents.aider]\nargs = 3\n")
    with pytest.raises(ConfigError, match=r"\[agents\.aider\]: args"):
        load(project)


def test_the_user_file_is_trusted(project):
    user_file('usd = "off"\nledger = "/tmp/mine.db"\n[agents.aider]\ncommand = "my-aider"\n')
    settings = load(project)
    assert settings.launch.command == "my-aider" and settings.charge.ledger == "/tmp/mine.db" and settings.ignored == []


# -- team locks ---------------------------------------------------------------------------------------------------


def team_file(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "team.toml"
    path.write_text(text)
    return path


TEAM = (
    'ledger = "postgresql://db.example/capguard"\nline = "infra"\nusd = 10\n[team]\nmonthly_usd = 200\n'
    '[prices."openai/gpt-4o"]\ninput = 2.5\noutput = 10\n'
)


def test_under_a_team_config_its_ledger_identity_prices_and_monthly_caps_are_locked(project, tmp_path):
    team = team_file(tmp_path, TEAM)
    mine = user_file(
        'ledger = "/tmp/mine.db"\nuser = "someone@else"\nline = "cheap"\nusd = 50\n'
        '[team]\nmonthly_usd = 1000\n[prices."openai/gpt-4o"]\ninput = 0\noutput = 0\n'
    )
    settings = load(
        project,
        env={"CAPGUARD_TEAM_CONFIG": str(team), "CAPGUARD_LEDGER": "/tmp/env.db", "CAPGUARD_USER": "x@y"},
        flags={"line": "other"},
    )
    assert settings.locks == frozenset(config.TEAM_LOCKS) and settings.lock_origin == str(team)
    assert settings.charge.ledger == "postgresql://db.example/capguard" and settings.origin("ledger") == str(team)
    assert settings.charge.line == "infra" and settings.charge.user is None
    assert settings.team.monthly_usd == 200_000_000 and settings.prices["openai/gpt-4o"].input == 2.5
    assert settings.caps.usd_micro == 50_000_000  # not locked: the user's own file may raise it
    assert [(i.source, i.keys, i.why) for i in settings.ignored] == [
        (str(mine), ("ledger", "user", "line", "team.monthly_usd", "prices"), "locked"),
        ("environment CAPGUARD_LEDGER", ("ledger",), "locked"),
        ("environment CAPGUARD_USER", ("user",), "locked"),
        ("--line other", ("line",), "locked"),
    ]
    assert notices(settings)[-1] == (
        f"capguard: ignored --line other: line locked by the team config {team} (only a stricter value is allowed)"
    )


def test_a_locked_cap_may_still_be_lowered_by_anyone(project, tmp_path):
    team = team_file(tmp_path, 'lock = ["usd"]\n' + TEAM)
    user_file("[team]\nmonthly_usd = 100\n")
    env = {"CAPGUARD_TEAM_CONFIG": str(team)}
    settings = load(project, env=env, flags={"usd": "2"})
    assert settings.caps.usd_micro == 2_000_000 and settings.team.monthly_usd == 100_000_000 and settings.ignored == []
    raised = load(project, env={**env, "CAPGUARD_USD": "20"}, flags={"usd": "off"})
    assert raised.caps.usd_micro == 10_000_000 and raised.origin("usd") == str(team)
    assert [i.source for i in raised.ignored] == ["environment CAPGUARD_USD", "--usd off"]


def test_a_locked_key_holds_against_a_trusted_repo_file_too(project, tmp_path):
    team = team_file(tmp_path, 'lock = ["usd"]\n' + TEAM)
    repo_file = project / ".capguard.toml"
    repo_file.write_text('usd = 500\nledger = "/tmp/x.db"\n[agents.aider]\ncommand = "my-aider"\n')
    trust.trust(repo_file)
    settings = load(project, env={"CAPGUARD_TEAM_CONFIG": str(team)})
    assert settings.caps.usd_micro == 10_000_000 and settings.charge.ledger == "postgresql://db.example/capguard"
    assert settings.launch.command == "my-aider"
    assert settings.ignored[0].keys == ("usd", "ledger") and settings.ignored[0].why == "locked"


def test_the_team_config_can_unlock_a_default_lock(project, tmp_path):
    team = team_file(tmp_path, 'unlock = ["line"]\n' + TEAM)
    settings = load(project, env={"CAPGUARD_TEAM_CONFIG": str(team)}, flags={"line": "other"})
    assert settings.charge.line == "other" and "line" not in settings.locks


def test_the_team_ledger_variable_is_the_team_layers_ledger(project, tmp_path):
    team = team_file(tmp_path, "[team]\nmonthly_usd = 200\n")
    settings = load(
        project, env={"CAPGUARD_TEAM_CONFIG": str(team), "CAPGUARD_TEAM_LEDGER": "postgresql://db.example/team"}
    )
    assert settings.charge.ledger == "postgresql://db.example/team"
    assert settings.origin("ledger") == "environment CAPGUARD_TEAM_LEDGER"


@pytest.mark.parametrize(
    "text,match",
    [
        ('lock = ["dollars"]\n', "lock: 'dollars' is not a key that can be locked"),
        ('lock = "usd"\n', "lock: expected a list of keys"),
        ("unlock = [3]\n", "unlock: expected a list of keys"),
    ],
)
def test_bad_locks_name_the_team_file(project, tmp_path, text, match):
    team = team_file(tmp_path, text)
    with pytest.raises(ConfigError, match=match) as info:
        load(project, env={"CAPGUARD_TEAM_CONFIG": str(team)})
    assert str(info.value).startswith(str(team))


def test_only_the_team_config_locks_keys(project):
    path = user_file('lock = ["usd"]\n')
    with pytest.raises(ConfigError, match="only the team config"):
        load(project)
    assert path.exists()


def test_a_missing_team_config_is_an_error_naming_the_variable(project, tmp_path):
    with pytest.raises(ConfigError, match="CAPGUARD_TEAM_CONFIG: .*no such file"):
        load(project, env={"CAPGUARD_TEAM_CONFIG": str(tmp_path / "nope.toml")})
