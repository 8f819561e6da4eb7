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

from capguard import compat, identity, monthly, paths
from capguard.agents import get_adapter
from capguard.caps import Caps
from capguard.config import Settings
from capguard.errors import MonthlyCapReached
from capguard.events import Reply
from capguard.ids import new_id
from capguard.ledger import RunEnd, RunStart, UsageRecord, open_ledger
from capguard.month_guard import MonthGuard, utc_clock, utc_text
from capguard.pricing import Priced, Pricer
from capguard.report import RunFacts, build_report, exit_code, stop_line, write_all
from capguard.status import StatusBoard
from capguard.supervise import Hooks, Supervisor
from capguard.team import team_of

log = logging.getLogger("capguard")


class _QuietFileHandler(logging.FileHandler):
    """A log write that fails (a full disk) must not print a traceback over the agent's screen; the blind-meter
    check stops the run when the run dir's disk is full, and the report says why."""

    def handleError(self, record: logging.LogRecord) -> None:
        pass


def _log_to(path: Path) -> logging.Handler:
    """Diagnostics go to the run's log file: capguard never writes on the agent's screen."""
    handler = _QuietFileHandler(path)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    log.addHandler(handler)
    log.setLevel(logging.INFO)
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
    standings = guard.standings()
    refusal = monthly.refusal(standings)
    if refusal:
        raise MonthlyCapReached(f"{agent} not started: {refusal}")
    for line in monthly.warnings(standings):
        print(f"capguard: warning: {line}", file=stderr)
    return replace(caps, monthly_remaining_micro=monthly.remaining(standings))


def run_agent(agent: str, args: list[str], settings: Settings, *, env: Mapping[str, str] | None = None,
              cwd: Path | None = None, stderr: TextIO | None = None,
              clock: Callable[[], datetime] = utc_clock) -> int:
    """Run one agent under caps; `clock` (aware, UTC) places the run and its usage in a month."""
    env = dict(os.environ if env is None else env)
    cwd = cwd or Path.cwd()
    stderr = stderr or sys.stderr
    run_id = new_id()
    run_dir = paths.runs_dir() / run_id
    run_dir.mkdir(parents=True, exist_ok=True)
    handler = _log_to(run_dir / "capguard.log")
    try:
        return _run(agent, args, settings, env, cwd, stderr, run_id, run_dir, clock)
    finally:
        log.removeHandler(handler)
        handler.close()


def _run(agent, args, settings, env, cwd, stderr, run_id, run_dir, clock) -> int:
    caps = settings.caps()
    plan = get_adapter(agent).plan(args, settings, run_dir, env, run_id)
    pricer = Pricer(settings.prices, fallback_model=plan.fallback_model)
    user, host, line = identity.user(cwd, settings["user"]), identity.host(), settings["line"]
    started_at = time.time()
    with open_ledger(settings["ledger"]) as ledger:  # a broken ledger stops us before the agent starts
        guard = MonthGuard(ledger, team_of(settings), user, line, clock=clock)
        caps = _month_gate(guard, caps, agent, stderr)
        ledger.start_run(RunStart(
            run_id=run_id, agent=agent, argv=plan.argv, cwd=str(cwd), user=user, host=host,
            started_utc=utc_text(clock()), caps=caps.as_json(), project=identity.project(cwd), line=line,
        ))
        board = StatusBoard(run_dir / "status.json", {
            "run_id": run_id, "agent": agent, "pid": os.getpid(), "pid_ticks": compat.start_ticks(os.getpid()),
            "cwd": str(cwd), "started_at": started_at, "caps": caps.as_json(),
        }, title=settings["title"])
        for note in plan.notes:
            log.info(note)
        hooks = Hooks(
            on_reply=lambda reply, priced: ledger.record_usage(
                run_id, _usage_record(reply, priced, utc_text(clock()))),
            on_status=lambda meter, elapsed, verdict, state: board.update(
                meter, caps, elapsed, state=state, warnings=verdict.warnings, force=state != "running"),
            month_allowance=(lambda: guard.allowance(run_id)) if guard.active else None,
            month_now=lambda: guard.month().label,
        )
        supervisor = Supervisor(plan, caps, pricer, name=agent, grace=settings["grace"],
                                kill_after=settings["kill_after"], poll=settings["poll"], hooks=hooks, run_dir=run_dir)
        try:
            outcome = supervisor.run()
        finally:
            board.close()
        facts = RunFacts(
            run_id=run_id, agent=agent, argv=plan.argv, cwd=str(cwd), user=user, host=host,
            started_at=started_at, ended_at=time.time(), elapsed_s=outcome.elapsed_s, caps=caps,
            meter=outcome.meter, stop_reason=outcome.stop_reason, agent_returncode=outcome.returncode,
            signal_received=outcome.signal_received, model=plan.fallback_model, notes=plan.notes,
            blind_spots=plan.blind_spots, stop_steps=outcome.stop_steps, warnings=outcome.warnings,
            leftovers_stopped=outcome.leftovers_stopped, at_stop=outcome.at_stop,
            self_stopped=outcome.self_stopped,
        )
        report = build_report(facts)
        unwritten = write_all([run_dir / "report.json", *([Path(settings["report_json"])] if settings["report_json"] else [])], report)
        board.update(outcome.meter, caps, outcome.elapsed_s, state="ended", force=True)
        ledger.finish_run(run_id, RunEnd(
            ended_utc=utc_text(clock()), stop_reason=outcome.stop_reason, exit_code=report["exit_code"],
            cost_micro_usd=outcome.meter.cost_micro, tokens=outcome.meter.tokens, steps=outcome.meter.steps,
            malformed_lines=outcome.meter.malformed_lines, report=report,
        ))
    if outcome.stop_reason or outcome.signal_received:
        print(stop_line(facts), file=stderr)
    elif outcome.meter.malformed_lines:
        print(f"capguard: {outcome.meter.malformed_lines} malformed log line(s) skipped; see {run_dir}/capguard.log", file=stderr)
    if unwritten:
        print(unwritten, file=stderr)
    return exit_code(facts)
