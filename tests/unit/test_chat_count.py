"""A Chat Completions request as OpenAI's Responses count takes it: exactly the same prompt, or no count at all."""

from __future__ import annotations

import pytest

from capguard.metering.proxy.chat_count import responses_count_body
from tests.fakes.fake_chat import chat_body_of_count, prompt_text

TOOLS = [
    {
        "type": "function",
        "function": {"name": "bash", "description": "Run a command", "parameters": {"type": "object"}},
    }
]


def aider_like() -> dict:
    """What litellm sends for aider: system prompt, the repo map and files as user/assistant pairs, the question."""
    return {
        "model": "gpt-4o",
        "stream": True,
        "stream_options": {"include_usage": True},
        "temperature": 0,
        "messages": [
            {"role": "system", "content": "Act as an expert software developer."},
            {"role": "user", "content": "Here are summaries of some files present in my git repository: ..."},
            {"role": "assistant", "content": "Ok, I won't try and edit those files without asking first."},
            {"role": "user", "content": [{"type": "text", "text": "fix the bug"}]},
        ],
    }


def test_an_aider_request_becomes_its_messages_as_input_items():
    found = responses_count_body(aider_like())
    assert found == {
        "model": "gpt-4o",
        "input": [
            {"role": "system", "content": "Act as an expert software developer."},
            {"role": "user", "content": "Here are summaries of some files present in my git repository: ..."},
            {"role": "assistant", "content": "Ok, I won't try and edit those files without asking first."},
            {"role": "user", "content": [{"type": "input_text", "text": "fix the bug"}]},
        ],
    }


def test_tool_calls_their_results_tools_and_images_carry_over():
    body = {
        "model": "gpt-4.1",
        "tools": TOOLS,
        "tool_choice": {"type": "function", "function": {"name": "bash"}},
        "messages": [
            {"role": "user", "content": [
                {"type": "text", "text": "what is this?"},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA", "detail": "low"}},
            ]},
            {"role": "assistant", "content": [{"type": "text", "text": "Let me look."}], "tool_calls": [
                {"id": "call_1", "type": "function", "function": {"name": "bash", "arguments": "{\"cmd\":\"ls\"}"}},
            ]},
            {"role": "tool", "tool_call_id": "call_1", "content": "a.py\nb.py"},
        ],
    }  # fmt: skip
    found = responses_count_body(body)
    assert found is not None
    assert found["input"] == [
        {"role": "user", "content": [
            {"type": "input_text", "text": "what is this?"},
            {"type": "input_image", "image_url": "data:image/png;base64,AAAA", "detail": "low"},
        ]},
        {"role": "assistant", "content": [{"type": "output_text", "text": "Let me look."}]},
        {"type": "function_call", "call_id": "call_1", "name": "bash", "arguments": "{\"cmd\":\"ls\"}"},
        {"type": "function_call_output", "call_id": "call_1", "output": "a.py\nb.py"},
    ]  # fmt: skip
    assert found["tools"] == [
        {"type": "function", "name": "bash", "description": "Run a command", "parameters": {"type": "object"}}
    ]
    assert found["tool_choice"] == {"type": "function", "name": "bash"}
    # the fake's count of it is the prompt the fake bills for the Chat request itself
    assert prompt_text(chat_body_of_count(found)) == prompt_text(body)


@pytest.mark.parametrize(
    "change",
    [
        {"response_format": {"type": "json_object"}},  # adds to the prompt in a way the count may not see
        {"functions": [{"name": "f"}]},  # the legacy function list
        {"audio": {"voice": "alloy"}},
        {"messages": [{"role": "user", "name": "ann", "content": "hi"}]},  # a name adds tokens in Chat's template
        {"messages": [{"role": "user", "content": [{"type": "input_audio", "input_audio": {}}]}]},
        {"messages": [{"role": "user", "content": [{"type": "file", "file": {"file_id": "f"}}]}]},
        {"messages": [{"role": "system", "content": [{"type": "image_url", "image_url": {"url": "u"}}]}]},
        {"messages": [{"role": "assistant", "content": None, "refusal": "no"}]},
        {"messages": [{"role": "tool", "content": "x"}]},  # no call it answers
        {"messages": [{"role": "tool", "tool_call_id": "c", "content": [{"type": "text", "text": "a"}] * 2}]},
        {"messages": [{"role": "function", "name": "f", "content": "x"}]},
        {"messages": []},
        {"messages": ["hi"]},
        {"model": None},
        {"tools": [{"type": "custom", "custom": {"name": "x"}}]},
        {"tools": ["bash"]},
        {"tool_choice": {"type": "allowed_tools"}},
    ],
)
def test_anything_that_does_not_carry_over_exactly_gets_no_count(change):
    assert responses_count_body(aider_like() | change) is None


def test_settings_that_change_no_prompt_token_are_left_out():
    body = aider_like() | {"max_completion_tokens": 100, "n": 2, "seed": 1, "reasoning_effort": "low"}
    found = responses_count_body(body)
    assert found is not None and set(found) == {"model", "input"}
