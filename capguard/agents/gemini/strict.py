"""Strict mode for Gemini CLI: its Gemini API requests go through capguard's metering proxy.

Gemini CLI sends its requests to `GOOGLE_GEMINI_BASE_URL` (it appends `/v1beta/models/<model>:<method>`) when it
signs in with an API key (`security.auth.selectedType` `gemini-api-key`; with no sign-in selected, that variable
makes it pick `gateway`, which its own check then refuses: exit 41), and to `GOOGLE_VERTEX_BASE_URL` (it appends
`/v1beta1/[projects/P/locations/L/]publishers/google/models/<model>:<method>`) with Vertex AI, and to
`CODE_ASSIST_ENDPOINT` (Google's Code Assist server; it appends `/v1internal:<method>`) with Login with Google or
Compute Engine credentials: each fronted. The sign-in is pinned for the run: the TUI's `/auth` may switch, but the
other endpoints lead nowhere.
Facts from Gemini CLI 0.61.0's bundle (settings precedence, `.env` loading, auth selection).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from capguard.agents.base import Front, env_true, strict_refusal
from capguard.core.errors import ConfigError
from capguard.metering.proxy.dialects import CODE_ASSIST, GEMINI, VERTEX_BY_LOCATION, VERTEX_GEMINI

GEMINI_DEFAULT = "https://generativelanguage.googleapis.com"
CODE_ASSIST_DEFAULT = "https://cloudcode-pa.googleapis.com"
VERTEX_AUTH = "vertex-ai"
CODE_ASSIST_AUTH = ("oauth-personal", "compute-default-credentials", "cloud-shell")
FRONTED_AUTH = ("gemini-api-key", "gateway", VERTEX_AUTH, *CODE_ASSIST_AUTH)
_AUTH_NAMES = {
    "oauth-personal": "Login with Google (Google's Code Assist server)",
    "vertex-ai": "Vertex AI",
    "cloud-shell": "Cloud Shell credentials (Google's Code Assist server)",
    "compute-default-credentials": "Compute Engine credentials (Google's Code Assist server)",
}
# Variables that pick a sign-in when no settings file names one (getAuthTypeFromEnv), and what they pick
_AUTH_VARIABLES = {
    "GOOGLE_GENAI_USE_GCA": "oauth-personal",
    "GOOGLE_GENAI_USE_VERTEXAI": "vertex-ai",
    "GEMINI_CLI_USE_COMPUTE_ADC": "compute-default-credentials",
    "CLOUD_SHELL": "compute-default-credentials",
}
_PROXY_VARIABLES = ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy")
CLOSED_URL = "https://capguard-strict-mode-closed-this-sign-in.invalid"  # what Gemini CLI shows if /auth picks it


def system_settings_path(env: Mapping[str, str]) -> Path:
    return Path(env.get("GEMINI_CLI_SYSTEM_SETTINGS_PATH") or "/etc/gemini-cli/settings.json")


def system_defaults_path(env: Mapping[str, str]) -> Path:
    return Path(env.get("GEMINI_CLI_SYSTEM_DEFAULTS_PATH") or system_settings_path(env).parent / "system-defaults.json")


def settings_files(env: Mapping[str, str], cwd: Path, home: Path) -> list[tuple[str, Path]]:
    """Gemini CLI's settings files, the one that wins first: system, workspace, user, system defaults."""
    return [
        ("the system settings", system_settings_path(env)),
        ("the workspace settings", cwd / ".gemini" / "settings.json"),
        ("the user settings", home / "settings.json"),
        ("the system defaults", system_defaults_path(env)),
    ]


def read_settings(path: Path) -> dict[str, Any] | None:
    """A settings file (JSON with comments, as Gemini CLI reads it); None when absent. ValueError when unreadable."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except OSError as err:
        raise ValueError(f"{path}: {err.strerror or err}") from None
    try:
        doc = json.loads(_without_comments(text))
    except (ValueError, RecursionError):
        raise ValueError(f"{path} is not JSON") from None
    return doc if isinstance(doc, dict) else {}


_JSON_TOKEN = re.compile(r'"(?:\\.|[^"\\])*"|//[^\n]*|/\*.*?\*/', re.S)


def _without_comments(text: str) -> str:
    return _JSON_TOKEN.sub(lambda m: m.group(0) if m.group(0).startswith('"') else "", text)


def _auth(doc: dict[str, Any] | None, key: str) -> str | None:
    security = doc.get("security") if isinstance(doc, dict) else None
    auth = security.get("auth") if isinstance(security, dict) else None
    value = auth.get(key) if isinstance(auth, dict) else None
    return value if isinstance(value, str) and value else None


def _env_files(cwd: Path, user_home: Path) -> list[Path]:
    """Every `.env` Gemini CLI may load (it loads the first it finds, walking up from the working directory)."""
    found: list[Path] = []
    for folder in [cwd, *cwd.parents]:
        found += [folder / ".gemini" / ".env", folder / ".env"]
    return found + [user_home / ".gemini" / ".env", user_home / ".env"]


def _dotenv_value(path: Path, name: str) -> str | None:
    try:
        lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return None
    for line in lines:
        found = re.match(rf"^\s*(?:export\s+)?{name}\s*=\s*(.*?)\s*$", line)
        if found:
            return found.group(1).strip("'\"")
    return None


def _setting(
    env: Mapping[str, str], cwd: Path, home: Path, variable: str, *, empty_is_unset: bool = True
) -> tuple[str | None, str]:
    """A variable as Gemini CLI sees it: the environment's, else the first `.env` it loads that sets it (a `.env`
    never overrides the environment); and where it came from."""
    value, origin = env.get(variable), "the environment"
    for dotenv in _env_files(cwd, home.parent) if (not value if empty_is_unset else value is None) else ():
        value, origin = _dotenv_value(dotenv, variable), str(dotenv)
        if value:
            break
    return value, origin


def strict_front(env: Mapping[str, str], cwd: Path, home: Path) -> tuple[Front, dict[str, str]]:
    """The proxy's front for Gemini CLI and the variables that close its other ways to a model, or a ConfigError
    (one line, exit 2) naming what would send requests around the proxy. `home` is Gemini's `~/.gemini`."""
    selected = enforced = None
    where = ""
    for name, path in settings_files(env, cwd, home):
        try:
            doc = read_settings(path)
        except ValueError as err:
            raise ConfigError(strict_refusal("gemini", f"its settings cannot be read ({err})")) from None
        if selected is None and _auth(doc, "selectedType"):
            selected, where = _auth(doc, "selectedType"), f"{name} ({path})"
        enforced = enforced or _auth(doc, "enforcedType")
    for kind, origin in ((selected, where), (enforced, "security.auth.enforcedType")):
        if kind is not None and kind not in FRONTED_AUTH:
            what = _AUTH_NAMES.get(kind, repr(kind))
            raise ConfigError(strict_refusal("gemini", f"it signs in with {what} ({origin}), not an API key"))
    if selected is None:  # Gemini picks its sign-in from the environment, a .env file's included
        for variable, kind in _AUTH_VARIABLES.items():
            value, origin = _setting(env, cwd, home, variable, empty_is_unset=False)
            if env_true(value):
                selected = kind
                break
    if selected is None:  # Gemini CLI takes a base URL with no sign-in but its `gateway`, which it then refuses
        raise ConfigError(
            strict_refusal(
                "gemini",
                f'no sign-in is selected (set "security": {{"auth": {{"selectedType": "gemini-api-key"}}}} in '
                f"{home / 'settings.json'}, or choose the API key in gemini's /auth)",
            )
        )
    for variable in _PROXY_VARIABLES:  # a .env Gemini loads may set one too (it never overrides the environment)
        value, origin = _setting(env, cwd, home, variable)
        if value:
            raise ConfigError(
                strict_refusal(
                    "gemini", f"{variable} is set in {origin}: Gemini CLI would send its model requests through it"
                )
            )
    if selected in CODE_ASSIST_AUTH:  # Google's Code Assist server, or the user's own endpoint for it
        value, origin = _setting(env, cwd, home, "CODE_ASSIST_ENDPOINT")
        if value and origin != "the environment":  # a file's, maybe a cloned repo's: never an upstream of ours
            raise ConfigError(
                strict_refusal("gemini", f"CODE_ASSIST_ENDPOINT is set in {origin} (set it in the environment)")
            )
        upstream = value or CODE_ASSIST_DEFAULT
        if not upstream.startswith(("http://", "https://")):
            raise ConfigError(strict_refusal("gemini", f"CODE_ASSIST_ENDPOINT {upstream!r} is not an http(s) URL"))
        closed = {name: CLOSED_URL for name in ("GOOGLE_GEMINI_BASE_URL", "GOOGLE_VERTEX_BASE_URL")}
        return Front(CODE_ASSIST, upstream.rstrip("/"), CODE_ASSIST, ("CODE_ASSIST_ENDPOINT",)), closed
    if selected == VERTEX_AUTH:  # without a base URL of the user's: the host of each request's location
        value, origin = _setting(env, cwd, home, "GOOGLE_VERTEX_BASE_URL")
        if value and origin != "the environment":  # a file's, maybe a cloned repo's: never an upstream of ours
            raise ConfigError(
                strict_refusal("gemini", f"GOOGLE_VERTEX_BASE_URL is set in {origin} (set it in the environment)")
            )
        upstream = value or VERTEX_BY_LOCATION
        if upstream != VERTEX_BY_LOCATION and not upstream.startswith(("http://", "https://")):
            raise ConfigError(strict_refusal("gemini", f"GOOGLE_VERTEX_BASE_URL {upstream!r} is not an http(s) URL"))
        closed = {name: CLOSED_URL for name in ("CODE_ASSIST_ENDPOINT", "GOOGLE_GEMINI_BASE_URL")}
        return Front("vertex", upstream, VERTEX_GEMINI, ("GOOGLE_VERTEX_BASE_URL",)), closed
    upstream = env.get("GOOGLE_GEMINI_BASE_URL") or GEMINI_DEFAULT
    if not upstream.startswith(("http://", "https://")):
        raise ConfigError(strict_refusal("gemini", f"GOOGLE_GEMINI_BASE_URL {upstream!r} is not an http(s) URL"))
    # Gemini's other ways to a model, should the TUI's /auth switch to one mid-run: to a name that never resolves
    # (RFC 2606), so they fail, naming strict mode, and nothing goes around the proxy
    closed = {name: CLOSED_URL for name in ("CODE_ASSIST_ENDPOINT", "GOOGLE_VERTEX_BASE_URL")}
    return Front(GEMINI, upstream, GEMINI, ("GOOGLE_GEMINI_BASE_URL",)), closed
