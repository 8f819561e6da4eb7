"""Unit-only fixtures: the copied aider captures, a clean environment, a fake aider on a private PATH."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

AIDER_FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "aider" / "shared"


@pytest.fixture(autouse=True)
def _clean_env(tmp_path, monkeypatch):
    """No CAPGUARD_*, AIDER_* or API-key variable from the developer's shell leaks into a unit test."""
    monkeypatch.setenv("CAPGUARD_HOME", str(tmp_path / "capguard-home"))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg-config"))
    for name in list(os.environ):
        if (name.startswith(("CAPGUARD_", "AIDER_")) and name != "CAPGUARD_HOME") or name.endswith("_API_KEY"):
            monkeypatch.delenv(name)


@pytest.fixture
def aider_fixture():
    """The path of a copied aider capture, e.g. aider_fixture("analytics.nostream.jsonl")."""

    def path(relative: str) -> Path:
        found = AIDER_FIXTURES / relative
        assert found.is_file(), f"missing fixture {found}"
        return found

    return path


@pytest.fixture
def fake_bin(tmp_path):
    """A directory holding an executable `aider` script, to be the whole PATH of a plan."""
    folder = tmp_path / "bin"
    folder.mkdir()
    script = folder / "aider"
    script.write_text("#!/bin/sh\nexit 0\n")
    script.chmod(0o755)
    return folder
