"""One adapter per agent: how to launch it, which files to watch, how to read them, how to stop it.

Adding an agent means adding one module here and registering it below.
"""

from __future__ import annotations

from capguard.agents.base import Adapter, LaunchPlan


def get_adapter(name: str) -> Adapter:
    if name == "aider":
        from capguard.agents import aider

        return aider.ADAPTER
    if name == "claude":
        from capguard.agents import claude

        return claude.ADAPTER
    raise KeyError(name)


__all__ = ["Adapter", "LaunchPlan", "get_adapter"]
