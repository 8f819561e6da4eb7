"""Google's Code Assist server (Gemini CLI's Login with Google) as the proxy reads it: which paths are model calls,
which pass free, what is refused; its replies unwrapped; a spent cap said as its own quota error."""

from __future__ import annotations

import json

import pytest

from capguard.metering.proxy.dialects import CODE_ASSIST, GEMINI, error_body, route
from capguard.metering.proxy.usage import code_assist_reply, from_body


@pytest.mark.parametrize(
    ("method", "tail", "dialect", "stream", "free"),
    [
        ("POST", "v1internal:streamGenerateContent", GEMINI, True, False),
        ("POST", "v1internal:generateContent", GEMINI, False, False),
        ("POST", "v1internal:loadCodeAssist", None, False, True),
        ("POST", "v1internal:countTokens", None, False, True),
        ("POST", "v1internal:retrieveUserQuota", None, False, True),
        ("GET", "v1internal/operations/onboard-123", None, False, True),
    ],
)
def test_model_calls_are_metered_and_the_accounts_calls_pass(method, tail, dialect, stream, free):
    found = route(method, tail, CODE_ASSIST)
    assert (found.dialect, found.stream, found.free, found.why) == (dialect, stream, free, None)


@pytest.mark.parametrize(
    ("method", "tail"),
    [("POST", "v1internal:completeCode"), ("POST", "v1internal:embedContent"), ("GET", "v1internal:loadCodeAssist"),
     ("POST", "v1beta/models/gemini-2.5-pro:generateContent"), ("DELETE", "v1internal/operations/x")],
)  # fmt: skip
def test_anything_else_is_refused_unmetered(method, tail):
    assert "could cost money unmetered" in (route(method, tail, CODE_ASSIST).why or "")


def test_a_wrapped_reply_is_read_inside_with_its_trace_id_as_its_id():
    usage = {"promptTokenCount": 100, "candidatesTokenCount": 20, "totalTokenCount": 120}
    wrapped = {"response": {"candidates": [], "usageMetadata": usage, "modelVersion": "gemini-3-flash"},
               "traceId": "trace-1"}  # fmt: skip
    inner = code_assist_reply(wrapped)
    assert inner["responseId"] == "trace-1" and inner["usageMetadata"] == usage
    seen = from_body(GEMINI, inner)
    assert seen.response_id == "trace-1" and seen.complete
    assert code_assist_reply({"response": {"responseId": "own"}, "traceId": "t"})["responseId"] == "own"
    assert code_assist_reply({"candidates": []}) is None and code_assist_reply(None) is None


def test_a_spent_cap_is_code_assists_quota_error_so_gemini_cli_stops_at_once():
    body = json.loads(error_body(CODE_ASSIST, "capguard: spending cap reached", status=429))
    assert body["error"]["status"] == "RESOURCE_EXHAUSTED"
    (detail,) = body["error"]["details"]
    assert (detail["reason"], detail["domain"]) == ("QUOTA_EXHAUSTED", "cloudcode-pa.googleapis.com")
    assert "details" not in json.loads(error_body(CODE_ASSIST, "bad request", status=400))["error"]
