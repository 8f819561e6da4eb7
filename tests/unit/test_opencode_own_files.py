"""Strict mode and a project's own OpenCode files: what would run code inside OpenCode (plugins, tool files, a
config's `plugin` list, SDK packages the proxy does not front) is refused, naming the file; the user's own folders
and the declarative rest are not."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from capguard.agents.opencode.adapter import ADAPTER, SDK_DIALECTS, _jsonc
from capguard.agents.opencode.own_files import project_dirs, refusals
from capguard.config.settings import load_settings
from capguard.core.errors import ConfigError

FRONTED = frozenset(SDK_DIALECTS)


def found(directory: Path, home: Path, env: dict | None = None) -> list[str]:
    return refusals(directory, env or {}, home, _jsonc, FRONTED)


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


@pytest.fixture
def repo(tmp_path) -> Path:
    (tmp_path / "repo" / ".git").mkdir(parents=True)
    return tmp_path / "repo"


def test_the_project_is_the_directory_up_to_its_git_root_never_home(tmp_path, repo):
    sub = repo / "pkg" / "a"
    sub.mkdir(parents=True)
    assert project_dirs(sub, tmp_path / "home") == [sub, repo / "pkg", repo]
    home = tmp_path / "home"
    (home / "work").mkdir(parents=True)
    assert project_dirs(home / "work", home) == [home / "work"]  # outside git: up to, not into, home


@pytest.mark.parametrize("name", ["plugin/p.js", "plugins/p.ts", "tool/t.ts", "tools/t.js"])
def test_code_opencode_imports_at_start_is_refused_naming_the_file(repo, tmp_path, name):
    path = write(repo / ".opencode" / name, "export default {}\n")
    (line,) = found(repo, tmp_path / "home")
    assert str(path) in line and "past the proxy" in line


def test_a_parent_folders_plugin_counts_and_declarative_files_do_not(repo, tmp_path):
    write(repo / ".opencode" / "agent" / "review.md", "---\nmodel: evil/x\n---\n")
    write(repo / ".opencode" / "command" / "go.md", "go\n")
    write(repo / ".opencode" / "plugin" / "README.md", "not code\n")
    sub = repo / "pkg"
    sub.mkdir()
    assert found(sub, tmp_path / "home") == []
    path = write(repo / ".opencode" / "plugins" / "p.ts", "export const P = async () => ({})\n")
    assert [str(path) in line for line in found(sub, tmp_path / "home")] == [True]


def test_the_users_own_folders_and_the_switch_that_skips_project_files(tmp_path):
    home = tmp_path / "home"
    write(home / ".opencode" / "plugin" / "mine.js", "export default {}\n")
    (home / "work").mkdir()
    assert found(home / "work", home) == []
    repo = tmp_path / "repo"
    write(repo / ".git" / "HEAD", "")
    write(repo / ".opencode" / "plugin" / "p.js", "export default {}\n")
    assert found(repo, home) and found(repo, home, {"OPENCODE_DISABLE_PROJECT_CONFIG": "1"}) == []


@pytest.mark.parametrize(
    ("config", "word"),
    [
        ({"plugin": ["file://./p.js"]}, "`plugin`"),
        ({"plugin": ["some-npm-plugin"]}, "`plugin`"),
        ({"provider": {"fake": {"npm": "file:///tmp/sdk.js"}}}, "provider.fake.npm"),
        ({"provider": {"fake": {"npm": "evil-sdk"}}}, "provider.fake.npm"),
        (
            {"provider": {"fake": {"models": {"m": {"provider": {"npm": "file://./sdk.js"}}}}}},
            "provider.fake.models.m.provider.npm",
        ),
    ],
)
@pytest.mark.parametrize("where", ["opencode.json", "opencode.jsonc", ".opencode/opencode.json"])
def test_a_project_config_that_loads_code_is_refused(repo, tmp_path, config, word, where):
    text = json.dumps(config)
    path = write(repo / where, f"// a repo's config\n{text}" if where.endswith("c") else text)
    (line,) = found(repo, tmp_path / "home")
    assert word in line and str(path) in line


def test_a_project_config_with_fronted_sdks_and_routing_only_is_left_to_the_proxy(repo, tmp_path):
    config = {
        "provider": {
            "fake": {"npm": "@ai-sdk/openai-compatible", "options": {"baseURL": "http://127.0.0.1:1/v1"}},
            "other": {"models": {"m": {"provider": {"npm": "@ai-sdk/anthropic"}, "options": {"x": 1}}}},
        },
        "model": "fake/m",
        "plugin": [],
    }
    write(repo / "opencode.json", json.dumps(config))
    assert found(repo, tmp_path / "home") == []
    path = write(repo / ".opencode" / "opencode.jsonc", "{ not json")
    (line,) = found(repo, tmp_path / "home")
    assert str(path) in line and "not JSON" in line


def test_the_strict_plan_refuses_in_one_line_and_the_files_meter_does_not(tmp_path, monkeypatch, repo):
    binary = write(tmp_path / "bin" / "opencode", "#!/bin/sh\n")
    binary.chmod(0o755)
    plugin = write(repo / ".opencode" / "plugin" / "p.js", "export default {}\n")
    monkeypatch.chdir(repo)
    env = {"PATH": str(binary.parent), "HOME": str(tmp_path / "home"), "XDG_DATA_HOME": str(tmp_path / "data")}
    env["OPENCODE_CONFIG_CONTENT"] = json.dumps({"model": "openai/gpt-4o-mini"})
    strict = load_settings("opencode", flags={"meter": "proxy"}, env={}, files=[])
    with pytest.raises(ConfigError) as refused:
        ADAPTER.plan(["run", "go"], strict, tmp_path, env, "r1")
    line = str(refused.value)
    assert "\n" not in line and str(plugin) in line and "--meter files" in line
    plain = load_settings("opencode", flags={}, env={}, files=[])
    assert ADAPTER.plan(["run", "go"], plain, tmp_path, env, "r1").fronts is None
    (plugin).unlink()
    assert ADAPTER.plan(["run", "go"], strict, tmp_path, env, "r1").fronts
