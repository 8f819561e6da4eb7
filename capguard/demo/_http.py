"""What every fake model server shares: a quiet HTTP server that can stop while clients hold connections open, the
handler basics (keep-alive, no log, JSON replies), its lifecycle on a thread, the record of requests tests wait
on, and the command line's serve loop."""

from __future__ import annotations

import json
import signal
import socket
import threading
import time
from collections.abc import Callable, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class TrackingHTTPServer(ThreadingHTTPServer):
    """Remembers its open connections so stop() can unblock handler threads on idle keep-alive sockets."""

    daemon_threads = False  # so server_close() joins handler threads
    block_on_close = True
    allow_reuse_address = True
    request_queue_size = 128  # as a real server's backlog: an agent's parallel calls are never refused (default 5)

    def __init__(self, addr: tuple[str, int], handler: type[BaseHTTPRequestHandler], owner: Any) -> None:
        self.owner = owner
        self._conns: set[socket.socket] = set()
        self._conns_lock = threading.Lock()
        super().__init__(addr, handler)

    def get_request(self) -> tuple[Any, Any]:
        sock, addr = super().get_request()
        # as real API servers do: a reply's headers and its first event are not held back for a delayed ACK
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        with self._conns_lock:
            self._conns.add(sock)
        return sock, addr

    def shutdown_request(self, request: Any) -> None:
        with self._conns_lock:
            self._conns.discard(request)
        super().shutdown_request(request)

    def handle_error(self, request, client_address) -> None:  # quiet
        pass

    def close_connections(self) -> None:
        """Unblock handler threads waiting on idle keep-alive connections."""
        with self._conns_lock:
            conns = list(self._conns)
        for sock in conns:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


class FakeHandler(BaseHTTPRequestHandler):
    """The handler basics of every fake: HTTP/1.1 keep-alive, nothing logged on the terminal, JSON replies."""

    protocol_version = "HTTP/1.1"
    sys_version = ""
    server: TrackingHTTPServer
    json_type = "application/json"

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        pass

    def _send_json(self, status: int, obj: Any, headers: Mapping[str, str] | None = None) -> None:
        data = json.dumps(obj).encode()
        self.send_response(status)
        self.send_header("Content-Type", self.json_type)
        self.send_header("Content-Length", str(len(data)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)
        self.wfile.flush()


class FakeServer:
    """What both fake model servers share: serving on a thread, a stop that never hangs, and the record of
    requests that tests wait on. A subclass names its `handler` and `kinds`, and says what `base_url` is."""

    handler: type[BaseHTTPRequestHandler]
    kinds: tuple[str, ...] = ()

    def __init__(self, *, host: str = "127.0.0.1", port: int = 0) -> None:
        self.host = host
        self.port = port
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        self._requests: list[dict] = []
        self._in_flight = 0
        self._stopping = threading.Event()
        self._httpd: TrackingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    def start(self):  # -> the subclass
        if self._httpd is not None:
            raise RuntimeError(f"{type(self).__name__} already started")
        self._stopping.clear()
        self._httpd = TrackingHTTPServer((self.host, self.port), self.handler, self)
        self.port = self._httpd.server_address[1]
        self._thread = threading.Thread(
            target=self._httpd.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"{type(self).__name__}:{self.port}",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        """Stop serving, abort delayed replies, close connections and join all threads."""
        httpd, thread = self._httpd, self._thread
        if httpd is None:
            return
        self._stopping.set()
        httpd.shutdown()
        httpd.close_connections()
        httpd.server_close()  # joins handler threads (block_on_close)
        if thread is not None:
            thread.join(timeout)
        self._httpd = None
        self._thread = None
        with self._cond:
            self._cond.notify_all()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    @property
    def running(self) -> bool:
        return self._httpd is not None

    def _begin(self) -> None:
        with self._cond:
            self._in_flight += 1
            self._cond.notify_all()

    def _end(self) -> None:
        with self._cond:
            self._in_flight -= 1
            self._cond.notify_all()

    def _count(self, kind: str | None) -> int:  # with the lock held
        return sum(1 for r in self._requests if kind is None or r["kind"] == kind)

    def count(self, kind: str | None = None) -> int:
        """Number of model requests received (of one `kind` if given)."""
        if kind is not None and kind not in self.kinds:
            raise ValueError(f"kind must be one of {self.kinds}, not {kind!r}")
        with self._lock:
            return self._count(kind)

    @property
    def in_flight(self) -> int:
        """Replies being delivered right now (useful to catch an agent mid-reply)."""
        with self._lock:
            return self._in_flight

    def wait_for(self, n: int, kind: str | None = None, timeout: float = 30.0) -> bool:
        """Block until at least `n` requests (of `kind`) have arrived; False on timeout or once stopped."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while self._count(kind) < n:
                left = deadline - time.monotonic()
                if left <= 0 or (self._stopping.is_set() and self._httpd is None):
                    return False
                self._cond.wait(min(left, 0.5))
            return True

    def wait_idle(self, timeout: float = 10.0) -> bool:
        """Block until no reply is being delivered; False on timeout."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while self._in_flight:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(min(left, 0.5))
            return True


def serve_until_terminated(server: FakeServer, tick: Callable[[], None] = lambda: None, every: float = 0.2) -> None:
    """The fake servers' command line: start, print the base URL, serve until Ctrl-C or SIGTERM."""

    def _terminate(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, _terminate)
    try:  # entered before the URL is printed: a prompt SIGTERM still stops cleanly
        server.start()
        print(server.base_url, flush=True)  # type: ignore[attr-defined]
        while True:
            time.sleep(every)
            tick()
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()
