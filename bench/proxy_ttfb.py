"""Strict mode's metering proxy: time to first byte it adds, throughput of a long SSE stream, and its CPU and RSS.

Three processes, as in a run: the fake Messages server (tests/fakes/fake_anthropic.py, TCP_NODELAY as production
API servers set it), the proxy in a process of its own (as in capguard's, where the supervisor's loop is idle),
and the client (this process, httpx). Requests go direct and through the proxy interleaved, so both see the same
load (the machine is shared: read the paired difference, not the absolute figures).

- TTFB: the same small streamed request, in turn: direct; through the proxy; through a bare aiohttp pass-through
  (the same HTTP layer, nothing metered: the floor of what aiohttp adds); with --floors, through a byte relay (two
  more loopback hops and no HTTP at all: the floor of any proxy on this machine); and through an llhttp pass-through (httptools'
  parser, the framing written by hand: what an HTTP layer leaner than aiohttp would cost; a measuring device only,
  with no TLS, validation or connection rules); and through an aiohttp pass-through that sends the body on as it
  arrives, holding its last byte until the whole body is read and decoded (pipelining: whether overlapping the two
  hops' uploads would win back the time a proxy spends reading a request before it goes). p50/p99 of each and of
  the paired difference; CPU per request.
- With --against CHECKOUT: the proxy of another checkout of capguard too (e.g. `git worktree add /tmp/before
  <commit>`), in the same rounds: a change measured against the code before it under the same load.
- Long stream: a reply of --stream-mb MB in ~1 KB text deltas as fast as the fake writes it: MB/s direct and
  through the proxy, and the proxy's CPU per MB.
- Paced stream: a reply of 1,000 deltas at --events-per-s (a fast model's pace): the proxy's CPU in % of a core
  while it streams, and its RSS.

    python bench/proxy_ttfb.py [--requests 300] [--stream-mb 8] [--events-per-s 100] [--loop asyncio|uvloop]
                               [--floors]   (adds the byte relay and the llhttp pass-through)
                               [--body-kb N]   (a conversation shaped like Claude Code's of N KB, not 2 KB)
                               [--against CHECKOUT]   (adds that checkout's proxy)
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import psutil

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

BODY = {
    "model": "claude-sonnet-4-5",
    "max_tokens": 1024,
    "stream": True,
    "messages": [{"role": "user", "content": "benchmark " * 200}],
}
HEADERS = {"x-api-key": "sk-bench", "content-type": "application/json"}


def conversation(kb: int) -> dict[str, Any]:
    """A request shaped like Claude Code's later in a session: a cached system prompt and tool schemas (~60 KB),
    then turns of text, tool calls and tool results up to about `kb` KB of JSON, the newest turn cache-marked."""
    import random

    rng = random.Random(kb)
    words = [
        "the",
        "a",
        "to",
        "of",
        "file",
        "test",
        "code",
        "function",
        "return",
        "value",
        "error",
        "line",
        "import",
        "class",
        "self",
        "def",
        "if",
        "for",
        "in",
    ]

    def text(size: int) -> str:
        return " ".join(rng.choice(words) for _ in range(size // 5))

    tools = [
        {
            "name": f"Tool{i}",
            "description": text(1_500),
            "input_schema": {"type": "object", "properties": {f"p{j}": {"type": "string"} for j in range(4)}},
        }
        for i in range(30)
    ]
    system = [{"type": "text", "text": text(15_000), "cache_control": {"type": "ephemeral"}}]
    body = {"model": "claude-sonnet-4-5", "max_tokens": 32_000, "stream": True, "system": system, "tools": tools}
    messages: list[dict[str, Any]] = []
    while len(json.dumps({**body, "messages": messages})) < kb * 1024:
        turn = len(messages) // 2
        messages.append(
            {
                "role": "assistant",
                "content": [
                    {"type": "text", "text": text(300)},
                    {"type": "tool_use", "id": f"toolu_{turn}", "name": "Tool1", "input": {"p0": text(100)}},
                ],
            }
        )
        messages.append(
            {
                "role": "user",
                "content": [{"type": "tool_result", "tool_use_id": f"toolu_{turn}", "content": text(3_000)}],
            }
        )
    messages.insert(0, {"role": "user", "content": text(200)})
    messages[-1]["content"][-1]["cache_control"] = {"type": "ephemeral"}
    return {**body, "messages": messages}


PACED_EVENTS = 1_000
SMALL = json.dumps(BODY).encode()
REQUEST = SMALL  # what the time-to-first-byte rounds send (--body-kb: a long conversation)


def serve_fake(kind: str, stream_mb: float, events_per_s: float) -> None:
    """A fake Messages server in this process: prints its base URL, serves until stdin closes."""
    import threading

    from tests.fakes.fake_anthropic import FakeAnthropic, Script, Usage, text_reply

    usage = Usage(input_tokens=500, output_tokens=40, cache_write_5m=0, cache_read=0)
    if kind == "short":
        script = Script(usage=usage)
    elif kind == "long":
        chunks = int(stream_mb * 1024)  # ~1 KB a delta
        script = Script(usage=usage, replies=[text_reply("x" * 1024 * chunks, text_chunks=chunks)] * 50)
    else:
        reply = text_reply("word " * PACED_EVENTS * 4, text_chunks=PACED_EVENTS, chunk_delay_s=1 / events_per_s)
        script = Script(usage=usage, replies=[reply] * 50)
    with FakeAnthropic(script) as fake:
        print(fake.base_url, flush=True)
        threading.Thread(target=sys.stdin.read, daemon=True).start()
        sys.stdin.read()


def serve_proxy(upstreams: list[str], loop: str) -> None:
    """The metering proxy in this process (as capguard runs it: a thread of its own), one mount per upstream."""
    from capguard.core.pricing import Pricer
    from capguard.metering.proxy import Gate, MeteringProxy

    gate = Gate(Pricer(), cap_micro=10**12)
    mounts = {f"u{i}": url for i, url in enumerate(upstreams)}
    with MeteringProxy(gate, mounts, fast_loop=loop == "uvloop") as proxy:
        print(" ".join(proxy.base_url(name) for name in mounts), flush=True)
        sys.stdin.read()


async def _relay(request: Any, up: Any, hop: set[str]) -> Any:
    """The upstream's reply to the client, chunk by chunk as it comes."""
    from aiohttp import web

    reply = web.StreamResponse(status=up.status, headers={k: v for k, v in up.headers.items() if k.lower() not in hop})
    await reply.prepare(request)
    async for chunk in up.content.iter_any():
        await reply.write(chunk)
    await reply.write_eof()
    return reply


async def _serve(handle: Any, session: Any, **app_options: Any) -> None:
    """Serve `handle` for every path on a port of its own, print its URL, and stop when stdin closes."""
    import asyncio

    from aiohttp import web

    app = web.Application(**app_options)
    app.router.add_route("*", "/{tail:.*}", handle)
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    print(f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}", flush=True)  # type: ignore[union-attr]
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
    await runner.cleanup()
    await session.close()


def serve_bare(upstream: str, loop: str) -> None:
    """A bare aiohttp pass-through (no metering, as the proxy's HTTP layer is configured): the floor of its cost."""

    import aiohttp
    from aiohttp import web

    hop = {"host", "content-length", "transfer-encoding", "connection", "accept-encoding"}

    async def run() -> None:
        session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=0), auto_decompress=False, cookie_jar=aiohttp.DummyCookieJar()
        )

        async def handle(request: web.Request) -> web.StreamResponse:
            raw = await request.read()
            headers = {k: v for k, v in request.headers.items() if k.lower() not in hop}
            async with session.post(f"{upstream}/{request.match_info['tail']}", data=raw, headers=headers) as up:
                return await _relay(request, up, hop)

        await _serve(handle, session)

    _run(run(), loop)


def serve_pipe(upstream: str, loop: str) -> None:
    """An aiohttp pass-through that sends the body on as it arrives, holding its last byte until the whole body
    is read and decoded (what a proxy that must read a request before it goes could do at best with aiohttp)."""
    import asyncio

    import aiohttp
    import msgspec
    from aiohttp import web

    hop = {"host", "content-length", "transfer-encoding", "connection", "accept-encoding"}

    async def run() -> None:
        session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=0), auto_decompress=False, cookie_jar=aiohttp.DummyCookieJar()
        )

        async def handle(request: web.Request) -> web.StreamResponse:
            size = request.content_length or 0
            queue: asyncio.Queue[bytes | None] = asyncio.Queue()

            async def body():  # type: ignore[no-untyped-def]
                while (chunk := await queue.get()) is not None:
                    yield chunk

            headers = {k: v for k, v in request.headers.items() if k.lower() not in hop}
            headers["Content-Length"] = str(size)
            sent = asyncio.ensure_future(
                session.post(f"{upstream}/{request.match_info['tail']}", data=body(), headers=headers)
            )
            got = bytearray()
            while True:
                chunk = await request.content.readany()
                if not chunk:
                    break
                start = len(got)
                got += chunk
                if len(got) >= size:
                    if len(got) - 1 > start:
                        queue.put_nowait(bytes(got[start:-1]))
                    break
                queue.put_nowait(chunk)
            msgspec.json.decode(got)  # the admission would go here
            queue.put_nowait(bytes(got[-1:]))
            queue.put_nowait(None)
            async with await sent as up:
                return await _relay(request, up, hop)

        await _serve(handle, session, client_max_size=64 << 20)

    _run(run(), loop)


def serve_relay(upstream: str, loop: str) -> None:
    """A byte relay to the upstream (one upstream connection per client connection, no HTTP): the floor."""
    import asyncio
    import socket
    from urllib.parse import urlsplit

    up = urlsplit(upstream)

    async def run() -> None:
        async def pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            while data := await reader.read(65536):
                writer.write(data)
            writer.close()

        async def connection(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            up_reader, up_writer = await asyncio.open_connection(up.hostname, up.port)
            for side in (writer, up_writer):
                side.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            await asyncio.gather(pump(reader, up_writer), pump(up_reader, writer), return_exceptions=True)

        server = await asyncio.start_server(connection, "127.0.0.1", 0)
        print(f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}", flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)

    _run(run(), loop)


def serve_llhttp(upstream: str, loop: str) -> None:
    """A pass-through on llhttp (httptools) with hand-written framing, one kept-alive upstream connection per
    request at a time: what a leaner HTTP layer than aiohttp would cost. A measuring device, not a proxy to use."""
    import asyncio
    from urllib.parse import urlsplit

    try:
        import httptools
    except ImportError:
        sys.exit("bench/proxy_ttfb.py --floors: the llhttp pass-through needs httptools (pip install httptools)")

    up = urlsplit(upstream)
    hop = {b"host", b"content-length", b"transfer-encoding", b"connection", b"accept-encoding"}

    async def run() -> None:
        events = asyncio.get_running_loop()
        idle: list[Any] = []
        tasks: set[Any] = set()

        class Upstream(asyncio.Protocol):
            def connection_made(self, transport: Any) -> None:
                self.transport, self.parser, self.agent = transport, httptools.HttpResponseParser(self), None
                self.headers: list[tuple[bytes, bytes]] = []

            def data_received(self, data: bytes) -> None:
                self.parser.feed_data(data)

            def on_header(self, name: bytes, value: bytes) -> None:
                self.headers.append((name, value))

            def on_headers_complete(self) -> None:
                status = self.parser.get_status_code()
                kept = b"".join(b"%s: %s\r\n" % (k, v) for k, v in self.headers if k.lower() not in hop)
                self.agent.write(b"HTTP/1.1 %d OK\r\n%stransfer-encoding: chunked\r\n\r\n" % (status, kept))

            def on_body(self, body: bytes) -> None:
                self.agent.write(b"%x\r\n%b\r\n" % (len(body), body))

            def on_message_complete(self) -> None:
                self.agent.write(b"0\r\n\r\n")
                self.agent, self.headers = None, []
                idle.append(self)

        class Agent(asyncio.Protocol):
            def connection_made(self, transport: Any) -> None:
                self.transport, self.parser = transport, httptools.HttpRequestParser(self)
                self.headers: list[tuple[bytes, bytes]] = []
                self.body: list[bytes] = []

            def data_received(self, data: bytes) -> None:
                self.parser.feed_data(data)

            def on_url(self, url: bytes) -> None:
                self.url = url

            def on_header(self, name: bytes, value: bytes) -> None:
                self.headers.append((name, value))

            def on_body(self, body: bytes) -> None:
                self.body.append(body)

            def on_message_complete(self) -> None:
                raw, self.body = b"".join(self.body), []
                kept = b"".join(b"%s: %s\r\n" % (k, v) for k, v in self.headers if k.lower() not in hop)
                self.headers = []
                tasks.add(task := events.create_task(self.forward(self.url, kept, raw)))
                task.add_done_callback(tasks.discard)

            async def forward(self, url: bytes, kept: bytes, raw: bytes) -> None:
                if idle:
                    hop_to = idle.pop()
                else:
                    _, hop_to = await events.create_connection(Upstream, up.hostname, up.port)
                hop_to.agent = self.transport
                head = b"POST %s HTTP/1.1\r\nhost: %s\r\n%scontent-length: %d\r\n\r\n"
                hop_to.transport.write(head % (url, up.netloc.encode(), kept, len(raw)) + raw)

        server = await events.create_server(Agent, "127.0.0.1", 0)
        print(f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}", flush=True)
        await events.run_in_executor(None, sys.stdin.read)

    _run(run(), loop)


def _run(main: Any, loop: str) -> None:
    """The pass-throughs run on the loop the proxy runs on (--loop), so they compare like for like."""
    if loop == "uvloop":
        import uvloop  # type: ignore[import-not-found, unused-ignore]

        uvloop.run(main)
    else:
        __import__("asyncio").run(main)


def spawn(*args: str, checkout: Path = ROOT) -> tuple[subprocess.Popen, list[str]]:
    """This script in a process of its own; from another checkout, its own copy, which imports its own capguard."""
    script = Path(__file__) if checkout == ROOT else checkout / "bench" / "proxy_ttfb.py"
    proc = subprocess.Popen(
        [sys.executable, str(script), *args], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=checkout
    )
    assert proc.stdout is not None
    return proc, proc.stdout.readline().split()


def first_byte(client: httpx.Client, url: str) -> float:
    start = time.perf_counter()
    with client.stream("POST", url, content=REQUEST, headers=HEADERS) as reply:
        elapsed = None
        for _ in reply.iter_raw():  # drained to the end, so the connection is reused for the next request
            if elapsed is None:
                elapsed = time.perf_counter() - start
    assert elapsed is not None and reply.status_code == 200
    return elapsed


def drain(client: httpx.Client, url: str) -> tuple[int, float]:
    start = time.perf_counter()
    size = 0
    with client.stream("POST", url, content=SMALL, headers=HEADERS) as reply:
        for chunk in reply.iter_raw():
            size += len(chunk)
    assert reply.status_code == 200
    return size, time.perf_counter() - start


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def ms(values: list[float]) -> str:
    return (
        f"p50 {percentile(values, 0.5) * 1000:7.3f} ms   p99 {percentile(values, 0.99) * 1000:7.3f} ms"
        f"   mean {statistics.mean(values) * 1000:7.3f} ms"
    )


def cpu(proc: psutil.Process) -> float:
    times = proc.cpu_times()
    return times.user + times.system


def measure(args: argparse.Namespace) -> None:
    fakes = [
        spawn("--serve-fake", kind, str(args.stream_mb), str(args.events_per_s)) for kind in ("short", "long", "paced")
    ]
    urls = [found[0] for _, found in fakes]
    proxy_proc, proxy_urls = spawn("--serve-proxy", args.loop, *urls)
    kinds = ["bare", "pipe", *(["relay", "llhttp"] if args.floors else [])]
    others = {kind: spawn(f"--serve-{kind}", args.loop, urls[0]) for kind in kinds}
    names = {
        "bare": "bare aiohttp pass-through",
        "pipe": "aiohttp pipelined pass-through",
        "relay": "byte relay (no HTTP)",
        "llhttp": "llhttp pass-through",
    }
    if args.against:
        others["against"] = spawn("--serve-proxy", args.loop, urls[0], checkout=Path(args.against).resolve())
        kinds.append("against")
        names["against"] = f"proxy of {args.against}"
    proxy = psutil.Process(proxy_proc.pid)
    procs = {"proxy": proxy, **{kind: psutil.Process(proc.pid) for kind, (proc, _) in others.items()}}
    targets = {
        "direct": f"{urls[0]}/v1/messages",
        "proxy": f"{proxy_urls[0]}/v1/messages",
        **{kind: f"{found[0]}/v1/messages" for kind, (_, found) in others.items()},
    }
    clients = {name: httpx.Client(timeout=120) for name in targets}
    direct_client, proxy_client = clients["direct"], clients["proxy"]
    try:
        with direct_client, proxy_client:  # the long and the paced streams go through these two too
            for _ in range(30):  # warm up: connections, genai-prices' data, the pricer's caches
                for name, client in clients.items():
                    first_byte(client, targets[name])
            times: dict[str, list[float]] = {name: [] for name in targets}
            before = {name: cpu(proc) for name, proc in procs.items()}
            for _ in range(args.requests):
                for name, client in clients.items():  # in turn, so every path sees the same load
                    times[name].append(first_byte(client, targets[name]))
            per_request = {name: (cpu(proc) - before[name]) / args.requests for name, proc in procs.items()}
            direct = times["direct"]
            print(
                f"time to first byte, {args.requests} streamed requests of {len(REQUEST) / 1024:.0f} KB each way,"
                f" interleaved ({args.loop}):"
            )
            print(f"  direct   {ms(direct)}")
            print(f"  proxy    {ms(times['proxy'])}")
            for name in ("proxy", *kinds):
                through = times[name]
                added = [t - d for t, d in zip(through, direct)]
                p50 = percentile(through, 0.5) - percentile(direct, 0.5)
                p99 = percentile(through, 0.99) - percentile(direct, 0.99)
                label = "proxy" if name == "proxy" else names[name]
                print(f"  {label}, added {ms(added)}   (paired difference)")
                print(
                    f"  {label}, added TTFB: p50 {p50 * 1000:.3f} ms, p99 {p99 * 1000:.3f} ms"
                    " (difference of the percentiles)"
                )
                print(f"  {label}, CPU per request: {per_request[name] * 1000:.3f} ms")

            long_direct, long_through = f"{urls[1]}/v1/messages", f"{proxy_urls[1]}/v1/messages"
            rates: dict[str, list[float]] = {"direct": [], "proxy": []}
            cpu_per_mb = []
            for _ in range(3):
                size, took = drain(direct_client, long_direct)
                rates["direct"].append(size / took / 1e6)
                before = cpu(proxy)
                size, took = drain(proxy_client, long_through)
                rates["proxy"].append(size / took / 1e6)
                cpu_per_mb.append((cpu(proxy) - before) / (size / 1e6))
            print(f"long stream, {size / 1e6:.1f} MB in ~1 KB deltas, 3 each way:")
            for name, values in rates.items():
                print(
                    f"  {name:7}  median {statistics.median(values):6.1f} MB/s   (runs: {', '.join(f'{v:.1f}' for v in values)})"
                )
            print(f"  proxy CPU per MB streamed: {statistics.median(cpu_per_mb) * 1000:.2f} ms")

            paced = f"{proxy_urls[2]}/v1/messages"
            before = cpu(proxy)
            size, took = drain(proxy_client, paced)
            share = (cpu(proxy) - before) / took
            rss = proxy.memory_info().rss / 2**20
            print(
                f"paced stream through the proxy: {PACED_EVENTS} deltas at {args.events_per_s:g}/s ({took:.1f} s):"
                f" proxy CPU {share * 100:.2f}% of a core; proxy RSS {rss:.1f} MB"
            )
    finally:
        for client in clients.values():
            client.close()
        for proc, _ in [*fakes, (proxy_proc, None), *others.values()]:
            assert proc.stdin is not None
            proc.stdin.close()
            proc.wait(10)


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--serve-fake":
        serve_fake(sys.argv[2], float(sys.argv[3]), float(sys.argv[4]))
        return
    if len(sys.argv) > 1 and sys.argv[1] == "--serve-proxy":
        serve_proxy(sys.argv[3:], sys.argv[2])
        return
    serve = {
        "--serve-bare": serve_bare,
        "--serve-pipe": serve_pipe,
        "--serve-relay": serve_relay,
        "--serve-llhttp": serve_llhttp,
    }
    if len(sys.argv) > 1 and sys.argv[1] in serve:
        serve[sys.argv[1]](sys.argv[3], sys.argv[2])
        return
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--stream-mb", type=float, default=8)
    parser.add_argument("--events-per-s", type=float, default=100)
    parser.add_argument("--loop", choices=("asyncio", "uvloop"), default="asyncio")
    parser.add_argument("--floors", action="store_true", help="also time a byte relay and an llhttp pass-through")
    parser.add_argument("--body-kb", type=int, default=0, help="time a conversation of this many KB (0: 2 KB)")
    parser.add_argument("--against", metavar="CHECKOUT", help="also time the proxy of another checkout of capguard")
    args = parser.parse_args()
    if args.body_kb:
        global REQUEST
        REQUEST = json.dumps(conversation(args.body_kb)).encode()
    measure(args)


if __name__ == "__main__":
    main()
