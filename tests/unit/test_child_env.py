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
