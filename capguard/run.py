"""`capguard AGENT ...`: wires settings, adapter, ledger, status and supervisor into one run.

The only place that knows all the pieces; each piece stays ignorant of the others.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import replace
from datetime import datetime
from pathlib import Path
from typing import TextIO

import psutil

from capguard import paths
from capguard.agents import get_adapter
from capguard.budget.allowance import MonthGuard, utc_clock, utc_text
from capguard.config import identity
from capguard.config.origins import cap_origins
from capguard.config.settings import Settings
from capguard.core import child_env
from capguard.core.caps import Caps
from capguard.core.errors import (
    AgentNotExecutable,
    AgentNotFound,
    ConfigError,
    LedgerError,
    MonthlyCapReached,
    ProxyUnavailable,
    UnpricedModel,
)
from capguard.core.events import Reply
from capguard.core.ids import new_id
from capguard.core.pricing import Priced, Pricer
from capguard.core.redact import RedactingFilter, redact_argv
from capguard.ledger import Ledger, RunEnd, RunStart, UsageRecord
from capguard.ledger.reconcile import open_reconciled
from capguard.ledger.spool import Spool, SpoolError
from capguard.private_files import private_dir, private_file
from capguard.reports.run_report import (
    RunFacts,
    build_report,
    exit_code,
    exit_line,
    stop_line,
    suspicious_note,
    write_all,
)
from capguard.reports.start_notes import start_notes, unpriced_refusal
from capguard.supervisor import cgroup, compat
from capguard.supervisor.admission import LedgerMonth
from capguard.supervisor.notify import Notifier, RunAlerts
from capguard.supervisor.status_board import StatusBoard
from capguard.supervisor.strict import StrictMeter, model_refusal
from capguard.supervisor.supervise import Hooks, Outcome, Supervisor

log = logging.getLogger("capguard")


class _QuietFileHandler(logging.FileHandler):
    """A log write that fails (a full disk) must not print a traceback over the agent's screen; the blind-meter
    check stops the run when the run dir's disk is full, and the report says why."""

    def handleError(self, record: logging.LogRecord) -> None:
        pass


# Loggers of the libraries capguard runs in its own process: the metering proxy's aiohttp logs an error it did not
# expect with its traceback, which Python would print on stderr (the agent's screen) without a handler.
_LIBRARY_LOGGERS = ("aiohttp",)


def _log_to(path: Path) -> logging.Handler:
    """Diagnostics go to the run's log file: capguard never writes on the agent's screen."""
    handler = _QuietFileHandler(private_file(path))
    handler.addFilter(RedactingFilter())
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    for name in _LIBRARY_LOGGERS:
        logging.getLogger(name).addHandler(handler)
    return handler


def _usage_record(reply: Reply, priced: Priced, occurred_utc: str) -> UsageRecord:
    return UsageRecord(
        dedupe_key=reply.key,
        occurred_utc=occurred_utc,
        model=priced.model,
        input_tokens=reply.input_tokens,
        output_tokens=reply.output_tokens,
        cache_read_tokens=reply.cache_read_tokens,
        cache_write_tokens=reply.cache_write_tokens,
        cost_micro_usd=priced.cost_micro,
        priced_by=priced.priced_by,
        source_file=reply.source,
        source_offset=reply.offset,
        details=reply.details or None,
    )


def _month_gate(guard: MonthGuard, caps: Caps, agent: str, stderr: TextIO) -> Caps:
    """Refuse at a spent monthly budget, warn past its soft threshold (before the agent takes the terminal),
    and cap the run at what the month leaves."""
    if not guard.active:
        return caps
    opening = guard.opening()
    if opening.refusal:
        raise MonthlyCapReached(f"{agent} not started: {opening.refusal}")
    for line in opening.warnings:
        print(f"capguard: warning: {line}", file=stderr)
    return replace(caps, monthly_remaining_micro=opening.remaining)


def run_agent(
    agent: str,
    args: list[str],
    settings: Settings,
    *,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    stderr: TextIO | None = None,
    clock: Callable[[], datetime] = utc_clock,
) -> int:
    """Run one agent under caps; `clock` (aware, UTC) places the run and its usage in a month."""
    env = dict(os.environ if env is None else env)
    cwd = cwd or Path.cwd()
    stderr = stderr or sys.stderr
    run_id = new_id()
    run_dir = paths.runs_dir() / run_id
    for folder in (paths.data_home(), paths.runs_dir(), run_dir):  # reports and logs of every run: the user's only
        private_dir(folder, stderr=stderr)
    handler = _log_to(run_dir / "capguard.log")
    cgroup.kill_leftovers()  # the trees of runs whose capguard was killed outright (their guard too) die now
    try:
        return _run(agent, args, settings, env, cwd, stderr, run_id, run_dir, clock)
    finally:
        for logger in (log, *map(logging.getLogger, _LIBRARY_LOGGERS)):
            logger.removeHandler(handler)
        handler.close()


def _run(agent, args, settings, env, cwd, stderr, run_id, run_dir, clock) -> int:
    caps = settings.caps
    plan = get_adapter(agent).plan(args, settings, run_dir, env, run_id)
    for folder in plan.folders:
        folder.mkdir(parents=True, exist_ok=True)
    plan.env = child_env.for_agent(plan.env)  # the one place every agent's environment passes: no secrets of ours
    pricer = Pricer(settings.prices, fallback_model=plan.fallback_model)
    strict = settings.supervise.meter == "proxy"
    if strict and not plan.fronts:
        raise ConfigError(
            f"capguard --strict cannot meter {agent} yet (its providers are not fronted by the proxy);"
            " run it with --meter files (its logs) instead"
        )
    if strict and (why := model_refusal(plan.named_model, settings.models)):
        raise ConfigError(f"{agent} not started: {why}")
    user, host, line = identity.user(cwd, settings.charge.user), identity.host(), settings.charge.line
    started_at = time.time()
    # a broken ledger stops us before the agent starts; runs of dead capguards are settled first
    with open_reconciled(settings.charge.ledger, stderr) as ledger:
        guard = MonthGuard(ledger, settings.team, user, line, clock=clock)
        caps = _month_gate(guard, caps, agent, stderr)
        priced = pricer.can_price(plan.named_model)
        origins = cap_origins(settings, user if guard.active else None)
        refusal = unpriced_refusal(caps, plan.named_model, priced, reports_cost=plan.reports_cost)
        if refusal:
            raise UnpricedModel(f"{agent} not started: {refusal}")
        start = RunStart(  # redacted here, so the spool never holds a key from the agent's command line either
            run_id=run_id,
            agent=agent,
            argv=redact_argv(plan.argv),
            cwd=str(cwd),
            user=user,
            host=host,
            started_utc=utc_text(clock()),
            caps={**caps.as_json(), "origins": origins},
            project=identity.project(cwd),
            line=line,
        )
        spool = _open_spool(run_dir, start, ledger)
        try:
            ledger.start_run(start)
        except BaseException:
            spool.discard()
            raise
        board = StatusBoard(
            run_dir / "status.json",
            {
                "run_id": run_id,
                "agent": agent,
                "pid": os.getpid(),
                "pid_ticks": compat.start_ticks(os.getpid()),
                "cwd": str(cwd),
                "started_at": started_at,
                "caps": caps.as_json(),
            },
            title=settings.output.title,
        )
        for note in plan.notes:
            log.info(note)
        notifier = Notifier(settings.output.notify, env=env, terminal=stderr)
        alerts = RunAlerts(notifier, agent, caps)
        unable = notifier.start_note()
        if unable:  # said once, before the agent takes the terminal; the run goes on without them
            print(unable, file=stderr)
        if not settings.output.quiet:  # once, before the agent takes the terminal
            for line in start_notes(
                caps, model=plan.named_model, priced=priced, estimates=plan.estimates, reports_cost=plan.reports_cost
            ):
                print(line, file=stderr)
        hooks = Hooks(
            record_of=lambda reply, priced: _usage_record(reply, priced, utc_text(clock())),
            spool=spool.append_usage,
            on_reply=lambda record: ledger.record_usage(run_id, record),
            on_status=lambda meter, elapsed, verdict, state: _status(
                board, alerts, caps, meter, elapsed, verdict, state
            ),
        )
        meter = (
            StrictMeter(
                plan.fronts or [], pricer, caps, models=settings.models, task_budget=settings.launch.task_budget
            )
            if strict
            else None
        )
        supervisor = Supervisor(
            plan,
            caps,
            pricer,
            name=agent,
            grace=settings.supervise.grace_s,
            kill_after=settings.supervise.kill_after_s,
            poll=settings.supervise.poll,
            hooks=hooks,
            month=LedgerMonth(lambda: guard.allowance(run_id), lambda: guard.month().label) if guard.active else None,
            run_id=run_id,
            run_dir=run_dir,
            strict=meter,
        )
        try:
            outcome = supervisor.run()
        except (
            AgentNotFound,
            AgentNotExecutable,
            ProxyUnavailable,
        ) as err:  # nothing ran: the row says so, not "running" forever
            ledger.finish_run(
                run_id,
                RunEnd(
                    ended_utc=utc_text(clock()),
                    stop_reason=None,
                    exit_code=err.exit_code,
                    cost_micro_usd=0,
                    tokens=0,
                    steps=0,
                    malformed_lines=0,
                    report={"run_id": run_id, "error": str(err)},
                    status="not started",
                ),
            )
            spool.settled()
            raise
        finally:
            board.close()
            failed = notifier.close()
        late_notes = [note for summary in plan.summaries for note in summary()]
        for note in late_notes:
            log.info(note)
        facts = RunFacts(
            run_id=run_id,
            agent=agent,
            argv=plan.argv,
            cwd=str(cwd),
            user=user,
            host=host,
            started_at=started_at,
            ended_at=time.time(),
            elapsed_s=outcome.elapsed_s,
            caps=caps,
            meter=outcome.meter,
            stop_reason=outcome.stop_reason,
            agent_returncode=outcome.returncode,
            signal_received=outcome.signal_received,
            model=plan.fallback_model,
            notes=plan.notes + late_notes,
            blind_spots=plan.blind_spots,
            stop_steps=outcome.stop_steps,
            warnings=outcome.warnings,
            leftovers_stopped=outcome.leftovers_stopped,
            at_stop=outcome.at_stop,
            self_stopped=outcome.self_stopped,
            tree_stop=outcome.tree_stop,
            cap_origins=origins,
            strict=strict,
            files_meter=outcome.files_meter,
            proxy_calls=outcome.proxy_calls,
            proxy_refusals=outcome.proxy_refusals,
        )
        if outcome.ledger_unsaved:
            facts.notes = [
                *facts.notes,
                f"the ledger missed {len(outcome.ledger_unsaved)} replies"
                f" ({outcome.ledger_error}); they are in {spool.path}",
            ]
        report = build_report(facts)
        unwritten = write_all(
            [run_dir / "report.json", *([Path(settings.output.report_json)] if settings.output.report_json else [])],
            report,
        )
        board.update(outcome.meter, caps, outcome.elapsed_s, state="ended", force=True)
        unavailable = _close_run(
            ledger,
            spool,
            run_id,
            outcome,
            RunEnd(
                ended_utc=utc_text(clock()),
                stop_reason=outcome.stop_reason,
                exit_code=report["exit_code"],
                cost_micro_usd=outcome.meter.cost_micro,
                tokens=outcome.meter.tokens,
                steps=outcome.meter.steps,
                malformed_lines=outcome.meter.malformed_lines,
                report=report,
            ),
        )
    if outcome.stop_reason or outcome.signal_received:
        print(stop_line(facts), file=stderr)
    else:
        if not settings.output.quiet:
            print(exit_line(facts), file=stderr)
        if outcome.meter.malformed_lines:
            print(
                f"capguard: {outcome.meter.malformed_lines} malformed log line(s) skipped; see {run_dir}/capguard.log",
                file=stderr,
            )
    if outcome.meter.suspicious_lines and not (outcome.stop_reason or outcome.signal_received):
        print(
            f"capguard: warning: {suspicious_note(outcome.meter.suspicious_lines)}; see {run_dir}/report.json",
            file=stderr,
        )
    if failed:
        print(failed, file=stderr)
    if unwritten:
        print(unwritten, file=stderr)
    if unavailable:
        print(unavailable, file=stderr)
    return exit_code(facts)  # never a ledger error's: the cap fired, and what it counted is in the spool


def _status(board: StatusBoard, alerts: RunAlerts, caps: Caps, meter, elapsed: float, verdict, state: str) -> None:
    """The status file and title, and the notifications (a cap's warning, the stop)."""
    board.update(meter, caps, elapsed, state=state, warnings=verdict.warnings, force=state != "running")
    alerts.status(meter, elapsed, verdict, state)


def _open_spool(run_dir: Path, start: RunStart, ledger: Ledger) -> Spool:
    """The run's spool, before the ledger knows the run: a capguard killed from here on is reconciled."""
    try:
        me = psutil.Process()
        return Spool.create(
            run_dir, start, ledger=ledger.identity, pid=me.pid, pid_created=me.create_time(), host=start.host
        )
    except SpoolError as err:
        raise LedgerError(f"{err}; capguard does not start an agent it cannot count durably") from err


def _close_run(ledger: Ledger, spool: Spool, run_id: str, outcome: Outcome, end: RunEnd) -> str | None:
    """Close the run in the ledger; the spool keeps its end first. Returns the one line for the user when the
    ledger did not take everything (the next capguard start replays the spool), else None."""
    error = outcome.ledger_error if outcome.ledger_unsaved else None
    try:
        spool.append_end(end)
    except SpoolError as err:
        log.error("%s", err)  # the ledger may still take the end; the report has it anyway
    try:
        ledger.finish_run(run_id, end)
    except LedgerError as err:
        log.error("could not close the run in the ledger: %s", err)
        error = str(err)
    if error is None:
        spool.settled()
        return None
    spool.close()
    unsaved = outcome.ledger_unsaved
    cost = sum(record.cost_micro_usd or 0 for record in unsaved)
    return (
        f"capguard: the ledger was unavailable ({error}); {len(unsaved)} repl{'y' if len(unsaved) == 1 else 'ies'}"
        f" (${cost / 1e6:.2f}) and the run's end are kept in {spool.path}; the next capguard start records them"
    )
