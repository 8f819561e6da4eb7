"""The files meter of Claude Code on Vertex AI: which runs pay the regional premium, and what it does to the
events of Claude's transcripts, telemetry and totals (pure: events in, events out)."""

from __future__ import annotations

import pytest

from capguard.agents.claude.cloud_premium import CloudPremium, premium_region, with_premium
from capguard.core.events import Malformed, Reply, ReportedTotal
from capguard.core.pricing import VERTEX_REGIONAL, Pricer
from capguard.metering.proxy.dialects import VERTEX

ON = {"CLAUDE_CODE_USE_VERTEX": "1"}


@pytest.mark.parametrize(
    ("tables", "region"),
    [
        ([{}], None),  # not on Vertex
        ([{"CLOUD_ML_REGION": "us-east5"}], None),
        ([ON], "us-east5"),  # Claude Code's default region
        ([{**ON, "CLOUD_ML_REGION": "europe-west1"}], "europe-west1"),
        ([{**ON, "CLOUD_ML_REGION": "us"}], "us"),  # multi-region: the premium too
        ([{**ON, "CLOUD_ML_REGION": "global"}], None),
        ([{**ON, "CLOUD_ML_REGION": "global", "VERTEX_REGION_CLAUDE_HAIKU_4_5": "us-east5"}], "us-east5"),
        ([{"CLOUD_ML_REGION": "global"}, {"CLAUDE_CODE_USE_VERTEX": "true"}], None),  # chosen in the settings
        ([{**ON, "CLOUD_ML_REGION": "global"}, {"CLOUD_ML_REGION": "asia-east1"}], "asia-east1"),
        ([{**ON, "CLOUD_ML_REGION": " "}], "us-east5"),
    ],
)
def test_a_run_pays_the_premium_when_any_region_it_may_use_is_not_global(tables, region):
    assert premium_region(tables) == region


class Lines:
    def __init__(self, *events):
        self.events = list(events)

    def feed(self, line: bytes, offset: int):
        return self.events


def reply(model: str | None, **kw) -> Reply:
    return Reply("k", model, input_tokens=1_000_000, output_tokens=100_000, **kw)


def test_a_reply_capguard_prices_gets_the_premium_and_claudes_figures_are_scaled_by_it():
    malformed = Malformed("f", 3, "bad")
    parser = CloudPremium(
        Lines(
            reply("claude-opus-5-5"),
            reply("claude-opus-5-5", reported_cost_micro=1_000_001),
            reply("claude-sonnet-4@20250514"),  # before Sonnet 4.5: Google adds nothing
            reply("claude-opus-5-5", details={"inference_geo": "us"}),  # priced at a premium already
            reply("claude-opus-5-5", details={"inference_geo": "not_available"}),  # no premium: it gets Vertex's
            ReportedTotal("s", 2_000_000, "cost-state", baseline_micro=500_000),
            malformed,
        ),
        VERTEX,
        "us-east5",
    )
    ours, claudes, old, said, unsaid, total, passed = parser.feed(b"", 0)
    assert unsaid.details["inference_geo"] == VERTEX_REGIONAL
    assert ours.details["inference_geo"] == VERTEX_REGIONAL and ours.reported_cost_micro is None
    assert claudes.reported_cost_micro == 1_100_002  # rounded up, never below Google's bill
    assert old == reply("claude-sonnet-4@20250514") and said.details == {"inference_geo": "us"}
    assert (total.cost_micro, total.baseline_micro) == (2_200_000, 550_000)
    assert passed is malformed
    pricer = Pricer()
    base = pricer.price(reply("claude-opus-5-5")).cost_micro
    assert base is not None and pricer.price(ours).cost_micro == round(base * 1.1)


def test_no_region_that_pays_leaves_the_parser_as_it_is():
    parser = Lines(reply("claude-opus-5-5"))
    assert with_premium(None)(parser) is parser
    assert with_premium(VERTEX, None)(parser) is parser  # on Vertex, every region global
    assert isinstance(with_premium(VERTEX, "us-east5")(parser), CloudPremium)
