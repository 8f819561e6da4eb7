"""Strict mode's settings: `strict = true`, CAPGUARD_STRICT and --strict are `meter = "proxy"`, with their origin;
[models] allow/deny lists; an untrusted repo file may turn strict mode on (and deny more, allow fewer), never the
reverse."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from capguard.config.settings import load_settings
from capguard.core.errors import ConfigError


def load(project: Path, agent: str | None = None, *, env: dict | None = None, flags: dict | None = None):
    env = dict(env or {})
    env.setdefault("XDG_CONFIG_HOME", os.environ["XDG_CONFIG_HOME"])
    return load_settings(agent, flags=flags, env=env, cwd=project)


@pytest.fixture
def project(tmp_path):
    folder = tmp_path / "project"
    folder.mkdir()
    return folder


@pytest.fixture
def user_file():
    path = Path(os.environ["XDG_CONFIG_HOME"]) / "capguard" / "config.toml"
    path.parent.mkdir(parents=True)
    return path


def test_files_is_the_default_meter(project):
    settings = load(project)
    assert (settings.supervise.meter, settings.origin("meter")) == ("files", "default")


def test_strict_in_a_file_in_the_environment_and_as_a_flag(project, user_file):
    user_file.write_text("strict = true\n")
    settings = load(project)
    assert (settings.supervise.meter, settings.origin("meter")) == ("proxy", str(user_file))
    settings = load(project, env={"CAPGUARD_STRICT": "0"})
    assert (settings.supervise.meter, settings.origin("meter")) == ("files", "environment CAPGUARD_STRICT")
    settings = load(project, env={"CAPGUARD_STRICT": "0"}, flags={"strict": "true"})
    assert (settings.supervise.meter, settings.origin("meter")) == ("proxy", "--strict")
    settings = load(project, flags={"strict": "true", "meter": "files"})
    assert settings.supervise.meter == "files"  # --meter names the meter outright


def test_strict_per_agent_and_bad_values(project, user_file):
    user_file.write_text('[agents.claude]\nstrict = true\n[agents.aider]\nmeter = "files"\n')
    assert load(project, "claude").supervise.meter == "proxy"
    assert load(project, "aider").supervise.meter == "files"
    user_file.write_text('strict = "maybe"\n')
    with pytest.raises(ConfigError, match="strict: 'maybe' is not a boolean"):
        load(project)
    user_file.write_text('meter = "otel"\n')
    with pytest.raises(ConfigError, match="meter: 'otel' is not one of files, proxy"):
        load(project)


def test_allow_and_deny_live_in_the_models_table(project, user_file):
    user_file.write_text('[models]\ndeny = ["claude-opus-*"]\nallow = ["claude-*", "gpt-4o*"]\n')
    settings = load(project)
    assert settings.models.deny == ("claude-opus-*",) and settings.models.allow == ("claude-*", "gpt-4o*")
    user_file.write_text("[models]\ndeny = [3]\n")
    with pytest.raises(ConfigError, match="models.deny: expected a list of model names or globs"):
        load(project)
    user_file.write_text('deny = ["claude-opus-*"]\n')  # top-level allow/deny are gone: one place, [models]
    with pytest.raises(ConfigError, match="deny: unknown key"):
        load(project)


def test_an_untrusted_repo_file_may_turn_strict_on_never_off(project, user_file):
    (project / ".capguard.toml").write_text('strict = true\n[models]\ndeny = ["claude-opus-*"]\n')
    settings = load(project)
    assert settings.supervise.meter == "proxy" and settings.models.deny == ("claude-opus-*",)
    assert not settings.ignored
    user_file.write_text('strict = true\n[models]\nallow = ["claude-*"]\ndeny = ["gpt-*"]\n')
    (project / ".capguard.toml").write_text('meter = "files"\n[models]\nallow = []\ndeny = []\n')
    settings = load(project)
    assert settings.supervise.meter == "proxy" and settings.models.allow == ("claude-*",)
    assert settings.models.deny == ("gpt-*",)  # an empty deny list removes no deny in force
    assert {key for item in settings.ignored for key in item.keys} == {"meter", "models.allow"}


def test_an_untrusted_repo_file_may_deny_more_and_allow_fewer(project, user_file):
    user_file.write_text('[models]\nallow = ["claude-*", "gpt-4o*"]\ndeny = ["gpt-*"]\n')
    (project / ".capguard.toml").write_text('[models]\nallow = ["claude-*"]\ndeny = ["claude-opus-*"]\n')
    settings = load(project)
    assert settings.models.allow == ("claude-*",)  # narrowed
    assert settings.models.deny == ("gpt-*", "claude-opus-*")  # added to, never replaced
    assert not settings.ignored
    (project / ".capguard.toml").write_text('[models]\nallow = ["claude-*", "o3*"]\n')  # widened: refused
    settings = load(project)
    assert settings.models.allow == ("claude-*", "gpt-4o*")
    assert {key for item in settings.ignored for key in item.keys} == {"models.allow"}


def test_an_untrusted_repo_file_may_lower_or_add_model_caps_never_lift_them(project, user_file):
    user_file.write_text('[models."claude-opus-*"]\nusd = 2\ntokens = "1M"\n')
    (project / ".capguard.toml").write_text(
        '[models."claude-opus-*"]\nusd = 5\ntokens = "500k"\n[models."gpt-*"]\nusd = 0.5\n'
    )
    settings = load(project)
    caps = {cap.pattern: (cap.usd_micro, cap.tokens) for cap in settings.models.caps}
    assert caps == {"claude-opus-*": (2_000_000, 500_000), "gpt-*": (500_000, None)}
    assert {key for item in settings.ignored for key in item.keys} == {'models."claude-opus-*".usd'}
    (project / ".capguard.toml").write_text('[models."claude-opus-*"]\nusd = "off"\n')
    settings = load(project)
    assert {cap.pattern: (cap.usd_micro, cap.tokens) for cap in settings.models.caps} == {
        "claude-opus-*": (2_000_000, 1_000_000)  # the token cap the repo file did not name stays too
    }
