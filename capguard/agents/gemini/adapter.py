"""Gemini CLI: the session files it writes, the one process it runs as under capguard, the stop.

Metering follows the session files of this run's project (`~/.gemini/tmp/<project>/chats/session-*.jsonl`,
`GEMINI_CLI_HOME` moves `~`): this run's own session (a `--session-id` capguard chooses), the sessions `/clear` and
`/resume` switch to in the TUI, and the subagents' files below `chats/<session id>/`. Facts measured on Gemini CLI
0.61.0 (/work/shared/reference/gemini.md).
"""

from __future__ import annotations

import json
import os
import re
import signal
import time
import uuid
from collections.abc import Mapping
from pathlib import Path

from capguard.agents.base import LaunchPlan, command_line, insert_before_separator, option_value
from capguard.agents.gemini.logs import SessionParser
from capguard.agents.gemini.strict import strict_front
from capguard.config.settings import Settings
from capguard.core.events import Event
from capguard.core.redact import shown_url
from capguard.metering.proxy.dialects import CODE_ASSIST
from capguard.metering.tail import WatchSpec

INSTALL_HINT = "install it with: npm install -g @google/gemini-cli@0.61.0"
RESUME_FLAGS = ("-r", "--resume", "--session-file")
# management commands (`gemini mcp list`): no session, and yargs may refuse an option they do not take
SUBCOMMANDS = ("mcp", "extensions", "extension", "skills", "skill", "hooks", "hook", "gemma")
MODEL_FLAGS = ("-m", "--model")
# names Gemini CLI resolves to a concrete model itself (routing, or its current pro/flash): not a price to look up
ALIASES = ("auto", "pro", "flash", "flash-lite")
SKEW_S = 5.0  # a reply stamped this long before capguard started is history (a resumed session's)
_SAFE = re.compile(r"[A-Za-z0-9_-]{1,200}")  # what Gemini's sanitizeFilenamePart leaves unchanged

BLIND_SPOTS = [
    "with the model `auto` (Gemini's default) a routing call to a flash-lite model before each prompt is not in "
    "the session file",
    "the loop check Gemini makes from about turn 30 of a prompt, the next-speaker check after a text-only reply and "
    "chat compression are not in the session file",
    "a reply in flight when the stop comes is billed but never written by Gemini",
]


def gemini_home(env: Mapping[str, str]) -> Path:
    """`$GEMINI_CLI_HOME/.gemini`, else `$HOME/.gemini`."""
    base = env.get("GEMINI_CLI_HOME") or env.get("HOME") or str(Path.home())
    return Path(base) / ".gemini"


def _has(args: list[str], *flags: str) -> bool:
    for arg in args:
        if arg == "--":
            return False
        if arg in flags or any(arg.startswith(f + "=") for f in flags if f.startswith("--")):
            return True
    return False


def named_model(args: list[str], env: Mapping[str, str]) -> str | None:
    """The model named with `-m`/`--model` or GEMINI_MODEL, unless it is one of Gemini's own aliases."""
    named = option_value(args, *MODEL_FLAGS) or env.get("GEMINI_MODEL")
    if not named or named in ALIASES or named.startswith("auto"):
        return None
    return named


def project_chats(home: Path, cwd: Path) -> Path | None:
    """The project's chats folder, when Gemini's registry (`projects.json`) already names the working directory."""
    try:
        doc = json.loads((home / "projects.json").read_text())
        projects = doc.get("projects") if isinstance(doc, dict) else None
    except (OSError, ValueError, RecursionError):
        return None
    if not isinstance(projects, dict):
        return None
    for key in (str(cwd), os.path.realpath(cwd)):
        short = projects.get(key)
        if isinstance(short, str) and _SAFE.fullmatch(short):
            return home / "tmp" / short / "chats"
    return None


class _Sessions:
    """Which session files are this run's: files under the project's chats folder (learnt from this run's own session
    file when Gemini's registry does not name it yet), subagents' files in a folder named after a session."""

    def __init__(self, session_id: str | None, chats: Path | None, not_before: float, fallback: str | None):
        self.session_id = session_id
        self.chats = chats
        self.not_before = not_before
        self.fallback = fallback

    def gate(self, path: Path) -> _Gate:
        subagent = not path.name.startswith("session-")
        parser = SessionParser(
            not_before=self.not_before, source=str(path), fallback_model=self.fallback, subagent=subagent
        )
        return _Gate(self, path, parser, subagent)

    def mine(self, path: Path, subagent: bool) -> bool:
        folder = path.parent.parent if subagent else path.parent
        if self.chats is not None:
            return folder == self.chats
        if self.session_id is not None:
            return False  # not known yet: this run's own file names it
        # a resumed session whose project Gemini's registry did not name: any project's chats folder
        return folder.name == "chats"


class _Gate:
    def __init__(self, sessions: _Sessions, path: Path, parser: SessionParser, subagent: bool):
        self.sessions, self.path, self.parser, self.subagent = sessions, path, parser, subagent

    def feed(self, line: bytes, offset: int) -> list[Event]:
        events = self.parser.feed(line, offset)
        sessions = self.sessions
        if (
            sessions.chats is None
            and not self.subagent
            and sessions.session_id is not None
            and self.parser.file_session == sessions.session_id
        ):
            sessions.chats = self.path.parent  # this run's own session file: its folder is the project's
        return events if sessions.mine(self.path, self.subagent) else []


class GeminiAdapter:
    name = "gemini"
    install_hint = INSTALL_HINT

    def plan(
        self, args: list[str], settings: Settings, run_dir: Path, env: Mapping[str, str], run_id: str
    ) -> LaunchPlan:
        executable, args = command_line("gemini", INSTALL_HINT, settings, args, env)
        home = gemini_home(env)
        tmp = home / "tmp"
        ours: list[str] = []
        notes: list[str] = []

        chosen = option_value(args, "--session-id")
        managing = bool(args) and args[0] in SUBCOMMANDS
        if chosen is None and not managing and not _has(args, *RESUME_FLAGS):
            chosen = str(uuid.uuid4())
            ours += ["--session-id", chosen]
        elif chosen is None and not managing:
            notes.append(
                "a resumed session is found by its file: session files of this project written during the run count"
            )
        model = named_model(args, env)
        chats = project_chats(home, Path.cwd())
        sessions = _Sessions(chosen, chats, time.time() - SKEW_S, model)
        where = tmp if chats is None else chats
        watches = [
            # existing files (a session /resume may continue) from their end; new ones (this run's, /clear's) whole
            WatchSpec(where, sessions.gate, glob="session-*.jsonl", from_end=True, dormant=True),
            WatchSpec(where, sessions.gate, glob="*.jsonl", from_end=True, dormant=True),  # chats/<session>/<id>.jsonl
        ]
        extra_env: dict[str, str] = {}
        strict = settings.supervise.meter == "proxy"
        fronts = None
        if strict:
            front, closed = strict_front(env, Path.cwd(), home)
            fronts = [front]
            extra_env.update(closed)
            notes.append(
                f"strict mode: every Gemini API call goes through capguard's proxy to {shown_url(front.upstream)}"
                " (its other sign-ins' endpoints are closed for the run)"
            )
            if front.dialect == CODE_ASSIST:
                notes.append(
                    "Login with Google is not billed per token: each call is counted at the Gemini API's list price"
                    " for its model (a --usd cap is a cap on what the same calls would cost with an API key)"
                )
        if env.get("GEMINI_CLI_NO_RELAUNCH") is None:
            # one node process instead of a launcher that ignores SIGINT and SIGTERM and relaunches itself
            extra_env["GEMINI_CLI_NO_RELAUNCH"] = "true"
            notes.append(
                "GEMINI_CLI_NO_RELAUNCH=true: Gemini runs as one process (its launcher would ignore the stop signals;"
                " it only raises node's heap limit)"
            )
        return LaunchPlan(
            argv=[executable, *insert_before_separator(args, ours)],
            env={**env, **extra_env},
            watches=watches,
            # SIGTERM: Gemini (one process) leaves with exit status 0, headless and in the TUI, and sends no request
            # meanwhile. SIGINT is Ctrl-C: the TUI only cancels the turn with it, and headless it took up to 7 s on a
            # loaded machine. Its shell tools, in sessions of their own, are stopped with the rest of the tree
            polite_stop=[(signal.SIGTERM, 0.0)],
            fallback_model=model,
            named_model=model,
            reports_cost=False,
            notes=notes,
            blind_spots=[] if strict else list(BLIND_SPOTS),  # the proxy sees every call: side calls, in flight
            watch_trees=[where],
            folders=[tmp, where],  # Gemini makes them lazily
            fronts=fronts,
        )


ADAPTER = GeminiAdapter()
