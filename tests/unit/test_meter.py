"""meter.py: each reply counted once (by key), totals by model, steps, requests, the largest map."""

from __future__ import annotations

from capguard.core.events import Reply
from capguard.core.meter import Meter
from capguard.core.pricing import Priced


def add(
    meter: Meter,
    key: str,
    *,
    model: str | None = "openai/gpt-4o",
    cost: int | None = 100,
    input_tokens: int = 10,
    output_tokens: int = 1,
    cache_read: int = 0,
    cache_write: int = 0,
) -> bool:
    reply = Reply(
        key=key,
        model=model,
        input_tokens=input_tokens,
        output_tokens=output_tokens,
        cache_read_tokens=cache_read,
        cache_write_tokens=cache_write,
    )
    return meter.add_reply(reply, Priced(model, cost, "agent" if cost is not None else None))


def test_reply_adds_its_tokens_and_cost():
    meter = Meter()
    assert add(meter, "a", cost=145_000, input_tokens=50_000, output_tokens=2_000, cache_read=5, cache_write=7)
    assert meter.cost_micro == 145_000
    assert meter.tokens == 52_012
    assert meter.steps == 1


def test_same_key_is_counted_once():
    meter = Meter()
    add(meter, "log@0", cost=100, input_tokens=10)
    assert add(meter, "log@0", cost=100, input_tokens=10) is False
    assert (meter.cost_micro, meter.tokens, meter.steps) == (100, 11, 1)


def test_same_key_from_another_model_is_still_a_duplicate():
    meter = Meter()
    add(meter, "log@0", model="a")
    assert add(meter, "log@0", model="b") is False
    assert list(meter.by_model) == ["a"]


def test_totals_are_kept_per_model_and_summed():
    meter = Meter()
    add(meter, "1", model="openai/gpt-4o", cost=100, input_tokens=10, output_tokens=1)
    add(meter, "2", model="openai/gpt-4o", cost=200, input_tokens=20, output_tokens=2)
    add(meter, "3", model="anthropic/claude-sonnet-4-5", cost=1_000, input_tokens=5, output_tokens=5, cache_read=90)
    gpt = meter.by_model["openai/gpt-4o"]
    claude = meter.by_model["anthropic/claude-sonnet-4-5"]
    assert (gpt.input_tokens, gpt.output_tokens, gpt.cost_micro, gpt.replies) == (30, 3, 300, 2)
    assert (claude.cache_read_tokens, claude.tokens, claude.cost_micro) == (90, 100, 1_000)
    assert meter.cost_micro == 1_300
    assert meter.tokens == 133


def test_reply_without_a_model_is_filed_under_unknown():
    meter = Meter()
    add(meter, "1", model=None)
    assert list(meter.by_model) == ["unknown"]


def test_unpriced_reply_counts_tokens_but_no_cost():
    meter = Meter()
    add(meter, "1", cost=None, input_tokens=850, output_tokens=16)
    assert meter.unpriced_replies == 1
    assert meter.by_model["openai/gpt-4o"].unpriced_replies == 1
    assert (meter.cost_micro, meter.tokens, meter.steps) == (0, 866, 1)


def test_requests_are_counted_and_mark_the_agent_as_announcing():
    meter = Meter()
    assert not meter.announces_requests
    meter.request_started()
    meter.request_started()
    assert meter.requests == 2
    assert meter.announces_requests
    assert meter.steps == 0


def test_map_keeps_the_largest_measure():
    meter = Meter()
    for tokens in (1_200, 2_066, 900):
        meter.map_measured(tokens)
    assert meter.map_tokens == 2_066


def test_largest_and_last_reply_costs_are_tracked():
    meter = Meter()
    add(meter, "1", cost=500)
    add(meter, "2", cost=2_000)
    add(meter, "3", cost=300)
    assert (meter.largest_reply_micro, meter.last_reply_micro) == (2_000, 300)


def test_usage_json_gives_token_kinds_and_dollars_per_model():
    meter = Meter()
    add(meter, "1", cost=145_000, input_tokens=50_000, output_tokens=2_000, cache_read=3, cache_write=4)
    assert meter.usage_json() == {
        "openai/gpt-4o": {
            "input_tokens": 50_000,
            "output_tokens": 2_000,
            "cache_read_tokens": 3,
            "cache_write_tokens": 4,
            "cost_usd": 0.145,
            "replies": 1,
            "unpriced_replies": 0,
        }
    }


def session_reply(pricer, key: str, model: str):
    from capguard.core.events import Reply

    reply = Reply(key, model, input_tokens=100_000, output_tokens=10_000, scope="s1")
    return reply, pricer.price(reply)


def test_claudes_own_total_raises_a_session_priced_by_genai_prices():
    from capguard.core.events import ReportedTotal
    from capguard.core.pricing import Pricer

    meter = Meter()
    reply, priced = session_reply(Pricer(), "r1", "anthropic/claude-sonnet-4-5")
    meter.add_reply(reply, priced)
    meter.reported(ReportedTotal("s1", priced.cost_micro + 50_000, "cost-state"))  # a compaction call it counted
    assert meter.cost_micro == priced.cost_micro + 50_000


def test_a_session_priced_by_the_users_prices_is_not_raised_by_claudes_guess():
    """One rule: the user's explicit [prices] entry wins. Claude Code prices a model it does not know at a guess
    (27.6% above the [prices] figure in a measured run); that guess never replaces the user's price."""
    from decimal import Decimal

    from capguard.core.events import ReportedTotal
    from capguard.core.pricing import ModelPrice, Pricer

    pricer = Pricer({"claude-house-9": ModelPrice(input=Decimal(3), output=Decimal(15))})
    meter = Meter()
    reply, priced = session_reply(pricer, "r1", "claude-house-9")
    assert priced.priced_by == "config" and priced.cost_micro == 450_000
    meter.add_reply(reply, priced)
    meter.reported(ReportedTotal("s1", 574_200, "cost-state"))  # Claude's guessed total, 27.6% higher
    assert meter.cost_micro == 450_000
    assert "reported by the agent, not in its replies" not in meter.usage_json()
