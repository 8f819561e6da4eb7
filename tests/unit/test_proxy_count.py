"""Strict mode's proxy, asking the provider to count a prompt: when (only where the bytes' bound would lower or
refuse a request whose prompt is not known), what the count body holds, and which answers tighten the bound (the
count plus its margin) or leave the bytes' bound (a failure, a count above the bytes, garbage). Pure: no sockets."""

from __future__ import annotations

import json

import pytest

from capguard.core.pricing import Pricer
from capguard.metering.proxy import bounds
from capguard.metering.proxy.dialects import ANTHROPIC, CHAT, GEMINI, RESPONSES, count_tail
from capguard.metering.proxy.gate import Admission, Count, Gate, Refused
from capguard.metering.proxy.usage import from_body

TEXT = "x" * 40_000  # ~40k tokens by bytes; a tokenizer of 4 bytes a token bills 10k


def messages_body(text: str = TEXT, max_tokens: int = 8_000, **extra) -> dict:
    return {
        "model": "claude-sonnet-4-5",
        "max_tokens": max_tokens,
        "stream": True,
        "metadata": {"user_id": "u"},
        "system": "You are terse.",
        "messages": [{"role": "user", "content": text}],
    } | extra


def responses_body(text: str = TEXT, **extra) -> dict:
    return {"model": "gpt-4o", "input": text, "instructions": "Be terse.", "stream": True} | extra


def gate(cap: int | None, **kw) -> Gate:
    return Gate(Pricer(), cap_micro=cap, **kw)


def byte_bound(dialect: str, body: dict) -> bounds.InputBound:
    return bounds.input_bound(dialect, body, bounds.Conversations())


# ---- what is asked, and of which endpoint


def test_the_count_body_holds_the_prompt_fields_only():
    body = messages_body(thinking={"type": "enabled", "budget_tokens": 2_000}, tools=[{"name": "t"}])
    found = bounds.count_request(ANTHROPIC, body, byte_bound(ANTHROPIC, body))
    assert found == {k: body[k] for k in ("model", "system", "messages", "thinking", "tools")}
    found = bounds.count_request(RESPONSES, responses_body(), byte_bound(RESPONSES, responses_body()))
    assert found == {"model": "gpt-4o", "input": TEXT, "instructions": "Be terse."}


def test_chat_is_counted_by_openais_responses_count_and_no_field_the_count_might_not_see_is():
    chat = {"model": "gpt-4o", "stream": True, "messages": [{"role": "user", "content": TEXT}]}
    found = bounds.count_request(CHAT, chat, byte_bound(CHAT, chat))
    assert found == {"model": "gpt-4o", "input": [{"role": "user", "content": TEXT}]}
    audio = chat | {"modalities": ["text", "audio"]}
    assert bounds.count_request(CHAT, audio, byte_bound(CHAT, audio)) is None
    odd = messages_body(container="c_1")  # unknown to the count: it might add tokens the count would miss
    assert bounds.count_request(ANTHROPIC, odd, byte_bound(ANTHROPIC, odd)) is None


def test_a_known_conversation_with_a_short_tail_is_not_counted():
    known = bounds.Conversations()
    first = messages_body()
    known.remember(bounds.input_bound(ANTHROPIC, first, known).key, 10_000, None, 0)
    follow = first | {"messages": [*first["messages"], {"role": "assistant", "content": "ok"}]}
    tight = bounds.input_bound(ANTHROPIC, follow, known)
    assert tight.tight and tight.from_bytes < bounds.COUNT_WORTH_TOKENS
    assert bounds.count_request(ANTHROPIC, follow, tight) is None
    long_tail = first | {"messages": [*first["messages"], {"role": "assistant", "content": TEXT}]}
    assert bounds.count_request(ANTHROPIC, long_tail, bounds.input_bound(ANTHROPIC, long_tail, known)) is not None


@pytest.mark.parametrize(
    "dialect, tail, found",
    [
        (ANTHROPIC, "v1/messages", "v1/messages/count_tokens"),
        (ANTHROPIC, "anthropic/v1/messages/", "anthropic/v1/messages/count_tokens"),
        (RESPONSES, "v1/responses", "v1/responses/input_tokens"),
        (CHAT, "v1/chat/completions", "v1/responses/input_tokens"),
        (CHAT, "chat/completions", "responses/input_tokens"),
        (CHAT, "v1/completions", None),
        (ANTHROPIC, "v1/other", None),
        (GEMINI, "v1beta/models/gemini-2.5-pro:streamGenerateContent", "v1beta/models/gemini-2.5-pro:countTokens"),
        (GEMINI, "v1beta/models/gemini-2.5-flash:generateContent", "v1beta/models/gemini-2.5-flash:countTokens"),
        (GEMINI, "v1beta/models/gemini-2.5-flash:countTokens", None),
        (GEMINI, "v1beta/models/gemini-2.5-flash:embedContent", None),
    ],
)
def test_the_count_endpoint_sits_next_to_the_metered_path(dialect, tail, found):
    assert count_tail(dialect, tail) == found


# ---- the answer


def test_a_count_with_its_margin_replaces_the_bytes_bound():
    bound = byte_bound(ANTHROPIC, messages_body())
    tight = bounds.counted_bound(bound, {"input_tokens": 10_000})
    assert tight.counted and tight.key == bound.key
    assert tight.tokens == 10_000 * (100 + bounds.COUNT_MARGIN_PERCENT) // 100 + bounds.COUNT_MARGIN_TOKENS
    assert tight.tokens < bound.tokens / 3


@pytest.mark.parametrize(
    "answer",
    [
        None,  # the count failed or timed out
        "10000",
        {"input_tokens": "10000"},
        {"input_tokens": 10_000.0},
        {"input_tokens": True},
        {"input_tokens": -5},
        {"input_tokens": None},
        {"tokens": 10_000},
        {"input_tokens": 10**9},  # more than the bytes allow: no count of this prompt
        {"input_tokens": 0},  # fewer than a token per 64 bytes: a stub
    ],
)
def test_an_answer_that_is_no_count_of_the_prompt_leaves_the_bytes_bound(answer):
    bound = byte_bound(ANTHROPIC, messages_body())
    assert bounds.counted_bound(bound, answer) is bound


def test_a_count_never_makes_the_bound_looser():
    bound = byte_bound(ANTHROPIC, messages_body(text="hi"))
    near = bound.tokens - bounds.COUNT_MARGIN_TOKENS  # with its margin, above the bytes
    assert bounds.counted_bound(bound, {"input_tokens": near}) is bound


# ---- the gate asks only when it matters


def test_a_request_the_bytes_bound_does_not_constrain_is_admitted_without_a_count():
    g = gate(cap=5_000_000)
    admission = g.admit(ANTHROPIC, messages_body(), may_count=True)
    assert isinstance(admission, Admission) and not admission.lowered and not admission.input.counted


def test_a_request_the_bytes_bound_would_lower_is_counted_first_and_holds_nothing_meanwhile():
    events: list = []
    g = gate(cap=200_000, on_event=events.append)  # $0.20: 8k out ($0.12) and 40k prompt tokens ($0.12+) do not fit
    first = g.admit(ANTHROPIC, messages_body(), may_count=True)
    assert isinstance(first, Count) and g.held_micro == 0 and events == []
    assert first.body == {k: first.request[k] for k in ("model", "system", "messages")}
    by_count = g.admit_counted(first, {"input_tokens": 10_000})
    assert isinstance(by_count, Admission) and by_count.input.counted and not by_count.lowered
    assert by_count.body is first.request  # sent as the agent wrote it
    # the same request by its bytes: lowered
    by_bytes = gate(cap=200_000).admit(ANTHROPIC, messages_body())
    assert isinstance(by_bytes, Admission) and by_bytes.lowered and by_bytes.max_out < by_count.max_out


def test_a_request_the_bytes_bound_would_refuse_goes_by_its_count():
    g = gate(cap=60_000)  # $0.06: 40k prompt tokens at the dearest rate cost more; 10k do not
    assert isinstance(gate(cap=60_000).admit(ANTHROPIC, messages_body()), Refused)
    first = g.admit(ANTHROPIC, messages_body(), may_count=True)
    assert isinstance(first, Count)
    found = g.admit_counted(first, {"input_tokens": 10_000})
    assert isinstance(found, Admission) and found.hold.micro <= 60_000


@pytest.mark.parametrize("answer", [None, {"input_tokens": 10**9}, {"input_tokens": "lots"}])
def test_a_failed_or_hostile_count_admits_by_the_bytes_as_without_one(answer):
    g = gate(cap=200_000)
    first = g.admit(ANTHROPIC, messages_body(), may_count=True)
    found = g.admit_counted(first, answer)
    plain = gate(cap=200_000).admit(ANTHROPIC, messages_body())
    assert isinstance(found, Admission) and not found.input.counted
    assert (found.max_out, found.hold.micro, found.input.tokens) == (
        plain.max_out,
        plain.hold.micro,
        plain.input.tokens,
    )


def test_a_refusal_by_the_count_says_the_bound_was_counted():
    g = gate(cap=20_000)
    found = g.admit_counted(g.admit(ANTHROPIC, messages_body(), may_count=True), {"input_tokens": 10_000})
    assert isinstance(found, Refused) and found.at_cap and found.counted
    assert (
        found.prompt_tokens
        == bounds.counted_bound(byte_bound(ANTHROPIC, messages_body()), {"input_tokens": 10_000}).tokens
    )
    assert (
        found.worst_micro is not None and found.headroom_micro is not None and found.worst_micro > found.headroom_micro
    )


def gemini_body(text: str = TEXT, **extra) -> dict:
    return {
        "contents": [{"role": "user", "parts": [{"text": text}]}],
        "systemInstruction": {"parts": [{"text": "Be terse."}]},
        "tools": [{"functionDeclarations": [{"name": "run_shell_command"}]}],
        "generationConfig": {"temperature": 0, "thinkingConfig": {"thinkingBudget": 1_000}},
    } | extra


def test_gemini_counts_the_whole_request_and_answers_in_total_tokens():
    body = gemini_body()
    bound = byte_bound(GEMINI, body)
    found = bounds.count_request(GEMINI, body, bound, "gemini-2.5-flash")
    assert found == {"generateContentRequest": {"model": "models/gemini-2.5-flash", **body}}
    odd = gemini_body(cachedContent="cachedContents/x")  # not counted the way it bills: the bytes' bound
    assert bounds.count_request(GEMINI, odd, byte_bound(GEMINI, odd), "gemini-2.5-flash") is None
    tight = bounds.counted_bound(bound, {"totalTokens": 10_000})
    assert tight.counted and tight.tokens < bound.tokens / 3
    assert bounds.counted_bound(bound, {"totalTokens": "10000"}) is bound


def test_a_gemini_request_the_bytes_bound_would_lower_is_counted_first():
    g = gate(cap=100_000)
    first = g.admit(GEMINI, gemini_body(), model="gemini-2.5-flash", stream=True, may_count=True)
    assert isinstance(first, Count) and "generateContentRequest" in first.body
    counted = g.admit_counted(first, {"totalTokens": 10_000})
    assert isinstance(counted, Admission) and counted.input.counted


def test_responses_and_chat_are_counted_where_the_server_can_ask():
    g = gate(cap=100_000)
    assert isinstance(g.admit(RESPONSES, responses_body(), may_count=True), Count)
    chat = {"model": "gpt-4o", "messages": [{"role": "user", "content": TEXT}]}
    first = g.admit(CHAT, chat, may_count=True)
    assert isinstance(first, Count) and first.body["input"] == chat["messages"]
    counted = g.admit_counted(first, {"object": "response.input_tokens", "input_tokens": 10_000})
    assert isinstance(counted, Admission) and counted.input.counted
    assert counted.input.tokens == 10_000 * 105 // 100 + bounds.COUNT_MARGIN_TOKENS
    assert not isinstance(g.admit(RESPONSES, responses_body()), Count)  # the server cannot ask: never
    assert not isinstance(g.admit(CHAT, chat), Count)


def test_a_token_cap_the_bytes_bound_would_bind_is_counted_too():
    g = gate(cap=None, token_cap=45_000)
    assert isinstance(g.admit(ANTHROPIC, messages_body(), may_count=True), Count)


def test_a_bill_above_the_counted_bound_stops_the_counts_for_the_run():
    g = gate(cap=200_000)
    admission = g.admit_counted(g.admit(ANTHROPIC, messages_body(), may_count=True), {"input_tokens": 10_000})
    assert isinstance(admission, Admission) and g.counts_trusted
    over = admission.input.tokens + 1  # the provider billed more than it counted, margin included
    g.settle(admission, from_body(ANTHROPIC, {"id": "m", "usage": {"input_tokens": over, "output_tokens": 1}}))
    assert not g.counts_trusted
    assert isinstance(g.admit(ANTHROPIC, messages_body(text=TEXT + "y"), may_count=True), (Admission, Refused))


def test_a_bill_within_the_count_keeps_the_counts():
    g = gate(cap=200_000)
    admission = g.admit_counted(g.admit(ANTHROPIC, messages_body(), may_count=True), {"input_tokens": 10_000})
    g.settle(admission, from_body(ANTHROPIC, {"id": "m", "usage": {"input_tokens": 10_000, "output_tokens": 1}}))
    assert g.counts_trusted
    assert json.dumps(g.conversations.prompt(admission.input.key)) == "10000"  # the bill, remembered as before


def test_a_bill_above_a_bound_from_an_earlier_bill_stops_bounding_by_bills():
    """A server that billed a prompt far too little, then the next prompt honestly: the next one passed the bound
    its start's bill gave it. From then on no bill bounds a prompt (each is held at its bytes), never too low."""
    g = gate(cap=10_000_000)
    first = g.admit(ANTHROPIC, messages_body())
    assert isinstance(first, Admission)
    g.settle(first, from_body(ANTHROPIC, {"id": "a", "usage": {"input_tokens": 1, "output_tokens": 1}}))
    turn = [{"role": "assistant", "content": "ok"}, {"role": "user", "content": "next"}]
    follow = messages_body() | {"messages": [*messages_body()["messages"], *turn]}
    second = g.admit(ANTHROPIC, follow)
    assert isinstance(second, Admission) and second.input.tight and second.input.tokens < 200
    honest = {"id": "b", "usage": {"input_tokens": len(TEXT) // 4, "output_tokens": 1}}
    g.settle(second, from_body(ANTHROPIC, honest))
    assert not g.conversations.trusted
    again = follow | {"messages": [*follow["messages"], *turn]}
    third = g.admit(ANTHROPIC, again)
    assert isinstance(third, Admission) and not third.input.tight and third.input.tokens > len(TEXT)


def test_a_bill_within_a_bound_from_an_earlier_bill_keeps_the_bills():
    g = gate(cap=10_000_000)
    first = g.admit(ANTHROPIC, messages_body())
    g.settle(first, from_body(ANTHROPIC, {"id": "a", "usage": {"input_tokens": 5_000, "output_tokens": 1}}))
    follow = messages_body() | {"messages": [*messages_body()["messages"], {"role": "assistant", "content": "ok"}]}
    second = g.admit(ANTHROPIC, follow)
    assert isinstance(second, Admission) and second.input.tight
    g.settle(second, from_body(ANTHROPIC, {"id": "b", "usage": {"input_tokens": 5_010, "output_tokens": 1}}))
    assert g.conversations.trusted and g.conversations.prompt(second.input.key) == 5_010
