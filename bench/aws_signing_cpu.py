"""What signing a request for AWS (SigV4) costs the strict-mode proxy, on the hop to the provider, for an agent on
Bedrock, Mantle or Claude Platform on AWS with AWS credentials: botocore's signer (capguard/metering/proxy/
aws_signing.py) over the body as sent, against the floor any signer pays (the body's SHA-256). In one process, static
credentials (a refresh is botocore's and rare); the body a request of Claude Code's shape (bench/proxy_ttfb.py's),
2 KB and long conversations.

    python bench/aws_signing_cpu.py [--sizes 0,100,200] [--requests 2000] [--rounds 3]

Prints microseconds of CPU per request for each size: the signer, and the SHA-256 alone.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import proxy_ttfb  # noqa: E402  (the request shapes of the TTFB bench)

from capguard.metering.proxy.aws_signing import AwsSigner, AwsSigning  # noqa: E402

URL = "https://bedrock-runtime.us-east-1.amazonaws.com/model/us.anthropic.claude-sonnet-4-5-20250929-v1%3A0/invoke"
HEADERS = {"Content-Type": "application/json", "anthropic-version": "bedrock-2023-05-31", "User-Agent": "bench"}


def per_request(work, n: int, rounds: int) -> float:
    """The least CPU time per call of `work` over `rounds` rounds of `n` calls, in microseconds."""
    best = float("inf")
    for _ in range(rounds):
        start = time.process_time()
        for _ in range(n):
            work()
        best = min(best, (time.process_time() - start) / n)
    return best * 1e6


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", default="0,100,200", help="conversation sizes in KB (0: the 2 KB request)")
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    signer = AwsSigner(
        AwsSigning("bedrock", "us-east-1", {"AWS_ACCESS_KEY_ID": "AKIDBENCH", "AWS_SECRET_ACCESS_KEY": "s"})
    )
    signer.load()
    for kb in (int(size) for size in args.sizes.split(",")):
        body = json.dumps(proxy_ttfb.conversation(kb) if kb else proxy_ttfb.BODY).encode()
        signed = per_request(
            lambda body=body: signer.sign(signer.credentials(), "POST", URL, HEADERS, body), args.requests, args.rounds
        )
        floor = per_request(lambda body=body: hashlib.sha256(body).hexdigest(), args.requests, args.rounds)
        print(f"{len(body) / 1024:7.1f} KB: signing {signed:7.1f} us per request; its SHA-256 alone {floor:6.1f} us")


if __name__ == "__main__":
    main()
