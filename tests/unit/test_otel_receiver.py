"""The OTel receiver on 127.0.0.1: only posts with the run's secret count; no post can take it down."""

from __future__ import annotations

import json
import socket
import stat

import pytest

from capguard.agents.claude.otel import OtelParser
from capguard.agents.claude.otel_gate import ThisRunsSessions
from capguard.core.events import Reply
from capguard.metering.otel_receiver import OtlpReceiver, telemetry_env
from tests.otlp_posts import api_request, header_pair, payload, post

SESSION = "33333333-2222-4333-8444-000000000001"


@pytest.fixture
def receiver(tmp_path):
    r = OtlpReceiver(tmp_path / "claude.otel.jsonl")
    r.start()
    yield r
    r.stop()


def lines(receiver) -> list[dict]:
    return [json.loads(line) for line in receiver.out.read_text().splitlines()]


def test_a_post_without_the_secret_is_refused_and_counted(receiver):
    assert post(receiver.endpoint, payload(api_request(SESSION, cost=4.99))) == 401
    assert post(receiver.endpoint, payload(api_request(SESSION, cost=4.99)), {"x-capguard-token": "guess"}) == 401
    assert lines(receiver) == []
    assert receiver.counts["rejected"] == 2
    assert receiver.notes() == ["2 unauthenticated telemetry post(s) rejected (401), not counted"]


def test_a_post_with_the_secret_is_written(receiver):
    headers = header_pair(telemetry_env(receiver)["OTEL_EXPORTER_OTLP_HEADERS"])
    assert post(receiver.endpoint, payload(api_request(SESSION, request_id="req_1")), headers) == 200
    assert [(r["session.id"], r["request_id"], r["cost_usd"]) for r in lines(receiver)] == [
        (SESSION, "req_1", 0.011444)
    ]
    assert receiver.notes() == []


def test_each_run_gets_its_own_secret(tmp_path):
    first, second = OtlpReceiver(tmp_path / "a"), OtlpReceiver(tmp_path / "b")
    try:
        assert first.secret != second.secret and len(first.secret) >= 32
        assert telemetry_env(first)["OTEL_EXPORTER_OTLP_HEADERS"] == f"x-capguard-token={first.secret}"
    finally:
        first.stop()
        second.stop()


def test_the_telemetry_file_is_private(tmp_path):
    r = OtlpReceiver(tmp_path / "claude.otel.jsonl")
    r.stop()
    assert stat.S_IMODE(r.out.stat().st_mode) == 0o600


@pytest.mark.parametrize("cost", ["NaN", "abc", "Infinity", -1.0, float("nan"), float("inf"), "", [1], {"a": 1}])
def test_a_record_with_a_non_number_for_a_cost_is_skipped_and_counted(receiver, cost):
    headers = {"x-capguard-token": receiver.secret}
    record = api_request(SESSION, request_id="req_bad")
    for attr in record["attributes"]:
        if attr["key"] == "cost_usd":
            attr["value"] = {"doubleValue": cost}
    good = api_request(SESSION, request_id="req_good")
    assert post(receiver.endpoint, payload(record, good), headers) == 200
    assert [r["request_id"] for r in lines(receiver)] == ["req_good"]
    assert receiver.counts["malformed_records"] == 1


def test_an_int_value_that_is_not_an_integer_is_skipped(receiver):
    record = api_request(SESSION)
    record["attributes"].append({"key": "output_tokens", "value": {"intValue": "1e400"}})
    assert post(receiver.endpoint, payload(record), {"x-capguard-token": receiver.secret}) == 200
    assert lines(receiver) == [] and receiver.counts["malformed_records"] == 1


@pytest.mark.parametrize(
    "body",
    [
        b"not json",
        b"[1, 2]",
        b"[" * 10_000 + b"]" * 10_000,
        b'{"resourceLogs": [{"scopeLogs": [{"logRecords": [1]}]}]}',
        b'{"resourceLogs": 5}',
    ],
)
def test_an_unreadable_post_is_answered_400_and_the_receiver_keeps_serving(receiver, body):
    headers = {"x-capguard-token": receiver.secret}
    assert post(receiver.endpoint, body, headers) == 400
    assert post(receiver.endpoint, payload(api_request(SESSION, request_id="req_after")), headers) == 200
    assert [r["request_id"] for r in lines(receiver)] == ["req_after"]
    assert receiver.counts["malformed_posts"] == 1


def _raw(receiver, request: bytes) -> bytes:
    port = int(receiver.endpoint.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(request)
        return sock.recv(1024)


def test_a_huge_or_bogus_content_length_is_refused_unread(receiver):
    secret = receiver.secret.encode()
    huge = (
        b"POST /v1/logs HTTP/1.1\r\nHost: x\r\nx-capguard-token: " + secret + b"\r\nContent-Length: 99999999999\r\n\r\n"
    )
    assert _raw(receiver, huge).startswith(b"HTTP/1.0 400")
    bogus = b"POST /v1/logs HTTP/1.1\r\nHost: x\r\nx-capguard-token: " + secret + b"\r\nContent-Length: abc\r\n\r\n"
    assert _raw(receiver, bogus).startswith(b"HTTP/1.0 400")
    unauthenticated = b"POST /v1/logs HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999999\r\n\r\n"
    assert _raw(receiver, unauthenticated).startswith(b"HTTP/1.0 401")
    assert receiver.counts == {"rejected": 1, "malformed_posts": 2, "malformed_records": 0, "unwritten": 0}


def test_a_non_ascii_secret_header_is_refused_not_crashed(receiver):
    request = b"POST /v1/logs HTTP/1.1\r\nHost: x\r\nx-capguard-token: \xff\xfe\r\nContent-Length: 2\r\n\r\n{}"
    assert _raw(receiver, request).startswith(b"HTTP/1.0 401")


# -- whose records count: the session gate ---------------------------------------------------------------------------
def _line(session: str | None, request_id: str) -> bytes:
    attrs = {"request_id": request_id, "model": "claude-opus-5-5", "input_tokens": 1, "cost_usd": 4.99}
    if session is not None:
        attrs["session.id"] = session
    return json.dumps(attrs).encode()


def test_records_of_another_session_or_of_none_are_not_this_runs():
    ours = {SESSION}
    gate = ThisRunsSessions(OtelParser("otel"), lambda: ours)
    kept = (
        gate.feed(_line(SESSION, "a"), 0) + gate.feed(_line("someone-else", "b"), 10) + gate.feed(_line(None, "c"), 20)
    )
    assert [e.key for e in kept if isinstance(e, Reply)] == ["claude:a"]
    assert gate.foreign == 2
    assert gate.notes() == ["2 telemetry record(s) of another session not counted"]


def test_a_session_learnt_later_lets_its_held_records_through():
    ours: set[str] = set()
    gate = ThisRunsSessions(OtelParser("otel"), lambda: ours)
    assert gate.feed(_line("resumed", "a"), 0) == []
    ours.add("resumed")  # Claude's registry named it
    assert [e.key for e in gate.feed(_line("resumed", "b"), 10)] == ["claude:a", "claude:b"]
    assert gate.foreign == 0


def test_held_records_are_bounded():
    gate = ThisRunsSessions(OtelParser("otel"), lambda: set())
    for i in range(1200):
        gate.feed(_line("other", f"r{i}"), i)
    assert len(gate._held) == 1000 and gate.foreign == 1200
