"""A minimal OTLP/HTTP (JSON) log receiver on 127.0.0.1 for Claude Code's per-request telemetry.

Each `claude_code.api_request` log record becomes one JSON line in a file capguard tails like any other
log: the receiver thread only writes, the supervisor's main loop reads, prices and decides.
Any local user can reach a port on 127.0.0.1: a post counts only if it carries this run's random secret, which
Claude Code gets in its environment (OTEL_EXPORTER_OTLP_HEADERS); the rest are refused with 401 and counted.
"""

from __future__ import annotations

import hmac
import json
import logging
import math
import secrets
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from capguard.private_files import private_file

log = logging.getLogger(__name__)
API_REQUEST = "claude_code.api_request"
SECRET_HEADER = "x-capguard-token"  # a bare name=hex pair: Claude's exporter sends header values verbatim
MAX_BODY = 8 * 1024 * 1024  # Claude's exports are ~10 KB; a larger post is not Claude's
NUMBERS = (
    "input_tokens",
    "output_tokens",
    "cache_read_tokens",
    "cache_creation_tokens",
    "cache_creation_5m_tokens",
    "cache_creation_1h_tokens",
    "cost_usd",
    "cost_usd_micros",
)


def _value(wrapped: dict):
    for kind in ("stringValue", "intValue", "doubleValue", "boolValue"):
        if kind in wrapped:
            value = wrapped[kind]
            if kind == "intValue":  # OTLP/JSON may send int64 as a string; anything else stays as sent
                try:
                    return int(value)
                except (TypeError, ValueError, OverflowError):
                    return value
            return value
    return None


def is_number(value) -> bool:
    """A count or a cost as Claude sends them: a finite, non-negative int or float (not a bool, not a string)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value >= 0


def well_formed(attrs: dict) -> bool:
    """An api_request whose counts and costs are numbers, or absent; anything else is skipped, never guessed at."""
    return all(attrs.get(name) is None or is_number(attrs[name]) for name in NUMBERS)


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
    server: _Server
    timeout = 5  # a connection that sends nothing is dropped: none can hold the receiver (or its shutdown) open

    def log_message(self, format, *args):  # quiet: never write on the agent's terminal
        pass

    def do_POST(self) -> None:
        owner = self.server.owner
        try:
            if not owner.authentic(self.headers.get(SECRET_HEADER)):
                owner.count(
                    "rejected", f"refused a telemetry post without this run's secret from {self.client_address[0]}"
                )
                self.close_connection = True  # its body is never read
                self._reply(401, b'{"error":"unauthenticated"}')
                return
            self._accept(owner)
        except OSError as err:  # our own file: the transcript still has these replies, the log says why
            owner.count("unwritten", f"could not write telemetry records to {owner.out}: {err}")
            self._reply(503, b'{"error":"not written"}')
        except Exception as err:
            owner.count("malformed_posts", f"skipped a telemetry post capguard could not read: {type(err).__name__}")
            self.close_connection = True
            self._reply(400, b'{"error":"expected OTLP/HTTP JSON"}')

    def _accept(self, owner: OtlpReceiver) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        if not 0 <= length <= MAX_BODY:
            raise ValueError(f"Content-Length {length}")
        raw = self.rfile.read(length) if length else b""
        if self.path.rstrip("/").endswith("/v1/logs"):
            records = api_requests(json.loads(raw or b"{}"))  # RecursionError too (10,000 nested arrays)
            good = [r for r in records if well_formed(r)]
            for _ in range(len(records) - len(good)):
                owner.count("malformed_records", "skipped a telemetry record with a non-number where a number belongs")
            owner.write(good)
        self._reply(200, b"{}")

    def _reply(self, status: int, body: bytes) -> None:
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        except OSError:
            self.close_connection = True  # the sender went away: nothing to tell it


class _Server(ThreadingHTTPServer):
    daemon_threads = False  # server_close() joins the handler threads

    def __init__(self, owner: OtlpReceiver):
        self.owner = owner
        super().__init__(("127.0.0.1", 0), _Handler)

    def handle_error(self, request, client_address) -> None:
        # socketserver prints a traceback on stderr, the agent's terminal: to the run's log instead
        log.warning("telemetry connection from %s failed", client_address[0], exc_info=True)


class OtlpReceiver:
    """Bound at construction (so its endpoint can go into the agent's environment), served once started.

    `secret`: the value the header `x-capguard-token` must carry (random per run unless given)."""

    LOGGED = 5  # of each kind of refused post, the first few are logged; all are counted

    def __init__(self, out: Path, *, secret: str | None = None):
        self.out = private_file(out, stderr=None)
        self.secret = secret or secrets.token_hex(32)
        self.counts = {"rejected": 0, "malformed_posts": 0, "malformed_records": 0, "unwritten": 0}
        self._lock = threading.Lock()
        self._server = _Server(self)
        self._thread: threading.Thread | None = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    @property
    def headers(self) -> str:
        """OTEL_EXPORTER_OTLP_HEADERS for the agent: the secret travels in its environment, never in argv."""
        return f"{SECRET_HEADER}={self.secret}"

    def authentic(self, value: str | None) -> bool:
        given = (value or "").strip().encode("latin-1", "replace")  # http.client decodes headers as latin-1
        return hmac.compare_digest(given, self.secret.encode())

    def count(self, kind: str, why: str) -> None:
        with self._lock:
            self.counts[kind] += 1
            first = self.counts[kind] <= self.LOGGED
        if first:
            log.warning(why)

    def notes(self) -> list[str]:
        """For the report, once the run is over: what the receiver refused or skipped (nothing of it was counted)."""
        c = self.counts
        found = [
            (c["rejected"], "unauthenticated telemetry post(s) rejected (401), not counted"),
            (c["malformed_posts"], "unreadable telemetry post(s) skipped"),
            (c["malformed_records"], "telemetry record(s) with a non-number where a number belongs skipped"),
            (c["unwritten"], "telemetry post(s) capguard could not write (see capguard.log)"),
        ]
        return [f"{n} {text}" for n, text in found if n]

    def write(self, records: list[dict]) -> None:
        if not records:
            return
        with self._lock, open(self.out, "a") as handle:
            handle.write("".join(json.dumps(r, separators=(",", ":")) + "\n" for r in records))

    def start(self) -> None:
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.2}, name="capguard-otlp", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        if self._thread is not None:
            self._server.shutdown()
            self._thread.join(5)
            self._thread = None
        self._server.server_close()


def telemetry_env(receiver: OtlpReceiver) -> dict[str, str]:
    """Claude Code's logs exporter pointed at the receiver (logs only: no metrics, no traces), with its secret."""
    return {
        "CLAUDE_CODE_ENABLE_TELEMETRY": "1",
        "OTEL_LOGS_EXPORTER": "otlp",
        "OTEL_EXPORTER_OTLP_PROTOCOL": "http/json",
        "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint,
        "OTEL_EXPORTER_OTLP_HEADERS": receiver.headers,
        "OTEL_LOGS_EXPORT_INTERVAL": "1000",
    }


def user_has_telemetry(env) -> bool:
    """Never break a user's own telemetry: any OTEL or Claude telemetry setting means hands off."""
    return bool(env.get("CLAUDE_CODE_ENABLE_TELEMETRY")) or any(k.startswith("OTEL_") for k in env)
