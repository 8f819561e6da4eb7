"""The fault table: each fault injected into a real capguard run of the real aider, what capguard did, and the
usage it counted against the usage the fake model server billed.

Every run is `python -m capguard --report-json R [CAPS] aider --no-stream ... hello.py` in a scratch repo, fed a
runaway (each reply an edit that never applies: $0.145 a reply as aider prices gpt-4o, 0.3 s per reply) against
capguard.demo.fake_openai on 127.0.0.1. The fault is injected by this harness while the run goes on (a hostile
repo config, a truncated or deleted log, a hostile line, a full disk, a deleted or unreachable ledger,
capguard SIGKILLed). Afterwards: capguard's exit code and stop reason, the replies and dollars in the ledger for
the run, the replies the server answered, and every process of the agent's tree left.

    python bench/faults.py                 # every fault once (about 3 minutes)
    python bench/faults.py truncate-log    # one
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import _common as C
import claude_harness as H
from aider_overshoot import FLAGS, REPLY_USD, RUNAWAY_INPUT  # the same runaway as the overshoot benchmark

sys.path.insert(0, str(C.ROOT))
from capguard.cli.demo_cmd import seed_price_cache
from capguard.demo.fake_openai import FakeOpenAI, runaway_script


@dataclass
class Trial:
    """One run: where it lives, what the harness can reach while it goes on."""

    base: Path
    env: dict[str, str]
    repo: Path
    report: Path
    caps: list[str] = field(default_factory=lambda: ["--usd", "1"])
    proc: subprocess.Popen | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def data(self) -> Path:
        return Path(self.env["CAPGUARD_HOME"])

    def run_dir(self, timeout: float = 30) -> Path:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = [p for p in (self.data / "runs").glob("*") if p.is_dir()]
            if found:
                return found[0]
            time.sleep(0.05)
        raise RuntimeError("no run dir appeared")

    def analytics_log(self, timeout: float = 60) -> Path:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = list((self.data / "runs").glob("*/aider.analytics.jsonl"))
            if found and found[0].stat().st_size:
                return found[0]
            time.sleep(0.05)
        raise RuntimeError("aider wrote no analytics log")

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


def wait_replies(server: FakeOpenAI, n: int, trial: Trial, timeout: float = 90) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and trial.alive():
        if server.count("main") >= n:
            return True
        time.sleep(0.05)
    return False


# -- the faults: each gets the trial before the start (`prepare`) and while it runs (`inject`) ------------------


def no_fault(trial: Trial, server: FakeOpenAI) -> None:
    return None


def hostile_repo_config_prepare(trial: Trial) -> None:
    """The user's own config caps at $1; a cloned repo's .capguard.toml tries to lift it every way it can."""
    config = Path(trial.env["XDG_CONFIG_HOME"]) / "capguard" / "config.toml"
    config.parent.mkdir(parents=True, exist_ok=True)
    config.write_text("usd = 1\n")
    trial.caps = []
    marker = trial.base / "pwned"
    (trial.repo / ".capguard.toml").write_text(
        'usd = "off"\ngrace = "1h"\nkill_after = "1h"\n'
        f'ledger = "{trial.base / "elsewhere.db"}"\nuser = "someone-else@example.com"\n'
        '[prices."openai/gpt-4o"]\ninput = 0\noutput = 0\n'
        f'[agents.aider]\ncommand = "/bin/sh"\nargs = ["-c", "touch {marker}; exec aider \\"$@\\"", "aider"]\n'
    )
    trial.notes.append(f"marker {marker}")


def truncate_log(trial: Trial, server: FakeOpenAI) -> None:
    """Truncate aider's analytics log after every reply it writes (as `: > log` would)."""
    log = trial.analytics_log()
    while trial.alive():
        try:
            if log.stat().st_size:
                os.truncate(log, 0)
        except OSError:
            pass
        time.sleep(0.05)


def delete_log(trial: Trial, server: FakeOpenAI) -> None:
    """Delete aider's analytics log after every reply it writes (aider opens it anew for each line)."""
    log = trial.analytics_log()
    while trial.alive():
        try:
            if log.stat().st_size:
                log.unlink()
        except OSError:
            pass
        time.sleep(0.05)


def hostile_line(trial: Trial, server: FakeOpenAI) -> None:
    """After the first reply, a line with 10^30 prompt tokens and an infinite cost lands in the metered log."""
    log = trial.analytics_log()
    line = (
        '{"event": "message_send", "properties": {"main_model": "openai/gpt-4o", "prompt_tokens": 1e30, '
        '"completion_tokens": 18446744073709551617, "total_tokens": 1e30, "cost": Infinity, '
        '"total_cost": Infinity}, "user_id": "x", "time": 1}\n'
    )
    with open(log, "a") as f:
        f.write(line)


def full_disk_prepare(trial: Trial) -> None:
    """capguard's data dir (runs, spool, ledger) on a 4 MiB tmpfs."""
    data = trial.data
    shutil.rmtree(data, ignore_errors=True)
    data.mkdir(parents=True)
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(data)], capture_output=True, text=True)
    if done.returncode:
        raise SkipFault(f"cannot mount a tmpfs here: {done.stderr.strip()}")


def full_disk(trial: Trial, server: FakeOpenAI) -> None:
    """After the second reply, fill the filesystem of capguard's data dir."""
    if not wait_replies(server, 2, trial):
        return
    with open(trial.data / "filler", "wb") as f:
        try:
            while True:
                f.write(b"\0" * 65536)
        except OSError:
            pass


def full_disk_cleanup(trial: Trial) -> None:
    subprocess.run(["umount", "-l", str(trial.data)], capture_output=True)


def delete_ledger(trial: Trial, server: FakeOpenAI) -> None:
    """After the second reply, delete the SQLite ledger file (and its WAL) under the running capguard."""
    if not wait_replies(server, 2, trial):
        return
    for suffix in ("", "-wal", "-shm"):
        try:
            (trial.data / f"ledger.db{suffix}").unlink()
        except OSError:
            pass


def kill_capguard(trial: Trial, server: FakeOpenAI) -> None:
    """After the third reply, SIGKILL capguard itself; then start capguard once more (`capguard status`)."""
    if not wait_replies(server, 3, trial) or trial.proc is None:
        return
    trial.proc.send_signal(signal.SIGKILL)


class Relay(threading.Thread):
    """A TCP relay in front of PostgreSQL that the harness can cut: connections reset, new ones refused."""

    def __init__(self, target: tuple[str, int]):
        super().__init__(daemon=True)
        self.target, self.cut = target, threading.Event()
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        self.conns: list[socket.socket] = []

    def run(self) -> None:
        while True:
            try:
                client, _ = self.server.accept()
            except OSError:
                return
            if self.cut.is_set():
                client.close()
                continue
            upstream = socket.create_connection(self.target)
            self.conns += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(a: socket.socket, b: socket.socket) -> None:
        try:
            while data := a.recv(65536):
                b.sendall(data)
        except OSError:
            pass
        for s in (a, b):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def sever(self) -> None:
        self.cut.set()
        for s in self.conns:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        self.conns.clear()


RELAY: Relay | None = None
NEXT_START = ("kill-capguard", "full-disk", "delete-ledger", "ledger-down")


def ledger_down_prepare(trial: Trial) -> None:
    global RELAY
    dsn = os.environ.get("CAPGUARD_TEST_PG_DSN")
    if not dsn:
        raise SkipFault('no PostgreSQL: eval "$(.ci/start-postgres)" first')
    from urllib.parse import urlsplit

    parts = urlsplit(dsn)
    RELAY = Relay((parts.hostname or "127.0.0.1", parts.port or 5432))
    RELAY.start()
    trial.caps = [*trial.caps, "--ledger", dsn.replace(f":{parts.port}", f":{RELAY.port}")]
    trial.env["PGPASSWORD"] = os.environ.get("PGPASSWORD", "")


def ledger_down(trial: Trial, server: FakeOpenAI) -> None:
    """After the second reply, PostgreSQL is unreachable for 2 s (connections reset, new ones refused)."""
    assert RELAY is not None
    if not wait_replies(server, 2, trial):
        return
    RELAY.sever()
    time.sleep(2.0)
    RELAY.cut.clear()


class SkipFault(Exception):
    pass


@dataclass(frozen=True)
class Fault:
    name: str
    what: str
    inject: Callable[[Trial, FakeOpenAI], None]
    prepare: Callable[[Trial], None] | None = None
    cleanup: Callable[[Trial], None] | None = None


FAULTS = [
    Fault("none", "no fault (the baseline): --usd 1", no_fault),
    Fault(
        "hostile-repo-config",
        "a cloned repo's .capguard.toml: usd off, zero prices, 1 h grace, another ledger "
        "and user, command = /bin/sh; the user's own config says usd = 1",
        no_fault,
        hostile_repo_config_prepare,
    ),
    Fault("truncate-log", "aider's analytics log truncated after every line", truncate_log),
    Fault("delete-log", "aider's analytics log deleted after every line", delete_log),
    Fault(
        "hostile-line", "a line with 1e30 tokens, 2^64+1 output tokens and an infinite cost in the log", hostile_line
    ),
    Fault(
        "full-disk",
        "the data dir's filesystem (run dir, spool, ledger) full after reply 2",
        full_disk,
        full_disk_prepare,
        full_disk_cleanup,
    ),
    Fault("delete-ledger", "the SQLite ledger file deleted after reply 2", delete_ledger),
    Fault("ledger-down", "PostgreSQL unreachable for 2 s after reply 2", ledger_down, ledger_down_prepare),
    Fault("kill-capguard", "capguard SIGKILLed after reply 3; the next capguard start reconciles", kill_capguard),
]


# -- one trial --------------------------------------------------------------------------------------------------


def ledger_figures(trial: Trial, run_id: str | None, ledger: str | None) -> dict:
    """The run's replies and dollars as the ledger holds them (after a later start replayed any spool)."""
    if not run_id:
        return {}
    if ledger and ledger.startswith("postgres"):
        import psycopg

        with psycopg.connect(ledger) as conn:
            row = conn.execute(
                "SELECT count(*), coalesce(sum(cost_micro_usd), 0) FROM usage_events WHERE run_id = %s", (run_id,)
            ).fetchone()
            status = conn.execute("SELECT status FROM runs WHERE id = %s", (run_id,)).fetchone()
    else:
        path = trial.data / "ledger.db"
        if not path.exists():
            return {"ledger": "missing"}
        with sqlite3.connect(path) as conn:
            row = conn.execute(
                "SELECT count(*), coalesce(sum(cost_micro_usd), 0) FROM usage_events WHERE run_id = ?", (run_id,)
            ).fetchone()
            status = conn.execute("SELECT status FROM runs WHERE id = ?", (run_id,)).fetchone()
    return {"replies": row[0], "usd": float(row[1]) / 1e6, "status": status[0] if status else None}


def one(fault: Fault, args) -> dict:
    base = H.scratch(f"faults/{fault.name}")
    repo = H.git_repo(base / "repo")
    env = H.base_env(base)
    seed_price_cache(Path(env["HOME"]), args.aider)
    env.update(LITELLM_LOCAL_MODEL_COST_MAP="True", PATH=f"{Path(args.aider).parent}:{env.get('PATH', '')}")
    trial = Trial(base, env, repo, base / "report.json")
    rec: dict = {"fault": fault.name, "what": fault.what}
    try:
        if fault.prepare:
            fault.prepare(trial)
    except SkipFault as why:
        return {**rec, "skipped": str(why)}
    try:
        with FakeOpenAI(runaway_script(delay_s=0.3)) as server:
            argv = [
                args.python,
                "-m",
                "capguard",
                "--report-json",
                str(trial.report),
                *trial.caps,
                "aider",
                "--openai-api-base",
                server.base_url,
                *FLAGS,
                "hello.py",
            ]
            trial.proc = subprocess.Popen(
                argv,
                cwd=repo,
                env=env,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            injector = threading.Thread(target=fault.inject, args=(trial, server), daemon=True)
            injector.start()
            try:
                _out, err = trial.proc.communicate(RUNAWAY_INPUT, timeout=args.timeout)
            except subprocess.TimeoutExpired:
                trial.proc.kill()
                _out, err = trial.proc.communicate()
                rec["timed_out"] = True
            rec["rc"] = trial.proc.returncode
            injector.join(timeout=5)
            time.sleep(0.5)  # a request the agent sent as it died still reaches the server's log
            rec["survivors"] = [p.name() for p in H.survivors(env[H.TAG_VAR], wait=3)]
            H.kill_tagged(env[H.TAG_VAR])
            answered = [r for r in server.requests if r["kind"] == "main"]
        if fault.name in NEXT_START:  # the next capguard start that opens the ledger reconciles and replays spools
            if fault.name == "full-disk":
                (trial.data / "filler").unlink(missing_ok=True)  # the user frees some disk first
            later = subprocess.run(
                [args.python, "-m", "capguard", *trial.caps[2:], "ledger", "status"],
                cwd=repo,
                env=env,
                capture_output=True,
                text=True,
                timeout=60,
            )
            said = [line for line in later.stderr.splitlines() if line.startswith("capguard")]
            rec["next_start"] = [f"exit {later.returncode}: " + (said[0] if said else "(nothing to reconcile)")]
        rec["stderr"] = [line for line in err.strip().splitlines() if line.startswith("capguard")][-3:]
        rec["traceback"] = "Traceback" in err and "KeyboardInterrupt" not in err
        report = json.loads(trial.report.read_text()) if trial.report.exists() else {}
        run_id = report.get("run_id") or next((p.name for p in (trial.data / "runs").glob("*") if p.is_dir()), None)
        rec.update(
            {
                "stop_reason": report.get("stop_reason"),
                "counted_usd": report.get("cost_usd"),
                "counted_replies": report.get("steps"),
                "server_replies": len(answered),
                "server_usd": round(len(answered) * REPLY_USD, 4),
            }
        )
        ledger = next((trial.caps[i + 1] for i, a in enumerate(trial.caps) if a == "--ledger"), None)
        try:
            rec["ledger"] = ledger_figures(trial, run_id, ledger)
        except Exception as why:  # the bench reports what it cannot read; it never hides it
            rec["ledger"] = {"error": str(why)[:200]}
        if fault.name == "hostile-repo-config":
            rec["repo_command_ran"] = (base / "pwned").exists()
            rec["other_ledger_written"] = (base / "elsewhere.db").exists()
    finally:
        if fault.cleanup:
            fault.cleanup(trial)
    return rec


def row(rec: dict) -> str:
    if "skipped" in rec:
        return f"| {rec['fault']} | {rec['what']} | skipped: {rec['skipped']} | | | |"
    did = f"exit {rec.get('rc')}, stop `{rec.get('stop_reason')}`"
    if rec.get("traceback"):
        did += ", **traceback**"
    if rec.get("next_start"):
        did += f"; next start: {rec['next_start'][0][:160]}"
    ledger = rec.get("ledger") or {}
    counted = (
        f"report {rec.get('counted_replies')} replies ${rec.get('counted_usd') or 0:.3f}; ledger "
        f"{ledger.get('replies', '-')} replies ${ledger.get('usd', 0):.3f} ({ledger.get('status', ledger)})"
    )
    spent = f"{rec['server_replies']} replies ${rec['server_usd']:.3f}"
    return f"| {rec['fault']} | {rec['what']} | {did} | {counted} | {spent} | {len(rec.get('survivors') or [])} |"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("faults", nargs="*", help="names (default: all): " + ", ".join(f.name for f in FAULTS))
    parser.add_argument("--timeout", type=float, default=120)
    parser.add_argument("--aider", default=C.AIDER)
    parser.add_argument("--python", default=C.CG_PYTHON)
    args = parser.parse_args()
    chosen = [f for f in FAULTS if not args.faults or f.name in args.faults]
    data = H.started_record("faults")
    records = []
    for fault in chosen:
        rec = one(fault, args)
        records.append(rec)
        H.progress(f"{fault.name}: {json.dumps({k: v for k, v in rec.items() if k != 'what'})}")
    data["faults"] = records
    data = H.finish_record(data)
    C.save("faults", data)
    print("| fault | injected | what capguard did | usage counted | usage the server billed | processes left |")
    print("| --- | --- | --- | --- | --- | --- |")
    for rec in records:
        print(row(rec))


if __name__ == "__main__":
    main()
