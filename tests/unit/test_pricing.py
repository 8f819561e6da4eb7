"""pricing.py: config override > the agent's own cost > genai-prices; cache and long-context prices."""

from __future__ import annotations

from decimal import Decimal

import pytest

from capguard.core.events import Reply
from capguard.core.pricing import ModelPrice, Priced, Pricer, genai_price, split_provider, to_micro


def reply(
    model: str | None = "openai/gpt-4o",
    *,
    input_tokens: int = 0,
    output_tokens: int = 0,
    cache_read: int = 0,
    cache_write: int = 0,
    reported: int | None = None,
) -> Reply:
    return Reply(
        key="k",
        model=model,
        input_tokens=input_tokens,
        output_tokens=output_tokens,
        cache_read_tokens=cache_read,
        cache_write_tokens=cache_write,
        reported_cost_micro=reported,
    )


@pytest.mark.parametrize(
    ("model", "split"),
    [
        ("openai/gpt-4o", ("openai", "gpt-4o")),
        ("OpenAI/gpt-4o", ("openai", "gpt-4o")),
        ("gemini/gemini-2.5-pro", ("google", "gemini-2.5-pro")),
        ("xai/grok-3-beta", ("x-ai", "grok-3-beta")),
        ("openrouter/anthropic/claude-sonnet-4.5", ("openrouter", "anthropic/claude-sonnet-4.5")),
        ("gpt-4o", (None, "gpt-4o")),
        ("myhost/llama", (None, "myhost/llama")),
    ],
)
def test_provider_prefix_is_split_only_for_known_providers(model, split):
    assert split_provider(model) == split


@pytest.mark.parametrize(
    ("usd", "micro"),
    [(Decimal("0.145"), 145_000), (0.009078, 9_078), (Decimal("0.0000005"), 1), (Decimal("0.0000004"), 0)],
)
def test_to_micro_rounds_half_up(usd, micro):
    assert to_micro(usd) == micro


def test_model_price_charges_per_million_tokens():
    price = ModelPrice(input=Decimal(1), output=Decimal(2))
    assert price.cost_usd(reply(input_tokens=1_000_000, output_tokens=500_000)) == Decimal(2)


def test_model_price_without_cache_prices_charges_cache_at_the_input_price():
    price = ModelPrice(input=Decimal(1), output=Decimal(2))
    assert price.cost_usd(reply(cache_read=1_000_000, cache_write=1_000_000)) == Decimal(2)


def test_model_price_uses_its_cache_prices():
    price = ModelPrice(input=Decimal(3), output=Decimal(15), cache_read=Decimal("0.3"), cache_write=Decimal("3.75"))
    assert price.cost_usd(reply(cache_read=1_000_000, cache_write=1_000_000)) == Decimal("4.05")


def test_config_override_beats_the_agents_own_cost():
    pricer = Pricer({"openai/gpt-4o": ModelPrice(input=Decimal(1), output=Decimal(1))})
    priced = pricer.price(reply(input_tokens=1_000_000, reported=145_000))
    assert priced == Priced("openai/gpt-4o", 1_000_000, "config")


def test_config_override_matches_regardless_of_case():
    pricer = Pricer({"OpenAI/My-Model": ModelPrice(input=Decimal(1), output=Decimal(1))})
    assert pricer.price(reply("openai/my-model", input_tokens=1_000_000)).cost_micro == 1_000_000


def test_config_override_without_provider_matches_a_prefixed_model():
    pricer = Pricer({"my-model": ModelPrice(input=Decimal(1), output=Decimal(1))})
    assert pricer.price(reply("openai/my-model", input_tokens=1_000_000)).priced_by == "config"


def test_agents_own_cost_beats_genai_prices():
    priced = Pricer().price(reply(input_tokens=50_000, output_tokens=2_000, reported=999))
    assert priced == Priced("openai/gpt-4o", 999, "agent")


def test_genai_prices_is_used_when_the_agent_reports_no_cost():
    priced = Pricer().price(reply(input_tokens=50_000, output_tokens=2_000))
    assert priced == Priced("openai/gpt-4o", 145_000, "genai-prices")  # $2.50/M in, $10/M out


def test_provider_prefix_does_not_change_the_price():
    bare = Pricer().price(reply("gpt-4o", input_tokens=50_000, output_tokens=2_000))
    prefixed = Pricer().price(reply("openai/gpt-4o", input_tokens=50_000, output_tokens=2_000))
    assert bare.cost_micro == prefixed.cost_micro == 145_000


def test_cache_reads_are_priced_below_fresh_input():
    fresh = Pricer().price(reply("openai/gpt-4o", input_tokens=1_000_000)).cost_micro
    cached = Pricer().price(reply("openai/gpt-4o", cache_read=1_000_000)).cost_micro
    assert (fresh, cached) == (2_500_000, 1_250_000)


def test_anthropic_cache_write_and_read_match_aiders_own_cost():
    # the anthropic --no-stream capture: 11 in, 2,000 cache write, 3,000 cache read, 43 out = $0.009078
    priced = Pricer().price(
        reply("anthropic/claude-sonnet-4-5", input_tokens=11, output_tokens=43, cache_read=3_000, cache_write=2_000)
    )
    assert priced.cost_micro == 9_078


def test_long_context_costs_more_per_token_above_200k_input():
    short = Pricer().price(reply("anthropic/claude-sonnet-4-5", input_tokens=100_000)).cost_micro
    long = Pricer().price(reply("anthropic/claude-sonnet-4-5", input_tokens=300_000)).cost_micro
    assert short == 300_000  # $3/M
    assert long == 1_800_000  # $6/M for the whole request


def test_cache_reads_count_towards_the_long_context_threshold():
    priced = Pricer().price(reply("anthropic/claude-sonnet-4-5", input_tokens=60_000, cache_read=150_000))
    assert priced.cost_micro == 450_000  # 60k x $6/M + 150k x $0.60/M, not the short-context $0.225


def test_unknown_model_is_unpriced():
    assert Pricer().price(reply("openai/my-local-model", input_tokens=850, output_tokens=16)) == Priced(
        "openai/my-local-model", None, None
    )


def test_genai_price_is_none_for_an_unknown_model():
    assert genai_price("openai/my-local-model", 1, 1, 0, 0) is None


def test_reply_without_tokens_or_cost_costs_nothing_and_is_not_unpriced():
    assert Pricer().price(reply("openai/my-local-model")).cost_micro == 0


@pytest.mark.parametrize("hidden", ["openai/REDACTED", "None", "", None])
def test_hidden_model_name_falls_back_to_the_command_lines_model(hidden):
    priced = Pricer(fallback_model="openai/gpt-4o").price(reply(hidden, input_tokens=50_000, output_tokens=2_000))
    assert priced == Priced("openai/gpt-4o", 145_000, "genai-prices")


def test_hidden_model_without_fallback_is_unpriced():
    assert Pricer().price(reply("openai/REDACTED", input_tokens=10)).cost_micro is None


def test_hidden_model_keeps_the_agents_cost():
    assert Pricer().price(reply("openai/REDACTED", input_tokens=10, reported=5)) == Priced(None, 5, "agent")


def test_fallback_is_not_used_when_the_log_names_the_model():
    pricer = Pricer(fallback_model="openai/gpt-4o")
    assert pricer.model_of(reply("anthropic/claude-sonnet-4-5")) == "anthropic/claude-sonnet-4-5"


def test_can_price_knows_overrides_and_genai_models_only():
    pricer = Pricer({"openai/my-model": ModelPrice(input=Decimal(1), output=Decimal(1))})
    assert pricer.can_price("openai/my-model")
    assert pricer.can_price("anthropic/claude-sonnet-4-5")
    assert not pricer.can_price("openai/my-other-model")
    assert not pricer.can_price(None)


# ---- [prices] overrides and cached tokens: the provider's multiples of input unless the config says otherwise


def priced_usd(pricer: Pricer, model: str, **tokens: int) -> Decimal:
    return Decimal(pricer.price(Reply("k", model, **tokens)).cost_micro or 0) / 1_000_000


def test_an_override_of_an_unknown_claude_model_prices_cache_at_anthropics_multiples():
    pricer = Pricer({"claude-house-9": ModelPrice(input=Decimal(10), output=Decimal(50))})
    # 1M cache reads at 0.1x, 1M 5-minute writes at 1.25x, 1M 1-hour writes at 2x of $10/M
    usd = priced_usd(
        pricer, "anthropic/claude-house-9", cache_read_tokens=1_000_000, cache_write_tokens=2_000_000,
        cache_write_1h_tokens=1_000_000,
    )  # fmt: skip
    assert usd == Decimal(1) + Decimal("12.5") + Decimal(20)


def test_an_override_of_a_known_model_takes_genai_prices_multiples_for_it():
    # gpt-4.1 reads its cache at a quarter of input (genai-prices: $0.50 of $2.00), not gpt-4o's half
    pricer = Pricer({"openai/gpt-4.1": ModelPrice(input=Decimal(4), output=Decimal(8))})
    assert priced_usd(pricer, "openai/gpt-4.1", cache_read_tokens=1_000_000) == Decimal(1)
    # and OpenAI bills no cache write surcharge: a write counts as input
    assert priced_usd(pricer, "openai/gpt-4.1", cache_write_tokens=1_000_000) == Decimal(4)


def test_an_unknown_model_of_a_known_family_takes_the_familys_multiples():
    pricer = Pricer({"gpt-5-house-ft": ModelPrice(input=Decimal(2), output=Decimal(8))})
    assert priced_usd(pricer, "openai/gpt-5-house-ft", cache_read_tokens=1_000_000) == Decimal("0.2")  # gpt-5: 0.1x


def test_an_unknown_openai_model_reads_its_cache_at_half_the_input():
    pricer = Pricer({"openai/zz-house": ModelPrice(input=Decimal(2), output=Decimal(8))})
    assert priced_usd(pricer, "openai/zz-house", cache_read_tokens=1_000_000) == Decimal(1)


def test_an_unknown_provider_charges_cache_at_the_input_price_an_upper_bound():
    pricer = Pricer({"my-local-model": ModelPrice(input=Decimal(2), output=Decimal(8))})
    usd = priced_usd(pricer, "my-local-model", cache_read_tokens=1_000_000, cache_write_tokens=1_000_000)
    assert usd == Decimal(4)


def test_cache_rates_given_in_config_beat_the_defaults():
    given = ModelPrice(Decimal(10), Decimal(50), Decimal(2), Decimal(11), Decimal(13))
    pricer = Pricer({"claude-house-9": given})
    usd = priced_usd(
        pricer, "claude-house-9", cache_read_tokens=1_000_000, cache_write_tokens=2_000_000,
        cache_write_1h_tokens=1_000_000,
    )  # fmt: skip
    assert usd == Decimal(2 + 11 + 13)


def test_an_override_of_a_known_model_matches_genai_prices_when_given_the_same_rates():
    # the defaults reproduce the provider's own cache prices: the override changes nothing but what it says
    tokens = dict(input_tokens=1_000, output_tokens=2_000, cache_read_tokens=30_000, cache_write_tokens=5_000,
                  cache_write_1h_tokens=2_000)  # fmt: skip
    own = Pricer().price(Reply("k", "anthropic/claude-sonnet-4-5", **tokens)).cost_micro
    pricer = Pricer({"claude-sonnet-4-5": ModelPrice(input=Decimal(3), output=Decimal(15))})
    assert pricer.price(Reply("k", "anthropic/claude-sonnet-4-5", **tokens)).cost_micro == own


@pytest.mark.parametrize(
    "model", ["anthropic/claude-sonnet-4-5", "anthropic/claude-opus-4-7", "openai/gpt-4o", "gpt-5", "claude-house-9"]
)
@pytest.mark.parametrize(
    "tokens",
    [
        dict(input_tokens=1_234, output_tokens=567),
        dict(
            input_tokens=10,
            output_tokens=4_000,
            cache_read_tokens=150_000,
            cache_write_tokens=70_000,
            cache_write_1h_tokens=20_000,
        ),
        dict(input_tokens=250_000, output_tokens=1_000),  # above the long-context tier
        dict(input_tokens=0, output_tokens=0),
    ],
)
@pytest.mark.parametrize("details", [{}, {"inference_geo": "us"}, {"speed": "fast"}])
def test_the_fast_pricer_gives_pricers_figures(model, tokens, details):
    """The metering proxy prices with UnitPricer.cost_of on every request: it must be Pricer's figure exactly."""
    from capguard.core.unit_prices import UnitPricer

    pricer = Pricer({"claude-house-9": ModelPrice(input=Decimal(3), output=Decimal(15))})
    reply = Reply("k", model, details=details, **tokens)
    assert UnitPricer(pricer).cost_of(reply) == pricer.price(reply).cost_micro
