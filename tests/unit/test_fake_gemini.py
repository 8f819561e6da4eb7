"""The fake Gemini API on its own (no CLI): billing follows the request, the wire formats, limits and the log."""

from __future__ import annotations

import http.client
import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.fakes import gemini_billing as billing
from tests.fakes.fake_gemini import (
    LOOP_CHECK,
    MAIN,
    NEXT_SPEAKER,
    ROUTER,
    FakeGemini,
    Reply,
    Script,
    chat_script,
    classify,
    runaway_script,
)

REPO_ROOT = Path(__file__).resolve().parents[2]


def body(text: str = "hello", *, system: str = "", history: list | None = None, **config) -> dict:
    contents = list(history or []) + [{"role": "user", "parts": [{"text": text}]}]
    out: dict = {"contents": contents}
    if system:
        out["systemInstruction"] = {"parts": [{"text": system}]}
    if config:
        out["generationConfig"] = config
    return out


def post(srv: FakeGemini, model: str, method: str, payload: dict, *, query: str = "", key: bool = True):
    conn = http.client.HTTPConnection(srv.host, srv.port, timeout=10)
    headers = {"Content-Type": "application/json", **({"x-goog-api-key": "k"} if key else {})}
    conn.request("POST", f"/v1beta/models/{model}:{method}{query}", json.dumps(payload), headers)
    resp = conn.getresponse()
    data = resp.read().decode()
    conn.close()
    return resp.status, resp.getheader("Content-Type"), data


def sse_events(data: str) -> list[dict]:
    return [json.loads(line[len("data: ") :]) for line in data.splitlines() if line.startswith("data: ")]


def stream(srv: FakeGemini, payload: dict, model: str = "gemini-3.8-flash") -> list[dict]:
    status, ctype, data = post(srv, model, "streamGenerateContent", payload, query="?alt=sse")
    assert status == 200 and ctype == "text/event-stream"
    return sse_events(data)


# --------------------------------------------------------------------------- billing rule


def test_tokens_are_utf8_bytes_over_four_rounded_up():
    assert billing.tokens("") == 0
    assert billing.tokens("abcd") == 1
    assert billing.tokens("abcde") == 2
    assert billing.tokens("é" * 4) == 2  # 8 bytes


def test_prompt_text_counts_system_tools_turns_and_function_parts():
    b = body(
        "question",
        system="be brief",
        history=[
            {"role": "model", "parts": [{"functionCall": {"name": "ls", "args": {"d": "."}}}]},
            {"role": "user", "parts": [{"functionResponse": {"name": "ls", "response": {"output": "a.txt"}}}]},
        ],
    )
    b["tools"] = [{"functionDeclarations": [{"name": "ls"}]}]
    text = billing.prompt_text(b)
    for piece in ("be brief", '"name":"ls"', "a.txt", "question"):
        assert piece in text
    assert text.index("be brief") < text.index("functionDeclarations") < text.index("question")


def test_input_follows_the_request_size():
    with FakeGemini(chat_script(), cache_min_tokens=10**9) as srv:
        stream(srv, body("x" * 400))
        stream(srv, body("y" * 4000))
    small, big = (r["usage"]["input"] for r in srv.requests)
    assert small == billing.tokens(billing.prompt_text(body("x" * 400)))
    assert big == billing.tokens(billing.prompt_text(body("y" * 4000)))
    assert big > small * 9


def test_cached_input_is_the_prefix_shared_with_an_earlier_prompt():
    first = body("q1", system="S" * 8000)
    second = body(
        "q2",
        system="S" * 8000,
        history=[{"role": "user", "parts": [{"text": "q1"}]}, {"role": "model", "parts": [{"text": "a1"}]}],
    )
    with FakeGemini(chat_script(), cache_min_tokens=1024) as srv:
        stream(srv, first)
        events = stream(srv, second)
        stream(srv, body("unrelated " * 10))
    u1, u2, u3 = (r["usage"] for r in srv.requests)
    shared = billing.common_prefix_len(billing.prompt_text(first).encode(), billing.prompt_text(second).encode())
    assert u1["cached"] == 0 and u3["cached"] == 0
    assert u2["cached"] == shared // 4 and 0 < u2["cached"] <= u2["input"]
    assert events[-1]["usageMetadata"]["cachedContentTokenCount"] == u2["cached"]


def test_no_cache_below_the_minimum_size():
    with FakeGemini(chat_script(), cache_min_tokens=1024) as srv:
        stream(srv, body("short"))
        stream(srv, body("short"))
    assert [r["usage"]["cached"] for r in srv.requests] == [0, 0]


def test_output_and_thoughts_follow_the_reply_and_total_adds_up():
    reply = Reply("The answer is forty-two.", thinking="Let me think about this for a while.")
    with FakeGemini(Script([reply])) as srv:
        events = stream(srv, body("q"))
    usage = srv.requests[0]["usage"]
    assert usage["output"] == billing.tokens(reply.text)
    assert usage["thoughts"] == billing.tokens(reply.thinking)
    assert usage["total"] == usage["input"] + usage["output"] + usage["thoughts"]
    final = events[-1]["usageMetadata"]
    assert (final["candidatesTokenCount"], final["thoughtsTokenCount"], final["totalTokenCount"]) == (
        usage["output"],
        usage["thoughts"],
        usage["total"],
    )


def test_function_call_is_billed_as_its_json():
    with FakeGemini(runaway_script()) as srv:
        events = stream(srv, body("go"))
    call = events[-1]["candidates"][0]["content"]["parts"][-1]["functionCall"]
    assert call == {"name": "run_shell_command", "args": {"command": "echo capguard-loop 0"}}
    assert srv.requests[0]["usage"]["output"] == billing.tokens(billing.compact(call))


# --------------------------------------------------------------------------- max output tokens


def test_max_output_tokens_caps_text_and_says_so():
    with FakeGemini(Script([Reply("word " * 100)])) as srv:
        events = stream(srv, body("q", maxOutputTokens=7))
    usage = srv.requests[0]["usage"]
    text = "".join(p.get("text", "") for e in events for p in e["candidates"][0]["content"]["parts"])
    assert usage["output"] == 7 and billing.tokens(text) == 7
    assert events[-1]["candidates"][0]["finishReason"] == "MAX_TOKENS"


def test_max_output_tokens_counts_thoughts_first_and_drops_a_call_that_does_not_fit():
    reply = Reply("text", calls=(("run_shell_command", {"command": "echo " + "x" * 200}),), thinking="t" * 40)
    with FakeGemini(Script([reply])) as srv:
        events = stream(srv, body("q", maxOutputTokens=12))
    usage = srv.requests[0]["usage"]
    assert usage["thoughts"] == 10 and usage["output"] + usage["thoughts"] <= 12
    parts = events[-1]["candidates"][0]["content"]["parts"]
    assert not any("functionCall" in p for p in parts)


# --------------------------------------------------------------------------- wire format


def test_stream_chunks_carry_usage_so_far_and_the_last_one_is_complete():
    text = " ".join(f"w{i}" for i in range(60))
    with FakeGemini(Script([Reply(text)])) as srv:
        events = stream(srv, body("q"))
    assert len(events) == 3
    assert "".join(e["candidates"][0]["content"]["parts"][0]["text"] for e in events) == text
    outs = [e["usageMetadata"]["candidatesTokenCount"] for e in events]
    assert outs == sorted(outs) and outs[-1] == billing.tokens(text)
    assert all("finishReason" not in e["candidates"][0] for e in events[:-1])
    assert events[-1]["candidates"][0]["finishReason"] == "STOP"
    assert {e["responseId"] for e in events} == {srv.requests[0]["id"]}


def test_thought_part_only_when_asked_for():
    reply = Reply("answer", thinking="hmm")
    with FakeGemini(Script([reply])) as srv:
        plain = stream(srv, body("q"))
        asked = stream(srv, body("q", thinkingConfig={"includeThoughts": True}))
    assert not any(p.get("thought") for e in plain for p in e["candidates"][0]["content"]["parts"])
    assert {"text": "hmm", "thought": True} in asked[-1]["candidates"][0]["content"]["parts"]
    assert srv.requests[0]["usage"]["thoughts"] == srv.requests[1]["usage"]["thoughts"] == 1


def test_generate_content_is_one_json_response_and_a_side_call():
    script = chat_script(["Only answer."])
    with FakeGemini(script) as srv:  # the CLI's main turns always stream; a plain generateContent is a side call
        status, ctype, data = post(srv, "m", "generateContent", body("q"))
    resp = json.loads(data)
    assert status == 200 and ctype.startswith("application/json")
    assert resp["candidates"][0]["content"]["parts"] == [{"text": script.utility_text}]
    assert srv.requests[0]["kind"] == "utility" and srv.requests[0]["main_index"] is None
    assert resp["usageMetadata"]["totalTokenCount"] == srv.requests[0]["usage"]["total"]


def test_stream_without_alt_sse_is_a_json_array():
    with FakeGemini(chat_script(["One two three four five six."])) as srv:
        status, ctype, data = post(srv, "m", "streamGenerateContent", body("q"))
    chunks = json.loads(data)
    assert status == 200 and isinstance(chunks, list) and chunks[-1]["candidates"][0]["finishReason"] == "STOP"


def test_count_tokens_is_free_and_matches_the_billing_rule():
    with FakeGemini(chat_script()) as srv:
        status, _, data = post(srv, "m", "countTokens", body("count me"))
    assert status == 200 and json.loads(data) == {"totalTokens": billing.tokens(billing.prompt_text(body("count me")))}
    assert srv.requests == []


def test_missing_api_key_and_unknown_path_are_refused_unbilled():
    with FakeGemini(chat_script()) as srv:
        assert post(srv, "m", "generateContent", body(), key=False)[0] == 403
        assert post(srv, "m", "embedContent", body())[0] == 404
    assert srv.requests == []


# --------------------------------------------------------------------------- side calls and the script


def _schema_body(*keys: str) -> dict:
    return body(
        "q",
        responseMimeType="application/json",
        responseJsonSchema={"type": "OBJECT", "properties": {k: {"type": "STRING"} for k in keys}},
    )


def test_side_calls_are_classified_by_schema_and_do_not_advance_the_script():
    with FakeGemini(chat_script(["first", "second"]), cache_min_tokens=10**9) as srv:
        router = json.loads(
            post(srv, "lite", "generateContent", _schema_body("complexity_reasoning", "complexity_score"))[2]
        )
        loop = json.loads(post(srv, "flash", "generateContent", _schema_body("unproductive_state_confidence"))[2])
        nxt = json.loads(post(srv, "flash", "generateContent", _schema_body("next_speaker"))[2])
        main = stream(srv, body("q"))
    text = lambda r: r["candidates"][0]["content"]["parts"][0]["text"]  # noqa: E731
    assert 1 <= json.loads(text(router))["complexity_score"] <= 100
    assert json.loads(text(loop))["unproductive_state_confidence"] < 0.9
    assert json.loads(text(nxt))["next_speaker"] == "user"
    assert main[0]["candidates"][0]["content"]["parts"][0]["text"].startswith("f")  # still the first reply
    assert [r["kind"] for r in srv.requests] == [ROUTER, LOOP_CHECK, NEXT_SPEAKER, MAIN]
    assert srv.totals()["input"] == sum(r["usage"]["input"] for r in srv.requests)


def test_classify_main_only_for_a_schemaless_stream():
    assert classify("streamGenerateContent", body()) == MAIN
    assert classify("generateContent", body()) != MAIN


def test_runaway_varies_its_call_so_the_cli_identical_call_detector_stays_quiet():
    with FakeGemini(runaway_script()) as srv:
        calls = [
            stream(srv, body(f"t{i}"))[-1]["candidates"][0]["content"]["parts"][-1]["functionCall"] for i in range(3)
        ]
    assert len({c["args"]["command"] for c in calls}) == 3
    assert srv.count(MAIN) == 3 and len(srv.billed(MAIN)) == 3


# --------------------------------------------------------------------------- delivery: delay, cut, log


def test_delay_spreads_over_the_reply():
    with FakeGemini(Script([Reply("slow answer " * 5, delay_s=0.6)])) as srv:
        t0 = time.monotonic()
        stream(srv, body("q"))
        assert time.monotonic() - t0 >= 0.5


def test_cut_mid_stream_sends_no_final_chunk_and_is_not_billed():
    with FakeGemini(Script([Reply(" ".join(f"w{i}" for i in range(90)), cut_after=1)])) as srv:
        conn = http.client.HTTPConnection(srv.host, srv.port, timeout=10)
        conn.request(
            "POST", "/v1beta/models/m:streamGenerateContent?alt=sse", json.dumps(body("q")), {"x-goog-api-key": "k"}
        )
        resp = conn.getresponse()
        with pytest.raises(http.client.IncompleteRead) as err:
            resp.read()
        conn.close()
        assert srv.wait_idle(5)
    events = sse_events(err.value.partial.decode())
    assert len(events) == 1 and "finishReason" not in events[0]["candidates"][0]
    assert srv.requests[0]["billed"] is False and srv.billed() == []


def test_log_is_thread_safe_and_complete():
    import threading

    with FakeGemini(chat_script(), cache_min_tokens=10**9) as srv:
        threads = [threading.Thread(target=stream, args=(srv, body(f"q{i}" * (i + 1)))) for i in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(10)
    assert srv.count(MAIN) == 8 and len(srv.billed(MAIN)) == 8
    assert sorted(r["main_index"] for r in srv.requests) == list(range(8))
    assert srv.totals(MAIN)["total"] == sum(r["usage"]["total"] for r in srv.requests)


def test_command_line_serves_and_logs(tmp_path):
    log = tmp_path / "billed.jsonl"
    proc = subprocess.Popen(
        [sys.executable, str(REPO_ROOT / "tests/fakes/fake_gemini.py"), "--log", str(log)],
        stdout=subprocess.PIPE,
        text=True,
        cwd=tmp_path,
    )
    try:
        url = proc.stdout.readline().strip()
        host, port = url.removeprefix("http://").split(":")
        conn = http.client.HTTPConnection(host, int(port), timeout=10)
        conn.request("POST", "/v1beta/models/m:generateContent", json.dumps(body("q")), {"x-goog-api-key": "k"})
        assert conn.getresponse().status == 200
        conn.close()
        deadline = (
            time.monotonic() + 10
        )  # the fake bills once the reply is sent whole, a moment after the client has it
        while time.monotonic() < deadline and not (log.exists() and log.read_text().strip()):
            time.sleep(0.05)
    finally:
        proc.terminate()
        proc.wait(10)
    rows = [json.loads(line) for line in log.read_text().splitlines()]
    assert proc.returncode == 0 and len(rows) == 1 and rows[0]["billed"] and rows[0]["usage"]["input"] > 0
