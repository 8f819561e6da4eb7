"""Strict mode's fronts for Codex and OpenCode, as pure decisions: which provider is fronted and where its requests
go on to, what Codex is told on its command line (never the secret), what is refused at start, and the Responses
tool groups (Codex's `namespace`) judged by their members."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from capguard.agents.codex.adapter import OPENAI_DEFAULT, PROXY_HEADER, PROXY_KEY_ENV, strict_front, without_config
from capguard.agents.opencode.adapter import DEFAULT_BASES, strict_fronts
from capguard.core.errors import ConfigError
from capguard.metering.proxy.dialects import ANTHROPIC, CHAT, GEMINI, RESPONSES, ask

KEY = {"CODEX_API_KEY": "k"}


def codex_home(tmp_path: Path, config: str) -> Path:
    (tmp_path / "config.toml").write_text(config)
    return tmp_path


def test_codex_builtin_openai_takes_the_users_base_url_as_upstream_and_drops_their_override(tmp_path):
    home = codex_home(tmp_path, 'openai_base_url = "https://gw.example/v1"\n')
    args = ["exec", "-c", 'openai_base_url="https://other.example/v1"', "hi"]
    front, kept, told = strict_front(args, {**KEY, "OPENAI_PROJECT": "proj_1"}, home)
    assert (front.mount, front.upstream, front.dialect) == ("openai", "https://other.example/v1", RESPONSES)
    assert (front.header, front.secret_env, front.restore) == ("OpenAI-Project", "OPENAI_PROJECT", "proj_1")
    assert kept == ["exec", "hi"]
    assert told == ['model_provider="openai"', 'openai_base_url="{url}"', 'web_search="disabled"']
    front, _, _ = strict_front(["exec", "hi"], KEY, codex_home(tmp_path, ""))
    assert front.upstream == OPENAI_DEFAULT and front.restore is None


def test_codex_model_providers_entry_gets_the_proxy_and_the_secret_header(tmp_path):
    home = codex_home(tmp_path, 'model_provider = "gw"\n[model_providers.gw]\nbase_url = "http://gw:8/v1"\n')
    front, _, told = strict_front(["exec", "hi"], {}, home)
    assert (front.mount, front.upstream, front.header, front.secret_env) == (
        "codex",
        "http://gw:8/v1",
        PROXY_HEADER,
        PROXY_KEY_ENV,
    )
    assert told[:3] == [
        'model_provider="gw"',
        'model_providers.gw.base_url="{url}"',
        f'model_providers.gw.env_http_headers.{PROXY_HEADER}="{PROXY_KEY_ENV}"',
    ]


@pytest.mark.parametrize(
    ("config", "args", "env", "word"),
    [
        ("", ["-c", 'model_providers.openai={base_url="http://x"}', "exec"], KEY, "-c model_providers.openai"),
        ("", ["--oss", "exec", "hi"], KEY, "--oss"),
        ('model_provider = "lmstudio"\n', ["exec", "hi"], KEY, "built into Codex"),
        ("", ["exec", "hi"], {"CODEX_ACCESS_TOKEN": "t"}, "ChatGPT"),
        ('model_provider = "gw"\n[model_providers.gw]\nbase_url = "unix:///s"\n', ["exec"], {}, "not http(s)"),
    ],
)
def test_codex_refusals_at_start(tmp_path, config, args, env, word):
    with pytest.raises(ConfigError) as err:
        strict_front(args, env, codex_home(tmp_path, config))
    assert word in str(err.value) and "--meter files" in str(err.value) and "\n" not in str(err.value)


def test_codex_profiles_file_is_read_as_codex_layers_it(tmp_path):
    """`-p p`: $CODEX_HOME/p.config.toml over config.toml (Codex 0.169 rejects a legacy [profiles.p] table)."""
    home = codex_home(tmp_path, 'openai_base_url = "https://gw.example/v1"\n')
    (home / "p.config.toml").write_text('openai_base_url = "https://profile.example/v1"\n')
    front, kept, _ = strict_front(["-p", "p", "exec", "hi"], KEY, home)
    assert front.upstream == "https://profile.example/v1" and kept == ["-p", "p", "exec", "hi"]
    assert strict_front(["exec", "hi"], KEY, home)[0].upstream == "https://gw.example/v1"


def test_without_config_drops_only_the_named_keys_before_a_separator():
    args = ["-c", "a=1", "--config=b=2", "--config", "c=3", "x", "--", "-c", "a=9"]
    assert without_config(args, {"a", "b"}) == ["--config", "c=3", "x", "--", "-c", "a=9"]


def opencode_config(tmp_path: Path) -> Path:
    store = tmp_path / "data" / "opencode.db"
    store.parent.mkdir(parents=True)
    return store


def test_opencode_fronts_named_and_configured_providers_and_enables_only_them(tmp_path):
    config = {
        "model": "anthropic/claude-sonnet-4-5",
        "small_model": "openai/gpt-5-nano",
        "provider": {
            "gw": {"npm": "@ai-sdk/openai-compatible", "options": {"baseURL": "http://gw:8/v1", "apiKey": "k"}},
            "bedrock": {"options": {"region": "us-east-1"}},
        },
    }
    given = json.dumps({"provider": {"gw": {"options": {"timeout": 5}}}, "share": "disabled"})
    fronts, tell, notes = strict_fronts([], config, {"OPENCODE_CONFIG_CONTENT": given}, opencode_config(tmp_path))
    assert [(f.mount, f.upstream, f.dialect) for f in fronts] == [
        ("anthropic", DEFAULT_BASES["anthropic"], ANTHROPIC),
        ("openai", DEFAULT_BASES["openai"], RESPONSES),
        ("gw", "http://gw:8/v1", CHAT),
    ]
    argv, env = tell({f.mount: f"http://127.0.0.1:1/S/{f.mount}" for f in fronts})
    content = json.loads(env["OPENCODE_CONFIG_CONTENT"])
    assert argv == [] and content["enabled_providers"] == ["anthropic", "openai", "gw"]  # bedrock is not loaded
    assert content["provider"]["gw"]["options"] == {"timeout": 5, "baseURL": "http://127.0.0.1:1/S/gw"}
    assert content["share"] == "disabled"  # the user's own content stays
    assert any("bedrock" in note for note in notes)


def test_opencodes_google_provider_is_fronted_with_the_api_version_kept_in_its_url(tmp_path):
    """The proxy routes the Gemini API by `/v1beta/models/...`; OpenCode's baseURL ends in the version."""
    fronts, tell, _ = strict_fronts(["-m", "google/gemini-2.5-flash"], {}, {}, opencode_config(tmp_path))
    ((front),) = fronts
    assert (front.mount, front.upstream, front.dialect, front.path) == (
        "google", "https://generativelanguage.googleapis.com", GEMINI, "/v1beta"
    )  # fmt: skip
    _, env = tell({"google": "http://127.0.0.1:1/S/google"})
    assert json.loads(env["OPENCODE_CONFIG_CONTENT"])["provider"]["google"]["options"]["baseURL"] == (
        "http://127.0.0.1:1/S/google/v1beta"
    )


@pytest.mark.parametrize(
    ("config", "auth", "word"),
    [
        ({"model": "google-vertex/gemini-2.5-pro"}, {}, "'google-vertex' is not one the proxy fronts"),
        (
            {"model": "google/gemini-2.5-pro", "provider": {"google": {"options": {"baseURL": "https://gw.example"}}}},
            {},
            "does not end in an API version",
        ),
        ({"model": "openai/gpt-5"}, {"openai": {"type": "oauth"}}, "signed in (OAuth)"),
        ({"model": "x/m", "provider": {"x": {"npm": "@ai-sdk/openai-compatible"}}}, {}, "no http(s) baseURL"),
        ({"small_model": "opencode/free"}, {}, "small_model (titles)"),
        ({}, {}, "no model or provider"),
    ],
)
def test_opencode_refusals_at_start(tmp_path, config, auth, word):
    store = opencode_config(tmp_path)
    (store.parent / "auth.json").write_text(json.dumps(auth))
    with pytest.raises(ConfigError) as err:
        strict_fronts([], config, {}, store)
    assert word in str(err.value) and "--meter files" in str(err.value)


def test_a_responses_namespace_is_judged_by_its_tools():
    client = {"type": "namespace", "name": "agents", "tools": [{"type": "function", "name": "spawn"}]}
    assert ask(RESPONSES, {"model": "gpt-5", "tools": [client]}).model == "gpt-5"
    hidden = {"type": "namespace", "name": "n", "tools": [{"type": "web_search"}]}
    with pytest.raises(ValueError, match="web_search"):
        ask(RESPONSES, {"model": "gpt-5", "tools": [hidden]})


def test_a_request_at_the_cap_while_calls_hold_part_of_it_is_deferred_not_refused():
    """Codex's TUI sends a title request beside a turn with no output limit, which holds the whole headroom: the
    title request waits for it (deferred, not emitted), and is refused for good only when nothing else is held."""
    from capguard.core.pricing import Pricer
    from capguard.metering.proxy.gate import Admission, Gate, Refused
    from capguard.metering.proxy.usage import Seen

    events: list = []
    gate = Gate(Pricer(), cap_micro=300_000, on_event=events.append)
    body = {"model": "gpt-5", "input": "hello " * 100}
    first = gate.admit(RESPONSES, body, defer=True)
    assert isinstance(first, Admission) and first.lowered  # held for all the cap leaves
    waiting = gate.admit(RESPONSES, body, defer=True)
    assert isinstance(waiting, Refused) and waiting.deferred and waiting.at_cap and events == []
    refused = gate.admit(RESPONSES, body)  # without defer: refused and emitted, as before
    assert isinstance(refused, Refused) and not refused.deferred and events == [refused]
    gate.settle(first, Seen(response_id="r1", complete=False))  # cut: charged at its bound, nothing held now
    final = gate.admit(RESPONSES, body, defer=True)
    assert isinstance(final, Refused) and not final.deferred and events[-1] == final


def test_opencode_enables_no_provider_the_users_enabled_providers_leaves_out(tmp_path):
    config = {"model": "openai/gpt-5", "enabled_providers": ["openai"], "provider": {"anthropic": {}}}
    fronts, tell, _ = strict_fronts([], config, {}, opencode_config(tmp_path))
    assert [f.mount for f in fronts] == ["openai"]
    assert json.loads(tell({"openai": "http://127.0.0.1:1/S/openai"})[1]["OPENCODE_CONFIG_CONTENT"])[
        "enabled_providers"
    ] == ["openai"]


def test_opencodes_amazon_bedrock_is_fronted_signed_or_with_its_key(tmp_path):
    from capguard.metering.proxy.dialects import BEDROCK

    store = opencode_config(tmp_path)
    model = "amazon-bedrock/us.anthropic.claude-sonnet-4-5-20250929-v1:0"
    keys = {"AWS_ACCESS_KEY_ID": "AKIDUNITOC", "AWS_SECRET_ACCESS_KEY": "unit-secret", "AWS_REGION": "eu-west-3"}
    (front,), _, _ = strict_fronts([], {"model": model}, keys, store)
    assert (front.mount, front.upstream, front.dialect, front.provider) == (
        "amazon-bedrock", "https://bedrock-runtime.eu-west-3.amazonaws.com", BEDROCK, "anthropic",
    )  # fmt: skip
    assert front.signer is not None and (front.signer.how.service, front.signer.how.region) == ("bedrock", "eu-west-3")
    # the config's own keys and region come first, as OpenCode hands them to its SDK
    options = {"region": "us-west-2", "accessKeyId": "AKIDFROMCONFIG", "secretAccessKey": "s", "baseURL": "https://v/"}
    config = {"model": model, "provider": {"amazon-bedrock": {"options": options}}}
    (front,), _, _ = strict_fronts([], config, keys, store)
    assert front.upstream == "https://v/" and front.signer is not None
    assert front.signer.how.env["AWS_ACCESS_KEY_ID"] == "AKIDFROMCONFIG" and front.signer.how.region == "us-west-2"
    # a Bedrock API key (the environment's or a stored one) passes through: nothing to sign
    (front,), _, _ = strict_fronts(
        [], {"model": model}, {"AWS_REGION": "us-east-1", "AWS_BEARER_TOKEN_BEDROCK": "k"}, store
    )
    assert front.signer is None
    (store.parent / "auth.json").write_text(json.dumps({"amazon-bedrock": {"type": "api", "key": "ABSK"}}))
    (front,), _, _ = strict_fronts([], {"model": model}, {"AWS_REGION": "us-east-1"}, store)
    assert front.signer is None


@pytest.mark.parametrize(
    ("env", "word"),
    [
        ({"AWS_ACCESS_KEY_ID": "A", "AWS_SECRET_ACCESS_KEY": "s"}, "no AWS region set"),
        ({"AWS_REGION": "us-east-1"}, "no AWS credentials were found"),
    ],
)
def test_opencodes_amazon_bedrock_that_cannot_be_fronted_is_refused(tmp_path, env, word):
    model = "amazon-bedrock/us.anthropic.claude-sonnet-4-5-20250929-v1:0"
    with pytest.raises(ConfigError, match=f"{word}.*--meter files"):
        strict_fronts([], {"model": model}, env, opencode_config(tmp_path))


def test_opencodes_amazon_bedrock_model_that_is_not_anthropics_is_refused(tmp_path):
    env = {"AWS_REGION": "us-east-1", "AWS_BEARER_TOKEN_BEDROCK": "k"}
    with pytest.raises(ConfigError, match="amazon-bedrock/amazon.nova-pro-v1:0 is not one of Anthropic's models"):
        strict_fronts([], {"model": "amazon-bedrock/amazon.nova-pro-v1:0"}, env, opencode_config(tmp_path))
