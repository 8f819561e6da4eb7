"""Codex's built-in Amazon Bedrock providers in strict mode: where their requests go, who signs them, what is
refused at start; and their models priced under Bedrock by either meter."""

from __future__ import annotations

import json

import pytest

from capguard.agents.codex.adapter import strict_front
from capguard.agents.codex.logs import RolloutParser, priced_name
from capguard.core.errors import ConfigError
from capguard.core.pricing import Pricer

KEYS = {"AWS_ACCESS_KEY_ID": "AKIDEXAMPLE", "AWS_SECRET_ACCESS_KEY": "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"}


def front(tmp_path, config: str = "", args: tuple[str, ...] = (), **env: str):
    (tmp_path / "config.toml").write_text(config)
    return strict_front(["exec", *args, "hi"], {**KEYS, **env}, tmp_path)


def test_mantle_is_fronted_in_the_environments_region_and_signed_as_bedrock_mantle(tmp_path):
    found, args, told = front(tmp_path, 'model_provider = "amazon-bedrock"\n', AWS_REGION="eu-west-1")
    assert found.upstream == "https://bedrock-mantle.eu-west-1.api.aws/openai/v1"
    assert found.signer is not None and (found.signer.how.service, found.signer.how.region) == (
        "bedrock-mantle",
        "eu-west-1",
    )
    assert (found.header, found.secret_env, found.restore, found.provider) == (
        "Authorization",
        "AWS_BEARER_TOKEN_BEDROCK",
        None,
        "bedrock",
    )
    assert told[:2] == ['model_provider="amazon-bedrock"', 'model_providers.amazon-bedrock.base_url="{url}"']
    assert 'web_search="disabled"' in told


def test_the_runtime_provider_goes_to_bedrock_runtime_signed_as_bedrock(tmp_path):
    found, _, _ = front(
        tmp_path, args=("-c", 'model_provider="amazon-bedrock-runtime"'), AWS_DEFAULT_REGION="us-east-2"
    )
    assert found.upstream == "https://bedrock-runtime.us-east-2.amazonaws.com/openai/v1"
    assert found.signer is not None and found.signer.how.service == "bedrock"


def test_the_region_comes_from_codex_then_the_environment_then_the_profile(tmp_path):
    config = 'model_provider = "amazon-bedrock"\n[model_providers.amazon-bedrock.aws]\nregion = "ap-northeast-1"\n'
    assert "ap-northeast-1" in front(tmp_path, config, AWS_REGION="us-west-2")[0].upstream
    over = ("-c", 'model_providers.amazon-bedrock.aws.region="eu-central-1"')
    assert "eu-central-1" in front(tmp_path, config, over, AWS_REGION="us-west-2")[0].upstream
    aws_config = tmp_path / "aws-config"
    aws_config.write_text("[profile dev]\nregion = eu-north-1\n")
    profiled = 'model_provider = "amazon-bedrock"\n[model_providers.amazon-bedrock.aws]\nprofile = "dev"\n'
    found = front(tmp_path, profiled, AWS_CONFIG_FILE=str(aws_config))[0]
    assert "eu-north-1" in found.upstream


def test_a_bedrock_api_key_is_sent_on_and_nothing_is_signed(tmp_path):
    found, _, _ = front(tmp_path, 'model_provider = "amazon-bedrock"\n', AWS_REGION="us-east-1",
                        AWS_BEARER_TOKEN_BEDROCK="users-own-key")  # fmt: skip
    assert found.signer is None and found.restore == "Bearer users-own-key"


def test_the_users_base_url_is_the_upstream(tmp_path):
    config = 'model_provider = "amazon-bedrock"\n[model_providers.amazon-bedrock]\nbase_url = "https://gw.example/openai/v1"\n'
    found, args, _ = front(tmp_path, config, ("-c", 'model_providers.amazon-bedrock.base_url="https://cli.example/v1"'),
                           AWS_REGION="us-east-1")  # fmt: skip
    assert found.upstream == "https://cli.example/v1" and not any("cli.example" in a for a in args)


@pytest.mark.parametrize(
    ("config", "args", "env", "word"),
    [
        ("", (), {}, "no AWS region"),
        ("", (), {"AWS_REGION": "us-east-1.evil.example"}, "malformed"),
        ('[model_providers.amazon-bedrock]\nauth = { command = "get-key" }\n', (), {"AWS_REGION": "us-east-1"}, "auth"),
        ("", ("-c", 'model_providers.amazon-bedrock.aws={region="us-east-1"}'), {}, "cannot read"),
        ("", ("-c", "model_providers.amazon-bedrock.aws.auth_refresh=true"), {"AWS_REGION": "us-east-1"}, "cannot"),
    ],
)
def test_what_cannot_be_fronted_is_one_line_at_start(tmp_path, config, args, env, word):
    with pytest.raises(ConfigError, match=word) as raised:
        front(tmp_path, 'model_provider = "amazon-bedrock"\n' + config, args, **env)
    assert "\n" not in str(raised.value) and "--meter files" in str(raised.value)


def test_a_stored_bedrock_login_and_missing_credentials_are_refused(tmp_path):
    (tmp_path / "auth.json").write_text(json.dumps({"auth_mode": "bedrock_access_keys"}))
    with pytest.raises(ConfigError, match="stored Bedrock login"):
        front(tmp_path, 'model_provider = "amazon-bedrock"\n', AWS_REGION="us-east-1")
    (tmp_path / "auth.json").unlink()
    (tmp_path / "config.toml").write_text('model_provider = "amazon-bedrock"\n')
    with pytest.raises(ConfigError, match="no AWS credentials"):
        strict_front(["exec", "hi"], {"AWS_REGION": "us-east-1", "AWS_CONFIG_FILE": "/nonexistent"}, tmp_path)


def test_bedrocks_models_are_priced_under_bedrock_by_either_meter():
    assert priced_name("openai.gpt-6-sol", "amazon-bedrock") == "bedrock/openai.gpt-6-sol"
    assert priced_name("global.openai.gpt-6-sol", "amazon-bedrock-runtime") == "bedrock/global.openai.gpt-6-sol"
    assert priced_name("gpt-5", "openai") == "gpt-5" and priced_name(None, "amazon-bedrock") is None
    parser = RolloutParser("r.jsonl")
    lines = [
        {"type": "session_meta", "payload": {"id": "t1", "model_provider": "amazon-bedrock"}},
        {"type": "turn_context", "payload": {"model": "openai.gpt-6-sol"}},
        {"type": "token_usage_record", "timestamp": "2026-12-08T00:00:00Z", "payload": {
            "thread_id": "t1", "response_id": "resp_1",
            "usage": {"input_tokens": 1000, "cached_input_tokens": 0, "output_tokens": 100, "reasoning_output_tokens": 0,
                      "total_tokens": 1100}}},
    ]  # fmt: skip
    events = [e for n, line in enumerate(lines) for e in parser.feed(json.dumps(line).encode(), n)]
    (reply,) = events
    assert reply.model == "bedrock/openai.gpt-6-sol"
    assert Pricer().price(reply).cost_micro == round(1000 * 2.2 + 100 * 11)  # the regional price, per token


# ---- which provider: every config layer Codex 0.169.1 reads, and the system files that beat its command line


@pytest.fixture(autouse=True)
def system(tmp_path, monkeypatch):
    """The system's config folder (/etc/codex), empty unless a test writes to it."""
    folder = tmp_path / "etc-codex"
    folder.mkdir()
    monkeypatch.setattr("capguard.agents.codex.adapter.SYSTEM_DIR", folder)
    return folder


def test_a_profiles_file_that_switches_to_bedrock_is_fronted_not_bypassed(tmp_path, system):
    """`-p work` layers $CODEX_HOME/work.config.toml over config.toml: its provider is the one Codex calls."""
    (tmp_path / "work.config.toml").write_text('model_provider = "amazon-bedrock"\n')
    found, args, told = front(tmp_path, "", ("-p", "work"), AWS_REGION="us-east-1")
    assert found.mount == "amazon-bedrock" and told[0] == 'model_provider="amazon-bedrock"'


def test_the_systems_config_is_the_weakest_layer(tmp_path, system):
    (system / "config.toml").write_text('model_provider = "amazon-bedrock"\n')
    assert front(tmp_path, "", AWS_REGION="us-east-1")[0].mount == "amazon-bedrock"
    (tmp_path / "auth.json").write_text(json.dumps({"OPENAI_API_KEY": "sk-user"}))
    assert front(tmp_path, 'model_provider = "openai"\n')[0].mount == "openai"


def test_the_provider_is_always_named_on_codexs_command_line(tmp_path, system):
    (tmp_path / "auth.json").write_text(json.dumps({"OPENAI_API_KEY": "sk-user"}))
    found, args, told = front(tmp_path, "", ("-c", 'model_provider="openai"'))
    assert told[0] == 'model_provider="openai"' and "model_provider" not in " ".join(args)


@pytest.mark.parametrize(
    ("name", "text"),
    [
        ("managed_config.toml", 'model_provider = "ollama"\n'),
        ("managed_config.toml", '[model_providers.amazon-bedrock]\nbase_url = "https://elsewhere.example"\n'),
        ("requirements.toml", '[model_providers.corp]\nbase_url = "https://gateway.example/v1"\n'),
        ("managed_config.toml", 'openai_base_url = "https://elsewhere.example/v1"\n'),
    ],
)
def test_a_system_file_that_beats_the_command_line_and_routes_requests_is_refused(tmp_path, system, name, text):
    (system / name).write_text(text)
    (tmp_path / "auth.json").write_text(json.dumps({"OPENAI_API_KEY": "sk-user"}))
    with pytest.raises(ConfigError, match=name) as raised:
        front(tmp_path, "")
    assert "over capguard's command line" in str(raised.value)


def test_a_system_file_that_routes_nothing_is_fine(tmp_path, system):
    (system / "managed_config.toml").write_text('approval_policy = "never"\n')
    (tmp_path / "auth.json").write_text(json.dumps({"OPENAI_API_KEY": "sk-user"}))
    assert front(tmp_path, "")[0].mount == "openai"
