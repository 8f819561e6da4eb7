"""A Budget's task in the ledger: its run row (agent "anthropic-sdk"), one usage row per call (what the call is
billed, and the details a resume needs), and the replay of those rows when a crashed harness resumes the task.

Every ledger call runs on one thread of its own, because a SQLite connection belongs to the thread that opened it
and a Budget is shared by the caller's threads and event loop.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import datetime, timezone
from decimal import Decimal
from typing import Any, TypeVar

from capguard.budget.admission import Admission
from capguard.budget.allowance import MonthGuard
from capguard.core.anthropic_usage import CallUsage
from capguard.core.errors import LedgerError
from capguard.core.events import Reply
from capguard.core.meter import Meter
from capguard.core.pricing import Priced, Pricer, to_micro
from capguard.core.task_budget import TaskBudget
from capguard.core.team import TeamConfig
from capguard.ledger import Ledger, RunEnd, RunStart, UsageRecord, normalize_utc, open_ledger, utc_now

AGENT = "anthropic-sdk"
T = TypeVar("T")


class BudgetStore:
    """The ledger, reached through a single worker thread; `close()` joins it."""

    def __init__(self, target: str | os.PathLike[str] | None) -> None:
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="capguard-ledger")
        try:
            self._ledger: Ledger = self._pool.submit(open_ledger, target).result()
        except BaseException:
            self._pool.shutdown(wait=True)
            raise
        self.path_or_url = self._ledger.path_or_url

    def submit(self, fn: Callable[..., T], *args: Any) -> Future[T]:
        return self._pool.submit(fn, *args)

    def call(self, fn: Callable[..., T], *args: Any) -> T:
        return self.submit(fn, *args).result()

    def run(self, task_id: str) -> dict[str, Any] | None:
        return self.call(self._ledger.run, task_id)

    def claim(self, task_id: str, *, resume: bool) -> dict[str, Any] | None:
        """The task's run row: it must exist to be resumed, and must not to be started."""
        row, where = self.run(task_id), self.path_or_url
        if resume:
            if row is None:
                raise LedgerError(f"task {task_id} is not in ledger {where}; start it with Budget(task_id=...)")
            if row["agent"] != AGENT:
                raise LedgerError(f"run {task_id} in ledger {where} is a {row['agent']} run, not a Budget task")
        elif row is not None:
            raise LedgerError(
                f"task {task_id} is already in ledger {where}; continue it with Budget.resume({task_id!r})"
            )
        return row

    def usage(self, task_id: str) -> list[dict[str, Any]]:
        return self.call(self._ledger.usage, task_id)

    def start(self, start: RunStart) -> None:
        self.call(self._ledger.start_run, start)

    def record(self, task_id: str, usage: UsageRecord) -> Future[bool]:
        """Commit one call's row; the future is done when it is durable."""
        return self.submit(self._ledger.record_usage, task_id, usage)

    def month_guard(self, team: TeamConfig, user: str, line: str | None, clock: Callable[[], datetime]) -> MonthGuard:
        """The CLI's MonthGuard on this ledger; call its methods through `call()`, on the ledger's thread."""
        return MonthGuard(self._ledger, team, user, line, clock=clock)

    def finish(self, task_id: str, end: RunEnd) -> None:
        self.call(self._ledger.finish_run, task_id, end)

    def close(self) -> None:
        try:
            self._pool.submit(self._ledger.close).result()
        finally:
            self._pool.shutdown(wait=True)


def replay(rows: list[dict[str, Any]], meter: Meter, task_budget: TaskBudget | None) -> str | None:
    """Feed a task's usage rows back into a fresh meter (and task budget); returns the last model used."""
    model = None
    for row in rows:
        details = row.get("details") or {}
        reply = Reply(
            key=row["dedupe_key"],
            model=row["model"],
            input_tokens=row["input_tokens"],
            output_tokens=row["output_tokens"],
            cache_read_tokens=row["cache_read_tokens"],
            cache_write_tokens=row["cache_write_tokens"],
            cache_write_1h_tokens=details.get("cache_write_1h_tokens", 0),
            web_search_requests=details.get("web_search_requests", 0),
            step=details.get("step", True),
        )
        meter.add_reply(reply, Priced(row["model"], row["cost_micro_usd"], row["priced_by"]))
        model = row["model"] or model
        _replay_task_budget(task_budget, details.get("task_budget"))
        if task_budget is not None and details.get("task_budget") and not details.get("estimated"):
            task_budget.observe(details.get("prompt_tokens", 0), row["output_tokens"])
    return model


def _replay_task_budget(task_budget: TaskBudget | None, sent: dict[str, Any] | None) -> None:
    """Catch up with the compactions the row's request came after (the `remaining` it carried)."""
    if task_budget is None or not sent:
        return
    while task_budget.context < sent.get("context", 0):
        task_budget.compacted(remaining=sent.get("remaining") or 0)


def caps_of(row: dict[str, Any]) -> dict[str, Any]:
    """The caps a task was started with, as its run row keeps them (Caps.as_json plus task_budget)."""
    caps = row.get("caps") or {}
    usd = caps.get("usd")
    return {
        "usd": None if usd is None else to_micro(Decimal(str(usd))),
        "tokens": caps.get("tokens"),
        "steps": caps.get("steps"),
        "wall": caps.get("wall_s"),
        "warn_at": caps.get("warn_at", 0.8),
        "unpriced": caps.get("unpriced", "stop"),
        "task_budget": caps.get("task_budget"),
    }


def usage_row(reply: Reply, priced: Priced, details: dict[str, Any], occurred_utc: str | None = None) -> UsageRecord:
    """One call as a ledger row; its key (`sdk:<task id>:<message id>`) makes a second write a no-op.
    `occurred_utc` (default now) places it in a month."""
    return UsageRecord(
        dedupe_key=reply.key,
        occurred_utc=occurred_utc or utc_now(),
        model=priced.model,
        input_tokens=reply.input_tokens,
        output_tokens=reply.output_tokens,
        cache_read_tokens=reply.cache_read_tokens,
        cache_write_tokens=reply.cache_write_tokens,
        cost_micro_usd=priced.cost_micro,
        priced_by=priced.priced_by if priced.cost_micro is not None else None,
        details=details,
    )


def bill(
    pricer: Pricer, adm: Admission, usage: CallUsage | None, key: str, model: str, complete: bool
) -> tuple[Reply, Priced]:
    """What a call is charged: its usage priced, a cut reply at max_tokens, no reply at the worst case held."""
    if usage is None:
        reply = Reply(key, model, input_tokens=adm.prompt_tokens, output_tokens=adm.max_tokens, step=False)
        return reply, Priced(model, adm.hold.micro, adm.priced_by)
    output = usage.total("output_tokens") if complete else max(usage.output_tokens, adm.max_tokens)
    reply = Reply(
        key,
        model,
        input_tokens=usage.total("input_tokens"),
        output_tokens=output,
        cache_read_tokens=usage.total("cache_read_tokens"),
        cache_write_tokens=usage.total("cache_write_tokens"),
        cache_write_1h_tokens=usage.cache_write_1h_tokens,
        web_search_requests=usage.web_search_requests,
        details={"speed": usage.speed, "inference_geo": usage.inference_geo},
    )
    return reply, pricer.price(reply)


def call_details(
    adm: Admission, usage: CallUsage | None, stop_reason: str | None, complete: bool, stream: bool, reply: Reply
) -> dict[str, Any]:
    """The ledger row's details: what was asked and sent, and what a resume needs (step, task budget)."""
    details: dict[str, Any] = {
        "requested_model": adm.model,
        "max_tokens": adm.max_tokens,
        "max_tokens_requested": adm.requested_max_tokens,
        "held_usd": adm.hold.micro / 1e6,
        "stop_reason": stop_reason,
        "stream": stream,
        "step": reply.step,
        "prompt_tokens": usage.prompt_tokens if usage else None,
        "cache_write_1h_tokens": reply.cache_write_1h_tokens,
        "web_search_requests": reply.web_search_requests,
        "task_budget": adm.task_budget and {"context": adm.context, "remaining": adm.task_budget.get("remaining")},
    }
    if usage is not None and usage.compaction:
        details["server_compaction"] = usage.compaction
    if not complete:
        details["estimated"] = (
            "no reply: charged the worst case held"
            if usage is None
            else "reply cut short: output charged at max_tokens"
        )
    return details


def run_end(ended_utc: str, meter: Meter, report: dict[str, Any]) -> RunEnd:
    """The task's run row at its end: what its meter counted and its report."""
    return RunEnd(
        ended_utc=ended_utc,
        stop_reason=report["stop_reason"],
        exit_code=report["exit_code"],
        cost_micro_usd=meter.cost_micro,
        tokens=meter.tokens,
        steps=meter.steps,
        malformed_lines=0,
        report=report,
    )


def unix_of(utc_text: str) -> float:
    """The unix time of a ledger's UTC text (a run row's started_utc)."""
    moment = datetime.strptime(normalize_utc(utc_text), "%Y-%m-%dT%H:%M:%S.%fZ")
    return moment.replace(tzinfo=timezone.utc).timestamp()


def utc_of(unix: float) -> str:
    """A unix time as the ledger's UTC text."""
    return normalize_utc(datetime.fromtimestamp(unix, timezone.utc).isoformat())
