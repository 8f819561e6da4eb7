"""The real Gemini CLI, headless, against the fake Gemini API (no capguard yet): what it writes to disk about usage
equals what the fake billed, to the token. The agent's shell tool runs in its own session, so teardown sweeps by tag.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
import uuid

import psutil
import pytest

from tests.fakes.fake_gemini import MAIN, ROUTER, FakeGemini, shell_script
from tests.integration.conftest import agent_or_skip, find_agent, make_repo

pytestmark = pytest.mark.agent

FIELDS = ("input", "output", "cached", "thoughts", "tool", "total")
# telemetry's gemini_cli.api_response names for the session file's `tokens` fields
TELEMETRY = {
    "input": "input_token_count",
    "output": "output_token_count",
    "cached": "cached_content_token_count",
    "thoughts": "thoughts_token_count",
    "tool": "tool_token_count",
    "total": "total_token_count",
}


def find_gemini() -> str | None:
    return find_agent("gemini", "CAPGUARD_TEST_GEMINI")


@pytest.fixture(scope="session")
def gemini_bin() -> str:
    return agent_or_skip("gemini", "CAPGUARD_TEST_GEMINI", "npm install @google/gemini-cli@0.61.0")


def tagged(tag: str) -> list[psutil.Process]:
    """Live processes carrying this test's tag in their environment: the CLI, its relaunched child, its tools."""
    found = []
    for proc in psutil.process_iter():
        try:
            if proc.status() != psutil.STATUS_ZOMBIE and proc.environ().get("CAPGUARD_TEST_TAG") == tag:
                found.append(proc)
        except psutil.Error:
            continue
    return found


@pytest.fixture
def tag():
    value = uuid.uuid4().hex
    yield value
    for proc in tagged(value):
        try:
            proc.kill()
        except psutil.Error:
            pass


def concatenated_json(text: str) -> list[dict]:
    """The telemetry outfile: pretty-printed JSON objects one after another (not JSONL)."""
    decoder, objs, i = json.JSONDecoder(), [], 0
    while True:
        while i < len(text) and text[i].isspace():
            i += 1
        if i >= len(text):
            return objs
        obj, i = decoder.raw_decode(text, i)
        objs.append(obj)


def test_session_file_and_telemetry_equal_what_the_fake_billed(tmp_path, gemini_bin, tag):
    home = tmp_path / "home"
    (home / ".gemini").mkdir(parents=True)
    # With GOOGLE_GEMINI_BASE_URL set and no selectedType, the CLI picks auth type "gateway" and exits 41.
    (home / ".gemini" / "settings.json").write_text(
        json.dumps({"security": {"auth": {"selectedType": "gemini-api-key"}}})
    )
    repo = make_repo(tmp_path / "proj", {"a.txt": "hi\n"})
    telemetry = tmp_path / "telemetry.json"
    script = shell_script("echo hi-from-shell", "All done.")
    with FakeGemini(script) as srv:
        env = dict(
            os.environ,
            HOME=str(home),
            GEMINI_CLI_HOME=str(home),
            GOOGLE_GEMINI_BASE_URL=srv.base_url,
            GEMINI_API_KEY="fake-key",
            GEMINI_CLI_TRUST_WORKSPACE="true",
            CAPGUARD_TEST_TAG=tag,
            GEMINI_TELEMETRY_ENABLED="true",
            GEMINI_TELEMETRY_TARGET="local",
            GEMINI_TELEMETRY_OUTFILE=str(telemetry),
        )
        for name in ("GEMINI_MODEL", "GOOGLE_API_KEY", "GOOGLE_GENAI_USE_VERTEXAI", "GOOGLE_GENAI_USE_GCA", "CI"):
            env.pop(name, None)
        proc = subprocess.run(
            [gemini_bin, "-y", "-p", "run the command", "-o", "json"],
            cwd=repo,
            env=env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert proc.returncode == 0, proc.stderr[-2000:]
        assert srv.wait_idle(5)
        main, router = srv.totals(MAIN), srv.totals(ROUTER)
        billed_main = srv.billed(MAIN)
        assert len(billed_main) == 2 and len(srv.billed(ROUTER)) == 1 and len(srv.billed()) == 3

    # The session file: JSONL; `gemini` lines carry per-reply tokens; a tool-calling reply is written twice.
    sessions = list((home / ".gemini" / "tmp").glob("*/chats/session-*.jsonl"))
    assert len(sessions) == 1, sessions
    replies = [json.loads(line) for line in sessions[0].read_text().splitlines()]
    replies = [r for r in replies if r.get("type") == "gemini"]
    by_id = {r["id"]: r for r in replies}  # keep the last write of each id
    assert len(replies) == 3 and len(by_id) == 2
    on_disk = {f: sum(r["tokens"][f] for r in by_id.values()) for f in FIELDS}
    assert on_disk == main
    assert [r["tokens"] for r in by_id.values()] == [r["usage"] for r in billed_main]
    assert main["cached"] > 0  # the second turn re-sends the first: the fake reports a cache hit, the CLI keeps it

    # Telemetry sees every request, the router's too (the session file does not).
    events = [
        o["attributes"]
        for o in concatenated_json(telemetry.read_text())
        if (o.get("attributes") or {}).get("event.name") == "gemini_cli.api_response"
    ]
    for role, billed in (("main", main), ("utility_router", router)):
        rows = [e for e in events if e["role"] == role]
        assert {f: sum(e[TELEMETRY[f]] for e in rows) for f in FIELDS} == billed, role

    # -o json stats: `prompt` is the API's promptTokenCount, `input` excludes the cached part.
    stats = json.loads(proc.stdout)["stats"]["models"]
    roles = {role: v for m in stats.values() for role, v in m["roles"].items()}
    assert roles["main"]["tokens"]["prompt"] == main["input"]
    assert roles["main"]["tokens"]["input"] == main["input"] - main["cached"]
    assert roles["utility_router"]["tokens"]["prompt"] == router["input"]

    deadline = time.monotonic() + 5
    while tagged(tag) and time.monotonic() < deadline:  # the CLI exits; its tool already finished
        time.sleep(0.1)
    assert tagged(tag) == []
