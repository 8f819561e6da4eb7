"""Time to first byte added by strict mode's metering proxy: the same streamed request to a fake Messages server,
direct and through the proxy, interleaved in one run; p50/p99 of each and of the difference. The fakes set
TCP_NODELAY on their sockets, as production API servers do (without it the stdlib server writes headers and the
first event apart and Nagle waits for the proxy's delayed ACK: ~40 ms that no real server adds).

    python bench/proxy_ttfb.py [--requests 300]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from capguard.core.pricing import Pricer
from capguard.metering.proxy import Gate, MeteringProxy
from tests.fakes.fake_anthropic import FakeAnthropic, Script, Usage

BODY = {
    "model": "claude-sonnet-4-5",
    "max_tokens": 1024,
    "stream": True,
    "messages": [{"role": "user", "content": "benchmark " * 200}],
}


def first_byte(client: httpx.Client, url: str) -> float:
    start = time.perf_counter()
    with client.stream("POST", url, json=BODY, headers={"x-api-key": "sk-bench"}) as reply:
        elapsed = None
        for _ in reply.iter_raw():  # drained to the end, so the connection is reused for the next request
            if elapsed is None:
                elapsed = time.perf_counter() - start
    assert elapsed is not None
    return elapsed


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def measure(requests: int) -> None:
    usage = Usage(input_tokens=500, output_tokens=40, cache_write_5m=0, cache_read=0)
    gate = Gate(Pricer(), cap_micro=10**9)
    with FakeAnthropic(Script(usage=usage)) as fake, MeteringProxy(gate, {"up": fake.base_url}) as proxy:
        direct_url, proxy_url = f"{fake.base_url}/v1/messages", f"{proxy.base_url('up')}/v1/messages"
        with httpx.Client() as direct_client, httpx.Client() as proxy_client:
            for _ in range(20):  # warm up: connections, genai-prices' data, the pricer's caches
                first_byte(direct_client, direct_url)
                first_byte(proxy_client, proxy_url)
            direct, through = [], []
            for _ in range(requests):
                direct.append(first_byte(direct_client, direct_url))
                through.append(first_byte(proxy_client, proxy_url))
    added = [t - d for t, d in zip(through, direct)]
    for name, values in (("direct", direct), ("proxy", through), ("added", added)):
        print(
            f"  {name:7} p50 {percentile(values, 0.5) * 1000:7.3f} ms   p99 {percentile(values, 0.99) * 1000:7.3f} ms"
            f"   mean {statistics.mean(values) * 1000:7.3f} ms   (n={len(values)})"
        )
    p50 = percentile(through, 0.5) - percentile(direct, 0.5)
    p99 = percentile(through, 0.99) - percentile(direct, 0.99)
    print(f"  added TTFB: p50 {p50 * 1000:.3f} ms, p99 {p99 * 1000:.3f} ms (difference of the percentiles)")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=300)
    args = parser.parse_args()
    print("fake Messages server (TCP_NODELAY), streamed requests, direct vs through the proxy:")
    measure(args.requests)


if __name__ == "__main__":
    main()
