"""How the fake Gemini API bills a request: tokens from the request's own text, cached input from a shared prefix
with an earlier request, output capped by the request's maxOutputTokens. Pure functions, no I/O.

The rule (one token per 4 UTF-8 bytes, rounded up) stands in for Gemini's tokenizer; what matters to capguard is
that usage follows the request, so a longer conversation costs more, as it does on the real API.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

BYTES_PER_TOKEN = 4
#: The real API caches implicitly only past a minimum prompt size (1,024 tokens on the Flash models).
DEFAULT_CACHE_MIN_TOKENS = 1024


def tokens(text: str) -> int:
    """Tokens for `text`: one per 4 UTF-8 bytes, rounded up (0 for the empty string)."""
    return -(-len(text.encode()) // BYTES_PER_TOKEN)


def compact(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def _part_text(part: Any) -> str:
    """The text a part contributes to the prompt: its text, or its function call/response as compact JSON."""
    if not isinstance(part, dict):
        return ""
    if isinstance(part.get("text"), str):
        return part["text"]
    for key in ("functionCall", "functionResponse", "executableCode", "codeExecutionResult"):
        if key in part:
            return compact(part[key])
    return ""  # inline media and file references are not billed by this fake


def _parts(content: Any) -> list:
    if isinstance(content, str):
        return [{"text": content}]
    if isinstance(content, dict):
        parts = content.get("parts")
        return parts if isinstance(parts, list) else []
    return []


def prompt_text(body: dict) -> str:
    """The request's billable text, in prompt order: system instruction, tool declarations, then each turn.

    The order matters for caching: what the CLI keeps stable (system prompt, tools, earlier turns) comes first,
    so two requests of one conversation share a long prefix, as their real prompts do.
    """
    pieces: list[str] = []
    pieces.extend(_part_text(p) for p in _parts(body.get("systemInstruction")))
    tools = body.get("tools")
    if tools:
        pieces.append(compact(tools))
    contents = body.get("contents")
    for content in contents if isinstance(contents, list) else []:
        role = content.get("role", "user") if isinstance(content, dict) else "user"
        pieces.append(f"<{role}>")
        pieces.extend(_part_text(p) for p in _parts(content))
    return "\n".join(pieces)


def common_prefix_len(a: bytes, b: bytes) -> int:
    """Length of the longest common prefix of two byte strings."""
    n = min(len(a), len(b))
    lo, hi = 0, n  # binary search on slice equality: fast in C, fine for megabyte prompts
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if a[:mid] == b[:mid]:
            lo = mid
        else:
            hi = mid - 1
    return lo


def cached_tokens(prompt: bytes, earlier: list[bytes], min_tokens: int = DEFAULT_CACHE_MIN_TOKENS) -> int:
    """Input tokens served from cache: the longest prefix `prompt` shares with an earlier prompt, in whole tokens,
    and 0 below the API's minimum cacheable size."""
    best = max((common_prefix_len(prompt, e) for e in earlier), default=0)
    cached = best // BYTES_PER_TOKEN
    return cached if cached >= min_tokens else 0


def max_output_tokens(body: dict) -> int | None:
    """The request's generationConfig.maxOutputTokens, or None when it sets none."""
    config = body.get("generationConfig")
    value = config.get("maxOutputTokens") if isinstance(config, dict) else None
    return value if isinstance(value, int) and value >= 0 else None


def truncate_to_tokens(text: str, limit: int) -> str:
    """The longest prefix of `text` that costs at most `limit` tokens (cut on a character boundary)."""
    data = text.encode()[: limit * BYTES_PER_TOKEN]
    return data.decode(errors="ignore")


@dataclass(frozen=True)
class Usage:
    """One reply's usage, named as the API's usageMetadata names it."""

    prompt: int
    cached: int = 0
    candidates: int = 0
    thoughts: int = 0
    tool_use_prompt: int = 0  # server-side tools (search, code execution); the fake runs none

    @property
    def total(self) -> int:
        return self.prompt + self.candidates + self.thoughts + self.tool_use_prompt

    def metadata(self, *, final: bool = True) -> dict:
        """usageMetadata as the API sends it. A non-final stream chunk carries the prompt side and the output
        so far; thoughts and tool-use counts come with the last chunk."""
        meta: dict[str, Any] = {"promptTokenCount": self.prompt}
        if self.candidates or final:
            meta["candidatesTokenCount"] = self.candidates
        if self.cached:
            meta["cachedContentTokenCount"] = self.cached
        if final and self.thoughts:
            meta["thoughtsTokenCount"] = self.thoughts
        if final and self.tool_use_prompt:
            meta["toolUsePromptTokenCount"] = self.tool_use_prompt
        meta["totalTokenCount"] = self.prompt + self.candidates + (self.thoughts + self.tool_use_prompt if final else 0)
        meta["promptTokensDetails"] = [{"modality": "TEXT", "tokenCount": self.prompt}]
        if self.cached:
            meta["cacheTokensDetails"] = [{"modality": "TEXT", "tokenCount": self.cached}]
        return meta

    def as_dict(self) -> dict:
        """The billed figures under the names of the CLI's session-file `tokens` object."""
        return {
            "input": self.prompt,
            "output": self.candidates,
            "cached": self.cached,
            "thoughts": self.thoughts,
            "tool": self.tool_use_prompt,
            "total": self.total,
        }
