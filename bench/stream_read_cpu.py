"""What reading a streamed reply's usage costs the strict-mode proxy per event, for each framing it reads: SSE
(Anthropic's, OpenAI's, Gemini's) and AWS's event stream (Claude on Amazon Bedrock: binary messages, two CRC32s
each, the event base64'd inside a JSON object). In one process, the proxy's own reading code (the splitter, the
decode, the usage tracker) over a reply of N text deltas of a model's usual size, cut into chunks as a socket
delivers them; the HTTP layer (aiohttp) is the same for both and is measured by bench/proxy_ttfb.py.

    python bench/stream_read_cpu.py [--events 20000] [--delta-bytes 24] [--chunk 1024] [--rounds 5]

Prints microseconds of CPU per event for each framing and the share of a core that reading would take at 100
events a second (a fast model's pace; the goal for the proxy while streaming is at most 5% of a core).
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from capguard.metering.proxy import eventstream, sse
from capguard.metering.proxy.dialects import ANTHROPIC
from capguard.metering.proxy.usage import Tracker
from tests.fakes import eventstream as aws


def events(n: int, delta_bytes: int) -> list[dict]:
    text = ("word " * delta_bytes)[:delta_bytes]
    out: list[dict] = [
        {
            "type": "message_start",
            "message": {
                "id": "msg_b",
                "model": "claude-opus-5-5",
                "usage": {"input_tokens": 12000, "output_tokens": 1},
            },
        },
        {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
    ]
    out += [{"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": text}}] * n
    out += [
        {"type": "content_block_stop", "index": 0},
        {"type": "message_delta", "delta": {"stop_reason": "end_turn"}, "usage": {"output_tokens": n * 6}},
        {"type": "message_stop"},
    ]
    return out


def chunks(data: bytes, size: int) -> list[bytes]:
    return [data[i : i + size] for i in range(0, len(data), size)]


def read_sse(parts: list[bytes]) -> Tracker:
    tracker, splitter = Tracker(ANTHROPIC), sse.EventSplitter()
    for chunk in parts:
        for raw in splitter.feed(chunk):
            parsed = sse.json_data(sse.parse(raw)[1])
            if parsed is not None:
                tracker.see(parsed)
    return tracker


def read_eventstream(parts: list[bytes]) -> Tracker:
    tracker, splitter = Tracker(ANTHROPIC), eventstream.MessageSplitter()
    for chunk in parts:
        for message in splitter.feed(chunk):
            if eventstream.is_exception(message):
                tracker.seen.failed = True
            elif (event := eventstream.bedrock_event(message)) is not None:
                tracker.see(event)
    return tracker


def cpu() -> float:
    used = resource.getrusage(resource.RUSAGE_SELF)
    return used.ru_utime + used.ru_stime


def timed(read: Callable[[list[bytes]], Tracker], parts: list[bytes], n: int, rounds: int) -> float:
    """Microseconds of CPU per event, the best of `rounds` (the least disturbed by the machine's other work)."""
    best = float("inf")
    for _ in range(rounds):
        start = cpu()
        tracker = read(parts)
        best = min(best, cpu() - start)
        assert tracker.seen.complete and tracker.seen.usage is not None  # the usage was read, every time
    return best / n * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--delta-bytes", type=int, default=24)
    parser.add_argument("--chunk", type=int, default=1024, help="bytes a read of the socket delivers")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    reply = events(args.events, args.delta_bytes)
    n = len(reply)
    as_sse = b"".join(f"event: {e['type']}\ndata: {json.dumps(e)}\n\n".encode() for e in reply)
    as_aws = b"".join(aws.chunk(e) for e in reply)
    print(f"{n} events ({args.delta_bytes}-byte text deltas), read in {args.chunk}-byte chunks, best of {args.rounds}")
    print(f"{'framing':<22} {'bytes/event':>12} {'CPU us/event':>13} {'% of a core at 100/s':>21}")
    for name, data, read in (("SSE", as_sse, read_sse), ("AWS event stream", as_aws, read_eventstream)):
        per = timed(read, chunks(data, args.chunk), n, args.rounds)
        print(f"{name:<22} {len(data) / n:>12.0f} {per:>13.2f} {per * 100 / 1e4:>20.3f}%")


if __name__ == "__main__":
    main()
