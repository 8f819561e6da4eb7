"""Shared pieces of the Claude Code / aider benchmarks (claude_runaway.py, claude_idle.py, aider_overshoot.py).

- scratch folders in /tmp (never the work tree: the agents run there), seeded so Claude Code shows no dialog
  (the recipe of tests/integration/test_claude_caps.py);
- the fake model servers run as their own processes (`python -m tests.fakes.fake_anthropic --log ...`), so
  the harness's timing thread never waits for the fake's threads on the GIL;
- a pty whose slave is capguard's controlling terminal (tests/integration/test_aider_tty.py's recipe);
- `Observer`: one thread that blocks in poll(2) on an inotify descriptor (raw inotify through ctypes) and on
  pidfds, and stamps every complete line appended to the files it follows with CLOCK_REALTIME (ns) taken as
  poll() returns, before anything is read. CLOCK_REALTIME because capguard's log (`capguard.log`) stamps
  its lines with logging's `time.time()`; both clocks are the same kernel clock.
"""

from __future__ import annotations

import ctypes
import fcntl
import json
import os
import re
import select
import shutil
import signal
import struct
import subprocess
import sys
import termios
import threading
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path

import _common as C
import psutil

CLAUDE = os.environ.get(
    "CAPGUARD_BENCH_CLAUDE", shutil.which("claude") or str(C.ROOT / ".agents/node_modules/.bin/claude")
)
SCRATCH = Path(os.environ.get("CAPGUARD_BENCH_SCRATCH", "/tmp/capguard-bench"))
KEY = "sk-ant-api03-fake-capguard-bench-AAAAAAAAAAAAAAAAAAAAA"
TAG_VAR = "CAPGUARD_BENCH_TAG"

# claude-opus-5-5 as genai-prices and Claude Code 2.1.330 price it (USD per million tokens): input, output,
# 5-minute cache write, cache read. The fake's default reply (11 in, 40 out, 2,000 cache write, 3,000 cache
# read) is $0.011444 (tests/integration/test_claude_caps.py). Used only to find the crossing line; the
# accuracy figures compare capguard with Claude's own totals, not with these rates.
OPUS_RATES = (4.0, 20.0, 5.0, 0.2)


def reply_usd(usage: dict) -> float:
    i, o, w, r = OPUS_RATES
    return (
        usage.get("input_tokens", 0) * i
        + usage.get("output_tokens", 0) * o
        + usage.get("cache_creation_input_tokens", 0) * w
        + usage.get("cache_read_input_tokens", 0) * r
    ) / 1e6


# ---------------------------------------------------------------------------------------------- scratch


def scratch(name: str, *, fresh: bool = True) -> Path:
    base = SCRATCH / name
    if fresh and base.exists():
        shutil.rmtree(base)
    base.mkdir(parents=True, exist_ok=True)
    return base


def base_env(base: Path) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("CAPGUARD_", "AIDER_", "OPENAI_", "ANTHROPIC_", "OTEL_", "CLAUDE_"))
    }
    for sub in ("home", "capguard", "xdg", "xdg-data"):
        (base / sub).mkdir(parents=True, exist_ok=True)
    env.update(
        {
            "HOME": str(base / "home"),
            "CAPGUARD_HOME": str(base / "capguard"),
            "XDG_CONFIG_HOME": str(base / "xdg"),
            "XDG_DATA_HOME": str(base / "xdg-data"),
            "CAPGUARD_TITLE": "false",
            "TZ": "UTC",  # capguard.log's asctime is local time: make it UTC so the harness can read it back
            TAG_VAR: uuid.uuid4().hex,
        }
    )
    return env


def git_repo(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    (path / "hello.py").write_text('def greet():\n    return "helo"\n')
    git = ["git", "-c", "user.name=bench", "-c", "user.email=bench@example.invalid"]
    subprocess.run(["git", "init", "-q"], cwd=path, check=True)
    subprocess.run([*git, "add", "-A"], cwd=path, check=True)
    subprocess.run([*git, "commit", "-qm", "init"], cwd=path, check=True)
    return path


def claude_env(base: Path, repo: Path, base_url: str) -> dict[str, str]:
    """Environment for `capguard claude` in `repo`: scratch HOME and CLAUDE_CONFIG_DIR seeded so no dialog shows."""
    env = base_env(base)
    config = base / "home" / ".claude"
    config.mkdir(parents=True, exist_ok=True)
    (config / ".claude.json").write_text(
        json.dumps(
            {
                "hasCompletedOnboarding": True,
                "lastOnboardingVersion": "2.1.330",
                "theme": "dark",
                "customApiKeyResponses": {"approved": [KEY[-20:]], "rejected": []},
                "projects": {os.path.realpath(repo): {"hasTrustDialogAccepted": True}},
            }
        )
    )
    (config / "settings.json").write_text(json.dumps({"skipDangerousModePermissionPrompt": True}))
    (base / "claude-tmp").mkdir(exist_ok=True)
    env.update(
        CLAUDE_CONFIG_DIR=str(config),
        CLAUDE_CODE_TMPDIR=str(base / "claude-tmp"),
        IS_SANDBOX="1",
        ANTHROPIC_BASE_URL=base_url,
        ANTHROPIC_API_KEY=KEY,
        DISABLE_TELEMETRY="1",
        DISABLE_AUTOUPDATER="1",
        DISABLE_ERROR_REPORTING="1",
        CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC="1",
        PATH=f"{Path(CLAUDE).parent}:{os.environ.get('PATH', '')}",
    )
    return env


def transcript_files(env: dict[str, str]):
    return (Path(env["CLAUDE_CONFIG_DIR"]) / "projects").glob("*/*.jsonl")


def tagged(tag: str) -> list[psutil.Process]:
    """Live processes carrying this trial's tag in their environment (only ever ours)."""
    found = []
    for proc in psutil.process_iter():
        try:
            if proc.pid != os.getpid() and proc.status() != psutil.STATUS_ZOMBIE and proc.environ().get(TAG_VAR) == tag:
                found.append(proc)
        except psutil.Error:
            continue
    return found


def survivors(tag: str, wait: float = 3.0) -> list[psutil.Process]:
    deadline = time.monotonic() + wait
    while True:
        found = tagged(tag)
        if not found or time.monotonic() > deadline:
            return found
        time.sleep(0.1)


def kill_tagged(tag: str) -> None:
    for proc in tagged(tag):
        try:
            proc.kill()
        except psutil.Error:
            pass


# ---------------------------------------------------------------------------------------------- fake servers


class FakeServer:
    """`python -m tests.fakes.fake_anthropic` or `python -m capguard.demo.fake_openai`, `--port 0 ...`, in its own
    process (the checkout on its PYTHONPATH)."""

    def __init__(self, module: str, args: list[str], log: Path | None = None):
        argv = [
            C.CG_PYTHON,
            "-m",
            {"fake_anthropic": "tests.fakes.fake_anthropic"}.get(module, f"capguard.demo.{module}"),
            "--port",
            "0",
            *args,
        ]
        if log is not None:
            argv += ["--log", str(log)]
        self.log = log
        self.argv = argv
        self.proc = subprocess.Popen(
            argv,
            cwd="/tmp",
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            env={**os.environ, "PYTHONPATH": str(C.ROOT)},
        )
        self.base_url = self.proc.stdout.readline().strip()
        if not self.base_url.startswith("http"):
            self.stop()
            raise RuntimeError(f"{module} did not start: {self.base_url!r}")

    def records(self) -> list[dict]:
        if self.log is None or not self.log.exists():
            return []
        return [json.loads(line) for line in self.log.read_text().splitlines() if line.strip()]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def __enter__(self) -> FakeServer:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


# ---------------------------------------------------------------------------------------------- pty


class Terminal:
    """A pty whose slave is the controlling terminal of capguard (as when a developer types the command)."""

    def __init__(self, argv: list[str], cwd: Path, env: dict[str, str]):
        self.master, slave = os.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
        self.proc = subprocess.Popen(
            argv,
            cwd=cwd,
            env={**env, "TERM": "xterm-256color"},
            stdin=slave,
            stdout=slave,
            stderr=slave,
            start_new_session=True,
            preexec_fn=lambda: fcntl.ioctl(0, termios.TIOCSCTTY, 0),
        )
        os.close(slave)
        self.tail = b""  # the last 64 KB of what the session drew
        self.total = 0

    def pump(self, seconds: float) -> None:
        end = time.monotonic() + seconds
        while True:
            left = end - time.monotonic()
            if left <= 0:
                return
            ready, _, _ = select.select([self.master], [], [], left)
            if not ready:
                return
            try:
                data = os.read(self.master, 65536)
            except OSError:
                time.sleep(min(left, 0.05))
                continue
            if not data:
                return
            self.total += len(data)
            self.tail = (self.tail + data)[-65536:]

    def expect(self, needle: bytes, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if needle in self.tail:
                return True
            if self.proc.poll() is not None:
                return False
            self.pump(0.05)
        return needle in self.tail

    def type(self, data: bytes) -> None:
        os.write(self.master, data)

    def wait(self, timeout: float) -> int | None:
        deadline = time.monotonic() + timeout
        while self.proc.poll() is None and time.monotonic() < deadline:
            self.pump(0.1)
        self.pump(0.2)
        return self.proc.poll()

    def text(self) -> str:
        return re.sub(rb"\x1b\[[0-9;?]*[ -/]*[@-~]|\x1b\][^\x07]*\x07|\r", b"", self.tail).decode("utf-8", "replace")

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        os.close(self.master)


# ---------------------------------------------------------------------------------------------- observer

_libc = ctypes.CDLL("libc.so.6", use_errno=True)
IN_MODIFY, IN_CLOSE_WRITE, IN_MOVED_TO, IN_CREATE, IN_ISDIR = 0x2, 0x8, 0x80, 0x100, 0x40000000
_EVENT = struct.Struct("iIII")


class Observer(threading.Thread):
    """Follows the files appended in some folders; stamps each complete line with CLOCK_REALTIME ns.

    `lines[path]` is a list of (t_ns, line bytes). `t_ns` is taken when poll(2) returns with the inotify
    event that revealed the line's newline, before the harness reads the file: it is the harness's
    first sight of the line, at most a scheduling delay after the write(2). Folders created inside a
    followed folder are followed too (capguard's run folder under $CAPGUARD_HOME/runs). `exits[pid]` is
    when a pidfd registered with `watch_pid` became readable (the process exited).
    """

    def __init__(self, folders: list[Path]):
        super().__init__(name="bench-observer", daemon=True)
        self.fd = _libc.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC)
        if self.fd < 0:
            raise OSError(ctypes.get_errno(), "inotify_init1")
        self.wds: dict[int, Path] = {}
        self.offsets: dict[Path, int] = {}
        self.partial: dict[Path, bytes] = {}
        self.lines: dict[Path, list[tuple[int, bytes]]] = {}
        self.exits: dict[int, int] = {}
        self._pidfds: dict[int, int] = {}
        self._lock = threading.Lock()
        self._wake_r, self._wake_w = os.pipe()
        self._stopping = False
        self.realtime = False
        self._poller = select.poll()
        self._poller.register(self.fd, select.POLLIN)
        self._poller.register(self._wake_r, select.POLLIN)
        for folder in folders:
            self.add_folder(folder)

    def add_folder(self, folder: Path) -> None:
        wd = _libc.inotify_add_watch(self.fd, os.fsencode(folder), IN_MODIFY | IN_CLOSE_WRITE | IN_MOVED_TO | IN_CREATE)
        if wd < 0:
            raise OSError(ctypes.get_errno(), f"inotify_add_watch {folder}")
        self.wds[wd] = folder
        for child in sorted(folder.iterdir()):  # what appeared before the watch
            if child.is_dir():
                self.add_folder(child)
            else:
                self._read(child, time.time_ns())

    def watch_pid(self, pid: int) -> None:
        try:
            fd = os.pidfd_open(pid)
        except ProcessLookupError:
            self.exits[pid] = time.time_ns()
            return
        with self._lock:
            self._pidfds[fd] = pid
            self._poller.register(fd, select.POLLIN)
        os.write(self._wake_w, b"x")

    def stop(self) -> None:
        self._stopping = True
        os.write(self._wake_w, b"x")
        self.join(5)
        os.close(self.fd)
        for fd in list(self._pidfds):
            os.close(fd)

    def lines_of(self, name_glob: str) -> list[tuple[int, bytes]]:
        with self._lock:
            out = []
            for path, lines in self.lines.items():
                if path.match(name_glob):
                    out += lines
            return sorted(out, key=lambda x: x[0])

    def run(self) -> None:
        # a real-time thread is woken at once even when both cores are busy (capguard, Claude, the fake):
        # its timestamps then lag the writes by microseconds, not by a time slice. It sleeps in poll(2)
        # between events and does little per event. Falls back silently where not permitted.
        try:
            os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(1))
            self.realtime = True
        except (OSError, AttributeError):
            self.realtime = False
        while not self._stopping:
            ready = self._poller.poll(1000)
            now = time.time_ns()
            for fd, _ in ready:
                if fd == self._wake_r:
                    os.read(self._wake_r, 4096)
                elif fd == self.fd:
                    self._events(now)
                else:
                    with self._lock:
                        pid = self._pidfds.get(fd)
                        self._poller.unregister(fd)
                    if pid is not None:
                        self.exits.setdefault(pid, now)

    def _events(self, now: int) -> None:
        try:
            data = os.read(self.fd, 65536)
        except BlockingIOError:
            return
        touched: list[Path] = []
        pos = 0
        while pos < len(data):
            wd, mask, _cookie, length = _EVENT.unpack_from(data, pos)
            name = data[pos + _EVENT.size : pos + _EVENT.size + length].rstrip(b"\0")
            pos += _EVENT.size + length
            folder = self.wds.get(wd)
            if folder is None or not name:
                continue
            path = folder / os.fsdecode(name)
            if mask & IN_ISDIR:
                if mask & IN_CREATE:
                    try:
                        self.add_folder(path)
                    except OSError:
                        pass
                continue
            if path not in touched:
                touched.append(path)
        for path in touched:
            self._read(path, now)

    def _read(self, path: Path, now: int) -> None:
        offset = self.offsets.get(path, 0)
        try:
            with open(path, "rb") as handle:
                size = os.fstat(handle.fileno()).st_size
                if size < offset:  # replaced or truncated (status.json): start again
                    offset, self.partial[path] = 0, b""
                handle.seek(offset)
                chunk = handle.read()
        except OSError:
            return
        self.offsets[path] = offset + len(chunk)
        if not chunk:
            return
        text = self.partial.get(path, b"") + chunk
        *complete, rest = text.split(b"\n")
        self.partial[path] = rest
        if complete:
            with self._lock:
                self.lines.setdefault(path, []).extend((now, line) for line in complete if line.strip())


LOG_LINE = re.compile(rb"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d),(\d{3}) (\w+) ([\w.]+): (.*)$")


def log_time_ns(line: bytes) -> tuple[int, str] | None:
    """(CLOCK_REALTIME ns, message) of a capguard.log line (`2026-11-23 11:38:10,113 INFO name: text`, UTC)."""
    m = LOG_LINE.match(line)
    if not m:
        return None
    stamp = datetime.strptime(m.group(1).decode(), "%Y-%m-%d %H:%M:%S").replace(tzinfo=timezone.utc)
    return int(stamp.timestamp()) * 1_000_000_000 + int(m.group(2)) * 1_000_000, m.group(5).decode("utf-8", "replace")


def find_child(parent: int, names: tuple[str, ...], timeout: float) -> psutil.Process | None:
    """capguard's direct child whose program is one of `names` (capguard is a subreaper: other children
    of capguard can be git, or orphans adopted from the agent's tree)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            for child in psutil.Process(parent).children():
                try:
                    argv0 = os.path.basename((child.cmdline() or [""])[0])
                    if argv0 in names or child.name() in names:
                        return child
                except psutil.Error:
                    continue
        except psutil.Error:
            return None
        time.sleep(0.01)
    return None


def cpu_s(proc: psutil.Process) -> float:
    t = proc.cpu_times()
    return t.user + t.system


def started_record(name: str) -> dict:
    return {"name": name, "machine": C.machine(), "command": C.command_line(), "started": time.time()}


def finish_record(data: dict) -> dict:
    data["duration_s"] = round(time.time() - data.pop("started"), 1)
    data["loadavg_after"] = C.loadavg()
    data["code_after"] = C.code_fingerprint()
    data["claude_version"] = _version([CLAUDE, "--version"])
    return data


def _version(argv: list[str]) -> str:
    try:
        return subprocess.run(argv, capture_output=True, text=True, timeout=30, cwd="/tmp").stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "?"


def progress(text: str) -> None:
    print(f"  {text}  [load {C.loadavg()}]", flush=True)
    sys.stdout.flush()
