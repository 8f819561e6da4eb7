"""`python -m capguard`, optionally traced or with a what-if patch; capguard's files are never edited.

BENCH_TRACE=PATH (enforcement_latency.py --breakdown): wraps capguard functions so each call appends
(name, "start"|"end", CLOCK_MONOTONIC ns, thread) to a list, dumped as JSON to PATH when capguard exits.
The wrappers cost about a microsecond per call.

BENCH_PHASES=PATH (startup_overhead.py): total wall time of the big steps of a run (settings, git
identity, ledger open/migrate, spawn, watcher start/stop, teardown...), dumped as JSON to PATH at exit,
with the time spent importing capguard before main().

BENCH_WHATIF_FILTER=1 (--whatif-filter of the benchmarks): schedules capguard's watchdog observer with
an event_filter (created, modified, moved, deleted, closed-after-write), the fix proposed in
bench/RESULTS.md: without it watchdog >= 5 also reports IN_OPEN and IN_CLOSE_NOWRITE, so capguard's
own reads of the log wake it up again and again.
"""

from __future__ import annotations

import atexit
import json
import os
import sys
import threading
import time

TRACE: list[tuple[str, str, int, str]] = []


def _wrap(owner, attr: str, name: str) -> None:
    original = getattr(owner, attr)

    def wrapper(*args, **kwargs):
        TRACE.append((name, "start", time.monotonic_ns(), threading.current_thread().name))
        try:
            return original(*args, **kwargs)
        finally:
            TRACE.append((name, "end", time.monotonic_ns(), threading.current_thread().name))

    setattr(owner, attr, wrapper)


def _dump() -> None:
    path = os.environ.get("BENCH_TRACE")
    if path:
        with open(path, "w") as handle:
            json.dump(TRACE, handle)


def _filtered_start(self, observer):
    from watchdog.events import FileClosedEvent, FileCreatedEvent, FileDeletedEvent, FileModifiedEvent, FileMovedEvent

    wanted = [FileCreatedEvent, FileModifiedEvent, FileMovedEvent, FileDeletedEvent, FileClosedEvent]
    for folder, recursive in self._dirs.items():
        observer.schedule(self._handler, str(folder), recursive=recursive, event_filter=wanted)
    observer.start()
    return observer


T0 = time.monotonic_ns()
PHASES: dict[str, float] = {}


def _time(owner, attr: str, name: str) -> None:
    original = getattr(owner, attr)

    def wrapper(*args, **kwargs):
        start = time.monotonic_ns()
        try:
            return original(*args, **kwargs)
        finally:
            PHASES[name] = PHASES.get(name, 0.0) + (time.monotonic_ns() - start) / 1e6

    setattr(owner, attr, wrapper)


def _phases() -> int:
    import capguard.run as run  # what `capguard AGENT` imports lazily, imported here to time it
    from capguard import cli
    from capguard.config import identity
    from capguard.config import settings as config
    from capguard.ledger import store
    from capguard.metering import watch
    from capguard.supervisor import supervise

    PHASES["import capguard (cli, run and what they pull in)"] = (time.monotonic_ns() - T0) / 1e6
    _time(config, "load_settings", "load settings (config files)")
    _time(identity, "user", "git config user.email")
    _time(identity, "project", "git rev-parse --show-toplevel")
    _time(run, "open_ledger", "open + migrate the SQLite ledger")
    _time(store.Ledger, "start_run", "ledger: record the run start")
    _time(store.Ledger, "finish_run", "ledger: record the run end")
    _time(supervise.Supervisor, "_spawn", "spawn the agent (fork+exec)")
    _time(supervise.Supervisor, "_loop", "supervise loop (agent running)")
    _time(watch.Watcher, "start", "watchdog observer start")
    _time(watch.Watcher, "stop", "watchdog observer stop + join")
    _time(supervise.Supervisor, "run", "Supervisor.run (spawn to teardown)")
    _time(run, "build_report", "build report")
    _time(run, "write_json", "write report.json")
    _time(run, "run_agent", "run_agent (all of a run after imports)")
    try:
        return cli.main(sys.argv[1:])
    finally:
        PHASES["total in-process"] = (time.monotonic_ns() - T0) / 1e6
        with open(os.environ["BENCH_PHASES"], "w") as handle:
            json.dump(PHASES, handle)


def main() -> int:
    if os.environ.get("BENCH_PHASES"):
        return _phases()
    from capguard import cli
    from capguard.ledger import store
    from capguard.metering import tail, watch
    from capguard.supervisor import proctree, supervise
    from capguard.supervisor import status_board as status

    if os.environ.get("BENCH_WHATIF_FILTER") == "1":
        watch.Watcher._start = _filtered_start
    if not os.environ.get("BENCH_TRACE"):
        return cli.main(sys.argv[1:])
    _wrap(watch._Enqueue, "on_any_event", "inotify_event")  # watchdog's observer thread got the event
    _wrap(tail.Tailer, "read", "tail_read")  # the main loop reads the new lines
    _wrap(store.Ledger, "record_usage", "ledger_write")  # the reply is committed (SQLite, synchronous=FULL)
    _wrap(status.StatusBoard, "update", "status_write")  # status.json (+ title)
    _wrap(supervise.Supervisor, "_finish", "finish")  # the decision to stop was taken
    _wrap(proctree, "descendants", "descendants")  # psutil snapshot of the tree before signalling
    _wrap(proctree, "_signal_popen", "signal_sent")  # os.kill(agent, SIGINT)
    atexit.register(_dump)
    return cli.main(sys.argv[1:])


if __name__ == "__main__":
    sys.exit(main())
