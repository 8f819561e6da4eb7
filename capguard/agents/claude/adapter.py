"""Claude Code: the session it writes, the settings capguard adds, Claude's own cost knobs, the stop.

Metering follows the transcripts of exactly the sessions this process writes (a session id capguard
chooses, or the one `sessions/<pid>.json` names, /clear included), Claude's own running totals
(cost-state lines, the statusLine's live cost) and, where the user has no telemetry of their own,
OpenTelemetry api_request events sent to a receiver capguard runs on 127.0.0.1.
"""

from __future__ import annotations

import json
import os
import shlex
import signal
import sys
import time
import uuid
from collections.abc import Callable, Mapping
from pathlib import Path

from capguard.agents.base import (
    Front,
    LaunchPlan,
    command_line,
    env_true,
    insert_before_separator,
    option_value,
    strict_refusal,
)
from capguard.agents.claude.logs import (
    TranscriptParser,
    last_reported_total,
    session_from_registry,
    statusline_events,
    transcript_dir,
)
from capguard.agents.claude.otel import OtelParser
from capguard.agents.claude.otel_gate import ThisRunsSessions
from capguard.agents.claude.vertex_premium import premium_region, with_premium
from capguard.config.settings import Settings
from capguard.core.errors import ConfigError
from capguard.core.events import Event
from capguard.core.redact import shown_url
from capguard.metering.otel_receiver import OtlpReceiver, telemetry_env, user_has_telemetry
from capguard.metering.proxy.dialects import VERTEX, VERTEX_BY_LOCATION
from capguard.metering.tail import Parser, WatchSpec

INSTALL_HINT = "install it with: npm install -g @anthropic-ai/claude-code@2.1.330 (node 20 needs the explicit version)"
TASK_BUDGET_MIN = 20_000
PRINT_FLAGS = ("-p", "--print")
SESSION_FLAGS = ("--session-id",)
RESUME_FLAGS = ("-r", "--resume", "-c", "--continue")


def config_dir(env: Mapping[str, str]) -> Path:
    explicit = env.get("CLAUDE_CONFIG_DIR")
    return Path(explicit) if explicit else Path(env.get("HOME") or Path.home()) / ".claude"


def _has(args: list[str], *flags: str) -> bool:
    for arg in args:
        if arg == "--":
            return False
        if arg in flags or any(arg.startswith(f + "=") for f in flags if f.startswith("--")):
            return True
    return False


def native_settings(settings: Settings, args: list[str], env: Mapping[str, str]) -> tuple[dict[str, str], list[str]]:
    """capguard's config as the variables and flags Claude Code reads (never overriding the user's own)."""
    launch = settings.launch
    native = {  # the environment variables Claude Code really reads
        "ANTHROPIC_MODEL": launch.model,
        "CLAUDE_CODE_MAX_OUTPUT_TOKENS": launch.max_output_tokens,
        "CLAUDE_CODE_EFFORT_LEVEL": launch.effort,
        "CLAUDE_CODE_SUBAGENT_MODEL": launch.subagent_model,
    }
    extra_env = {name: str(value) for name, value in native.items() if value is not None and name not in env}
    if launch.disable_thinking and "CLAUDE_CODE_DISABLE_THINKING" not in env:
        extra_env["CLAUDE_CODE_DISABLE_THINKING"] = "1"
    flags: list[str] = []
    caps = settings.caps
    strict = settings.supervise.meter == "proxy"
    if _has(args, *PRINT_FLAGS):  # Claude's own caps work in print mode only: belt and braces
        # (in strict mode the proxy holds the USD cap before each request; Claude's own finishes the crossing one)
        if caps.usd_micro is not None and not strict and not _has(args, "--max-budget-usd"):
            flags += ["--max-budget-usd", f"{caps.usd_micro / 1_000_000:.6f}".rstrip("0").rstrip(".")]
        if caps.steps is not None and not _has(args, "--max-turns") and "CLAUDE_CODE_MAX_TURNS" not in env:
            flags += ["--max-turns", str(caps.steps)]
    budget = launch.task_budget
    if budget is not None and not _has(args, "--task-budget"):
        if budget < TASK_BUDGET_MIN:
            raise ConfigError(
                f"{settings.origin('task_budget')}: task_budget: {budget} is below Claude's minimum of"
                f" {TASK_BUDGET_MIN:,} tokens"
            )
        flags += ["--task-budget", str(budget)]
    return extra_env, flags


ANTHROPIC_DEFAULT = "https://api.anthropic.com"
VERTEX_SWITCH = "CLAUDE_CODE_USE_VERTEX"  # Claude on Google Vertex AI: fronted at ANTHROPIC_VERTEX_BASE_URL
# Claude Code's other providers: their requests are signed for another cloud (or go to it), and none of them
# reads ANTHROPIC_BASE_URL (measured with Claude Code 2.1.330: each sent nothing to it)
OTHER_PROVIDERS = {
    "CLAUDE_CODE_USE_BEDROCK": "Amazon Bedrock",
    "CLAUDE_CODE_USE_FOUNDRY": "Microsoft Foundry",
    "CLAUDE_CODE_USE_MANTLE": "Amazon Bedrock (Mantle)",
    "CLAUDE_CODE_USE_ANTHROPIC_AWS": "Claude Platform on AWS",
    "CLAUDE_CODE_USE_ANTHROPIC_GOOGLE_CLOUD": "Claude on Google Cloud",
}


def _settings_env(args: list[str], cwd: Path, claude_dir: Path) -> list[tuple[str, dict]]:
    """The `env` tables of Claude's settings files (and of --settings): Claude Code applies them over its own
    environment, so they decide where its requests go."""
    found: list[tuple[str, dict]] = []
    paths = [
        Path("/etc/claude-code/managed-settings.json"),
        claude_dir / "settings.json",
        cwd / ".claude" / "settings.json",
        cwd / ".claude" / "settings.local.json",
    ]
    for path in paths:
        try:
            table = json.loads(path.read_text()).get("env")
        except (OSError, ValueError, AttributeError):
            continue
        if isinstance(table, dict):
            found.append((str(path), table))
    raw = option_value(args, "--settings")
    if raw is not None:
        try:
            data = json.loads(raw) if raw.lstrip().startswith("{") else json.loads(Path(raw).read_text())
            table = data.get("env") if isinstance(data, dict) else None
        except (OSError, ValueError):
            table = None
        if isinstance(table, dict):
            found.append(("--settings", table))
    return found


def strict_fronts(args: list[str], env: Mapping[str, str], cwd: Path, claude_dir: Path) -> list[Front]:
    """Where Claude Code's requests go, for the proxy to stand in between: ANTHROPIC_BASE_URL (the user's, else
    the API's own). A provider capguard cannot front, or a base URL set where capguard cannot replace it, is a
    ConfigError (one line, exit 2), never a silent fallback to the files."""
    sources = [("environment", dict(env)), *_settings_env(args, cwd, claude_dir)]
    for where, table in sources:
        for name, provider in OTHER_PROVIDERS.items():
            if env_true(table.get(name)):
                raise ConfigError(strict_refusal("claude", f"{name} in {where} sends its requests to {provider}"))
    for where, table in sources:  # Claude Code then sends every API request over it, whatever the base URL says
        if table.get("ANTHROPIC_UNIX_SOCKET"):
            raise ConfigError(
                strict_refusal(
                    "claude", f"ANTHROPIC_UNIX_SOCKET in {where} sends its requests over a unix socket, not the proxy"
                )
            )
    vertex = any(env_true(table.get(VERTEX_SWITCH)) for _, table in sources)
    for where, table in sources[1:]:
        if vertex and table.get("ANTHROPIC_VERTEX_BASE_URL"):
            raise ConfigError(
                strict_refusal(
                    "claude",
                    f"ANTHROPIC_VERTEX_BASE_URL is set in {where}, which Claude Code applies over capguard's proxy",
                )
            )
        for name in ("NO_PROXY", "no_proxy"):  # Claude Code applies it over the one that keeps the proxy's hop direct
            if name in table:
                raise ConfigError(
                    strict_refusal("claude", f"{name} is set in {where}, which Claude Code applies over capguard's")
                )
        if table.get("ANTHROPIC_BASE_URL"):
            raise ConfigError(
                strict_refusal(
                    "claude", f"ANTHROPIC_BASE_URL is set in {where}, which Claude Code applies over capguard's proxy"
                )
            )
    if vertex:  # the location is in each request's path (per model: VERTEX_REGION_CLAUDE_*), and so is its host
        upstream = env.get("ANTHROPIC_VERTEX_BASE_URL") or VERTEX_BY_LOCATION
        if upstream != VERTEX_BY_LOCATION and not upstream.startswith(("http://", "https://")):
            raise ConfigError(strict_refusal("claude", f"ANTHROPIC_VERTEX_BASE_URL {upstream!r} is not an http(s) URL"))
        # priced at Anthropic's rates (Vertex's are the same, and genai-prices lacks some of Vertex's 1-hour ones)
        return [Front("vertex", upstream, VERTEX, ("ANTHROPIC_VERTEX_BASE_URL",), provider="anthropic")]
    upstream = env.get("ANTHROPIC_BASE_URL") or ANTHROPIC_DEFAULT
    if not upstream.startswith(("http://", "https://")):
        raise ConfigError(strict_refusal("claude", f"ANTHROPIC_BASE_URL {upstream!r} is not an http(s) URL"))
    return [Front("anthropic", upstream, "anthropic", ("ANTHROPIC_BASE_URL",))]


def _user_statusline(args: list[str], cwd: Path, claude_dir: Path) -> str | None:
    """The statusLine command Claude would run without capguard (local > project > user settings)."""
    for path in (
        cwd / ".claude" / "settings.local.json",
        cwd / ".claude" / "settings.json",
        claude_dir / "settings.json",
    ):
        try:
            line = json.loads(path.read_text()).get("statusLine")
        except (OSError, ValueError, AttributeError):
            continue
        if isinstance(line, dict) and line.get("type") == "command" and line.get("command"):
            return str(line["command"])
    return None


def _merge_settings(args: list[str], ours: dict) -> tuple[list[str], dict]:
    """Fold our settings into the user's own `--settings` (a file or inline JSON), if they gave one."""
    raw = option_value(args, "--settings")
    if raw is None:
        return args, ours
    try:
        theirs = json.loads(raw) if raw.lstrip().startswith("{") else json.loads(Path(raw).read_text())
    except (OSError, ValueError) as err:
        raise ConfigError(f"--settings {raw}: cannot read it to add capguard's hooks ({err})") from None
    merged = dict(theirs)
    merged["statusLine"] = ours["statusLine"]
    hooks = dict(merged.get("hooks") or {})
    hooks["PreToolUse"] = list(hooks.get("PreToolUse") or []) + ours["hooks"]["PreToolUse"]
    merged["hooks"] = hooks
    kept: list[str] = []
    skip = False
    for arg in args:
        if skip:
            skip = False
        elif arg == "--settings":
            skip = True
        elif not arg.startswith("--settings="):
            kept.append(arg)
    return kept, merged


def _deny_hook(run_dir: Path) -> Path:
    """A PreToolUse hook: once capguard has decided to stop, every further tool call is denied."""
    hook = run_dir / "claude-pretooluse.sh"
    stop = shlex.quote(str(run_dir / "claude-stop.json"))
    hook.write_text(f"#!/bin/sh\n[ -f {stop} ] || exit 0\ncat {stop}\nexit 0\n")
    hook.chmod(0o700)
    return hook


def stop_message(reason: str) -> dict:
    text = f"capguard stopped this session: its {reason} cap was reached. Do not start new work."
    # deny alone lets the model try again; continue=false also ends the turn (terminal_reason hook_stopped)
    return {
        "hookSpecificOutput": {
            "hookEventName": "PreToolUse",
            "permissionDecision": "deny",
            "permissionDecisionReason": text,
        },
        "continue": False,
        "stopReason": text,
        "systemMessage": text,
    }


class _Sessions:
    """Which transcripts belong to this run: sessions seen, each followed once, with its baseline."""

    def __init__(self, folder: Path, started_at: float, priced: Callable[[Parser], Parser] = lambda p: p):
        self.folder = folder
        self.started_at = started_at
        self.priced = priced  # Vertex's regional premium, when the run may pay it
        self.seen: set[str] = set()
        self.usage: dict[str, list[int]] = {}  # max-wins per request, across all the run's transcripts

    def specs(self, session_id: str, *, existing_from_end: bool = False) -> list[WatchSpec]:
        """The session's transcript and its subagents' files. A transcript that already exists when capguard
        starts (a resumed session) is read from its end, and its last total is the baseline."""
        if session_id in self.seen:
            return []
        self.seen.add(session_id)
        path = self.folder / f"{session_id}.jsonl"
        resumed = existing_from_end and path.exists()
        baseline = last_reported_total(path) if path.exists() else 0  # what the session held before this run
        started_at, usage, priced = self.started_at, self.usage, self.priced
        return [
            WatchSpec(
                path,
                lambda p: priced(
                    TranscriptParser(
                        session_id=session_id, started_at=started_at, baseline_micro=baseline, source=str(p), seen=usage
                    )
                ),
                from_end=resumed,
            ),
            WatchSpec(
                self.folder / session_id / "subagents",
                lambda p: priced(
                    TranscriptParser(
                        session_id=session_id, started_at=started_at, subagent=True, source=str(p), seen=usage
                    )
                ),
                glob="agent-*.jsonl",
                from_end=resumed,
            ),
        ]


class _Registry:
    """Parses `sessions/<pid>.json`, rewritten by Claude Code on each status change and on /clear."""

    def feed(self, data: bytes, offset: int) -> list[Event]:
        seen = session_from_registry(data)
        return [seen] if seen else []


class _Statusline:
    def __init__(self, path: Path):
        self.source = str(path)

    def feed(self, line: bytes, offset: int) -> list[Event]:
        return statusline_events(line, offset, self.source)


STATUSLINE_REFRESH_S = 2


class ClaudeAdapter:
    name = "claude"
    install_hint = INSTALL_HINT

    def plan(
        self, args: list[str], settings: Settings, run_dir: Path, env: Mapping[str, str], run_id: str
    ) -> LaunchPlan:
        executable, args = command_line("claude", INSTALL_HINT, settings, args, env)
        cwd = Path.cwd().resolve()
        claude_dir = config_dir(env)
        folder = transcript_dir(claude_dir, cwd)
        # Claude creates these lazily; watching them needs them now (and no wider tree than them)
        priced = with_premium(premium_region([env, *(table for _, table in _settings_env(args, cwd, claude_dir))]))
        sessions = _Sessions(folder, started_at=time.time(), priced=priced)
        ours: list[str] = []
        notes: list[str] = []

        if _has(args, "--no-session-persistence"):
            raise ConfigError(
                "--no-session-persistence: Claude Code then writes no transcript, so capguard could not meter it"
            )
        chosen = option_value(args, *SESSION_FLAGS)
        if chosen is None and not _has(args, *RESUME_FLAGS):
            chosen = str(uuid.uuid4())
            ours += ["--session-id", chosen]
        watches = sessions.specs(chosen, existing_from_end=True) if chosen else []
        resumed = option_value(args, "--resume", "-r")
        resumed = None if resumed is None or resumed.startswith("-") else resumed  # `-r` alone opens a picker
        if resumed and not _has(args, "--fork-session"):
            watches += sessions.specs(resumed, existing_from_end=True)
        elif _has(args, *RESUME_FLAGS):
            notes.append("the session is learnt from Claude's registry once it starts (resume/continue/fork)")

        statusline = _user_statusline(args, cwd, claude_dir)
        command = f"{shlex.quote(sys.executable)} -m capguard.agents.claude.statusline {shlex.quote(str(run_dir))}"
        if statusline:
            command += f" {shlex.quote(statusline)}"
            notes.append(f"your statusLine command is chained after capguard's: {statusline}")
        ours_settings = {
            # refreshed on a timer too (seconds; Claude Code >= 2.1.97): the elapsed time and the wall cap's
            # remainder move while Claude sits idle, when no event would re-run the command
            "statusLine": {"type": "command", "command": command, "refreshInterval": STATUSLINE_REFRESH_S},
            "hooks": {
                "PreToolUse": [{"matcher": "*", "hooks": [{"type": "command", "command": str(_deny_hook(run_dir))}]}]
            },
        }
        strict = settings.supervise.meter == "proxy"
        fronts = strict_fronts(args, env, cwd, claude_dir) if strict else None
        if fronts:
            notes.append(
                f"strict mode: every API call goes through capguard's proxy to {shown_url(fronts[0].upstream)}"
            )
        args, merged = _merge_settings(args, ours_settings)
        ours += ["--settings", json.dumps(merged)]
        extra_env, native_flags = native_settings(settings, args, env)
        ours += native_flags
        status_path = run_dir / "claude.statusline.jsonl"
        watches.append(WatchSpec(status_path, lambda p: priced(_Statusline(p))))

        def on_spawn(pid: int) -> list[WatchSpec]:
            return [WatchSpec(claude_dir / "sessions" / f"{pid}.json", lambda p: _Registry(), whole=True)]

        def on_stop(reason: str) -> None:
            target = run_dir / "claude-stop.json"
            tmp = target.with_suffix(".tmp")
            tmp.write_text(json.dumps(stop_message(reason)))
            os.replace(tmp, target)

        def on_exit(pid: int) -> None:
            remove_stale_registry(claude_dir, pid, env)

        services, summaries = [], []
        if user_has_telemetry(env):
            notes.append(
                "your OpenTelemetry settings are left alone: calls missing from the transcript "
                "(compaction) are counted from Claude's own totals only"
            )
        else:  # a second source, per API call, for what the transcript misses
            receiver = OtlpReceiver(run_dir / "claude.otel.jsonl")  # authenticated: a random secret per run
            services.append(receiver)
            extra_env.update(telemetry_env(receiver))
            gates: list[ThisRunsSessions] = []

            def otel_parser(path: Path) -> ThisRunsSessions:
                gates.append(ThisRunsSessions(priced(OtelParser(str(path))), lambda: sessions.seen))
                return gates[-1]

            watches.append(WatchSpec(receiver.out, otel_parser))
            summaries += [receiver.notes, lambda: [note for gate in gates for note in gate.notes()]]
        child_env = {**env, **extra_env}
        return LaunchPlan(
            argv=[executable, *insert_before_separator(args, ours)],
            env=child_env,
            watches=watches,
            # Claude Code leaves at once on SIGINT (a running Bash tool is killed first, ~1.5 s)
            polite_stop=[(signal.SIGINT, 0.0)],
            fallback_model=child_env.get("ANTHROPIC_MODEL"),
            notes=notes,
            blind_spots=[]
            if strict  # the proxy sees every call, in flight or compaction
            else [
                "a reply in flight when the stop comes is billed but never written by Claude Code",
                "compaction calls appear only in Claude's own totals (cost-state at exit, statusLine while interactive)",
            ],
            watch_trees=[folder, claude_dir / "sessions", run_dir],
            folders=[folder, claude_dir / "sessions"],  # Claude makes them lazily
            on_spawn=on_spawn,
            follow=sessions.specs,
            on_stop=on_stop,
            on_exit=on_exit,
            services=services,
            summaries=summaries,
            fronts=fronts,
        )


def remove_stale_registry(claude_dir: Path, pid: int, env: Mapping[str, str]) -> None:
    """After a forced kill Claude cannot delete its registry entry and socket: do it for it."""
    try:
        os.kill(pid, 0)
        return  # still alive (should not happen): not stale
    except ProcessLookupError:
        pass
    except PermissionError:
        return
    tmp = Path(env.get("CLAUDE_CODE_TMPDIR") or "/tmp")
    for path in [
        claude_dir / "sessions" / f"{pid}.json",
        *(claude_dir / "sessions").glob(f"{pid}.*.key"),
        tmp / "cc-socks" / f"{pid}.sock",
    ]:
        try:
            path.unlink()
        except OSError:
            pass


ADAPTER = ClaudeAdapter()
