"""Strict mode's proxy for Claude on Google Vertex AI, pure parts: routes (the model, the stream and the location
in the path), the host of each location, the regional endpoints' premium, the request's facts (the path's model
over the body's), the Gate holding and settling a Vertex call (no sockets), and Claude Code's front."""

from __future__ import annotations

import json

import pytest

from capguard.agents.claude.adapter import strict_fronts as claude_fronts
from capguard.core.errors import ConfigError
from capguard.core.pricing import VERTEX_REGIONAL, Pricer, genai_price
from capguard.metering.proxy.dialects import (
    ANTHROPIC,
    GEMINI,
    VERTEX,
    VERTEX_BY_LOCATION,
    VERTEX_GEMINI,
    ask,
    error_body,
    route,
    vertex_base,
    vertex_geo,
    vertex_host,
)
from capguard.metering.proxy.gate import Admission, Gate
from capguard.metering.proxy.usage import Tracker

MODEL = "claude-opus-5-5"  # $4 / $20 per million in and out (genai-prices)
PATH = "projects/my-proj/locations/{}/publishers/anthropic/models/{}:{}"


def body(text: str = "hello", **extra) -> dict:
    return {"anthropic_version": "vertex-2023-10-16", "max_tokens": 1000, **extra,
            "messages": [{"role": "user", "content": text}]}  # fmt: skip


# ---- routes and hosts


@pytest.mark.parametrize(
    ("tail", "expected"),
    [
        (PATH.format("us-east5", MODEL, "streamRawPredict"), (ANTHROPIC, MODEL, True, "us-east5", False)),
        (PATH.format("global", "claude-sonnet-4-5@20250929", "rawPredict"),
         (ANTHROPIC, "claude-sonnet-4-5@20250929", False, "global", False)),
        (PATH.format("europe-west1", "count-tokens", "rawPredict"), (None, None, False, "europe-west1", True)),
    ],
)  # fmt: skip
def test_routes_metered_and_free(tail, expected):
    found = route("POST", tail, VERTEX)
    assert (found.dialect, found.model, found.stream, found.location, found.free) == expected
    assert found.why is None


@pytest.mark.parametrize(
    ("method", "tail"),
    [
        ("GET", PATH.format("us-east5", MODEL, "rawPredict")),
        ("POST", PATH.format("us-east5", MODEL, "predict")),  # any other method of the model
        ("POST", PATH.format("us-east5", "count-tokens", "streamRawPredict")),
        ("POST", "projects/p/locations/us-east5/publishers/google/models/gemini-2.5-pro:generateContent"),
        ("POST", "projects/p/locations/us-east5/publishers/anthropic/models/" + MODEL + ":rawPredict/x"),
        ("POST", "v1/messages"),  # the Messages API's path is not Vertex's
        ("POST", "projects/p/locations/evil.example:443/publishers/anthropic/models/m:rawPredict"),
    ],
)
def test_anything_else_is_refused_with_a_reason(method, tail):
    found = route(method, tail, VERTEX)
    assert found.why and "could cost money unmetered" in found.why and found.dialect is None and not found.free


@pytest.mark.parametrize(
    ("location", "base"),
    [
        ("global", "https://aiplatform.googleapis.com/v1"),
        ("us", "https://aiplatform.us.rep.googleapis.com/v1"),
        ("eu", "https://aiplatform.eu.rep.googleapis.com/v1"),
        ("us-east5", "https://us-east5-aiplatform.googleapis.com/v1"),
        ("europe-west1", "https://europe-west1-aiplatform.googleapis.com/v1"),
        ("asia-southeast1", "https://asia-southeast1-aiplatform.googleapis.com/v1"),
    ],
)
def test_each_location_has_the_host_anthropics_sdks_use(location, base):
    assert vertex_base(location) == base


@pytest.mark.parametrize("location", ["", "us-east", "evil-example1.attacker", "us-east5.evil", "x" * 70, "US-EAST5"])
def test_a_name_no_location_has_gets_no_host(location):
    """The host is built from the path: only a location's shape can make one, always a Google host."""
    assert vertex_base(location) is None


@pytest.mark.parametrize(
    ("location", "model", "geo"),
    [
        ("us-east5", MODEL, VERTEX_REGIONAL),
        ("us", "claude-sonnet-4-5@20250929", VERTEX_REGIONAL),
        ("europe-west1", "claude-haiku-4-5@20251001", VERTEX_REGIONAL),
        ("us-east5", "claude-opus-4-5@20251101", VERTEX_REGIONAL),
        ("global", MODEL, None),
        ("us-east5", "claude-sonnet-4@20250514", None),  # before Sonnet 4.5: no premium
        ("us-east5", "claude-opus-4-1@20250805", None),
        ("us-east5", "claude-opus-4@20250514", None),
        ("us-east5", "claude-3-7-sonnet@20250219", None),
        ("us-east5", "claude-3-5-haiku@20241022", None),
    ],
)
def test_regional_endpoints_cost_more_for_sonnet_4_5_and_every_later_model(location, model, geo):
    assert vertex_geo(location, model) == geo


def test_the_premium_is_a_tenth_of_the_tokens():
    base = genai_price("anthropic/" + MODEL, 1_000_000, 1_000_000, 0, 0)
    assert base is not None and genai_price("anthropic/" + MODEL, 1_000_000, 1_000_000, 0, 0, geo=VERTEX_REGIONAL) == (
        base * 11 / 10
    )


# ---- the request's facts


def test_the_paths_model_and_stream_are_the_requests():
    wants = ask(ANTHROPIC, body(), model=MODEL, stream=True, location="global")
    assert (wants.model, wants.stream, wants.max_out, wants.geo) == (MODEL, True, 1000, None)
    # Vertex serves and bills the path's model, whatever the body names
    wants = ask(ANTHROPIC, body(model="claude-haiku-4-5"), model=MODEL, location="us-east5")
    assert (wants.model, wants.geo) == (MODEL, VERTEX_REGIONAL)


def test_refusals_are_in_anthropics_error_format():
    assert json.loads(error_body(VERTEX, "no")) == {"type": "error", "error": {"type": "invalid_request_error",
                                                                             "message": "no"}}  # fmt: skip


# ---- the gate


def message_start(input_tokens: int) -> dict:
    return {"type": "message_start", "message": {"id": "msg_vrtx_1", "model": MODEL,
            "usage": {"input_tokens": input_tokens, "output_tokens": 1}}}  # fmt: skip


@pytest.mark.parametrize(("location", "factor"), [("us-east5", 1.1), ("global", 1.0)])
def test_the_gate_settles_at_the_usage_with_the_locations_premium(location, factor):
    gate = Gate(Pricer(), cap_micro=1_000_000)
    admission = gate.admit(ANTHROPIC, body(stream=True), model=MODEL, stream=True, provider="anthropic",
                           location=location)  # fmt: skip
    assert isinstance(admission, Admission) and admission.model == "anthropic/" + MODEL
    tracker = Tracker(ANTHROPIC)
    for event in (
        message_start(1000),
        {"type": "vertex_event", "usage": {"input_tokens": 5, "output_tokens": 5}},  # Vertex's own: not Anthropic's
        {"type": "message_delta", "delta": {"stop_reason": "end_turn"}, "usage": {"output_tokens": 200}},
        {"type": "message_stop"},
    ):
        tracker.see(event)
    reply = gate.settle(admission, tracker.seen)
    assert reply is not None and reply.key == "proxy:anthropic:msg_vrtx_1" and reply.details["charged"] == "usage"
    # $4 x 1,000 + $20 x 200 per million, 1.1x on a regional endpoint
    assert gate.spent_micro == round((1000 * 4 + 200 * 20) * factor) == Pricer().price(reply).cost_micro


@pytest.mark.parametrize("said", ["not_available", "global"])
def test_a_usage_that_names_no_premium_gets_vertexs(said):
    gate = Gate(Pricer(), cap_micro=1_000_000)
    admission = gate.admit(ANTHROPIC, body(), model=MODEL, provider="anthropic", location="us-east5")
    assert isinstance(admission, Admission)
    tracker = Tracker(ANTHROPIC)
    start = message_start(1000)
    start["message"]["usage"]["inference_geo"] = said
    tracker.see(start)
    tracker.see({"type": "message_delta", "delta": {"stop_reason": "end_turn"}, "usage": {"output_tokens": 200}})
    reply = gate.settle(admission, tracker.seen)
    assert reply is not None and reply.details["inference_geo"] == VERTEX_REGIONAL
    assert gate.spent_micro == round((1000 * 4 + 200 * 20) * 1.1)


def test_a_cut_call_is_charged_its_bound_at_the_premium_it_was_held_at():
    gate = Gate(Pricer(), cap_micro=1_000_000)
    admission = gate.admit(ANTHROPIC, body(), model=MODEL, provider="anthropic", location="us-east5")
    assert isinstance(admission, Admission)
    reply = gate.settle(admission, None)  # no reply at all: its whole hold
    assert reply is not None and reply.details["charged"] == "bound"
    assert reply.details["inference_geo"] == VERTEX_REGIONAL
    assert gate.spent_micro == admission.hold.micro


# ---- Claude Code's front


def test_claude_on_vertex_is_fronted_at_its_vertex_base_url(tmp_path):
    cwd, home = tmp_path / "repo", tmp_path / ".claude"
    cwd.mkdir()
    (front,) = claude_fronts([], {"CLAUDE_CODE_USE_VERTEX": "1"}, cwd, home)
    assert (front.mount, front.upstream, front.dialect, front.env, front.provider) == (
        "vertex", VERTEX_BY_LOCATION, VERTEX, ("ANTHROPIC_VERTEX_BASE_URL",), "anthropic"
    )  # fmt: skip
    gateway = {"CLAUDE_CODE_USE_VERTEX": "true", "ANTHROPIC_VERTEX_BASE_URL": "https://gw.example/vertex/v1"}
    (front,) = claude_fronts([], gateway, cwd, home)
    assert front.upstream == "https://gw.example/vertex/v1"
    home.mkdir()
    (home / "settings.json").write_text(json.dumps({"env": {"CLAUDE_CODE_USE_VERTEX": "1"}}))
    (front,) = claude_fronts([], {}, cwd, home)  # chosen in Claude's settings: fronted too
    assert front.mount == "vertex"


def test_claude_on_vertex_with_a_base_url_capguard_cannot_replace_is_refused(tmp_path):
    cwd, home = tmp_path / "repo", tmp_path / ".claude"
    cwd.mkdir()
    home.mkdir()
    on = {"CLAUDE_CODE_USE_VERTEX": "1"}
    with pytest.raises(ConfigError, match="ANTHROPIC_VERTEX_BASE_URL 'ftp://x' is not an http"):
        claude_fronts([], {**on, "ANTHROPIC_VERTEX_BASE_URL": "ftp://x"}, cwd, home)
    (home / "settings.json").write_text(json.dumps({"env": {"ANTHROPIC_VERTEX_BASE_URL": "https://x/v1"}}))
    with pytest.raises(ConfigError, match="ANTHROPIC_VERTEX_BASE_URL is set in .*settings.json.*--meter files"):
        claude_fronts([], on, cwd, home)


# ---- the provider's count (free on Vertex too)


def test_a_metered_path_has_its_count_next_to_it_and_the_count_names_the_model():
    from capguard.metering.proxy import bounds
    from capguard.metering.proxy.dialects import count_tail

    for verb in ("rawPredict", "streamRawPredict"):
        assert count_tail(ANTHROPIC, PATH.format("us-east5", MODEL, verb)) == PATH.format(
            "us-east5", "count-tokens", "rawPredict"
        )
    assert count_tail(ANTHROPIC, PATH.format("us-east5", MODEL, "predict")) is None
    assert count_tail(ANTHROPIC, "v1/messages") == "v1/messages/count_tokens"  # the Messages API's, unchanged
    request = body("word " * 20_000, stream=True, system="be brief")
    bound = bounds.input_bound(ANTHROPIC, request, bounds.Conversations())
    counted = bounds.count_request(ANTHROPIC, request, bound, MODEL)
    assert counted == {"model": MODEL, "messages": request["messages"], "system": "be brief"}
    direct = {**body("word " * 20_000), "model": "claude-sonnet-4-5"}
    bound = bounds.input_bound(ANTHROPIC, direct, bounds.Conversations())
    assert bounds.count_request(ANTHROPIC, direct, bound, "claude-sonnet-4-5")["model"] == "claude-sonnet-4-5"


# ---- Gemini on Vertex (Gemini CLI's vertex-ai sign-in)


@pytest.mark.parametrize(
    ("tail", "expected"),
    [
        ("v1beta1/publishers/google/models/gemini-2.5-flash:streamGenerateContent",
         (GEMINI, "gemini-2.5-flash", True, "global", False)),  # express mode: an API key, no location
        ("v1beta1/projects/my-proj/locations/us-central1/publishers/google/models/gemini-2.5-pro:generateContent",
         (GEMINI, "gemini-2.5-pro", False, "us-central1", False)),
        ("v1/projects/p/locations/europe-west4/publishers/google/models/gemini-2.5-pro:countTokens",
         (None, None, False, "europe-west4", True)),
    ],
)  # fmt: skip
def test_gemini_routes_on_vertex(tail, expected):
    found = route("POST", tail, VERTEX_GEMINI)
    assert (found.dialect, found.model, found.stream, found.location, found.free) == expected


@pytest.mark.parametrize(
    "tail",
    [
        "v1beta1/publishers/google/models/gemini-2.5-flash:predict",
        "v1beta1/publishers/anthropic/models/claude-opus-5-5:rawPredict",  # Claude is not Gemini CLI's
        "v1beta/models/gemini-2.5-flash:generateContent",  # the Gemini API's path, not Vertex's
        "v1beta1/projects/p/locations/us-central1/cachedContents",
    ],
)
def test_anything_else_on_vertex_for_gemini_is_refused(tail):
    found = route("POST", tail, VERTEX_GEMINI)
    assert found.why and found.dialect is None and not found.free


def test_gemini_on_vertex_refusals_are_in_googles_format_and_hosts_have_no_version():
    assert json.loads(error_body(VERTEX_GEMINI, "no", status=429))["error"]["status"] == "RESOURCE_EXHAUSTED"
    assert vertex_host("global") == "https://aiplatform.googleapis.com"
    assert vertex_host("us-central1") == "https://us-central1-aiplatform.googleapis.com"
    assert vertex_host("evil.example") is None


def test_gemini_on_vertex_has_its_count_in_vertexs_own_shape():
    """Vertex's countTokens takes the prompt's fields (no `generateContentRequest` inside, unlike the Gemini API's);
    a field the count could not see means no count: the bytes' bound stays."""
    from capguard.metering.proxy import bounds
    from capguard.metering.proxy.dialects import count_tail

    tail = "v1beta1/projects/p/locations/us-central1/publishers/google/models/gemini-2.5-pro:streamGenerateContent"
    assert count_tail(GEMINI, tail) == tail.replace(":streamGenerateContent", ":countTokens")
    express = "v1beta1/publishers/google/models/gemini-2.5-flash:generateContent"
    assert count_tail(GEMINI, express) == "v1beta1/publishers/google/models/gemini-2.5-flash:countTokens"
    body = {
        "contents": [{"role": "user", "parts": [{"text": "x" * 40_000}]}],
        "systemInstruction": {"parts": [{"text": "be brief"}]},
        "generationConfig": {"maxOutputTokens": 1000},
        "toolConfig": {"functionCallingConfig": {"mode": "AUTO"}},  # adds no prompt tokens
    }
    bound = bounds.input_bound(GEMINI, body, bounds.Conversations())
    asked = bounds.count_request(GEMINI, body, bound, "gemini-2.5-pro", VERTEX_GEMINI)
    assert asked == {k: body[k] for k in ("contents", "systemInstruction", "generationConfig")}
    on_api = bounds.count_request(GEMINI, body, bound, "gemini-2.5-pro")
    assert on_api is not None and "generateContentRequest" in on_api  # the Gemini API's shape, as before
    assert bounds.count_request(GEMINI, {**body, "cachedContent": "c/1"}, bound, "m", VERTEX_GEMINI) is None
    assert route("POST", tail, VERTEX_GEMINI).platform == VERTEX_GEMINI
