"""The real OpenCode (`opencode run`, no capguard yet) against the billing fake Chat Completions server: the usage
OpenCode writes to its SQLite store equals what the fake billed, to the token, except the title request (billed, never
recorded).

One run: a title request, then a main step that calls bash (with reasoning) and a main step that answers, whose
prompt repeats the first one's, so the fake reports cached tokens. Install: npm install --prefix .agents
opencode-ai@1.18.33 (or point CAPGUARD_TEST_OPENCODE at the binary).
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import uuid
from pathlib import Path

import pytest

from tests.fakes.fake_chat import MAIN, TITLE, FakeChat, shell_script
from tests.integration.conftest import agent_or_skip, find_agent, kill_tagged, make_repo

pytestmark = pytest.mark.agent
REPO_ROOT = Path(__file__).resolve().parents[2]
PRICE = {"input": 2.0, "output": 8.0, "cache_read": 0.5, "cache_write": 2.5}  # USD per million tokens


def find_opencode() -> str | None:
    return find_agent("opencode", "CAPGUARD_TEST_OPENCODE")


@pytest.fixture(scope="session")
def opencode_bin() -> str:
    return agent_or_skip("opencode", "CAPGUARD_TEST_OPENCODE", "npm install --prefix .agents opencode-ai@1.18.33")


def opencode_env(tmp: Path, base_url: str, tag: str) -> tuple[dict, Path]:
    """A scratch HOME and config; nothing from the caller's OPENCODE_* or XDG_* leaks in. Returns (env, db path)."""
    home = tmp / "home"
    home.mkdir()
    config = tmp / "opencode.json"
    config.write_text(
        json.dumps(
            {
                "provider": {
                    "fake": {
                        "npm": "@ai-sdk/openai-compatible",
                        "name": "Fake",
                        "options": {"baseURL": base_url, "apiKey": "sk-fake"},
                        "models": {"fake-model": {"name": "Fake Model", "cost": PRICE}},
                    }
                },
                "model": "fake/fake-model",
                "small_model": "fake/fake-model",
                "autoupdate": False,
                "share": "disabled",
            }
        )
    )
    db = tmp / "data" / "opencode" / "opencode.db"
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(home),
        "LANG": "C.UTF-8",
        "TERM": "dumb",
        "XDG_DATA_HOME": str(tmp / "data"),
        "XDG_CONFIG_HOME": str(home / ".config"),
        "XDG_CACHE_HOME": str(home / ".cache"),
        "XDG_STATE_HOME": str(home / ".local" / "state"),
        "OPENCODE_CONFIG": str(config),
        "OPENCODE_DISABLE_MODELS_FETCH": "1",
        "OPENCODE_DISABLE_AUTOUPDATE": "1",
        "npm_config_registry": "http://127.0.0.1:9/",  # no plugin install from the network, fails at once
        "CAPGUARD_TEST_TAG": tag,
    }
    return env, db


def read_db(db: Path, sql: str) -> list[tuple]:
    """Read-only through SQLite (the data sits in the -wal file; never open it read-write or immutable)."""
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return conn.execute(sql).fetchall()
    finally:
        conn.close()


def expected_tokens(usage: dict) -> dict:
    """How OpenCode splits a Chat Completions usage: disjoint input / cache read / output / reasoning."""
    cached = usage["prompt_tokens_details"]["cached_tokens"]
    reasoning = usage["completion_tokens_details"]["reasoning_tokens"]
    return {
        "total": usage["total_tokens"],
        "input": usage["prompt_tokens"] - cached,
        "output": usage["completion_tokens"] - reasoning,
        "reasoning": reasoning,
        "cache": {"read": cached, "write": 0},
    }


def test_opencode_records_what_the_fake_billed_to_the_token(opencode_bin, tmp_path):
    tag = uuid.uuid4().hex
    proj = make_repo(tmp_path / "proj")
    script = shell_script("echo hi-from-shell", final="All done.", reasoning="I should run the command first.")
    with FakeChat(script) as server:
        env, db = opencode_env(tmp_path, server.base_url, tag)
        proc = subprocess.Popen(
            [opencode_bin, "run", "--format", "json", "--auto", "run the shell"],
            cwd=proj,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        try:
            out, err = proc.communicate(timeout=150)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            out, err = proc.communicate()
            pytest.fail(f"opencode run did not finish in 150 s\nstderr: {err[-2000:]}")
        finally:
            kill_tagged(tag)
        assert server.wait_idle(10)
        billed = server.billed()
    assert proc.returncode == 0, err[-2000:]

    # what the fake billed: one title request, then the two main steps, each answered in full with its usage
    assert [r["kind"] for r in billed] == [TITLE, MAIN, MAIN]
    assert all(r["complete"] and r["usage_sent"] and r["include_usage"] and r["stream"] for r in billed)
    title, steps = billed[0], billed[1:]
    assert steps[0]["usage"]["completion_tokens_details"]["reasoning_tokens"] > 0
    assert steps[1]["usage"]["prompt_tokens_details"]["cached_tokens"] > 0  # the prompt repeats step 1's

    # the store: one assistant `message` row per model call, tokens split the way the fake's usage says
    rows = [json.loads(d) for (d,) in read_db(db, "SELECT data FROM message ORDER BY time_created, id")]
    assistant = [m for m in rows if m["role"] == "assistant"]
    assert [m["tokens"] for m in assistant] == [expected_tokens(r["usage"]) for r in steps]
    assert all(
        m["modelID"] == "fake-model" and m["providerID"] == "fake" and m["time"].get("completed") for m in assistant
    )
    assert [m["finish"] for m in assistant] == ["tool-calls", "stop"]
    for m in assistant:  # OpenCode prices it itself from the configured cost; reasoning at the output rate
        t = m["tokens"]
        usd = (
            t["input"] * PRICE["input"]
            + t["cache"]["read"] * PRICE["cache_read"]
            + (t["output"] + t["reasoning"]) * PRICE["output"]
        ) / 1e6
        assert m["cost"] == pytest.approx(usd, rel=1e-9)

    # the session totals equal the main calls to the token: the title call is billed but recorded nowhere
    (session,) = read_db(
        db,
        "SELECT tokens_input, tokens_output, tokens_reasoning, tokens_cache_read, "
        "tokens_cache_write, title FROM session",
    )
    main = server_totals(steps)
    assert session[:5] == (
        main["prompt"] - main["cached"],
        main["completion"] - main["reasoning"],
        main["reasoning"],
        main["cached"],
        0,
    )
    assert title["usage"]["prompt_tokens"] > 0 and session[5] == script.title_reply.text  # sent, used, unbilled
    recorded = sum(m["tokens"]["total"] for m in assistant)
    assert recorded == sum(r["usage"]["total_tokens"] for r in steps)
    assert recorded + title["usage"]["total_tokens"] == sum(r["usage"]["total_tokens"] for r in billed)

    # --format json's step_finish events carry the same figures as the rows
    finishes = [e["part"]["tokens"] for e in map(json.loads, out.splitlines()) if e.get("type") == "step_finish"]
    assert finishes == [m["tokens"] for m in assistant]


def server_totals(records: list[dict]) -> dict[str, int]:
    return {
        "prompt": sum(r["usage"]["prompt_tokens"] for r in records),
        "cached": sum(r["usage"]["prompt_tokens_details"]["cached_tokens"] for r in records),
        "completion": sum(r["usage"]["completion_tokens"] for r in records),
        "reasoning": sum(r["usage"]["completion_tokens_details"]["reasoning_tokens"] for r in records),
    }
