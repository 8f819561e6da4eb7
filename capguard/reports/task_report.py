"""The report of a library task (`capguard.Budget`): the CLI's JSON report with the task's notes, blind spots,
task budget and stop sentence.

Pure: the task's facts in, the report's dict out; the Budget writes it where a CLI run's goes.
"""

from __future__ import annotations

from typing import Any

from capguard.core.task_budget import TaskBudget
from capguard.reports.run_report import RunFacts, build_report

BLIND_SPOTS = [
    "a call in flight when the process is killed is billed but never recorded",
    "server tools (web search, web fetch, code execution) and MCP servers add input during a call: it is counted "
    "afterwards, but the pre-call USD bound covers only the prompt and max_tokens",
    "server-side fallback models are priced after the fact; the pre-call bound uses the requested model",
    "the tokens cap is checked before each call; calls in flight are not held against it",
    "a timed-out attempt that the SDK retries by itself is charged once, as one call",
]
MONTH_BLIND_SPOT = (
    "the monthly cap counts other processes' spend once it is in the ledger: their calls in flight "
    "are not held against it, so concurrent tasks can overshoot the month by those calls"
)


def blind_spots(*, monthly: bool) -> list[str]:
    """What the in-process meter cannot see; `monthly`: a monthly cap applies to the task."""
    return [*BLIND_SPOTS, *([MONTH_BLIND_SPOT] if monthly else [])]


def notes(*, monthly: bool, user: str, line: str | None, task_budget: TaskBudget | None) -> list[str]:
    """How the task was metered: in-process, the monthly caps it is charged to, its task budget's state."""
    found = ["metered in-process by capguard.Budget around the anthropic SDK"]
    if monthly:
        on_line = f" and budget line {line}" if line else ""
        found.append(f"monthly caps of {user}{on_line}: what the month leaves is read before each call")
    if task_budget is not None:
        now = "the whole budget" if task_budget.remaining is None else f"remaining {task_budget.remaining:,}"
        found.append(
            f"task budget of {task_budget.total:,} tokens: {task_budget.context} compactions, requests carry {now}"
        )
    return found


def task_report(facts: RunFacts, *, task_budget: TaskBudget | None, stop_detail: str | None) -> dict[str, Any]:
    """The CLI's report of `facts`, with the task budget among the caps and the refusal's own sentence."""
    report = build_report(facts)
    report["caps"]["task_budget"] = task_budget and task_budget.total
    if stop_detail:
        report["stop_detail"] = stop_detail
    return report
