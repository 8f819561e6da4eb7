"""Claude's task budget added by the metering proxy (`--task-budget N`, for interactive Claude Code which cannot set
it), with the real anthropic SDK against the fake Messages server: `total` until the agent compacts its context,
then `remaining` (what the context used, counted from the billed usage) on every request of the new context."""

from __future__ import annotations

import anthropic

from capguard.core.task_budget import BETA
from tests.fakes import fake_anthropic
from tests.integration.test_metering_proxy import KEY, proxied

TOTAL = 50_000
MAIN, SUBAGENT = "You are the main agent.", "You are a subagent."


def growing(i: int) -> fake_anthropic.Usage:
    """The n-th reply's usage: a prompt that grows as a conversation does, part of it read from the cache."""
    return fake_anthropic.Usage(input_tokens=1_000 + 3_000 * i, output_tokens=2_000, cache_write_5m=0, cache_read=500)


def send(client, system: str, messages: list, model: str = "claude-opus-4-7", **extra) -> None:
    client.messages.create(model=model, max_tokens=4_000, system=system, messages=messages, **extra)


def turns(n: int) -> list:
    out: list = [{"role": "user", "content": "task: fix the build"}]
    for i in range(n - 1):
        out += [{"role": "assistant", "content": f"step {i}"}, {"role": "user", "content": "go on"}]
    return out


def test_remaining_is_carried_across_a_compaction():
    fake = fake_anthropic.FakeAnthropic(fake_anthropic.Script(usage=growing))
    with proxied(fake, "anthropic", None, task_budget=TOTAL) as proxy:
        client = anthropic.Anthropic(base_url=proxy.base_url("up"), api_key=KEY, max_retries=0)
        for n in (1, 2, 3):  # one context, growing
            send(client, MAIN, turns(n))
        summary = [{"role": "user", "content": "Summary of the work so far: the build is half fixed."}]
        send(client, MAIN, summary)  # the conversation shrank: compacted
        send(client, MAIN, [*summary, {"role": "assistant", "content": "ok"}, {"role": "user", "content": "go on"}])
        send(client, SUBAGENT, turns(1))  # a subagent's thread has its own countdown
        send(client, MAIN, turns(1), model="claude-sonnet-4-5")  # a model that does not take it
        send(client, MAIN, turns(1), output_config={"task_budget": {"type": "tokens", "total": 90_000}})

        requests = fake.requests
        budgets = [r["body"].get("output_config", {}).get("task_budget") for r in requests]
        first_context = [requests[i]["usage"] for i in range(3)]
        prompt = [u["input_tokens"] + u["cache_read_input_tokens"] + u["cache_creation_input_tokens"]
                  for u in first_context]  # fmt: skip
        used = prompt[2] + first_context[2]["output_tokens"] - prompt[0]  # what the first context grew by
        assert used > 0
        assert budgets[:3] == [{"type": "tokens", "total": TOTAL}] * 3  # the server counts down by itself
        assert budgets[3] == budgets[4] == {"type": "tokens", "total": TOTAL, "remaining": TOTAL - used}
        assert budgets[5] == {"type": "tokens", "total": TOTAL}
        assert budgets[6] is None and BETA not in requests[6]["anthropic_beta"]
        assert budgets[7] == {"type": "tokens", "total": 90_000}  # the agent's own wins, unchanged
        assert all(BETA in requests[i]["anthropic_beta"].split(",") for i in range(6))
        assert proxy.gate.task_budgets.remaining(MAIN) == TOTAL - used


def test_the_agents_own_betas_are_kept_beside_the_task_budgets_beta():
    with proxied(fake_anthropic.FakeAnthropic(fake_anthropic.Script()), "anthropic", None, task_budget=TOTAL) as p:
        client = anthropic.Anthropic(base_url=p.base_url("up"), api_key=KEY, max_retries=0)
        send(client, MAIN, turns(1), extra_headers={"anthropic-beta": "context-1m-2025-08-07"})
        assert p.fake.requests[0]["anthropic_beta"].split(",") == ["context-1m-2025-08-07", BETA]
