"""Strict mode's metering proxy: time to first byte it adds, throughput of a long SSE stream, and its CPU and RSS.

Three processes, as in a run: the fake Messages server (tests/fakes/fake_anthropic.py, TCP_NODELAY as production
API servers set it), the proxy in a process of its own (as in capguard's, where the supervisor's loop is idle),
and the client (this process, httpx). Requests go direct and through the proxy interleaved, so both see the same
load (the machine is shared: read the paired difference, not the absolute figures).

- TTFB: the same small streamed request, direct, through the proxy and through a bare aiohttp pass-through (the
  same HTTP layer, nothing metered: the floor of what aiohttp adds), in turn; p50/p99 of each and of the paired
  difference; the proxy's and the pass-through's CPU time per request.
- Long stream: a reply of --stream-mb MB in ~1 KB text deltas as fast as the fake writes it: MB/s direct and
  through the proxy, and the proxy's CPU per MB.
- Paced stream: a reply of 1,000 deltas at --events-per-s (a fast model's pace): the proxy's CPU in % of a core
  while it streams, and its RSS.

    python bench/proxy_ttfb.py [--requests 300] [--stream-mb 8] [--events-per-s 100] [--loop asyncio|uvloop]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

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
HEADERS = {"x-api-key": "sk-bench"}
PACED_EVENTS = 1_000


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


def serve_bare(upstream: str) -> None:
    """A bare aiohttp pass-through (no metering, as the proxy's HTTP layer is configured): the floor of its cost."""
    import asyncio

    import aiohttp
    from aiohttp import web

    hop = {"host", "content-length", "transfer-encoding", "connection", "accept-encoding"}

    async def run() -> None:
        session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0), auto_decompress=False)

        async def handle(request: web.Request) -> web.StreamResponse:
            raw = await request.read()
            headers = {k: v for k, v in request.headers.items() if k.lower() not in hop}
            async with session.post(f"{upstream}/{request.match_info['tail']}", data=raw, headers=headers) as up:
                reply = web.StreamResponse(
                    status=up.status, headers={k: v for k, v in up.headers.items() if k.lower() not in hop}
                )
                await reply.prepare(request)
                async for chunk in up.content.iter_any():
                    await reply.write(chunk)
                await reply.write_eof()
                return reply

        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", handle)
        runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        print(f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}", flush=True)  # type: ignore[union-attr]
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
        await runner.cleanup()
        await session.close()

    asyncio.run(run())


def spawn(*args: str) -> tuple[subprocess.Popen, list[str]]:
    proc = subprocess.Popen(
        [sys.executable, __file__, *args], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=ROOT
    )
    assert proc.stdout is not None
    return proc, proc.stdout.readline().split()


def first_byte(client: httpx.Client, url: str) -> float:
    start = time.perf_counter()
    with client.stream("POST", url, json=BODY, headers=HEADERS) as reply:
        elapsed = None
        for _ in reply.iter_raw():  # drained to the end, so the connection is reused for the next request
            if elapsed is None:
                elapsed = time.perf_counter() - start
    assert elapsed is not None and reply.status_code == 200
    return elapsed


def drain(client: httpx.Client, url: str) -> tuple[int, float]:
    start = time.perf_counter()
    size = 0
    with client.stream("POST", url, json=BODY, headers=HEADERS) as reply:
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
    bare_proc, bare_urls = spawn("--serve-bare", urls[0])
    proxy, bare = psutil.Process(proxy_proc.pid), psutil.Process(bare_proc.pid)
    try:
        direct_url, through_url = f"{urls[0]}/v1/messages", f"{proxy_urls[0]}/v1/messages"
        bare_url = f"{bare_urls[0]}/v1/messages"
        with (
            httpx.Client(timeout=120) as direct_client,
            httpx.Client(timeout=120) as proxy_client,
            httpx.Client(timeout=120) as bare_client,
        ):
            for _ in range(30):  # warm up: connections, genai-prices' data, the pricer's caches
                first_byte(direct_client, direct_url)
                first_byte(proxy_client, through_url)
                first_byte(bare_client, bare_url)
            direct, through, passed = [], [], []
            before, bare_before = cpu(proxy), cpu(bare)
            for _ in range(args.requests):
                direct.append(first_byte(direct_client, direct_url))
                through.append(first_byte(proxy_client, through_url))
                passed.append(first_byte(bare_client, bare_url))
            per_request = (cpu(proxy) - before) / args.requests
            bare_per_request = (cpu(bare) - bare_before) / args.requests
            added = [t - d for t, d in zip(through, direct)]
            bare_added = [t - d for t, d in zip(passed, direct)]
            print(f"time to first byte, {args.requests} streamed requests each way, interleaved ({args.loop}):")
            print(f"  direct   {ms(direct)}")
            print(f"  proxy    {ms(through)}")
            print(f"  added    {ms(added)}   (paired difference)")
            p50 = percentile(through, 0.5) - percentile(direct, 0.5)
            p99 = percentile(through, 0.99) - percentile(direct, 0.99)
            print(f"  added TTFB: p50 {p50 * 1000:.3f} ms, p99 {p99 * 1000:.3f} ms (difference of the percentiles)")
            print(f"  proxy CPU per request: {per_request * 1000:.3f} ms")
            print(f"  bare aiohttp pass-through, added {ms(bare_added)}   (paired difference)")
            p50 = percentile(passed, 0.5) - percentile(direct, 0.5)
            p99 = percentile(passed, 0.99) - percentile(direct, 0.99)
            print(
                f"  bare added TTFB: p50 {p50 * 1000:.3f} ms, p99 {p99 * 1000:.3f} ms (difference of the percentiles)"
            )
            print(f"  bare pass-through CPU per request: {bare_per_request * 1000:.3f} ms")

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
        for proc, _ in [*fakes, (proxy_proc, None), (bare_proc, None)]:
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
    if len(sys.argv) > 1 and sys.argv[1] == "--serve-bare":
        serve_bare(sys.argv[2])
        return
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--stream-mb", type=float, default=8)
    parser.add_argument("--events-per-s", type=float, default=100)
    parser.add_argument("--loop", choices=("asyncio", "uvloop"), default="asyncio")
    measure(parser.parse_args())


if __name__ == "__main__":
    main()
