"""A stand-in for aider that writes analytics lines at a controlled pace; for fast supervisor tests.

Takes `--analytics-log PATH` like aider and ignores other arguments. Behaviour from the environment:
FAKE_REPLIES (count), FAKE_INTERVAL (s between replies), FAKE_COST (USD a reply), FAKE_TOKENS (prompt tokens),
FAKE_MALFORMED (garbage lines to write first), FAKE_IGNORE (signals to ignore: "INT,TERM,HUP"),
FAKE_EXIT (exit status at the end), FAKE_IDLE (seconds to sit idle after the replies),
FAKE_STARTED (a file to create at start, holding the pid), FAKE_GO (a file to wait for before the first reply).
"""

import json
import os
import signal
import sys
import time


def main() -> int:
    args = sys.argv[1:]
    log = args[args.index("--analytics-log") + 1] if "--analytics-log" in args else os.devnull
    for name in filter(None, os.environ.get("FAKE_IGNORE", "").split(",")):
        signal.signal(getattr(signal, "SIG" + name), signal.SIG_IGN)
    if os.environ.get("FAKE_STARTED"):
        with open(os.environ["FAKE_STARTED"] + ".tmp", "w") as marker:
            marker.write(str(os.getpid()))
        os.replace(os.environ["FAKE_STARTED"] + ".tmp", os.environ["FAKE_STARTED"])  # complete when it appears
    while os.environ.get("FAKE_GO") and not os.path.exists(os.environ["FAKE_GO"]):
        time.sleep(0.01)
    with open(log, "a") as out:
        for _ in range(int(os.environ.get("FAKE_MALFORMED", "0"))):
            out.write('{"event": "message_send", "properties": {"prompt_tokens": "lots"}}\n{not json\n')
            out.flush()
        total = 0.0
        for _ in range(int(os.environ.get("FAKE_REPLIES", "0"))):
            out.write(json.dumps({"event": "message_send_starting", "properties": {}, "time": int(time.time())}) + "\n")
            out.flush()
            time.sleep(float(os.environ.get("FAKE_INTERVAL", "0.05")))
            cost = float(os.environ.get("FAKE_COST", "0.1"))
            total += cost
            tokens = int(os.environ.get("FAKE_TOKENS", "1000"))
            props = {
                "main_model": "openai/gpt-4o",
                "prompt_tokens": tokens,
                "completion_tokens": 10,
                "total_tokens": tokens + 10,
                "cost": cost,
                "total_cost": total,
            }
            out.write(json.dumps({"event": "message_send", "properties": props, "time": int(time.time())}) + "\n")
            out.flush()
    deadline = time.monotonic() + float(os.environ.get("FAKE_IDLE", "0"))
    while time.monotonic() < deadline:
        time.sleep(0.05)
    if os.environ.get("FAKE_EXIT") == "segv":
        signal.signal(signal.SIGSEGV, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGSEGV)
    return int(os.environ.get("FAKE_EXIT", "0"))


if __name__ == "__main__":
    sys.exit(main())
