"""One call through a Budget: as asked (its prompt and worst-case price, before the ledger is read), and as let
go (the request as it will be sent and the worst case held for it).

Its own module so that the ledger side of a Budget (store.py) and the SDK wrappers type it without importing library.py.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from capguard.core.anthropic_usage import estimate_input_tokens
from capguard.core.pricing import Pricer
from capguard.core.reservations import Cost, Hold, worst_case_cost

_COUNT_MARGIN = (Decimal("1.05"), 64)  # count_tokens is an estimate: keep 5% and 64 tokens in hand


@dataclass(frozen=True)
class Ask:
    """A call as asked, before the ledger is read: its request, model, max_tokens, prompt and worst-case price."""

    kwargs: dict[str, Any]
    model: str
    requested: int
    prompt: int
    cost: Cost | None

    @classmethod
    def of(cls, kwargs: dict[str, Any], prompt_tokens: int | None, pricer: Pricer) -> Ask:
        """The call's prompt from the API's count (`prompt_tokens`, with a margin) or an estimate, and its price."""
        model, requested = str(kwargs.get("model") or ""), kwargs.get("max_tokens")
        if not model or isinstance(requested, bool) or not isinstance(requested, int) or requested < 1:
            raise TypeError("a Messages call needs a model and a positive max_tokens")
        prompt = estimate_input_tokens(kwargs) if prompt_tokens is None else _with_margin(prompt_tokens)
        cost = worst_case_cost(
            pricer, model, prompt, speed=kwargs.get("speed"), geo=kwargs.get("inference_geo") or "us"
        )  # the workspace's region may be US-only
        return cls(kwargs, model, requested, prompt, cost)


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


def _with_margin(counted: int) -> int:
    factor, extra = _COUNT_MARGIN
    return math.ceil(counted * factor) + extra
