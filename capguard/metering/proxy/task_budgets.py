"""Claude's task budget added by the proxy to the Messages requests of models that take it (`--task-budget N`), so
interactive Claude Code, which has no way to set one, gets it too; `remaining` is carried across compaction.

A thread is a conversation the agent keeps (the main agent's, each subagent's), told apart by its system prompt.
A request of a thread whose conversation shrank (fewer messages, or a different first message: the agent replaced
its context with a summary, or cleared it) starts a new context: from then on its requests carry `remaining`, the
budget left when the context was compacted (core/task_budget.py counts it from the billed usage).

Pure: a parsed JSON body in, a new body out; the Gate calls it under its lock and reports each call's usage.
"""

from __future__ import annotations

import hashlib
import json
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from capguard.core.task_budget import BETA, TaskBudget, check_total, supports_task_budget

MAX_THREADS = 256  # threads remembered (the oldest forgotten first): memory stays bounded


@dataclass
class _Thread:
    budget: TaskBudget
    messages: int = 0  # how many messages the thread's latest request had
    first: bytes = b""  # a hash of its first message


@dataclass(frozen=True)
class Ticket:
    """A request that carries the task budget: its thread and the context it was sent in."""

    thread: bytes
    context: int


class TaskBudgets:
    """The task budget of every thread the proxy sees, `total` tokens each."""

    def __init__(self, total: int) -> None:
        self.total = check_total(total)
        self._threads: OrderedDict[bytes, _Thread] = OrderedDict()

    def apply(self, body: dict[str, Any]) -> tuple[dict[str, Any], Ticket | None]:
        """The body with `output_config.task_budget`, or unchanged: a model that does not take it, or a request
        that sets its own (the agent's wins, e.g. `claude -p --task-budget`)."""
        config = body.get("output_config")
        if not supports_task_budget(_text(body.get("model"))) or (isinstance(config, dict) and "task_budget" in config):
            return body, None
        if config is not None and not isinstance(config, dict):
            return body, None  # not the API's shape: the server will say so, unchanged
        messages = body.get("messages")
        messages = messages if isinstance(messages, list) else []
        key = hashlib.sha256(_dumps(body.get("system"))).digest()
        first = hashlib.sha256(_dumps(messages[0] if messages else None)).digest()
        thread = self._threads.get(key)
        if thread is None:
            thread = _Thread(TaskBudget(self.total))
            self._threads[key] = thread
            while len(self._threads) > MAX_THREADS:
                self._threads.popitem(last=False)
        elif len(messages) < thread.messages or first != thread.first:
            thread.budget.compacted()  # the conversation shrank: a new context, `remaining` from now on
        self._threads.move_to_end(key)
        thread.messages, thread.first = len(messages), first
        sent = {**body, "output_config": {**(config or {}), "task_budget": thread.budget.value()}}
        return sent, Ticket(key, thread.budget.context)

    def observe(self, ticket: Ticket, prompt_tokens: int, output_tokens: int) -> None:
        """A call that carried the budget was billed: its whole prompt (cache reads and writes included), its reply."""
        thread = self._threads.get(ticket.thread)
        if thread is not None and thread.budget.context == ticket.context:
            thread.budget.observe(prompt_tokens, output_tokens)

    def remaining(self, system: Any) -> int | None:
        """The `remaining` a thread's requests carry now (None: before its first compaction, or unknown)."""
        thread = self._threads.get(hashlib.sha256(_dumps(system)).digest())
        return None if thread is None else thread.budget.remaining


def with_beta(header: str | None) -> str:
    """The `anthropic-beta` header with the task budgets beta added (the agent's betas kept)."""
    betas = [part.strip() for part in (header or "").split(",") if part.strip()]
    return ",".join(betas if BETA in betas else [*betas, BETA])


def _dumps(value: Any) -> bytes:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), sort_keys=True, default=str).encode()


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) else None
