"""The real Codex CLI (`codex exec`, no capguard) against the fake Responses server: the usage Codex writes to
its rollout file equals, to the token, what the fake billed, when counted from one record type only."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import uuid
from pathlib import Path

import pytest

from tests.fakes.fake_responses import FakeResponses, Script, say, shell
from tests.integration.conftest import agent_or_skip, find_agent, kill_tagged

pytestmark = pytest.mark.agent

USAGE_KEYS = ("input_tokens", "cached_input_tokens", "output_tokens", "reasoning_output_tokens", "total_tokens")


def find_codex() -> str | None:
    return find_agent("codex", "CAPGUARD_TEST_CODEX")


@pytest.fixture(scope="session")
def codex_bin() -> str:
    return agent_or_skip("codex", "CAPGUARD_TEST_CODEX", "npm install @openai/codex@0.169.1")


def write_config(codex_home: Path, base_url: str, project: Path) -> None:
    """A custom provider speaking the Responses API (the only wire_api left), and the project pre-trusted."""
    codex_home.mkdir(parents=True)
    (codex_home / "config.toml").write_text(
        'model = "fake-model"\nmodel_provider = "fake"\n\n'
        "[model_providers.fake]\n"
        f'name = "Fake Responses"\nbase_url = "{base_url}"\nenv_key = "FAKE_API_KEY"\nwire_api = "responses"\n\n'
        f'[projects."{project}"]\ntrust_level = "trusted"\n'
    )


def rollout_records(codex_home: Path, thread_id: str) -> list[dict]:
    files = list((codex_home / "sessions").glob(f"*/*/*/rollout-*-{thread_id}.jsonl"))
    assert len(files) == 1, f"expected one rollout for {thread_id}, found {files}"
    return [json.loads(line) for line in files[0].read_text().splitlines()]


def summed(usages: list[dict]) -> dict[str, int]:
    return {k: sum(u[k] for u in usages) for k in USAGE_KEYS}


def test_rollout_usage_equals_what_the_fake_billed(tmp_path, codex_bin):
    project = tmp_path / "proj"
    project.mkdir()
    (project / "README.md").write_text("scratch\n")
    subprocess.run(["git", "init", "-q"], cwd=project, check=True)
    codex_home = tmp_path / "home" / ".codex"
    tag = uuid.uuid4().hex
    env = {k: v for k, v in os.environ.items() if not k.endswith("_API_KEY") and not k.startswith("CODEX_")}
    env.update(HOME=str(tmp_path / "home"), CODEX_HOME=str(codex_home), FAKE_API_KEY="sk-fake", CAPGUARD_TEST_TAG=tag)
    # A tool call, then a final message: two billed replies in one turn, one of them with reasoning tokens.
    script = Script([shell("echo capguard-smoke", reasoning_tokens=12), say("All done.")])
    with FakeResponses(script) as server:
        write_config(codex_home, server.base_url, project)
        proc = subprocess.Popen(
            [codex_bin, "exec", "--json", "--dangerously-bypass-approvals-and-sandbox", "run the smoke test"],
            cwd=project,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        try:
            out, err = proc.communicate(timeout=90)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            out, err = proc.communicate()
            pytest.fail(f"codex exec did not finish in 90 s\nstderr: {err[-2000:]}")
        finally:
            kill_tagged(tag)
        billed = server.billed("main")
        requests = server.requests

    assert proc.returncode == 0, err[-2000:]
    assert len(requests) == 2 and len(billed) == 2
    assert all(r["user_agent"].startswith("codex_exec/") for r in requests)
    events = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    thread_id = next(e["thread_id"] for e in events if e["type"] == "thread.started")
    records = rollout_records(codex_home, thread_id)

    # One token_usage_record per billed response, carrying that response's id and exactly its usage.
    usage_records = [r["payload"] for r in records if r["type"] == "token_usage_record"]
    assert [u["response_id"] for u in usage_records] == [r["id"] for r in billed]
    for rec, req in zip(usage_records, billed):
        u = req["usage"]
        assert rec["usage"] == {
            "input_tokens": u["input_tokens"],
            "cached_input_tokens": u["input_tokens_details"]["cached_tokens"],
            "cache_write_input_tokens": 0,
            "output_tokens": u["output_tokens"],
            "reasoning_output_tokens": u["output_tokens_details"]["reasoning_tokens"],
            "total_tokens": u["total_tokens"],
        }
    fake = server.billed_usage("main")
    expected = {
        "input_tokens": fake["input_tokens"],
        "cached_input_tokens": fake["cached_tokens"],
        "output_tokens": fake["output_tokens"],
        "reasoning_output_tokens": fake["reasoning_tokens"],
        "total_tokens": fake["total_tokens"],
    }
    assert summed([u["usage"] for u in usage_records]) == expected
    assert expected["cached_input_tokens"] > 0 and expected["reasoning_output_tokens"] == 12

    # token_count.last_token_usage carries the same replies again: summing both record types counts twice.
    counts = [
        r["payload"]["info"]
        for r in records
        if r["type"] == "event_msg" and r["payload"].get("type") == "token_count" and r["payload"]["info"]
    ]
    assert summed([c["last_token_usage"] for c in counts]) == expected
    assert counts[-1]["total_token_usage"]["total_tokens"] == expected["total_tokens"]  # a running total

    # The --json stdout sums the turn the same way (it has no total_tokens).
    turn = next(e["usage"] for e in events if e["type"] == "turn.completed")
    assert {k: turn[k] for k in USAGE_KEYS if k != "total_tokens"} == {
        k: v for k, v in expected.items() if k != "total_tokens"
    }
