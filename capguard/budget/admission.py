"""One call a Budget let go: the request as it will be sent and the worst case held for it.

Its own module so that the ledger side of a Budget (store.py) and the SDK wrappers type it without importing library.py.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from capguard.core.reservations import Hold


@dataclass(frozen=True)
class Admission:
    """A call allowed to go: the request as it will be sent, and the worst case held for it."""

    kwargs: dict[str, Any]
    hold: Hold
    model: str
    prompt_tokens: int
    requested_max_tokens: int
    max_tokens: int
    priced_by: str
    task_budget: dict[str, Any] | None
    context: int
