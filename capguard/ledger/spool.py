"""A run's counted usage, durable before it reaches the ledger: an fsynced, append-only JSON-lines file in the run dir.

The first line says whose run it is (RunStart, capguard's pid and start time, host, ledger); then one line per
usage record; last, the run's end. `open-runs/<run id>` in the data dir lists the spools the ledger may lack.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from capguard import paths
from capguard.core.errors import DataDirError
from capguard.ledger import RunEnd, RunStart, UsageRecord
from capguard.private_files import private_dir

SPOOL_NAME = "spool.jsonl"


class SpoolError(OSError):
    """The spool cannot be written: what capguard counted is no longer durable."""


def open_runs_dir() -> Path:
    """One empty file per run whose spool may hold something the ledger lacks (a run in progress, or one whose
    capguard died, or whose ledger failed): what a capguard start reconciles."""
    return paths.data_home() / "open-runs"


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _line(kind: str, **data: Any) -> bytes:
    return (json.dumps({"type": kind, **data}, ensure_ascii=False, default=str) + "\n").encode("utf-8")


class Spool:
    """The open spool of the running capguard; every append is on disk (fsync) when it returns."""

    def __init__(self, path: Path, fd: int, run_id: str) -> None:
        self.path, self._fd, self.run_id = path, fd, run_id
        self.records = 0
        self.cost_micro = 0

    @classmethod
    def create(cls, run_dir: Path, start: RunStart, *, ledger: str, pid: int, pid_created: float, host: str) -> Spool:
        """Create the spool (0600, whatever the umask) with its start line, and list the run as open."""
        path = run_dir / SPOOL_NAME
        marker = open_runs_dir() / start.run_id
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND | os.O_CLOEXEC, 0o600)
        except OSError as exc:
            raise SpoolError(f"cannot create the run's spool {path} ({exc.strerror or exc})") from exc
        spool = cls(path, fd, start.run_id)
        try:
            os.fchmod(fd, 0o600)
            spool._append(
                _line(
                    "start", run=dataclasses.asdict(start), ledger=ledger, pid=pid, pid_created=pid_created, host=host
                )
            )
            _fsync_dir(run_dir)
            private_dir(paths.data_home(), stderr=None)  # 0700 like every other path to it
            private_dir(marker.parent, stderr=None)
            marker.touch(mode=0o600)
            _fsync_dir(marker.parent)
        except (OSError, DataDirError) as exc:
            spool.discard()
            reason = getattr(exc, "strerror", None) or exc  # DataDirError: its own sentence
            raise SpoolError(f"cannot create the run's spool {path} ({reason})") from exc
        return spool

    def _append(self, data: bytes) -> None:
        """One write (O_APPEND) and one fsync: a crash leaves at most a torn last line, which `read` skips."""
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(self._fd, view) :]
            os.fsync(self._fd)
        except OSError as exc:
            raise SpoolError(f"cannot write the run's spool {self.path} ({exc.strerror or exc})") from exc

    def append_usage(self, records: Iterable[UsageRecord]) -> None:
        """A batch of usage records, in one write and one fsync."""
        batch = list(records)
        if batch:
            self._append(b"".join(_line("usage", usage=dataclasses.asdict(record)) for record in batch))
            self.records += len(batch)
            self.cost_micro += sum(record.cost_micro_usd or 0 for record in batch)

    def append_end(self, end: RunEnd) -> None:
        self._append(_line("end", end=dataclasses.asdict(end)))

    def settled(self) -> None:
        """Everything in the spool is in the ledger and the run is closed there: no start needs to look again."""
        self.close()
        (open_runs_dir() / self.run_id).unlink(missing_ok=True)

    def discard(self) -> None:
        """The run never started (the ledger refused it): nothing to keep."""
        self.close()
        self.path.unlink(missing_ok=True)
        (open_runs_dir() / self.run_id).unlink(missing_ok=True)

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


@dataclass
class SpooledRun:
    """What a spool holds, read back."""

    path: Path
    start: RunStart
    ledger: str
    pid: int
    pid_created: float
    host: str
    usage: list[UsageRecord] = field(default_factory=list)
    end: RunEnd | None = None
    torn_lines: int = 0


def read(path: Path) -> SpooledRun | None:
    """A spool read back; None when it has no readable start line. Unreadable lines (a torn last write) are
    skipped and counted; a usage record seen twice (never written so, but harmless) is kept once."""
    try:
        lines = path.read_bytes().splitlines()
    except OSError:
        return None
    run: SpooledRun | None = None
    torn = 0
    keys: set[str] = set()
    for raw in lines:
        try:
            item = json.loads(raw)
            kind = item["type"]
            if kind == "start" and run is None:
                run = SpooledRun(
                    path,
                    RunStart(**item["run"]),
                    item["ledger"],
                    int(item["pid"]),
                    float(item["pid_created"]),
                    item["host"],
                )
            elif kind == "usage" and run is not None:
                record = UsageRecord(**item["usage"])
                if record.dedupe_key not in keys:
                    keys.add(record.dedupe_key)
                    run.usage.append(record)
            elif kind == "end" and run is not None:
                run.end = RunEnd(**item["end"])
        except (ValueError, KeyError, TypeError):
            torn += 1
    if run is not None:
        run.torn_lines = torn
    return run


def open_run_ids() -> list[str]:
    try:
        return sorted(entry.name for entry in os.scandir(open_runs_dir()) if entry.is_file())
    except OSError:
        return []


def spool_of(run_id: str) -> Path:
    return paths.runs_dir() / run_id / SPOOL_NAME


def settle(run_id: str) -> None:
    (open_runs_dir() / run_id).unlink(missing_ok=True)
