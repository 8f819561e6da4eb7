"""The fake Responses API server on its own: billing follows the request and the reply, the SSE stream has the
real API's shape with usage only at completion, max_output_tokens is honoured, and the request log is exact."""

from __future__ import annotations

import http.client
import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.fakes import responses_billing as billing
from tests.fakes.fake_responses import (
    TITLE_MARKER,
    FakeResponses,
    Reply,
    Script,
    classify,
    runaway_script,
    say,
    shell,
)

REPO_ROOT = Path(__file__).resolve().parents[2]


def body(text: str = "hello", *, stream: bool = True, key: str | None = "thread-1", **extra) -> dict:
    """A request shaped like Codex's: developer + user messages, tools, a prompt cache key."""
    out = {
        "model": "fake-model",
        "stream": stream,
        "input": [
            {"type": "message", "role": "developer", "content": [{"type": "input_text", "text": "Be brief."}]},
            {"type": "message", "role": "user", "content": [{"type": "input_text", "text": text}]},
        ],
        "tools": [
            {
                "type": "function",
                "name": "exec_command",
                "description": "Run a shell command.",
                "parameters": {"type": "object", "properties": {"cmd": {"type": "string"}}},
            }
        ],
        **extra,
    }
    if key is not None:
        out["prompt_cache_key"] = key
    return out


def post(server: FakeResponses, payload: dict) -> tuple[int, str]:
    conn = http.client.HTTPConnection(server.host, server.port, timeout=10)
    try:
        conn.request("POST", "/v1/responses", json.dumps(payload), {"Content-Type": "application/json"})
        resp = conn.getresponse()
        return resp.status, resp.read().decode()
    finally:
        conn.close()


def sse(text: str) -> list[tuple[str, dict]]:
    """(event name, data) pairs of an SSE body."""
    events = []
    for block in text.split("\n\n"):
        if not block.strip():
            continue
        lines = dict(line.split(": ", 1) for line in block.splitlines())
        events.append((lines["event"], json.loads(lines["data"])))
    return events


# --------------------------------------------------------------------------- billing rule


def test_tokens_are_bytes_over_four_rounded_up():
    assert [billing.tokens(s) for s in ("", "a", "abcd", "abcde", "é" * 2)] == [0, 1, 1, 2, 1]


def test_prompt_text_has_tools_then_input_and_skips_identifiers():
    b = {
        "input": [{"type": "function_call_output", "call_id": "call_x", "output": "OUT"}],
        "tools": [{"type": "function", "name": "exec_command"}],
        "instructions": "SYS",
    }
    assert billing.prompt_text(b) == "exec_command\nSYS\nOUT"


def test_input_tokens_follow_the_request_size():
    with FakeResponses(Script([say("ok")])) as server:
        post(server, body("short", key="a"))
        post(server, body("long " * 500, key="b"))
    small, big = (r["usage"]["input_tokens"] for r in server.requests)
    assert small == billing.tokens(billing.prompt_text(body("short", key="a")))
    assert big == billing.tokens(billing.prompt_text(body("long " * 500, key="b")))
    assert big - small == billing.tokens("long " * 500) - billing.tokens("short")


def test_cached_tokens_are_a_shared_prefix_in_128_steps_per_cache_key():
    history = "x" * 8000  # 2000 tokens: above the 1024-token caching floor
    with FakeResponses(Script([say("ok")])) as server:
        post(server, body(history, key="t1"))
        post(server, body(history + " and more", key="t1"))  # same prefix, same key: cached
        post(server, body(history + " and more", key="t2"))  # other key: cold
        post(server, body("tiny", key="t1"))  # below the floor: never cached
    cached = [r["usage"]["input_tokens_details"]["cached_tokens"] for r in server.requests]
    first = billing.tokens(billing.prompt_text(body(history, key="t1")))
    assert cached[0] == 0
    assert cached[1] % 128 == 0 and first - 128 < cached[1] <= first
    assert cached[2:] == [0, 0]
    second = server.requests[1]["usage"]
    assert second["input_tokens_details"]["cached_tokens"] <= second["input_tokens"]


def test_caching_can_be_switched_off():
    history = "y" * 8000
    with FakeResponses(Script([say("ok")]), caching=False) as server:
        post(server, body(history))
        post(server, body(history))
    assert [r["usage"]["input_tokens_details"]["cached_tokens"] for r in server.requests] == [0, 0]


def test_output_tokens_follow_the_reply_and_include_reasoning():
    with FakeResponses(Script([say("0123456789", reasoning_tokens=7), shell("echo hi")])) as server:
        post(server, body())
        post(server, body())
    text, call = (r["usage"] for r in server.requests)
    assert text["output_tokens"] == billing.tokens("0123456789") + 7
    assert text["output_tokens_details"]["reasoning_tokens"] == 7
    assert call["output_tokens"] == billing.tokens('exec_command{"cmd": "echo hi"}')
    assert text["total_tokens"] == text["input_tokens"] + text["output_tokens"]


# --------------------------------------------------------------------------- wire format


def test_stream_has_the_real_event_sequence_and_usage_only_at_completion():
    with FakeResponses(Script([say("Hello there, friend.")])) as server:
        status, text = post(server, body())
    events = sse(text)
    names = [name for name, _ in events]
    assert status == 200
    assert names[:4] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
    ]
    assert names[-4:] == [
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]
    assert all(name == data["type"] for name, data in events)
    assert [data["sequence_number"] for _, data in events] == list(range(len(events)))
    deltas = "".join(d["delta"] for n, d in events if n == "response.output_text.delta")
    assert deltas == "Hello there, friend."
    assert events[0][1]["response"]["usage"] is None
    completed = events[-1][1]["response"]
    assert completed["status"] == "completed"
    assert completed["usage"] == server.requests[0]["usage"]
    assert sum(1 for _, d in events if d.get("response", {}).get("usage")) == 1


def test_a_tool_call_streams_its_arguments():
    with FakeResponses(Script([shell("ls -la")])) as server:
        _, text = post(server, body())
    events = sse(text)
    rid = server.requests[0]["id"]
    done = [d["item"] for n, d in events if n == "response.output_item.done"]
    assert done == [
        {
            "type": "function_call",
            "id": f"fc_{rid}",
            "call_id": f"call_{rid}",
            "name": "exec_command",
            "arguments": '{"cmd": "ls -la"}',
            "status": "completed",
        }
    ]
    args = "".join(d["delta"] for n, d in events if n == "response.function_call_arguments.delta")
    assert json.loads(args) == {"cmd": "ls -la"}


def test_non_streaming_request_gets_a_response_object_with_usage():
    with FakeResponses(Script([say("plain")])) as server:
        status, text = post(server, body(stream=False))
    obj = json.loads(text)
    assert status == 200 and obj["object"] == "response" and obj["status"] == "completed"
    assert obj["output"][0]["content"][0]["text"] == "plain"
    assert obj["usage"] == server.requests[0]["usage"] and server.requests[0]["billed"]


def test_max_output_tokens_is_honoured():
    with FakeResponses(Script([say("z" * 400, reasoning_tokens=3)])) as server:
        _, text = post(server, body(max_output_tokens=20))
    events = sse(text)
    name, data = events[-1]
    assert name == "response.incomplete"
    assert data["response"]["incomplete_details"] == {"reason": "max_output_tokens"}
    usage = server.requests[0]["usage"]
    assert usage["output_tokens"] == 20 and usage["output_tokens_details"]["reasoning_tokens"] == 3
    sent = "".join(d["delta"] for n, d in events if n == "response.output_text.delta")
    assert billing.tokens(sent) == 17
    assert server.requests[0]["status"] == "incomplete" and server.requests[0]["billed"]


def test_unknown_paths_and_bad_json_are_errors():
    with FakeResponses(Script([say("ok")])) as server:
        conn = http.client.HTTPConnection(server.host, server.port, timeout=5)
        conn.request("GET", "/v1/responses")  # the WebSocket probe of Codex's built-in provider
        assert conn.getresponse().status == 404
        conn.close()
        conn = http.client.HTTPConnection(server.host, server.port, timeout=5)
        conn.request("POST", "/v1/responses", b"{not json")
        assert conn.getresponse().status == 400
        conn.close()
        assert server.count() == 0


# --------------------------------------------------------------------------- the request log and the script


def test_a_cut_stream_is_logged_unbilled_and_never_completes():
    with FakeResponses(Script([say("x" * 100, cut_after_deltas=1), say("next")])) as server:
        with pytest.raises(http.client.IncompleteRead):
            conn = http.client.HTTPConnection(server.host, server.port, timeout=5)
            conn.request("POST", "/v1/responses", json.dumps(body()))
            conn.getresponse().read()
        post(server, body())
    cut, ok = server.requests
    assert (cut["status"], cut["billed"]) == ("cut", False)
    assert (ok["status"], ok["billed"]) == ("completed", True)
    assert server.billed_usage()["total_tokens"] == ok["usage"]["total_tokens"]


def test_title_requests_do_not_consume_the_script():
    title = body(f"{TITLE_MARKER} of at most 8 words for: fix the bug")
    with FakeResponses(Script([say("first"), say("second")], repeat_last=False)) as server:
        post(server, body())
        _, text = post(server, title)
        _, second = post(server, body())
    assert classify(title) == "title" and classify(body()) == "main"
    assert [r["kind"] for r in server.requests] == ["main", "title", "main"]
    assert [r["main_index"] for r in server.requests] == [0, None, 1]
    assert "second" in second and "Fake task title" in text
    assert len(server.billed("main")) == 2 and len(server.billed("title")) == 1


def test_a_compaction_trigger_gets_one_compaction_item_billed_where_it_comes_back():
    """Codex's remote compaction (built-in OpenAI provider): a request ending with a `compaction_trigger` item is
    answered with one `compaction` item, off the script; a later request carrying that item back is billed for the
    summary it holds, as the real server bills the context it stands for (a reasoning item's blob is not text)."""
    trigger = body("compact this")
    trigger["input"].append({"type": "compaction_trigger"})
    summary = "The work so far, summarised."
    with FakeResponses(Script([say("first"), say("second")]), caching=False) as server:
        post(server, body())
        _, streamed = post(server, trigger)
        _, plain = post(server, {**trigger, "stream": False})
        _, second = post(server, body())
    assert classify(trigger) == "compaction"
    assert [r["kind"] for r in server.requests] == ["main", "compaction", "compaction", "main"]
    assert "second" in second  # the script did not move for the compactions
    done = [data["item"] for name, data in sse(streamed) if name == "response.output_item.done"]
    item = {"type": "compaction", "encrypted_content": "Fake summary of the work so far."}
    assert [{k: v for k, v in i.items() if k != "id"} for i in done + json.loads(plain)["output"]] == [item, item]
    assert server.requests[1]["usage"]["output_tokens"] == billing.tokens(item["encrypted_content"])
    after = {"input": [{**item, "encrypted_content": summary}, {"type": "reasoning", "encrypted_content": "gAAA"}]}
    assert billing.prompt_text(after) == summary


def test_response_ids_are_unique_across_servers_and_resets():
    def sent_id(server: FakeResponses) -> str:
        return sse(post(server, body())[1])[-1][1]["response"]["id"]

    ids = []
    for _ in range(2):
        with FakeResponses(Script([say("ok")])) as server:
            ids.append(sent_id(server))
            server.reset()
            ids.append(sent_id(server))
            assert [r["id"] for r in server.requests] == ids[-1:]
    assert len(set(ids)) == 4 and all(i.startswith("resp_") for i in ids)


def test_billed_usage_sums_every_billed_request():
    with FakeResponses(Script([say("one"), say("two two")])) as server:
        post(server, body("a"))
        post(server, body("b"))
    usage = [r["usage"] for r in server.requests]
    total = server.billed_usage()
    assert total["input_tokens"] == sum(u["input_tokens"] for u in usage)
    assert total["output_tokens"] == sum(u["output_tokens"] for u in usage)
    assert total["total_tokens"] == total["input_tokens"] + total["output_tokens"]


def test_runaway_script_never_repeats_a_command():
    script = runaway_script()
    cmds = [script.main_reply(i).tool_call.arguments["cmd"] for i in range(50)]
    assert len(set(cmds)) == 50 and cmds[3] == "echo loop 3"


def test_script_repeats_or_cycles():
    a, b = say("a"), say("b")
    assert Script([a, b]).main_reply(5) is b
    assert Script([a, b], repeat_last=False).main_reply(4) is a
    with pytest.raises(ValueError):
        Script([])
    assert Reply(text="t").output_text() == "t"


def test_command_line_serves_and_stops_on_sigterm(tmp_path):
    log = tmp_path / "log.jsonl"
    proc = subprocess.Popen(
        [sys.executable, str(REPO_ROOT / "tests/fakes/fake_responses.py"), "--log", str(log)],
        stdout=subprocess.PIPE,
        text=True,
        cwd=tmp_path,
    )
    try:
        url = proc.stdout.readline().strip()
        assert url.startswith("http://127.0.0.1:") and url.endswith("/v1")
        host, port = url[len("http://") : -len("/v1")].split(":")
        conn = http.client.HTTPConnection(host, int(port), timeout=5)
        conn.request("POST", "/v1/responses", json.dumps(body()))
        events = sse(conn.getresponse().read().decode())
        conn.close()
        assert events[-1][0] == "response.completed"
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
    logged = [json.loads(line) for line in log.read_text().splitlines()]
    assert [(r["kind"], r["status"], r["billed"]) for r in logged] == [("main", "completed", True)]
    assert logged[0]["usage"] == events[-1][1]["response"]["usage"]
