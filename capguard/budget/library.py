"""capguard as a library: the CLI's ceilings (USD, tokens, steps, wall-clock) around a custom agent loop on the
Anthropic API, plus Claude's own task budget, on the same ledger, prices, config and report as the CLI.

    with Budget(usd=10, steps=50, wall="30m", task_budget=200_000) as budget:
        client = budget.wrap(anthropic.Anthropic())

Before each call a reached ceiling raises BudgetExceeded without calling the API, and max_tokens is lowered so
that the call's worst case cannot cross the USD cap; that worst case is held until the call settles, so calls
from many threads cannot cross the cap together. A team's monthly caps hold as for a CLI run: a spent month
refuses the task at its start, and the USD ceiling is the smaller of the task's own cap and what the month leaves,
read from the ledger before each call. This module never imports the `anthropic` package: wrap() loads
capguard.sdk.anthropic_wrap, which does, on first use.

The Budget composes the rest: task_config.py resolves its caps and who it is charged to, core/ decides (caps,
meter, reservations, task budget), allowance.py's MonthGuard reads the month, messages.py words refusals and
warnings, store.py keeps the task in the ledger, and reports/task_report.py builds its report.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import replace
from datetime import datetime
from pathlib import Path
from typing import Any

from capguard import paths
from capguard.budget import task_config
from capguard.budget.admission import Admission, Ask
from capguard.budget.allowance import MonthGuard, utc_text
from capguard.budget.allowance import utc_clock as _utc_now  # the name `utc_clock` is Budget's argument
from capguard.budget.messages import (
    BudgetExceeded,
    BudgetWarning,
    due_warnings,
    month_opening,
    month_reached,
    no_room,
    reached,
)
from capguard.budget.store import (
    AGENT,
    BudgetStore,
    bill,
    call_details,
    replay,
    run_end,
    unix_of,
    usage_row,
    utc_of,
)
from capguard.config import identity
from capguard.config import settings as config
from capguard.core.anthropic_usage import CallUsage
from capguard.core.caps import decide, month_binds, usd_ceiling
from capguard.core.enums import StopReason, UnpricedPolicy
from capguard.core.errors import LedgerError
from capguard.core.ids import new_id
from capguard.core.meter import Meter
from capguard.core.monthly import Standing
from capguard.core.pricing import Pricer
from capguard.core.reservations import Reservations, clamp_max_tokens, lowered_request
from capguard.core.task_budget import with_task_budget
from capguard.ledger import RunStart
from capguard.reports import task_report
from capguard.reports.run_report import RunFacts, write_json

__all__ = ["Admission", "Budget", "BudgetExceeded", "BudgetWarning"]

log = logging.getLogger("capguard.budget.library")


class Budget:
    """Ceilings for one task; what you leave out comes from capguard's config (files, CAPGUARD_* variables).

    `usd` (10, "$10"), `tokens` ("1M"), `steps`, `wall` ("30m"), `warn_at` ("80%") and `unpriced` take what the
    CLI takes, or "off". `task_budget` (at least 20,000 tokens) goes to the models that take one. `task_id` names
    the task in the ledger (default: a new id); `ledger` is a SQLite path or a postgresql:// URL. `on_warning`
    gets a BudgetWarning when a cap passes `warn_at` (default: a log warning). `min_output_tokens`: the smallest
    max_tokens a lowered call may get. `count_tokens`: price prompts from the API's count (else an estimate).

    Monthly caps (the config's [team] table) apply as to a CLI run: the task is charged to `user` and `line`
    (default: as the CLI finds them, config `user`, git user.email or $USER@host, and config `line`; `line=""`
    for none), and `utc_clock` (aware datetimes) places its calls in a month.
    """

    _month: MonthGuard | None  # the monthly caps' guard; None when no monthly cap applies

    def __init__(
        self,
        *,
        usd: Any = None,
        tokens: Any = None,
        steps: Any = None,
        wall: Any = None,
        task_budget: Any = None,
        task_id: str | None = None,
        warn_at: Any = None,
        unpriced: str | None = None,
        on_warning: Callable[[BudgetWarning], None] | None = None,
        ledger: str | os.PathLike[str] | None = None,
        min_output_tokens: int = 1024,
        count_tokens: bool = True,
        cwd: str | os.PathLike[str] | None = None,
        clock: Callable[[], float] = time.monotonic,
        user: str | None = None,
        line: str | None = None,
        utc_clock: Callable[[], datetime] = _utc_now,
        _resume: bool = False,
    ) -> None:
        if min_output_tokens < 1:
            raise ValueError("min_output_tokens must be at least 1")
        self._cwd = Path(cwd or Path.cwd())
        settings = config.load_settings(config.LIBRARY, cwd=self._cwd)
        overrides = task_config.parse_arguments(
            dict(
                usd=usd,
                tokens=tokens,
                steps=steps,
                wall=wall,
                warn_at=warn_at,
                unpriced=unpriced,
                task_budget=task_budget,
            )
        )
        self._store = BudgetStore(ledger if ledger is not None else settings.charge.ledger)
        try:
            self.task_id = task_id or new_id()
            row = self._store.claim(self.task_id, resume=_resume)
            self._setup(task_config.resolve(settings, row, overrides), Pricer(settings.prices), on_warning)
            self._min_output, self._count_tokens, self._clock = min_output_tokens, count_tokens, clock
            self._load(row, *task_config.charged_to(settings, self._cwd, row, self.task_id, user, line))
            self._month: MonthGuard | None = self._month_guard(settings, utc_clock)
            self._utc_clock = utc_clock
            due = self._month_gate()  # before the run row: a refused task is not started, as in the CLI
            if row is None:
                self._start()
        except BaseException:
            self._store.close()
            raise
        self._emit(due)

    @classmethod
    def resume(cls, task_id: str, **kwargs: Any) -> Budget:
        """The task as the ledger has it: its caps and all it spent (the wall clock kept running while it was
        down). Arguments override its caps.
        """
        return cls(task_id=task_id, _resume=True, **kwargs)

    def _setup(
        self, configured: task_config.TaskCaps, pricer: Pricer, on_warning: Callable[[BudgetWarning], None] | None
    ) -> None:
        self.caps, self.task_budget, self._pricer = configured.caps, configured.new_task_budget(), pricer
        self._on_warning = on_warning or (
            lambda found: log.warning("capguard: task %s: %s", self.task_id, found.message)
        )
        self._lock = threading.Lock()
        self._meter, self._holds = Meter(), Reservations()
        self._warned: list[StopReason] = []
        # reason, sentence, figures of the first refusal
        self._stop: tuple[StopReason, str, dict[str, Any]] | None = None
        self._model: str | None = None
        self._report: dict[str, Any] | None = None
        self._tightest: Standing | None = None  # the monthly budget with the least left, as last read

    def _load(self, row: dict[str, Any] | None, user: str, line: str | None) -> None:
        self._t0 = self._clock()
        self._user, self._line, self._host, self._argv = user, line, identity.host(), list(sys.argv)
        if row is None:
            self._started_at, self._elapsed_before = time.time(), 0.0
            return
        self._started_at = unix_of(row["started_utc"])
        self._elapsed_before = max(0.0, time.time() - self._started_at)
        self._model = replay(self._store.usage(self.task_id), self._meter, self.task_budget)

    def _start(self) -> None:
        caps = {**self.caps.as_json(), "task_budget": self.task_budget and self.task_budget.total}
        self._store.start(
            RunStart(
                run_id=self.task_id,
                agent=AGENT,
                argv=self._argv,
                cwd=str(self._cwd),
                user=self._user,
                host=self._host,
                started_utc=utc_of(self._started_at),
                caps=caps,
                project=identity.project(self._cwd),
                line=self._line,
            )
        )

    # ---- monthly caps, as run.py's _month_gate and the supervisor's month_allowance
    def _month_guard(self, settings: config.Settings, utc_clock: Callable[[], datetime]) -> MonthGuard | None:
        team = settings.team
        if not team.budgets(self._user, self._line):
            return None  # no monthly cap applies: calls read nothing more from the ledger
        return self._store.month_guard(team, self._user, self._line, utc_clock)

    def _month_gate(self) -> list[BudgetWarning]:
        """Refuse a task whose month is spent, warn past the soft threshold (the CLI's sentences), and cap the
        task at what the month leaves it."""
        if self._month is None:
            return []
        due = month_opening(self._store.call(self._month.opening), self.task_id, self._figures(), self.caps)
        self._refresh_month()  # the task's own allowance: without its spend, with what it spent before the month
        self._warned.extend([StopReason.MONTHLY] if due else [])
        return due

    def _refresh_month(self) -> None:
        """Read again what the month leaves this task (several indexed queries on the ledger's thread), so that
        what other runs commit — another Budget, a CLI run, a colleague on a shared ledger — counts before the
        next call, and an ack or the 1st of the month lifts the stop. Not cached: any other writer can change it.
        """
        if self._month is not None and self._report is None:  # closed: the ledger's thread is gone
            self._store.call(self._apply_month, self._month)

    async def _arefresh_month(self) -> None:
        """_refresh_month for an event loop: it awaits the ledger thread's answer instead of blocking the loop."""
        if self._month is not None and self._report is None:
            await asyncio.wrap_future(self._store.submit(self._apply_month, self._month))

    def _apply_month(self, guard: MonthGuard) -> None:
        # Runs on the ledger's thread, one job at a time, so figures are applied in the order they were read and
        # a slow caller cannot put back an older one (nothing waits for that thread while holding the lock).
        # Its own committed spend is left out of the read: the task's meter counts it, calls in flight included.
        if self._month is None:  # only scheduled while a month guard is set (_refresh_month)
            return
        try:
            left, standings = guard.allowance_and_standings(self.task_id)
        except LedgerError as err:  # as in the CLI: a ledger failing mid-task leaves the last figure read
            log.error("capguard: task %s: could not read the month's spend: %s", self.task_id, err)
            return
        with self._lock:
            self.caps = replace(self.caps, monthly_remaining_micro=left)
            self._tightest = min(standings, key=lambda s: s.remaining_micro, default=None)

    # ---- the caller's API
    def wrap(self, client: Any) -> Any:
        """A budgeted view of an `anthropic.Anthropic` or `AsyncAnthropic` client (the client is not changed)."""
        from capguard.sdk.anthropic_wrap import wrap_client

        return wrap_client(client, self)

    def check(self, model: str | None = None) -> None:
        """Raise BudgetExceeded if a call (to `model`) would be refused now."""
        self.precheck(model)

    def compacted(self, remaining: int | None = None) -> int | None:
        """Say that the conversation was compacted client-side: later requests carry the task budget's
        `remaining` (given, or what was left when the old context ended). None without a task budget.
        """
        if self.task_budget is None:
            return None
        with self._lock:
            return self.task_budget.compacted(remaining)

    @property
    def elapsed_s(self) -> float:
        return self._elapsed_before + (self._clock() - self._t0)

    @property
    def cost_usd(self) -> float:
        return self._meter.cost_micro / 1_000_000

    @property
    def tokens(self) -> int:
        return self._meter.tokens

    @property
    def steps(self) -> int:
        return self._meter.steps

    @property
    def stop_reason(self) -> StopReason | None:
        return self._stop and self._stop[0]

    def figures(self) -> dict[str, Any]:
        with self._lock:
            return self._figures()

    def report(self) -> dict[str, Any]:
        """The task's summary, with the fields of the CLI's JSON report (final once the budget is closed)."""
        if self._report is not None:
            return self._report
        with self._lock:
            return self._build_report(time.time(), 0)

    # ---- the wrapper's API, around each call
    @property
    def counts_tokens(self) -> bool:
        """Whether the wrapper should ask count_tokens for the prompt (only a USD cap needs it)."""
        return self._count_tokens and usd_ceiling(self.caps) is not None

    def precheck(self, model: str | None) -> None:
        self._refresh_month()
        self._precheck(model)

    async def aprecheck(self, model: str | None) -> None:
        """precheck() for an event loop: the month is read without blocking it."""
        await self._arefresh_month()
        self._precheck(model)

    def _precheck(self, model: str | None) -> None:
        with self._lock:
            refusal = self._refusal(model)
            due = self._due_warnings()
        self._emit(due)
        if refusal:
            raise refusal

    def admit(
        self, kwargs: dict[str, Any], *, prompt_tokens: int | None, beta_api: bool, default_beta: str | None = None
    ) -> Admission:
        """Refuse the call, or shape it (max_tokens, task budget) and hold its worst case until it settles."""
        ask = Ask.of(kwargs, prompt_tokens, self._pricer)
        self._refresh_month()  # again: count_tokens took a round trip, in which other runs may have spent
        return self._admit(ask, beta_api, default_beta)

    async def aadmit(
        self, kwargs: dict[str, Any], *, prompt_tokens: int | None, beta_api: bool, default_beta: str | None = None
    ) -> Admission:
        """admit() for an event loop: the month is read without blocking it."""
        ask = Ask.of(kwargs, prompt_tokens, self._pricer)
        await self._arefresh_month()
        return self._admit(ask, beta_api, default_beta)

    def _admit(self, ask: Ask, beta_api: bool, default_beta: str | None) -> Admission:
        kwargs, model, requested, prompt, cost = ask.kwargs, ask.model, ask.requested, ask.prompt, ask.cost
        with self._lock:
            refusal = self._refusal(model)
            if refusal:
                raise refusal
            headroom = self._holds.headroom(self._meter.cost_micro, usd_ceiling(self.caps)) if cost else None
            clamp = clamp_max_tokens(requested, self._min_output, headroom, cost or (lambda n: 0))
            sent = lowered_request(kwargs, clamp) if clamp else None
            if sent is None or clamp is None:
                floor = max(1, min(self._min_output, requested))
                month = self._tightest if month_binds(self.caps) else None
                why = no_room(
                    model, prompt, floor, cost and cost(floor), headroom or 0, self.caps, self._figures(), month=month
                )
                raise self._refused(StopReason.MONTHLY if month else StopReason.USD, why)
            budget = None if self.task_budget is None else self.task_budget.for_model(model)
            if budget is not None:
                sent = with_task_budget(sent, budget, beta_api=beta_api, default_beta=default_beta)
            hold = self._holds.hold(clamp.worst_micro)
            if self._stop and self._stop[0] == StopReason.MONTHLY:
                self._stop = None  # an ack or a new month lifted the month's stop: the task goes on
            context = self.task_budget.context if self.task_budget else 0
        priced_by = "config" if self._pricer.override_for(model) else "genai-prices"
        return Admission(sent, hold, model, prompt, requested, clamp.max_tokens, priced_by, budget, context)

    def settle(
        self,
        admission: Admission,
        usage: CallUsage | None,
        *,
        message_id: str | None = None,
        model: str | None = None,
        stop_reason: str | None = None,
        complete: bool = True,
        stream: bool = False,
    ) -> Future[bool]:
        """The call ended with `usage` (None: no reply at all, charged the worst case held). A reply cut short
        is charged its whole max_tokens of output: the server may have generated them. Returns the ledger write.
        """
        key = f"sdk:{self.task_id}:{message_id or 'unanswered-' + new_id()}"
        reply, priced = bill(self._pricer, admission, usage, key, model or admission.model, complete)
        with self._lock:
            self._holds.release(admission.hold)
            self._meter.add_reply(reply, priced)
            self._model = priced.model or self._model
            if self.task_budget is not None and admission.task_budget is not None and usage is not None and complete:
                self.task_budget.settled(admission.context, usage.prompt_tokens, usage.output_tokens)
            due = self._due_warnings()
            closed = self._report is not None
        self._emit(due)
        details = call_details(admission, usage, stop_reason, complete, stream, reply)
        row = usage_row(reply, priced, details, utc_text(self._utc_clock()))  # the month it counts in
        if closed:
            log.warning("capguard: budget %s was closed before a call settled; it is not in the ledger", self.task_id)
            done: Future[bool] = Future()
            done.set_result(False)
            return done
        return self._store.record(self.task_id, row)

    def fail(self, admission: Admission, *, charged: bool) -> Future[bool] | None:
        """The call raised. Not `charged` (the API answered with an error status): nothing was billed.
        `charged` (timeout, lost connection, interrupted): the server may have billed it; the hold is counted.
        """
        if charged:
            return self.settle(admission, None, complete=False)
        with self._lock:
            self._holds.release(admission.hold)
        return None

    # ---- internals
    def _figures(self) -> dict[str, Any]:
        found = {
            "cost_usd": self._meter.cost_micro / 1_000_000,
            "tokens": self._meter.tokens,
            "steps": self._meter.steps,
            "elapsed_s": round(self.elapsed_s, 3),
            "held_usd": self._holds.held_micro / 1_000_000,
            "calls_in_flight": self._holds.in_flight,
        }
        if self.caps.monthly_remaining_micro is not None:  # what the month left the task (the report's overshoot)
            found["monthly_remaining_usd"] = self.caps.monthly_remaining_micro / 1_000_000
        return found

    def _refusal(self, model: str | None) -> BudgetExceeded | None:
        if self._report is not None:
            raise RuntimeError(f"budget {self.task_id} is closed")
        verdict = decide(self.caps, self._meter, self.elapsed_s)
        if verdict.reason == StopReason.MONTHLY:
            why = month_reached(self._meter.cost_micro, self.caps.monthly_remaining_micro or 0, self._tightest)
            return self._refused(StopReason.MONTHLY, why)
        if verdict.stop and verdict.reason:
            return self._refused(verdict.reason, reached(verdict.reason, self.caps, self._figures()))
        if self._holds.steps_left(self._meter.steps, self.caps.steps) == 0:
            return self._refused(StopReason.STEPS, reached(StopReason.STEPS, self.caps, self._figures()))
        if (
            model
            and usd_ceiling(self.caps) is not None
            and self.caps.unpriced == UnpricedPolicy.STOP
            and not self._pricer.can_price(model)
        ):
            return self._refused(StopReason.UNPRICED, reached(StopReason.UNPRICED, self.caps, {"model": model}))
        return None

    def _refused(self, reason: StopReason, why: str) -> BudgetExceeded:
        figures = {"reason": reason, **self._figures(), "caps": self.caps.as_json()}
        if self._stop is None:
            self._stop = (reason, why, figures)
        return BudgetExceeded(reason, f"{why}; task {self.task_id}", figures)

    def _due_warnings(self) -> list[BudgetWarning]:
        return due_warnings(self.caps, self._meter, self.elapsed_s, self._warned)

    def _emit(self, due: list[BudgetWarning]) -> None:
        for found in due:
            self._on_warning(found)

    def _build_report(self, ended_at: float, returncode: int | None) -> dict[str, Any]:
        reason, why, at_stop = self._stop or (None, None, None)
        monthly = self._month is not None
        facts = RunFacts(
            run_id=self.task_id,
            agent=AGENT,
            argv=self._argv,
            cwd=str(self._cwd),
            user=self._user,
            host=self._host,
            started_at=self._started_at,
            ended_at=ended_at,
            elapsed_s=self.elapsed_s,
            caps=self.caps,
            meter=self._meter,
            stop_reason=reason,
            agent_returncode=returncode,
            model=self._model,
            notes=task_report.notes(monthly=monthly, user=self._user, line=self._line, task_budget=self.task_budget),
            blind_spots=task_report.blind_spots(monthly=monthly),
            warnings=list(self._warned),
            at_stop=at_stop,
        )
        return task_report.task_report(facts, task_budget=self.task_budget, stop_detail=why)

    # ---- lifecycle
    def close(self, *, returncode: int | None = 0) -> dict[str, Any]:
        """Finish the task in the ledger, write its report (the data dir's runs/<task id>/report.json) and return
        it. `with Budget(...)` closes by itself; Budget.resume(task_id) takes the task up again later.
        """
        with self._lock:
            if self._report is not None:
                return self._report
            ended = time.time()
            report = self._report = self._build_report(ended, returncode)
        try:
            self._store.finish(self.task_id, run_end(utc_of(ended), self._meter, report))
            write_json(paths.runs_dir() / self.task_id / "report.json", report)
        finally:
            self._store.close()
        return report

    def __enter__(self) -> Budget:
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        self.close(returncode=0 if exc is None or isinstance(exc, BudgetExceeded) else 1)

    async def __aenter__(self) -> Budget:
        return self

    async def __aexit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        await asyncio.to_thread(self.__exit__, exc_type, exc, tb)  # the ledger's last writes, off the event loop
