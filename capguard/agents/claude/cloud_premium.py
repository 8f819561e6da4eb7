"""Claude Code on a cloud's regional endpoint, as the files meter sees it: Google Vertex AI (on a regional or
multi-region endpoint), Amazon Bedrock (a regional or geographic profile, and Mantle, whose endpoints are each one
region's) and Microsoft Foundry (a US Data Zone deployment, which no request shows) add 10% for Claude Sonnet 4.5
and later models, and neither Claude Code's figures (it applies 1.1x for
`inference_geo: "us"` only) nor its transcripts say what a call paid. Bedrock's model ids say it (`global.` or not);
on Vertex, when any region the run may use is not `global`, every reply of such a model is priced with the premium,
and Claude's own figures scaled by it: at most 10% high for a run that mixes `global` with a regional model, never
low. Pure: events in, events out."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import replace
from typing import Any

from capguard.agents.base import env_true
from capguard.core.events import Event, Reply, ReportedTotal
from capguard.core.pricing import GEO_PREMIUM, bedrock_model
from capguard.metering.proxy.dialects import BEDROCK, VERTEX, platform_geo
from capguard.metering.tail import Parser

DEFAULT_REGION = "us-east5"  # Claude Code's, when CLOUD_ML_REGION is not set
_PER_MODEL = "VERTEX_REGION_CLAUDE_"  # Claude Code's per-model regions


def premium_region(tables: Iterable[Mapping[str, Any]]) -> str | None:
    """A region other than `global` that this run's Claude Code may send to on Vertex (None: not on Vertex, or
    every region is global). `tables`: the environment, then the `env` tables of Claude's settings."""
    tables = list(tables)
    if not any(env_true(table.get("CLAUDE_CODE_USE_VERTEX")) for table in tables):
        return None
    named = [str(t["CLOUD_ML_REGION"]).strip() for t in tables if isinstance(t.get("CLOUD_ML_REGION"), str)]
    regions = [r for r in named if r] or [DEFAULT_REGION]
    regions += [v.strip() for t in tables for k, v in t.items() if k.startswith(_PER_MODEL) and isinstance(v, str)]
    return next((r for r in regions if r and r != "global"), None)


class CloudPremium:
    """A parser's events with a cloud's regional premium (`platform`: dialects.VERTEX in `region`, BEDROCK or
    MANTLE): a reply capguard prices gets it in its details, a reply or a total Claude Code priced is scaled by it
    (its own figures leave it out)."""

    def __init__(self, inner: Parser, platform: str, region: str | None = None) -> None:
        self.inner = inner
        self._platform = platform
        self._region = region

    def feed(self, line: bytes, offset: int) -> list[Event]:
        return [self._priced(event) for event in self.inner.feed(line, offset)]

    def _geo(self, model: str | None) -> str | None:
        """The premium a reply of `model` pays; a reply of no known model, or a session's total, may be of a model
        that pays it (the platform's premium then)."""
        name = (model or "claude-opus-5").rsplit("/", 1)[-1]
        if self._platform == VERTEX:
            location = self._region
        else:  # Bedrock's ids say it; Mantle's endpoints are each one region's
            location = "global" if self._platform == BEDROCK and name.startswith("global.") else "regional"
        return platform_geo(bedrock_model(name), location, self._platform)

    def _priced(self, event: Event) -> Event:
        if isinstance(event, ReportedTotal):
            if self._geo(None) is None:
                return event
            return replace(event, cost_micro=_scaled(event.cost_micro), baseline_micro=_scaled(event.baseline_micro))
        geo = self._geo(event.model) if isinstance(event, Reply) else None
        if not isinstance(event, Reply) or geo is None:
            return event
        if event.reported_cost_micro:
            return replace(event, reported_cost_micro=_scaled(event.reported_cost_micro))
        if event.details.get("inference_geo") in GEO_PREMIUM:
            return event  # priced at a premium already
        return replace(event, details={**event.details, "inference_geo": geo})


def _scaled(micro: int) -> int:
    return -(-micro * 11 // 10)  # rounded up: never below what the cloud bills


def with_premium(platform: str | None, region: str | None = None) -> Callable[[Parser], Parser]:
    """Wraps a parser on a cloud whose endpoints may add the premium (on Vertex: when `region` pays it);
    otherwise leaves it as it is."""
    if platform is None or (platform == VERTEX and region is None):
        return lambda parser: parser
    return lambda parser: CloudPremium(parser, platform, region)
