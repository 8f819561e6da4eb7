"""Claude Code's statusLine command under capguard: records Claude's live cost, shows spend against caps.

Run by Claude Code on each status refresh with a JSON document on stdin. Stdlib only, so it starts fast.
Usage: python -m capguard.agents.claude.statusline RUN_DIR [USER_COMMAND]
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path


def _total(data: bytes) -> bytes | None:
    """The session and its live total (all capguard reads of the document), or None if it cannot tell."""
    try:
        doc = json.loads(data)
        return json.dumps([doc["session_id"], doc["cost"]["total_cost_usd"]]).encode()
    except (ValueError, TypeError, KeyError, RecursionError):
        return None


def _append(path: Path, data: bytes) -> None:
    """One JSON document per line for capguard's tailer; a timer's refresh with the same total adds no line (its
    `.last` file keeps the last total appended), so an idle session does not grow the file."""
    total, last = _total(data), path.with_suffix(".last")
    if total is not None:
        try:
            if last.read_bytes() == total:
                return
        except OSError:
            pass
    line = b" ".join(data.split()) + b"\n"
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.write(fd, line)
    finally:
        os.close(fd)
    if total is not None:
        fd = os.open(last, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(fd, total)
        finally:
            os.close(fd)


def _ours(run_dir: Path) -> str:
    try:
        status = json.loads((run_dir / "status.json").read_text())
    except (OSError, ValueError):
        return "capguard"
    mark = "⚠ " if status.get("warnings") else ""
    return f"{mark}capguard {status.get('summary', '')}".rstrip()


def _chained(command: str, data: bytes) -> str:
    try:
        done = subprocess.run(["/bin/sh", "-c", command], input=data, capture_output=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return ""
    return done.stdout.decode("utf-8", "replace").rstrip("\n")


def main(argv: list[str]) -> int:
    if not argv:
        print("usage: python -m capguard.agents.claude.statusline RUN_DIR [USER_COMMAND]", file=sys.stderr)
        return 2
    run_dir = Path(argv[0])
    data = sys.stdin.buffer.read()
    if data.strip():
        try:
            _append(run_dir / "claude.statusline.jsonl", data)
        except OSError:
            pass
    theirs = _chained(argv[1], data) if len(argv) > 1 and argv[1] else ""
    print(f"{_ours(run_dir)}  {theirs}".rstrip() if theirs else _ours(run_dir))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
