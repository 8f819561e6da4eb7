"""Where capguard keeps its files: XDG config, data and cache directories.

`CAPGUARD_HOME` moves all data (ledger, run directories) in one place, for tests and for teams.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path


def config_home(env: Mapping[str, str] | None = None) -> Path:
    env = os.environ if env is None else env
    base = env.get("XDG_CONFIG_HOME") or os.path.join(Path.home(), ".config")
    return Path(base) / "capguard"


def user_config_file(env: Mapping[str, str] | None = None) -> Path:
    env = os.environ if env is None else env
    explicit = env.get("CAPGUARD_CONFIG")
    return Path(explicit) if explicit else config_home(env) / "config.toml"


def data_home() -> Path:
    explicit = os.environ.get("CAPGUARD_HOME")
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_DATA_HOME") or os.path.join(Path.home(), ".local", "share")
    return Path(base) / "capguard"


def cache_home(env: Mapping[str, str] | None = None) -> Path:
    """Derived data capguard can always make again (XDG's cache directory)."""
    env = os.environ if env is None else env
    base = env.get("XDG_CACHE_HOME") or os.path.join(Path.home(), ".cache")
    return Path(base) / "capguard"


def runs_dir() -> Path:
    return data_home() / "runs"


def default_ledger_path() -> Path:
    return data_home() / "ledger.db"


def find_project_file(start: Path, name: str = ".capguard.toml") -> Path | None:
    """The nearest `name` from `start` upwards, stopping at the filesystem root."""
    for folder in [start, *start.parents]:
        candidate = folder / name
        if candidate.is_file():
            return candidate
    return None
