"""Prices a model reply: config overrides, then the agent's own figure, then genai-prices.

Pure apart from reading genai-prices' bundled snapshot (offline; no network).
"""

from __future__ import annotations

import functools
import re
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
    "cerebras": "cerebras",
    "moonshot": "moonshotai",
}
_PER_MILLION = Decimal(1_000_000)


@dataclass(frozen=True)
class ModelPrice:
    """USD per million tokens, as written in config (negotiated rates, local models). `cache_write` is the
    5-minute cache write, `cache_write_1h` the 1-hour one; a rate left out is filled by `with_cache_defaults`
    (Pricer does it), and counts at the input price only when nobody filled it."""

    input: Decimal
    output: Decimal
    cache_read: Decimal | None = None
    cache_write: Decimal | None = None
    cache_write_1h: Decimal | None = None

    def cost_usd(self, reply: Reply) -> Decimal:
        read = self.input if self.cache_read is None else self.cache_read
        write = self.input if self.cache_write is None else self.cache_write
        write_1h = write if self.cache_write_1h is None else self.cache_write_1h
        hour = min(reply.cache_write_1h_tokens, reply.cache_write_tokens)
        total = (
            reply.input_tokens * self.input
            + reply.output_tokens * self.output
            + reply.cache_read_tokens * read
            + (reply.cache_write_tokens - hour) * write
            + hour * write_1h
        )
        return total / _PER_MILLION


# A provider's cache rates as multiples of its input rate: (read, 5-minute write, 1-hour write). Anthropic's are
# the same for every Claude model; OpenAI bills no cache write and discounts reads by model family (0.5x for
# gpt-4o, 0.25x for gpt-4.1 and o3, 0.1x for gpt-5), so its families come from genai-prices' data.
_ANTHROPIC_CACHE = (Decimal("0.1"), Decimal("1.25"), Decimal(2))
_OPENAI_CACHE = (Decimal("0.5"), Decimal(1), Decimal(1))  # gpt-4o's, for a model of no family genai-prices knows
_NO_DISCOUNT = (Decimal(1), Decimal(1), Decimal(1))  # a provider whose cache rates are unknown: an upper bound


def with_cache_defaults(model: str, price: ModelPrice) -> ModelPrice:
    """`price` with every cache rate set: the config's own, else the multiples of input that genai-prices shows
    for this model or its family (the longest model id of its provider that begins the name), else the
    provider's usual multiples (Anthropic: read 0.1x, write 1.25x for 5 minutes, 2x for 1 hour; OpenAI: read
    0.5x, no write surcharge), else the input price (an upper bound)."""
    read, write, write_1h = cache_multiples(model)
    return ModelPrice(
        price.input,
        price.output,
        price.input * read if price.cache_read is None else price.cache_read,
        price.input * write if price.cache_write is None else price.cache_write,
        price.input * write_1h if price.cache_write_1h is None else price.cache_write_1h,
    )


@functools.lru_cache(maxsize=256)
def cache_multiples(model: str) -> tuple[Decimal, Decimal, Decimal]:
    """(read, 5-minute write, 1-hour write) as multiples of the input rate, for `with_cache_defaults`."""
    provider, name = split_provider(model)
    provider = provider or _provider_of(name)
    found = _family_price(provider, name)
    if found is not None:
        base_in = _base(getattr(found, "input_mtok", None))
        if base_in:
            read = _base(getattr(found, "cache_read_mtok", None))
            write = _base(getattr(found, "cache_write_mtok", None))
            write_1h = _base(getattr(found, "cache_write_1h_mtok", None))
            default = _ANTHROPIC_CACHE if provider == "anthropic" else _NO_DISCOUNT
            ratios = [default[i] if rate is None else rate / base_in for i, rate in enumerate((read, write, write_1h))]
            if write is not None and write_1h is None:
                ratios[2] = ratios[1]  # one write rate whatever the cache's lifetime
            return ratios[0], ratios[1], ratios[2]
    if provider == "anthropic":
        return _ANTHROPIC_CACHE
    if provider == "openai":
        return _OPENAI_CACHE
    return _NO_DISCOUNT


def _provider_of(name: str) -> str | None:
    low = name.lower().rsplit("/", 1)[-1]
    if "claude" in low:
        return "anthropic"
    if low.startswith(("gpt-", "o1", "o3", "o4", "chatgpt", "codex", "ft:gpt")):
        return "openai"
    if low.startswith("gemini"):
        return "google"
    return None


def _family_price(provider: str | None, name: str) -> object | None:
    """genai-prices' current price of `name`, or of the longest model id of its provider that begins it."""
    if provider is None:
        return None
    from genai_prices import data

    low = name.lower()
    best: object | None = None
    best_len = 0
    for entry in data.providers:
        if entry.id != provider:
            continue
        for info in entry.models:
            if info.match.is_match(low):
                return _current(info.prices)
            stem = info.id.lower()
            boundary = len(low) == len(stem) or not low[len(stem) : len(stem) + 1].isalnum()
            if low.startswith(stem) and boundary and len(stem) > best_len:
                best, best_len = _current(info.prices), len(stem)
    return best


def _current(prices: object) -> object:
    """A model's prices now: the last of a list of dated prices, or the one price."""
    if isinstance(prices, list):
        return prices[-1].prices if prices else None
    return prices


def _base(rate: object) -> Decimal | None:
    """A rate below any long-context tier (the multiples hold for each tier alike)."""
    if rate is None:
        return None
    value = getattr(rate, "base", rate)
    return value if isinstance(value, Decimal) else Decimal(str(value))


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


# Amazon Bedrock's ids of Anthropic's models: a cross-region profile's prefix, the provider, the name, a version
_BEDROCK_ANTHROPIC = re.compile(
    r"^(?:(?:global|us|us-gov|eu|apac|jp|au|ca)\.)?anthropic\.(claude-[a-z0-9.-]+?)(?:-v\d+(?::\d+)?)?$", re.I
)


# Claude's models from before Sonnet 4.5: a cloud's regional endpoints (Vertex's, Bedrock's) cost them no more
NO_REGIONAL_PREMIUM = re.compile(r"^claude-(instant|[23]|4-|(opus|sonnet)-4(-[01])?(@|-\d{8}|$))", re.I)


def bedrock_model(model: str) -> str:
    """Anthropic's name of a Bedrock model id (`anthropic.claude-opus-4-7` -> `claude-opus-4-7`,
    `us.anthropic.claude-sonnet-4-5-20250929-v1:0` -> `claude-sonnet-4-5-20250929`); any other name as it is.
    Bedrock bills Anthropic's models at Anthropic's rates (its regional endpoints' premium aside)."""
    found = _BEDROCK_ANTHROPIC.match(model)
    return found.group(1) if found else model


@functools.lru_cache(maxsize=256)
def _known_to_genai(model: str) -> bool:
    return genai_price(model, 1, 1, 0, 0) is not None


VERTEX_REGIONAL = "vertex-regional"
BEDROCK_REGIONAL = "bedrock-regional"
FOUNDRY_DATA_ZONE = "foundry-data-zone"
# Where a call is served at a premium genai-prices does not price: Anthropic's US-only inference (`inference_geo`
# "us"), Google Vertex AI's regional and multi-region endpoints and Amazon Bedrock's regional ones (Mantle's
# endpoints are each in one region) for Claude Sonnet 4.5 and later models, and Microsoft Foundry's US Data Zone
# deployments (no request says a deployment's type: every Foundry call is held and settled at it, never low)
GEO_PREMIUM = {
    "us": Decimal("1.1"), VERTEX_REGIONAL: Decimal("1.1"), BEDROCK_REGIONAL: Decimal("1.1"),
    FOUNDRY_DATA_ZONE: Decimal("1.1"),
}  # fmt: skip
# The premiums a cloud's endpoint decides (the call's usage does not say them)
PLATFORM_PREMIUMS = (VERTEX_REGIONAL, BEDROCK_REGIONAL, FOUNDRY_DATA_ZONE)


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
    if (anthropic := bedrock_model(name)) != name:  # Claude Code on Bedrock writes Bedrock's ids
        # which say the endpoint: any but a `global.` profile is regional, 10% dearer for Sonnet 4.5 and later
        if (
            geo not in GEO_PREMIUM
            and not name.lower().startswith("global.")
            and not NO_REGIONAL_PREMIUM.match(anthropic)
        ):
            geo = BEDROCK_REGIONAL
        provider, name = "anthropic", anthropic
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
        if geo in GEO_PREMIUM:  # 1.1x the tokens (web searches excepted)
            # genai-prices types every price as possibly tiered; a web search's price never is
            kcount = cast("Decimal | int", calc.model_price.web_searches_kcount or 0)
            web = Decimal(kcount) * web_searches / 1000
            total = (total - web) * GEO_PREMIUM[geo] + web
        return total
    return None


class Pricer:
    """Decides the cost of each reply; `fallback_model` is used when the log hides the model name."""

    def __init__(self, overrides: dict[str, ModelPrice] | None = None, *, fallback_model: str | None = None):
        # the config's cache rates, or the provider's usual multiples of its input rate
        self._overrides = {k.lower(): with_cache_defaults(k, v) for k, v in (overrides or {}).items()}
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
