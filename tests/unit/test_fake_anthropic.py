"""The scripted fake Anthropic Messages API server on its own (no Claude Code)."""

from __future__ import annotations

import http.client
import json
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from tests.fakes.fake_anthropic import (
    DEFAULT_TEXT,
    FakeAnthropic,
    Reply,
    Script,
    Usage,
    bash_reply,
    classify,
    estimate_tokens,
    parse_directive,
    text_reply,
)

REPO_ROOT = Path(__file__).resolve().parents[2]

# What Claude Code 2.1.330 sends (abridged from tests/fixtures/claude/recorded/requests).
MAIN_SYSTEM = [
    {"type": "text", "text": "x-anthropic-billing-header: cc_version=2.1.330.21d; cc_entrypoint=sdk-cli;"},
    {
        "type": "text",
        "text": "You are a Claude agent, built on Anthropic's Claude Agent SDK.",
        "cache_control": {"type": "ephemeral"},
    },
]
SUBAGENT_SYSTEM = [
    {
        "type": "text",
        "text": "x-anthropic-billing-header: cc_version=2.1.330.86e; cc_entrypoint=sdk-cli; cc_is_subagent=true;",
    },
    {"type": "text", "text": "You are a Claude agent, built on Anthropic's Claude Agent SDK."},
]
TOOLS = [
    {
        "name": "Agent",
        "input_schema": {
            "type": "object",
            "properties": {"description": {"type": "string"}, "prompt": {"type": "string"}},
        },
    },
    {"name": "Bash", "input_schema": {"type": "object", "properties": {"command": {"type": "string"}}}},
]
REMINDER = "<system-reminder>\nAttribution for git commits ... BASH:echo not-me\n</system-reminder>\n"
BETAS = "claude-code-20250219,interleaved-thinking-2025-05-14,context-management-2025-06-27"
COMPACT_PROMPT = (
    "CRITICAL: Respond with TEXT ONLY. Do NOT call any tools.\n\n"
    "Your task is to create a detailed summary of the conversation so far, paying close attention to ..."
)


def user(text: str, reminder: bool = True) -> dict:
    content = ([{"type": "text", "text": REMINDER}] if reminder else []) + [{"type": "text", "text": text}]
    return {"role": "user", "content": content}


def body(text: str = "Say hello", *, stream: bool = True, system=None, tools=None, messages=None, **extra) -> dict:
    return {
        "model": "claude-opus-5-5",
        "max_tokens": 128000,
        "stream": stream,
        "system": MAIN_SYSTEM if system is None else system,
        "tools": TOOLS if tools is None else tools,
        "messages": messages if messages is not None else [user(text), {"role": "system", "content": "env"}],
        "metadata": {"user_id": '{"session_id": "s"}'},
        **extra,
    }


def follow_up(first: dict, reply_blocks: list, *, is_error: bool = False, output: str = "ok") -> dict:
    """The request Claude Code sends after running the tool_use of ``reply_blocks``."""
    tool_use = next(b for b in reply_blocks if b["type"] == "tool_use")
    messages = list(first["messages"]) + [
        {"role": "assistant", "content": reply_blocks},
        {
            "role": "user",
            "content": [
                {"type": "tool_result", "tool_use_id": tool_use["id"], "content": output, "is_error": is_error}
            ],
        },
    ]
    return {**first, "messages": messages}


def request(server: FakeAnthropic, method: str, path: str, payload=None, raw: bytes | None = None, headers=None):
    conn = http.client.HTTPConnection(server.host, server.port, timeout=10)
    try:
        data = raw if raw is not None else (json.dumps(payload).encode() if payload is not None else None)
        hdrs = {
            "Content-Type": "application/json",
            "x-api-key": "sk-ant-api03-secretsecretsecret",
            "anthropic-version": "2023-06-01",
            "anthropic-beta": BETAS,
        }
        hdrs.update(headers or {})
        conn.request(method, path, body=data, headers=hdrs)
        resp = conn.getresponse()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
    finally:
        conn.close()


def post(server: FakeAnthropic, payload: dict, path: str = "/v1/messages?beta=true"):
    return request(server, "POST", path, payload)


def sse(data: bytes) -> list[tuple[str, dict]]:
    """(event name, data object) of every SSE event; checks the framing."""
    text = data.decode()
    assert text.endswith("\n\n")
    out = []
    for block in text.split("\n\n"):
        if not block:
            continue
        lines = block.split("\n")
        assert len(lines) == 2 and lines[0].startswith("event: ") and lines[1].startswith("data: "), block
        name, obj = lines[0][len("event: ") :], json.loads(lines[1][len("data: ") :])
        assert obj["type"] == name
        out.append((name, obj))
    return out


def assemble(events: list[tuple[str, dict]]) -> dict:
    """Rebuild the message from the SSE events, as the SDK does."""
    msg = None
    for name, ev in events:
        if name == "message_start":
            msg = dict(ev["message"])
            msg["content"] = []
        elif name == "content_block_start":
            assert ev["index"] == len(msg["content"])
            block = dict(ev["content_block"])
            if block["type"] == "tool_use":
                block["_json"] = ""
            msg["content"].append(block)
        elif name == "content_block_delta":
            block, d = msg["content"][ev["index"]], ev["delta"]
            if d["type"] == "text_delta":
                block["text"] += d["text"]
            elif d["type"] == "thinking_delta":
                block["thinking"] += d["thinking"]
            elif d["type"] == "signature_delta":
                block["signature"] += d["signature"]
            elif d["type"] == "input_json_delta":
                block["_json"] += d["partial_json"]
            else:  # pragma: no cover
                raise AssertionError(d)
        elif name == "content_block_stop":
            block = msg["content"][ev["index"]]
            if block["type"] == "tool_use":
                block["input"] = json.loads(block.pop("_json") or "{}")
        elif name == "message_delta":
            msg["stop_reason"] = ev["delta"]["stop_reason"]
            msg["usage"] = {**msg["usage"], **ev["usage"]}
    return msg


@pytest.fixture
def no_leaked_threads():
    before = set(threading.enumerate())
    yield
    deadline = time.monotonic() + 2
    while time.monotonic() < deadline:
        leaked = [t for t in threading.enumerate() if t not in before and t.is_alive()]
        if not leaked:
            return
        time.sleep(0.02)
    pytest.fail(f"leaked threads: {leaked}")


@pytest.fixture
def server(no_leaked_threads):
    with FakeAnthropic() as srv:
        yield srv


def run_stream(server: FakeAnthropic, payload: dict) -> tuple[list, dict, dict]:
    status, headers, data = post(server, payload)
    assert status == 200, data
    events = sse(data)
    return events, assemble(events), headers


# ---------------------------------------------------------------- basics


def test_base_url_has_no_v1_and_port_is_ephemeral(server):
    assert server.port > 0
    assert server.base_url == f"http://127.0.0.1:{server.port}"
    assert server.running


def test_stream_event_order_and_shapes(server):
    events, msg, headers = run_stream(server, body("Say hello"))
    names = [n for n, _ in events]
    assert names == [
        "message_start",
        "ping",
        "content_block_start",
        "content_block_delta",
        "content_block_delta",
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    assert headers["content-type"].startswith("text/event-stream")
    start = events[0][1]["message"]
    assert start["id"].startswith("msg_") and start["type"] == "message" and start["role"] == "assistant"
    assert start["model"] == "claude-opus-5-5"
    assert start["content"] == [] and start["stop_reason"] is None and start["stop_sequence"] is None
    assert start["usage"] == {
        "input_tokens": 11,
        "cache_creation_input_tokens": 2000,
        "cache_read_input_tokens": 3000,
        "cache_creation": {"ephemeral_5m_input_tokens": 2000, "ephemeral_1h_input_tokens": 0},
        "output_tokens": 1,
        "service_tier": "standard",
    }
    assert events[2][1]["content_block"] == {"type": "text", "text": ""}
    delta = events[6][1]
    assert delta["delta"] == {"stop_reason": "end_turn", "stop_sequence": None}
    assert delta["usage"] == {
        "input_tokens": 11,
        "cache_creation_input_tokens": 2000,
        "cache_read_input_tokens": 3000,
        "output_tokens": 40,
    }
    assert msg["content"] == [{"type": "text", "text": DEFAULT_TEXT}]
    rec = server.requests[0]
    assert headers["request-id"] == rec["request_id"] and rec["request_id"].startswith("req_")
    assert rec["message_id"] == start["id"]
    assert rec["done"] and not rec["aborted"] and rec["t_end"] >= rec["t_message_delta"] >= rec["time"]


def test_non_streaming_json(server):
    status, headers, data = post(server, body("Say hello", stream=False))
    assert status == 200
    assert headers["content-type"] == "application/json"
    obj = json.loads(data)
    assert obj["type"] == "message" and obj["role"] == "assistant" and obj["model"] == "claude-opus-5-5"
    assert obj["content"] == [{"type": "text", "text": DEFAULT_TEXT}]
    assert obj["stop_reason"] == "end_turn" and obj["stop_sequence"] is None
    assert obj["usage"]["output_tokens"] == 40 and obj["usage"]["cache_read_input_tokens"] == 3000
    assert headers["request-id"] == server.requests[0]["request_id"]
    assert server.requests[0]["stream"] is False


def test_custom_usage_split_and_web_search(no_leaked_threads):
    u = Usage(
        input_tokens=1000,
        output_tokens=100,
        cache_write_5m=1000,
        cache_write_1h=2000,
        cache_read=500,
        web_search_requests=2,
    )
    with FakeAnthropic(Script(usage=u)) as srv:
        events, msg, _ = run_stream(srv, body())
        start_usage = events[0][1]["message"]["usage"]
        assert start_usage["cache_creation_input_tokens"] == 3000
        assert start_usage["cache_creation"] == {"ephemeral_5m_input_tokens": 1000, "ephemeral_1h_input_tokens": 2000}
        assert start_usage["output_tokens"] == 1
        assert start_usage["server_tool_use"] == {"web_search_requests": 2, "web_fetch_requests": 0}
        final = events[-2][1]["usage"]
        assert final["output_tokens"] == 100 and final["input_tokens"] == 1000
        assert final["server_tool_use"]["web_search_requests"] == 2
        assert srv.requests[0]["usage"]["cache_creation"]["ephemeral_1h_input_tokens"] == 2000


def test_usage_sequence_and_callable(no_leaked_threads):
    seq = [Usage(output_tokens=1), Usage(output_tokens=2)]
    with FakeAnthropic(Script(usage=seq)) as srv:
        outs = [run_stream(srv, body())[1]["usage"]["output_tokens"] for _ in range(3)]
    assert outs == [1, 2, 2]
    with FakeAnthropic(Script(usage=lambda i: Usage(output_tokens=100 + i))) as srv:
        outs = [run_stream(srv, body())[1]["usage"]["output_tokens"] for _ in range(3)]
    assert outs == [100, 101, 102]


def test_served_model_echoes_request_or_is_overridden(no_leaked_threads):
    with FakeAnthropic() as srv:
        assert run_stream(srv, body(model="claude-sonnet-5-5"))[1]["model"] == "claude-sonnet-5-5"
    with FakeAnthropic(Script(model="claude-haiku-4-5")) as srv:
        _, msg, _ = run_stream(srv, body())
        assert msg["model"] == "claude-haiku-4-5"
        assert srv.requests[0]["model"] == "claude-opus-5-5"


# ---------------------------------------------------------------- directives


def test_bash_directive_tool_loop(server):
    first = body("BASH:echo hi-from-bash && ls")
    events, msg, _ = run_stream(server, first)
    assert [b["type"] for b in msg["content"]] == ["text", "tool_use"]
    tool = msg["content"][1]
    assert tool["name"] == "Bash" and tool["id"].startswith("toolu_")
    assert tool["input"] == {"command": "echo hi-from-bash && ls", "description": "Run a command"}
    assert msg["stop_reason"] == "tool_use"
    # tool_use streams as content_block_start(input {}) + input_json_delta pieces
    starts = [e for n, e in events if n == "content_block_start"]
    assert starts[1]["content_block"] == {"type": "tool_use", "id": tool["id"], "name": "Bash", "input": {}}
    deltas = [e["delta"] for n, e in events if n == "content_block_delta" and e["index"] == 1]
    assert all(d["type"] == "input_json_delta" for d in deltas) and len(deltas) > 1

    _, final, _ = run_stream(server, follow_up(first, msg["content"], output="hi-from-bash"))
    assert final["content"] == [{"type": "text", "text": "Done. The command finished."}]
    assert final["stop_reason"] == "end_turn"
    # a denied / failed call (tool_result is_error) gets another final text
    _, failed, _ = run_stream(server, follow_up(first, msg["content"], is_error=True, output="hook error"))
    assert failed["content"] == [{"type": "text", "text": "The tool call failed."}]
    recs = server.requests
    assert [(r["directive"], r["after_tool"], r["tool_error"]) for r in recs] == [
        ("BASH", False, False),
        ("BASH", True, False),
        ("BASH", True, True),
    ]
    assert recs[0]["tool_uses"][0]["input"]["command"] == "echo hi-from-bash && ls"
    assert server.count("main") == 3


def test_task_directive_starts_an_agent_subagent(server):
    first = body("TASK:BASH:echo from-subagent")
    _, msg, _ = run_stream(server, first)
    tool = msg["content"][-1]
    assert tool["name"] == "Agent"
    assert tool["input"] == {
        "description": "fake subtask",
        "prompt": "BASH:echo from-subagent",
        "subagent_type": "general-purpose",
    }
    # the subagent's own request: billing header says cc_is_subagent=true; its prompt is the BASH directive
    _, sub, _ = run_stream(server, body("BASH:echo from-subagent", system=SUBAGENT_SYSTEM))
    assert sub["content"][-1]["input"]["command"] == "echo from-subagent"
    # the main agent gets the async-launch tool_result, then a task-notification (reminder-only text)
    _, after, _ = run_stream(server, follow_up(first, msg["content"], output="Async agent launched successfully."))
    assert after["stop_reason"] == "end_turn"
    notif = body(
        messages=[
            user("TASK:BASH:echo from-subagent"),
            {
                "role": "user",
                "content": [
                    {
                        "type": "text",
                        "text": "<system-reminder>\n<task-notification>done</task-notification>\n</system-reminder>",
                    }
                ],
            },
        ]
    )
    _, note, _ = run_stream(server, notif)
    assert note["content"] == [{"type": "text", "text": DEFAULT_TEXT}]  # not a second Agent call
    assert [r["kind"] for r in server.requests] == ["main", "subagent", "main", "main"]
    assert server.count("main") == 3 and server.count("subagent") == 1


def test_loop_directive_never_ends(server):
    req = body("LOOP")
    for _ in range(4):
        _, msg, _ = run_stream(server, req)
        assert msg["stop_reason"] == "tool_use"
        assert msg["content"][-1]["input"]["command"] == "echo loop"
        req = follow_up(req, msg["content"], output="loop")
    assert server.count("main") == 4


def test_fail_directive_is_a_stuck_loop_of_failing_commands(server):
    req = body("FAIL")
    _, msg, _ = run_stream(server, req)
    assert msg["content"][-1]["input"]["command"] == "exit 3"
    for _ in range(2):
        req = follow_up(req, msg["content"], is_error=True, output="Exit code 3")
        _, msg, _ = run_stream(server, req)
        assert msg["stop_reason"] == "tool_use" and msg["content"][-1]["input"]["command"] == "exit 3"
    assert [r["tool_error"] for r in server.requests] == [False, True, True]


def test_sleep_directive_is_not_a_bare_sleep(server):
    req = body("SLEEP")
    _, msg, _ = run_stream(server, req)
    cmd = msg["content"][-1]["input"]["command"]
    assert "sleep 600" in cmd
    # Claude Code 2.1.330 blocks a command whose first part is `sleep N` (N >= 2)
    assert not cmd.split(";")[0].strip().startswith("sleep")
    _, final, _ = run_stream(server, follow_up(req, msg["content"], output="sleeping"))
    assert final["stop_reason"] == "end_turn"


def test_think_directive_streams_thinking_then_text(server):
    events, msg, _ = run_stream(server, body("THINK please"))
    assert [b["type"] for b in msg["content"]] == ["thinking", "text"]
    assert msg["content"][0]["thinking"] and msg["content"][0]["signature"]
    assert events[2][1]["content_block"] == {"type": "thinking", "thinking": "", "signature": ""}
    kinds = [e["delta"]["type"] for n, e in events if n == "content_block_delta" and e["index"] == 0]
    assert kinds[-1] == "signature_delta" and set(kinds[:-1]) == {"thinking_delta"}


def test_slow_directive_spaces_text_deltas(no_leaked_threads):
    with FakeAnthropic(Script(slow_delay_s=0.1, slow_chunks=4)) as srv:
        conn = http.client.HTTPConnection(srv.host, srv.port, timeout=10)
        conn.request("POST", "/v1/messages", body=json.dumps(body("SLOW please")))
        resp = conn.getresponse()
        stamps = []
        buf = b""
        while True:
            chunk = resp.read1(65536)
            if not chunk:
                break
            buf += chunk
            stamps += [time.monotonic()] * chunk.count(b"text_delta")
        conn.close()
        assert len(stamps) == 4
        assert stamps[-1] - stamps[0] >= 0.25
        assert srv.requests[0]["directive"] == "SLOW"


def test_plain_prompt_and_reminder_text_are_not_directives(server):
    _, msg, _ = run_stream(server, body("Say hello"))  # the reminder mentions BASH:echo not-me
    assert msg["content"] == [{"type": "text", "text": DEFAULT_TEXT}]
    assert server.requests[0]["directive"] is None


def test_only_the_last_user_message_counts(server):
    msgs = [user("LOOP"), {"role": "assistant", "content": [{"type": "text", "text": "hi"}]}, user("Say hello")]
    _, msg, _ = run_stream(server, body(messages=msgs))
    assert msg["stop_reason"] == "end_turn"


def test_parse_directive():
    assert parse_directive("BASH:echo hi") == ("BASH", "echo hi")
    assert parse_directive("  BASH: ls -la \nmore") == ("BASH", "ls -la")
    assert parse_directive("TASK:BASH:echo x\nsecond line") == ("TASK", "BASH:echo x\nsecond line")
    assert parse_directive("LOOP forever") == ("LOOP", "")
    assert parse_directive("please\nTHINK") == ("THINK", "")
    assert parse_directive("ERROR:529") == ("ERROR", "529")
    assert parse_directive("LOOPING") == (None, "")
    assert parse_directive("say BASH:ls") == (None, "")


def test_explicit_replies_come_first(no_leaked_threads):
    script = Script(replies=[bash_reply("make test"), text_reply("scripted", usage=Usage(output_tokens=7))])
    with FakeAnthropic(script) as srv:
        assert run_stream(srv, body("Say hello"))[1]["content"][-1]["input"]["command"] == "make test"
        _, msg, _ = run_stream(srv, body("Say hello"))
        assert msg["content"] == [{"type": "text", "text": "scripted"}] and msg["usage"]["output_tokens"] == 7
        assert run_stream(srv, body("LOOP"))[1]["stop_reason"] == "tool_use"  # directives take over


# ---------------------------------------------------------------- side requests


def side_system(text: str) -> list:
    return [MAIN_SYSTEM[0], {"type": "text", "text": text}]


def test_classify():
    assert classify(body()) == "main"
    assert classify(body(system=SUBAGENT_SYSTEM)) == "subagent"
    assert (
        classify(
            body(
                messages=[
                    user("hi"),
                    {"role": "assistant", "content": "x"},
                    {"role": "user", "content": COMPACT_PROMPT},
                ]
            )
        )
        == "compact"
    )
    assert classify(body(tools=[], system=side_system("Generate a concise title for this session."))) == "title"
    assert classify(body(tools=[], system=side_system("You classify things."))) == "aux"
    # not Claude Code (no billing header): an SDK program's calls are the agent's
    assert classify({"model": "m", "messages": [{"role": "user", "content": "hi"}]}) == "main"
    assert classify(body(tools=[], system="You are a helpful agent. Generate a concise title.")) == "main"


def test_side_requests_do_not_advance_the_reply_counter(no_leaked_threads):
    with FakeAnthropic(Script(usage=[Usage(output_tokens=1), Usage(output_tokens=2)])) as srv:
        assert run_stream(srv, body())[1]["usage"]["output_tokens"] == 1
        compact = body(
            messages=[user("LOOP"), {"role": "assistant", "content": "x"}, {"role": "user", "content": COMPACT_PROMPT}]
        )
        _, msg, _ = run_stream(srv, compact)
        assert "<summary>" in msg["content"][0]["text"] and msg["stop_reason"] == "end_turn"
        title = body(tools=[], system=side_system("Generate a concise title."))
        assert run_stream(srv, title)[1]["usage"]["output_tokens"] == 12
        assert run_stream(srv, body())[1]["usage"]["output_tokens"] == 2
        assert [r["kind"] for r in srv.requests] == ["main", "compact", "title", "main"]
        assert [r["reply_index"] for r in srv.requests] == [0, None, None, 1]
        assert srv.count("main") == 2 and srv.count("compact") == 1


def test_count_tokens(server):
    status, headers, data = post(server, body("short"), "/v1/messages/count_tokens?beta=true")
    small = json.loads(data)["input_tokens"]
    assert status == 200 and small == estimate_tokens(body("short")) and small > 0
    big = json.loads(post(server, body("x" * 40_000), "/v1/messages/count_tokens")[2])["input_tokens"]
    assert big - small >= 9_000
    assert set(json.loads(data)) == {"input_tokens"}
    assert server.count("count_tokens") == 2 and server.count("main") == 0
    assert headers["request-id"].startswith("req_")


# ---------------------------------------------------------------- errors


@pytest.mark.parametrize(
    "status,etype", [(400, "invalid_request_error"), (429, "rate_limit_error"), (529, "overloaded_error")]
)
def test_error_directive(server, status, etype):
    code, headers, data = post(server, body(f"ERROR:{status}"))
    assert code == status
    err = json.loads(data)
    assert err["type"] == "error" and err["error"]["type"] == etype and err["error"]["message"]
    assert err["request_id"] == headers["request-id"] == server.requests[0]["request_id"]
    if status in (429, 529):
        assert headers["retry-after"] == "0"
    rec = server.requests[0]
    assert rec["status"] == status and rec["usage"] is None and rec["message_id"] is None
    assert rec["reply_index"] is None


def test_errors_by_attempt(no_leaked_threads):
    with FakeAnthropic(Script(error_status=529, error_count=2, errors={3: 400})) as srv:
        codes = [post(srv, body())[0] for _ in range(5)]
        assert codes == [529, 529, 200, 400, 200]
        assert [r["reply_index"] for r in srv.requests] == [None, None, 0, None, 1]


def test_error_status_for_every_request_and_nonstream(no_leaked_threads):
    with FakeAnthropic(Script(error_status=429, retry_after=None)) as srv:
        code, headers, data = post(srv, body(stream=False))
        assert code == 429 and "retry-after" not in headers
        assert json.loads(data)["error"]["type"] == "rate_limit_error"


def test_invalid_json_and_unknown_paths(server):
    code, _, data = request(server, "POST", "/v1/messages", raw=b"{nope")
    assert code == 400 and json.loads(data)["error"]["type"] == "invalid_request_error"
    code, _, data = request(server, "POST", "/v1/complete", {"x": 1})
    assert code == 404 and json.loads(data)["error"]["type"] == "not_found_error"
    code, _, data = request(server, "GET", "/v1/models")
    assert code == 200 and any(m["id"] == "claude-opus-5-5" for m in json.loads(data)["data"])
    assert [r["kind"] for r in server.requests] == ["other"]
    assert server.requests[0]["path"] == "/v1/complete" and server.requests[0]["status"] == 404


# ---------------------------------------------------------------- recording


def test_recording(server):
    post(server, body("BASH:echo rec"))
    (rec,) = server.requests
    assert rec["path"] == "/v1/messages?beta=true"
    assert rec["model"] == "claude-opus-5-5" and rec["stream"] is True and rec["kind"] == "main"
    assert rec["headers"]["anthropic-beta"] == BETAS == rec["anthropic_beta"]
    assert rec["headers"]["anthropic-version"] == "2023-06-01"
    assert "secretsecret" not in rec["headers"]["x-api-key"]
    assert rec["body"]["messages"][0]["content"][1]["text"] == "BASH:echo rec"
    assert abs(rec["time"] - time.time()) < 5
    assert rec["directive"] == "BASH" and rec["directive_arg"] == "echo rec"
    assert rec["stop_reason"] == "tool_use" and rec["usage"]["output_tokens"] == 40
    assert "usage_obj" not in rec
    rec["kind"] = "changed"  # a copy
    assert server.requests[0]["kind"] == "main"


def test_count_and_wait_for(server):
    assert server.count() == 0
    with pytest.raises(ValueError):
        server.count("bogus")
    assert server.wait_for(1, timeout=0.1) is False
    threading.Timer(0.1, lambda: post(server, body())).start()
    assert server.wait_for(1, "main", timeout=5) is True
    assert server.wait_idle(5)
    assert server.count("main") == 1 and server.count("subagent") == 0
    server.reset()
    assert server.count() == 0 and server.requests == []


def test_keep_alive_connection_serves_several_requests(server):
    conn = http.client.HTTPConnection(server.host, server.port, timeout=10)
    try:
        for stream in (True, False, True):
            conn.request("POST", "/v1/messages?beta=true", body=json.dumps(body(stream=stream)))
            resp = conn.getresponse()
            assert resp.status == 200
            resp.read()
    finally:
        conn.close()
    assert server.count("main") == 3


def test_delay_spreads_the_stream(no_leaked_threads):
    with FakeAnthropic(Script(delay_s=0.4)) as srv:
        t0 = time.monotonic()
        run_stream(srv, body())
        assert time.monotonic() - t0 >= 0.35


def test_client_disconnect_mid_stream_is_recorded_as_aborted(no_leaked_threads):
    with FakeAnthropic(Script(slow_delay_s=0.3, slow_chunks=10)) as srv:
        sock = socket.create_connection((srv.host, srv.port))
        payload = json.dumps(body("SLOW")).encode()
        sock.sendall(
            b"POST /v1/messages HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\n\r\n%s" % (len(payload), payload)
        )
        assert sock.recv(100).startswith(b"HTTP/1.1 200")
        sock.close()
        deadline = time.monotonic() + 5
        while not srv.requests[0]["done"] and time.monotonic() < deadline:
            time.sleep(0.05)
        assert srv.requests[0]["aborted"] is True


# ---------------------------------------------------------------- lifecycle


def test_stop_aborts_a_slow_reply_and_joins_threads(no_leaked_threads):
    srv = FakeAnthropic(Script(delay_s=60)).start()
    result = {}

    def client():
        try:
            result["r"] = post(srv, body())
        except Exception as err:  # connection closed mid-stream
            result["err"] = err

    t = threading.Thread(target=client)
    t.start()
    assert srv.wait_for(1, timeout=5)
    time.sleep(0.1)
    assert srv.in_flight == 1
    t0 = time.monotonic()
    srv.stop()
    assert time.monotonic() - t0 < 3
    t.join(5)
    assert not t.is_alive()
    assert not srv.running
    assert srv.requests[0]["aborted"] is True
    srv.stop()  # idempotent


def test_stop_with_idle_keep_alive_connection(no_leaked_threads):
    srv = FakeAnthropic().start()
    conn = http.client.HTTPConnection(srv.host, srv.port, timeout=10)
    conn.request("POST", "/v1/messages", body=json.dumps(body()))
    conn.getresponse().read()
    t0 = time.monotonic()
    srv.stop()
    assert time.monotonic() - t0 < 3
    conn.close()


def test_start_twice_raises(server):
    with pytest.raises(RuntimeError):
        server.start()


def test_reply_defaults():
    assert text_reply("x").effective_stop_reason() == "end_turn"
    assert bash_reply("ls").effective_stop_reason() == "tool_use"
    assert Reply(blocks=(), stop_reason="max_tokens").effective_stop_reason() == "max_tokens"


def test_cli_prints_base_url_serves_and_stops_on_sigterm(tmp_path):
    log = tmp_path / "log.jsonl"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tests.fakes.fake_anthropic",
            "--port",
            "0",
            "--delay",
            "0",
            "--output-tokens",
            "77",
            "--log",
            str(log),
        ],
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        line = proc.stdout.readline().strip()
        assert line.startswith("http://127.0.0.1:")
        host, port = line[len("http://") :].split(":")
        conn = http.client.HTTPConnection(host, int(port), timeout=10)
        conn.request("POST", "/v1/messages?beta=true", body=json.dumps(body(stream=False)))
        resp = conn.getresponse()
        assert resp.status == 200
        assert json.loads(resp.read())["usage"]["output_tokens"] == 77
        conn.close()
    finally:
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=10)
    assert proc.returncode == 0, err
    assert err == ""
    (entry,) = [json.loads(x) for x in log.read_text().splitlines()]
    assert entry["kind"] == "main" and entry["usage"]["output_tokens"] == 77 and "body" not in entry


def test_official_python_sdk_parses_replies(server):
    anthropic = pytest.importorskip("anthropic")
    client = anthropic.Anthropic(base_url=server.base_url, api_key="sk-ant-api03-fake", max_retries=0)
    msg = client.messages.create(
        model="claude-opus-5-5", max_tokens=100, messages=[{"role": "user", "content": "BASH:ls"}]
    )
    assert msg.stop_reason == "tool_use" and msg.content[-1].input["command"] == "ls"
    assert msg.usage.cache_creation.ephemeral_5m_input_tokens == 2000
    with client.messages.stream(
        model="claude-opus-5-5", max_tokens=100, messages=[{"role": "user", "content": "THINK"}]
    ) as stream:
        final = stream.get_final_message()
    assert [b.type for b in final.content] == ["thinking", "text"]
    assert final.usage.output_tokens == 40 and final.usage.cache_read_input_tokens == 3000
    assert (
        client.messages.count_tokens(model="claude-opus-5-5", messages=[{"role": "user", "content": "hi"}]).input_tokens
        > 0
    )
    with pytest.raises(anthropic.RateLimitError) as err:
        client.messages.create(
            model="claude-opus-5-5", max_tokens=100, messages=[{"role": "user", "content": "ERROR:429"}]
        )
    assert err.value.request_id == server.requests[-1]["request_id"]
