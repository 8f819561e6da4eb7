"""A Chat Completions request as OpenAI's free prompt count takes it: Chat Completions has no counting endpoint of
its own, and the Responses API's (`POST /v1/responses/input_tokens`) counts the same prompt in its own shapes
(messages, function calls and their outputs, function tools). Pure: a parsed body in, a body to count or None.

None whenever the request holds anything this does not carry over exactly (a message's `name`, audio, files, a
response format, legacy `functions`, a key it does not know): the bytes' bound then stays, never a count of less
than the request would bill.
"""

from __future__ import annotations

from typing import Any

# A Chat request's keys that change no token of its prompt (its settings and output limits)
_SETTINGS = frozenset(
    {
        "max_tokens", "max_completion_tokens", "stream", "stream_options", "temperature", "top_p", "n", "stop",
        "seed", "user", "store", "metadata", "frequency_penalty", "presence_penalty", "logit_bias", "logprobs",
        "top_logprobs", "parallel_tool_calls", "reasoning_effort", "service_tier", "prompt_cache_key",
        "safety_identifier", "verbosity",
    }
)  # fmt: skip
_INPUT_ROLES = frozenset({"system", "developer", "user"})


def responses_count_body(body: dict[str, Any]) -> dict[str, Any] | None:
    """`{"model", "input", ["tools"], ["tool_choice"]}` for OpenAI's input_tokens endpoint, or None."""
    model, messages = body.get("model"), body.get("messages")
    if not isinstance(model, str) or not model or not isinstance(messages, list) or not messages:
        return None
    if any(key not in _SETTINGS and key not in ("model", "messages", "tools", "tool_choice") for key in body):
        return None
    items: list[dict[str, Any]] = []
    for message in messages:
        converted = _items(message)
        if converted is None:
            return None
        items.extend(converted)
    out: dict[str, Any] = {"model": model, "input": items}
    if body.get("tools") is not None:
        tools = _tools(body["tools"])
        if tools is None:
            return None
        out["tools"] = tools
    if body.get("tool_choice") is not None:
        choice = _tool_choice(body["tool_choice"])
        if choice is None:
            return None
        out["tool_choice"] = choice
    return out


def _items(message: Any) -> list[dict[str, Any]] | None:
    if not isinstance(message, dict):
        return None
    role = message.get("role")
    if role in _INPUT_ROLES:
        if message.keys() - {"role", "content"}:
            return None
        content = _content(message.get("content"), "input_text", images=role == "user")
        return None if content is None else [{"role": role, "content": content}]
    if role == "assistant":
        if message.keys() - {"role", "content", "tool_calls", "refusal"} or message.get("refusal"):
            return None
        out: list[dict[str, Any]] = []
        if message.get("content") not in (None, "", []):
            content = _content(message["content"], "output_text", images=False)
            if content is None:
                return None
            out.append({"role": "assistant", "content": content})
        for call in message.get("tool_calls") or ():
            function = call.get("function") if isinstance(call, dict) else None
            if (
                not isinstance(function, dict)
                or call.get("type", "function") != "function"
                or not isinstance(call.get("id"), str)
                or not isinstance(function.get("name"), str)
                or not isinstance(function.get("arguments"), str)
            ):
                return None
            out.append(
                {"type": "function_call", "call_id": call["id"], "name": function["name"],
                 "arguments": function["arguments"]}
            )  # fmt: skip
        return out or None
    if role == "tool":
        if message.keys() - {"role", "content", "tool_call_id"} or not isinstance(message.get("tool_call_id"), str):
            return None
        output = _text(message.get("content"))
        if output is None:
            return None
        return [{"type": "function_call_output", "call_id": message["tool_call_id"], "output": output}]
    return None


def _content(content: Any, text_type: str, *, images: bool) -> str | list[dict[str, Any]] | None:
    if isinstance(content, str):
        return content
    if not isinstance(content, list) or not content:
        return None
    parts: list[dict[str, Any]] = []
    for part in content:
        if not isinstance(part, dict):
            return None
        kind = part.get("type")
        if kind == "text" and isinstance(part.get("text"), str) and part.keys() <= {"type", "text"}:
            parts.append({"type": text_type, "text": part["text"]})
        elif kind == "image_url" and images and part.keys() <= {"type", "image_url"}:
            image = part.get("image_url")
            url = image.get("url") if isinstance(image, dict) else image
            detail = image.get("detail", "auto") if isinstance(image, dict) else "auto"
            if not isinstance(url, str) or detail not in ("auto", "low", "high"):
                return None
            parts.append({"type": "input_image", "image_url": url, "detail": detail})
        else:
            return None
    return parts


def _text(content: Any) -> str | None:
    """A tool message's content as one string: a string, or a single text part (how several would be joined in
    the prompt is not documented)."""
    if isinstance(content, str):
        return content
    if isinstance(content, list) and len(content) == 1 and isinstance(content[0], dict):
        part = content[0]
        if part.get("type") == "text" and isinstance(part.get("text"), str) and part.keys() <= {"type", "text"}:
            return str(part["text"])
    return None


def _tools(tools: Any) -> list[dict[str, Any]] | None:
    if not isinstance(tools, list):
        return None
    out = []
    for tool in tools:
        if not isinstance(tool, dict) or tool.get("type") != "function" or tool.keys() - {"type", "function"}:
            return None
        function = tool.get("function")
        if not isinstance(function, dict) or function.keys() - {"name", "description", "parameters", "strict"}:
            return None
        if not isinstance(function.get("name"), str):
            return None
        out.append({"type": "function", "parameters": None, **function})  # Responses' tool names its parameters
    return out


def _tool_choice(choice: Any) -> Any:
    if choice in ("auto", "none", "required"):
        return choice
    if isinstance(choice, dict) and choice.get("type") == "function":
        name = (choice.get("function") or {}).get("name") if isinstance(choice.get("function"), dict) else None
        return {"type": "function", "name": name} if isinstance(name, str) else None
    return None
