"""Claude Code on Google Vertex AI, as the files meter sees it: Google adds 10% on a regional or multi-region
endpoint for Claude Sonnet 4.5 and later models, and neither Claude Code's figures (it applies 1.1x for
`inference_geo: "us"` only) nor its transcripts say which endpoint served a call. When any region the run may use
is not `global`, every reply of such a model is priced with the premium, and Claude's own figures scaled by it:
at most 10% high for a run that mixes `global` with a regional model, never low. Claude in Amazon Bedrock (Mantle)
is served at one region's endpoint, where Bedrock adds the same 10% for the same models: every reply of such a model
gets it. Pure: events in, events out."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import replace
from typing import Any

from capguard.agents.base import env_true
from capguard.core.events import Event, Reply, ReportedTotal
from capguard.core.pricing import BEDROCK_REGIONAL, GEO_PREMIUM, VERTEX_REGIONAL, bedrock_model
from capguard.metering.proxy.dialects import vertex_geo
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


class VertexPremium:
    """A parser's events with a cloud's regional premium (Vertex's in `region`, or Bedrock's with `geo`
    BEDROCK_REGIONAL): a reply capguard prices gets it in its details, a reply or a total Claude Code priced is
    scaled by it (its own figures leave it out)."""

    def __init__(self, inner: Parser, region: str, geo: str = VERTEX_REGIONAL) -> None:
        self.inner = inner
        self._region = region
        self._geo = geo

    def feed(self, line: bytes, offset: int) -> list[Event]:
        return [self._priced(event) for event in self.inner.feed(line, offset)]

    def _premium(self, model: str | None) -> bool:
        # a reply of no known model, or a session's total, may be of a model that pays it
        return model is None or vertex_geo(self._region, bedrock_model(model.rsplit("/", 1)[-1])) is not None

    def _priced(self, event: Event) -> Event:
        if isinstance(event, ReportedTotal):
            return replace(event, cost_micro=_scaled(event.cost_micro), baseline_micro=_scaled(event.baseline_micro))
        if not isinstance(event, Reply) or not self._premium(event.model):
            return event
        if event.reported_cost_micro:
            return replace(event, reported_cost_micro=_scaled(event.reported_cost_micro))
        if event.details.get("inference_geo") in GEO_PREMIUM:
            return event  # priced at a premium already
        return replace(event, details={**event.details, "inference_geo": self._geo})


def _scaled(micro: int) -> int:
    return -(-micro * 11 // 10)  # rounded up: never below what Google bills


def with_premium(region: str | None, *, mantle: bool = False) -> Callable[[Parser], Parser]:
    """Wraps a parser when a Vertex region pays the premium, or on Mantle; otherwise leaves it as it is."""
    if mantle:
        return lambda parser: VertexPremium(parser, MANTLE_REGION, BEDROCK_REGIONAL)
    if region is None:
        return lambda parser: parser
    return lambda parser: VertexPremium(parser, region)


MANTLE_REGION = "mantle"  # any name but `global`: each of Mantle's endpoints is one region's
