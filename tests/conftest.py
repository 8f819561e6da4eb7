"""Suite-wide isolation: no test touches the real ledger, config or home; no test leaks threads."""

from __future__ import annotations

import threading
import time

import pytest


@pytest.fixture(autouse=True)
def _isolated(tmp_path, monkeypatch):
    monkeypatch.setenv("CAPGUARD_HOME", str(tmp_path / "capguard-home"))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg-config"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg-cache"))
    for name in (
        "CAPGUARD_CONFIG",
        "CAPGUARD_USD",
        "CAPGUARD_TOKENS",
        "CAPGUARD_WALL",
        "CAPGUARD_STEPS",
        "CAPGUARD_MAP_TOKENS",
        "CAPGUARD_LEDGER",
        "CAPGUARD_USER",
        "CAPGUARD_LINE",
        "ANTHROPIC_COST_BUDGET",
        "ANTHROPIC_TOKEN_BUDGET",
        "CAPGUARD_TEAM_CONFIG",
        "CAPGUARD_TEAM_LEDGER",
        # the AWS SDK's chain (strict mode signs for AWS with what it finds): none of the machine's credentials
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_SESSION_TOKEN",
        "AWS_PROFILE",
        "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
        "AWS_CONTAINER_CREDENTIALS_FULL_URI",
        "AWS_WEB_IDENTITY_TOKEN_FILE",
    ):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")  # no instance role asked for (a 1 s timeout otherwise)
    # Codex's system config folder (/etc/codex): none of the machine's, for the decisions made in this process
    monkeypatch.setattr("capguard.agents.codex.adapter.SYSTEM_DIR", tmp_path / "no-etc-codex")


@pytest.fixture(autouse=True)
def _no_thread_leaks():
    before = set(threading.enumerate())
    yield
    deadline = time.monotonic() + 3
    while True:
        leaked = [t for t in threading.enumerate() if t not in before and t.is_alive()]
        if not leaked or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert not leaked, f"threads leaked: {[t.name for t in leaked]}"
