"""The scripted fake OpenAI server on its own (no aider)."""

from __future__ import annotations

import http.client
import json
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from capguard.demo.fake_openai import (
    DEFAULT_COMMIT_MESSAGE,
    DEFAULT_SUMMARY,
    RUNAWAY_MARKER,
    FakeOpenAI,
    Reply,
    Script,
    chat_script,
    classify,
    runaway_script,
)

REPO_ROOT = Path(__file__).resolve().parents[2]

# The first (system) messages of aider 0.86.2's weak-model requests (aider/prompts.py).
COMMIT_SYSTEM = (
    "You are an expert software engineer that generates concise, one-line Git commit messages based on the "
    "provided diffs.\nReview the provided context and diffs which are about to be committed to a git repo."
)
SUMMARY_SYSTEM = (
    "*Briefly* summarize this partial conversation about programming.\n"
    "Include less detail about older parts and more detail about the most recent messages."
)
MAIN_SYSTEM = "Act as an expert software developer.\nAlways use best practices when coding."


def main_body(text: str = "hello", **extra) -> dict:
    return {
        "model": "gpt-4o",
        "messages": [{"role": "system", "content": MAIN_SYSTEM}, {"role": "user", "content": text}],
        "temperature": 0,
        **extra,
    }


def commit_body() -> dict:
    return {
        "model": "gpt-4o-mini",
        "messages": [
            {"role": "system", "content": COMMIT_SYSTEM},
            {"role": "user", "content": "# Diffs:\ndiff --git a/x b/x"},
        ],
        "temperature": 0,
    }


def summary_body(model: str = "gpt-4o-mini") -> dict:
    return {
        "model": model,
        "messages": [
            {"role": "system", "content": SUMMARY_SYSTEM},
            {"role": "user", "content": "# USER\nhello\n# ASSISTANT\nhi"},
        ],
    }


def request(server: FakeOpenAI, method: str, path: str, body=None, raw: bytes | None = None):
    conn = http.client.HTTPConnection(server.host, server.port, timeout=10)
    try:
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
        headers = {"Content-Type": "application/json"} if data is not None else {}
        conn.request(method, path, body=data, headers=headers)
        resp = conn.getresponse()
        return resp.status, dict(resp.getheaders()), resp.read()
    finally:
        conn.close()


def post(server: FakeOpenAI, body: dict):
    status, headers, data = request(server, "POST", "/v1/chat/completions", body)
    return status, headers, data


def sse_events(data: bytes) -> list[str]:
    """The payloads of the `data:` lines of an SSE body, in order."""
    text = data.decode()
    assert text.endswith("\n\n")
    out = []
    for block in text.split("\n\n"):
        if not block:
            continue
        assert block.startswith("data: "), block
        out.append(block[len("data: ") :])
    return out


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
    script = Script(
        [
            Reply("first reply", prompt_tokens=50_000, completion_tokens=2_000, cached_tokens=10_000),
            Reply("second reply", prompt_tokens=1_234, completion_tokens=56),
        ]
    )
    with FakeOpenAI(script) as srv:
        yield srv


# ---------------------------------------------------------------- basics


def test_base_url_and_ephemeral_port(server):
    assert server.port > 0
    assert server.base_url == f"http://127.0.0.1:{server.port}/v1"
    assert server.running


def test_non_stream_completion_shape_and_usage(server):
    status, headers, data = post(server, main_body())
    assert status == 200
    assert headers["Content-Type"] == "application/json"
    obj = json.loads(data)
    assert obj["object"] == "chat.completion"
    assert obj["model"] == "gpt-4o"
    assert obj["id"].startswith("chatcmpl-")
    (choice,) = obj["choices"]
    assert choice["index"] == 0
    assert choice["finish_reason"] == "stop"
    assert choice["message"] == {"role": "assistant", "content": "first reply", "refusal": None}
    usage = obj["usage"]
    assert usage["prompt_tokens"] == 50_000
    assert usage["completion_tokens"] == 2_000
    assert usage["total_tokens"] == 52_000
    assert usage["prompt_tokens_details"]["cached_tokens"] == 10_000


def test_stream_shape_without_usage(server):
    status, headers, data = post(server, main_body(stream=True))
    assert status == 200
    assert headers["Content-Type"] == "text/event-stream"
    events = sse_events(data)
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    assert len({c["id"] for c in chunks}) == 1
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks)
    assert text == "first reply"
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"
    assert all(c["choices"][0]["finish_reason"] is None for c in chunks[:-1])
    assert not any("usage" in c for c in chunks)


def test_stream_with_include_usage_sends_a_final_usage_chunk(server):
    post(server, main_body())  # consume reply 1
    _, _, data = post(server, main_body(stream=True, stream_options={"include_usage": True}))
    events = sse_events(data)
    assert events[-1] == "[DONE]"
    last = json.loads(events[-2])
    assert last["choices"] == []
    assert last["usage"]["prompt_tokens"] == 1_234
    assert last["usage"]["completion_tokens"] == 56
    assert last["usage"]["total_tokens"] == 1_290
    assert last["usage"]["prompt_tokens_details"]["cached_tokens"] == 0
    finish = json.loads(events[-3])
    assert finish["choices"][0]["finish_reason"] == "stop"


def test_keep_alive_connection_serves_several_requests(server):
    conn = http.client.HTTPConnection(server.host, server.port, timeout=10)
    try:
        for stream in (True, False, True):
            conn.request("POST", "/v1/chat/completions", body=json.dumps(main_body(stream=stream)))
            resp = conn.getresponse()
            assert resp.status == 200
            resp.read()
    finally:
        conn.close()
    assert server.count("main") == 3


def test_models_endpoint(server):
    status, _, data = request(server, "GET", "/v1/models")
    assert status == 200
    obj = json.loads(data)
    assert obj["object"] == "list"
    ids = [m["id"] for m in obj["data"]]
    assert "gpt-4o" in ids and "gpt-4o-mini" in ids


@pytest.mark.parametrize(
    "method,path", [("GET", "/nope"), ("POST", "/v1/completions"), ("GET", "/v1/chat/completions")]
)
def test_unknown_paths_are_404_json(server, method, path):
    status, headers, data = request(server, method, path, {} if method == "POST" else None)
    assert status == 404
    assert headers["Content-Type"] == "application/json"
    assert "error" in json.loads(data)
    assert server.count() == 0


def test_bad_json_is_400_and_not_recorded(server):
    status, _, data = request(server, "POST", "/v1/chat/completions", raw=b"{not json")
    assert status == 400
    assert "error" in json.loads(data)
    assert server.count() == 0


# ---------------------------------------------------------------- script and weak-model recognition


def test_classify():
    assert classify(main_body()) == "main"
    assert classify(commit_body()) == "commit"
    assert classify(summary_body()) == "summary"
    assert classify(summary_body(model="gpt-4o")) == "summary"  # aider falls back to the main model
    assert classify({"messages": []}) == "main"
    assert classify({}) == "main"
    # content given as a list of parts
    body = commit_body()
    body["messages"][0]["content"] = [{"type": "text", "text": COMMIT_SYSTEM}]
    assert classify(body) == "commit"
    # a main request that merely quotes the phrase in a user message is still main
    assert classify(main_body("write a one-line Git commit message for me")) == "main"


def test_weak_model_requests_do_not_consume_the_script(server):
    _, _, d1 = post(server, commit_body())
    _, _, d2 = post(server, summary_body())
    _, _, d3 = post(server, main_body())
    _, _, d4 = post(server, summary_body(model="gpt-4o"))
    _, _, d5 = post(server, main_body())
    texts = [json.loads(d)["choices"][0]["message"]["content"] for d in (d1, d2, d3, d4, d5)]
    assert texts == [DEFAULT_COMMIT_MESSAGE, DEFAULT_SUMMARY, "first reply", DEFAULT_SUMMARY, "second reply"]
    assert server.count() == 5
    assert server.count("main") == 2
    assert server.count("commit") == 1
    assert server.count("summary") == 2
    assert [r["main_index"] for r in server.requests] == [None, None, 0, None, 1]
    with pytest.raises(ValueError):
        server.count("weak")


def test_weak_replies_have_small_configurable_usage(no_leaked_threads):
    script = Script([Reply("x")], commit_reply=Reply("fix: y", prompt_tokens=7, completion_tokens=3))
    with FakeOpenAI(script) as srv:
        _, _, data = post(srv, commit_body())
    obj = json.loads(data)
    assert obj["choices"][0]["message"]["content"] == "fix: y"
    assert obj["usage"]["prompt_tokens"] == 7 and obj["usage"]["completion_tokens"] == 3


def test_repeat_last_when_script_runs_out(no_leaked_threads):
    with FakeOpenAI(Script([Reply("a"), Reply("b")], repeat_last=True)) as srv:
        texts = [json.loads(post(srv, main_body())[2])["choices"][0]["message"]["content"] for _ in range(4)]
    assert texts == ["a", "b", "b", "b"]


def test_cycle_when_script_runs_out(no_leaked_threads):
    with FakeOpenAI(Script([Reply("a"), Reply("b")], repeat_last=False)) as srv:
        texts = [json.loads(post(srv, main_body())[2])["choices"][0]["message"]["content"] for _ in range(5)]
    assert texts == ["a", "b", "a", "b", "a"]


def test_empty_script_is_rejected():
    with pytest.raises(ValueError):
        Script([])


def test_runaway_script_is_a_never_matching_edit():
    script = runaway_script(filename="calc.py", prompt_tokens=50_000, completion_tokens=2_000)
    reply = script.main_reply(0)
    assert script.main_reply(99) == reply
    assert "calc.py\n```python\n<<<<<<< SEARCH\n" in reply.text
    assert RUNAWAY_MARKER in reply.text
    assert "=======\n" in reply.text and ">>>>>>> REPLACE\n```" in reply.text
    # gpt-4o: $2.50 / M input, $10 / M output -> $0.145 per reply
    cost = reply.prompt_tokens * 2.5e-6 + reply.completion_tokens * 10e-6
    assert cost == pytest.approx(0.145)


def test_chat_script_plain_text():
    script = chat_script(["one", "two"], prompt_tokens=10, completion_tokens=2, delay_s=0.5)
    assert [script.main_reply(i).text for i in range(3)] == ["one", "two", "one"]
    assert all("<<<<<<<" not in r.text for r in chat_script().replies)
    assert script.main_reply(0) == Reply("one", prompt_tokens=10, completion_tokens=2, delay_s=0.5)


# ---------------------------------------------------------------- recording


def test_requests_are_recorded(server):
    t0 = time.time()
    post(server, main_body(stream=True))
    post(server, commit_body())
    reqs = server.requests
    assert [r["kind"] for r in reqs] == ["main", "commit"]
    assert [r["model"] for r in reqs] == ["gpt-4o", "gpt-4o-mini"]
    assert [r["stream"] for r in reqs] == [True, False]
    assert reqs[0]["body"] == main_body(stream=True)
    assert reqs[1]["body"] == commit_body()
    assert all(t0 - 1 <= r["time"] <= time.time() for r in reqs)
    assert reqs[0]["usage"]["prompt_tokens"] == 50_000
    # a snapshot: changing it does not change the server's record
    reqs.clear()
    assert server.count() == 2
    json.dumps(server.requests)  # JSON-serialisable


def test_reset(server):
    post(server, main_body())
    server.reset()
    assert server.count() == 0
    assert json.loads(post(server, main_body())[2])["choices"][0]["message"]["content"] == "first reply"


def test_concurrent_requests_are_all_recorded(no_leaked_threads):
    with FakeOpenAI(chat_script(["r"])) as srv:
        threads = [threading.Thread(target=post, args=(srv, main_body(stream=i % 2 == 0))) for i in range(16)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert srv.count("main") == 16
        assert sorted(r["main_index"] for r in srv.requests) == list(range(16))


# ---------------------------------------------------------------- delays


def test_non_stream_delay(no_leaked_threads):
    with FakeOpenAI(chat_script(["slow"], delay_s=0.4)) as srv:
        t0 = time.monotonic()
        post(srv, main_body())
        assert time.monotonic() - t0 >= 0.4


def test_stream_delay_is_spread_across_chunks(no_leaked_threads):
    with FakeOpenAI(chat_script(["a fairly long streamed answer, chunk by chunk"], delay_s=1.0)) as srv:
        conn = http.client.HTTPConnection(srv.host, srv.port, timeout=10)
        try:
            t0 = time.monotonic()
            conn.request("POST", "/v1/chat/completions", body=json.dumps(main_body(stream=True)))
            resp = conn.getresponse()
            first = resp.readline()  # role chunk, sent at once: read while the reply is still in flight (below)
            assert first.startswith(b"data: ")
            assert srv.wait_for(1, timeout=5)
            assert srv.in_flight == 1  # caught mid-reply
            rest = resp.read()
            t_all = time.monotonic() - t0
        finally:
            conn.close()
        assert t_all >= 1.0  # the delay was spent (a lower bound: a loaded machine only adds to it)
        assert rest.rstrip().endswith(b"data: [DONE]")
        # the server's thread counts the reply done just after its last write, which the client may read first
        deadline = time.monotonic() + 5
        while srv.in_flight and time.monotonic() < deadline:
            time.sleep(0.01)
        assert srv.in_flight == 0


def test_wait_for_times_out(server):
    t0 = time.monotonic()
    assert server.wait_for(1, timeout=0.2) is False
    assert time.monotonic() - t0 >= 0.2
    post(server, commit_body())
    assert server.wait_for(1, timeout=1)
    assert server.wait_for(1, kind="main", timeout=0.1) is False


# ---------------------------------------------------------------- lifecycle


def test_stop_joins_threads_with_open_keepalive_connection(no_leaked_threads):
    srv = FakeOpenAI(chat_script()).start()
    conn = http.client.HTTPConnection(srv.host, srv.port, timeout=10)
    conn.request("POST", "/v1/chat/completions", body=json.dumps(main_body()))
    conn.getresponse().read()  # the connection stays open (keep-alive)
    t0 = time.monotonic()
    srv.stop()
    assert time.monotonic() - t0 < 2
    assert not srv.running
    conn.close()


def test_stop_aborts_a_delayed_reply(no_leaked_threads):
    srv = FakeOpenAI(chat_script(["never finished"], delay_s=30)).start()
    errors = []

    def client():
        try:
            post(srv, main_body(stream=True))
        except Exception as err:
            errors.append(err)

    t = threading.Thread(target=client)
    t.start()
    assert srv.wait_for(1, timeout=5)
    t0 = time.monotonic()
    srv.stop()
    assert time.monotonic() - t0 < 2
    t.join(5)
    assert not t.is_alive()


def test_stop_is_idempotent_and_port_is_released(no_leaked_threads):
    srv = FakeOpenAI(chat_script())
    srv.start()
    port = srv.port
    srv.stop()
    srv.stop()
    with FakeOpenAI(chat_script(), port=port) as again:
        assert again.port == port
        assert post(again, main_body())[0] == 200


def test_cli_prints_base_url_and_serves(no_leaked_threads):
    proc = subprocess.Popen(
        [sys.executable, "-m", "capguard.demo.fake_openai", "--port", "0", "--script", "runaway", "--delay", "0"],
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        line = proc.stdout.readline().strip()
        assert line.startswith("http://127.0.0.1:") and line.endswith("/v1")
        port = int(line.rsplit(":", 1)[1].split("/")[0])
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        conn.request("POST", "/v1/chat/completions", body=json.dumps(main_body()))
        obj = json.loads(conn.getresponse().read())
        conn.close()
        assert RUNAWAY_MARKER in obj["choices"][0]["message"]["content"]
        assert obj["usage"]["prompt_tokens"] == 50_000
    finally:
        proc.terminate()
        out, err = proc.communicate(timeout=10)
    assert proc.returncode == 0
    assert err == ""  # quiet: no request logging
