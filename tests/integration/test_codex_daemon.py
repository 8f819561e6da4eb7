"""The Codex daemon clean-up at a stop: a daemon this run started (a descendant of capguard, named in Codex's pid
file or running as `app-server`) gets SIGINT, the one signal a running daemon obeys; one the user started before
the run is never touched."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import psutil

from capguard.agents.codex.adapter import _daemons, stop_own_daemons

# stands in for `codex app-server ... --managed-daemon`: exits on SIGINT only (it ignores SIGTERM, as the daemon does)
DAEMON = (
    "import signal, sys, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
    "signal.signal(signal.SIGINT, lambda *a: sys.exit(7)); time.sleep(60)"
)


def spawn(*marker: str) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", DAEMON, *marker], start_new_session=True)
    time.sleep(0.3)  # its handlers are installed
    return proc


def write_pid(home, name: str, proc: subprocess.Popen) -> None:
    folder = home / "app-server-daemon"
    folder.mkdir(parents=True, exist_ok=True)
    started = psutil.Process(proc.pid).create_time()
    (folder / name).write_text(json.dumps({"pid": proc.pid, "processStartTime": int(started * 1000)}))


def test_only_a_daemon_of_this_run_is_stopped(tmp_path):
    users = spawn("app-server", "--managed-daemon")  # there before the run (a child here too: worst case)
    write_pid(tmp_path, "daemon.pid", users)
    before = _daemons(tmp_path)
    ours = spawn("app-server", "--managed-daemon")
    updater = spawn("app-server", "daemon", "pid-update-loop")
    write_pid(tmp_path, "daemon.pid", ours)
    write_pid(tmp_path, "daemon-updater.pid", updater)
    unrelated = spawn("something-else")
    try:
        stopped = stop_own_daemons(tmp_path, before)
        assert sorted(stopped) == sorted([ours.pid, updater.pid])
        assert ours.wait(10) == 7 and updater.wait(10) == 7  # SIGINT
        time.sleep(0.3)
        assert users.poll() is None and unrelated.poll() is None
    finally:
        for proc in (users, ours, updater, unrelated):
            if proc.poll() is None:
                os.kill(proc.pid, 9)
                proc.wait()
