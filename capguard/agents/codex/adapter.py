"""Codex CLI: the rollout files it writes, the flag that keeps its TUI in one process tree, the stop.

Metering follows the rollout files under `$CODEX_HOME/sessions` (Codex's own home, never moved: the user's
login lives there): files that exist at start from their size then (`codex exec resume` appends to the thread's
old file, in its old date folder), files that appear during the run from their first line. Only this run's
threads are charged: a file another Codex session holds open is left out (threads.py).
"""

from __future__ import annotations

import json
import os
import re
import signal
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from capguard.agents.base import (
    Front,
    LaunchPlan,
    command_line,
    insert_before_separator,
    option_value,
    signing_notes,
    strict_refusal,
)
from capguard.agents.codex.logs import RolloutParser, priced_name
from capguard.agents.codex.threads import Attribution, OwnThreads
from capguard.config.settings import Settings
from capguard.core.errors import ConfigError
from capguard.metering.proxy.aws_signing import SigningUnavailable, chain_in, is_region, loaded, profile_region
from capguard.metering.proxy.dialects import RESPONSES
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


# Codex 0.169.1's configuration, weakest first: the system's config.toml, the user's ($CODEX_HOME/config.toml),
# the profile's file ($CODEX_HOME/<name>.config.toml, with -p/--profile), then `-c`. A project's .codex/config.toml
# may not set the provider or its URL (Codex ignores them there). The system's managed_config.toml and
# requirements.toml beat `-c`: one that sets where requests go is refused (`unmanaged`).
SYSTEM_DIR = Path("/etc/codex")
_ROUTING = ("model_provider", "model_providers", "openai_base_url", "chatgpt_base_url")


def layered_config(args: list[str], home: Path) -> dict[str, Any]:
    """The system's, the user's and the profile's config, merged as Codex merges them (the later wins, tables
    key by key). ConfigError: a file that cannot be read."""
    merged: dict[str, Any] = {}
    layers = [SYSTEM_DIR / "config.toml", home / "config.toml"]
    profile = option_value(args, "-p", "--profile")
    if profile:
        layers.append(home / f"{profile}.config.toml")
    for path in layers:
        _merge(merged, _toml(path))
    return merged


def _merge(into: dict[str, Any], layer: Mapping[str, Any]) -> None:
    for key, value in layer.items():
        if isinstance(value, dict) and isinstance(into.get(key), dict):
            _merge(into[key], value)
        else:
            into[key] = value


def unmanaged(system: Path) -> None:
    """ConfigError when a system file that beats Codex's command line sets where its requests go."""
    for name in ("managed_config.toml", "requirements.toml"):
        doc = _toml(system / name)
        found = next((key for key in _ROUTING if key in doc), None)
        if found is not None:
            raise ConfigError(
                strict_refusal(
                    "codex", f"{system / name} sets {found}, which Codex applies over capguard's command line"
                )
            )


def chosen_provider(args: list[str], home: Path) -> str | None:
    """The model_provider Codex will use, as `-c` or its config layers name it (None: unreadable or unsaid)."""
    found = config_overrides(args).get("model_provider")
    if not found:
        try:
            found = layered_config(args, home).get("model_provider")
        except ConfigError:
            return None
    return found if isinstance(found, str) and found else None


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


OPENAI_DEFAULT = "https://api.openai.com/v1"
# Strict mode. Codex takes a provider's base URL only from its config (OPENAI_BASE_URL is not read), given on its
# command line, which every user of the machine can read: the URL there holds no secret; Codex sends the run's
# secret in a header it fills from a variable. Its built-in OpenAI provider takes no headers of ours, but sends
# $OPENAI_PROJECT as OpenAI-Project: the secret goes there, and the proxy sends the user's own value on.
PROXY_HEADER = "X-Capguard-Key"
PROXY_KEY_ENV = "CAPGUARD_PROXY_KEY"
OPENAI_HEADER = ("OpenAI-Project", "OPENAI_PROJECT")
_BARE_KEY = re.compile(r"^[A-Za-z0-9_-]+$")  # a TOML key that needs no quotes in `-c a.b.c=...`


def _toml(path: Path) -> dict:
    try:
        return tomllib.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError, UnicodeDecodeError) as err:
        raise ConfigError(strict_refusal("codex", f"{path} cannot be read ({type(err).__name__})")) from None


def _openai_auth_refusal(env: Mapping[str, str], home: Path) -> str | None:
    """Why Codex's built-in OpenAI provider cannot be fronted with the credentials it has, or None (an API key)."""
    if env.get("CODEX_API_KEY"):
        return None
    if env.get("CODEX_ACCESS_TOKEN"):
        return "CODEX_ACCESS_TOKEN signs Codex in to ChatGPT, whose backend the proxy does not front"
    doc = _auth_doc(home)
    if doc.get("tokens") or _stored_auth_mode(home).startswith("chatgpt"):
        return (
            "Codex is signed in with ChatGPT, and its requests go to the ChatGPT backend, which the proxy does not"
            " front (an API key can be: codex login --with-api-key)"
        )
    if doc.get("OPENAI_API_KEY"):
        return None
    return (
        f"no API key for Codex's OpenAI provider was found (CODEX_API_KEY, or {home / 'auth.json'} from codex login"
        " --with-api-key): ChatGPT sign-in or keyring credentials cannot be fronted"
    )


# Codex's built-in Amazon Bedrock providers: OpenAI's models through the Responses API at each region's endpoint,
# signed with SigV4 for that host by the AWS SDK's chain, or with a Bedrock API key (AWS_BEARER_TOKEN_BEDROCK,
# which wins over AWS credentials). Of such a provider only base_url, auth, http_headers and aws.* may be changed:
# the proxy's secret cannot go in a header of ours, so it goes as the API key Codex sends (Bearer), and the proxy
# sends the user's own key on, or signs the request itself.
BEDROCK_PROVIDERS = {  # provider -> (SigV4's service name, its endpoint's base URL in a region)
    "amazon-bedrock": ("bedrock-mantle", "https://bedrock-mantle.{region}.api.aws/openai/v1"),
    "amazon-bedrock-runtime": ("bedrock", "https://bedrock-runtime.{region}.amazonaws.com/openai/v1"),
}
BEARER_ENV = "AWS_BEARER_TOKEN_BEDROCK"


def bedrock_front(
    provider: str, config: Mapping[str, Any], overrides: Mapping[str, str], env: Mapping[str, str], home: Path
) -> tuple[Front, list[str]]:
    """The front of Codex's built-in Bedrock provider, and the `-c` override pointing it at the proxy."""
    entry = (config.get("model_providers") or {}).get(provider)
    entry = entry if isinstance(entry, dict) else {}

    def setting(key: str) -> Any:  # the command line's `-c model_providers.<provider>.<key>=...`, then config.toml
        found = overrides.get(f"model_providers.{provider}.{key}")
        if found is not None:
            return found
        value: Any = entry
        for part in key.split("."):
            value = value.get(part) if isinstance(value, dict) else None
        return value

    for key in overrides:  # a table given whole (`aws={...}`) or a key capguard does not read
        rest = key.removeprefix(f"model_providers.{provider}.")
        if (
            rest != key
            and rest not in ("base_url", "aws.region", "aws.profile")
            and not rest.startswith("http_headers")
        ):
            raise ConfigError(strict_refusal("codex", f"-c {key}=... is a setting capguard cannot read"))
    for key in ("auth", "aws.credential_export", "aws.auth_refresh"):
        if setting(key) is not None or any(k.startswith(f"model_providers.{provider}.{key}.") for k in overrides):
            raise ConfigError(
                strict_refusal("codex", f"model_providers.{provider}.{key} gives Codex credentials capguard cannot"
                               " read: use AWS credentials or AWS_BEARER_TOKEN_BEDROCK")
            )  # fmt: skip
    stored = _stored_auth_mode(home)
    if stored.startswith("bedrock"):
        raise ConfigError(
            strict_refusal("codex", f"Codex's stored Bedrock login ({stored}) cannot be fronted: use AWS credentials"
                           " or AWS_BEARER_TOKEN_BEDROCK")
        )  # fmt: skip
    chain = chain_in(env)
    profile = setting("aws.profile")
    if isinstance(profile, str) and profile:
        chain["AWS_PROFILE"] = profile
    region = setting("aws.region") or env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION") or profile_region(chain)
    if not is_region(region):
        why = "no AWS region was found" if not region else f"the AWS region {str(region)[:40]!r} is malformed"
        raise ConfigError(
            strict_refusal("codex", f"{why} (model_providers.{provider}.aws.region, AWS_REGION or AWS_DEFAULT_REGION)")
        )
    service, template = BEDROCK_PROVIDERS[provider]
    upstream = setting("base_url") or template.format(region=region)
    token = env.get(BEARER_ENV)
    if token:  # a Bedrock API key: sent on as Codex would have sent it
        front = Front(provider, str(upstream), RESPONSES, (), "Authorization", BEARER_ENV, f"Bearer {token}",
                      provider="bedrock")  # fmt: skip
    else:
        try:
            signer = loaded(service, str(region), chain)
        except SigningUnavailable as err:
            raise ConfigError(strict_refusal("codex", str(err))) from None
        front = Front(provider, str(upstream), RESPONSES, (), "Authorization", BEARER_ENV, None, provider="bedrock",
                      signer=signer)  # fmt: skip
    return front, [f'model_providers.{provider}.base_url="{{url}}"']


def _auth_doc(home: Path) -> dict[str, Any]:
    """Codex's stored login ($CODEX_HOME/auth.json), or {} when there is none that can be read."""
    try:
        doc = json.loads((home / "auth.json").read_text())
    except (OSError, ValueError):
        return {}
    return doc if isinstance(doc, dict) else {}


def _stored_auth_mode(home: Path) -> str:
    return str(_auth_doc(home).get("auth_mode") or "").lower()


def without_config(args: list[str], keys: set[str]) -> list[str]:
    """`args` without the `-c key=value` overrides of `keys` (capguard sets them; their value is taken as upstream)."""
    kept: list[str] = []
    i = 0
    while i < len(args):
        arg = args[i]
        if arg == "--":
            return kept + args[i:]
        value, width = None, 1
        if arg in ("-c", "--config") and i + 1 < len(args):
            value, width = args[i + 1], 2
        elif arg.startswith("--config="):
            value = arg[len("--config=") :]
        if value is not None and value.partition("=")[0].strip() in keys:
            i += width
            continue
        kept.extend(args[i : i + width])
        i += width
    return kept


def strict_front(args: list[str], env: Mapping[str, str], home: Path) -> tuple[Front, list[str], list[str]]:
    """The provider Codex will call, fronted by the proxy: (the front, Codex's arguments without the overrides capguard
    takes over, the `-c` overrides pointing Codex at the proxy with "{url}" for the proxy's URL). What cannot be
    fronted is a ConfigError (one line, exit 2)."""
    if "--oss" in args or option_value(args, "--local-provider"):
        raise ConfigError(
            strict_refusal("codex", "--oss/--local-provider runs a local model server capguard does not front")
        )
    overrides = config_overrides(args)
    unmanaged(SYSTEM_DIR)
    config = layered_config(args, home)
    provider = overrides.get("model_provider") or config.get("model_provider")
    provider = provider if isinstance(provider, str) and provider else "openai"
    for key in overrides:
        if key in ("model_providers", f"model_providers.{provider}", "profiles") or key.startswith("profiles."):
            raise ConfigError(strict_refusal("codex", f"-c {key}=... may send requests past capguard's proxy"))
    if provider in BEDROCK_PROVIDERS:
        front, told = bedrock_front(provider, config, overrides, env, home)
        args = without_config(args, {f"model_providers.{provider}.base_url"})
    elif provider == "openai":
        if why := _openai_auth_refusal(env, home):
            raise ConfigError(strict_refusal("codex", why))
        upstream = overrides.get("openai_base_url") or config.get("openai_base_url") or OPENAI_DEFAULT
        header, variable = OPENAI_HEADER
        front = Front("openai", str(upstream), RESPONSES, (), header, variable, env.get(variable) or None)
        told = ['openai_base_url="{url}"']
        args = without_config(args, {"openai_base_url"})
    else:
        entry = (config.get("model_providers") or {}).get(provider)
        if not isinstance(entry, dict):
            raise ConfigError(
                strict_refusal(
                    "codex",
                    f"model_provider {provider!r} is built into Codex; the proxy fronts its OpenAI provider (with an"
                    " API key) and model_providers entries with a base_url",
                )
            )
        if not _BARE_KEY.match(provider):
            raise ConfigError(strict_refusal("codex", f"model_provider {provider!r} has a name capguard cannot quote"))
        key = f"model_providers.{provider}.base_url"
        upstream = overrides.get(key) or entry.get("base_url")
        if not isinstance(upstream, str) or not upstream:
            raise ConfigError(strict_refusal("codex", f"model_providers.{provider} has no base_url"))
        front = Front("codex", upstream, RESPONSES, (), PROXY_HEADER, PROXY_KEY_ENV)
        told = [f'{key}="{{url}}"', f'model_providers.{provider}.env_http_headers.{PROXY_HEADER}="{PROXY_KEY_ENV}"']
        args = without_config(args, {key})
    if not front.upstream.startswith(("http://", "https://")):
        raise ConfigError(strict_refusal("codex", f"the base URL {front.upstream!r} is not http(s)"))
    # named on the command line too, which beats every config layer capguard does not refuse below
    told = [f'model_provider="{provider}"', *told]
    args = without_config(args, {"model_provider"})
    # the web search tool runs on the provider's side and bills searches the proxy cannot bound: off
    return front, args, [*told, 'web_search="disabled"']


class CodexAdapter:
    name = "codex"
    install_hint = INSTALL_HINT

    def plan(
        self, args: list[str], settings: Settings, run_dir: Path, env: Mapping[str, str], run_id: str
    ) -> LaunchPlan:
        executable, args = command_line("codex", INSTALL_HINT, settings, args, env)
        if "--ephemeral" in (args[: args.index("--")] if "--" in args else args):
            raise ConfigError("--ephemeral: Codex then writes no rollout file, so capguard could not meter it")
        home = codex_home(env)
        sessions = home / "sessions"
        model = priced_name(named_model(args, home), chosen_provider(args, home))
        daemons_before = _daemons(home)
        notes: list[str] = []
        blind_spots = ["a reply cut short by the stop is billed but never written by Codex (no usage line)"]
        strict = settings.supervise.meter == "proxy"
        tui_args = without_daemon(args)
        if tui_args is not None:
            if option_value(args, "--remote"):
                raise ConfigError(
                    "--remote: the TUI's turns would run in a server outside capguard's process tree, which a stop"
                    " cannot reach; run it without --remote"
                )
            args = tui_args
            notes.append("the TUI runs with --no-daemon: its turns stay in its own process, so a stop stops them")
            if not strict:
                blind_spots.append("the TUI's thread-title requests are never written by Codex (a few per thread)")
        fronts: list[Front] | None = None
        on_proxy: Callable[[dict[str, str]], tuple[list[str], dict[str, str]]] | None = None
        if strict:
            front, args, told = strict_front(args, env, home)
            fronts = [front]
            # the proxy sees every call: the TUI's titles, and a reply cut by the stop (charged at its bound)
            blind_spots = []
            which = {"openai": "OpenAI", **dict.fromkeys(BEDROCK_PROVIDERS, "Amazon Bedrock")}.get(front.mount)
            notes.append(
                f"strict mode: every request of Codex's {which or 'configured'} provider goes through capguard's"
                " proxy (its web search tool, billed on the provider's side, is off)"
            )
            notes += signing_notes(fronts)

            def pointed(urls: dict[str, str], args: list[str] = args) -> tuple[list[str], dict[str, str]]:
                extra = [word for value in told for word in ("-c", value.replace("{url}", urls[front.mount]))]
                return [executable, *insert_before_separator(args, extra)], {}

            on_proxy = pointed

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
            fronts=fronts,
            on_proxy=on_proxy,
        )


ADAPTER = CodexAdapter()
