"""Redaction rules: which parts of a command line, a line of text or a DSN are secrets."""

from __future__ import annotations

import json

import pytest

from capguard.core.redact import MASK, is_secret_name, mask_dsn, redact_argv, redact_text

OPENAI = "sk-SECRETopenai0123456789abcdef"
ANTHROPIC = "sk-ant-api03-SECRETanthropic0123456789"


@pytest.mark.parametrize(
    "name",
    [
        "--openai-api-key",
        "--anthropic-api-key",
        "--api-key",
        "--analytics-posthog-project-api-key",
        "--token",
        "--github-token",
        "--access_token",
        "--authToken",
        "--client-secret",
        "--password",
        "--db-passwd",
        "OPENAI_API_KEY",
        "GITHUB_TOKEN",
        "apiKey",
        "--auth",
    ],
)
def test_names_that_say_key_token_secret_or_password_are_secret(name):
    assert is_secret_name(name)


@pytest.mark.parametrize(
    "name",
    [
        "--map-tokens",
        "--max-tokens",
        "--thinking-tokens",
        "--max-chat-history-tokens",
        "--max-output-tokens",
        "--attribute-author",
        "--keyword",
        "--model",
        "--openai-api-base",
        "--monkey",
        "--tokenizer",
        "--passthrough",
    ],
)
def test_counts_of_tokens_and_look_alikes_are_not_secret(name):
    assert not is_secret_name(name)


def test_key_flags_are_redacted_in_both_forms():
    argv = ["aider", "--openai-api-key", OPENAI, f"--anthropic-api-key={ANTHROPIC}", "--model", "gpt-4o"]
    assert redact_argv(argv) == ["aider", "--openai-api-key", MASK, f"--anthropic-api-key={MASK}", "--model", "gpt-4o"]


def test_short_values_after_a_key_flag_are_redacted_too():
    assert redact_argv(["aider", "--openai-api-key", "sk-fake"]) == ["aider", "--openai-api-key", MASK]


def test_api_key_keeps_the_provider_visible():
    argv = ["aider", "--api-key", f"openai={OPENAI}", "--api-key=deepseek=abcdef123456"]
    assert redact_argv(argv) == ["aider", "--api-key", f"openai={MASK}", f"--api-key=deepseek={MASK}"]


def test_a_base64_value_ending_in_padding_is_not_taken_for_a_provider():
    assert redact_argv(["x", "--token", "abcdefgh=="]) == ["x", "--token", MASK]


def test_token_counts_stay_visible():
    argv = ["aider", "--map-tokens", "1024", "--max-tokens=8192", "--thinking-tokens", "8k", "--model", "x"]
    assert redact_argv(argv) == argv


def test_a_secret_flag_followed_by_another_flag_masks_nothing():
    assert redact_argv(["x", "--show-keys", "--model", "m"]) == ["x", "--show-keys", "--model", "m"]


def test_env_style_arguments_with_secret_names():
    argv = ["aider", "--set-env", f"OPENAI_API_KEY={OPENAI}", "--set-env", "AIDER_DARK_MODE=1"]
    assert redact_argv(argv) == ["aider", "--set-env", f"OPENAI_API_KEY={MASK}", "--set-env", "AIDER_DARK_MODE=1"]


def test_bare_keys_in_a_prompt_are_redacted():
    argv = ["claude", "-p", f"use {ANTHROPIC} and {OPENAI} please"]
    out = redact_argv(argv)
    assert out == ["claude", "-p", f"use sk-ant-{MASK} and sk-{MASK} please"]


def test_after_double_dash_flags_are_files_but_keys_are_still_masked():
    argv = ["aider", "--", "--token", "notes.txt", OPENAI]
    assert redact_argv(argv) == ["aider", "--", "--token", "notes.txt", f"sk-{MASK}"]


def test_inline_json_settings_mask_values_under_secret_names():
    settings = {
        "env": {"ANTHROPIC_API_KEY": ANTHROPIC, "FOO": "bar"},
        "apiKeys": {"openai": "abc"},
        "statusLine": {"type": "command", "command": "python -m capguard.agents.claude.statusline /run"},
    }
    out = redact_argv(["claude", "--settings", json.dumps(settings)])
    doc = json.loads(out[2])
    assert doc["env"] == {"ANTHROPIC_API_KEY": MASK, "FOO": "bar"}
    assert doc["apiKeys"] == {"openai": MASK}
    assert doc["statusLine"] == settings["statusLine"]


def test_json_without_secrets_is_left_byte_for_byte():
    raw = '{"statusLine": {"type": "command",   "command": "x"}}'
    assert redact_argv(["claude", "--settings", raw])[2] == raw


def test_broken_or_too_deep_json_is_still_scanned_as_text():
    assert redact_argv(["x", "{" + OPENAI])[1] == "{sk-" + MASK
    deep = "[" * 100_000 + "]" * 100_000
    assert redact_argv(["x", "{" + deep]) == ["x", "{" + deep]


def test_redaction_is_idempotent():
    argv = [
        "aider",
        "--openai-api-key",
        OPENAI,
        "--api-key",
        f"openai={OPENAI}",
        f"T={ANTHROPIC}",
        "K_TOKEN=x",
        "--message",
        f"hi {OPENAI}",
    ]
    once = redact_argv(argv)
    assert redact_argv(once) == once
    assert not any(OPENAI in a or ANTHROPIC in a for a in once)


@pytest.mark.parametrize(
    "text, shown",
    [
        (
            "postgresql://capguard:hunter2@db.example:5432/ledger",
            f"postgresql://capguard:{MASK}@db.example:5432/ledger",
        ),
        (
            "postgresql://capguard@db/ledger?password=hunter2&sslmode=require",
            f"postgresql://capguard@db/ledger?password={MASK}&sslmode=require",
        ),
        (
            "host=db user=capguard password=hunter2 dbname=ledger",
            f"host=db user=capguard password={MASK} dbname=ledger",
        ),
        ("host=db password='hunter 2' dbname=x", f"host=db password={MASK} dbname=x"),
        ("postgresql://db/ledger?sslpassword=hunter2", f"postgresql://db/ledger?sslpassword={MASK}"),
        ("postgresql://capguard@db/ledger", "postgresql://capguard@db/ledger"),
        ("/home/me/.local/share/capguard/ledger.db", "/home/me/.local/share/capguard/ledger.db"),
    ],
)
def test_dsns_are_shown_with_the_password_masked(text, shown):
    assert mask_dsn(text) == shown
    assert "hunter" not in mask_dsn(text)


def test_free_text_masks_bearer_tokens_and_known_formats():
    line = "error: 401 for Authorization: Bearer abcdefghijklmnop with ghp_" + "a" * 36
    out = redact_text(line)
    assert "abcdefghijklmnop" not in out and "a" * 36 not in out
    assert out.startswith("error: 401 for Authorization: Bearer " + MASK)


def test_plain_text_is_unchanged():
    line = "capguard: stopped aider: cost $1.02 reached the $1.00 cap (7 replies, task-runner sk-1)"
    assert redact_text(line) == line


def test_a_library_error_goes_to_the_runs_log_masked_never_to_the_agents_screen(tmp_path, capfd):
    """aiohttp (the metering proxy's) logs an error it did not expect with its traceback; without a handler of its
    own Python prints that on stderr, the screen the agent shares. During a run it goes to capguard.log, keys masked
    in the message and in the traceback."""
    import logging

    from capguard import run

    handler = run._log_to(tmp_path / "capguard.log")
    try:
        try:
            raise RuntimeError(f"upstream said no to {ANTHROPIC}")
        except RuntimeError:
            logging.getLogger("aiohttp.server").exception("Error handling request with %s", OPENAI)
    finally:
        for name in ("capguard", *run._LIBRARY_LOGGERS):
            logging.getLogger(name).removeHandler(handler)
        handler.close()
    written = (tmp_path / "capguard.log").read_text()
    assert "Error handling request" in written and "RuntimeError: upstream said no to" in written
    assert ANTHROPIC not in written and OPENAI not in written
    out, err = capfd.readouterr()  # (another test's leftover thread may write here: only this record matters)
    assert "Error handling request" not in err + out and "upstream said no" not in err + out
