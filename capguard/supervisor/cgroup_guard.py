"""The cgroup guard: waits for capguard's pipe to close, then kills and removes the run's cgroup.

Run as a script (python -I -S cgroup_guard.py CGROUP_DIR) outside the cgroup; stdlib only, so it starts fast.
"""

import os
import sys
import time


def populated(path: str) -> bool:
    try:
        with open(os.path.join(path, "cgroup.events")) as events:
            return "populated 1" in events.read()
    except FileNotFoundError:
        return False
    except OSError:
        return True


def finish(path: str) -> None:
    """Kill what is inside (nothing, after a normal end: capguard removed it), wait until empty, remove."""
    if not os.path.isdir(path):
        return
    if populated(path):
        try:
            with open(os.path.join(path, "cgroup.kill"), "w") as kill:
                kill.write("1")
        except OSError:
            return
        deadline = time.monotonic() + 10
        while populated(path) and time.monotonic() < deadline:
            time.sleep(0.01)
    for root, dirs, _ in sorted(os.walk(path), key=lambda entry: -entry[0].count(os.sep)):
        for name in dirs:
            try:
                os.rmdir(os.path.join(root, name))
            except OSError:
                pass
    try:
        os.rmdir(path)
    except OSError:
        pass  # still busy: the next capguard start removes it


if __name__ == "__main__":
    try:
        while sys.stdin.buffer.read(4096):  # nothing is ever sent: only EOF matters, whoever closed the pipe
            pass
    except (OSError, KeyboardInterrupt):
        pass
    finish(sys.argv[1])
