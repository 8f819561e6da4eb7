"""Enforcement latency: from the write of the usage line that crosses the cap to the stop signal.

Each trial runs the real CLI, `python -m capguard --usd 1 aider`, with `[agents.aider] command`
pointing at bench/fake_aider.py (a synthetic aider: see its docstring). The fake takes CLOCK_MONOTONIC
just before the one write(2) of the crossing `message_send` line, and again in its SIGINT handler
(capguard's polite stop for aider is SIGINT). This harness holds a pidfd on the agent and on its two
children (one ignores SIGTERM, one called setsid) and records when each terminates, so it also measures
how long the whole tree takes to go. capguard's start-up (launch -> agent exec -> inotify watch in
place) is measured separately and is not part of the latency: the fake waits until capguard's inotify
watch exists (read from /proc/<capguard>/fdinfo), then a random 0.15-0.65 s, before it crosses.

    python bench/enforcement_latency.py --trials 200 --breakdown 50
"""

from __future__ import annotations

import argparse
import json
import os
import select
import signal
import subprocess
import time
from pathlib import Path

import _common as C

TARGET_P99_MS = 50.0
STAGES = [
    "write -> inotify event reaches capguard (watchdog thread)",
    "inotify event -> main loop starts reading",
    "read starts -> decision to stop (`_finish`)",
    "ledger commit, if before the signal",
    "status.json write, if before the signal",
    "process-tree snapshot, if before the signal",
    "decision -> os.kill(SIGINT)",
    "os.kill -> the agent's SIGINT handler runs",
    "write -> os.kill (capguard's whole reaction)",
]
POLL_WRAPPER_S = 5.0


def write_config(base: Path, fake: Path) -> Path:
    config = base / "capguard.toml"
    config.write_text(f'[agents.aider]\ncommand = "{fake}"\n')
    return config


def make_fake_bin(base: Path, python: str) -> Path:
    """An executable `aider` that execs the synthetic agent (exec: the fake is capguard's direct child)."""
    fake = base / "bin" / "aider"
    fake.parent.mkdir(parents=True, exist_ok=True)
    fake.write_text(f'#!/bin/sh\nexec {python} -I {C.BENCH / "fake_aider.py"} "$@"\n')
    fake.chmod(0o755)
    return fake


def wait_file(path: Path, proc: subprocess.Popen, timeout: float) -> dict | None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            return json.loads(path.read_text())
        except (FileNotFoundError, ValueError):
            if proc.poll() is not None:
                return None
            time.sleep(0.0005)
    return None


def watch_exits(pids: list[int], proc: subprocess.Popen, timeout: float) -> tuple[dict[int, int], int | None]:
    """CLOCK_MONOTONIC ns at which each pid terminated (pidfd readable), and when capguard exited."""
    fds: dict[int, int] = {}
    gone: dict[int, int] = {}
    poller = select.poll()
    for pid in pids:
        try:
            fd = os.pidfd_open(pid)
        except ProcessLookupError:
            gone[pid] = time.monotonic_ns()  # already gone before we looked (not expected)
            continue
        fds[fd] = pid
        poller.register(fd, select.POLLIN)
    cg_fd = os.pidfd_open(proc.pid)
    poller.register(cg_fd, select.POLLIN)
    cg_gone = None
    deadline = time.monotonic() + timeout
    try:
        while (fds or cg_gone is None) and time.monotonic() < deadline:
            for fd, _ in poller.poll(100):
                now = time.monotonic_ns()
                poller.unregister(fd)
                if fd == cg_fd:
                    cg_gone = now
                else:
                    gone[fds.pop(fd)] = now
                    os.close(fd)
        for fd, pid in fds.items():  # survivors: stop them ourselves (through the pidfd: no pid reuse)
            try:
                signal.pidfd_send_signal(fd, signal.SIGKILL)
            except ProcessLookupError:
                pass
            os.close(fd)
    finally:
        os.close(cg_fd)
    return gone, cg_gone


def one_trial(i: int, base: Path, env: dict, config: Path, repo: Path, args, *, instrumented: bool) -> dict:
    result = base / "trials" / f"{'b' if instrumented else 'w' if i < 0 else 't'}{abs(i):04d}.json"
    result.parent.mkdir(exist_ok=True)
    trace = result.with_suffix(".trace.json")
    for stale in (result, Path(f"{result}.ready"), trace):
        stale.unlink(missing_ok=True)
    env = dict(
        env,
        BENCH_RESULT=str(result),
        CAPGUARD_CONFIG=str(config),
        BENCH_PAUSE=args.pause,
        BENCH_TREE="0" if args.no_tree else "1",
    )
    if instrumented:
        env["BENCH_TRACE"] = str(trace)
    if args.whatif_filter:
        env["BENCH_WHATIF_FILTER"] = "1"
    entry = [str(C.BENCH / "_instrumented.py")] if instrumented or args.whatif_filter else ["-m", "capguard"]
    argv = [args.python, *entry, "--usd", str(args.usd), *args.capguard_arg, "aider"]
    stderr = open(base / "capguard.stderr", "a")
    t_launch = time.monotonic_ns()
    proc = subprocess.Popen(argv, cwd=repo, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=stderr)
    trial: dict = {"i": i}
    try:
        ready = wait_file(Path(f"{result}.ready"), proc, 20)
        if ready is None:
            trial["error"] = "the fake agent never started"
            return trial
        gone, cg_gone = watch_exits(ready["pids"], proc, 60)
        trial["rc"] = proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        stderr.close()
    try:
        state = json.loads(result.read_text())
    except (FileNotFoundError, ValueError):
        trial["error"] = "no result from the fake agent"
        return trial
    if "t_signal_ns" not in state:
        trial["error"] = state.get("error", "no signal")
        return trial
    t_write = state["t_write_ns"]
    agent_pid = state["pid"]
    trial.update(
        {
            "signal_ms": (state["t_signal_ns"] - t_write) / 1e6,
            "agent_gone_ms": (gone[agent_pid] - t_write) / 1e6 if agent_pid in gone else None,
            "tree_gone_ms": (max(gone.values()) - t_write) / 1e6 if len(gone) == len(ready["pids"]) else None,
            "survivors": len(ready["pids"]) - len(gone),
            "capguard_exit_ms": (cg_gone - t_write) / 1e6 if cg_gone else None,
            "startup_exec_ms": (state["t_exec_ns"] - t_launch) / 1e6,
            "startup_watch_ms": (state["t_watch_ns"] - t_launch) / 1e6 if state.get("t_watch_ns") else None,
            "watch_found": state.get("t_watch_ns") is not None,
            "pause_s": state["pause_s"],
        }
    )
    if instrumented and trace.exists():
        trial["stages_ms"] = stages(json.loads(trace.read_text()), t_write, state["t_signal_ns"])
    return trial


def stages(trace: list, t_write: int, t_handler: int) -> dict:
    """Durations (ms) of the steps from the crossing write to the signal, following the causal chain.

    The trace holds every call (status updates on each tick, earlier replies...), so each step is the one
    that led to the stop: the first `os.kill` after the write, the `_finish` before it, the read before
    that, the first inotify callback after the write. Ledger, status and snapshot count only when they ran
    between the read and the signal (capguard at 43a819b and later does them after the signal).
    """

    def first(name, phase, after):
        return next((t for n, p, t, _ in trace if n == name and p == phase and t >= after), None)

    def last(name, phase, before, after=t_write):
        found = [t for n, p, t, _ in trace if n == name and p == phase and after <= t <= before]
        return found[-1] if found else None

    sent = first("signal_sent", "start", t_write)
    if sent is None:
        return {}
    finish = last("finish", "start", sent)
    read = last("tail_read", "start", finish) if finish else None
    event = first("inotify_event", "start", t_write)
    out = {}

    def put(i, a, b):
        if a is not None and b is not None:
            out[STAGES[i]] = (b - a) / 1e6

    put(0, t_write, event)
    put(1, event, read)
    put(2, read, finish)
    for i, name in ((3, "ledger_write"), (4, "status_write"), (5, "descendants")):
        begin = last(name, "start", sent, read or t_write)
        end = last(name, "end", sent, begin) if begin else None
        put(i, begin, end)
        if begin is None:
            out[STAGES[i]] = 0.0  # not on the path to the signal
    put(6, finish, sent)
    put(7, sent, t_handler)
    put(8, t_write, sent)
    return out


def fmt(stat: dict) -> str:
    return (
        f"p50 {stat['p50']:.1f}  p90 {stat['p90']:.1f}  p99 {stat['p99']:.1f}  max {stat['max']:.1f}  (n={stat['n']})"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trials", type=int, default=200)
    parser.add_argument(
        "--warmup",
        type=int,
        default=2,
        metavar="N",
        help="trials run first and reported apart (the first creates the ledger and warms the page cache)",
    )
    parser.add_argument(
        "--breakdown",
        type=int,
        default=0,
        metavar="N",
        help="then N trials through bench/_instrumented.py, timing each step inside capguard",
    )
    parser.add_argument("--usd", default="1")
    parser.add_argument("--pause", default="0.15,0.65", help="random pause lo,hi (s) between watch-ready and crossing")
    parser.add_argument("--no-tree", action="store_true", help="no children: the agent alone")
    parser.add_argument("--capguard-arg", action="append", default=[], help="extra capguard option (repeatable)")
    parser.add_argument(
        "--whatif-filter",
        action="store_true",
        help="what-if, not the shipped code: watchdog observer with an event_filter (see _instrumented.py)",
    )
    parser.add_argument("--python", default=C.CG_PYTHON)
    parser.add_argument("--name", default="enforcement_latency", help="result name under bench/.work/results")
    args = parser.parse_args()

    machine_before = C.machine()
    base, env = C.isolated_env(args.name)
    fake = make_fake_bin(base, args.python)
    config = write_config(base, fake)
    repo = C.make_git_repo(base / "repo", env)
    print(
        f"{args.trials} trials (+{args.breakdown} instrumented); load average {machine_before['loadavg']}", flush=True
    )

    trials, failures = [], []
    started = time.monotonic()
    warmup = [one_trial(-1 - i, base, env, config, repo, args, instrumented=False) for i in range(args.warmup)]
    for i in range(args.trials):
        trial = one_trial(i, base, env, config, repo, args, instrumented=False)
        (failures if "error" in trial else trials).append(trial)
        if (i + 1) % 20 == 0:
            done = [t["signal_ms"] for t in trials]
            print(
                f"  {i + 1}/{args.trials}: signal p50 {C.percentile(done, 50):.1f} ms, max {max(done):.1f} ms"
                f"  [{time.monotonic() - started:.0f}s, load {C.loadavg()}]",
                flush=True,
            )
    breakdown = []
    for i in range(args.breakdown):
        trial = one_trial(i, base, env, config, repo, args, instrumented=True)
        if "error" not in trial:
            breakdown.append(trial)
        else:
            failures.append(trial)

    def col(name, rows=trials):
        return [t[name] for t in rows if t.get(name) is not None]

    data = {
        "benchmark": "enforcement_latency",
        "command": C.command_line(),
        "machine": machine_before,
        "loadavg_after": C.loadavg(),
        "code_after": C.code_fingerprint(),
        "code_changed": C.code_changes(machine_before.get("code_files")),
        "duration_s": round(time.monotonic() - started, 1),
        "settings": {
            "usd_cap": args.usd,
            "pause": args.pause,
            "tree": not args.no_tree,
            "capguard_args": args.capguard_arg,
            "whatif_filter": args.whatif_filter,
            "pythondontwritebytecode": env.get("PYTHONDONTWRITEBYTECODE"),
        },
        "target_p99_ms": TARGET_P99_MS,
        "signal_ms": C.summary(col("signal_ms")),
        "agent_gone_ms": C.summary(col("agent_gone_ms")),
        "tree_gone_ms": C.summary(col("tree_gone_ms")),
        "capguard_exit_ms": C.summary(col("capguard_exit_ms")),
        "startup_exec_ms": C.summary(col("startup_exec_ms")),
        "startup_watch_ms": C.summary(col("startup_watch_ms")),
        "watch_not_found": sum(1 for t in trials if not t["watch_found"]),
        "survivors": sum(t["survivors"] for t in trials),
        "exit_codes": {
            str(rc): sum(1 for t in trials if t.get("rc") == rc)
            for rc in sorted({t.get("rc") for t in trials}, key=str)
        },
        "failures": failures,
        "warmup_signal_ms": [round(t["signal_ms"], 1) for t in warmup if "signal_ms" in t],
        "over_target": sorted(
            (round(t["signal_ms"], 1) for t in trials if t["signal_ms"] > TARGET_P99_MS), reverse=True
        ),
        "trials": trials,
    }
    if breakdown:
        keys = [k for k in STAGES if any(k in t.get("stages_ms", {}) for t in breakdown)]
        data["breakdown"] = {
            "n": len(breakdown),
            "signal_ms": C.summary(col("signal_ms", breakdown)),
            "stages_ms": {
                k: C.summary([t["stages_ms"][k] for t in breakdown if k in t.get("stages_ms", {})]) for k in keys
            },
            "trials": breakdown,
        }
    path = C.save(args.name, data)

    print(f"\ncrossing write -> SIGINT at the agent (ms): {fmt(data['signal_ms'])}   target p99 <= {TARGET_P99_MS:g}")
    print(f"crossing write -> agent exited (ms):        {fmt(data['agent_gone_ms'])}")
    print(f"crossing write -> whole tree gone (ms):     {fmt(data['tree_gone_ms'])}")
    print(f"crossing write -> capguard exited (ms):     {fmt(data['capguard_exit_ms'])}")
    print(f"start-up, launch -> agent exec (ms):        {fmt(data['startup_exec_ms'])}")
    print(f"start-up, launch -> inotify watch (ms):     {fmt(data['startup_watch_ms'])}")
    print(
        f"survivors: {data['survivors']}  failures: {len(failures)}  exit codes: {data['exit_codes']}"
        f"  warm-up trials (not counted): {data['warmup_signal_ms']} ms"
    )
    if breakdown:
        print(f"\nbreakdown over {len(breakdown)} instrumented trials (ms after the crossing write, p50 / p99):")
        for key, stat in data["breakdown"]["stages_ms"].items():
            print(f"  {key:58s} {stat['p50']:8.2f} {stat['p99']:8.2f}")
    print(f"\nresults: {path}")
    import render_results

    render_results.main()


if __name__ == "__main__":
    main()
