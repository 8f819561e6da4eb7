"""Reading Claude Code transcripts for an import, in worker processes: bytes -> priced usage rows -> the ledger.

Each worker reads a group of files and prices their replies; the rows go back to the importing process, which
writes them (SQLite: one writer), or straight into the ledger over the worker's own connection (PostgreSQL). The
importing process then finishes the runs. Small imports run the same code in-process.
"""

from __future__ import annotations

import gc
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from capguard.core.pricing import Pricer
from capguard.core.usage import counts_total
from capguard.importers.state import CHECK_BYTES, digest
from capguard.importers.unit_prices import UnitPricer
from capguard.ledger.bulk import RunRow, RunSums, stamp_rows

if TYPE_CHECKING:
    from concurrent.futures import Future

    from capguard.importers.claude_scan import FoundReply, Scan

AGENT = "claude"
_CHUNK = 32 << 20  # bytes read at a time: memory stays bounded on huge transcripts
GROUP_BYTES = 16 << 20  # bytes of files per worker task (small: the workers end together)
PARALLEL_BYTES = 48 << 20  # below this, worker processes cost more than they save


@dataclass
class Task:
    path: str
    start: int
    end: int
    subagent: bool
    run_id: str | None = None  # the run an earlier import gave this file
    # nothing has written to the file for a while (`SETTLED_S`): a request's corrections fold into its row
    settled: bool = False
    session: str = ""  # the session its path names (`session_of`), when the plan knows it


# A file untouched this long belongs to no session capguard meters live now: an import may fold each correction
# (`<key>+<n>`, a later, larger line of a request) into its request's row. A live meter writes `<key>` and then
# `<key>+<n>` itself; folded, an import of a file it is still metering would give the same request twice.
SETTLED_S = 600


@dataclass
class FileResult:
    """What one file's new bytes held; `rows` is emptied once they are written."""

    path: str
    start: int
    end: int  # the offset reached: end of the last complete line
    run_id: str | None = None
    rows: list[tuple] = field(default_factory=list)  # ledger_io.UsageRow
    replies: int = 0
    malformed: int = 0
    suspicious: int = 0  # replies with a figure at capguard.core.sanitize's bound, counted as the bound
    first_utc: str | None = None
    last_utc: str | None = None
    cwd: str | None = None
    project: str | None = None
    version: str | None = None
    session_id: str | None = None
    check: str | None = None  # digest of the bytes before `end` (the state file's check), when read here
    error: str | None = None
    sums: tuple[int, int, int] = (0, 0, 0)  # the rows' (cost, tokens, steps) as `RunSums` counts them
    requests: list[str] = field(default_factory=list)  # the keys of its requests' rows (not their corrections)

    def run_row(self) -> RunRow | None:
        """The file's run as far as this file knows it; None when its bytes billed nothing."""
        first = self.first_utc or (self.rows[0][2] if self.rows else None)
        if (not self.replies and not self.malformed) or first is None or self.run_id is None:
            return None
        return RunRow(
            run_id=self.run_id,
            agent=AGENT,
            cwd=self.cwd or "",
            project=self.project,
            started_utc=first,
            ended_utc=self.last_utc or first,
            agent_version=self.version,
            malformed=self.malformed,
            report={"imported_from": "Claude Code transcripts", "session_id": self.session_id},
        )


def run_id_of(session_id: str) -> str:
    return f"{AGENT}-{session_id}"


def session_of(path: str) -> tuple[str, bool]:
    """(session id, is a subagent's transcript): `<session>.jsonl` or `<session>/subagents/agent-*.jsonl`.
    Plain string slicing of the normalized paths the listing gives (os.path's split and splitext were most of
    the importing process's planning on 8,000 files); os.path for any other path."""
    sep = os.sep
    if sep * 2 in path or path.endswith(sep):
        return _session_of_any(path)
    cut = path.rfind(sep)
    name, folder = path[cut + 1 :], path[: max(cut, 0)]
    up = folder.rfind(sep)
    if folder[up + 1 :] == "subagents":
        parent = folder[: max(up, 0)]
        return parent[parent.rfind(sep) + 1 :], True
    dot = name.rfind(".")
    return (name[:dot] if dot > 0 and name[:dot].strip(".") else name), False


def _session_of_any(path: str) -> tuple[str, bool]:
    folder, name = os.path.split(path)
    parent, folder_name = os.path.split(folder)
    if folder_name == "subagents":
        return os.path.basename(parent), True
    return os.path.splitext(name)[0], False


def project_of(cwd: str | None, cache: dict[str, str | None]) -> str | None:
    """The git root above the session's working directory (what a supervised run records), else the cwd."""
    if not cwd:
        return None
    if cwd not in cache:
        cache[cwd] = cwd
        for folder in [Path(cwd), *Path(cwd).parents]:
            try:
                if (folder / ".git").exists():
                    cache[cwd] = str(folder)
                    break
            except OSError:
                break
    return cache[cwd]


# -- one file -------------------------------------------------------------------------------------------------


def read_task(task: Task, pricer: UnitPricer, projects: dict[str, str | None]) -> FileResult:
    """The priced usage rows of one file's bytes [start, end), complete lines only."""
    result = FileResult(task.path, task.start, task.start)
    # max-wins within the file's new bytes; against the ledger and the other files in `claude_merge`
    # here, not at the top: an import that finds nothing new (most) never loads the reader
    from capguard.importers.claude_scan import ReplyCounter, scan

    counter = ReplyCounter(subagent=task.subagent)
    replies: list[FoundReply] = []
    unfolded = False  # some correction may still stand beside its request's row (read in another chunk, say)
    try:
        fd = os.open(task.path, os.O_RDONLY)  # no buffered file object: 8,000 files open and close
        try:
            offset, carry = task.start, b""
            while offset + len(carry) < task.end:
                chunk = os.pread(fd, min(_CHUNK, task.end - offset - len(carry)), offset + len(carry))
                if not chunk:
                    break  # the file shrank while we read
                chunk = carry + chunk if carry else chunk  # no copy for a file read in one chunk
                cut = chunk.rfind(b"\n") + 1
                carry = chunk[cut:]
                if cut:
                    found = scan(chunk, offset, counter, cut, fold=task.settled)
                    unfolded = unfolded or bool(replies) or not found.folded
                    replies += _absorb(result, found)
                    offset += cut
                    result.check = digest(chunk[cut - CHECK_BYTES : cut]) if cut >= CHECK_BYTES else None
            result.end = offset
        finally:
            os.close(fd)
    except OSError as exc:
        result.error = f"{exc.strerror or exc}"
        return result
    # the session the lines name (a subagent's lines name their parent's); the file name when they name none
    result.session_id = result.session_id or task.session or session_of(task.path)[0]
    result.run_id = task.run_id or run_id_of(result.session_id)
    result.project = project_of(result.cwd, projects)
    result.rows = _rows(result, folded(replies) if task.settled and unfolded else replies, pricer)
    result.replies = len(result.rows)
    return result


def _absorb(result: FileResult, found: Scan) -> list[FoundReply]:
    result.malformed += found.malformed
    result.suspicious += found.suspicious
    if result.session_id is None:
        result.session_id, result.cwd, result.version = found.session_id, found.cwd, found.version
    if found.first_utc and (result.first_utc is None or found.first_utc < result.first_utc):
        result.first_utc = found.first_utc
    if found.last_utc and (result.last_utc is None or found.last_utc > result.last_utc):
        result.last_utc = found.last_utc
    return found.replies


_DETAILS_JSON: dict[int, str | None] = {}


def folded(replies: list[FoundReply]) -> list[FoundReply]:
    """Each correction `<key>+<n>` added into its request's row `<key>` when that row is among these (a file read
    from its start, or the request begun after the offset): one row with the request's largest figures, as
    max-wins sums them, instead of a row and its corrections (a quarter of the rows of a streamed session). A
    correction whose request was read before stays as it is: it continues what the ledger holds."""
    from capguard.importers.claude_scan import fold_into  # the step the compiled reader's scan takes as it counts

    out: list[FoundReply] = []
    at: dict[str, int] = {}
    for reply in replies:
        fold_into(out, at, reply)
    return out


def _rows(result: FileResult, replies: list[FoundReply], pricer: UnitPricer) -> list[tuple]:
    linear, price, run_id, path, rows = pricer.linear, pricer.price, result.run_id, result.path, []
    requests = result.requests = []
    fallback = result.last_utc or result.first_utc
    total_cost = total_tokens = steps = 0
    priced_by: str | None
    for key, occurred, model, figures, offset, _, details in replies:
        speed = geo = text = None
        if details is not None:  # one of a few shared dicts (decode.details_of): its JSON is made once
            speed, geo = details.get("speed"), details.get("inference_geo")
            text = _DETAILS_JSON.get(id(details)) or _DETAILS_JSON.setdefault(
                id(details), _details_json(details, (0,) * 6)
            )
        if figures[4] or figures[5]:
            text = (
                _with_figures(text, figures)
                if _FIGURE_KEYS.isdisjoint(details or ())
                else _details_json(details, figures)
            )
        rates = linear(model, speed, geo)
        inp, out, read, write, write_1h, web = figures
        tokens = counts_total(inp, out, read, write)
        if rates is not None and (rates[0] is None or inp + read + write <= rates[0]) and tokens:
            _, r_in, r_out, r_read, r_write, r_write_1h, r_web = rates
            pico = (
                inp * r_in
                + out * r_out
                + read * r_read
                + (write - write_1h) * r_write
                + write_1h * r_write_1h
                + web * r_web
            )
            cost, priced_by = (pico + 500_000) // 1_000_000, "genai-prices"
        else:
            cost, priced_by = price(model, inp, out, read, write, write_1h, web, speed=speed, geo=geo)
        occurred = occurred or fallback
        if occurred is None:
            continue  # no time anywhere in the file: nothing to place the spend at
        rows.append((run_id, key, occurred, model, inp, out, read, write, cost, priced_by, path, offset, text))
        total_cost += cost or 0
        total_tokens += tokens
        if "+" not in key:
            steps += 1
            requests.append(key)
    # as `RunSums.of` counts them, the whole file at once
    result.sums = (total_cost, total_tokens, 0 if "/subagents/" in path.lower() else steps)
    return rows


_FIGURE_KEYS = frozenset(("cache_write_1h", "web_searches"))


def _with_figures(text: str | None, figures: tuple) -> str:
    """`_details_json(details, figures)` from the details' own JSON `text` (json.dumps' separators; the figures
    are ints), when the details hold neither figure's key: a dict copy and a json.dumps less per row that has
    1-hour cache writes (a third of the rows of a streamed corpus)."""
    extra = []
    if figures[4]:
        extra.append(f'"cache_write_1h": {int(figures[4])}')
    if figures[5]:
        extra.append(f'"web_searches": {int(figures[5])}')
    added = ", ".join(extra)
    return f"{text[:-1]}, {added}}}" if text else f"{{{added}}}"


def _details_json(details: dict | None, figures: tuple) -> str | None:
    """A row's `details`: what the parser noted, plus the 1-hour cache writes and web searches (which a file
    read on from an offset needs to continue max-wins)."""
    extra = dict(details or {})
    if figures[4]:
        extra["cache_write_1h"] = figures[4]
    if figures[5]:
        extra["web_searches"] = figures[5]
    return json.dumps(extra, ensure_ascii=False) if extra else None


# -- groups of files, in workers --------------------------------------------------------------------------------


@dataclass
class Worker:
    """What a worker (or the importing process) reads and prices with. The rows always go back to the importing
    process: a request's lines may be in several files read by different workers (a resumed session's copy of its
    history), and only the importing process sees them all (`claude_merge`)."""

    pricer: UnitPricer
    projects: dict[str, str | None] = field(default_factory=dict)


@dataclass
class GroupDone:
    results: list[FileResult]
    rows: list[tuple]  # rows for the importing process to write, from `stamp_rows`
    prefix: str  # their ids' prefix
    sums: RunSums  # their totals per run, as `ImportWriter.finish` would read them back
    rates: dict = field(default_factory=dict)  # the worker's pricer's rates (`UnitPricer.probed`), to keep


_WORKER: Worker | None = None


def _init_worker(overrides: dict, rates: dict) -> None:
    global _WORKER
    _WORKER = Worker(UnitPricer(Pricer(overrides)))
    _WORKER.pricer.seed(rates)
    gc.disable()  # see `collector_paused`


def read_group(tasks: list[Task], worker: Worker | None = None) -> GroupDone:
    """Read and price a group of files; hand their rows back, stamped."""
    worker = worker or _WORKER
    if worker is None:
        raise RuntimeError("read_group needs a worker: pass one, or call it in a pool started with _init_worker")
    results = [read_task(task, worker.pricer, worker.projects) for task in tasks]
    rows = [row for r in results for row in r.rows]
    for result in results:
        result.rows = []
    prefix, stamped = stamp_rows(rows)
    sums = RunSums()
    for result in results:
        if result.run_id is not None and result.replies:
            sums.add_run(result.run_id, *result.sums, rows=result.replies)
    return GroupDone(results, rows=stamped, prefix=prefix, sums=sums, rates=worker.pricer.probed())


def groups(tasks: list[Task], size: int | None = None) -> list[list[Task]]:
    """Tasks in groups of about `size` bytes, biggest files first (the workers then finish together)."""
    size = size or GROUP_BYTES
    out: list[list[Task]] = []
    current, total = [], 0
    for task in sorted(tasks, key=lambda t: t.start - t.end):
        current.append(task)
        total += task.end - task.start
        if total >= size:
            out.append(current)
            current, total = [], 0
    return out + ([current] if current else [])


def run_groups(
    batches: list[list[Task]],
    jobs: int,
    *,
    overrides: dict,
    worker: Worker,
) -> Iterator[list[GroupDone]]:
    """The groups (from `groups`) done since the last answer, all of them, as soon as one is: in `jobs` worker
    processes for large imports, else here, one at a time."""
    if jobs <= 1 or len(batches) < 2 or sum(t.end - t.start for batch in batches for t in batch) < PARALLEL_BYTES:
        for batch in batches:
            yield [read_group(batch, worker)]
        return
    import multiprocessing
    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait

    methods = multiprocessing.get_all_start_methods()
    context = multiprocessing.get_context("fork" if "fork" in methods else None)
    if context.get_start_method() == "fork" and not worker.pricer.probed():
        worker.pricer.warm()  # genai-prices loaded before the fork (import_transcripts does), not once per worker
    # a worker that dies (killed, out of memory) fails the import with BrokenProcessPool instead of hanging it
    pool = ProcessPoolExecutor(
        min(jobs, len(batches)),
        mp_context=context,
        initializer=_init_worker,
        initargs=(overrides, worker.pricer.probed()),
    )
    try:
        pending: set[Future] = {pool.submit(read_group, batch) for batch in batches}
        while pending:
            ready, pending = wait(pending, return_when=FIRST_COMPLETED)
            yield [future.result() for future in ready]
    finally:
        # the workers exit while this process finishes the import (concurrent.futures joins them at exit)
        pool.shutdown(wait=False, cancel_futures=True)


@contextmanager
def collector_paused() -> Iterator[None]:
    """No cyclic garbage collection meanwhile. An import allocates millions of small objects (rows, strings) and
    makes no reference cycles; each burst of allocations triggers a collection, and the older ones walk every
    long-lived object (genai-prices' data among them) again: about 10% of an import's CPU, for nothing."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def default_jobs() -> int:
    return max(1, min(4, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1))
