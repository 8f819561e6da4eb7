"""child_env.py: the agent gets its own keys and the basics, never capguard's ledger secrets."""

from __future__ import annotations

import pytest

from capguard.core.child_env import for_agent


def test_the_agents_own_variables_stay():
    env = {
        "PATH": "/usr/bin",
        "HOME": "/home/me",
        "ANTHROPIC_API_KEY": "sk-ant-x",
        "OPENAI_API_KEY": "sk-x",
        "OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318",
        "CAPGUARD_TEST_TAG": "abc",
        "CAPGUARD_HOME": "/data",
        "CAPGUARD_TOKENS": "500k",
        "CAPGUARD_LEDGER": "postgresql://db.example/capguard",
        "DATABASE_URL": "postgresql://app:pw@localhost/app",
    }  # the project's own database: the agent's business
    assert for_agent(env) == env


@pytest.mark.parametrize(
    "name,value",
    [
        ("PGPASSWORD", "hunter2"),
        ("PGPASSFILE", "/home/me/.pgpass"),
        ("CAPGUARD_LEDGER", "postgresql://capguard:hunter2@db.example/capguard"),
        ("CAPGUARD_TEAM_LEDGER", "postgres://:hunter2@db.example/capguard"),
        ("CAPGUARD_LEDGER", "host=db.example password=hunter2 dbname=capguard"),
        ("CAPGUARD_DB_PASSWORD", "hunter2"),
        ("CAPGUARD_SECRET", "hunter2"),
    ],
)
def test_capguards_secrets_are_dropped(name, value):
    assert for_agent({"PATH": "/usr/bin", name: value}) == {"PATH": "/usr/bin"}


def test_the_agents_hop_to_the_proxy_is_never_proxied():
    from capguard.core.child_env import local_hop_direct

    assert local_hop_direct({}) == {"NO_PROXY": "127.0.0.1", "no_proxy": "127.0.0.1"}
    both = local_hop_direct({"NO_PROXY": "a.example, b.example", "no_proxy": "b.example,c.example"})
    assert both["NO_PROXY"] == both["no_proxy"] == "b.example,c.example,a.example,127.0.0.1"
    assert local_hop_direct({"no_proxy": "*"}) == {}  # already every host


def test_the_proxys_upstream_goes_the_way_the_users_environment_says():
    from capguard.metering.proxy.server import _via, env_proxy

    env = {"HTTPS_PROXY": "http://u:pw@corp.example:3128", "no_proxy": "internal.example"}
    assert env_proxy("https://provider.example/v1", env) == "http://u:pw@corp.example:3128"
    assert env_proxy("https://llm.internal.example/v1", env) is None  # no_proxy's suffix
    assert env_proxy("http://api.example/v1", env) is None  # HTTPS_PROXY is for https URLs only
    assert env_proxy("http://api.example/v1", {"all_proxy": "http://all:1"}) == "http://all:1"
    assert env_proxy("http://127.0.0.1:8080/v1", {"HTTP_PROXY": "http://corp:1"}) is None  # loopback: direct
    via = _via("http://u:pw@corp.example:3128")
    assert via["proxy"] == "http://corp.example:3128" and via["proxy_auth"].password == "pw"
    assert _via(None) == {}
