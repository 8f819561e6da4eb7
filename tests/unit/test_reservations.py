"""The USD guarantee's arithmetic: the worst case of a call, the max_tokens that fits, money held in flight."""

from __future__ import annotations

from decimal import Decimal

import pytest

from capguard.core.pricing import ModelPrice, Pricer
from capguard.core.reservations import Hold, Reservations, clamp_max_tokens, largest_fitting, worst_case_cost


def linear(base: int, per_token: int):
    return lambda n: base + per_token * n


@pytest.mark.parametrize(
    "cost, limit, most, expected",
    [
        (linear(100, 25), 100, 1000, 0),
        (linear(100, 25), 124, 1000, 0),
        (linear(100, 25), 125, 1000, 1),
        (linear(100, 25), 25_100, 1000, 1000),
        (linear(100, 25), 10_000, 1000, 396),
        (linear(100, 25), 99, 1000, None),
        (lambda n: n * n, 50, 100, 7),  # not linear: still exact
        (lambda n: 0 if n < 500 else 10**9, 5, 1000, 499),
        (linear(0, 3), 2, 0, 0),
    ],
)
def test_largest_fitting(cost, limit, most, expected):
    assert largest_fitting(cost, limit, most) == expected


def test_clamp_keeps_max_tokens_when_the_worst_case_fits():
    clamp = clamp_max_tokens(8_000, 1_024, 1_000_000, linear(1_000, 25))
    assert (clamp.max_tokens, clamp.worst_micro, clamp.lowered) == (8_000, 201_000, False)


def test_clamp_lowers_max_tokens_to_what_the_headroom_pays_for():
    clamp = clamp_max_tokens(8_000, 1_024, 51_000, linear(1_000, 25))
    assert (clamp.max_tokens, clamp.worst_micro, clamp.lowered) == (2_000, 51_000, True)


def test_clamp_refuses_when_not_even_a_minimal_reply_fits():
    assert clamp_max_tokens(8_000, 1_024, 26_599, linear(1_000, 25)) is None
    assert clamp_max_tokens(8_000, 1_024, 26_600, linear(1_000, 25)).max_tokens == 1_024
    assert clamp_max_tokens(8_000, 1_024, 500, linear(1_000, 25)) is None  # the prompt alone is too dear


def test_a_request_smaller_than_the_floor_needs_only_itself_to_fit():
    assert clamp_max_tokens(100, 1_024, 3_500, linear(1_000, 25)).max_tokens == 100
    assert clamp_max_tokens(100, 1_024, 3_499, linear(1_000, 25)) is None


def test_without_a_usd_cap_nothing_is_lowered():
    clamp = clamp_max_tokens(64_000, 1_024, None, linear(1_000, 25))
    assert (clamp.max_tokens, clamp.lowered) == (64_000, False)


def test_holds_count_against_the_headroom_until_released():
    holds = Reservations()
    assert holds.headroom(300_000, 1_000_000) == 700_000
    first, second = holds.hold(200_000), holds.hold(150_000)
    assert (holds.held_micro, holds.in_flight) == (350_000, 2)
    assert holds.headroom(300_000, 1_000_000) == 350_000
    assert holds.headroom(900_000, 1_000_000) == 0  # never negative
    assert holds.release(first) and not holds.release(first)  # a second release is a no-op
    assert (holds.held_micro, holds.in_flight) == (150_000, 1)
    assert holds.headroom(300_000, None) is None
    holds.release(second)
    assert (holds.held_micro, holds.in_flight) == (0, 0)


def test_steps_in_flight_count_against_the_steps_cap():
    holds = Reservations()
    holds.hold(0)
    holds.hold(0)
    assert holds.steps_left(3, 5) == 0
    assert holds.steps_left(2, 5) == 1
    assert holds.steps_left(2, None) is None
    with pytest.raises(ValueError):
        holds.hold(-1)
    assert Hold(1, 5).micro == 5


def test_worst_case_bills_the_prompt_as_a_one_hour_cache_write():
    # claude-opus-4-7: input $5/M, 1-hour cache write $10/M, output $25/M
    cost = worst_case_cost(Pricer(), "claude-opus-4-7", 10_000)
    assert cost(0) == 100_000
    assert cost(1_000) == 125_000


def test_worst_case_follows_long_context_tiers_and_us_only_inference():
    cost = worst_case_cost(Pricer(), "claude-sonnet-4-5", 250_000)
    assert cost(1_000) == 3_000_000 + 22_500  # above 200k input: $12/M cache writes, $22.50/M output
    assert worst_case_cost(Pricer(), "claude-sonnet-4-5", 250_000, geo="us")(1_000) == round(3_022_500 * 1.1)


def test_worst_case_uses_config_prices_and_knows_when_nobody_can_price():
    pricer = Pricer({"my-model": ModelPrice(input=Decimal(1), output=Decimal(2), cache_write=Decimal(3))})
    assert worst_case_cost(pricer, "my-model", 1_000_000)(1_000_000) == 5_000_000
    assert worst_case_cost(Pricer(), "no-such-model-xyz", 1_000) is None
