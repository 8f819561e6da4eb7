"""Strict mode's proxy for Google's Gemini API, pure parts: routes (the model and the method are in the path), the
request's facts, the output limit written into every request, Google's error format, the API key moved out of the
URL, usageMetadata read from a stream (cached input apart, thoughts billed as output), a cut stream's bound, and
the Gate holding and settling a Gemini call (no sockets)."""

from __future__ import annotations

import json

import pytest

from capguard.core.pricing import Pricer
from capguard.metering.proxy.dialects import (
    GEMINI,
    GEMINI_MAX_OUTPUT,
    ask,
    error_body,
    gemini_key_to_header,
    route,
    with_max_out,
)
from capguard.metering.proxy.gate import Admission, Gate, Refused
from capguard.metering.proxy.usage import Tracker, from_body

MODEL = "gemini-2.5-flash"  # $0.30 / $2.50 per million in and out, cache reads $0.03 (genai-prices)
CAP = 1_000_000


def body(text: str = "hello", **config) -> dict:
    request: dict = {"contents": [{"role": "user", "parts": [{"text": text}]}]}
    if config:
        request["generationConfig"] = config
    return request


# ---- routes


@pytest.mark.parametrize(
    ("method", "tail", "expected"),
    [
        ("POST", "v1beta/models/gemini-2.5-flash:streamGenerateContent", (GEMINI, "gemini-2.5-flash", True, False)),
        ("POST", "v1beta/models/gemini-3.8-flash:generateContent", (GEMINI, "gemini-3.8-flash", False, False)),
        ("POST", "v1/models/gemini-2.5-pro:generateContent", (GEMINI, "gemini-2.5-pro", False, False)),
        ("POST", "v1beta/models/gemini-2.5-flash:countTokens", (None, None, False, True)),
        ("GET", "v1beta/models", (None, None, False, True)),
        ("GET", "v1beta/models/gemini-2.5-flash", (None, None, False, True)),
    ],
)
def test_routes_metered_and_free(method, tail, expected):
    where = route(method, tail, GEMINI)
    assert (where.dialect, where.model, where.stream, where.free) == expected and where.why is None


@pytest.mark.parametrize(
    ("method", "tail"),
    [
        ("POST", "v1beta/models/gemini-embedding-001:embedContent"),
        ("POST", "v1beta/models/gemini-2.5-flash:batchGenerateContent"),
        ("POST", "v1beta/cachedContents"),
        ("POST", "upload/v1beta/files"),
        ("POST", "v1beta/tunedModels/mine:generateContent"),
        ("DELETE", "v1beta/files/abc"),
        ("POST", "v1/messages"),  # another API's path on the Gemini mount
    ],
)
def test_anything_else_is_refused_with_a_reason(method, tail):
    where = route(method, tail, GEMINI)
    assert where.dialect is None and not where.free and "could cost money unmetered" in (where.why or "")


# ---- request facts


def test_a_request_without_a_limit_is_held_at_the_models_ceiling_and_gets_it_written():
    wants = ask(GEMINI, body(thinkingConfig={"thinkingLevel": "HIGH"}), model=MODEL, stream=True)
    assert (wants.model, wants.stream, wants.max_out, wants.write_limit) == (MODEL, True, GEMINI_MAX_OUTPUT, True)
    assert wants.hidden_reasoning  # thoughts are billed, never streamed whole
    assert ask(GEMINI, body(), model="gemini-2.0-flash").max_out == 8_192


def test_a_request_with_a_limit_keeps_it_and_thinking_off_is_no_hidden_reasoning():
    wants = ask(GEMINI, body(maxOutputTokens=2000, thinkingConfig={"thinkingBudget": 0}, candidateCount=2), model=MODEL)
    assert (wants.max_out, wants.write_limit, wants.hidden_reasoning, wants.choices) == (2000, False, False, 2)


@pytest.mark.parametrize(
    ("request_body", "model", "words"),
    [
        ({**body(), "tools": [{"googleSearch": {}}]}, MODEL, "server-side tool 'googleSearch'"),
        ({**body(), "tools": [{"functionDeclarations": []}, {"codeExecution": {}}]}, MODEL, "'codeExecution'"),
        ({**body(), "cachedContent": "cachedContents/abc"}, MODEL, "context cache"),
        (
            {"contents": [{"role": "user", "parts": [{"fileData": {"fileUri": "files/x", "mimeType": "video/mp4"}}]}]},
            MODEL,
            "fileData",
        ),
        (body(responseModalities=["TEXT", "IMAGE"]), MODEL, "text replies only"),
        (body(), "gemini-2.5-flash-image", "text replies only"),
        (body(), "gemini-2.5-flash-tts", "text replies only"),
        (body(), None, "names no model"),
    ],
)
def test_a_request_capguard_cannot_bound_is_refused(request_body, model, words):
    with pytest.raises(ValueError, match=words.replace("(", r"\(")):
        ask(GEMINI, request_body, model=model)


def test_the_limit_goes_in_generation_config_and_a_thinking_budget_above_half_comes_down():
    sent = with_max_out(
        GEMINI, body(temperature=1, thinkingConfig={"thinkingBudget": 8192, "includeThoughts": True}), 4000
    )
    assert sent["generationConfig"] == {
        "temperature": 1,
        "maxOutputTokens": 4000,
        "thinkingConfig": {"thinkingBudget": 2000, "includeThoughts": True},
    }
    assert with_max_out(GEMINI, body(), 70_000)["generationConfig"] == {"maxOutputTokens": 70_000}


# ---- errors and the key


@pytest.mark.parametrize(
    ("status", "google"), [(429, "RESOURCE_EXHAUSTED"), (400, "INVALID_ARGUMENT"), (403, "PERMISSION_DENIED")]
)
def test_refusals_are_in_googles_error_format(status, google):
    assert json.loads(error_body(GEMINI, "capguard: no", "invalid_request_error", status)) == {
        "error": {"code": status, "message": "capguard: no", "status": google}
    }


def test_a_key_in_the_query_moves_to_the_header():
    query, headers = gemini_key_to_header("alt=sse&key=AIzaSECRET", {"Content-Type": "application/json"})
    assert query == "alt=sse" and headers == {"Content-Type": "application/json", "x-goog-api-key": "AIzaSECRET"}
    assert gemini_key_to_header("alt=sse", {}) == ("alt=sse", {})
    query, headers = gemini_key_to_header("key=other", {"X-Goog-Api-Key": "mine"})
    assert query == "" and headers == {"X-Goog-Api-Key": "mine"}  # the header the client sent wins


# ---- usage


def chunk(usage: dict, *, text: str = "", finish: str | None = None) -> dict:
    candidate: dict = {"content": {"role": "model", "parts": [{"text": text}]}, "index": 0}
    if finish:
        candidate["finishReason"] = finish
    return {"candidates": [candidate], "usageMetadata": usage, "modelVersion": MODEL, "responseId": "resp-1"}


def test_a_stream_settles_at_its_last_usage_cached_apart_thoughts_as_output():
    tracker = Tracker(GEMINI)
    tracker.see(
        chunk({"promptTokenCount": 1000, "cachedContentTokenCount": 200, "candidatesTokenCount": 5}, text="Hel")
    )
    assert not tracker.seen.complete and tracker.seen.usage.output_tokens == 5
    tracker.see(
        chunk(
            {"promptTokenCount": 1000, "cachedContentTokenCount": 200, "candidatesTokenCount": 50,
             "thoughtsTokenCount": 10, "totalTokenCount": 1060},
            text="lo", finish="STOP",
        )
    )  # fmt: skip
    seen = tracker.seen
    assert seen.complete and (seen.response_id, seen.model) == ("resp-1", MODEL)
    usage = seen.usage
    assert (usage.input_tokens, usage.cache_read_tokens, usage.output_tokens) == (800, 200, 60)


def test_a_figure_a_later_chunk_leaves_out_keeps_its_earlier_value():
    tracker = Tracker(GEMINI)
    tracker.see(chunk({"promptTokenCount": 900, "candidatesTokenCount": 3}))
    tracker.see(chunk({"candidatesTokenCount": 7}, finish="MAX_TOKENS"))
    assert tracker.seen.complete and (tracker.seen.usage.input_tokens, tracker.seen.usage.output_tokens) == (900, 7)


def test_a_stream_that_ends_without_usage_is_not_complete_at_an_earlier_chunks_figures():
    """Gemini's last chunk carries the whole usage; an earlier one said only the prompt and a few candidates. A
    stream that ends without it was settled at those figures (its output under-counted); now its output is bounded."""
    tracker = Tracker(GEMINI)
    tracker.see(chunk({"promptTokenCount": 900, "candidatesTokenCount": 1}, text="x" * 4000))
    ended = chunk({}, finish="STOP")
    del ended["usageMetadata"]
    tracker.see(ended)
    assert not tracker.seen.complete and tracker.seen.usage.input_tokens == 900
    gate = Gate(Pricer(), cap_micro=CAP)
    admission = gate.admit(GEMINI, body(maxOutputTokens=2000), model=MODEL, stream=True)
    reply = gate.settle(admission, tracker.seen)
    assert reply.details["charged"] == "bound" and reply.input_tokens == 900 and reply.output_tokens == 2000


def test_a_whole_reply_an_array_stream_and_an_error_body():
    whole = from_body(GEMINI, chunk({"promptTokenCount": 10, "candidatesTokenCount": 2, "toolUsePromptTokenCount": 5}))
    assert whole.complete and (whole.usage.input_tokens, whole.usage.output_tokens) == (15, 2)
    array = from_body(
        GEMINI, [chunk({"promptTokenCount": 10}), chunk({"promptTokenCount": 10, "candidatesTokenCount": 4})]
    )
    assert array.complete and array.usage.output_tokens == 4
    error = from_body(GEMINI, {"error": {"code": 503, "message": "overloaded", "status": "UNAVAILABLE"}})
    assert not error.complete and error.usage is None


def test_a_usage_figure_that_is_no_number_is_not_believed():
    tracker = Tracker(GEMINI)
    tracker.see(chunk({"promptTokenCount": "lots", "candidatesTokenCount": 1}, finish="STOP"))
    assert tracker.seen.unreadable and not tracker.seen.complete and tracker.seen.usage is None


# ---- the Gate


def test_the_gate_writes_the_limit_it_holds_and_settles_at_googles_usage():
    events: list = []
    gate = Gate(Pricer(), cap_micro=CAP, on_event=events.append)
    admission = gate.admit(GEMINI, body(thinkingConfig={"thinkingBudget": 8192}), model=MODEL, stream=True)
    assert isinstance(admission, Admission) and admission.model == "google/" + MODEL
    assert admission.body["generationConfig"]["maxOutputTokens"] == admission.max_out == GEMINI_MAX_OUTPUT
    tracker = Tracker(GEMINI)
    tracker.see(chunk({"promptTokenCount": 1000, "cachedContentTokenCount": 200, "candidatesTokenCount": 50,
                       "thoughtsTokenCount": 10}, finish="STOP"))  # fmt: skip
    reply = gate.settle(admission, tracker.seen)
    assert reply is not None and reply.key == "proxy:gemini:resp-1" and reply.details["charged"] == "usage"
    # $0.30 x 800 + $0.03 x 200 + $2.50 x 60 per million
    assert gate.spent_micro == round(800 * 0.3 + 200 * 0.03 + 60 * 2.5) == Pricer().price(reply).cost_micro


def test_near_the_cap_the_limit_is_lowered_then_the_call_refused_at_cap():
    gate = Gate(Pricer(), cap_micro=20_000)  # $0.02: less than 65,536 output tokens at $2.50 a million
    admission = gate.admit(GEMINI, body(), model=MODEL)
    assert isinstance(admission, Admission) and admission.lowered
    assert 1_024 <= admission.body["generationConfig"]["maxOutputTokens"] == admission.max_out < GEMINI_MAX_OUTPUT
    gate.settle(admission, None)  # a whole reply that never answered: charged the bound, never zero
    assert gate.spent_micro >= admission.worst.cost(admission.max_out) > 0
    refused = gate.admit(GEMINI, body(), model=MODEL)
    assert isinstance(refused, Refused) and refused.at_cap and refused.cap == "usd"


def test_a_cut_thinking_stream_is_charged_its_whole_limit():
    gate = Gate(Pricer(), cap_micro=CAP)
    admission = gate.admit(GEMINI, body(maxOutputTokens=3000), model=MODEL, stream=True)
    assert isinstance(admission, Admission)
    tracker = Tracker(GEMINI)
    tracker.see(chunk({"promptTokenCount": 1000, "candidatesTokenCount": 5}, text="Hel"))
    reply = gate.settle(admission, tracker.seen)
    assert reply is not None and reply.details["charged"] == "bound"
    assert (reply.input_tokens, reply.output_tokens) == (1000, 3000)  # the prompt as billed; thoughts unseen


def test_a_refused_request_names_the_model_of_the_path():
    events: list = []
    gate = Gate(Pricer(), cap_micro=CAP, on_event=events.append)
    refused = gate.admit(GEMINI, {**body(), "tools": [{"googleSearch": {}}]}, model=MODEL)
    assert isinstance(refused, Refused) and not refused.at_cap and refused.model == MODEL and events == [refused]


def test_a_prompt_past_200k_tokens_is_priced_at_the_long_context_rates():
    """Gemini 2.5 Pro bills the whole prompt, the cached part and the output at higher rates past 200k prompt
    tokens ($2.50 / $0.25 / $15 per million instead of $1.25 / $0.125 / $10): the settle and the worst case both."""
    gate = Gate(Pricer(), cap_micro=None)
    admission = gate.admit(GEMINI, body("x" * 210_000, maxOutputTokens=1000), model="gemini-2.5-pro")
    assert isinstance(admission, Admission) and admission.input.tokens > 200_000
    assert admission.worst is not None and admission.worst.cost(1000) == round(admission.input.tokens * 2.5 + 15_000)
    tracker = Tracker(GEMINI)
    tracker.see(chunk({"promptTokenCount": 200_002, "cachedContentTokenCount": 150_000, "candidatesTokenCount": 600,
                       "thoughtsTokenCount": 400}, finish="STOP"))  # fmt: skip
    reply = gate.settle(admission, tracker.seen)
    assert reply is not None and gate.spent_micro == 50_002 * 2.5 + 150_000 * 0.25 + 1_000 * 15
