"""Claude's own task budget (an advisory token countdown the model sees): which models take it, what to send.

Pure: request keyword arguments in, request keyword arguments out; no SDK, no I/O.

Rule for models (Anthropic's list of supported models, generalised so newer models need no release):
Opus 4.7 and later, Sonnet and Haiku 5.5 and later, every Fable and Mythos model, and any Claude model of
generation 6 or later. Names are matched as `claude-<family>-<major>[-<minor>]`, with any provider prefix
(`anthropic/`, `anthropic.`) or date suffix; anything else (Claude 3.x names, Sonnet 5, Opus 4.6) is left alone.

`remaining` follows Anthropic's documentation: the server counts down by itself within one context, so a request
carries only `total` until the caller compacts its context client-side; from then on every request carries the
same `remaining` (the budget left when the context was compacted), which keeps the prompt cache valid.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

BETA = "task-budgets-2026-03-13"
MIN_TOTAL = 20_000

_NAME = re.compile(r"claude-([a-z]+)-(\d+)(?:[-.](\d{1,2}))?(?![0-9])")
_FROM = {"opus": (4, 7), "sonnet": (5, 5), "haiku": (5, 5), "fable": (5, 0), "mythos": (5, 0)}
_EVERY_FAMILY_FROM = (6, 0)


def supports_task_budget(model: str | None) -> bool:
    """Whether `model` takes `output_config.task_budget` (see the module's rule)."""
    match = _NAME.search((model or "").lower())
    if not match:
        return False
    family, version = match.group(1), (int(match.group(2)), int(match.group(3) or 0))
    return version >= _FROM.get(family, _EVERY_FAMILY_FROM) or version >= _EVERY_FAMILY_FROM


def check_total(total: Any) -> int:
    if isinstance(total, bool) or not isinstance(total, int):
        raise ValueError(f"task_budget must be a whole number of tokens, not {total!r}")
    if total < MIN_TOTAL:
        raise ValueError(f"task_budget must be at least {MIN_TOTAL:,} tokens (Anthropic's minimum), not {total:,}")
    return total


@dataclass
class TaskBudget:
    """The countdown across contexts. A context is the conversation between two client-side compactions."""

    total: int
    remaining: int | None = None  # sent once the first compaction happened; None: the server starts at total
    context: int = 0  # how many compactions so far
    _first_input: int | None = field(default=None, repr=False)  # the context's first request: its prompt
    _last_size: int = field(default=0, repr=False)  # the context's latest request: prompt plus reply

    def __post_init__(self) -> None:
        check_total(self.total)

    def value(self) -> dict[str, Any]:
        """`output_config.task_budget` for the current context: the same value on every request of it."""
        budget: dict[str, Any] = {"type": "tokens", "total": self.total}
        if self.remaining is not None:
            budget["remaining"] = self.remaining
        return budget

    def for_model(self, model: str) -> dict[str, Any] | None:
        """What a request to `model` carries: value(), or None for a model that takes no task budget."""
        return self.value() if supports_task_budget(model) else None

    def settled(self, context: int, input_tokens: int, output_tokens: int) -> None:
        """A whole reply to a request sent in `context`: observed if that context is still the current one
        (a reply to a request sent before a compaction says nothing of the new context)."""
        if context == self.context:
            self.observe(input_tokens, output_tokens)

    def observe(self, input_tokens: int, output_tokens: int) -> None:
        """One request of the current context: its whole prompt (cache reads and writes included) and reply."""
        if self._first_input is None:
            self._first_input = input_tokens
        self._last_size = input_tokens + output_tokens

    def spent_in_context(self) -> int:
        """What the context grew by since its first prompt: replies, thinking, tool calls and tool results."""
        if self._first_input is None:
            return 0
        return max(0, self._last_size - self._first_input)

    def compacted(self, remaining: int | None = None) -> int:
        """The caller replaced its context with a summary; from now on send `remaining` (given, or computed)."""
        if remaining is None:
            start = self.total if self.remaining is None else self.remaining
            remaining = start - self.spent_in_context()
        self.remaining = max(0, int(remaining))
        self.context += 1
        self._first_input, self._last_size = None, 0
        return self.remaining


def with_task_budget(
    kwargs: Mapping[str, Any], budget: Mapping[str, Any], *, beta_api: bool, default_beta: str | None = None
) -> dict[str, Any]:
    """`kwargs` plus `output_config.task_budget` and the beta header. A task budget the caller set wins."""
    out = dict(kwargs)
    config = dict(out.get("output_config") or {})
    if "task_budget" in config:
        return out
    config["task_budget"] = dict(budget)
    out["output_config"] = config
    return with_beta(out, BETA, beta_api=beta_api, default_beta=default_beta)


def with_beta(kwargs: dict[str, Any], name: str, *, beta_api: bool, default_beta: str | None) -> dict[str, Any]:
    """Add a beta to what the request would send, without dropping the caller's or the client's betas.

    The SDK sends one `anthropic-beta` header: the request's `extra_headers` beat its `betas` (beta API), which
    beat the client's default header. So the name is added to whichever of them is in effect.
    """
    headers = dict(kwargs.get("extra_headers") or {})
    key = next((k for k in headers if k.lower() == "anthropic-beta"), None)
    if key is None and beta_api:
        given = kwargs.get("betas")
        betas = list(given) if isinstance(given, (list, tuple)) else _split(default_beta)
        kwargs["betas"] = betas if name in betas else [*betas, name]
        return kwargs
    current = _split(headers.pop(key)) if key is not None else _split(default_beta)
    headers["anthropic-beta"] = ",".join(current if name in current else [*current, name])
    kwargs["extra_headers"] = headers
    return kwargs


def _split(header: Any) -> list[str]:
    return [part.strip() for part in str(header or "").split(",") if part.strip()]
