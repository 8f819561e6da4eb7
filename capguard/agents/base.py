"""What an agent adapter gives the supervisor: a launch plan, as plain data."""

from __future__ import annotations

import os
import re
import shutil
import signal
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from capguard.config.settings import Settings
from capguard.core.errors import AgentNotExecutable, AgentNotFound
from capguard.metering.proxy.aws_signing import AwsSigner
from capguard.metering.tail import WatchSpec


@dataclass(frozen=True)
class Front:
    """One provider the metering proxy stands in for (strict mode): the agent is given the proxy's URL for it in
    its own base-URL variables `env` (never argv: the URL holds the run's secret); requests go on to `upstream`."""

    mount: str  # a name in the proxy's path, e.g. "anthropic"
    upstream: str  # the provider's base URL the user configured, or its default
    dialect: str  # "anthropic" (Messages) or "chat" (OpenAI Chat Completions): the format of its refusals
    env: tuple[str, ...]  # the agent's variables that get the proxy's URL
    # An agent that takes the URL on its command line only (Codex): it gets a URL without the secret, and sends
    # the secret in `header`, which it reads from its variable `secret_env`; upstream the header is dropped, or
    # given back the user's own value `restore` (a header the agent already sends from that variable)
    header: str | None = None
    secret_env: str | None = None
    restore: str | None = None
    # The provider whose prices apply (genai-prices' name, e.g. "deepseek"), when the request's model does not
    # say it and the dialect's default provider is wrong (an OpenAI-compatible API that is not OpenAI's)
    provider: str | None = None
    # Appended to the proxy's URL in `env`: the part of the path the agent leaves out (litellm's Gemini base URL
    # ends before `/models/...`, the proxy routes Gemini by `/v1beta/models/...`)
    path: str = ""
    # The proxy signs this front's requests for AWS (SigV4, credentials loaded): the agent signs none
    signer: AwsSigner | None = field(default=None, repr=False, compare=False)
    # Set in the agent's environment beside the proxy's URL (e.g. the variable that has it send no signature)
    child_env: tuple[tuple[str, str], ...] = ()


@dataclass
class LaunchPlan:
    argv: list[str]
    env: dict[str, str]
    watches: list[WatchSpec]
    # Polite stop: signals sent to the agent alone, each followed by a pause, before the grace timer.
    polite_stop: list[tuple[signal.Signals, float]] = field(default_factory=lambda: [(signal.SIGTERM, 0.0)])
    fallback_model: str | None = None  # priced when the log hides the model name
    # the model the user named for the agent, as the provider spells it (not an alias the agent resolves
    # later): one with no price under a USD cap is refused or warned about at start
    named_model: str | None = None
    # the agent logs its own price of each reply (aider's, from litellm's data): a model capguard cannot price is
    # not refused at start, since the agent may price it; a reply nobody priced still stops the run (unpriced)
    reports_cost: bool = False
    notes: list[str] = field(default_factory=list)  # what capguard changed or chose, for the report
    # folders the agent makes lazily that the watches need at start: made at launch, never by a dry run
    folders: list[Path] = field(default_factory=list)
    blind_spots: list[str] = field(default_factory=list)  # spend the files cannot show
    # the agent's token counts are its own estimates: why, and how to get the server's (said at start under a
    # USD or token cap)
    estimates: str | None = None
    watch_trees: list[Path] = field(default_factory=list)  # directories where followed files may appear
    # Hooks for agents whose files are known only as they run (all optional):
    on_spawn: Callable[[int], list[WatchSpec]] | None = None  # the agent's pid -> files to follow
    follow: Callable[[str], list[WatchSpec]] | None = None  # a session the agent writes -> its files
    on_stop: Callable[[str], None] | None = None  # the stop is decided (why, in words): tell the agent
    on_exit: Callable[[int], None] | None = None  # the agent's pid, after the tree is gone: tidy up
    services: list = field(default_factory=list)  # started before the agent, stopped after (receivers)
    summaries: list[Callable[[], list[str]]] = field(default_factory=list)  # notes known once the run is over
    # strict mode: the providers the metering proxy fronts (None: the adapter does not support strict mode)
    fronts: list[Front] | None = None
    # strict mode, an agent told the proxy's URLs in a config value: the proxy's URL of each front's mount (in the
    # path the run's secret, but for a front whose secret goes in a header) -> its argv and variables to add
    on_proxy: Callable[[dict[str, str]], tuple[list[str], dict[str, str]]] | None = None


class Adapter(Protocol):
    name: str
    install_hint: str

    def plan(
        self, args: list[str], settings: Settings, run_dir: Path, env: Mapping[str, str], run_id: str
    ) -> LaunchPlan: ...


def resolve_executable(command: str, install_hint: str, env: Mapping[str, str]) -> str:
    """The full path of the agent, or AgentNotFound (exit 127) with how to install it."""
    found = shutil.which(command, path=env.get("PATH", os.defpath))
    if found is None:
        if os.sep in command and os.path.exists(command):
            raise AgentNotExecutable(f"{command}: not executable")
        raise AgentNotFound(f"{command}: command not found; {install_hint}")
    return found


def command_line(
    name: str, install_hint: str, settings: Settings, args: list[str], env: Mapping[str, str]
) -> tuple[str, list[str]]:
    """The agent's executable (its `command` setting, else `name` on PATH) and its arguments, the configured `args`
    first, then the user's."""
    executable = resolve_executable(settings.launch.command or name, install_hint, env)
    return executable, list(settings.launch.args) + list(args)


def option_value(args: list[str], *names: str) -> str | None:
    """The last value given to any of `names` (`--opt VALUE` or `--opt=VALUE`), as argparse would take it."""
    value = None
    for i, arg in enumerate(args):
        if arg == "--":
            break
        for name in names:
            if arg == name and i + 1 < len(args):
                value = args[i + 1]
            elif arg.startswith(name + "="):
                value = arg[len(name) + 1 :]
    return value


def without_option(args: list[str], name: str) -> list[str]:
    """`args` without every `name VALUE` / `name=VALUE` before a `--` (the value is taken elsewhere)."""
    kept: list[str] = []
    skip = ended = False
    for arg in args:
        if skip:
            skip = False
        elif ended or arg == "--":
            ended = True
            kept.append(arg)
        elif arg == name:
            skip = True
        elif not arg.startswith(name + "="):
            kept.append(arg)
    return kept


TRUE_WORDS = ("1", "true", "yes", "on")


def env_true(value: object) -> bool:
    return str(value).strip().lower() in TRUE_WORDS if value is not None else False


def signing_notes(fronts: list[Front]) -> list[str]:
    """What the report says of each front the proxy signs for AWS (the agent's own signature is replaced)."""
    return [
        f"strict mode: the proxy signs each request to {f.mount} for AWS (SigV4, {f.signer.how.service} in"
        f" {f.signer.how.region}) with the credentials the AWS SDK's chain found"
        for f in fronts
        if f.signer is not None
    ]


# A Gemini API base URL as the SDKs take it, ending in its version (`https://generativelanguage.googleapis.com/v1beta`)
_API_VERSION = re.compile(r"^(.*?)(/v\d+(?:alpha|beta)?\d*)/?$")


def split_api_version(url: str) -> tuple[str, str] | None:
    """(the base URL without its API version, the version's path) for a Gemini API base URL, or None: the proxy
    routes Gemini requests by `/v1beta/models/...`, which such an agent leaves out of what it appends."""
    found = _API_VERSION.match(url)
    return None if found is None else (found.group(1), found.group(2))


def strict_refusal(agent: str, why: str) -> str:
    """The one line of a strict-mode refusal at start: what cannot be fronted, and the way out."""
    return f"capguard --strict cannot meter {agent} here: {why}; run it with --meter files (its logs) instead"


def insert_before_separator(args: list[str], extra: list[str]) -> list[str]:
    """Append options after the user's (so ours win in argparse) but before a `--`."""
    if "--" in args:
        at = args.index("--")
        return args[:at] + extra + args[at:]
    return args + extra
