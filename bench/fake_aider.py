"""A synthetic aider for bench/enforcement_latency.py: writes aider's analytics lines, times the stop.

It accepts the `--analytics-log PATH` capguard adds (other arguments are ignored) and behaves like
aider 0.86.2 as far as capguard can see: `launched`, `repo`, `message_send_starting` and `message_send`
JSON lines in aider's exact format (shared/fixtures/aider/analytics.nostream.jsonl).

One trial:
  1. write `ready` (pids of itself and its children) to $BENCH_RESULT.ready;
  2. spawn the tree: a child that ignores SIGTERM and a child in its own session (setsid);
  3. write a first reply under the cap, wait until capguard's inotify watch on the log's folder exists
     (read from /proc/<capguard>/fdinfo), write `message_send_starting`, then pause a random time so
     the crossing write lands at a random phase of capguard's loop;
  4. take CLOCK_MONOTONIC (time.monotonic_ns, the same clock in every process on Linux) and write the
     reply that crosses the cap in one write(2);
  5. the SIGINT handler (capguard's polite stop for aider is SIGINT) takes the clock on the first signal,
     writes $BENCH_RESULT and exits.

Environment: BENCH_RESULT (required), BENCH_CROSS_USD (cost of the crossing reply, default 2.0),
BENCH_WARM_USD (cost of the first reply, default 0.1), BENCH_PAUSE ("lo,hi" seconds, default
"0.15,0.65"), BENCH_TREE ("1" to spawn the two children, default "1").
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time

USER_ID = "c437d6e6-5566-421c-a863-779f9bd73a15"


def line(event: str, properties: dict) -> bytes:
    # the key order and separators of aider's own analytics log (json.dumps defaults)
    return (
        json.dumps({"event": event, "properties": properties, "user_id": USER_ID, "time": int(time.time())}) + "\n"
    ).encode()


def reply(cost: float, total: float) -> bytes:
    return line(
        "message_send",
        {
            "main_model": "openai/REDACTED",
            "weak_model": "None",
            "editor_model": "openai/REDACTED",
            "edit_format": "diff",
            "prompt_tokens": 50000,
            "completion_tokens": 2000,
            "total_tokens": 52000,
            "cost": cost,
            "total_cost": total,
        },
    )


def option(argv: list[str], name: str) -> str | None:
    for i, arg in enumerate(argv):
        if arg == name and i + 1 < len(argv):
            return argv[i + 1]
        if arg.startswith(name + "="):
            return arg[len(name) + 1 :]
    return None


def inotify_watches(pid: int) -> set[int]:
    """Inode numbers watched by any inotify descriptor of `pid` (fdinfo lines `inotify wd:.. ino:HEX ..`)."""
    found: set[int] = set()
    try:
        fds = os.listdir(f"/proc/{pid}/fdinfo")
    except OSError:
        return found
    for fd in fds:
        try:
            with open(f"/proc/{pid}/fdinfo/{fd}") as handle:
                for text in handle:
                    if text.startswith("inotify wd:"):
                        for part in text.split():
                            if part.startswith("ino:"):
                                found.add(int(part[4:], 16))
        except OSError:
            continue
    return found


def wait_for_watch(folder: str, timeout: float) -> float | None:
    """Seconds until capguard (our parent) watches `folder` with inotify; None if it never did."""
    ino = os.stat(folder).st_ino
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if ino in inotify_watches(os.getppid()):
            return time.monotonic() - start
        time.sleep(0.002)
    return None


def main() -> None:
    t_exec = time.monotonic_ns()
    result_path = os.environ["BENCH_RESULT"]
    state: dict = {"t_exec_ns": t_exec, "pid": os.getpid(), "ppid": os.getppid(), "argv": sys.argv[1:]}

    def on_sigint(signum, frame):
        now = time.monotonic_ns()
        if "t_signal_ns" in state:
            return
        state["t_signal_ns"] = now
        state["signal"] = signum
        tmp = result_path + ".tmp"
        with open(tmp, "w") as handle:
            json.dump(state, handle)
        os.replace(tmp, result_path)
        os._exit(0)  # the children stay behind: capguard must find and stop them

    signal.signal(signal.SIGINT, on_sigint)
    log_path = option(sys.argv[1:], "--analytics-log")
    if log_path is None:
        state["error"] = "no --analytics-log given"
        with open(result_path, "w") as handle:
            json.dump(state, handle)
        sys.exit(2)

    children = []
    if os.environ.get("BENCH_TREE", "1") == "1":
        # a child that ignores SIGTERM (SIG_IGN survives exec) and one that left our session
        children.append(subprocess.Popen(["sh", "-c", "trap '' TERM; exec sleep 600"]))
        children.append(subprocess.Popen(["sleep", "600"], start_new_session=True))
    state["children"] = [c.pid for c in children]
    with open(result_path + ".ready.tmp", "w") as handle:
        json.dump({"pids": [os.getpid(), *state["children"]], "t_exec_ns": t_exec}, handle)
    os.replace(result_path + ".ready.tmp", result_path + ".ready")

    fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    warm = float(os.environ.get("BENCH_WARM_USD", "0.1"))
    cross = float(os.environ.get("BENCH_CROSS_USD", "2.0"))
    os.write(fd, line("launched", {}))
    os.write(fd, line("repo", {"num_files": 1}))
    os.write(fd, line("auto_commits", {"enabled": False}))
    os.write(fd, line("message_send_starting", {}))
    os.write(fd, reply(warm, warm))

    waited = wait_for_watch(os.path.dirname(os.path.abspath(log_path)), timeout=10.0)
    state["watch_wait_s"] = waited
    state["t_watch_ns"] = time.monotonic_ns() if waited is not None else None
    lo, hi = (float(x) for x in os.environ.get("BENCH_PAUSE", "0.15,0.65").split(","))
    pause = random.uniform(lo, hi)
    state["pause_s"] = pause
    os.write(fd, line("message_send_starting", {}))  # the request goes out; its reply comes `pause` later
    time.sleep(pause)
    crossing = reply(cross, warm + cross)
    state["t_write_ns"] = time.monotonic_ns()
    os.write(fd, crossing)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        time.sleep(0.5)  # a signal interrupts the sleep at once; the handler exits
    state["error"] = "no SIGINT within 30 s"
    with open(result_path, "w") as handle:
        json.dump(state, handle)
    sys.exit(3)


if __name__ == "__main__":
    main()
