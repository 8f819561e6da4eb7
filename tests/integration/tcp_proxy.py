"""A TCP proxy on 127.0.0.1 that a test can cut: a database that goes away mid-run and comes back.

Cut, it drops every open connection and closes each new one at once (as a server that is down); restored, it
forwards again. Used in front of the shared PostgreSQL server, which other tests keep using meanwhile.
"""

from __future__ import annotations

import socket
import threading


class CuttableProxy:
    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.1)  # a closed listener does not wake a blocked accept(): look again often
        self.port = self._listener.getsockname()[1]
        self._lock = threading.Lock()
        self._open: set[socket.socket] = set()
        self._threads: list[threading.Thread] = []
        self._down = False
        self._closing = False
        self.refused = 0  # connections closed at once while cut
        self._accepter = threading.Thread(target=self._accept, name="proxy-accept", daemon=True)

    def __enter__(self) -> CuttableProxy:
        self._accepter.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._closing = True
        self._listener.close()
        self._drop_all()
        self._accepter.join(5)
        for thread in list(self._threads):
            thread.join(5)

    def cut(self) -> None:
        with self._lock:
            self._down = True
        self._drop_all()

    def restore(self) -> None:
        with self._lock:
            self._down = False

    def _drop_all(self) -> None:
        with self._lock:
            sockets, self._open = self._open, set()
        for sock in sockets:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            sock.close()

    def _accept(self) -> None:
        while not self._closing:
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            client.settimeout(None)
            with self._lock:
                down = self._down
            if down:
                self.refused += 1
                client.close()
                continue
            try:
                upstream = socket.create_connection(self.target, timeout=5)
                upstream.settimeout(None)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._open.update((client, upstream))
            for src, dst in ((client, upstream), (upstream, client)):
                thread = threading.Thread(target=self._pump, args=(src, dst), name="proxy-pump", daemon=True)
                self._threads.append(thread)
                thread.start()

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (src, dst):
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
