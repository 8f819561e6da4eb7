"""Wraps an agent: starts a child that escapes the usual sweeps, then execs the agent in its place.

CAPGUARD_TEST_ESCAPE says which: "double-fork" (a grandchild in a session of its own whose parent has exited,
as a daemon does), "fork-chain" (a process that ignores SIGTERM, forks a child and exits every millisecond, so no pid lives long;
bounded to 20,000 generations or 20 s, so it can never run away) or "none". Each writes lines to $CAPGUARD_TEST_CHILDREN:
"escaped PID", "chain-start PID", and "chain-end" if a chain ran out by itself (nobody stopped it).
"""

import os
import signal
import sys
import time

GENERATIONS, SECONDS = 20_000, 20.0


def note(text: str) -> None:
    with open(os.environ["CAPGUARD_TEST_CHILDREN"], "a") as out:
        out.write(text + "\n")


def double_fork() -> None:
    middle = os.fork()
    if middle:
        os.waitpid(middle, 0)  # it exits at once: the grandchild is an orphan
        return
    os.setsid()
    if os.fork():
        os._exit(0)
    note(f"escaped {os.getpid()}")
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        time.sleep(0.2)
    os._exit(0)


def fork_chain() -> None:
    if os.fork():
        return
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):  # only SIGKILL stops it, and only if it lands
        signal.signal(sig, signal.SIG_IGN)
    deadline = time.monotonic() + SECONDS
    note(f"chain-start {os.getpid()}")
    for _ in range(GENERATIONS):
        time.sleep(0.001)
        if time.monotonic() > deadline:
            break
        try:
            if os.fork():
                os._exit(0)  # the parent goes; its child carries on with a new pid
        except OSError:
            os._exit(1)
    note("chain-end")
    os._exit(0)


if __name__ == "__main__":
    {"double-fork": double_fork, "fork-chain": fork_chain, "none": lambda: None}[os.environ["CAPGUARD_TEST_ESCAPE"]]()
    real = os.environ["CAPGUARD_TEST_REAL_AGENT"]
    os.execv(real, [real, *sys.argv[1:]])
