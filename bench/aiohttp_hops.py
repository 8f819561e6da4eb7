"""Which of aiohttp's two hops costs what on a request of a long conversation: the strict-mode proxy is an aiohttp
server (the agent's hop) and an aiohttp client (the provider's hop). Each is timed against the same hop written
on asyncio's streams with no HTTP library (the floor of that hop in Python), in one process, request after
request on one kept-alive connection:

- server: a client thread on a plain socket sends the request and reads the reply; the server is aiohttp's web
  server (as the proxy runs it: an app, a route, `request.read()`, a streamed reply) or a bare asyncio one;
- client: aiohttp's ClientSession (as the proxy configures it) or a bare asyncio client, against a bare asyncio
  server.

    python bench/aiohttp_hops.py [--kb 200] [--requests 2000] [--loop asyncio|uvloop]

Prints p50/p99 of the round trip and CPU per request for each; the differences are what aiohttp adds on that hop.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import socket
import time
from collections.abc import Awaitable, Callable

REPLY = b'event: message_start\ndata: {"type":"message_start"}\n\n'


def body(kb: int) -> bytes:
    return json.dumps({"model": "m", "max_tokens": 10, "stream": True,
                       "messages": [{"role": "user", "content": "word " * (kb * 1024 // 5)}]}).encode()  # fmt: skip


def cpu() -> float:
    used = resource.getrusage(resource.RUSAGE_SELF)
    return used.ru_utime + used.ru_stime


async def bare_server(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Reads a request with a Content-Length, answers REPLY with one: no HTTP library, no checks."""
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            size = next(
                int(line.split(b":")[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length:")
            )
            await reader.readexactly(size)
            writer.write(
                b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncontent-length: %d\r\n\r\n%s"
                % (len(REPLY), REPLY)
            )
    except (asyncio.IncompleteReadError, ConnectionError, asyncio.CancelledError):
        writer.close()


async def aiohttp_server() -> tuple[int, Callable[[], Awaitable[None]]]:
    from aiohttp import web

    async def handle(request: web.Request) -> web.StreamResponse:
        await request.read()
        reply = web.StreamResponse(status=200, headers={"content-type": "text/event-stream"})
        await reply.prepare(request)
        await reply.write(REPLY)
        await reply.write_eof()
        return reply

    app = web.Application(client_max_size=64 * 1024 * 1024)
    app.router.add_route("*", "/{secret}/{mount}/{tail:.*}", handle)
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    return site._server.sockets[0].getsockname()[1], runner.cleanup  # type: ignore[union-attr]


def socket_client(port: int, payload: bytes, n: int) -> list[float]:
    """A client on a plain socket (in a thread): sends, reads until the reply's end (chunked or not)."""
    sock = socket.create_connection(("127.0.0.1", port))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    request = (
        b"POST /s/m/v1/messages HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n%s"
        % (len(payload), payload)
    )
    times = []
    for _ in range(n):
        start = time.perf_counter()
        sock.sendall(request)
        got = b""
        while not (got.endswith(b"0\r\n\r\n") or got.endswith(REPLY)):
            got += sock.recv(65536)
        times.append(time.perf_counter() - start)
    sock.close()
    return times


async def server_hop(kind: str, payload: bytes, n: int) -> tuple[list[float], float]:
    if kind == "aiohttp":
        port, close = await aiohttp_server()
    else:
        server = await asyncio.start_server(bare_server, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]

        async def close() -> None:
            server.close()

    before = cpu()
    times = await asyncio.get_running_loop().run_in_executor(None, socket_client, port, payload, n)
    used = cpu() - before
    await close()
    return times, used


async def client_hop(kind: str, payload: bytes, n: int) -> tuple[list[float], float]:
    server = await asyncio.start_server(bare_server, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    times = []
    before = cpu()
    if kind == "aiohttp":
        import aiohttp

        async with aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=0), auto_decompress=False, cookie_jar=aiohttp.DummyCookieJar()
        ) as session:
            for _ in range(n):
                start = time.perf_counter()
                async with session.post(f"http://127.0.0.1:{port}/v1/messages", data=payload,
                                        headers={"content-type": "application/json"}) as reply:  # fmt: skip
                    async for _chunk in reply.content.iter_any():
                        pass
                times.append(time.perf_counter() - start)
    else:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        head = (
            b"POST /v1/messages HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n"
            % len(payload)
        )
        for _ in range(n):
            start = time.perf_counter()
            writer.write(head + payload)
            await reader.readuntil(b"\r\n\r\n")
            await reader.readexactly(len(REPLY))
            times.append(time.perf_counter() - start)
        writer.close()
    used = cpu() - before
    server.close()
    return times, used


def line(name: str, times: list[float], used: float, n: int) -> str:
    ordered = sorted(times[n // 20 :])  # the first 5%: warm-up
    p50, p99 = ordered[len(ordered) // 2], ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
    return (
        f"  {name:28} p50 {p50 * 1000:6.3f} ms   p99 {p99 * 1000:6.3f} ms   CPU {used / n * 1000:6.3f} ms per request"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kb", type=int, default=200)
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--loop", choices=("asyncio", "uvloop"), default="asyncio")
    args = parser.parse_args()
    payload = body(args.kb)
    run: Callable = asyncio.run
    if args.loop == "uvloop":
        import uvloop  # type: ignore[import-not-found, unused-ignore]

        run = uvloop.run
    print(
        f"a {len(payload) / 1024:.0f} KB request, {args.requests} each, {args.loop}; round trip and CPU of the process"
    )
    print("the agent's hop (server):")
    for kind in ("bare asyncio", "aiohttp"):
        times, used = run(server_hop(kind.split()[-1], payload, args.requests))
        print(line(kind + " server", times, used, args.requests))
    print("the provider's hop (client):")
    for kind in ("bare asyncio", "aiohttp"):
        times, used = run(client_hop(kind.split()[-1], payload, args.requests))
        print(line(kind + " client", times, used, args.requests))


if __name__ == "__main__":
    main()
