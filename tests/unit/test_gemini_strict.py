"""Strict mode's decision for Gemini CLI at start: which sign-ins the proxy can front (read from Gemini's settings
files in their order, its environment and the `.env` files it loads), where requests go on to, and the endpoints of
the other sign-ins closed for the run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from capguard.agents.gemini.strict import CLOSED_URL, CODE_ASSIST_DEFAULT, GEMINI_DEFAULT, read_settings, strict_front
from capguard.core.errors import ConfigError
from capguard.metering.proxy.dialects import CODE_ASSIST, GEMINI, VERTEX_BY_LOCATION, VERTEX_GEMINI


@pytest.fixture
def where(tmp_path):
    home, cwd = tmp_path / "home" / ".gemini", tmp_path / "work" / "repo"
    home.mkdir(parents=True)
    cwd.mkdir(parents=True)
    env = {
        "GEMINI_CLI_SYSTEM_SETTINGS_PATH": str(tmp_path / "etc" / "settings.json"),
        "GEMINI_API_KEY": "fake",
    }
    return env, cwd, home


def settings(path: Path, auth: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"security": {"auth": auth}}))


def test_an_api_key_sign_in_is_fronted_and_the_other_endpoints_closed(where):
    env, cwd, home = where
    settings(home / "settings.json", {"selectedType": "gemini-api-key"})
    front, closed = strict_front(env, cwd, home)
    assert (front.mount, front.dialect, front.env, front.upstream) == (
        GEMINI,
        GEMINI,
        ("GOOGLE_GEMINI_BASE_URL",),
        GEMINI_DEFAULT,
    )
    assert closed == {"CODE_ASSIST_ENDPOINT": CLOSED_URL, "GOOGLE_VERTEX_BASE_URL": CLOSED_URL}
    assert CLOSED_URL.endswith(".invalid")  # RFC 2606: never resolves
    front, _ = strict_front({**env, "GOOGLE_GEMINI_BASE_URL": "http://127.0.0.1:9/gw"}, cwd, home)
    assert front.upstream == "http://127.0.0.1:9/gw"  # the user's own base URL is where requests go on to


@pytest.mark.parametrize(
    ("file", "auth"),
    [
        ("user", {"selectedType": "oauth-personal"}),
        ("workspace", {"selectedType": "cloud-shell"}),
        ("system", {"selectedType": "compute-default-credentials"}),
    ],
)
def test_login_with_google_and_compute_credentials_are_fronted_at_the_code_assist_server(where, file, auth):
    env, cwd, home = where
    path = {
        "user": home / "settings.json",
        "workspace": cwd / ".gemini" / "settings.json",
        "system": Path(env["GEMINI_CLI_SYSTEM_SETTINGS_PATH"]),
    }[file]
    settings(path, auth)
    front, closed = strict_front(env, cwd, home)
    assert (front.mount, front.dialect, front.env, front.upstream) == (
        CODE_ASSIST, CODE_ASSIST, ("CODE_ASSIST_ENDPOINT",), CODE_ASSIST_DEFAULT
    )  # fmt: skip
    assert closed == {"GOOGLE_GEMINI_BASE_URL": CLOSED_URL, "GOOGLE_VERTEX_BASE_URL": CLOSED_URL}
    front, _ = strict_front({**env, "CODE_ASSIST_ENDPOINT": "https://gw.example/"}, cwd, home)
    assert front.upstream == "https://gw.example"  # the user's own endpoint
    # a .env's (a cloned repo's, maybe): never an upstream capguard sends the user's token to
    (cwd / ".env").write_text("CODE_ASSIST_ENDPOINT=https://attacker.example\n")
    with pytest.raises(ConfigError, match=r"CODE_ASSIST_ENDPOINT is set in .*repo/\.env"):
        strict_front(env, cwd, home)


@pytest.mark.parametrize(
    ("auth", "words"),
    [
        ({"selectedType": "some-new-sign-in"}, "'some-new-sign-in'"),
        ({"selectedType": "gemini-api-key", "enforcedType": "another-sign-in"}, "enforcedType"),
    ],
)
def test_a_sign_in_the_proxy_cannot_front_is_refused(where, auth, words):
    env, cwd, home = where
    settings(home / "settings.json", auth)
    with pytest.raises(ConfigError, match=words) as err:
        strict_front(env, cwd, home)
    assert "--meter files" in str(err.value) and "\n" not in str(err.value)


def test_the_system_settings_win_over_the_users(where):
    env, cwd, home = where
    settings(home / "settings.json", {"selectedType": "gemini-api-key"})
    settings(Path(env["GEMINI_CLI_SYSTEM_SETTINGS_PATH"]), {"selectedType": "oauth-personal"})
    assert strict_front(env, cwd, home)[0].mount == CODE_ASSIST
    settings(Path(env["GEMINI_CLI_SYSTEM_SETTINGS_PATH"]), {"selectedType": "gemini-api-key"})
    settings(home / "settings.json", {"selectedType": "oauth-personal"})
    assert strict_front(env, cwd, home)[0].upstream == GEMINI_DEFAULT  # the user's choice is overridden


def test_with_no_sign_in_selected_the_environment_and_dotenv_files_decide(where):
    env, cwd, home = where
    assert strict_front({**env, "GOOGLE_GENAI_USE_GCA": "true"}, cwd, home)[0].mount == CODE_ASSIST
    (cwd.parent / ".env").write_text("# a comment\nexport GEMINI_CLI_USE_COMPUTE_ADC='true'\n")
    assert strict_front(env, cwd, home)[0].mount == CODE_ASSIST
    (cwd.parent / ".env").write_text("# a comment\nexport GOOGLE_GENAI_USE_VERTEXAI='true'\n")
    assert strict_front(env, cwd, home)[0].mount == "vertex"  # Vertex AI: fronted
    (cwd.parent / ".env").unlink()
    with pytest.raises(ConfigError, match="no sign-in is selected"):
        strict_front(env, cwd, home)  # Gemini CLI would refuse the base URL itself (exit 41)


@pytest.mark.parametrize("variable", ["HTTPS_PROXY", "http_proxy"])
def test_an_http_proxy_variable_is_refused(where, variable):
    env, cwd, home = where
    settings(home / "settings.json", {"selectedType": "gemini-api-key"})
    with pytest.raises(ConfigError, match=f"{variable} is set in the environment"):
        strict_front({**env, variable: "http://proxy.example:3128"}, cwd, home)
    # a (trusted) repo's .env: Gemini CLI loads it before it sets up its proxy, so its requests would go through it
    (cwd / ".gemini").mkdir()
    (cwd / ".gemini" / ".env").write_text(f"{variable}=http://proxy.example:3128\n")
    with pytest.raises(ConfigError, match=rf"{variable} is set in .*repo/\.gemini/\.env"):
        strict_front(env, cwd, home)


def test_a_base_url_that_is_not_http_and_unreadable_settings_are_refused(where):
    env, cwd, home = where
    settings(home / "settings.json", {"selectedType": "gemini-api-key"})
    with pytest.raises(ConfigError, match="not an http"):
        strict_front({**env, "GOOGLE_GEMINI_BASE_URL": "file:///tmp/x"}, cwd, home)
    (home / "settings.json").write_text("{not json")
    with pytest.raises(ConfigError, match="settings cannot be read"):
        strict_front(env, cwd, home)


def test_settings_with_comments_are_read_as_gemini_reads_them(tmp_path):
    path = tmp_path / "settings.json"
    path.write_text('{\n  // the sign-in\n  "security": {"auth": {"selectedType": "gemini-api-key"}}, /* x */\n'
                    '  "url": "http://example.invalid//not-a-comment"\n}')  # fmt: skip
    assert read_settings(path) == {
        "security": {"auth": {"selectedType": "gemini-api-key"}},
        "url": "http://example.invalid//not-a-comment",
    }
    assert read_settings(tmp_path / "absent.json") is None


def test_vertex_ai_is_fronted_at_its_base_url_and_the_other_endpoints_closed(where):
    env, cwd, home = where
    settings(home / "settings.json", {"selectedType": "vertex-ai"})
    front, closed = strict_front(env, cwd, home)
    assert (front.mount, front.upstream, front.dialect, front.env) == (
        "vertex", VERTEX_BY_LOCATION, VERTEX_GEMINI, ("GOOGLE_VERTEX_BASE_URL",)
    )  # fmt: skip
    assert closed == {"CODE_ASSIST_ENDPOINT": CLOSED_URL, "GOOGLE_GEMINI_BASE_URL": CLOSED_URL}
    front, _ = strict_front({**env, "GOOGLE_VERTEX_BASE_URL": "https://gw.example/vertex"}, cwd, home)
    assert front.upstream == "https://gw.example/vertex"  # the user's own gateway
    with pytest.raises(ConfigError, match="GOOGLE_VERTEX_BASE_URL 'ftp://x' is not an http"):
        strict_front({**env, "GOOGLE_VERTEX_BASE_URL": "ftp://x"}, cwd, home)
    # a .env's (a cloned repo's, maybe): never an upstream capguard sends the user's token to
    (cwd / ".env").write_text("GOOGLE_VERTEX_BASE_URL=https://attacker.example\n")
    with pytest.raises(ConfigError, match=r"GOOGLE_VERTEX_BASE_URL is set in .*repo/\.env"):
        strict_front(env, cwd, home)
    # chosen by the environment, with no sign-in selected
    (home / "settings.json").unlink()
    (cwd / ".env").unlink()
    assert strict_front({**env, "GOOGLE_GENAI_USE_VERTEXAI": "true"}, cwd, home)[0].mount == "vertex"
