"""Overshoot per stop with the real aider: how far past a USD cap a runaway gets before capguard stops it.

Each run is a real `python -m capguard --report-json R --usd CAP aider --model openai/gpt-4o --no-stream
--no-fancy-input ... hello.py` in a scratch git repo in /tmp, stdin ten identical requests (aider retries
each failed edit three times: a 40-reply runaway), against the fake OpenAI server's runaway script
(`capguard.demo.fake_openai.runaway_script`: every reply is an edit that never applies, 50,000 prompt +
2,000 completion tokens, $0.145 as aider prices gpt-4o with --no-stream), each reply taking a delay drawn
per run from 0.2-0.5 s. The cap is drawn per run from $0.30-$1.20 (the 3rd to 9th reply crosses it).
Per run: capguard's figures when it decided to stop (`at_stop`) and at the end (`cost_usd`), the cap, the
replies aider recorded after the decision, and what the server saw: requests that arrived after capguard's
first SIGINT (from `capguard.log`) and replies it finished sending before aider exited (a pidfd on aider).

    python bench/aider_overshoot.py --runs 25
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import subprocess
import sys
import time
from pathlib import Path

import _common as C
import claude_harness as H

sys.path.insert(0, str(C.ROOT))
from capguard.cli.demo_cmd import seed_price_cache
from capguard.demo.fake_openai import FakeOpenAI, runaway_script

REPLY_USD = 0.145
RUNAWAY_INPUT = "Please fix the greeting in hello.py\n" * 10
FLAGS = [
    "--model",
    "openai/gpt-4o",
    "--openai-api-key",
    "sk-fake",
    "--no-check-update",
    "--no-show-release-notes",
    "--analytics-disable",
    "--yes-always",
    "--no-gitignore",
    "--no-auto-commits",
    "--no-pretty",
    "--no-show-model-warnings",
    "--no-stream",
    "--no-fancy-input",
]


def one(i: int, cap: float, delay: float, args) -> dict:
    base = H.scratch(f"aider_overshoot/{i:03d}")
    repo = H.git_repo(base / "repo")
    env = H.base_env(base)
    seed_price_cache(Path(env["HOME"]), args.aider)
    env.update(LITELLM_LOCAL_MODEL_COST_MAP="True", PATH=f"{Path(args.aider).parent}:{env.get('PATH', '')}")
    report_path = base / "report.json"
    rec: dict = {"run": i, "cap": round(cap, 4), "delay_s": round(delay, 3)}
    with FakeOpenAI(runaway_script(delay_s=delay)) as server:
        argv = [
            args.python,
            "-m",
            "capguard",
            "--report-json",
            str(report_path),
            "--usd",
            f"{cap:.4f}",
            "aider",
            "--openai-api-base",
            server.base_url,
            *FLAGS,
            "hello.py",
        ]
        runs = base / "capguard" / "runs"
        runs.mkdir(parents=True, exist_ok=True)
        observer = H.Observer([runs])  # capguard.log lines, and aider's exit (pidfd)
        observer.start()
        proc = subprocess.Popen(
            argv, cwd=repo, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        aider = H.find_child(proc.pid, ("aider",), 30)
        if aider is not None:
            observer.watch_pid(aider.pid)
        try:
            _out, err = proc.communicate(RUNAWAY_INPUT, timeout=args.timeout)
            rec["rc"] = proc.returncode
        except subprocess.TimeoutExpired:
            proc.kill()
            _out, err = proc.communicate()
            rec["rc"] = None
        time.sleep(0.3)
        observer.stop()
        requests = [r for r in server.requests if r["kind"] == "main"]
        others = [r["kind"] for r in server.requests if r["kind"] != "main"]
    rec["survivors"] = [(p.pid, p.name()) for p in H.survivors(env[H.TAG_VAR], wait=3)]
    H.kill_tagged(env[H.TAG_VAR])
    report = json.loads(report_path.read_text()) if report_path.exists() else None
    log_lines = [x for path, lines in observer.lines.items() if path.name == "capguard.log" for x in lines]
    sigint = decision = None
    for _t, raw in log_lines:
        parsed = H.log_time_ns(raw)
        if parsed is None:
            continue
        t, text = parsed
        if text.startswith("stopping aider:") and decision is None:
            decision = t / 1e9
        if text.startswith("sending SIGINT to aider") and sigint is None:
            sigint = t / 1e9
    exit_t = observer.exits.get(aider.pid) / 1e9 if aider is not None and aider.pid in observer.exits else None
    rec["stderr_tail"] = err[-300:]
    if report:
        at = report.get("at_stop") or {}
        rec.update(
            {
                "stop_reason": report["stop_reason"],
                "exit_code": report["exit_code"],
                "usd_at_stop": at.get("cost_usd"),
                "usd_final": report["cost_usd"],
                "steps_at_stop": at.get("steps"),
                "steps_final": report["steps"],
                "requests_at_stop": at.get("requests"),
                "requests_final": report.get("requests_started"),
                "final_minus_cap": report["cost_usd"] - cap,
                "at_stop_minus_cap": (at.get("cost_usd") or 0) - cap,
                "replies_after_stop": report["steps"] - (at.get("steps") or 0),
                "stop_steps": report.get("stop_steps"),
                "largest_reply_usd": report.get("largest_reply_usd"),
            }
        )
    rec["server"] = {
        "main_requests": len(requests),
        "side_requests": others,
        "arrived_after_sigint": sum(1 for r in requests if sigint and r["time"] > sigint),
        "in_flight_at_sigint": sum(1 for r in requests if sigint and r["time"] <= sigint < r["time"] + r["delay_s"]),
        # a non-streamed reply is sent `delay` after the request arrives; one that was due before aider
        # exited was delivered (and, from a real API, billed)
        "delivered": sum(1 for r in requests if exit_t and r["time"] + r["delay_s"] <= exit_t),
    }
    if rec["server"]["delivered"] and report:
        rec["delivered_usd"] = rec["server"]["delivered"] * REPLY_USD
        rec["unseen_usd"] = rec["delivered_usd"] - report["cost_usd"]
    if sigint and decision:
        rec["decision_to_sigint_ms"] = (sigint - decision) * 1e3
    if sigint and exit_t:
        rec["sigint_to_exit_ms"] = (exit_t - sigint - 0.0005) * 1e3
    rec["ok"] = bool(report and report["stop_reason"] == "usd" and rec.get("rc") == 122)
    if rec["ok"] and not args.keep:
        shutil.rmtree(base, ignore_errors=True)
    return rec


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=25)
    parser.add_argument("--delay", default="0.2,0.5", help="range of the per-reply delay, seconds")
    parser.add_argument("--cap", default="0.30,1.20", help="range of the USD cap")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--timeout", type=float, default=180)
    parser.add_argument("--aider", default=C.AIDER)
    parser.add_argument("--python", default=C.CG_PYTHON)
    parser.add_argument("--keep", action="store_true")
    parser.add_argument("--name", default="aider_overshoot")
    args = parser.parse_args()
    sys.setswitchinterval(0.0005)

    data = H.started_record(args.name)
    d_lo, d_hi = (float(x) for x in args.delay.split(","))
    c_lo, c_hi = (float(x) for x in args.cap.split(","))
    rng = random.Random(args.seed)
    print(
        f"{args.name}: {args.runs} runs, delay {d_lo}-{d_hi} s, cap ${c_lo}-${c_hi}; load {data['machine']['loadavg']}",
        flush=True,
    )
    runs = []
    for i in range(args.runs):
        cap, delay = rng.uniform(c_lo, c_hi), rng.uniform(d_lo, d_hi)
        r = one(i, cap, delay, args)
        runs.append(r)
        H.progress(
            f"{i + 1}/{args.runs}: cap ${r['cap']:.2f}, delay {r['delay_s']:.2f} s, rc {r.get('rc')}, "
            f"at stop ${r.get('usd_at_stop')}, final ${r.get('usd_final')}, replies after stop "
            f"{r.get('replies_after_stop')}, server: {r['server']}"
        )
    good = [r for r in runs if r["ok"]]

    def col(name):
        return [r[name] for r in good if r.get(name) is not None]

    data.update(
        {
            "aider": args.aider,
            "aider_version": H._version([args.aider, "--version"]),
            "reply_usd": REPLY_USD,
            "delay_range": [d_lo, d_hi],
            "cap_range": [c_lo, c_hi],
            "seed": args.seed,
            "flags": FLAGS,
            "runs": runs,
            "summary": {
                "runs": len(runs),
                "ok": len(good),
                "final_minus_cap": C.summary(col("final_minus_cap")),
                "at_stop_minus_cap": C.summary(col("at_stop_minus_cap")),
                "final_minus_at_stop": C.summary([r["usd_final"] - r["usd_at_stop"] for r in good]),
                "final_over_cap_pct": C.summary([100 * r["final_minus_cap"] / r["cap"] for r in good]),
                "replies_after_stop": C.summary(col("replies_after_stop")),
                "server_arrived_after_sigint": C.summary([r["server"]["arrived_after_sigint"] for r in good]),
                "server_in_flight_at_sigint": C.summary([r["server"]["in_flight_at_sigint"] for r in good]),
                "unseen_usd": C.summary(col("unseen_usd")),
                "decision_to_sigint_ms": C.summary(col("decision_to_sigint_ms")),
                "sigint_to_exit_ms": C.summary(col("sigint_to_exit_ms")),
                "escalated": sum(1 for r in good if any("SIGTERM to aider" in s for s in r.get("stop_steps") or [])),
                "survivors": sum(len(r["survivors"]) for r in runs),
                "exit_codes": {str(k): sum(1 for r in runs if r.get("rc") == k) for k in {r.get("rc") for r in runs}},
            },
        }
    )
    data = H.finish_record(data)
    path = C.save(args.name, data)
    s = data["summary"]
    print(f"saved {path}\nfinal - cap: {s['final_minus_cap']}\nreplies after stop: {s['replies_after_stop']}")
    import claude_render

    claude_render.render()


if __name__ == "__main__":
    main()
