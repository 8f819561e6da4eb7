"""Strict mode's settings: `strict = true`, CAPGUARD_STRICT and --strict are `meter = "proxy"`, with their origin;
allow/deny model patterns; an untrusted repo file may turn strict mode on, never off."""

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
    assert (settings["meter"], settings.origin("meter")) == ("files", "default")


def test_strict_in_a_file_in_the_environment_and_as_a_flag(project, user_file):
    user_file.write_text("strict = true\n")
    settings = load(project)
    assert (settings["meter"], settings.origin("meter")) == ("proxy", str(user_file))
    settings = load(project, env={"CAPGUARD_STRICT": "0"})
    assert (settings["meter"], settings.origin("meter")) == ("files", "environment CAPGUARD_STRICT")
    settings = load(project, env={"CAPGUARD_STRICT": "0"}, flags={"strict": "true"})
    assert (settings["meter"], settings.origin("meter")) == ("proxy", "--strict")
    settings = load(project, flags={"strict": "true", "meter": "files"})
    assert settings["meter"] == "files"  # --meter names the meter outright


def test_strict_per_agent_and_bad_values(project, user_file):
    user_file.write_text('[agents.claude]\nstrict = true\n[agents.aider]\nmeter = "files"\n')
    assert load(project, "claude")["meter"] == "proxy"
    assert load(project, "aider")["meter"] == "files"
    user_file.write_text('strict = "maybe"\n')
    with pytest.raises(ConfigError, match="strict: 'maybe' is not a boolean"):
        load(project)
    user_file.write_text('meter = "otel"\n')
    with pytest.raises(ConfigError, match="meter: 'otel' is not one of files, proxy"):
        load(project)


def test_allow_and_deny_patterns(project, user_file):
    user_file.write_text('deny = ["claude-opus-*"]\nallow = ["claude-*", "gpt-4o*"]\n')
    settings = load(project)
    assert settings["deny"] == ["claude-opus-*"] and settings["allow"] == ["claude-*", "gpt-4o*"]
    assert load(project, env={"CAPGUARD_DENY": "a-*, b-*"})["deny"] == ["a-*", "b-*"]
    user_file.write_text("deny = [3]\n")
    with pytest.raises(ConfigError, match="deny: .* is not a list of model patterns"):
        load(project)


def test_an_untrusted_repo_file_may_turn_strict_on_never_off(project, user_file):
    (project / ".capguard.toml").write_text('strict = true\ndeny = ["claude-opus-*"]\n')
    settings = load(project)
    assert settings["meter"] == "proxy" and settings["deny"] == ["claude-opus-*"]
    assert not settings.ignored
    user_file.write_text('strict = true\nallow = ["claude-*"]\n')
    (project / ".capguard.toml").write_text('meter = "files"\nallow = []\n')
    settings = load(project)
    assert settings["meter"] == "proxy" and settings["allow"] == ["claude-*"]
    assert {key for item in settings.ignored for key in item.keys} == {"meter", "allow"}
