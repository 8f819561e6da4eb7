"""`capguard import claude [PATH...]`: Claude Code transcripts of every project, one ledger run per session.

Where from: PATH (a config dir holding `projects/`, a `projects/` dir, a project folder or a `.jsonl` file), else
each directory of `$CLAUDE_CONFIG_DIR` (comma-separated), else `~/.claude` and `$XDG_CONFIG_HOME/claude`.
A session's run holds its transcript and its subagents' (`<session>/subagents/agent-*.jsonl`); its id is
`claude-<session id>`, so importing again finds the same run. Files are read by worker processes
(claude_files.py); this module plans, follows and finishes.
"""

from __future__ import annotations

import os
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from stat import S_ISREG
from typing import Any, NamedTuple

from capguard.core.pricing import Pricer
from capguard.importers.claude_files import (
    PARALLEL_BYTES,
    SETTLED_S,
    FileResult,
    Task,
    UnitPricer,
    Worker,
    collector_paused,
    default_jobs,
    groups,
    run_groups,
    run_id_of,
    session_of,
)
from capguard.importers.claude_merge import Requests, settle
from capguard.importers.state import FileStat, ImportState
from capguard.importers.unit_prices import load_rates, save_rates
from capguard.ledger.bulk import ImportWriter, RunSums


def _compiled_lister() -> Callable[[str], list[tuple]] | None:
    """The compiled reader's directory walk, when it is built (and not turned off)."""
    if os.environ.get("CAPGUARD_PURE_PYTHON") == "1":
        return None
    try:
        from capguard.importers._claude_scan import list_jsonl
    except ImportError:
        return None
    return list_jsonl


_lister = _compiled_lister()

WRITE_ROWS = 20_000  # rows per SQLite transaction: few, large ones (each rewrites the index pages it touches)
# Groups per worker before the end from which each group's rows are written as they come: rows still waiting when
# the last worker is done are written after it, by this process alone, while the other CPUs idle.
EAGER_GROUPS = 8
BYTES_PER_ROW = 8 << 10  # about what Claude Code writes per billed reply (tool results and all): an estimate of rows


def transcript_roots(paths: Iterable[str | os.PathLike] = (), env: Mapping[str, str] | None = None) -> list[Path]:
    """Where to look: the given paths, else Claude Code's config directories (as ccusage finds them)."""
    given = [Path(p).expanduser() for p in paths]
    if given:
        return given
    env = os.environ if env is None else env
    explicit = [part.strip() for part in env.get("CLAUDE_CONFIG_DIR", "").split(",") if part.strip()]
    if explicit:
        return [Path(p).expanduser() for p in explicit]
    xdg = Path(env.get("XDG_CONFIG_HOME") or Path.home() / ".config") / "claude"
    return [Path.home() / ".claude", xdg]


class Listed(NamedTuple):
    """A listed transcript's stat, as the compiled walk gives it (`state.FileStat`)."""

    st_size: int
    st_mtime_ns: int
    st_ino: int
    st_mtime: float


def list_transcripts(roots: Iterable[Path]) -> dict[str, FileStat]:
    """Every `.jsonl` below each root's `projects/` (or below the root itself), subagents included, with its stat;
    sorted by path. One scandir pass: os.walk and a stat per file took three times as long on 8,000 files."""
    found: dict[str, FileStat] = {}
    for root in roots:
        root_name = os.path.realpath(root)
        try:
            stat = os.stat(root_name)
        except OSError:
            continue
        if S_ISREG(stat.st_mode):
            found[root_name] = stat  # a transcript named on the command line, whatever its name
            continue
        base = os.path.join(root_name, "projects")
        folder = base if os.path.isdir(base) else root_name
        if _lister is not None:  # the same walk in C: a re-import is mostly this listing and Python's start
            found.update((path, Listed(*figures)) for path, *figures in _lister(folder))
        else:
            _walk(folder, found)
    return dict(sorted(found.items()))


def _walk(folder: str, found: dict[str, FileStat]) -> None:
    try:
        with os.scandir(folder) as entries:
            for entry in entries:
                try:
                    if entry.is_dir(follow_symlinks=False):
                        _walk(entry.path, found)
                    elif entry.name.endswith(".jsonl"):
                        stat = entry.stat()  # follows a symlink, as reading the file will
                        if S_ISREG(stat.st_mode):
                            found[entry.path] = stat
                except OSError:
                    continue  # gone or unreadable meanwhile: as os.walk, skip it
    except OSError:
        return


class RunsRead:
    """The runs whose files have all been read, as the files' paths name their runs (`<session>.jsonl`, its
    subagents' below `<session>/`): such a run goes into the ledger with its totals, which saves `finish` rewriting
    it. A file whose lines name another session than its path keeps both runs from counting as complete."""

    def __init__(self, tasks: Iterable[Task]) -> None:
        self._named = {t.path: t.run_id or run_id_of(t.session or session_of(t.path)[0]) for t in tasks}
        self._left = Counter(self._named.values())
        self.complete: set[str] = set()

    def file_done(self, path: str, run_id: str | None) -> None:
        """A file was read (or failed to be); `run_id`: the run its lines went to."""
        named = self._named[path]
        self._left[named] -= 1
        if run_id not in (None, named):
            self._left[named] = self._left[run_id] = -len(self._named)  # never complete
            self.complete.discard(run_id)
        elif self._left[named] == 0:
            self.complete.add(named)


@dataclass
class Plan:
    tasks: list[Task]
    unchanged: int
    total_bytes: int
    stats: dict[str, FileStat]


def plan(listing: dict[str, FileStat], state: ImportState, now: float | None = None) -> Plan:
    """Which files to read and from where (a file read on from an offset continues, in `claude_merge`, from what
    the ledger holds of its requests)."""
    tasks, unchanged, stats = [], 0, {}
    settled_before = (time.time() if now is None else now) - SETTLED_S
    for name, stat in listing.items():
        start = state.start_offset(name, stat)
        if start is None:
            unchanged += 1
            continue
        stats[name] = stat
        mark = state.files.get(name)
        run_id = mark.run_id if mark else None
        settled = stat.st_mtime < settled_before
        session, subagent = session_of(name)
        tasks.append(Task(name, start, stat.st_size, subagent, run_id, settled, session))
    return Plan(tasks, unchanged, sum(t.end - t.start for t in tasks), stats)


def import_transcripts(
    writer: ImportWriter,
    state: ImportState,
    roots: list[Path],
    *,
    overrides: dict | None = None,
    jobs: int = 0,
    line_of: Callable[[str | None], str | None] = lambda project: None,
    on_progress: Callable[[int, int, int], None] | None = None,
) -> dict:
    """Reads, prices, writes, settles the requests seen in several files (`claude_merge`), then finishes the runs
    and saves the state (an interrupted import reads the files again next time, adding nothing twice). `roots` as
    `transcript_roots` gives them. Returns summary figures."""
    with collector_paused():
        return _import(writer, state, roots, overrides, jobs, line_of, on_progress)


def _import(
    writer: ImportWriter,
    state: ImportState,
    roots: list[Path],
    overrides: dict | None,
    jobs: int,
    line_of: Callable[[str | None], str | None],
    on_progress: Callable[[int, int, int], None] | None,
) -> dict:
    worker = Worker(UnitPricer(Pricer(overrides or {})))
    listing = list_transcripts(roots)
    work = plan(listing, state)
    kept = load_rates() if work.tasks else {}
    worker.pricer.seed(kept)
    if work.tasks and not kept:
        worker.pricer.warm()  # genai-prices (0.2 s), once: workers forked after share it; not when nothing changed
    if work.total_bytes >= PARALLEL_BYTES:
        writer.defer_indexes(work.total_bytes // BYTES_PER_ROW)
    done_bytes = 0
    counts: dict[str, Any] = {"files": 0, "malformed": 0, "suspicious": 0, "errors": []}
    rows: list[tuple] = []
    prefixes: list[str] = []
    sums = RunSums()
    # every row read, for `settle`: written as they come (while the workers read on), settled once all are in
    everything: list[list[tuple]] = []
    mine: set[str] = set()
    requests = Requests()
    had_requests = bool(work.tasks) and writer.holds("claude:")
    # With no Claude rows in the ledger before, a row can only be skipped for a key another file of this import
    # wrote too: a request `settle` re-derives, with the runs of all its rows.
    writer.skips_are_settled = not had_requests
    batches, jobs = groups(work.tasks), jobs or default_jobs()
    left = len(batches)
    runs_read = RunsRead(work.tasks)
    try:
        for ready in run_groups(batches, jobs, overrides=overrides or {}, worker=worker):
            left -= len(ready)
            for done in ready:
                for result in done.results:
                    counts["files"] += 1
                    done_bytes += result.end - result.start
                    runs_read.file_done(result.path, result.run_id)
                    if result.error:
                        counts["errors"].append(f"{result.path}: {result.error}")
                        continue
                    counts["malformed"] += result.malformed
                    counts["suspicious"] += result.suspicious
                    requests.add_file(result.path, result.requests)
                    # in memory only: saved once the rows and runs are in the ledger
                    state.mark(
                        result.path, work.stats[result.path], result.end, _follow(writer, result, line_of), result.check
                    )
                worker.pricer.seed(done.rates)
                everything.append(done.rows)
                mine.add(done.prefix)
                rows += done.rows
                prefixes.append(done.prefix)
                sums.add(done.sums)
            # one transaction for all the rows that came meanwhile: many when this process lags behind the workers
            if rows and (len(rows) >= WRITE_ROWS or left <= EAGER_GROUPS * jobs):
                writer.write_rows(rows, prefixes, sums, runs_read.complete)
                rows, prefixes, sums = [], [], RunSums()
            if on_progress:
                on_progress(counts["files"], done_bytes, work.total_bytes)
        if rows:
            writer.write_rows(rows, prefixes, sums, runs_read.complete)
        # every file read: the requests several files or the ledger (before this import) hold are settled
        known = writer.known_figures(list(requests.first_file), mine) if had_requests else {}
        settled = settle(everything, requests.shared | set(known), known, worker.pricer)
        if settled.stale or settled.keep:
            writer.replace(
                settled.stale,
                settled.keep,
                settled.new,
                settled.runs,
                settled.found - len(settled.stale) - len(settled.keep),
            )
        writer.finish()
    finally:
        writer.close()
    if work.tasks:  # nothing read, nothing marked: the state file is as it was (saving it took 0.2 s of 8,000 files)
        state.save()
        if worker.pricer.probed().keys() - kept.keys():
            save_rates(worker.pricer.probed())
    return {
        "files_found": len(listing),
        "files_read": counts["files"],
        "files_unchanged": work.unchanged,
        "bytes_read": done_bytes,
        "malformed_lines": counts["malformed"],
        "suspicious_replies": counts["suspicious"],
        "errors": counts["errors"],
    }


def _follow(writer: ImportWriter, result: FileResult, line_of: Callable) -> str | None:
    """The file's run, created or widened in the writer's registry; None when its bytes billed nothing."""
    seen = result.run_row()
    if seen is None:
        return None
    seen.line = line_of(seen.project)
    run = writer.run(seen)
    if run is not seen:
        run.widen(seen.started_utc, seen.ended_utc)
        run.malformed += seen.malformed
        run.agent_version = run.agent_version or seen.agent_version
        if not run.cwd and seen.cwd:
            run.cwd, run.project, run.line = seen.cwd, seen.project, run.line or seen.line
    run.read_on = run.read_on or result.start > 0
    return result.run_id
