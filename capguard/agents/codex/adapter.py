"""Codex CLI: the rollout files it writes, the flag that keeps its TUI in one process tree, the stop.

Metering follows the rollout files under `$CODEX_HOME/sessions` (Codex's own home, never moved: the user's
login lives there): files that exist at start from their size then (`codex exec resume` appends to the thread's
old file, in its old date folder), files that appear during the run from their first line. Only this run's
threads are charged: a file another Codex session holds open is left out (threads.py).
"""

from __future__ import annotations

import json
import os
import signal
import sys
from collections.abc import Mapping
from pathlib import Path

from capguard.agents.base import LaunchPlan, option_value, resolve_executable
from capguard.agents.codex.logs import RolloutParser
from capguard.agents.codex.threads import Attribution, OwnThreads
from capguard.config.settings import Settings
from capguard.core.errors import ConfigError
from capguard.metering.tail import WatchSpec

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - py-lt-311
    import tomli as tomllib

INSTALL_HINT = "install it with: npm install -g @openai/codex@0.169.1"
# Codex 0.169.1's subcommands (`codex --help`); a first word that is none of them is the TUI's prompt
COMMANDS = frozenset(
    (
        *("agents", "exec", "e", "review", "login", "logout", "mcp", "plugin", "app-server", "remote-control"),
        *("completion", "update", "doctor", "sandbox", "debug", "apply", "a", "resume", "queue", "archive"),
        *("delete", "migrate-rollouts", "migrate-nfs-db", "unarchive", "fork", "cloud", "exec-server", "features"),
        "help",
    )
)
TUI_COMMANDS = ("resume", "fork", "agents")  # the TUI, with a subcommand of its own
# the TUI runs its turns in a background app-server daemon that outlives it (and ignores SIGTERM), or in one the
# user started before; `--no-daemon` keeps them in the TUI's process, in capguard's tree, so a stop stops the spend
NO_DAEMON = "--no-daemon"
DAEMON_FILES = ("daemon.pid", "daemon-updater.pid")


def codex_home(env: Mapping[str, str]) -> Path:
    explicit = env.get("CODEX_HOME")
    return Path(explicit) if explicit else Path(env.get("HOME") or Path.home()) / ".codex"


_VALUED = ("-c", "--config", "-m", "--model", "-p", "--profile", "-C", "--cd", "-s", "--sandbox", "-a", "-i")
_VALUED_LONG = ("--ask-for-approval", "--image", "--add-dir", "--enable", "--disable", "--local-provider", "--remote")


def subcommand(args: list[str]) -> tuple[int, str | None]:
    """(index, word) of the first argument that is not an option or an option's value: Codex's subcommand or the
    TUI's prompt; (len(args), None) when there is none."""
    skip = False
    for i, arg in enumerate(args):
        if skip:
            skip = False
        elif arg == "--":
            break
        elif arg in _VALUED or arg in _VALUED_LONG or arg == "--remote-auth-token-env":
            skip = True
        elif not arg.startswith("-"):
            return i, arg
    return len(args), None


def without_daemon(args: list[str]) -> list[str] | None:
    """The TUI's arguments with `--no-daemon` where Codex takes it; None for a headless subcommand."""
    at, word = subcommand(args)
    if word in TUI_COMMANDS:
        return args if NO_DAEMON in args else [*args[: at + 1], NO_DAEMON, *args[at + 1 :]]
    if word is None or word not in COMMANDS:
        return args if NO_DAEMON in args else [NO_DAEMON, *args]
    return None


def config_overrides(args: list[str]) -> dict[str, str]:
    """`-c key=value` / `--config key=value` overrides, last one wins (values as written, TOML-quoted or not)."""
    found: dict[str, str] = {}
    for i, arg in enumerate(args):
        if arg == "--":
            break
        value = None
        if arg in ("-c", "--config") and i + 1 < len(args):
            value = args[i + 1]
        elif arg.startswith("--config="):
            value = arg[len("--config=") :]
        if value and "=" in value:
            key, _, raw = value.partition("=")
            found[key.strip()] = raw.strip().strip("'\"")
    return found


def named_model(args: list[str], home: Path) -> str | None:
    """The model Codex will ask for: `-m/--model`, else `-c model=...`, else config.toml's `model` (no profile)."""
    flag = option_value(args, "-m", "--model")
    if flag:
        return flag
    override = config_overrides(args).get("model")
    if override:
        return override
    if option_value(args, "-p", "--profile"):
        return None  # a profile may name another model: the rollout's turn_context will say
    try:
        model = tomllib.loads((home / "config.toml").read_text()).get("model")
    except (OSError, ValueError, UnicodeDecodeError):
        return None
    return model if isinstance(model, str) and model else None


def _daemons(home: Path) -> dict[int, float | None]:
    """The app-server daemons Codex's pid files name: pid -> its recorded start time."""
    found: dict[int, float | None] = {}
    for name in DAEMON_FILES:
        try:
            doc = json.loads((home / "app-server-daemon" / name).read_text())
        except (OSError, ValueError):
            continue
        pid = doc.get("pid") if isinstance(doc, dict) else None
        if isinstance(pid, int) and pid > 1:
            started = doc.get("processStartTime")
            found[pid] = started if isinstance(started, (int, float)) else None
    return found


def stop_own_daemons(home: Path, before: dict[int, float | None], *, me: int | None = None) -> list[int]:
    """SIGINT (the one signal a running daemon obeys) to each Codex daemon this run started: named in a pid file
    or running under capguard, a descendant of capguard, and not one that was there before the run."""
    import psutil

    me = me or os.getpid()
    candidates = set(_daemons(home))
    try:
        for proc in psutil.Process(me).children(recursive=True):
            try:
                if "app-server" in proc.cmdline():
                    candidates.add(proc.pid)
            except psutil.Error:
                continue
    except psutil.Error:
        pass
    stopped = []
    for pid in sorted(candidates):
        try:
            proc = psutil.Process(pid)
            if pid in before and _same_start(proc, before[pid]):
                continue  # the user's own daemon: never ours to stop
            if me not in {parent.pid for parent in proc.parents()}:
                continue
            proc.send_signal(signal.SIGINT)
            stopped.append(pid)
        except psutil.Error:
            continue
    return stopped


def _same_start(proc, recorded: float | None) -> bool:
    if recorded is None:
        return True  # cannot tell it apart: leave it alone
    try:
        return abs(proc.create_time() - recorded) < 2 or abs(proc.create_time() - recorded / 1000) < 2
    except Exception:
        return True


class CodexAdapter:
    name = "codex"
    install_hint = INSTALL_HINT

    def plan(
        self, args: list[str], settings: Settings, run_dir: Path, env: Mapping[str, str], run_id: str
    ) -> LaunchPlan:
        executable = resolve_executable(settings.launch.command or "codex", INSTALL_HINT, env)
        args = list(settings.launch.args) + list(args)
        if "--ephemeral" in (args[: args.index("--")] if "--" in args else args):
            raise ConfigError("--ephemeral: Codex then writes no rollout file, so capguard could not meter it")
        home = codex_home(env)
        sessions = home / "sessions"
        model = named_model(args, home)
        daemons_before = _daemons(home)
        notes: list[str] = []
        blind_spots = ["a reply cut short by the stop is billed but never written by Codex (no usage line)"]
        tui_args = without_daemon(args)
        if tui_args is not None:
            if option_value(args, "--remote"):
                raise ConfigError(
                    "--remote: the TUI's turns would run in a server outside capguard's process tree, which a stop"
                    " cannot reach; run it without --remote"
                )
            args = tui_args
            notes.append("the TUI runs with --no-daemon: its turns stay in its own process, so a stop stops them")
            blind_spots.append("the TUI's thread-title requests are never written by Codex (a few per thread)")
        notes.append(
            f"only this run's rollout files under {sessions} are charged (the ones a process of its tree holds"
            " open): another Codex session writing there meanwhile is left out"
        )
        attribution = Attribution()

        def parser(path: Path) -> OwnThreads:
            return OwnThreads(path, RolloutParser(str(path), model=model, tools=True), attribution)

        stopped: list[int] = []

        def on_stop(reason: str) -> None:
            stopped.extend(stop_own_daemons(home, daemons_before))

        def on_exit(pid: int) -> None:
            stopped.extend(stop_own_daemons(home, daemons_before))

        def daemon_note() -> list[str]:
            if not stopped:
                return []
            pids = ", ".join(map(str, sorted(set(stopped))))
            return [f"sent SIGINT to Codex's background daemon started during this run (pid {pids})"]

        return LaunchPlan(
            argv=[executable, *args],
            env=dict(env),
            watches=[WatchSpec(sessions, parser, glob="rollout-*.jsonl", from_end=True, dormant=True)],
            # `codex exec` leaves at once on SIGINT (turn_aborted recorded, a running tool killed); the npm
            # launcher forwards it to the native binary
            polite_stop=[(signal.SIGINT, 0.0)],
            fallback_model=model,
            named_model=model,
            reports_cost=False,
            notes=notes,
            blind_spots=blind_spots,
            on_stop=on_stop,
            on_exit=on_exit,
            summaries=[daemon_note, attribution.notes],
            folders=[sessions],  # Codex makes it lazily
        )


ADAPTER = CodexAdapter()
