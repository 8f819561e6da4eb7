"""What every capguard start puts right first, once, before it does anything else with the ledger.

Runs whose spool the ledger may lack (`open-runs/`): a run of a capguard that died on this host (SIGKILL, a crash,
a power cut) is closed as `abandoned` with the usage it counted; usage a failed ledger missed is replayed from the
spool (dedupe keys make that idempotent). Runs of a live capguard, and runs of other hosts, are left alone.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from datetime import datetime, timezone
from typing import TextIO

from capguard.config import identity
from capguard.core.errors import LedgerError
from capguard.ledger import Ledger, RunEnd, open_ledger, spool
from capguard.ledger.records import normalize_utc
from capguard.ledger.spool import SpooledRun


def owner_alive(pid: int, created: float) -> bool:
    """The capguard that wrote a spool still runs: its pid exists and started when that capguard did (a reused pid
    started later). A zombie is dead: it only waits for its parent to collect its status."""
    import psutil  # here: a command that opens the ledger with no spool to replay (an import) does without it

    try:
        proc = psutil.Process(pid)
        return abs(proc.create_time() - created) < 0.05 and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False
    except psutil.Error:
        return True  # cannot tell: treat as alive rather than close a live run


def replay(ledger: Ledger, run: SpooledRun) -> tuple[int, str | None]:
    """Put the spool's run, usage and end into the ledger; returns (usage records the ledger lacked, the status the
    run was closed with now, or None when the row was closed already)."""
    run_id = run.start.run_id
    ledger.start_run(run.start, if_missing=True)  # a ledger started afresh lacks the run itself
    added = sum(1 for record in run.usage if ledger.record_usage(run_id, record))
    row = ledger.run(run_id)
    if row is not None and row["status"] != "running":
        return added, None
    end = run.end or abandoned_end(ledger, run)
    ledger.finish_run(run_id, end)
    return added, end.final_status


def abandoned_end(ledger: Ledger, run: SpooledRun) -> RunEnd:
    """The end of a run whose capguard died: what it counted, as of its spool's last write."""
    cost, tokens = ledger.spend(run=run.start.run_id)
    try:
        last = datetime.fromtimestamp(run.path.stat().st_mtime, timezone.utc)
    except OSError:
        last = datetime.now(timezone.utc)
    why = (
        f"capguard (pid {run.pid} on {run.host}) ended without closing the run (killed or crashed);"
        " its counted usage is kept"
    )
    report = {
        "run_id": run.start.run_id,
        "status": "abandoned",
        "why": why,
        "cost_usd": cost / 1e6,
        "tokens": tokens,
        "replies": len(run.usage),
    }
    return RunEnd(
        ended_utc=normalize_utc(last.isoformat()),
        stop_reason=None,
        exit_code=None,
        cost_micro_usd=cost,
        tokens=tokens,
        steps=len(run.usage),
        malformed_lines=0,
        report=report,
        status="abandoned",
    )


def reconcile_runs(
    ledger: Ledger, *, host: str | None = None, alive: Callable[[int, float], bool] = owner_alive
) -> list[str]:
    """Settle every open run of this host whose capguard is gone and whose spool belongs to `ledger`; one line for
    the user per run that needed it."""
    host = host or identity.host()
    lines = []
    for run_id in spool.open_run_ids():
        run = spool.read(spool.spool_of(run_id))
        if run is None:
            spool.settle(run_id)  # no start line: the run never reached the ledger, there is nothing to replay
            continue
        if run.host != host or run.ledger != ledger.identity or alive(run.pid, run.pid_created):
            continue
        try:
            added, closed = replay(ledger, run)
        except LedgerError as err:  # kept open: the next start tries again
            lines.append(
                f"warning: the ledger did not take the spool of run {run_id} yet ({err});"
                " the next capguard start tries again"
            )
            continue
        spool.settle(run_id)
        lines += _said(run, added, closed)
    return lines


def _said(run: SpooledRun, added: int, closed: str | None) -> list[str]:
    cost = sum(record.cost_micro_usd or 0 for record in run.usage)
    if closed == "abandoned":
        return [
            f"run {run.start.run_id} ({run.start.agent}) lost its capguard (pid {run.pid}): closed as abandoned"
            f" with its {len(run.usage)} counted repl{'y' if len(run.usage) == 1 else 'ies'} (${cost / 1e6:.2f})"
            f"{f', {added} of them replayed from its spool' if added else ''}"
        ]
    if added:
        return [
            f"recorded {added} spooled repl{'y' if added == 1 else 'ies'} of run {run.start.run_id}"
            f" that the ledger had missed (run total ${cost / 1e6:.2f})"
        ]
    return []


def reconcile_at_start(ledger: Ledger, stderr: TextIO | None = None) -> list[str]:
    """Called once per capguard start that opens the ledger; says what it settled on stderr. Other start-up repairs
    of dead runs (e.g. their leftover cgroups) belong here too."""
    lines = reconcile_runs(ledger)
    for line in lines:
        print(f"capguard: {line}", file=stderr or sys.stderr)
    return lines


def open_reconciled(target, stderr: TextIO | None = None) -> Ledger:
    """open_ledger(), then reconcile_at_start(): how capguard's commands open the ledger."""
    ledger = open_ledger(target)
    try:
        reconcile_at_start(ledger, stderr)
    except BaseException:
        ledger.close()
        raise
    return ledger
