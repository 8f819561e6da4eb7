"""aider: the flags capguard adds, the files it tails, the repo-map cap, the polite stop.

Everything aider-specific lives here and in aider_logs.py (the parsers).
"""

from __future__ import annotations

import math
import re
import signal
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from capguard.agents.aider.logs import AnalyticsParser, LlmHistoryMapParser
from capguard.agents.aider.own_files import Mention, Named, config_files, named_in_files
from capguard.agents.base import (
    Front,
    LaunchPlan,
    command_line,
    insert_before_separator,
    option_value,
    signing_notes,
    split_api_version,
    strict_refusal,
    without_option,
)
from capguard.config.settings import Settings
from capguard.core.errors import ConfigError
from capguard.core.pricing import bedrock_model
from capguard.metering.proxy.aws_signing import (
    SigningUnavailable,
    bedrock_runtime,
    chain_in,
    is_region,
    loaded,
)
from capguard.metering.proxy.dialects import BEDROCK, CHAT, GEMINI
from capguard.metering.tail import WatchSpec

# aider accepts maps 15% above its target (repomap.py) and counts large maps by sampling; measured maps
# reached 1.163x the target, and our estimate runs ~2% above tiktoken: plan with a 25% margin.
MAP_TOLERANCE = 1.25
DEFAULT_MAP_MULTIPLIER = 2.0

# aider's own aliases and deprecated shortcut flags (aider/models.py, aider/deprecated.py, 0.86.2)
ALIASES = {
    "sonnet": "anthropic/claude-sonnet-4-5",
    "haiku": "anthropic/claude-haiku-4-5",
    "opus": "anthropic/claude-opus-4-6",
    "4": "openai/gpt-4-0613",
    "4o": "openai/gpt-4o",
    "4-turbo": "openai/gpt-4-1106-preview",
    "35turbo": "openai/gpt-3.5-turbo",
    "35-turbo": "openai/gpt-3.5-turbo",
    "3": "openai/gpt-3.5-turbo",
    "deepseek": "deepseek/deepseek-chat",
    "flash": "gemini/gemini-flash-latest",
    "r1": "deepseek/deepseek-reasoner",
    "gemini": "gemini/gemini-3-pro-preview",
    "grok3": "xai/grok-3-beta",
}
SHORTCUTS = {
    "--opus": "anthropic/claude-3-opus-20240229",
    "--sonnet": "anthropic/claude-3-7-sonnet-20250219",
    "--haiku": "anthropic/claude-3-5-haiku-20241022",
    "--4": "openai/gpt-4-0613",
    "--4o": "openai/gpt-4o",
    "--mini": "openai/gpt-4o-mini",
    "--4-turbo": "openai/gpt-4-1106-preview",
    "--35turbo": "openai/gpt-3.5-turbo",
    "--35-turbo": "openai/gpt-3.5-turbo",
    "--3": "openai/gpt-3.5-turbo",
    "--deepseek": "deepseek/deepseek-chat",
    "--o1-mini": "openai/o1-mini",
    "--o1-preview": "openai/o1-preview",
}
# aider's default model when none is named: the first API key found (aider/onboarding.py)
DEFAULT_BY_KEY = (
    ("ANTHROPIC_API_KEY", "anthropic/claude-sonnet-4-5"),
    ("DEEPSEEK_API_KEY", "deepseek/deepseek-chat"),
    ("OPENAI_API_KEY", "openai/gpt-4o"),
    ("GEMINI_API_KEY", "gemini/gemini-2.5-pro-exp-03-25"),
)
INSTALL_HINT = "install it with: python -m pip install aider-chat  (or: pipx install aider-chat)"


def named_model(args: list[str], env: Mapping[str, str]) -> str | None:
    """The main model named on aider's command line or in its environment (`--model`, AIDER_MODEL, `--4o`)."""
    named = option_value(args, "--model") or env.get("AIDER_MODEL")
    if named:
        return ALIASES.get(named, named)
    for arg in reversed(args):
        if arg in SHORTCUTS:
            return SHORTCUTS[arg]
    return None


def model_from_args(args: list[str], env: Mapping[str, str]) -> str | None:
    """The main model aider will use, as far as its command line and environment tell."""
    named = named_model(args, env)
    if named:
        return named
    for key, model in DEFAULT_BY_KEY:
        if env.get(key):
            return model
    return None


@dataclass(frozen=True)
class MapPlan:
    map_tokens: int  # the value passed to aider
    worst_case: int  # the largest map aider may build with it
    note: str | None


def _number(raw: str, what: str) -> float:
    try:
        return float(raw)
    except ValueError:
        raise ConfigError(f"{what}: {raw!r} is not a number") from None


def plan_map_tokens(cap: int, args: list[str], env: Mapping[str, str], *, clamp: bool) -> MapPlan:
    """The `--map-tokens` that keeps aider's largest possible map within `cap`.

    With no files in the chat aider multiplies the map by `--map-multiplier-no-files` (default 2),
    and its maps overshoot the target (MAP_TOLERANCE); a user's own value above that is refused, or clamped.
    """
    raw_mult = option_value(args, "--map-multiplier-no-files") or env.get("AIDER_MAP_MULTIPLIER_NO_FILES")
    multiplier = max(1.0, _number(raw_mult, "--map-multiplier-no-files")) if raw_mult else DEFAULT_MAP_MULTIPLIER
    allowed = math.floor(cap / (multiplier * MAP_TOLERANCE))
    from_flag = option_value(args, "--map-tokens")
    user_raw = from_flag if from_flag is not None else env.get("AIDER_MAP_TOKENS")
    if user_raw is None:
        return MapPlan(allowed, math.floor(allowed * multiplier * MAP_TOLERANCE), None)
    user = int(_number(user_raw, "--map-tokens"))
    where = "--map-tokens" if from_flag is not None else "AIDER_MAP_TOKENS"
    worst = math.floor(user * multiplier * MAP_TOLERANCE)
    if user <= allowed:
        return MapPlan(user, worst, None)
    if not clamp:
        raise ConfigError(
            f"{where} {user} lets aider build a repo map of up to {worst} tokens "
            f"(x{multiplier:g} with no files in the chat, +25% for how far aider overshoots its target), above the map_tokens cap {cap}; "
            f'use --map-tokens {allowed} or less, or set map_over_cap = "clamp"'
        )
    return MapPlan(
        allowed,
        math.floor(allowed * multiplier * MAP_TOLERANCE),
        f"{where} {user} clamped to {allowed} (map_tokens cap {cap})",
    )


FALSE = ("false", "no", "off", "0")  # what configargparse reads as --no-stream in AIDER_STREAM or a config file
STREAM_ESTIMATES = "aider streams by default and then logs its own estimates; add --no-stream for the server's figures"


def _stream_in_config(path: Path) -> str | None:
    """The `stream:` value of one of aider's YAML config files, read as a line (capguard needs no YAML parser)."""
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return None
    found = re.findall(r"^stream:[ \t]*['\"]?([A-Za-z0-9]+)", text, re.MULTILINE)
    return found[-1] if found else None


def streams(args: list[str], env: Mapping[str, str]) -> bool:
    """Whether aider streams its replies (its default), from its flags, then AIDER_STREAM, then its config files."""
    flag = None
    for arg in args:
        if arg == "--":
            break
        if arg in ("--stream", "--no-stream"):
            flag = arg == "--stream"
    if flag is not None:
        return flag
    raw = env.get("AIDER_STREAM") or next(filter(None, map(_stream_in_config, config_files(args, env))), None)
    return raw is None or raw.strip().lower() not in FALSE


ONE_SHOT = ("--message", "--msg", "-m", "--message-file", "-f")


def polite_stop(args: list[str], env: Mapping[str, str]) -> list[tuple[signal.Signals, float]]:
    """Interactive, two Ctrl-C as a user would give (idle at its prompt aider needs both within 2 s; mid-reply the
    first aborts the reply). With one message (`--message`), a Ctrl-C while aider applies edits prints a
    KeyboardInterrupt traceback of 25-56 lines before capguard's verdict; there is no session to keep, and aider
    has no SIGTERM handler (it dies in ~25 ms), so SIGTERM is the polite stop there."""
    if option_value(args, *ONE_SHOT) is not None or env.get("AIDER_MESSAGE") or env.get("AIDER_MESSAGE_FILE"):
        return [(signal.SIGTERM, 0.0)]
    return [(signal.SIGINT, 0.4), (signal.SIGINT, 0.0)]


OPENAI_DEFAULT = "https://api.openai.com/v1"
ANTHROPIC_DEFAULT = "https://api.anthropic.com"
GEMINI_DEFAULT = "https://generativelanguage.googleapis.com"


@dataclass(frozen=True)
class _Other:
    """A provider besides OpenAI and Anthropic whose base URL litellm (aider's pinned 1.80) takes from one
    variable, in a dialect the proxy meters."""

    variable: str
    default: str
    dialect: str
    provider: str | None  # for prices, when the dialect's default provider is not it


# litellm: DEEPSEEK_API_BASE + /chat/completions; OPENROUTER_API_BASE as the OpenAI client's base URL (the model
# goes without `openrouter/`, e.g. `anthropic/claude-...`, priced at OpenRouter's prices); GEMINI_API_BASE +
# /models/<model>:generateContent or :streamGenerateContent (Google AI Studio). The OpenAI-compatible providers after
# them: the variable each reads in litellm's code, each checked with the real aider (its requests went to the URL in
# the variable); not fronted: Mistral (litellm ignores MISTRAL_API_BASE there), xAI (its reasoning tokens are billed
# outside completion_tokens, and max_tokens may not bound them), Perplexity (search fees no usage figure shows).
OTHERS = {
    "deepseek": _Other("DEEPSEEK_API_BASE", "https://api.deepseek.com/beta", CHAT, "deepseek"),
    "openrouter": _Other("OPENROUTER_API_BASE", "https://openrouter.ai/api/v1", CHAT, "openrouter"),
    "gemini": _Other("GEMINI_API_BASE", f"{GEMINI_DEFAULT}/v1beta", GEMINI, None),
    "groq": _Other("GROQ_API_BASE", "https://api.groq.com/openai/v1", CHAT, "groq"),
    "cerebras": _Other("CEREBRAS_API_BASE", "https://api.cerebras.ai/v1", CHAT, "cerebras"),
    "together_ai": _Other("TOGETHER_AI_API_BASE", "https://api.together.xyz/v1", CHAT, "together_ai"),
    "fireworks_ai": _Other("FIREWORKS_API_BASE", "https://api.fireworks.ai/inference/v1", CHAT, "fireworks_ai"),
    "moonshot": _Other("MOONSHOT_API_BASE", "https://api.moonshot.ai/v1", CHAT, "moonshot"),
}
# How a refusal names what strict mode fronts
FRONTED_NAMES = (
    "OpenAI, Anthropic, DeepSeek, OpenRouter, Gemini (gemini/), Groq, Cerebras, Together AI, Fireworks AI, Moonshot"
    " and Anthropic's models on Amazon Bedrock (bedrock/)"
)
FRONTED = ("openai", "anthropic", *OTHERS, "bedrock")
# litellm's Bedrock (Converse, or InvokeModel for `bedrock/invoke/...`): its endpoint from this variable, else the
# region's; a Bedrock API key as a bearer token, else SigV4 with AWS credentials (capguard's proxy signs instead)
BEDROCK_ENDPOINT = "AWS_BEDROCK_RUNTIME_ENDPOINT"
# litellm's own ways to assume a role or pick credentials, which the AWS SDK's chain (capguard's signer) never reads
_LITELLM_AWS_AUTH = ("AWS_ROLE_NAME", "AWS_WEB_IDENTITY_TOKEN", "AWS_STS_ENDPOINT", "AWS_EXTERNAL_ID",
                     "AWS_SESSION_NAME")  # fmt: skip
# The proxy routes Gemini by `/v1beta/models/...`; litellm's base URL ends before `/models`: its version goes
# in the path given to aider, the rest is the upstream
# Model names litellm sends to OpenAI without a provider prefix
_OPENAI_BARE = re.compile(r"^(gpt-|o[1-9]|chatgpt-|ft:gpt-|codex-)")
# The variables that hold a provider's base URL (litellm reads the first of each set it finds)
BASE_VARIABLES = ("OPENAI_API_BASE", "OPENAI_BASE_URL", "ANTHROPIC_API_BASE", "ANTHROPIC_BASE_URL",
                  *(other.variable for other in OTHERS.values()), BEDROCK_ENDPOINT)  # fmt: skip


def provider_of(model: str) -> str | None:
    """The provider litellm sends `model` to, as far as strict mode cares: "openai", "anthropic", another
    prefix, or None (unknown)."""
    head, sep, rest = model.partition("/")
    if sep:
        return head.lower()
    if model.startswith("claude-"):
        return "anthropic"
    if _OPENAI_BARE.match(model):
        return "openai"
    return None


def strict_fronts(args: list[str], env: Mapping[str, str]) -> tuple[list[Front], list[str], dict[str, str]]:
    """The providers aider's models use, fronted by the proxy: the fronts, aider's arguments without the
    `--openai-api-base` they take over (the proxy's URL goes in the environment only) and its environment without
    AIDER_OPENAI_API_BASE. A provider capguard cannot front, or a base URL aider would read from somewhere
    capguard cannot replace, is a ConfigError (one line, exit 2)."""
    files = named_in_files(args, env, SHORTCUTS, BASE_VARIABLES)
    main = model_from_args(args, env)
    models = {main: "--model"} if main else {}
    for flag, variable in (("--weak-model", "AIDER_WEAK_MODEL"), ("--editor-model", "AIDER_EDITOR_MODEL")):
        named = option_value(args, flag) or env.get(variable)
        if named:
            models.setdefault(ALIASES.get(named, named), flag)
    # what aider's own files name (a cloned repo's among them) and aider would use: each must be on a provider
    # the proxy fronts
    for mention in in_force(files, args, env):
        models.setdefault(ALIASES.get(mention.model, mention.model), mention.where)
    if not models:
        raise ConfigError(
            strict_refusal("aider", "no model is named, so which provider aider calls is unknown (use --model)")
        )
    providers = set()
    for model, where in models.items():
        provider = provider_of(model)
        if provider not in FRONTED:
            what = f"provider {provider!r}" if provider else "a provider capguard cannot tell"
            raise ConfigError(
                strict_refusal("aider", f"{where} {model} goes to {what}; the proxy fronts {FRONTED_NAMES}")
            )
        if provider == "bedrock" and not _anthropic_on_bedrock(model):
            raise ConfigError(
                strict_refusal("aider", f"{where} {model} is not one of Anthropic's models, the only ones the proxy"
                               " prices on Bedrock")
            )  # fmt: skip
        providers.add(provider)
    for arg in args:
        if arg == "--":
            break
        if arg.startswith("--set-env") or arg.startswith("--model-settings-file"):
            raise ConfigError(strict_refusal("aider", f"{arg.split('=')[0]} may send requests elsewhere"))
    if files.refusals:
        raise ConfigError(strict_refusal("aider", files.refusals[0]))
    child = dict(env)
    fronts = []
    if "openai" in providers:
        given = option_value(args, "--openai-api-base")
        named = given or child.pop("AIDER_OPENAI_API_BASE", None)
        # litellm reads OPENAI_BASE_URL before OPENAI_API_BASE (which --openai-api-base sets)
        upstream = env.get("OPENAI_BASE_URL") or named or env.get("OPENAI_API_BASE") or OPENAI_DEFAULT
        fronts.append(Front("openai", upstream, "chat", ("OPENAI_API_BASE", "OPENAI_BASE_URL")))
        args = without_option(args, "--openai-api-base")
    if "anthropic" in providers:
        upstream = env.get("ANTHROPIC_API_BASE") or env.get("ANTHROPIC_BASE_URL") or ANTHROPIC_DEFAULT
        fronts.append(Front("anthropic", upstream, "anthropic", ("ANTHROPIC_API_BASE", "ANTHROPIC_BASE_URL")))
    for name, other in OTHERS.items():
        if name in providers:
            fronts.append(other_front(name, other, env.get(other.variable) or other.default))
    if "bedrock" in providers:
        fronts.append(bedrock_front(env))
    child.pop("AIDER_OPENAI_API_BASE", None)
    for front in fronts:
        if not front.upstream.startswith(("http://", "https://")):
            raise ConfigError(strict_refusal("aider", f"the {front.mount} base URL {front.upstream!r} is not http(s)"))
    return fronts, args, child


def in_force(files: Named, args: list[str], env: Mapping[str, str]) -> list[Mention]:
    """The models aider's files name that aider would use: its command line beats its environment (a .env's
    included, loaded over it), which beats its config files; a model settings entry's weak or editor model counts
    when no such model is named anywhere and its entry is for a main model in use (or the main model is unknown)."""
    on_line = {
        "--model": named_model([a for a in args], {}) is not None,
        "--weak-model": option_value(args, "--weak-model") is not None,
        "--editor-model": option_value(args, "--editor-model") is not None,
    }
    in_env = {
        "--model": bool(env.get("AIDER_MODEL")) or any(m.source == "env" for m in files.mentions),
        "--weak-model": bool(env.get("AIDER_WEAK_MODEL")),
        "--editor-model": bool(env.get("AIDER_EDITOR_MODEL")),
    }
    for mention in files.mentions:
        if mention.source == "dotenv":
            in_env[mention.option] = True
    out = []
    for mention in files.mentions:
        if (mention.source in ("env", "dotenv") and not on_line[mention.option]) or (
            mention.source == "conf" and not (on_line[mention.option] or in_env[mention.option])
        ):
            out.append(mention)
    mains = {m.model for m in out if m.option == "--model"} | (
        {named} if (named := model_from_args(args, env)) else set()
    )
    explicit = (
        {m.option for m in out}
        | {o for o, given in on_line.items() if given}
        | {o for o, given in in_env.items() if given}
    )
    for mention in files.mentions:
        if mention.source != "settings" or mention.option in explicit:
            continue
        if not mains or mention.entry is None or any(_same_model(mention.entry, m) for m in mains):
            out.append(mention)
    return out


def _same_model(a: str, b: str) -> bool:
    """Whether two names are the same model, with or without a provider prefix (aider's aliases resolved)."""
    a, b = ALIASES.get(a, a).lower(), ALIASES.get(b, b).lower()
    return a == b or a.split("/", 1)[-1] == b.split("/", 1)[-1]


def other_front(name: str, other: _Other, upstream: str) -> Front:
    """The front of a provider in OTHERS whose base URL (the user's or litellm's default) is `upstream`."""
    if other.dialect != GEMINI:
        return Front(name, upstream, other.dialect, (other.variable,), provider=other.provider)
    found = split_api_version(upstream)
    if found is None:
        raise ConfigError(
            strict_refusal("aider", f"{other.variable} {upstream!r} does not end in an API version such as /v1beta")
        )
    return Front(name, found[0], GEMINI, (other.variable,), path=found[1])


class AiderAdapter:
    name = "aider"
    install_hint = INSTALL_HINT

    def plan(
        self, args: list[str], settings: Settings, run_dir: Path, env: Mapping[str, str], run_id: str
    ) -> LaunchPlan:
        executable, args = command_line("aider", INSTALL_HINT, settings, args, env)
        ours: list[str] = []
        notes: list[str] = []
        watches: list[WatchSpec] = []
        strict = settings.supervise.meter == "proxy"
        named, fallback, streaming = named_model(args, env), model_from_args(args, env), streams(args, env)
        fronts: list[Front] | None = None
        if strict:
            fronts, args, env = strict_fronts(args, env)
            for front in fronts:
                notes.append(f"strict mode: aider's {front.mount} requests go through capguard's proxy")
            notes += signing_notes(fronts)

        user_log = option_value(args, "--analytics-log") or env.get("AIDER_ANALYTICS_LOG")
        if user_log:
            # aider writes one analytics log; the user's is as good as ours: tail it from its current end
            log_path = Path(user_log).resolve()  # aider runs in our working directory
            notes.append(f"metered from your own analytics log {log_path} (lines written before this run are ignored)")
        else:
            log_path = run_dir / "aider.analytics.jsonl"
            ours += ["--analytics-log", str(log_path)]
        watches.append(
            WatchSpec(log_path, lambda p: AnalyticsParser(run_id, str(p), by_content=True), from_end=bool(user_log))
        )

        cap = settings.caps.map_tokens
        if cap is not None:
            plan = plan_map_tokens(cap, args, env, clamp=settings.launch.map_over_cap == "clamp")
            ours += ["--map-tokens", str(plan.map_tokens)]
            if plan.note:
                notes.append(plan.note)
            history = option_value(args, "--llm-history-file") or env.get("AIDER_LLM_HISTORY_FILE")
            history_path = Path(history).resolve() if history else run_dir / "aider.llm.history"
            if not history:
                ours += ["--llm-history-file", str(history_path)]
            watches.append(WatchSpec(history_path, lambda p: LlmHistoryMapParser(), from_end=bool(history)))

        return LaunchPlan(
            argv=[executable, *insert_before_separator(args, ours)],
            env=dict(env),
            watches=watches,
            polite_stop=polite_stop(args, env),
            fallback_model=fallback,
            named_model=named,
            reports_cost=True,
            notes=notes,
            estimates=STREAM_ESTIMATES if streaming and not strict else None,  # the proxy reads the server's usage
            blind_spots=[]
            if strict  # the proxy sees weak-model calls, interrupted replies and the server's own figures
            else [
                "weak-model calls (commit messages, chat summaries) are not in aider's logs",
                "a reply interrupted by the stop is not recorded by aider",
                "with streaming (aider's default) token counts are aider's local estimates",
            ],
            fronts=fronts,
        )


ADAPTER = AiderAdapter()


def _anthropic_on_bedrock(model: str) -> bool:
    """litellm's `bedrock/[converse/|invoke/]<id>` names one of Anthropic's models (the proxy prices no other)."""
    model_id = model.split("/", 1)[1]
    for route_ in ("converse/", "invoke/"):
        model_id = model_id.removeprefix(route_)
    return bedrock_model(model_id) != model_id


def bedrock_front(env: Mapping[str, str]) -> Front:
    """litellm's Bedrock, fronted at AWS_BEDROCK_RUNTIME_ENDPOINT: the requests go on to the user's endpoint or the
    region's, as litellm picks the region (AWS_REGION_NAME, then AWS_REGION, then AWS_DEFAULT_REGION). A Bedrock
    API key passes through; without one litellm signs for the proxy's host, so the proxy signs again for AWS's with
    the credentials the AWS SDK's chain finds (litellm's AWS_PROFILE_NAME read as AWS_PROFILE)."""
    region = next(
        (env[name] for name in ("AWS_REGION_NAME", "AWS_REGION", "AWS_DEFAULT_REGION") if env.get(name)), None
    )
    if region is None or not is_region(region):
        why = "no AWS region is set" if region is None else f"AWS region {region[:40]!r} is no AWS region"
        raise ConfigError(strict_refusal("aider", f"{why} (set AWS_REGION), so the Bedrock endpoint is unknown"))
    upstream = env.get(BEDROCK_ENDPOINT) or bedrock_runtime(region)
    signer = None
    if not env.get("AWS_BEARER_TOKEN_BEDROCK"):
        litellms = next((name for name in _LITELLM_AWS_AUTH if env.get(name)), None)
        if litellms:
            raise ConfigError(
                strict_refusal("aider", f"{litellms} has litellm assume a role the proxy's AWS signer would not")
            )
        chain = chain_in(env)
        if env.get("AWS_PROFILE_NAME"):
            chain["AWS_PROFILE"] = env["AWS_PROFILE_NAME"]
        try:
            signer = loaded("bedrock", region, chain)
        except SigningUnavailable as err:
            raise ConfigError(
                strict_refusal("aider", f"without a Bedrock API key the proxy signs for AWS: {err}")
            ) from None
    return Front("bedrock", upstream, BEDROCK, (BEDROCK_ENDPOINT,), provider="anthropic", signer=signer)
