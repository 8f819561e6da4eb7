"""The OpenCode adapter's reading of its command line and config: the run's directory, the model, its price."""

from __future__ import annotations

import json
import signal
from pathlib import Path

import pytest

from capguard.agents.opencode.adapter import (
    ADAPTER,
    configured_model,
    has_configured_price,
    opencode_config,
    positionals,
    run_directory,
)
from capguard.config.settings import load_settings
from capguard.core.errors import ConfigError


def test_positionals_skip_option_values():
    assert positionals(["run", "-m", "a/b", "--auto", "hello there"]) == ["run", "hello there"]
    assert positionals(["--model", "x/y", "proj"]) == ["proj"]


def test_the_run_directory_is_what_opencode_records(tmp_path):
    (tmp_path / "sub").mkdir()
    env = {"PWD": str(tmp_path)}
    assert str(tmp_path) in run_directory([], Path("/elsewhere"), env)  # OpenCode takes $PWD over the process's
    assert str(tmp_path / "sub") in run_directory(["run", "--dir", "sub", "go"], Path("/"), env)
    assert str(tmp_path / "sub") in run_directory(["sub"], Path("/"), env)  # the TUI's `opencode PROJECT`
    assert str(tmp_path) in run_directory(["stats"], Path("/"), env)  # a subcommand, not a folder


def test_the_model_and_its_configured_price(tmp_path):
    config_file = tmp_path / "opencode.jsonc"
    config_file.write_text(
        '{\n // the fake\n "provider": {"fake": {"models": {"m": {"cost": {"input": 1, "output": 2}}},}},\n'
        ' "model": "fake/m", /* trailing */ }\n'
    )
    config = opencode_config({"HOME": str(tmp_path), "OPENCODE_CONFIG": str(config_file)}, tmp_path)
    assert configured_model([], config) == ("fake", "m")
    assert configured_model(["-m", "openai/gpt-4o"], config) == ("openai", "gpt-4o")
    assert has_configured_price(config, "fake", "m")
    assert not has_configured_price(config, "openai", "gpt-4o")
    content = {"OPENCODE_CONFIG_CONTENT": json.dumps({"model": "x/y"}), "HOME": str(tmp_path)}
    assert configured_model([], opencode_config(content, tmp_path)) == ("x", "y")


def test_the_plan_meters_the_store_and_refuses_what_it_could_not_meter(tmp_path, monkeypatch):
    binary = tmp_path / "bin" / "opencode"
    binary.parent.mkdir()
    binary.write_text("#!/bin/sh\n")
    binary.chmod(0o755)
    monkeypatch.chdir(tmp_path)
    env = {"PATH": str(binary.parent), "HOME": str(tmp_path), "XDG_DATA_HOME": str(tmp_path / "data")}
    settings = load_settings("opencode", flags={}, env={}, files=[])
    plan = ADAPTER.plan(["run", "go"], settings, tmp_path, env, "r1")
    assert plan.argv == [str(binary), "run", "go"]
    assert [w.path for w in plan.watches] == [tmp_path / "data" / "opencode" / "opencode.db"]
    assert plan.watches[0].rows is not None and plan.polite_stop == [(signal.SIGINT, 0.0)]
    assert any("title" in spot for spot in plan.blind_spots)
    with pytest.raises(ConfigError, match="attach"):
        ADAPTER.plan(["run", "--attach", "http://localhost:4096", "go"], settings, tmp_path, env, "r1")
    with pytest.raises(ConfigError, match="memory"):
        ADAPTER.plan(["run", "go"], settings, tmp_path, {**env, "OPENCODE_DB": ":memory:"}, "r1")
