"""A custom agent loop under a capguard Budget, run by the crash test until it is killed (or a cap stops it).

    python budget_loop.py BASE_URL LEDGER TASK_ID [--resume]

Prints `step N $COST` after each reply is recorded in the ledger.
"""

from __future__ import annotations

import sys

import anthropic

from capguard import Budget, BudgetExceeded


def main(base_url: str, ledger: str, task_id: str, resume: bool) -> int:
    budget = Budget.resume(task_id, ledger=ledger) if resume else Budget(usd=1, task_id=task_id, ledger=ledger)
    with budget:
        client = budget.wrap(anthropic.Anthropic(base_url=base_url, api_key="sk-ant-fake", max_retries=0))
        messages: list = [{"role": "user", "content": "LOOP " + "padding " * 200}]
        try:
            while True:
                reply = client.messages.create(model="claude-opus-4-7", max_tokens=2_000, messages=messages)
                results = [
                    {"type": "tool_result", "tool_use_id": b.id, "content": "ok"}
                    for b in reply.content
                    if b.type == "tool_use"
                ]
                messages += [{"role": "assistant", "content": reply.content}, {"role": "user", "content": results}]
                print(f"step {budget.steps} {budget.cost_usd}", flush=True)
        except BudgetExceeded as stop:
            print(f"stopped {stop.reason}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:4], resume="--resume" in sys.argv))
