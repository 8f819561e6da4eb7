"""Prices many replies fast and exactly as `capguard.core.pricing.Pricer` does: imports of 100k+ replies, and the
metering proxy's reservation and settlement on every request.

A genai-prices call takes 0.1-0.3 ms. Below a model's first price tier the price is linear in each token count,
so the per-token rates are probed once per (model, speed, geo) through `genai_price` itself and kept as integer
pico-dollars: sums are exact and round to micro-dollars like `to_micro`. Above a tier, or when a rate is not a
whole number of pico-dollars, each reply goes to genai-prices as before.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from capguard.core.events import Reply
from capguard.core.pricing import Pricer, genai_price, split_provider, to_micro

_PROBE = 1000  # tokens per probe: far below any price tier
_PICO_PER_PROBE = Decimal(10**12) / _PROBE
_HALF_MICRO = 500_000  # pico-dollars
# (tier floor or None, pico-USD per token: input, output, cache read, 5-minute write, 1-hour write, web search)
Rates = tuple[Any, ...]


def _tier_floor(model: str, speed: str | None) -> int | None:
    """The smallest `start` of the model's price tiers (total input tokens above it change every rate), 0 if unknown."""
    try:
        from genai_prices import Usage, calc_price
        from genai_prices.types import TieredPrices
    except ImportError:  # pragma: no cover - genai-prices is a dependency
        return 0
    provider, name = split_provider(model)
    context = {"speed": speed} if speed else None
    for candidate in (provider, None) if provider else (None,):
        try:
            calc = calc_price(Usage(input_tokens=_PROBE), name, provider_id=candidate, price_context=context)
        except (LookupError, ValueError):
            continue
        starts = [
            tier.start
            for value in vars(calc.model_price).values()
            if isinstance(value, TieredPrices)
            for tier in value.tiers
        ]
        return min(starts) if starts else None
    return 0


class UnitPricer:
    """`price(...)` -> (micro-USD or None, priced_by or None), the same answer `Pricer.price` gives."""

    def __init__(self, pricer: Pricer | None = None) -> None:
        self._pricer = pricer or Pricer()
        self._rates: dict[tuple[str | None, str | None, str | None], Rates | None] = {}
        self._names: dict[str | None, tuple[str | None, bool]] = {}  # model -> (name to price, has an override)
        self._linear: dict[tuple[str | None, str | None, str | None], Rates | None] = {}

    def probed(self) -> dict[tuple[str | None, str | None, str | None], Rates | None]:
        """The rates probed so far, by (model, speed, geo): what `seed` takes, in another process or a later run."""
        return dict(self._rates)

    def seed(self, rates: dict[tuple[str | None, str | None, str | None], Rates | None]) -> None:
        """Rates another pricer probed from the same genai-prices data on the same day (`probed`): used as if
        probed here, without loading genai-prices."""
        for key, value in rates.items():
            self._rates.setdefault(key, value)

    def warm(self) -> None:
        """Load genai-prices' snapshot now (about 0.3 s): before forking workers, so that they share it."""
        genai_price("claude-sonnet-4-5", 1, 1, 0, 0)

    def _name(self, model: str | None) -> tuple[str | None, bool]:
        if model not in self._names:
            name = self._pricer.model_of(Reply(key="", model=model))
            self._names[model] = (name, self._pricer.override_for(name) is not None)
        return self._names[model]

    def price(
        self,
        model: str | None,
        input_tokens: int,
        output_tokens: int,
        cache_read: int,
        cache_write: int,
        cache_write_1h: int = 0,
        web_searches: int = 0,
        speed: str | None = None,
        geo: str | None = None,
    ) -> tuple[int | None, str | None]:
        name, overridden = self._name(model)
        if overridden or not name:
            reply = Reply(
                key="",
                model=model,
                input_tokens=input_tokens,
                output_tokens=output_tokens,
                cache_read_tokens=cache_read,
                cache_write_tokens=cache_write,
                cache_write_1h_tokens=cache_write_1h,
                web_search_requests=web_searches,
                details={k: v for k, v in (("speed", speed), ("inference_geo", geo)) if v},
            )
            priced = self._pricer.price(reply)
            return priced.cost_micro, priced.priced_by
        if input_tokens + output_tokens + cache_read + cache_write == 0:  # Tokens.total, inline: once per reply
            return 0, "agent"
        rates = self._rates_for(name, speed, geo)
        if rates is not None:
            floor, r_in, r_out, r_read, r_write, r_write_1h, r_web = rates
            if floor is None or input_tokens + cache_read + cache_write <= floor:
                pico = (
                    input_tokens * r_in
                    + output_tokens * r_out
                    + cache_read * r_read
                    + (cache_write - cache_write_1h) * r_write
                    + cache_write_1h * r_write_1h
                    + web_searches * r_web
                )
                return (pico + _HALF_MICRO) // 1_000_000, "genai-prices"
        usd = genai_price(
            name,
            input_tokens,
            output_tokens,
            cache_read,
            cache_write,
            cache_write_1h=cache_write_1h,
            web_searches=web_searches,
            speed=speed,
            geo=geo,
        )
        return (None, None) if usd is None else (to_micro(usd), "genai-prices")

    def cost_of(self, reply: Reply) -> int | None:
        """`Pricer.price(reply).cost_micro`, fast, for a reply that carries no cost of the agent's own."""
        details = reply.details or {}
        return self.price(
            reply.model, reply.input_tokens, reply.output_tokens, reply.cache_read_tokens, reply.cache_write_tokens,
            reply.cache_write_1h_tokens, reply.web_search_requests, details.get("speed"), details.get("inference_geo"),
        )[0]  # fmt: skip

    def linear(self, model: str | None, speed: str | None = None, geo: str | None = None) -> Rates | None:
        """(tier floor or None, rates per token in pico-USD: input, output, cache read, 5-minute cache write,
        1-hour cache write, web search) when a reply of this model is priced by genai-prices below its first
        tier; None when `price()` must decide (config price, unknown model, a missing name)."""
        key = (model, speed, geo)
        if key not in self._linear:
            name, overridden = self._name(model)
            self._linear[key] = None if overridden or not name else self._rates_for(name, speed, geo)
        return self._linear[key]

    def _rates_for(self, model: str, speed: str | None, geo: str | None) -> Rates | None:
        key = (model, speed, geo)
        if key not in self._rates:
            self._rates[key] = self._probe(model, speed, geo)
        return self._rates[key]

    def _probe(self, model: str, speed: str | None, geo: str | None) -> Rates | None:
        """Per-token rates in pico-USD, or None (unknown model, or rates that are not whole pico-dollars)."""

        def cost(*counts: int, one_hour: int = 0, web: int = 0) -> Decimal | None:
            return genai_price(model, *counts, cache_write_1h=one_hour, web_searches=web, speed=speed, geo=geo)

        n = _PROBE
        probes = [
            cost(n, 0, 0, 0),
            cost(0, n, 0, 0),
            cost(0, 0, n, 0),
            cost(0, 0, 0, n),
            cost(0, 0, 0, n, one_hour=n),
            cost(0, 0, 0, 0, web=n),
        ]
        known = [p for p in probes if p is not None]
        if len(known) < len(probes):
            return None
        rates = [p * _PICO_PER_PROBE for p in known]
        if any(rate != rate.to_integral_value() for rate in rates):
            return None
        ints = [int(rate) for rate in rates]
        # a check of linearity on a mixed reply; any surprise sends every reply of this model to genai-prices
        mixed = cost(3, 5, 7, 11, one_hour=2, web=1)
        expected = 3 * ints[0] + 5 * ints[1] + 7 * ints[2] + 9 * ints[3] + 2 * ints[4] + ints[5]
        if mixed is None or mixed * 10**12 != expected:
            return None
        return (_tier_floor(model, speed), *ints)
