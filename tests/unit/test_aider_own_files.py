"""Strict mode reads aider's own settings files (a cloned repo's among them): every model they name must be on a
provider the proxy fronts, and nothing in them may route aider's requests around the proxy."""

from __future__ import annotations

import pytest

from capguard.agents.aider.adapter import BASE_VARIABLES, SHORTCUTS
from capguard.agents.aider.adapter import strict_fronts as aider_fronts
from capguard.agents.aider.own_files import named_in_files
from capguard.core.errors import ConfigError


@pytest.fixture
def repo(tmp_path, monkeypatch):
    (tmp_path / "repo" / ".git").mkdir(parents=True)
    (tmp_path / "home").mkdir()
    monkeypatch.chdir(tmp_path / "repo")
    return tmp_path / "repo"


def env_of(repo):
    return {"HOME": str(repo.parent / "home")}


def named(repo, args=(), env=None):
    return named_in_files(list(args), env or env_of(repo), SHORTCUTS, BASE_VARIABLES)


def test_models_named_in_every_file_aider_reads(repo):
    (repo / ".aider.conf.yml").write_text("# weak-model: groq/commented-out\n--weak-model: 'groq/llama-3.1-8b'\n")
    (repo.parent / "home" / ".aider.conf.yml").write_text(
        'editor-model: "deepseek/deepseek-chat"  # editor\n4o: true\n'
    )
    (repo / ".env").write_text("export AIDER_MODEL=gemini/gemini-2.5-pro\nAIDER_SONNET=1\n")
    (repo / ".aider.model.settings.yml").write_text(
        "- name: openai/gpt-4o\n  weak_model_name: mistral/mistral-small\n"
        "- {name: gpt-4o-mini, editor_model_name: 'xai/grok-3', weak_model_name: null}\n"
    )
    found = named(repo)
    assert set(found.models) == {
        "groq/llama-3.1-8b",
        "deepseek/deepseek-chat",
        "openai/gpt-4o",
        "gemini/gemini-2.5-pro",
        SHORTCUTS["--sonnet"],
        "mistral/mistral-small",
        "xai/grok-3",
    }
    assert found.models["groq/llama-3.1-8b"] == f"weak-model in {repo / '.aider.conf.yml'}"  # `--weak-model:` too
    assert not found.refusals


@pytest.mark.parametrize(
    ("name", "text", "word"),
    [
        (".aider.model.settings.yml", "- name: aider/extra_params\n  extra_params:\n    api_base: http://x/v1\n", "api_base"),
        (".aider.model.settings.yml", '- {name: gpt-4o, extra_params: {"base_url": "http://x"}}\n', "base_url"),
        (".aider.model.settings.yml", "- name: gpt-4o\n  extra_params:\n    custom_llm_provider: bedrock\n", "custom_llm"),
        (".aider.model.settings.yml", '- name: gpt-4o\n  extra_params:\n    "api\\x5fbase": http://x\n', "escaped"),
        (".aider.conf.yml", '"weak\\x2dmodel": groq/llama\n', "escaped"),
        (".aider.conf.yml", "{weak-model: xai/grok-3-mini}\n", "flow mapping"),
        (".aider.conf.yml", "? weak-model\n: xai/grok-3-mini\n", "flow mapping"),
        (".aider.conf.yml", "--set-env: OPENAI_API_BASE=http://x\n", "set-env in"),
        (".aider.model.settings.yml", "- name: gpt-4o\n  ? weak_model_name\n  : xai/grok-3-mini\n", "complex key"),
        (".aider.conf.yml", "model-settings-file: elsewhere.yml\n", "model-settings-file in"),
        (".aider.conf.yml", "set-env: OPENAI_API_BASE=http://x\n", "set-env in"),
        (".env", "AIDER_MODEL_SETTINGS_FILE=x.yml\n", "AIDER_MODEL_SETTINGS_FILE in"),
        (".env", "OPENROUTER_API_BASE=http://x\n", "OPENROUTER_API_BASE in"),
        (".env", "NO_PROXY=\n", "NO_PROXY in"),
        (".env", "USE_LITELLM_PROXY=True\nLITELLM_PROXY_API_BASE=http://x\n", "USE_LITELLM_PROXY in"),
        (".env", "AZURE_API_BASE=http://x\n", "AZURE_API_BASE in"),
        (".aider.model.settings.yml", "- name: aider/extra_params\n  extra_params:\n    aws_bedrock_runtime_endpoint: "
         "http://x\n", "aws_bedrock_runtime_endpoint"),
        (".env", "AWS_BEDROCK_RUNTIME_ENDPOINT=http://x\n", "AWS_BEDROCK_RUNTIME_ENDPOINT in"),
    ],
)  # fmt: skip
def test_routes_around_the_proxy_are_refused(repo, name, text, word):
    (repo / name).write_text(text)
    found = named(repo)
    assert found.refusals and word in found.refusals[0] and name in found.refusals[0]
    with pytest.raises(ConfigError, match="cannot meter aider here"):
        aider_fronts(["--model", "gpt-4o"], env_of(repo))


def test_a_conf_files_env_file_is_read_too(repo):
    (repo / ".aider.conf.yml").write_text("env-file: more.env\n")
    (repo / "more.env").write_text("AIDER_WEAK_MODEL=groq/llama\n")
    assert "groq/llama" in named(repo).models


def test_routing_variables_in_the_environment_are_refused(repo):
    found = named(repo, env={**env_of(repo), "AIDER_SET_ENV": "OPENAI_API_BASE=http://x"})
    assert found.refusals == ["AIDER_SET_ENV in the environment may send requests elsewhere"]
    found = named(repo, env={**env_of(repo), "USE_LITELLM_PROXY": "True"})
    assert found.refusals == ["USE_LITELLM_PROXY in the environment may send requests elsewhere"]
    assert not named(repo, env={**env_of(repo), "USE_LITELLM_PROXY": "false"}).refusals


def test_a_weak_model_a_repo_names_on_a_provider_not_fronted_is_refused(repo):
    (repo / ".aider.model.settings.yml").write_text("- name: openai/gpt-4o\n  weak_model_name: xai/grok-3-mini\n")
    with pytest.raises(ConfigError, match=r"weak_model_name in .*xai/grok-3-mini goes to provider 'xai'"):
        aider_fronts(["--model", "gpt-4o"], env_of(repo))


def test_a_model_a_file_names_on_a_fronted_provider_gets_fronted(repo):
    """No model on the command line, an Anthropic key in the environment (aider's default: Sonnet), but the repo's
    config picks gpt-4o: both providers are fronted, so the call aider really makes goes through the proxy."""
    (repo / ".aider.conf.yml").write_text("model: gpt-4o\n")
    fronts, _, _ = aider_fronts([], {**env_of(repo), "ANTHROPIC_API_KEY": "sk-ant-x"})
    assert {f.mount for f in fronts} == {"openai", "anthropic"}
    fronts, _, _ = aider_fronts([], env_of(repo))  # no key at all: the file's model alone
    assert [f.mount for f in fronts] == ["openai"]


def test_files_that_name_fronted_models_only_change_nothing(repo):
    (repo / ".aider.conf.yml").write_text("weak-model: gpt-4o-mini\nstream: false\nlint-cmd: 'python: ruff'\n")
    (repo / ".aider.model.settings.yml").write_text(
        "- name: gpt-4o\n  weak_model_name: gpt-4o-mini\n  use_temperature: false\n"
    )
    fronts, args, _ = aider_fronts(["--model", "gpt-4o"], env_of(repo))
    assert [f.mount for f in fronts] == ["openai"] and args == ["--model", "gpt-4o"]


def test_what_aider_would_not_use_is_not_refused(repo):
    """aider's command line beats its environment (a .env's included), which beats its config files; a model
    settings entry's weak model counts only for a main model in use and when no weak model is named."""
    home = repo.parent / "home"
    (home / ".aider.conf.yml").write_text("model: ollama/llama3\nweak-model: xai/grok-3-mini\n")
    fronts, _, _ = aider_fronts(["--model", "gpt-4o", "--weak-model", "gpt-4o-mini"], env_of(repo))
    assert [f.mount for f in fronts] == ["openai"]
    (home / ".aider.conf.yml").unlink()
    settings = repo / ".aider.model.settings.yml"
    settings.write_text("- name: claude-3-opus-20240229\n  weak_model_name: xai/grok-3-mini\n")
    fronts, _, _ = aider_fronts(["--model", "gpt-4o"], env_of(repo))  # an entry for a model not in use
    assert [f.mount for f in fronts] == ["openai"]
    settings.write_text("- name: openai/gpt-4o\n  weak_model_name: xai/grok-3-mini\n")
    fronts, _, _ = aider_fronts(["--model", "gpt-4o", "--weak-model", "gpt-4o-mini"], env_of(repo))
    assert [f.mount for f in fronts] == ["openai"]  # the named weak model replaces the entry's
    with pytest.raises(ConfigError, match="weak_model_name in"):
        aider_fronts(["--model", "gpt-4o"], env_of(repo))
    settings.unlink()
    (repo / ".aider.conf.yml").write_text("weak-model: gpt-4o-mini\n")
    (repo / ".env").write_text("AIDER_WEAK_MODEL=xai/grok-3-mini\n")  # loaded over the environment: it wins
    with pytest.raises(ConfigError, match="AIDER_WEAK_MODEL in .*xai/grok-3-mini"):
        aider_fronts(["--model", "gpt-4o"], env_of(repo))
