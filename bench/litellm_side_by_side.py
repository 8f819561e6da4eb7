"""capguard's metering proxy and LiteLLM's proxy budget side by side, in one run: the same runaway (a client looping
Chat Completions requests of a growing conversation under a USD budget) through each, against the same fake billing
server (tests/fakes/fake_chat.py: usage follows the request, a token per 4 bytes, replies of ~2,500 tokens). For
each: what the server billed, the overshoot past the budget, and how the runaway was stopped; then the time to first
byte each proxy adds to a small streamed request (paired with the same request sent direct, interleaved).

LiteLLM runs as its own proxy (`litellm --config`), from the bench extra (`pip install -e '.[bench]'`, pinned) or
the executable given with --litellm; its budget is `litellm_settings.max_budget` (the proxy-wide budget, kept in
memory: a key's or a user's `max_budget` needs its database, see bench/RESULTS.md). Offline: its model price map is
the one bundled with the package (LITELLM_LOCAL_MODEL_COST_MAP=True).

    python bench/litellm_side_by_side.py [--budget 0.25] [--requests 100] [--litellm PATH]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import openai

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from capguard.core.events import Reply  # noqa: E402
from capguard.core.pricing import Pricer  # noqa: E402
from tests.fakes import fake_chat  # noqa: E402

MODEL = "gpt-4o"
LONG = "word " * 2000  # 10,000 bytes: 2,500 completion tokens at the fake's 4 bytes a token
SMALL = {"model": MODEL, "messages": [{"role": "user", "content": "benchmark " * 200}], "stream": True}


def serve_capguard(upstream: str, cap_micro: int | None) -> None:
    """capguard's proxy in this process (as in a run: a thread of capguard's process); prints its base URL."""
    from capguard.metering.proxy import Gate, MeteringProxy

    with MeteringProxy(Gate(Pricer(), cap_micro=cap_micro), {"up": upstream}, dialects={"up": "chat"}) as proxy:
        print(proxy.base_url("up"), flush=True)
        sys.stdin.read()


def start_capguard(upstream: str, cap_micro: int | None) -> tuple[subprocess.Popen, str]:
    proc = subprocess.Popen(
        [sys.executable, __file__, "--serve-capguard", upstream, str(cap_micro or 0)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=ROOT,
    )  # fmt: skip
    assert proc.stdout is not None
    return proc, proc.stdout.readline().strip()


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_litellm(exe: str, upstream: str, budget_usd: float | None, workdir: Path) -> tuple[subprocess.Popen, str]:
    """LiteLLM's proxy for one model at the fake, with a proxy-wide budget; its base URL once it answers."""
    port = free_port()
    config = workdir / f"litellm-{port}.yaml"
    lines = [
        "model_list:",
        f"  - model_name: {MODEL}",
        "    litellm_params:",
        f"      model: openai/{MODEL}",
        f"      api_base: {upstream}",
        "      api_key: sk-fake",
        "litellm_settings:",
        "  num_retries: 0",
        "  request_timeout: 600",
    ]
    if budget_usd is not None:
        lines += [f"  max_budget: {budget_usd}", "  budget_duration: 30d"]
    config.write_text("\n".join(lines) + "\n")
    env = {
        **os.environ,
        "LITELLM_LOCAL_MODEL_COST_MAP": "True",
        "LITELLM_LOG": "ERROR",
        "DISABLE_SCHEMA_UPDATE": "true",
    }
    env.pop("DATABASE_URL", None)
    log = (workdir / f"litellm-{port}.log").open("w")
    proc = subprocess.Popen(
        [exe, "--config", str(config), "--host", "127.0.0.1", "--port", str(port), "--num_workers", "1"],
        stdout=log, stderr=subprocess.STDOUT, env=env, cwd=workdir,
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(
                f"LiteLLM's proxy exited ({proc.returncode}): {(workdir / log.name).read_text()[-2000:]}"
            )
        try:
            if httpx.get(f"{base}/health/liveliness", timeout=2).status_code == 200:
                return proc, base
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    proc.kill()
    raise RuntimeError("LiteLLM's proxy did not answer within 180 s")


RESERVE = r"""
import json, sys
from litellm.proxy.spend_tracking.budget_reservation import estimate_request_max_cost
from litellm.proxy.spend_tracking.input_tokens import count_input_tokens_for_model
for line in sys.stdin:
    body = json.loads(line)
    tokens = count_input_tokens_for_model(request_body=body, model=body["model"])
    cost = estimate_request_max_cost(request_body=body, route="/chat/completions", llm_router=None,
                                     input_token_counts=None if tokens is None else {body["model"]: tokens})
    print(json.dumps(cost), flush=True)
"""


class LiteLLMReservation:
    """LiteLLM's own pre-call estimate (`estimate_request_max_cost`, from the installed package, run by its Python)
    and its admission rule (`_apply_over_budget_reservation_policy`): admit while the budget has anything left,
    the hold shrunk to what is left; with `fail_closed_budget_enforcement` refuse when the estimate does not fit.
    max_tokens is never changed. Used when its proxy's budgets cannot run (they need its database)."""

    def __init__(self, python: str, budget_micro: int, fail_closed: bool) -> None:
        env = {**os.environ, "LITELLM_LOCAL_MODEL_COST_MAP": "True", "LITELLM_LOG": "ERROR"}
        self._proc = subprocess.Popen([python, "-c", RESERVE], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                      text=True, env=env)  # fmt: skip
        self.budget, self.fail_closed, self.spent = budget_micro, fail_closed, 0

    def estimate(self, body: dict) -> int:
        assert self._proc.stdin is not None and self._proc.stdout is not None
        self._proc.stdin.write(json.dumps(body) + "\n")
        self._proc.stdin.flush()
        return round(float(json.loads(self._proc.stdout.readline())) * 1_000_000)

    def admits(self, body: dict) -> tuple[bool, int]:
        estimate = self.estimate(body)
        if self.budget - self.spent <= 0:
            return False, estimate
        return not (self.fail_closed and self.spent + estimate > self.budget), estimate

    def close(self) -> None:
        assert self._proc.stdin is not None
        self._proc.stdin.close()
        try:
            self._proc.wait(10)
        except subprocess.TimeoutExpired:  # LiteLLM's background threads may hold its exit
            self._proc.kill()
            self._proc.wait()


def reservation_runaway(gate: LiteLLMReservation, fake: fake_chat.FakeChat) -> dict:
    """The same runaway, each request admitted by LiteLLM's reservation rule and sent unchanged to the fake."""
    client = openai.OpenAI(base_url=fake.base_url, api_key="sk-bench", max_retries=0, timeout=600)
    history: list = [{"role": "user", "content": "start " * 400}]
    answered, stop, estimates = 0, "never refused in 200 requests", []
    for _ in range(200):
        body = {"model": MODEL, "messages": history}
        admitted, estimate = gate.admits(body)
        estimates.append(estimate)
        if not admitted:
            stop = f"refused: spent ${gate.spent / 1e6:.4f}, its estimate ${estimate / 1e6:.4f}"
            break
        reply = client.chat.completions.create(**body)
        gate.spent = billed_micro(fake.billed())
        answered += 1
        history += [
            {"role": "assistant", "content": reply.choices[0].message.content},
            {"role": "user", "content": "go on"},
        ]
    records = fake.billed()
    return {"answered": answered, "sent": len(records), "billed": billed_micro(records), "stop": stop,
            "max_tokens": [r["max_tokens"] for r in records], "estimates": estimates}  # fmt: skip


def billed_micro(records: list[dict]) -> int:
    pricer, total = Pricer(), 0
    for record in records:
        usage = record["usage"]
        cached = usage["prompt_tokens_details"]["cached_tokens"]
        reply = Reply("b", f"openai/{MODEL}", input_tokens=usage["prompt_tokens"] - cached,
                      output_tokens=usage["completion_tokens"], cache_read_tokens=cached)  # fmt: skip
        total += pricer.price(reply).cost_micro or 0
    return total


def runaway(base_url: str, fake: fake_chat.FakeChat) -> dict:
    """Loop one growing conversation until the proxy refuses; what the server billed and how it ended."""
    client = openai.OpenAI(base_url=base_url, api_key="sk-bench", max_retries=0, timeout=600)
    history: list = [{"role": "user", "content": "start " * 400}]
    answered, stop = 0, "never refused in 200 requests"
    for _ in range(200):
        try:
            reply = client.chat.completions.create(model=MODEL, messages=history)
        except openai.APIStatusError as err:
            stop = f"HTTP {err.status_code}: {str(err.message)[:160]}"
            break
        answered += 1
        history += [
            {"role": "assistant", "content": reply.choices[0].message.content},
            {"role": "user", "content": "go on"},
        ]
    time.sleep(0.5)  # a proxy's settlement after the last reply
    records = fake.billed()
    return {"answered": answered, "sent": len(records), "billed": billed_micro(records), "stop": stop,
            "max_tokens": [r["max_tokens"] for r in records]}  # fmt: skip


def first_byte(client: httpx.Client, url: str) -> float:
    start = time.perf_counter()
    with client.stream("POST", url, json=SMALL, headers={"authorization": "Bearer sk-bench"}) as reply:
        elapsed = None
        for _ in reply.iter_raw():
            if elapsed is None:
                elapsed = time.perf_counter() - start
    assert elapsed is not None and reply.status_code == 200, reply.status_code
    return elapsed


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--serve-capguard":
        serve_capguard(sys.argv[2], int(sys.argv[3]) or None)
        return
    parser = argparse.ArgumentParser()
    parser.add_argument("--budget", type=float, default=0.25, help="USD budget of the runaway")
    parser.add_argument("--requests", type=int, default=100, help="paired requests for the latency")
    parser.add_argument("--litellm", default=shutil.which("litellm") or str(Path(sys.executable).with_name("litellm")))
    parser.add_argument(
        "--reservation-python", help="a Python with a LiteLLM that has budget_reservation.py (1.110+), to run its code"
    )
    args = parser.parse_args()
    cap = round(args.budget * 1_000_000)
    procs: list[subprocess.Popen] = []
    with tempfile.TemporaryDirectory() as tmp:
        try:
            print(f"runaway: one growing conversation of {MODEL} under a ${args.budget:.2f} budget")
            results = {}
            for name in ("capguard", "litellm"):
                with fake_chat.FakeChat(fake_chat.Script(generate=lambda n: fake_chat.Reply(LONG))) as fake:
                    if name == "capguard":
                        proc, base = start_capguard(fake.base_url, cap)
                    else:
                        proc, base = start_litellm(args.litellm, fake.base_url, args.budget, Path(tmp))
                    procs.append(proc)
                    results[name] = result = runaway(base, fake)
                over = result["billed"] - cap
                print(
                    f"  {name:9} answered {result['answered']:3}, sent to the server {result['sent']:3}, billed"
                    f" ${result['billed'] / 1e6:.4f}, overshoot ${max(0, over) / 1e6:.4f}"
                    f" ({max(0, over) / cap:.1%}); max_tokens sent: {sorted(set(map(str, result['max_tokens'])))}"
                )
                print(f"            stopped by: {result['stop']}")
            for fail_closed in (False, True) if args.reservation_python else ():
                name = "litellm-reservation" + (" fail-closed" if fail_closed else "")
                with fake_chat.FakeChat(fake_chat.Script(generate=lambda n: fake_chat.Reply(LONG))) as fake:
                    gate = LiteLLMReservation(args.reservation_python, cap, fail_closed)
                    try:
                        result = reservation_runaway(gate, fake)
                    finally:
                        gate.close()
                over = result["billed"] - cap
                print(
                    f"  {name}: answered {result['answered']:3}, billed ${result['billed'] / 1e6:.4f}, overshoot"
                    f" ${max(0, over) / 1e6:.4f} ({max(0, over) / cap:.1%}); its estimates"
                    f" ${min(result['estimates']) / 1e6:.4f}..${max(result['estimates']) / 1e6:.4f} a request"
                )
                print(f"            stopped by: {result['stop']}")
            print(f"time to first byte added, {args.requests} small streamed requests each way, interleaved:")
            with fake_chat.FakeChat(fake_chat.chat_script("a short reply")) as fake:
                cg, cg_base = start_capguard(fake.base_url, None)
                ll, ll_base = start_litellm(args.litellm, fake.base_url, None, Path(tmp))
                procs += [cg, ll]
                urls = {name: f"{base}/chat/completions" for name, base in
                        (("direct", fake.base_url), ("capguard", cg_base), ("litellm", ll_base))}  # fmt: skip
                times: dict[str, list[float]] = {name: [] for name in urls}
                with httpx.Client(timeout=60) as client:
                    for _ in range(20):
                        for url in urls.values():
                            first_byte(client, url)
                    for _ in range(args.requests):
                        for name, url in urls.items():
                            times[name].append(first_byte(client, url))
            for name in ("capguard", "litellm"):
                added = [t - d for t, d in zip(times[name], times["direct"])]
                print(
                    f"  {name:9} added p50 {pct(added, 0.5) * 1000:7.2f} ms  p99 {pct(added, 0.99) * 1000:7.2f} ms"
                    f"  mean {statistics.mean(added) * 1000:7.2f} ms   (direct p50 {pct(times['direct'], 0.5) * 1000:.2f} ms)"
                )
        finally:
            for proc in procs:
                if proc.stdin is not None:
                    proc.stdin.close()
                proc.terminate()
                try:
                    proc.wait(10)
                except subprocess.TimeoutExpired:
                    proc.kill()


if __name__ == "__main__":
    main()
