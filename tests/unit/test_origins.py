"""Where each cap came from, in words: a flag, the user's config file, the team file, a repo file, a default."""

from __future__ import annotations

from capguard.config.origins import cap_origins
from capguard.config.settings import load_settings


def test_each_cap_names_the_layer_that_set_it(tmp_path):
    team = tmp_path / "team.toml"
    team.write_text('unlock = ["usd"]\nsteps = 40\n[team]\nmonthly_usd = 100\n[team.lines.infra]\nmonthly_usd = 20\n')
    user = tmp_path / "config.toml"
    user.write_text('wall = "30m"\n[agents.aider]\ntokens = "2M"\n')
    env = {"CAPGUARD_TEAM_CONFIG": str(team), "CAPGUARD_CONFIG": str(user), "CAPGUARD_WARN_AT": "0.5"}
    settings = load_settings("aider", flags={"usd": "5", "line": "infra"}, env=env, cwd=tmp_path)
    origins = cap_origins(settings, "alice@example.com")
    assert origins["usd"] == "flag --usd"
    assert origins["wall"] == f"config file {user}"
    assert origins["tokens"] == f"config file {user} [agents.aider]"
    assert origins["steps"] == f"team file {team}"
    assert origins["warn_at"] == "environment CAPGUARD_WARN_AT"
    assert origins["stuck"] == "default"
    assert origins["monthly"] == f"team file {team}"  # alice's default monthly cap and the infra line's


def test_a_repo_file_is_named_as_such_and_no_team_means_no_monthly_origin(tmp_path):
    (tmp_path / ".capguard.toml").write_text("steps = 10\n")  # untrusted, but a tighter cap applies
    settings = load_settings("aider", env={"CAPGUARD_CONFIG": ""}, cwd=tmp_path)
    origins = cap_origins(settings, "alice")
    assert origins["steps"] == f"repo file {tmp_path / '.capguard.toml'}"
    assert "monthly" not in origins


def test_notifications_are_off_by_default_and_an_untrusted_repo_file_cannot_switch_them_on(tmp_path):
    assert load_settings("aider", env={}, cwd=tmp_path).output.notify == "off"
    (tmp_path / ".capguard.toml").write_text('notify = "desktop"\n')
    settings = load_settings("aider", env={}, cwd=tmp_path)
    assert settings.output.notify == "off" and settings.ignored[0].keys == ("notify",)
    assert load_settings("aider", flags={"notify": "bell"}, env={}, cwd=tmp_path).output.notify == "bell"
