"""The registry of agents: the only list of them. Each is a package here with an `adapter` module (its ADAPTER).

Stdlib only and lazy: the CLI's --help and `python -m capguard.agents.claude.statusline` import this package.
Adding an agent is adding its package and its name below.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from capguard.agents.base import Adapter

NAMES: tuple[str, ...] = ("aider", "claude", "codex", "gemini", "opencode")


def get_adapter(name: str) -> Adapter:
    """The adapter of agent `name`; KeyError for a name that is not registered."""
    if name not in NAMES:
        raise KeyError(name)
    return importlib.import_module(f"capguard.agents.{name}.adapter").ADAPTER


__all__ = ["NAMES", "get_adapter"]
