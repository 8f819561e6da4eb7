"""Wraps a real agent: starts two hard-to-kill helpers, then execs the agent in its place.

One helper ignores SIGTERM (and SIGINT); the other calls setsid, leaving the agent's session and process
group, as Claude Code's Bash tool does. Both are the agent's children once it execs, and both write their
pid to $CAPGUARD_TEST_CHILDREN so a test can check they are gone.
"""

import os
import signal
import sys
import time


def spawn(kind: str) -> None:
    pid = os.fork()
    if pid:
        return
    if kind == "stubborn":
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
    else:
        os.setsid()
    with open(os.environ["CAPGUARD_TEST_CHILDREN"], "a") as out:
        out.write(f"{kind} {os.getpid()}\n")
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        time.sleep(0.2)
    os._exit(0)


if __name__ == "__main__":
    spawn("stubborn")
    spawn("setsid")
    real = os.environ["CAPGUARD_TEST_REAL_AGENT"]
    os.execv(real, [real, *sys.argv[1:]])
