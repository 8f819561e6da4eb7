"""capguard: hard spending caps for AI coding agents.

The command line lives in capguard.cli; the pieces are importable on their own. `from capguard import Budget`
is the library (capguard.budget.library); it is imported on first use, so the CLI never loads it.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"
__all__ = ["Budget", "BudgetExceeded", "BudgetWarning", "__version__"]

_LAZY = {
    "Budget": "capguard.budget.library",
    "BudgetExceeded": "capguard.budget.messages",
    "BudgetWarning": "capguard.budget.messages",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'capguard' has no attribute {name!r}")
