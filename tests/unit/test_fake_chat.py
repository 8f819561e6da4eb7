"""The billing fake Chat Completions server on its own (no agent): usage follows the request, streamed usage only
when asked for, output capped by max tokens, prefix caching, cuts, and the request log."""

from __future__ import annotations

import http.client
import json
import math
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from tests.fakes.fake_chat import (
    MAIN,
    TITLE,
    FakeChat,
    Reply,
    Script,
    bash,
    chat_script,
    prompt_text,
    runaway_script,
    shell_script,
    tokens,
)

REPO_ROOT = Path(__file__).resolve().parents[2]
TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "bash",
            "description": "Run a shell command",
            "parameters": {"type": "object", "properties": {"command": {"type": "string"}}},
        },
    }
]


def body(user: str = "hello", *, system: str = "You are a coding agent.", tools=TOOLS, **extra) -> dict:
    out = {
        "model": "fake-model",
        "messages": [{"role": "system", "content": system}, {"role": "user", "content": user}],
        **extra,
    }
    if tools:
        out["tools"] = tools
    return out


def post(server: FakeChat, payload: dict) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection(server.host, server.port, timeout=10)
    try:
        conn.request("POST", "/v1/chat/completions", json.dumps(payload), {"Content-Type": "application/json"})
        resp = conn.getresponse()
        try:
            return resp.status, resp.read()
        except http.client.IncompleteRead as err:  # a stream cut mid-way
            return resp.status, err.partial
    finally:
        conn.close()


def events(raw: bytes) -> list:
    """The SSE `data:` payloads of a stream, JSON-decoded except the final "[DONE]"."""
    out = []
    for line in raw.decode().splitlines():
        if line.startswith("data: "):
            data = line[len("data: ") :]
            out.append(data if data == "[DONE]" else json.loads(data))
    return out


def usage_of(evts: list) -> dict | None:
    found = [e["usage"] for e in evts if isinstance(e, dict) and e.get("usage")]
    assert len(found) <= 1
    return found[0] if found else None


def streamed_text(evts: list, key: str = "content") -> str:
    return "".join(c["delta"].get(key) or "" for e in evts if isinstance(e, dict) for c in e.get("choices", []))


# --------------------------------------------------------------------------- billing follows the request


def test_prompt_tokens_are_one_per_four_bytes_of_the_request_text():
    with FakeChat(chat_script("ok")) as server:
        small, big = body("hi"), body("x" * 4000)
        for b in (small, big):
            status, raw = post(server, b)
            assert status == 200
        usages = [r["usage"] for r in server.requests]
    assert usages[0]["prompt_tokens"] == math.ceil(len(prompt_text(small).encode()) / 4)
    assert usages[1]["prompt_tokens"] == math.ceil(len(prompt_text(big).encode()) / 4)
    assert 998 <= usages[1]["prompt_tokens"] - usages[0]["prompt_tokens"] <= 1000  # 3998 more bytes of text


def test_prompt_text_counts_tools_content_parts_and_tool_calls():
    b = {
        "messages": [
            {"role": "user", "content": [{"type": "text", "text": "part one"}, {"type": "image_url", "image_url": {}}]},
            {
                "role": "assistant",
                "content": "",
                "tool_calls": [
                    {"id": "c1", "type": "function", "function": {"name": "bash", "arguments": '{"command":"ls"}'}}
                ],
            },
            {"role": "tool", "tool_call_id": "c1", "content": "file.txt"},
        ],
        "tools": TOOLS,
    }
    text = prompt_text(b)
    assert "part one" in text and 'bash{"command":"ls"}' in text and "file.txt" in text
    assert json.dumps(TOOLS, sort_keys=True, separators=(",", ":")) in text
    assert tokens(text) == math.ceil(len(text.encode()) / 4)


def test_completion_tokens_follow_the_reply_sent_including_reasoning_and_tool_calls():
    reply = Reply("Hello there, friend!", reasoning="thinking hard", tool_calls=(bash("echo hi"),))
    with FakeChat(Script([reply])) as server:
        status, raw = post(server, body(stream=False))
    assert status == 200
    msg = json.loads(raw)
    message, usage = msg["choices"][0]["message"], msg["usage"]
    call = message["tool_calls"][0]["function"]
    visible = len(message["content"].encode()) + len((call["name"] + call["arguments"]).encode())
    reasoning = math.ceil(len(message["reasoning_content"].encode()) / 4)
    assert usage["completion_tokens_details"]["reasoning_tokens"] == reasoning == math.ceil(len("thinking hard") / 4)
    assert usage["completion_tokens"] == reasoning + math.ceil(visible / 4)
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    assert msg["choices"][0]["finish_reason"] == "tool_calls"
    assert json.loads(call["arguments"]) == {"command": "echo hi", "description": "run it"}


# --------------------------------------------------------------------------- streaming


def test_stream_sends_usage_last_only_when_include_usage_is_true():
    with FakeChat(chat_script("A streamed answer.")) as server:
        _, with_usage = post(server, body(stream=True, stream_options={"include_usage": True}))
        _, without = post(server, body(stream=True))
        _, false_opt = post(server, body(stream=True, stream_options={"include_usage": False}))
        records = server.requests
    evts = events(with_usage)
    assert evts[-1] == "[DONE]"
    assert evts[-2]["choices"] == [] and evts[-2]["usage"]["completion_tokens"] == tokens("A streamed answer.")
    assert streamed_text(evts) == "A streamed answer."
    finish = [c["finish_reason"] for e in evts[:-1] for c in e["choices"] if c["finish_reason"]]
    assert finish == ["stop"]
    assert usage_of(events(without)) is None and usage_of(events(false_opt)) is None
    assert [r["usage_sent"] for r in records] == [True, False, False]
    # billed all the same: the server bills what it generated, whether or not it told the client
    assert records[1]["usage"] == records[0]["usage"] and records[1]["complete"]


def test_stream_tool_call_deltas_reassemble_to_the_arguments():
    with FakeChat(shell_script("sleep 1; echo hi")) as server:
        _, raw = post(server, body(stream=True, stream_options={"include_usage": True}))
    evts = events(raw)
    deltas = [
        c["delta"]["tool_calls"][0]
        for e in evts
        if isinstance(e, dict)
        for c in e["choices"]
        if "tool_calls" in c["delta"]
    ]
    assert deltas[0]["function"]["name"] == "bash" and deltas[0]["id"]
    args = "".join(d["function"]["arguments"] for d in deltas)
    assert json.loads(args)["command"] == "sleep 1; echo hi"
    assert [c["finish_reason"] for e in evts[:-1] for c in e["choices"] if c["finish_reason"]] == ["tool_calls"]
    assert usage_of(evts)["completion_tokens"] == math.ceil(len(("bash" + args).encode()) / 4)


def test_reasoning_is_streamed_as_reasoning_content_and_billed():
    with FakeChat(Script([Reply("answer", reasoning="r" * 40)])) as server:
        _, raw = post(server, body(stream=True, stream_options={"include_usage": True}))
    evts = events(raw)
    assert streamed_text(evts, "reasoning_content") == "r" * 40
    usage = usage_of(evts)
    assert usage["completion_tokens_details"]["reasoning_tokens"] == 10
    assert usage["completion_tokens"] == 10 + tokens("answer")


# --------------------------------------------------------------------------- max tokens


@pytest.mark.parametrize("key", ["max_tokens", "max_completion_tokens"])
@pytest.mark.parametrize("stream", [False, True])
def test_output_never_exceeds_the_requests_max_tokens(key, stream):
    with FakeChat(Script([Reply("y" * 400, reasoning="z" * 40)])) as server:
        _, raw = post(server, body(stream=stream, stream_options={"include_usage": True}, **{key: 30}))
        record = server.requests[0]
    if stream:
        evts = events(raw)
        usage, text = usage_of(evts), streamed_text(evts)
        finish = [c["finish_reason"] for e in evts[:-1] for c in e["choices"] if c["finish_reason"]][0]
    else:
        msg = json.loads(raw)
        usage, text, finish = msg["usage"], msg["choices"][0]["message"]["content"], msg["choices"][0]["finish_reason"]
    assert usage["completion_tokens"] == 30 and record["usage"] == usage
    assert usage["completion_tokens_details"]["reasoning_tokens"] == 10
    assert text == "y" * 80 and finish == "length"


def test_max_tokens_below_the_reasoning_cuts_the_reasoning_and_sends_no_text():
    with FakeChat(Script([Reply("visible", reasoning="z" * 400)])) as server:
        _, raw = post(server, body(stream=False, max_tokens=5))
    msg = json.loads(raw)
    assert msg["usage"]["completion_tokens"] == 5 == msg["usage"]["completion_tokens_details"]["reasoning_tokens"]
    assert msg["choices"][0]["message"]["content"] is None and msg["choices"][0]["finish_reason"] == "length"


# --------------------------------------------------------------------------- prefix caching


def test_a_repeated_long_prefix_is_reported_as_cached_in_128_token_steps():
    system = "s" * 8000  # 2000 tokens of shared prefix
    with FakeChat(chat_script("ok")) as server:
        post(server, body("first question", system=system, stream=False))
        post(server, body("second question, longer", system=system, stream=False))
        post(server, body("short", system="other", stream=False))
        u = [r["usage"] for r in server.requests]
    assert u[0]["prompt_tokens_details"]["cached_tokens"] == 0  # nothing seen before
    cached = u[1]["prompt_tokens_details"]["cached_tokens"]
    shared = len(json.dumps(TOOLS, sort_keys=True, separators=(",", ":")) + "\n" + system + "\n") // 4
    assert cached % 128 == 0 and shared - 128 < cached <= shared and cached >= 1024
    assert u[2]["prompt_tokens_details"]["cached_tokens"] == 0  # under 1024 tokens shared


def test_cache_can_be_turned_off():
    with FakeChat(Script([Reply("ok")], cache=False)) as server:
        for _ in range(2):
            post(server, body("q", system="s" * 8000, stream=False))
        assert [r["usage"]["prompt_tokens_details"]["cached_tokens"] for r in server.requests] == [0, 0]


# --------------------------------------------------------------------------- scripting


def test_a_cut_stream_has_no_finish_no_usage_and_bills_what_was_sent():
    with FakeChat(Script([Reply("abcdefgh" * 4, cut_after=2)])) as server:
        _, raw = post(server, body(stream=True, stream_options={"include_usage": True}))
        assert server.wait_idle(5)
        record = server.requests[0]
    evts = events(raw)
    assert "[DONE]" not in evts and usage_of(evts) is None
    assert not any(c["finish_reason"] for e in evts for c in e["choices"])
    sent = streamed_text(evts)
    assert 0 < len(sent) < 32
    assert record["complete"] is False and record["usage_sent"] is False
    assert record["usage"]["completion_tokens"] == tokens(sent)


def test_delay_spreads_the_reply_over_time():
    with FakeChat(chat_script("slow reply text", delay_s=0.6)) as server:
        t0 = time.monotonic()
        post(server, body(stream=True))
        assert time.monotonic() - t0 >= 0.55


def test_title_requests_do_not_advance_the_main_script():
    title = body("make a title", system="You are a title generator. You output ONLY a thread title.", tools=None)
    with FakeChat(Script([Reply("first"), Reply("second")])) as server:
        _, a = post(server, title)
        _, b = post(server, body(stream=False))
        _, c = post(server, body(stream=False))
        kinds = [r["kind"] for r in server.requests]
        assert server.count(MAIN) == 2 and server.count(TITLE) == 1
        assert server.totals(TITLE)["prompt"] == server.requests[0]["usage"]["prompt_tokens"]
    assert kinds == [TITLE, MAIN, MAIN]
    assert [json.loads(x)["choices"][0]["message"]["content"] for x in (a, b, c)] == [
        "Fake session title",
        "first",
        "second",
    ]


def test_runaway_makes_a_new_tool_call_every_step():
    script = runaway_script()
    commands = [script.main_reply(i).tool_calls[0].arguments["command"] for i in range(3)]
    assert commands == ["echo loop 0", "echo loop 1", "echo loop 2"]


def test_the_log_is_complete_under_concurrent_requests_and_totals_add_up():
    with FakeChat(chat_script("ok")) as server:
        threads = [threading.Thread(target=post, args=(server, body(f"q{i}", stream=False))) for i in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(10)
        records = server.billed()
        totals = server.totals()
    assert len(records) == 8
    assert sorted(r["main_index"] for r in records) == list(range(8))
    assert len({r["id"] for r in records}) == 8
    assert totals["prompt"] == sum(r["usage"]["prompt_tokens"] for r in records)
    assert totals["completion"] == 8 * tokens("ok")


def test_bad_requests_are_refused_and_not_logged():
    with FakeChat(chat_script()) as server:
        status, _ = post(server, {"model": "x"})
        assert status == 400 and server.count() == 0


def test_command_line_serves_and_logs_until_sigterm(tmp_path):
    log = tmp_path / "requests.jsonl"
    proc = subprocess.Popen(
        [sys.executable, str(REPO_ROOT / "tests/fakes/fake_chat.py"), "--log", str(log)],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": ""},
    )
    try:
        url = proc.stdout.readline().strip()
        host, port = url.removeprefix("http://").removesuffix("/v1").split(":")
        conn = http.client.HTTPConnection(host, int(port), timeout=10)
        conn.request("POST", "/v1/chat/completions", json.dumps(body(stream=False)))
        billed = json.loads(conn.getresponse().read())["usage"]
        conn.close()
        deadline = time.monotonic() + 5
        while not (log.exists() and log.read_text()) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert json.loads(log.read_text().splitlines()[0])["usage"] == billed
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(10) == 0
