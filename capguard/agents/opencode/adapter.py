"""OpenCode (`opencode` TUI, `opencode run ...`): metered from its own SQLite store, the user's, read-only.

Which store: the one OpenCode would use without capguard (`$OPENCODE_DB`, else `$XDG_DATA_HOME/opencode/`), so the
session stays in the user's history (`opencode --continue` finds it). That store is shared with any other OpenCode
the user runs meanwhile, so a run counts only its own sessions (logs.Scope): those created in the run's directory
during the run, those continued there (`--continue`, `--session`, picked in the TUI) from the run's start on, and
their subagents' sessions. A second OpenCode in the same directory at the same time cannot be told apart by the
store: capguard looks for one at start and at the end and says so in the report (its spend would be counted here,
never this run's lost).
"""

from __future__ import annotations

import json
import os
import re
import signal
import time
from collections.abc import Callable, Mapping
from pathlib import Path

from capguard.agents.base import (
    Front,
    LaunchPlan,
    command_line,
    option_value,
    signing_notes,
    split_api_version,
    strict_refusal,
)
from capguard.agents.opencode import own_files
from capguard.agents.opencode.logs import Scope, StoreParser, model_name
from capguard.agents.opencode.store import db_path, last_message_rowid, live_rows
from capguard.config.settings import Settings
from capguard.core.errors import ConfigError
from capguard.core.pricing import bedrock_model
from capguard.metering.proxy.aws_signing import SigningUnavailable, bedrock_runtime, chain_in, is_region, loaded
from capguard.metering.proxy.dialects import ANTHROPIC, BEDROCK, CHAT, GEMINI, RESPONSES
from capguard.metering.tail import WatchSpec

INSTALL_HINT = "install it with: npm install -g opencode-ai@1.18.33"
# options of `opencode` and `opencode run` that take a value (so their value is not taken for a subcommand)
VALUED = {
    "--log-level", "--command", "-s", "--session", "-m", "--model", "--agent", "--format", "-f", "--file",
    "--title", "--attach", "-p", "--password", "-u", "--username", "--dir", "--port", "--variant", "--hostname",
    "--mdns-domain", "--cors", "--prompt", "--replay-limit",
}  # fmt: skip
BLIND_SPOTS = [
    "OpenCode's session-title request (on its small_model, once per new session) is billed but written nowhere",
    "a step that calls a tool is written only when the tool has finished: the meter sees it that much later"
    " (a cap can be crossed by the steps in flight, each counted once written)",
    "the step in flight when the stop comes is billed but stays at zero tokens in OpenCode's store",
]


def positionals(args: list[str]) -> list[str]:
    """The words of OpenCode's command line that are not options or option values."""
    found: list[str] = []
    skip = False
    for arg in args:
        if skip:
            skip = False
        elif arg == "--":
            break
        elif arg in VALUED:
            skip = True
        elif not arg.startswith("-"):
            found.append(arg)
    return found


def run_directory(args: list[str], cwd: Path, env: Mapping[str, str]) -> frozenset[str]:
    """Where OpenCode's sessions will say they ran, as it may spell it and resolved: `run --dir D`, the TUI's
    `opencode PROJECT`, else the working directory, which OpenCode takes from $PWD when it is set (as a shell sets
    it), else from the process."""
    base = Path(env["PWD"]) if env.get("PWD") else cwd
    words = positionals(args)
    if words[:1] == ["run"]:
        named = option_value(args, "--dir")
    else:
        named = words[0] if words and (base / words[0]).is_dir() else None
    where = base / named if named else base
    return frozenset({str(where), os.path.normpath(where), os.path.realpath(where)})


def _jsonc(text: str) -> dict:
    """OpenCode's config files may be JSONC: drop // and /* */ comments outside strings, and trailing commas."""
    pattern = r'("(?:\\.|[^"\\])*")|//[^\n]*|/\*.*?\*/'
    text = re.sub(pattern, lambda m: m.group(1) or "", text, flags=re.S)
    text = re.sub(r",(\s*[}\]])", r"\1", text)
    data = json.loads(text)
    return data if isinstance(data, dict) else {}


def opencode_config(env: Mapping[str, str], directory: Path) -> dict:
    """OpenCode's merged config as far as capguard reads it (global, then the project's, then $OPENCODE_CONFIG, then
    $OPENCODE_CONFIG_CONTENT; later wins, `provider` merged by name): for the model and its configured price."""
    config_home = Path(env.get("XDG_CONFIG_HOME") or Path(env.get("HOME") or Path.home()) / ".config") / "opencode"
    files = [config_home / name for name in ("config.json", "opencode.json", "opencode.jsonc")]
    files += [directory / name for name in ("opencode.json", "opencode.jsonc")]
    if env.get("OPENCODE_CONFIG"):
        files.append(Path(env["OPENCODE_CONFIG"]))
    merged: dict = {}
    texts = []
    for path in files:
        try:
            texts.append(path.read_text())
        except OSError:
            continue
    if env.get("OPENCODE_CONFIG_CONTENT"):
        texts.append(env["OPENCODE_CONFIG_CONTENT"])
    for text in texts:
        try:
            layer = _jsonc(text)
        except ValueError:
            continue  # OpenCode will say what is wrong with it
        providers = {**(merged.get("provider") or {}), **(layer.get("provider") or {})}
        merged.update(layer)
        if providers:
            merged["provider"] = providers
    return merged


def configured_model(args: list[str], config: dict) -> tuple[str | None, str | None]:
    """(provider, model) OpenCode will call: `-m provider/model`, else the config's `model`."""
    chosen = option_value(args, "-m", "--model") or config.get("model")
    if not isinstance(chosen, str) or "/" not in chosen:
        return None, None
    provider, model = chosen.split("/", 1)
    return provider, model


# Strict mode: the providers OpenCode calls through an SDK whose base URL its config sets (provider.<id>.options.
# baseURL), with the API each speaks (OpenCode's openai provider calls the Responses API) and its default base URL
ANTHROPIC_SDK, OPENAI_SDK, COMPATIBLE_SDK = "@ai-sdk/anthropic", "@ai-sdk/openai", "@ai-sdk/openai-compatible"
# OpenCode's amazon-bedrock provider: Bedrock's Converse API at options.baseURL (measured with 1.18.33), signed
# with AWS credentials for that host or sent with a Bedrock API key
BEDROCK_SDK = "@ai-sdk/amazon-bedrock"
# OpenCode's google provider: the Gemini API (`<baseURL>/models/<model>:streamGenerateContent?alt=sse`, the key in
# x-goog-api-key; measured with 1.18.33)
GOOGLE_SDK = "@ai-sdk/google"
SDK_DIALECTS = {
    ANTHROPIC_SDK: ANTHROPIC, OPENAI_SDK: RESPONSES, COMPATIBLE_SDK: CHAT, BEDROCK_SDK: BEDROCK, GOOGLE_SDK: GEMINI
}  # fmt: skip
BUILT_IN_SDKS = {"anthropic": ANTHROPIC_SDK, "openai": OPENAI_SDK, "amazon-bedrock": BEDROCK_SDK, "google": GOOGLE_SDK}
DEFAULT_BASES = {
    "anthropic": "https://api.anthropic.com/v1",
    "openai": "https://api.openai.com/v1",
    "google": "https://generativelanguage.googleapis.com/v1beta",
}
_MOUNT = re.compile(r"^[A-Za-z0-9_-]{1,64}$")  # a provider id that can name the proxy's path


def _front_of(provider: str, config: dict, auth: dict, env: Mapping[str, str]) -> tuple[Front | None, str]:
    """The front for one of OpenCode's providers, or None and why it cannot be fronted."""
    entry = (config.get("provider") or {}).get(provider)
    entry = entry if isinstance(entry, dict) else {}
    sdk = entry.get("npm") or BUILT_IN_SDKS.get(provider)
    options = entry.get("options")
    base = options.get("baseURL") if isinstance(options, dict) else None
    if sdk == BEDROCK_SDK and _MOUNT.match(provider):
        return _bedrock_front(provider, options if isinstance(options, dict) else {}, auth.get(provider), env)
    if not base and provider in DEFAULT_BASES and sdk == BUILT_IN_SDKS[provider]:
        base = DEFAULT_BASES[provider]
    login = auth.get(provider)
    if sdk not in SDK_DIALECTS:
        return (
            None,
            f"provider {provider!r} is not one the proxy fronts (anthropic, openai, google, amazon-bedrock,"
            " OpenAI-compatible)",
        )
    if isinstance(login, dict) and login.get("type") == "oauth":
        return None, f"provider {provider!r} is signed in (OAuth), which may send requests past its base URL"
    if not isinstance(base, str) or not base.startswith(("http://", "https://")):
        return None, f"provider {provider!r} has no http(s) baseURL"
    if not _MOUNT.match(provider):
        return None, f"provider {provider!r} has a name capguard cannot put in a URL"
    if SDK_DIALECTS[sdk] == GEMINI:  # the proxy routes by `/v1beta/models/...`: the version stays in OpenCode's URL
        split = split_api_version(base)
        if split is None:
            return None, f"provider {provider!r} has a baseURL that does not end in an API version such as /v1beta"
        return Front(provider, split[0], GEMINI, (), path=split[1]), ""
    return Front(provider, base, SDK_DIALECTS[sdk], ()), ""


def strict_fronts(
    args: list[str], config: dict, env: Mapping[str, str], store: Path
) -> tuple[list[Front], Callable[[dict[str, str]], tuple[list[str], dict[str, str]]], list[str]]:
    """The providers OpenCode may call this run, fronted by the proxy: those its models name (`-m`, `model`,
    `small_model` for titles, agents' models) and the others its config defines that can be fronted. OpenCode is
    told the proxy's URLs in OPENCODE_CONFIG_CONTENT (merged over the user's config: their store and history stay),
    with `enabled_providers` naming the fronted ones only, so no other provider is loaded. A provider a model names
    that cannot be fronted is a ConfigError (one line, exit 2). Returns (fronts, the hook that tells OpenCode, notes)."""
    try:
        auth = json.loads((store.parent / "auth.json").read_text())
    except (OSError, ValueError):
        auth = {}
    auth = auth if isinstance(auth, dict) else {}
    named: dict[str, str] = {}
    agents = config.get("agent")
    agents = agents if isinstance(agents, dict) else {}
    chosen = [("the model", option_value(args, "-m", "--model") or config.get("model"))]
    chosen += [("small_model (titles)", config.get("small_model"))]
    chosen += [(f"agent {name}'s model", a.get("model")) for name, a in agents.items() if isinstance(a, dict)]
    for where, model in chosen:
        if isinstance(model, str) and "/" in model:
            named.setdefault(model.split("/", 1)[0], where)
    fronts, left_out = [], []
    enabled = config.get("enabled_providers")  # the user's own list: capguard enables no provider outside it
    for provider in dict.fromkeys([*named, *(config.get("provider") or {})]):
        if isinstance(enabled, list) and provider not in enabled:
            continue
        front, why = _front_of(provider, config, auth, env)
        if front is not None and front.dialect == BEDROCK:  # the proxy prices Anthropic's models alone there
            for where, model in chosen:
                if isinstance(model, str) and model.startswith(f"{provider}/"):
                    model_id = model.split("/", 1)[1]
                    if bedrock_model(model_id) == model_id:
                        raise ConfigError(
                            strict_refusal("opencode", f"{where} {model} is not one of Anthropic's models, the only"
                                           " ones the proxy prices on Bedrock")
                        )  # fmt: skip
        if front is not None:
            fronts.append(front)
        elif provider in named:
            raise ConfigError(strict_refusal("opencode", f"{named[provider]}: {why}"))
        else:
            left_out.append(provider)
    if not fronts:
        raise ConfigError(
            strict_refusal("opencode", "no model or provider in its config is one the proxy can front (use -m)")
        )
    given = env.get("OPENCODE_CONFIG_CONTENT")
    try:
        theirs = _jsonc(given) if given else {}
    except ValueError:
        raise ConfigError(
            strict_refusal("opencode", "OPENCODE_CONFIG_CONTENT is not JSON capguard can merge")
        ) from None

    def tell(urls: dict[str, str]) -> tuple[list[str], dict[str, str]]:
        content = dict(theirs)
        providers = dict(content.get("provider") or {})
        for front in fronts:
            entry = dict(providers.get(front.mount) or {})
            entry["options"] = {**(entry.get("options") or {}), "baseURL": urls[front.mount] + front.path}
            providers[front.mount] = entry
        content["provider"] = providers
        content["enabled_providers"] = [front.mount for front in fronts]  # no other provider is loaded
        return [], {"OPENCODE_CONFIG_CONTENT": json.dumps(content)}

    notes = [
        f"strict mode: OpenCode's provider {f.mount} goes through capguard's proxy to {f.upstream}" for f in fronts
    ]
    notes += signing_notes(fronts)
    if left_out:
        notes.append(f"strict mode: providers not loaded (the proxy cannot front them): {', '.join(left_out)}")
    return fronts, tell, notes


def _bedrock_front(provider: str, options: dict, login: object, env: Mapping[str, str]) -> tuple[Front | None, str]:
    """OpenCode's amazon-bedrock provider: its options.baseURL, else the endpoint of its region (options.region,
    else AWS_REGION). A Bedrock API key (AWS_BEARER_TOKEN_BEDROCK, options.apiKey or a stored key) passes through;
    otherwise the proxy signs each request with the credentials the AWS SDK's chain finds (options' keys or profile
    first, as OpenCode passes them on)."""
    region = options.get("region") or env.get("AWS_REGION")
    if not isinstance(region, str) or not is_region(region):
        why = "no AWS region" if not region else f"AWS region {str(region)[:40]!r}, which is none,"
        return None, f"provider {provider!r} has {why} set (options.region or AWS_REGION)"
    base = options.get("baseURL")
    if base is None:
        base = bedrock_runtime(region)
    if not isinstance(base, str) or not base.startswith(("http://", "https://")):
        return None, f"provider {provider!r} has no http(s) baseURL"
    keyed = bool(env.get("AWS_BEARER_TOKEN_BEDROCK") or options.get("apiKey"))
    keyed = keyed or (isinstance(login, dict) and login.get("type") == "api" and bool(login.get("key")))
    if isinstance(login, dict) and login.get("type") == "oauth":
        return None, f"provider {provider!r} is signed in (OAuth), which may send requests past its base URL"
    signer = None
    if not keyed:
        chain = chain_in(env)
        for option, name in (("accessKeyId", "AWS_ACCESS_KEY_ID"), ("secretAccessKey", "AWS_SECRET_ACCESS_KEY"),
                             ("sessionToken", "AWS_SESSION_TOKEN"), ("profile", "AWS_PROFILE")):  # fmt: skip
            if isinstance(options.get(option), str) and options[option]:
                chain[name] = options[option]
        try:
            signer = loaded("bedrock", region, chain)
        except SigningUnavailable as err:
            return None, f"provider {provider!r} has no Bedrock API key and the proxy signs for AWS: {err}"
    return Front(provider, base, BEDROCK, (), provider="anthropic", signer=signer), ""


def priced_name(front: Front, model: str | None) -> str | None:
    """The model as the proxy prices it (its dialect's provider in front of a bare name)."""
    if not model or "/" in model:
        return model
    return {ANTHROPIC: f"anthropic/{model}", CHAT: f"openai/{model}", GEMINI: f"google/{model}"}.get(
        front.dialect, model
    )


def has_configured_price(config: dict, provider: str | None, model: str | None) -> bool:
    """Whether the config gives this model a price (OpenCode then writes a cost for each step)."""
    try:
        cost = config["provider"][provider]["models"][model]["cost"]
    except (KeyError, TypeError):
        return False
    return isinstance(cost, dict) and any(isinstance(v, (int, float)) and v > 0 for v in cost.values())


def neighbours(directory: Path, own: int | None = None) -> list[int]:
    """Pids of other OpenCode processes working in `directory` (their sessions land in the same store, same place)."""
    found = []
    for entry in Path("/proc").iterdir() if Path("/proc").is_dir() else []:
        if not entry.name.isdigit() or int(entry.name) in (os.getpid(), own):
            continue
        try:
            argv0 = (entry / "cmdline").read_bytes().split(b"\0", 1)[0]
            if not os.path.basename(argv0.decode(errors="replace")).startswith("opencode"):
                continue
            if os.path.realpath(entry / "cwd") == str(directory):
                found.append(int(entry.name))
        except OSError:
            continue
    return found


class OpenCodeAdapter:
    name = "opencode"
    install_hint = INSTALL_HINT

    def plan(
        self, args: list[str], settings: Settings, run_dir: Path, env: Mapping[str, str], run_id: str
    ) -> LaunchPlan:
        executable, args = command_line("opencode", INSTALL_HINT, settings, args, env)
        cwd = Path.cwd()
        words = positionals(args)
        if option_value(args, "--attach") is not None or words[:1] == ["attach"]:
            raise ConfigError(
                "opencode --attach sends the work to an OpenCode server capguard does not run: it could neither meter"
                " nor stop it; drop --attach to run OpenCode here under capguard"
            )
        store = db_path(env, cwd)
        spellings = run_directory(args, cwd, env)
        directory = Path(os.path.realpath(next(iter(spellings))))
        started_ms = int(time.time() * 1000)
        named = option_value(args, "-s", "--session")
        scope = Scope(started_ms=started_ms, directories=spellings, named=frozenset([named] if named else []))
        parsers: list[StoreParser] = []

        def make_parser(path: Path) -> StoreParser:
            parsers.append(StoreParser(scope, str(path)))
            return parsers[-1]

        config = opencode_config(env, directory)
        provider, raw_model = configured_model(args, config)
        model = model_name(provider, raw_model)
        notes = [
            f"metered from OpenCode's store {store} (read-only): sessions of {directory} started or continued"
            " during this run, and their subagents'"
        ]
        strict = settings.supervise.meter == "proxy"
        fronts: list[Front] | None = None
        told: Callable[[dict[str, str]], tuple[list[str], dict[str, str]]] | None = None
        if strict:
            home = Path(env.get("HOME") or Path.home())
            loaded = own_files.refusals(directory, env, home, _jsonc, frozenset(SDK_DIALECTS))
            if loaded:
                raise ConfigError(strict_refusal("opencode", loaded[0]))
            fronts, tell, strict_notes = strict_fronts(args, config, env, store)
            notes += strict_notes
            by_mount = {front.mount: front for front in fronts}
            if provider in by_mount:
                model = priced_name(by_mount[provider], raw_model)
            executable_args = [executable, *args]

            def told_argv(urls: dict[str, str]) -> tuple[list[str], dict[str, str]]:
                return executable_args, tell(urls)[1]

            told = told_argv
        others = neighbours(directory)
        if others:
            notes.append(_neighbour_note(others, directory))

        def summary() -> list[str]:
            out = []
            sessions = sorted({sid for p in parsers for sid in p.ours})
            if sessions:
                out.append(f"OpenCode sessions counted: {', '.join(sessions)}")
            late = [pid for pid in neighbours(directory) if pid not in others]
            if late:
                out.append(_neighbour_note(late, directory))
            return out

        return LaunchPlan(
            argv=[executable, *args],
            env=dict(env),
            watches=[WatchSpec(store, make_parser, rows=live_rows(last_message_rowid(store), started_ms))],
            # `opencode run` and the TUI both end at once on SIGINT (the step in flight is lost either way)
            polite_stop=[(signal.SIGINT, 0.0)],
            fallback_model=model,
            named_model=model,
            # OpenCode writes a cost only for a model it has a price for (configured, or its catalogue's); a 0 is
            # "no price", which capguard prices itself or treats as unpriced
            reports_cost=not strict and has_configured_price(config, provider, raw_model),
            notes=notes,
            blind_spots=[] if strict else list(BLIND_SPOTS),  # the proxy sees the title call and every step at once
            summaries=[summary],
            folders=[store.parent],  # OpenCode makes it too, but the watch starts first
            fronts=fronts,
            on_proxy=told,
        )


def _neighbour_note(pids: list[int], directory: Path) -> str:
    return (
        f"another OpenCode (pid {', '.join(map(str, pids))}) works in {directory} too: OpenCode's store does not say"
        " which process wrote a session, so sessions it started here during this run are counted in this run"
    )


ADAPTER = OpenCodeAdapter()
