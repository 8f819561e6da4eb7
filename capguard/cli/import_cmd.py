"""`capguard import claude|aider|codex|gemini|opencode [PATH...]`: agents' existing logs into the ledger, so
reports work from day one."""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path

from capguard.cli.options import Flags
from capguard.config import identity
from capguard.config.settings import load_settings
from capguard.core import sanitize
from capguard.core.errors import CapguardError
from capguard.core.units import format_count, format_tokens, format_usd
from capguard.importers import state
from capguard.importers.progress import Progress, size
from capguard.ledger.bulk import ImportWriter, ledger_identity
from capguard.ledger.reconcile import open_reconciled
from capguard.paths import find_project_file

DESCRIPTION = """\
Bring existing agent logs into the ledger: one run per Claude Code session, aider chat session, Codex thread,
Gemini CLI session or OpenCode session, every reply with the dedupe key live metering uses, so importing twice (or
importing what capguard already metered) adds nothing. Incremental: files unchanged since the last import are
skipped, grown ones read on from where it stopped (OpenCode's store: messages updated since the last import).

  claude [PATH...]  transcripts (subagents included) under PATH, else $CLAUDE_CONFIG_DIR, else ~/.claude and
                    ~/.config/claude (their projects/**/*.jsonl)
  aider [PATH...]   .aider.chat.history.md files (cost lines, rounded by aider) and aider --analytics-log files
                    (exact) in PATH or below it (default: the current directory)
  codex [PATH...]   Codex CLI rollout files (rollout-*.jsonl) under PATH, else $CODEX_HOME (default ~/.codex):
                    its sessions/ and archived_sessions/
  gemini [PATH...]  Gemini CLI session files (chats/session-*.jsonl and subagents') under PATH, else
                    $GEMINI_CLI_HOME/.gemini/tmp, else ~/.gemini/tmp; priced as live metering prices them
  opencode [PATH...]  OpenCode's SQLite store (PATH: the opencode.db file or its folder), else $OPENCODE_DB, else
                    $XDG_DATA_HOME/opencode/opencode.db; read-only, one run per session (subagents included)
"""


def parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="capguard import", description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("agent", choices=["claude", "aider", "codex", "gemini", "opencode"])
    parser.add_argument("paths", nargs="*", metavar="PATH", help="files or folders to import (see above)")
    parser.add_argument("--json", action="store_true", help="print the summary as JSON (no progress)")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress, no summary")
    parser.add_argument("--user", help="charge the runs to this user (default: config `user`, git email, $USER@host)")
    parser.add_argument("--line", help="charge the runs to this budget line (default: config `line` of each project)")
    parser.add_argument("--jobs", type=int, default=0, help="worker processes reading files (default: CPUs, max 4)")
    return parser


def _line_resolver(explicit: str | None, flags: Flags) -> Callable[[str | None], str | None]:
    """Each project's budget line as a run there would get it: its .capguard.toml, else the user config."""
    cache: dict[str | None, str | None] = {}
    # keyed by the repo file that applies (None: none does): the other layers are the same for every project, and
    # loading settings once per project took a second of an import of 400 projects
    by_file: dict[Path | None, str | None] = {}

    def line_of(project: str | None) -> str | None:
        if explicit:
            return explicit
        if project not in cache:
            folder = Path(project) if project else Path.cwd()
            folder = folder if folder.is_dir() else Path.cwd()
            repo_file = find_project_file(folder)
            if repo_file not in by_file:
                try:
                    by_file[repo_file] = load_settings(None, flags=flags, cwd=folder).charge.line
                except (CapguardError, OSError):
                    by_file[repo_file] = None
            cache[project] = by_file[repo_file]
        return cache[project]

    return line_of


def run(ns: argparse.Namespace, flags: Flags) -> int:
    if ns.jobs < 0:
        raise CapguardError("--jobs must be 0 (automatic) or more")
    settings = load_settings(None, flags=flags)
    user = ns.user or identity.user(Path.cwd(), settings.charge.user)
    progress = Progress(sys.stderr, enabled=not (ns.json or ns.quiet), label=f"import {ns.agent}")
    started = time.monotonic()
    with open_reconciled(settings.charge.ledger) as ledger:
        marks = state.ImportState(state.default_path(), ledger_identity(ledger))
        writer = ImportWriter(ledger, user=user, host=identity.host())
        line_of = _line_resolver(ns.line, flags)
        try:
            # each agent's importer imported when asked for: all five cost 0.1 s more of start-up
            if ns.agent == "claude":
                from capguard.importers import claude

                roots = claude.transcript_roots(ns.paths)
                figures = claude.import_transcripts(
                    writer,
                    marks,
                    roots,
                    overrides=settings.prices,
                    jobs=ns.jobs,
                    line_of=line_of,
                    on_progress=progress.update,
                )
            elif ns.agent == "gemini":
                from capguard.importers import gemini

                roots = gemini.session_roots(ns.paths)
                figures = gemini.import_sessions(
                    writer,
                    marks,
                    gemini.find_sessions(roots),
                    roots=roots,
                    pricer_overrides=settings.prices,
                    line_of=line_of,
                    on_progress=progress.update,
                )
            elif ns.agent == "codex":
                from capguard.importers import codex

                figures = codex.import_rollouts(
                    writer,
                    marks,
                    codex.find_rollouts(codex.rollout_roots(ns.paths)),
                    pricer_overrides=settings.prices,
                    line_of=line_of,
                    on_progress=progress.update,
                )
            elif ns.agent == "opencode":
                from capguard.importers import opencode

                figures = opencode.import_store(
                    writer,
                    marks,
                    opencode.find_stores(ns.paths),
                    pricer_overrides=settings.prices,
                    line_of=line_of,
                    on_progress=progress.update,
                )
            else:
                from capguard.importers import aider

                figures = aider.import_logs(
                    writer,
                    marks,
                    aider.find_logs(ns.paths or ["."]),
                    pricer_overrides=settings.prices,
                    line_of=line_of,
                    on_progress=progress.update,
                )
        finally:
            progress.close()
            writer.close()  # its background checkpoints, if an import failed before its finish
        summary = _summary(ns.agent, ledger.path_or_url, figures, writer, time.monotonic() - started)
    for error in summary["errors"]:
        print(f"capguard: warning: cannot read {error}", file=sys.stderr)
    if ns.json:
        print(json.dumps(summary, indent=2))
    elif not ns.quiet:
        print("\n".join(human(summary)))
    return 0


def _summary(agent: str, ledger: str, figures: dict, writer: ImportWriter, seconds: float) -> dict:
    return {
        "agent": agent,
        "ledger": ledger,
        "seconds": round(seconds, 3),
        **figures,
        "sessions": len(writer.runs),
        "runs_created": writer.written.runs_created,
        "replies_added": writer.written.added,
        "replies_known": writer.written.rows - writer.written.added,
        "cost_added_usd": writer.written.cost / 1_000_000,
        "tokens_added": writer.written.tokens,
    }


def human(summary: dict) -> list[str]:
    """The summary for people: what was read, what was new, what was skipped."""
    what = {
        "claude": "Claude Code transcripts",
        "codex": "Codex rollouts",
        "gemini": "Gemini CLI session files",
        "opencode": "OpenCode's store",
    }.get(summary["agent"], "aider logs")
    lines = [
        f"capguard: imported {what} into {summary['ledger']} in {summary['seconds']:.1f}s",
        f"  files: {summary['files_read']:,} read ({size(summary['bytes_read'])}), "
        f"{summary['files_unchanged']:,} unchanged since the last import",
        f"  sessions: {summary['sessions']:,} ({summary['runs_created']:,} new runs)",
        f"  replies: {summary['replies_added']:,} added ({format_usd(round(summary['cost_added_usd'] * 1e6))},"
        f" {format_tokens(summary['tokens_added'])} tokens), {summary['replies_known']:,} already in the ledger",
    ]
    if summary.get("rounded_replies"):
        lines.append(
            f"  {format_count(summary['rounded_replies'], 'reply', 'replies')} from .aider.chat.history.md: aider"
            " rounds those figures (12k tokens, $0.02); an --analytics-log gives exact ones"
        )
    if summary.get("sessions_covered") and summary["agent"] == "gemini":
        lines.append(
            f"  {format_count(summary['sessions_covered'], 'session', 'sessions')} skipped: every reply already in the"
            " ledger (metered by capguard, or imported before)"
        )
    elif summary.get("sessions_covered"):
        lines.append(
            f"  {format_count(summary['sessions_covered'], 'chat-history session', 'chat-history sessions')}"
            " skipped: already in the ledger from a supervised run or an analytics log"
        )
    if summary.get("sessions_replaced"):
        lines.append(
            f"  {format_count(summary['sessions_replaced'], 'rounded chat-history session', 'rounded chat-history sessions')}"
            " replaced by the exact figures of an analytics log"
        )
    if summary["malformed_lines"]:
        lines.append(f"  malformed lines skipped: {summary['malformed_lines']:,}")
    if summary.get("suspicious_replies"):
        lines.append(
            f"  {format_count(summary['suspicious_replies'], 'reply', 'replies')} with figures beyond capguard's bounds"
            f" ({sanitize.MAX_TOKENS:,} tokens or ${sanitize.MAX_REPLY_USD_MICRO // 10**6:,} a reply):"
            " imported at the bound"
        )
    return lines
