"""A minimal OTLP/HTTP (JSON) log receiver on 127.0.0.1 for Claude Code's per-request telemetry.

Each `claude_code.api_request` log record becomes one JSON line in a file capguard tails like any other
log: the receiver thread only writes, the supervisor's main loop reads, prices and decides.
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

API_REQUEST = "claude_code.api_request"


def _value(wrapped: dict):
    for kind in ("stringValue", "intValue", "doubleValue", "boolValue"):
        if kind in wrapped:
            value = wrapped[kind]
            return int(value) if kind == "intValue" else value
    return None


def api_requests(payload: dict) -> list[dict]:
    """The attributes of every api_request log record in one OTLP/JSON export."""
    found = []
    for resource in payload.get("resourceLogs") or []:
        for scope in resource.get("scopeLogs") or []:
            for record in scope.get("logRecords") or []:
                body = _value(record.get("body") or {})
                attrs = {a.get("key"): _value(a.get("value") or {}) for a in record.get("attributes") or []}
                if body == API_REQUEST or attrs.get("event.name") == "api_request":
                    found.append(attrs)
    return found


class _Handler(BaseHTTPRequestHandler):
    server: "_Server"

    def log_message(self, format, *args):  # quiet: never write on the agent's terminal
        pass

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        if self.path.rstrip("/").endswith("/v1/logs"):
            try:
                records = api_requests(json.loads(raw or b"{}"))
            except (ValueError, AttributeError, TypeError, RecursionError):  # nested 10,000 deep: a 400, no traceback
                records = None
            if records is None:
                self._reply(400, b'{"error":"expected OTLP/HTTP JSON"}')
                return
            self.server.owner.write(records)
        self._reply(200, b"{}")

    def _reply(self, status: int, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


class _Server(ThreadingHTTPServer):
    daemon_threads = False  # server_close() joins the handler threads

    def __init__(self, owner: "OtlpReceiver"):
        self.owner = owner
        super().__init__(("127.0.0.1", 0), _Handler)


class OtlpReceiver:
    """Bound at construction (so its endpoint can go into the agent's environment), served once started."""

    def __init__(self, out: Path):
        self.out = out
        self._lock = threading.Lock()
        self._server = _Server(self)
        self._thread: threading.Thread | None = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def write(self, records: list[dict]) -> None:
        if not records:
            return
        with self._lock, open(self.out, "a") as handle:
            handle.write("".join(json.dumps(r, separators=(",", ":")) + "\n" for r in records))

    def start(self) -> None:
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.2},
                                        name="capguard-otlp", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        if self._thread is not None:
            self._server.shutdown()
            self._thread.join(5)
            self._thread = None
        self._server.server_close()


def telemetry_env(endpoint: str) -> dict[str, str]:
    """Claude Code's logs exporter pointed at the receiver (logs only: no metrics, no traces)."""
    return {
        "CLAUDE_CODE_ENABLE_TELEMETRY": "1",
        "OTEL_LOGS_EXPORTER": "otlp",
        "OTEL_EXPORTER_OTLP_PROTOCOL": "http/json",
        "OTEL_EXPORTER_OTLP_ENDPOINT": endpoint,
        "OTEL_LOGS_EXPORT_INTERVAL": "1000",
    }


def user_has_telemetry(env) -> bool:
    """Never break a user's own telemetry: any OTEL or Claude telemetry setting means hands off."""
    return bool(env.get("CLAUDE_CODE_ENABLE_TELEMETRY")) or any(k.startswith("OTEL_") for k in env)
