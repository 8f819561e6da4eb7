"""Claude Code: the session it writes, the settings capguard adds, Claude's own cost knobs, the stop.

Metering follows the transcripts of exactly the sessions this process writes (a session id capguard
chooses, or the one `sessions/<pid>.json` names, /clear included), Claude's own running totals
(cost-state lines, the statusLine's live cost) and, where the user has no telemetry of their own,
OpenTelemetry api_request events sent to a receiver capguard runs on 127.0.0.1.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import sys
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
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
from capguard.agents.claude.cloud_premium import premium_region, with_premium
from capguard.agents.claude.logs import (
    TranscriptParser,
    last_reported_total,
    session_from_registry,
    statusline_events,
    transcript_dir,
)
from capguard.agents.claude.otel import OtelParser
from capguard.agents.claude.otel_gate import ThisRunsSessions
from capguard.config.settings import Settings
from capguard.core.errors import ConfigError
from capguard.core.events import Event
from capguard.core.redact import shown_url
from capguard.metering.otel_receiver import OtlpReceiver, telemetry_env, user_has_telemetry
from capguard.metering.proxy.aws_signing import (
    CREDENTIAL_VARIABLES,
    AwsSigner,
    SigningUnavailable,
    chain_in,
    is_region,
    loaded,
)
from capguard.metering.proxy.dialects import (
    ANTHROPIC,
    BEDROCK,
    FOUNDRY,
    MANTLE,
    NO_TASK_BUDGET,
    VERTEX,
    VERTEX_BY_LOCATION,
)
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
# Claude Code's providers besides Anthropic's API (none reads ANTHROPIC_BASE_URL: measured with 2.1.330), each
# fronted at the base-URL variable it reads
VERTEX_SWITCH = "CLAUDE_CODE_USE_VERTEX"  # Claude on Google Vertex AI: at ANTHROPIC_VERTEX_BASE_URL
MANTLE_SWITCH = "CLAUDE_CODE_USE_MANTLE"  # Claude in Amazon Bedrock: at ANTHROPIC_BEDROCK_MANTLE_BASE_URL
AWS_SWITCH = "CLAUDE_CODE_USE_ANTHROPIC_AWS"  # Claude Platform on AWS: at ANTHROPIC_AWS_BASE_URL
BEDROCK_SWITCH = "CLAUDE_CODE_USE_BEDROCK"  # Amazon Bedrock's InvokeModel API: at ANTHROPIC_BEDROCK_BASE_URL
# Claude on Google Cloud, Anthropic managed (claude.googleapis.com): the Claude API itself, at its prices, with a
# Google bearer token; at ANTHROPIC_GOOGLE_CLOUD_BASE_URL
GOOGLE_CLOUD_SWITCH = "CLAUDE_CODE_USE_ANTHROPIC_GOOGLE_CLOUD"
FOUNDRY_SWITCH = "CLAUDE_CODE_USE_FOUNDRY"  # Claude in Microsoft Foundry: at ANTHROPIC_FOUNDRY_BASE_URL
# The switches in the order Claude Code 2.1.330 picks its provider (the first one set wins)
SWITCH_ORDER = (
    BEDROCK_SWITCH, FOUNDRY_SWITCH, AWS_SWITCH, GOOGLE_CLOUD_SWITCH,
    MANTLE_SWITCH, VERTEX_SWITCH,
)  # fmt: skip


@dataclass(frozen=True)
class _OnAws:
    """An AWS-hosted Messages API Claude Code reaches at a base URL of its own. With an API key it sends the key
    (passed on by the proxy); without one it signs each request with AWS credentials for the host it sends to,
    which the proxy's address is not: strict mode then has it sign none (`skip`) and the proxy signs for AWS's
    host, as `service`, with the credentials the AWS SDK's chain finds."""

    name: str
    base: str  # the variable of its base URL
    keys: tuple[str, ...]  # the variables of its API key
    skip: str  # the variable that sends no credentials (a gateway of the user's adds them)
    host: str  # the region's endpoint, as Claude Code builds it
    dialect: str
    service: str  # SigV4's signing name, as Claude Code's SDK signs


ON_AWS = {
    # Claude Code reads no other variable for Bedrock's endpoint (AWS_ENDPOINT_URL_BEDROCK_RUNTIME alone: measured,
    # its requests did not go there); a GovCloud region's is the FIPS one, as Claude Code builds it
    BEDROCK_SWITCH: _OnAws(
        "Amazon Bedrock", "ANTHROPIC_BEDROCK_BASE_URL", ("AWS_BEARER_TOKEN_BEDROCK",),
        "CLAUDE_CODE_SKIP_BEDROCK_AUTH", "https://bedrock-runtime{fips}.{region}.amazonaws.com", BEDROCK, "bedrock",
    ),
    MANTLE_SWITCH: _OnAws(
        "Amazon Bedrock (Mantle)", "ANTHROPIC_BEDROCK_MANTLE_BASE_URL", ("AWS_BEARER_TOKEN_BEDROCK",),
        "CLAUDE_CODE_SKIP_MANTLE_AUTH", "https://bedrock-mantle.{region}.api.aws/anthropic", MANTLE,
        "bedrock-mantle",
    ),
    AWS_SWITCH: _OnAws(
        "Claude Platform on AWS", "ANTHROPIC_AWS_BASE_URL", ("ANTHROPIC_AWS_API_KEY",),
        "CLAUDE_CODE_SKIP_ANTHROPIC_AWS_AUTH", "https://aws-external-anthropic.{region}.api.aws", ANTHROPIC,
        "aws-external-anthropic",
    ),
}  # fmt: skip


def _settings_files(args: list[str], cwd: Path, claude_dir: Path) -> list[tuple[str, dict]]:
    """Claude's settings files (and --settings) that hold a JSON object, in Claude's order of precedence, the
    weakest first: user, project, local, --settings, managed."""
    found: list[tuple[str, dict]] = []
    paths = [
        claude_dir / "settings.json",
        cwd / ".claude" / "settings.json",
        cwd / ".claude" / "settings.local.json",
    ]
    for path in paths:
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if isinstance(data, dict):
            found.append((str(path), data))
    raw = option_value(args, "--settings")
    if raw is not None:
        try:
            data = json.loads(raw) if raw.lstrip().startswith("{") else json.loads(Path(raw).read_text())
        except (OSError, ValueError):
            data = None
        if isinstance(data, dict):
            found.append(("--settings", data))
    managed = Path("/etc/claude-code/managed-settings.json")
    try:
        data = json.loads(managed.read_text())
    except (OSError, ValueError):
        data = None
    if isinstance(data, dict):
        found.append((str(managed), data))
    return found


def _settings_env(args: list[str], cwd: Path, claude_dir: Path) -> list[tuple[str, dict]]:
    """The `env` tables of Claude's settings files (and of --settings): Claude Code applies them over its own
    environment, so they decide where its requests go. Weakest first, as `_settings_files`."""
    return [
        (where, data["env"])
        for where, data in _settings_files(args, cwd, claude_dir)
        if isinstance(data.get("env"), dict)
    ]


def chosen_provider(sources: list[tuple[str, dict]]) -> str | None:
    """The switch of the provider Claude Code uses (CLAUDE_CODE_USE_*), as it picks one; None: Anthropic's API."""
    return next((name for name in SWITCH_ORDER if env_true((_in_effect(sources, name) or ("", ""))[1])), None)


def _in_effect(sources: list[tuple[str, dict]], name: str) -> tuple[str, str] | None:
    """(where, value) of the variable Claude Code reads: the strongest source that sets it (`sources` weakest
    first), or None."""
    for where, table in reversed(sources):
        value = table.get(name)
        if value is not None and not isinstance(value, (dict, list)):
            return where, str(value)
    return None


def strict_fronts(args: list[str], env: Mapping[str, str], cwd: Path, claude_dir: Path) -> list[Front]:
    """Where Claude Code's requests go, for the proxy to stand in between: ANTHROPIC_BASE_URL (the user's, else
    the API's own), or the base URL of the cloud it is set to use. A provider capguard cannot front, or a base URL
    set where capguard cannot replace it, is a ConfigError (one line, exit 2), never a silent fallback."""
    sources = [("environment", dict(env)), *_settings_env(args, cwd, claude_dir)]
    chosen = chosen_provider(sources)
    for where, table in sources:  # Claude Code then sends every API request over it, whatever the base URL says
        if table.get("ANTHROPIC_UNIX_SOCKET"):
            raise ConfigError(
                strict_refusal(
                    "claude", f"ANTHROPIC_UNIX_SOCKET in {where} sends its requests over a unix socket, not the proxy"
                )
            )
    base = {
        VERTEX_SWITCH: "ANTHROPIC_VERTEX_BASE_URL", GOOGLE_CLOUD_SWITCH: GOOGLE_CLOUD_BASE,
        FOUNDRY_SWITCH: FOUNDRY_BASE,
        **{k: v.base for k, v in ON_AWS.items()},
    }.get(chosen or "", "ANTHROPIC_BASE_URL")  # fmt: skip
    for where, table in sources[1:]:
        for name in ("NO_PROXY", "no_proxy"):  # Claude Code applies it over the one that keeps the proxy's hop direct
            if name in table:
                raise ConfigError(
                    strict_refusal("claude", f"{name} is set in {where}, which Claude Code applies over capguard's")
                )
        if table.get(base):
            raise ConfigError(
                strict_refusal("claude", f"{base} is set in {where}, which Claude Code applies over capguard's proxy")
            )
    if chosen == VERTEX_SWITCH:  # the location is in each request's path (per model: VERTEX_REGION_CLAUDE_*)
        upstream = env.get("ANTHROPIC_VERTEX_BASE_URL") or VERTEX_BY_LOCATION
        if upstream != VERTEX_BY_LOCATION and not upstream.startswith(("http://", "https://")):
            raise ConfigError(strict_refusal("claude", f"ANTHROPIC_VERTEX_BASE_URL {upstream!r} is not an http(s) URL"))
        # priced at Anthropic's rates (Vertex's are the same, and genai-prices lacks some of Vertex's 1-hour ones)
        return [Front("vertex", upstream, VERTEX, ("ANTHROPIC_VERTEX_BASE_URL",), provider="anthropic")]
    if chosen in ON_AWS:
        return [_aws_front(ON_AWS[chosen], env, sources, _settings_files(args, cwd, claude_dir))]
    if chosen == GOOGLE_CLOUD_SWITCH:
        return [_google_cloud_front(env, sources)]
    if chosen == FOUNDRY_SWITCH:
        return [_foundry_front(env, sources)]
    upstream = env.get("ANTHROPIC_BASE_URL") or ANTHROPIC_DEFAULT
    if not upstream.startswith(("http://", "https://")):
        raise ConfigError(strict_refusal("claude", f"ANTHROPIC_BASE_URL {upstream!r} is not an http(s) URL"))
    return [Front("anthropic", upstream, "anthropic", ("ANTHROPIC_BASE_URL",))]


def _aws_front(
    cloud: _OnAws, env: Mapping[str, str], sources: list[tuple[str, dict]], files: list[tuple[str, dict]]
) -> Front:
    """The front of Bedrock, Mantle or Claude Platform on AWS. With an API key (or a gateway of the user's that
    signs) requests pass as Claude Code sends them; with AWS credentials the proxy signs them. The upstream is the
    user's base URL or the endpoint of the region Claude Code names."""

    def anywhere(name: str) -> str | None:
        found = _in_effect(sources, name)
        return found[1] if found and found[1] else None

    signer = None
    if not any(anywhere(key) for key in cloud.keys) and not env_true(anywhere(cloud.skip)):
        signer = _aws_signer(cloud, sources, files, anywhere("AWS_REGION") or anywhere("AWS_DEFAULT_REGION"))
    if anywhere("ANTHROPIC_SMALL_FAST_MODEL_AWS_REGION"):
        raise ConfigError(
            strict_refusal("claude", "ANTHROPIC_SMALL_FAST_MODEL_AWS_REGION sends some calls to a second region")
        )
    upstream = env.get(cloud.base)
    if not upstream:
        region = anywhere("AWS_REGION") or anywhere("AWS_DEFAULT_REGION")
        if region is None or not is_region(region):
            why = "no AWS_REGION is set" if region is None else f"AWS_REGION {region[:40]!r} is no AWS region"
            raise ConfigError(
                strict_refusal("claude", f"{why}, so the {cloud.name} endpoint Claude Code would call is unknown")
            )
        upstream = cloud.host.format(region=region, fips="-fips" if region.startswith("us-gov-") else "")
    if not upstream.startswith(("http://", "https://")):
        raise ConfigError(strict_refusal("claude", f"{cloud.base} {upstream!r} is not an http(s) URL"))
    mount = {MANTLE: "mantle", BEDROCK: "bedrock"}.get(cloud.dialect, "anthropic-aws")
    told = ((cloud.skip, "1"),) if signer is not None else ()
    return Front(mount, upstream, cloud.dialect, (cloud.base,), provider="anthropic", signer=signer, child_env=told)


def _aws_signer(
    cloud: _OnAws, sources: list[tuple[str, dict]], files: list[tuple[str, dict]], region: str | None
) -> AwsSigner:
    """The proxy's signer for a cloud Claude Code would sign for with AWS credentials: the credentials the AWS
    SDK's chain finds with the variables Claude Code sees (its settings over the environment), loaded now, so a
    missing or expired one is a refusal at start, not a failed first request."""
    for where, table in sources[1:]:  # applied over capguard's CLAUDE_CODE_SKIP_*: Claude Code would sign again
        if cloud.skip in table:
            raise ConfigError(
                strict_refusal("claude", f"{cloud.skip} is set in {where}, which Claude Code applies over capguard's")
            )
    for where, data in files:  # credentials from a command of Claude's own, which the AWS SDK's chain never runs
        if data.get("awsCredentialExport"):
            raise ConfigError(
                strict_refusal(
                    "claude",
                    f"awsCredentialExport in {where} gives Claude Code AWS credentials capguard cannot read (the proxy"
                    " signs with those the AWS SDK's chain finds)",
                )
            )
    if region is None or not is_region(region):
        why = "no AWS_REGION is set" if region is None else f"AWS_REGION {region[:40]!r} is no AWS region"
        raise ConfigError(strict_refusal("claude", f"{why} for the proxy to sign {cloud.name}'s requests in"))
    seen = {name: found[1] for name in CREDENTIAL_VARIABLES if (found := _in_effect(sources, name))}
    try:
        signer = loaded(cloud.service, region, chain_in(seen))
    except SigningUnavailable as err:
        raise ConfigError(
            strict_refusal("claude", f"without an API key ({' or '.join(cloud.keys)}) the proxy signs for AWS: {err}")
        ) from None
    return signer


GOOGLE_CLOUD_BASE = "ANTHROPIC_GOOGLE_CLOUD_BASE_URL"
_GCP_PROJECT = re.compile(r"^([a-z][a-z0-9.-]{0,62}:)?[a-z][a-z0-9-]{4,28}[a-z0-9]$")  # a domain-scoped one too
_WORKSPACE = re.compile(r"^wrkspc_[A-Za-z0-9]{1,64}$")


def _google_cloud_front(env: Mapping[str, str], sources: list[tuple[str, dict]]) -> Front:
    """Claude on Google Cloud (Anthropic managed): the Claude API, priced as Anthropic's, at the user's base URL or
    the one Anthropic's SDK builds from the project, the location and the workspace (Claude Code would ask gcloud
    for a project it is not given, which capguard cannot see: then it refuses). Only `global` is priced: a location
    of its own may cost more, at a rate nothing documents yet."""

    def named(*names: str) -> str | None:
        return next((found[1] for n in names if (found := _in_effect(sources, n)) and found[1]), None)

    upstream = env.get(GOOGLE_CLOUD_BASE)
    location = named("ANTHROPIC_GOOGLE_CLOUD_LOCATION") or "global"
    if location != "global":
        raise ConfigError(
            strict_refusal(
                "claude", f"ANTHROPIC_GOOGLE_CLOUD_LOCATION {location[:40]!r}: capguard prices the global location only"
            )
        )
    if not upstream:
        project = named("ANTHROPIC_GOOGLE_CLOUD_PROJECT", "GOOGLE_CLOUD_PROJECT")
        workspace = named("ANTHROPIC_GOOGLE_CLOUD_WORKSPACE_ID")
        if not (project and _GCP_PROJECT.match(project) and workspace and _WORKSPACE.match(workspace)):
            raise ConfigError(
                strict_refusal(
                    "claude",
                    "Claude on Google Cloud needs ANTHROPIC_GOOGLE_CLOUD_PROJECT and ANTHROPIC_GOOGLE_CLOUD_WORKSPACE_ID"
                    " (or ANTHROPIC_GOOGLE_CLOUD_BASE_URL) for capguard to know where its requests go",
                )
            )
        upstream = f"https://claude.googleapis.com/v1/projects/{project}/locations/global/workspaces/{workspace}/invoke"
    if not upstream.startswith(("http://", "https://")):
        raise ConfigError(strict_refusal("claude", f"{GOOGLE_CLOUD_BASE} {upstream!r} is not an http(s) URL"))
    return Front("anthropic-gcp", upstream, ANTHROPIC, (GOOGLE_CLOUD_BASE,), provider="anthropic")


FOUNDRY_BASE = "ANTHROPIC_FOUNDRY_BASE_URL"
_AZURE_RESOURCE = re.compile(r"^[a-z0-9][a-z0-9-]{1,63}$")


def _foundry_front(env: Mapping[str, str], sources: list[tuple[str, dict]]) -> Front:
    """Claude in Microsoft Foundry: at the user's base URL or the endpoint of ANTHROPIC_FOUNDRY_RESOURCE, as Claude
    Code builds it; the API key or Entra ID token passes through (neither is bound to the host)."""
    upstream = env.get(FOUNDRY_BASE)
    if not upstream:
        found = _in_effect(sources, "ANTHROPIC_FOUNDRY_RESOURCE")
        resource = found[1] if found else ""
        if not _AZURE_RESOURCE.match(resource):
            why = (
                "no ANTHROPIC_FOUNDRY_RESOURCE is set" if not resource else f"{resource[:40]!r} is no Foundry resource"
            )
            raise ConfigError(strict_refusal("claude", f"{why}, so the endpoint Claude Code would call is unknown"))
        upstream = f"https://{resource}.services.ai.azure.com/anthropic"
    if not upstream.startswith(("http://", "https://")):
        raise ConfigError(strict_refusal("claude", f"{FOUNDRY_BASE} {upstream!r} is not an http(s) URL"))
    return Front("foundry", upstream, FOUNDRY, (FOUNDRY_BASE,), provider="anthropic")


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
_CLOUD_NAMES = {VERTEX: "Vertex AI", BEDROCK: "Amazon Bedrock", MANTLE: "Amazon Bedrock (Mantle)"}


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
        sources = [("environment", dict(env)), *_settings_env(args, cwd, claude_dir)]
        cloud = chosen_provider(sources)
        # the premium of the cloud's regional endpoints, which Claude Code's own figures leave out
        platform = {
            VERTEX_SWITCH: VERTEX, MANTLE_SWITCH: MANTLE, BEDROCK_SWITCH: BEDROCK, FOUNDRY_SWITCH: FOUNDRY
        }.get(cloud or "")  # fmt: skip
        priced = with_premium(platform, premium_region([table for _, table in sources]))
        sessions = _Sessions(folder, started_at=time.time(), priced=priced)
        ours: list[str] = []
        notes: list[str] = []
        if platform in NO_TASK_BUDGET and settings.launch.task_budget is not None:
            # measured with 2.1.330: `claude -p --task-budget` sends none on Vertex, Bedrock or Mantle either
            notes.append(f"task budget: Claude Code sends none on {_CLOUD_NAMES[platform]}, and nor does capguard")

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
            signer = fronts[0].signer
            if signer is not None:
                notes.append(
                    f"strict mode: the proxy signs each request for AWS (SigV4, {signer.how.service} in"
                    f" {signer.how.region}) with the credentials the AWS SDK's chain found; Claude Code signs none"
                    f" ({fronts[0].child_env[0][0]}=1)"
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
