"""How the fake Responses API server bills a request: tokens from the request's text, prompt-prefix caching
like OpenAI's, output tokens from the reply it sends; stdlib only and deterministic so tests can recompute it.

The rule (one token per 4 bytes, rounded up):

* **input_tokens** = tokens(prompt text), where the prompt text is every string value under the request's
  ``tools``, ``instructions`` and ``input``, in that order, as the real API lays out a prompt (the values of
  identifier keys such as ``id``, ``call_id``, ``type``, ``role``, ``status`` are left out, and so is a reasoning
  item's ``encrypted_content``; a ``compaction`` item's is the summary it stands for: counted), joined by newlines.
* **cached_tokens** (``input_tokens_details``) follow OpenAI's prompt caching: the longest byte prefix this
  prompt shares with an earlier prompt under the same ``prompt_cache_key``, in tokens, rounded down to a multiple
  of 128, and only for prompts of at least 1024 tokens. It is part of input_tokens, never on top.
* **output_tokens** = tokens(reply text) for a message, tokens(name + arguments) for a function call, plus the
  reply's reasoning tokens, which are reported in ``output_tokens_details.reasoning_tokens`` (part of output).
* total_tokens = input_tokens + output_tokens.
"""

from __future__ import annotations

import json
import os
import threading
from collections import deque
from typing import Any

BYTES_PER_TOKEN = 4
CACHE_MIN_TOKENS = 1024  # OpenAI caches prompts of 1024 tokens or more ...
CACHE_STEP_TOKENS = 128  # ... in 128-token increments
_CACHE_KEEP = 16  # prompts remembered per cache key (bounds memory on a runaway)

# Keys whose string values are identifiers or enums, not text a model would read.
_ID_KEYS = frozenset({"id", "call_id", "type", "role", "status", "item_id", "response_id", "encrypted_content"})


def tokens(text: str) -> int:
    """One token per 4 bytes of UTF-8, rounded up (0 for empty text)."""
    return -(-len(text.encode("utf-8")) // BYTES_PER_TOKEN)


def _strings(value: Any, out: list[str]) -> None:
    if isinstance(value, str):
        out.append(value)
    elif isinstance(value, list):
        for item in value:
            _strings(item, out)
    elif isinstance(value, dict):
        compaction = value.get("type") == "compaction"  # its encrypted_content is the context it replaces
        for key, item in value.items():
            if key not in _ID_KEYS or (compaction and key == "encrypted_content"):
                _strings(item, out)


def prompt_text(body: dict) -> str:
    """The text a request's input tokens are counted from: tool definitions, instructions, input items."""
    parts: list[str] = []
    for key in ("tools", "instructions", "input"):  # tools first: a growing conversation keeps its prefix
        _strings(body.get(key), parts)
    return "\n".join(parts)


def max_output_tokens(body: dict) -> int | None:
    """The request's ``max_output_tokens`` if it is a positive integer, else None (no limit)."""
    value = body.get("max_output_tokens")
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else None


def usage_block(input_tokens: int, cached_tokens: int, output_tokens: int, reasoning_tokens: int) -> dict:
    """The ``usage`` object of a Responses API ``response`` (as in ``response.completed``)."""
    return {
        "input_tokens": input_tokens,
        "input_tokens_details": {"cached_tokens": cached_tokens},
        "output_tokens": output_tokens,
        "output_tokens_details": {"reasoning_tokens": reasoning_tokens},
        "total_tokens": input_tokens + output_tokens,
    }


class PromptCache:
    """Remembers recent prompts per cache key and says how many leading tokens of a new prompt are cached."""

    def __init__(self, enabled: bool = True) -> None:
        self.enabled = enabled
        self._lock = threading.Lock()
        self._seen: dict[Any, deque[bytes]] = {}

    def lookup_and_store(self, key: Any, text: str) -> int:
        """Cached tokens for `text` under `key` (see the module rule); then remember `text`."""
        data = text.encode("utf-8")
        with self._lock:
            earlier = self._seen.setdefault(key, deque(maxlen=_CACHE_KEEP))
            best = max((len(os.path.commonprefix([data, old])) for old in earlier), default=0)
            earlier.append(data)
        if not self.enabled or tokens(text) < CACHE_MIN_TOKENS:
            return 0
        return (best // BYTES_PER_TOKEN) // CACHE_STEP_TOKENS * CACHE_STEP_TOKENS

    def clear(self) -> None:
        with self._lock:
            self._seen.clear()


def cache_key(body: dict) -> str:
    """The key prompts are cached under: ``prompt_cache_key`` if sent, else the model (one shared cache)."""
    key = body.get("prompt_cache_key")
    return f"key:{key}" if isinstance(key, str) and key else f"model:{body.get('model')}"


def arguments_text(arguments: Any) -> str:
    """A function call's arguments as the JSON string the API sends."""
    return arguments if isinstance(arguments, str) else json.dumps(arguments)
