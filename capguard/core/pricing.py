"""Prices a model reply: config overrides, then the agent's own figure, then genai-prices.

Pure apart from reading genai-prices' bundled snapshot (offline; no network).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal
from typing import cast

from capguard.core.events import Reply

# litellm-style provider prefixes (as aider and proxies spell them) -> genai-prices provider ids
_PROVIDERS = {
    "openai": "openai",
    "anthropic": "anthropic",
    "gemini": "google",
    "google": "google",
    "vertex_ai": "google",
    "deepseek": "deepseek",
    "openrouter": "openrouter",
    "xai": "x-ai",
    "mistral": "mistral",
    "groq": "groq",
    "together_ai": "together",
    "fireworks_ai": "fireworks",
    "bedrock": "aws",
    "azure": "azure",
    "cohere": "cohere",
    "perplexity": "perplexity",
}
_PER_MILLION = Decimal(1_000_000)


@dataclass(frozen=True)
class ModelPrice:
    """USD per million tokens, as written in config (negotiated rates, local models)."""

    input: Decimal
    output: Decimal
    cache_read: Decimal | None = None
    cache_write: Decimal | None = None

    def cost_usd(self, reply: Reply) -> Decimal:
        read = self.input if self.cache_read is None else self.cache_read
        write = self.input if self.cache_write is None else self.cache_write
        total = (
            reply.input_tokens * self.input
            + reply.output_tokens * self.output
            + reply.cache_read_tokens * read
            + reply.cache_write_tokens * write
        )
        return total / _PER_MILLION


@dataclass(frozen=True)
class Priced:
    model: str | None
    cost_micro: int | None  # None: nobody could price this reply
    priced_by: str | None  # "config" | "agent" | "genai-prices" | None


def to_micro(usd: Decimal | float) -> int:
    return int(Decimal(str(usd)).scaleb(6).quantize(Decimal(1), rounding=ROUND_HALF_UP))


def split_provider(model: str) -> tuple[str | None, str]:
    """`openai/gpt-4o` -> ("openai", "gpt-4o"); `openrouter/anthropic/x` -> ("openrouter", "anthropic/x")."""
    head, sep, rest = model.partition("/")
    if sep and head.lower() in _PROVIDERS:
        return _PROVIDERS[head.lower()], rest
    return None, model


@functools.lru_cache(maxsize=256)
def _known_to_genai(model: str) -> bool:
    return genai_price(model, 1, 1, 0, 0) is not None


def genai_price(
    model: str,
    input_tokens: int,
    output_tokens: int,
    cache_read: int,
    cache_write: int,
    *,
    cache_write_1h: int = 0,
    web_searches: int = 0,
    speed: str | None = None,
    geo: str | None = None,
) -> Decimal | None:
    """Price from genai-prices' offline snapshot, or None if it does not know the model."""
    from genai_prices import Usage, calc_price  # imported lazily: ~30 ms we spend only when needed

    provider, name = split_provider(model)
    # genai-prices counts cache tokens inside input_tokens
    fields = dict(
        input_tokens=input_tokens + cache_read + cache_write,
        output_tokens=output_tokens,
        cache_read_tokens=cache_read,
        cache_write_tokens=cache_write,
    )
    if cache_write_1h:  # 1-hour cache writes cost more than 5-minute ones
        fields.update(cache_write_5m_tokens=cache_write - cache_write_1h, cache_write_1h_tokens=cache_write_1h)
    if web_searches:
        fields["web_searches"] = web_searches
    usage = Usage(**fields)
    context = {"speed": speed} if speed else None  # fast mode has its own prices
    for candidate in (provider, None) if provider else (None,):
        try:
            calc = calc_price(usage, name, provider_id=candidate, price_context=context)
        except (LookupError, ValueError):
            continue
        total = calc.total_price
        if geo == "us":  # Anthropic's US-only inference costs 1.1x the tokens (web searches excepted)
            # genai-prices types every price as possibly tiered; a web search's price never is
            kcount = cast("Decimal | int", calc.model_price.web_searches_kcount or 0)
            web = Decimal(kcount) * web_searches / 1000
            total = (total - web) * Decimal("1.1") + web
        return total
    return None


class Pricer:
    """Decides the cost of each reply; `fallback_model` is used when the log hides the model name."""

    def __init__(self, overrides: dict[str, ModelPrice] | None = None, *, fallback_model: str | None = None):
        self._overrides = {k.lower(): v for k, v in (overrides or {}).items()}
        self.fallback_model = fallback_model

    def model_of(self, reply: Reply) -> str | None:
        name = reply.model
        if not name or "REDACTED" in name or name == "None":
            return self.fallback_model
        return name

    def override_for(self, model: str | None) -> ModelPrice | None:
        if not model:
            return None
        low = model.lower()
        return self._overrides.get(low) or self._overrides.get(split_provider(low)[1])

    def can_price(self, model: str | None) -> bool:
        """Whether capguard itself can price this model (without the agent's help)."""
        return bool(model) and (self.override_for(model) is not None or _known_to_genai(model))

    def price(self, reply: Reply) -> Priced:
        model = self.model_of(reply)
        override = self.override_for(model)
        if override is not None:
            return Priced(model, to_micro(override.cost_usd(reply)), "config")
        if reply.reported_cost_micro:
            return Priced(model, reply.reported_cost_micro, "agent")
        if reply.tokens == 0:
            return Priced(model, 0, "agent")  # nothing used, nothing to price
        if model:
            usd = genai_price(
                model,
                reply.input_tokens,
                reply.output_tokens,
                reply.cache_read_tokens,
                reply.cache_write_tokens,
                cache_write_1h=reply.cache_write_1h_tokens,
                web_searches=reply.web_search_requests,
                speed=reply.details.get("speed"),
                geo=reply.details.get("inference_geo"),
            )
            if usd is not None:
                return Priced(model, to_micro(usd), "genai-prices")
        return Priced(model, None, None)
