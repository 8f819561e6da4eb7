"""aider's own settings files as strict mode reads them: which models they name, and whether they would send
aider's requests somewhere other than capguard's proxy.

aider reads, besides its command line and environment: `.aider.conf.yml` (working directory, git root, home, or
`--config`), `.env` files (home, git root, working directory, `--env-file`; loaded over the environment) and
`.aider.model.settings.yml` (home, git root, working directory), whose entries may name a model's weak and editor
models and pass litellm `extra_params` such as `api_base` (an entry named `aider/extra_params` applies to every
model). Any of them may come with a cloned repository. Strict mode must see every model aider may call and refuse
any route around the proxy: a repo's model settings with `api_base` sent every call of a strict run to another
server, uncounted (tests/integration/test_strict_aider.py). capguard reads these files as lines, without a YAML
parser; what it cannot read for certain (a key written with escapes) is refused, never guessed.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from capguard.agents.base import option_value

CONF = ".aider.conf.yml"
MODEL_SETTINGS = ".aider.model.settings.yml"
# Keys of aider's command line that name a model, as written in .aider.conf.yml and as AIDER_* variables
MODEL_KEYS = {"model": "--model", "weak-model": "--weak-model", "editor-model": "--editor-model"}
# litellm's switch that sends every call to a LiteLLM proxy (USE_LITELLM_PROXY), and that proxy's URL: a repo's .env
# with both sent every call of a strict run there, uncounted (the real aider, tests/integration/test_strict_aider.py)
LITELLM_ROUTING = ("USE_LITELLM_PROXY", "LITELLM_PROXY_API_BASE")
# Settings that would route requests where capguard cannot see them: refused in strict mode wherever they are set
ROUTING_KEYS = ("set-env", "model-settings-file", "openai-api-base")
# litellm arguments in a model's extra_params that move a call to another server or provider
_ROUTING_PARAMS = re.compile(r"\b(api_base|base_url|custom_llm_provider|aws_bedrock_runtime_endpoint)\b")
_ENTRY_NAME = re.compile(r"^\s*(?:-\s*\{?\s*)?['\"]?name['\"]?\s*:\s*(.*)$")
_SETTINGS_MODEL = re.compile(r"\b(weak_model_name|editor_model_name)\b['\"]?\s*:\s*(.*)$")
# configargparse takes an option's name with or without its dashes as a key (`weak-model:`, `--weak-model:`)
_CONF_KEY = re.compile(r"^\s*['\"]?(?:--)?([A-Za-z0-9][A-Za-z0-9_-]*)['\"]?\s*:\s*(.*?)\s*$")
# YAML a line reader cannot follow: a flow mapping or a complex key (`{weak-model: x}`, `? weak-model`)
_UNREAD = re.compile(r"^\s*(?:-\s+)?[{?]", re.MULTILINE)
_DOTENV = re.compile(r"^\s*(?:export\s+)?([A-Za-z_][A-Za-z0-9_]*)\s*=\s*(.*?)\s*$")
# A double-quoted YAML string with an escape: a key could be spelled `"weak\x2dmodel"`, which aider reads as
# weak-model and a line reader would not
_ESCAPED = re.compile(r"\"[^\"\n]*\\")
_TRUE = ("true", "yes", "on", "1")


@dataclass(frozen=True)
class Mention:
    """A model a file names: the option it sets (`--model`, `--weak-model`, `--editor-model`), where, and from
    what kind of source, which decides what overrides it (aider's command line beats its environment, which beats
    its config files); `entry`: for a model settings file, the model whose entry names it."""

    model: str
    option: str
    where: str
    source: str  # "conf", "dotenv", "env" or "settings"
    entry: str | None = None


@dataclass
class Named:
    """What aider's files name (`mentions`), and why strict mode cannot front aider as these files stand
    (`refusals`, each naming the file)."""

    mentions: list[Mention] = field(default_factory=list)
    refusals: list[str] = field(default_factory=list)

    def model(self, name: str, option: str, where: str, source: str, entry: str | None = None) -> None:
        name = _unquote(name)
        if name:
            self.mentions.append(Mention(name, option, where, source, entry))

    @property
    def models(self) -> dict[str, str]:
        """Every model named, with where (the first place)."""
        out: dict[str, str] = {}
        for mention in self.mentions:
            out.setdefault(mention.model, mention.where)
        return out


def _unquote(value: str) -> str:
    value = value.split(" #", 1)[0].strip()
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
        value = value[1:-1]
    return value.strip()


def git_root() -> Path | None:
    here = Path.cwd()
    return next((d for d in (here, *here.parents) if (d / ".git").exists()), None)


def _home(env: Mapping[str, str]) -> Path:
    return Path(env["HOME"]) if env.get("HOME") else Path.home()


def config_files(args: list[str], env: Mapping[str, str], *, every: bool = False) -> list[Path]:
    """aider's .aider.conf.yml files: `--config` if given, else the working directory's, the git root's and the
    home directory's, the one that decides first; `every`: all of them (strict mode checks each)."""
    named = option_value(args, "--config", "-c")
    defaults = [d / CONF for d in dict.fromkeys(filter(None, (Path.cwd(), git_root(), _home(env))))]
    if named and not every:
        return [Path(named)]
    return list(dict.fromkeys([*([Path(named)] if named else []), *defaults]))


def env_files(args: list[str], env: Mapping[str, str], extra: Iterable[str] = ()) -> list[Path]:
    """The .env files aider loads over its environment (home, git root, working directory, --env-file)."""
    root = git_root()
    named = option_value(args, "--env-file") or env.get("AIDER_ENV_FILE")
    paths = [_home(env) / ".env", *([root / ".env"] if root else []), Path(named or ".env"), *map(Path, extra)]
    return list(dict.fromkeys(paths))


def model_settings_files(env: Mapping[str, str]) -> list[Path]:
    """The .aider.model.settings.yml files aider loads by itself (home, git root, working directory)."""
    root = git_root()
    return list(dict.fromkeys([_home(env) / MODEL_SETTINGS, *([root / MODEL_SETTINGS] if root else []),
                               Path.cwd() / MODEL_SETTINGS]))  # fmt: skip


def _read(path: Path) -> str | None:
    """The file's lines but its comment lines (a comment may mention anything), or None if it cannot be read."""
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return None
    return "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#"))


def named_in_files(
    args: list[str], env: Mapping[str, str], shortcuts: Mapping[str, str], base_variables: Iterable[str]
) -> Named:
    """Every model aider's files and routing variables name, and what in them strict mode must refuse.
    `shortcuts`: aider's model flags (`--4o`...) and the model each selects; `base_variables`: the variables
    that hold a provider's base URL, refused in a .env file (aider loads it over the proxy's)."""
    bases = set(base_variables)
    found = Named()
    for variable in ("AIDER_SET_ENV", "AIDER_MODEL_SETTINGS_FILE", "USE_LITELLM_PROXY"):
        if env.get(variable) and env[variable].strip().lower() not in ("false", "0", "no", "off"):
            found.refusals.append(f"{variable} in the environment may send requests elsewhere")
    for flag, model in shortcuts.items():  # AIDER_4O=true and the like
        variable = "AIDER_" + flag.removeprefix("--").upper().replace("-", "_")
        if env.get(variable, "").strip().lower() in _TRUE:
            found.model(model, "--model", f"{variable} in the environment", "env")
    more_env: list[str] = []
    for path in config_files(args, env, every=True):
        text = _read(path)
        if text is None:
            continue
        if _ESCAPED.search(text) or _UNREAD.search(text):
            found.refusals.append(f"{path} has YAML capguard does not read (an escaped string, a flow mapping)")
        for line in text.splitlines():
            key = _CONF_KEY.match(line)
            if key is None:
                continue
            name, value = key.group(1), key.group(2)
            if name in MODEL_KEYS:
                found.model(value, MODEL_KEYS[name], f"{name} in {path}", "conf")
            elif name in ROUTING_KEYS:
                found.refusals.append(f"{name} in {path} would replace capguard's proxy")
            elif name == "env-file":
                more_env.append(_unquote(value))
            elif f"--{name}" in shortcuts and _unquote(value).lower() in _TRUE:
                found.model(shortcuts[f"--{name}"], "--model", f"{name} in {path}", "conf")
    for path in env_files(args, env, more_env):
        text = _read(path)
        if text is None:
            continue
        for line in text.splitlines():
            pair = _DOTENV.match(line)
            if pair is None:
                continue
            name, value = pair.group(1), pair.group(2)
            if name in ("AIDER_SET_ENV", "AIDER_MODEL_SETTINGS_FILE"):
                found.refusals.append(f"{name} in {path} may send requests elsewhere")
            elif name in ("NO_PROXY", "no_proxy"):  # aider loads it over the one that keeps the proxy's hop direct
                found.refusals.append(f"{name} in {path} (aider loads it over capguard's own)")
            elif name in bases or name in LITELLM_ROUTING or name.endswith(("_API_BASE", "_BASE_URL")):
                found.refusals.append(f"{name} in {path} (aider loads it over capguard's proxy)")
            elif name.startswith("AIDER_"):
                option = name[6:].lower().replace("_", "-")
                if option in MODEL_KEYS:
                    found.model(value, MODEL_KEYS[option], f"{name} in {path}", "dotenv")
                elif f"--{option}" in shortcuts and _unquote(value).lower() in _TRUE:
                    found.model(shortcuts[f"--{option}"], "--model", f"{name} in {path}", "dotenv")
    for path in model_settings_files(env):
        text = _read(path)
        if text is None:
            continue
        if _ESCAPED.search(text) or re.search(r"^\s*(?:-\s+)?\?", text, re.MULTILINE):
            found.refusals.append(f"{path} has YAML capguard does not read (an escaped string, a complex key)")
        if routed := _ROUTING_PARAMS.search(text):
            found.refusals.append(f"{routed.group(1)} in {path} would send aider's requests around capguard's proxy")
        entry = None  # the model whose entry the lines below belong to
        for line in text.splitlines():
            if begun := _ENTRY_NAME.match(line):
                entry = _unquote(begun.group(1).split(",", 1)[0].rstrip("}] "))
            named = _SETTINGS_MODEL.search(line)
            if named is None:
                continue
            value = named.group(2).split(",", 1)[0].rstrip("}] ")
            if value in ("", "null", "~"):
                continue
            option = "--weak-model" if named.group(1) == "weak_model_name" else "--editor-model"
            found.model(value, option, f"{named.group(1)} in {path}", "settings", entry)
    return found
