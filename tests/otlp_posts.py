"""OTLP/HTTP JSON posts as Claude Code sends them, and as a forger would: for the receiver's tests."""

from __future__ import annotations

import http.client
import json
from urllib.parse import urlsplit


def api_request(session: str, *, cost=0.011444, request_id: str = "req_forged", **extra) -> dict:
    """One `claude_code.api_request` log record; `cost` goes in as given (a string stays a string)."""
    attrs = {
        "session.id": session,
        "event.name": "api_request",
        "model": "claude-opus-5-5",
        "input_tokens": 11,
        "output_tokens": 40,
        "cost_usd": cost,
        "request_id": request_id,
        **extra,
    }

    def wrap(value):
        if isinstance(value, str):
            return {"stringValue": value}
        if isinstance(value, int):
            return {"intValue": value}
        return {"doubleValue": value}

    return {
        "body": {"stringValue": "claude_code.api_request"},
        "attributes": [{"key": k, "value": wrap(v)} for k, v in attrs.items()],
    }


def payload(*records: dict) -> bytes:
    return json.dumps({"resourceLogs": [{"scopeLogs": [{"logRecords": list(records)}]}]}).encode()


def post(endpoint: str, body: bytes, headers: dict[str, str] | None = None, path: str = "/v1/logs") -> int:
    """POST `body` to the receiver; the HTTP status it answered."""
    url = urlsplit(endpoint)
    conn = http.client.HTTPConnection(url.hostname, url.port, timeout=10)
    try:
        conn.request("POST", path, body=body, headers={"Content-Type": "application/json", **(headers or {})})
        return conn.getresponse().status
    finally:
        conn.close()


def header_pair(otlp_headers: str) -> dict[str, str]:
    """OTEL_EXPORTER_OTLP_HEADERS (`name=value,...`) as a dict."""
    return dict(item.split("=", 1) for item in otlp_headers.split(",") if "=" in item)
