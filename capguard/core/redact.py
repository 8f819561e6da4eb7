"""Secrets out of what capguard stores and prints: an agent's command line, error and log lines, ledger URLs.

Pure: strings in, strings out. The agent itself is still given its real argv; only the copies are redacted.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Sequence
from typing import Any

MASK = "<redacted>"

# A flag or variable is secret when one of the words of its name is one of these. Words, not substrings:
# `--map-tokens 1024` and `--max-tokens` are counts (`tokens`), `--github-token` is a credential (`token`);
# `--attribute-author` is not `auth`.
SECRET_WORDS = frozenset(
    {
        "key",
        "keys",
        "apikey",
        "apikeys",
        "token",
        "secret",
        "secrets",
        "password",
        "passwd",
        "pwd",
        "passphrase",
        "credential",
        "credentials",
        "auth",
        "bearer",
        "sslpassword",
    }
)

# Known key formats, wherever they appear (a prompt, a JSON document, an error line). The group is what stays.
_KEY_FORMATS = [
    re.compile(r"(?<![A-Za-z0-9])(sk-ant-)[A-Za-z0-9_-]{8,}"),
    re.compile(r"(?<![A-Za-z0-9])(sk-)[A-Za-z0-9_-]{8,}"),  # OpenAI, also sk-proj-..., and most look-alikes
    re.compile(r"(?<![A-Za-z0-9])(gh[pousr]_)[A-Za-z0-9]{20,}"),
    re.compile(r"(?<![A-Za-z0-9])(github_pat_)[A-Za-z0-9_]{20,}"),
    re.compile(r"(?<![A-Za-z0-9])(glpat-)[A-Za-z0-9_-]{20,}"),
    re.compile(r"(?<![A-Za-z0-9])(xox[abprs]-)[A-Za-z0-9-]{10,}"),
    re.compile(r"(?<![A-Za-z0-9])(hf_)[A-Za-z0-9]{20,}"),
    re.compile(r"(?<![A-Za-z0-9])(AIza)[0-9A-Za-z_-]{30,}"),
    re.compile(r"(?<![A-Za-z0-9])(AKIA)[0-9A-Z]{16}(?![0-9A-Z])"),
    re.compile(r"(?i)(\bbearer\s+)[A-Za-z0-9._~+/=-]{8,}"),
]
# scheme://user:PASSWORD@host (a DSN, a proxy URL) and password=... in a query string or a libpq keyword DSN
_URL_PASSWORD = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*://[^/\s:@]*:)[^@\s/]+@")
_PARAM_PASSWORD = re.compile(r"(?i)(\b(?:ssl)?password\s*=\s*)(?:'[^']*'|[^&\s]+)")
_ENV_STYLE = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*)=(.*)$", re.S)
_PROVIDER_VALUE = re.compile(r"^([a-z][a-z0-9_.-]{0,31}=)([^=].*)$", re.S)  # aider's --api-key provider=KEY
_WORD_SPLIT = re.compile(r"[-_.\s]+|(?<=[a-z0-9])(?=[A-Z])")


def is_secret_name(name: str) -> bool:
    """`--openai-api-key`, `GITHUB_TOKEN`, `authToken`: yes. `--map-tokens`, `--attribute-author`: no."""
    return any(word.lower() in SECRET_WORDS for word in _WORD_SPLIT.split(name.lstrip("-")) if word)


def redact_text(text: str) -> str:
    """Known key formats and URL or DSN passwords masked in free text (prompts, error lines, log lines)."""
    for pattern in _KEY_FORMATS:
        text = pattern.sub(lambda m: m.group(1) + MASK, text)
    text = _URL_PASSWORD.sub(lambda m: m.group(1) + MASK + "@", text)
    return _PARAM_PASSWORD.sub(lambda m: m.group(1) + MASK, text)


def shown_url(url: str) -> str:
    """A base URL for notes and reports: scheme, host, port and path, never a user:password@, query or fragment."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        scheme, rest = "", url
    rest = rest.split("#", 1)[0].split("?", 1)[0]
    netloc, slash, path = rest.partition("/")
    host = netloc.rpartition("@")[2]
    return f"{scheme}{sep}{host}{slash}{path}"


def mask_dsn(target: str) -> str:
    """A ledger target as it may be shown: a postgresql:// URL or a libpq DSN with its password masked."""
    return redact_text(target)


def _secret_value(value: str) -> str:
    """The value of a secret flag: all of it masked, but aider's `provider=` prefix stays visible."""
    provider = _PROVIDER_VALUE.match(value)
    return provider.group(1) + MASK if provider else MASK


def _json_arg(arg: str) -> str:
    """An inline JSON document (Claude's --settings): values under secret names masked, others as text."""
    try:
        doc = json.loads(arg)
    except (ValueError, RecursionError):
        return redact_text(arg)
    cleaned = _redact_json(doc, depth=0)
    return arg if cleaned == doc else json.dumps(cleaned)


def _redact_json(value: Any, depth: int, secret: bool = False) -> Any:
    """`secret`: under a secret name, where every leaf is masked (`"apiKeys": {"openai": "..."}`)."""
    if depth > 50:  # deeper than any settings file: masked whole rather than walked
        return MASK
    if isinstance(value, dict):
        return {k: _redact_json(v, depth + 1, secret or is_secret_name(str(k))) for k, v in value.items()}
    if isinstance(value, list):
        return [_redact_json(v, depth + 1, secret) for v in value]
    if secret and value is not None and not isinstance(value, bool):
        return MASK
    return redact_text(value) if isinstance(value, str) else value


def redact_arg(arg: str) -> str:
    """One argument on its own: `NAME=value` with a secret name, inline JSON, known key formats."""
    env = _ENV_STYLE.match(arg)
    if env and is_secret_name(env.group(1)):
        return f"{env.group(1)}={MASK}"
    if arg.lstrip().startswith("{"):
        return _json_arg(arg)
    return redact_text(arg)


def _is_flag(arg: str) -> bool:
    return arg.startswith("-") and len(arg) > 1 and arg != "--"


def redact_argv(argv: Sequence[str]) -> list[str]:
    """A command line as it may be stored and printed: the value of every flag whose name says key, token,
    secret or password (`--flag VALUE` and `--flag=VALUE`), secret `NAME=value` arguments and anything that
    looks like a known API key. Idempotent: a redacted argv redacts to itself."""
    out: list[str] = []
    secret_next = False
    options = True  # until a `--`: after it every argument is a file or a prompt
    for arg in argv:
        if secret_next:
            secret_next = False
            if not _is_flag(arg):
                out.append(_secret_value(arg))
                continue
        if options and arg == "--":
            options = False
        elif options and arg.startswith("--") and is_secret_name(arg.split("=", 1)[0]):
            if "=" in arg:
                name, value = arg.split("=", 1)
                out.append(f"{name}={_secret_value(value)}")
                continue
            secret_next = True
            out.append(arg)
            continue
        out.append(redact_arg(arg))
    return out


class RedactingFilter(logging.Filter):
    """For capguard.log's handler: a key or a DSN password that reaches a log message is masked on the way."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        clean = redact_text(message)
        if clean != message:
            record.msg, record.args = clean, None
        if record.exc_info and not record.exc_text:  # a traceback's text, formatted once here and masked
            record.exc_text = redact_text(logging.Formatter().formatException(record.exc_info))
        return True


def redact_env_value(name: str, value: str) -> str:
    """An environment variable's value as it may be shown: all of it for a secret name (`OPENAI_API_KEY`), the
    secret parts of a `k=v,k2=v2` list (OTel's headers carry capguard's receiver token), keys and URL passwords."""
    if is_secret_name(name):
        return MASK
    pairs = value.split(",")
    if all("=" in pair for pair in pairs):
        value = ",".join(
            f"{key}={MASK}" if is_secret_name(key.strip()) else f"{key}={rest}"
            for key, rest in (pair.split("=", 1) for pair in pairs)
        )
    return redact_text(value)
