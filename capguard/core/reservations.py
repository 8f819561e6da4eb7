"""The hard USD guarantee in arithmetic: a call's worst case, the max_tokens that fits, money held for calls in flight.

Pure: prices come in as a function, state is plain numbers; the Budget adds the lock, the clock and the ledger.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from capguard.core.events import Reply
from capguard.core.pricing import Pricer

MIN_THINKING = 1024  # the API's smallest extended-thinking budget
Cost = Callable[[int], int]  # output tokens -> worst-case micro-USD of the call (its input fixed)


def largest_fitting(cost: Cost, limit_micro: int, most: int) -> int | None:
    """The largest n in [0, most] with cost(n) <= limit_micro, or None when even n = 0 does not fit.

    `cost` must not decrease as n grows (more output never costs less), so a binary search finds it.
    """
    if most < 0 or cost(0) > limit_micro:
        return None
    base, top = cost(0), cost(most)
    if top <= limit_micro:
        return most
    # Prices are per token, so cost is nearly linear: guess by interpolation, then bracket the guess.
    guess = min(most - 1, (limit_micro - base) * most // (top - base))
    low, high = 0, most  # cost(low) fits, cost(high) does not
    if cost(guess) <= limit_micro:
        low = guess
        if cost(guess + 1) > limit_micro:
            return guess
    else:
        high = guess
    while high - low > 1:
        middle = (low + high) // 2
        if cost(middle) <= limit_micro:
            low = middle
        else:
            high = middle
    return low


@dataclass(frozen=True)
class Clamp:
    """What a call may do: its max_tokens (lowered or not) and the worst case it could cost."""

    max_tokens: int
    worst_micro: int
    lowered: bool


def clamp_max_tokens(requested: int, floor: int, headroom_micro: int | None, cost: Cost) -> Clamp | None:
    """Lower `requested` until the worst case fits `headroom_micro` (None: no USD cap); None when a reply of
    `floor` tokens (or the whole request, if smaller) cannot fit.
    """
    if headroom_micro is None:
        return Clamp(requested, cost(requested), False)
    fits = largest_fitting(cost, headroom_micro, requested)
    if fits is None or fits < min(floor, requested) or fits < 1:
        return None
    return Clamp(fits, cost(fits), fits < requested)


def lowered_request(kwargs: dict[str, Any], clamp: Clamp) -> dict[str, Any] | None:
    """The request with the clamped max_tokens; a thinking budget above it comes down too (None: it cannot)."""
    sent = {**kwargs, "max_tokens": clamp.max_tokens}
    thinking = kwargs.get("thinking")
    if (
        clamp.lowered
        and isinstance(thinking, dict)
        and thinking.get("type") == "enabled"
        and int(thinking.get("budget_tokens") or 0) >= clamp.max_tokens
    ):
        if clamp.max_tokens - 1 < MIN_THINKING:
            return None
        sent["thinking"] = {**thinking, "budget_tokens": clamp.max_tokens - 1}
    return sent


@dataclass(frozen=True)
class Hold:
    """Money and a step held for one call in flight."""

    number: int
    micro: int


@dataclass
class Reservations:
    """Calls in flight: settled spend plus everything held never passes the USD cap, nor the steps cap."""

    held_micro: int = 0
    in_flight: int = 0
    _next: int = 0
    _open: dict[int, int] = field(default_factory=dict, repr=False)

    def headroom(self, spent_micro: int, cap_micro: int | None) -> int | None:
        """What a new call may still cost: the cap minus spend minus what calls in flight may cost."""
        if cap_micro is None:
            return None
        return max(0, cap_micro - spent_micro - self.held_micro)

    def steps_left(self, steps_done: int, cap: int | None) -> int | None:
        return None if cap is None else max(0, cap - steps_done - self.in_flight)

    def hold(self, micro: int) -> Hold:
        if micro < 0:
            raise ValueError("a hold cannot be negative")
        self._next += 1
        self._open[self._next] = micro
        self.held_micro += micro
        self.in_flight += 1
        return Hold(self._next, micro)

    def release(self, hold: Hold) -> bool:
        """Give the hold back (the call ended: settled or failed); False if it was already released."""
        micro = self._open.pop(hold.number, None)
        if micro is None:
            return False
        self.held_micro -= micro
        self.in_flight -= 1
        return True


def worst_case_cost(
    pricer: Pricer, model: str, prompt_tokens: int, *, speed: str | None = None, geo: str | None = None
) -> Cost | None:
    """The most a call can cost for `n` output tokens, its prompt billed at the dearest rate any split of it
    could get (plain input, or written to the 5-minute or the 1-hour cache); long-context tiers and fast mode
    come from the same prices as the bill. None when nobody can price the model.
    """
    if not pricer.can_price(model):
        return None
    details = {"speed": speed, "inference_geo": geo}
    # the prompt as plain input, as a 5-minute cache write, as a 1-hour cache write: (input, cache write, 1h part)
    splits = ((prompt_tokens, 0, 0), (0, prompt_tokens, 0), (0, prompt_tokens, prompt_tokens))

    @functools.lru_cache(maxsize=32)  # a clamp asks for a few values, one of them twice
    def cost(output_tokens: int) -> int:
        replies = (
            Reply(
                "worst",
                model,
                input_tokens=fresh,
                output_tokens=output_tokens,
                cache_write_tokens=written,
                cache_write_1h_tokens=written_1h,
                details=details,
            )
            for fresh, written, written_1h in splits
        )
        return max(pricer.price(reply).cost_micro or 0 for reply in replies)

    return cost
