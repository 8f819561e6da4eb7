"""Idle cost: capguard's own CPU and memory while it supervises a real aider idle at its prompt.

`python -m capguard --usd 5 aider --model openai/gpt-4o --openai-api-base http://127.0.0.1:9/v1 ...`
in a fresh git repo, HOME/CAPGUARD_HOME/XDG_CONFIG_HOME in bench/.work/idle_cost, stdin a pipe kept open
(aider waits at its prompt; nothing is ever typed, so no request goes to the unreachable model).
Once aider has settled (its own CPU time stops growing), capguard's process alone (psutil cpu_times
of its pid: user + system, children excluded) and its RSS are sampled every second.

    python bench/idle_cost.py --seconds 60
"""

from __future__ import annotations

import argparse
import signal
import subprocess
import time

import _common as C
import psutil

TARGET_CPU_PCT = 1.0
TARGET_RSS_MB = 60.0
AIDER_FLAGS = [
    "--model",
    "openai/gpt-4o",
    "--openai-api-base",
    "http://127.0.0.1:9/v1",
    "--openai-api-key",
    "x",
    "--no-check-update",
    "--no-show-release-notes",
    "--analytics-disable",
    "--yes-always",
    "--no-gitignore",
    "--no-fancy-input",
]


def cpu_s(proc: psutil.Process) -> float:
    t = proc.cpu_times()
    return t.user + t.system


def find_agent(cg: psutil.Process, timeout: float) -> psutil.Process | None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for child in cg.children():
            try:
                if "aider" in " ".join(child.cmdline()):
                    return child
            except psutil.Error:
                continue
        time.sleep(0.05)
    return None


def wait_settled(agent: psutil.Process, log, timeout: float, quiet_s: float = 3.0) -> float:
    """Wait until aider printed its prompt and its CPU time stayed flat (< 1% of a core) for `quiet_s`."""
    start = time.monotonic()
    last, last_t, quiet_since = cpu_s(agent), time.monotonic(), None
    while time.monotonic() - start < timeout:
        time.sleep(0.5)
        now, now_t = cpu_s(agent), time.monotonic()
        flat = (now - last) / (now_t - last_t) < 0.01
        last, last_t = now, now_t
        prompted = b"> " in log.read_bytes()[-200:] if log.exists() else False
        if flat and prompted:
            quiet_since = quiet_since or now_t
            if now_t - quiet_since >= quiet_s:
                return time.monotonic() - start
        else:
            quiet_since = None
    return time.monotonic() - start


def top_mappings(proc: psutil.Process, n: int = 12) -> list[dict]:
    """Where the RSS is: resident MB per mapped file ([heap] and anonymous memory included)."""
    try:
        maps = proc.memory_maps(grouped=True)
    except psutil.Error:
        return []
    rows = sorted(maps, key=lambda m: m.rss, reverse=True)[:n]
    return [
        {
            "path": m.path or "[anon]",
            "rss_mb": round(m.rss / 2**20, 2),
            "private_mb": round((m.private_clean + m.private_dirty) / 2**20, 2),
        }
        for m in rows
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=60.0, help="sampling time (>= 30)")
    parser.add_argument("--aider", default=C.AIDER)
    parser.add_argument("--python", default=C.CG_PYTHON)
    parser.add_argument(
        "--whatif-filter",
        action="store_true",
        help="what-if, not the shipped code: watchdog observer with an event_filter (see _instrumented.py)",
    )
    parser.add_argument("--name", default="idle_cost")
    args = parser.parse_args()

    machine = C.machine()
    base, env = C.isolated_env(args.name)
    repo = C.make_git_repo(base / "repo", env)
    fakebin = base / "bin"
    fakebin.mkdir()
    (fakebin / "aider").symlink_to(args.aider)  # `capguard aider` finds this aider first on PATH
    env["PATH"] = f"{fakebin}:{env.get('PATH', '')}"
    if args.whatif_filter:
        env["BENCH_WHATIF_FILTER"] = "1"
    entry = [str(C.BENCH / "_instrumented.py")] if args.whatif_filter else ["-m", "capguard"]
    argv = [args.python, *entry, "--usd", "5", "aider", *AIDER_FLAGS]
    out = base / "aider.out"
    print(f"idle cost, {args.seconds:g} s of samples; load average {machine['loadavg']}", flush=True)
    started = time.monotonic()
    with open(out, "wb") as sink:
        proc = subprocess.Popen(argv, cwd=repo, env=env, stdin=subprocess.PIPE, stdout=sink, stderr=subprocess.STDOUT)
    samples = []
    try:
        cg = psutil.Process(proc.pid)
        agent = find_agent(cg, 30)
        if agent is None:
            raise SystemExit(f"aider did not start; see {out}")
        settle_s = wait_settled(agent, out, 120)
        print(f"aider settled after {settle_s:.1f} s; sampling", flush=True)
        t0, c0, a0 = time.monotonic(), cpu_s(cg), cpu_s(agent)
        prev_t, prev_c = t0, c0
        while time.monotonic() - t0 < args.seconds:
            time.sleep(1.0)
            now_t, now_c = time.monotonic(), cpu_s(cg)
            mem = cg.memory_full_info()
            samples.append(
                {
                    "t": now_t - t0,
                    "cpu_pct": 100 * (now_c - prev_c) / (now_t - prev_t),
                    "rss_mb": mem.rss / 2**20,
                    "uss_mb": mem.uss / 2**20,
                    "threads": cg.num_threads(),
                }
            )
            prev_t, prev_c = now_t, now_c
        t1, c1, a1 = time.monotonic(), cpu_s(cg), cpu_s(agent)
        agent_alive = agent.is_running()
        maps = top_mappings(cg)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)  # capguard stops aider's tree and exits 143
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if proc.stdin:
            proc.stdin.close()

    analytics = sorted((base / "capguard" / "runs").glob("*/aider.analytics.jsonl"))
    lines = analytics[-1].read_text().splitlines() if analytics else []
    cpu_pct = 100 * (c1 - c0) / (t1 - t0)
    data = {
        "benchmark": "idle_cost",
        "command": C.command_line(),
        "machine": machine,
        "loadavg_after": C.loadavg(),
        "code_after": C.code_fingerprint(),
        "code_changed": C.code_changes(machine.get("code_files")),
        "settings": {"seconds": args.seconds, "aider_flags": AIDER_FLAGS, "whatif_filter": args.whatif_filter},
        "targets": {"cpu_pct": TARGET_CPU_PCT, "rss_mb": TARGET_RSS_MB},
        "duration_s": round(time.monotonic() - started, 1),
        "settle_s": round(settle_s, 1),
        "sampled_s": round(t1 - t0, 1),
        "cpu_pct": cpu_pct,
        "cpu_pct_per_second": C.summary([s["cpu_pct"] for s in samples]),
        "rss_mb": C.summary([s["rss_mb"] for s in samples]),
        "uss_mb": C.summary([s["uss_mb"] for s in samples]),
        "threads": max(s["threads"] for s in samples),
        "agent_cpu_pct": 100 * (a1 - a0) / (t1 - t0),
        "agent_alive_at_end": agent_alive,
        "capguard_rc": proc.returncode,
        "analytics_lines": len(lines),
        "analytics_events": [__import__("json").loads(x).get("event") for x in lines[:20]],
        "top_mappings": maps,
        "samples": samples,
    }
    path = C.save(args.name, data)
    print(
        f"capguard CPU: {cpu_pct:.2f}% of one core over {t1 - t0:.0f} s (target <= {TARGET_CPU_PCT:g}%); "
        f"per-second p50 {data['cpu_pct_per_second']['p50']:.2f}% max {data['cpu_pct_per_second']['max']:.2f}%"
    )
    print(
        f"capguard RSS: max {data['rss_mb']['max']:.1f} MB, p50 {data['rss_mb']['p50']:.1f} MB (target <= {TARGET_RSS_MB:g} MB); "
        f"USS max {data['uss_mb']['max']:.1f} MB; {data['threads']} threads"
    )
    print(
        f"aider itself: {data['agent_cpu_pct']:.2f}% CPU; analytics log lines: {len(lines)} {data['analytics_events']}"
    )
    print(
        "largest resident mappings (MB):",
        ", ".join(f"{m['path'].rsplit('/', 1)[-1]} {m['rss_mb']:.1f}" for m in maps[:8]),
    )
    print(f"results: {path}")
    import render_results

    render_results.main()


if __name__ == "__main__":
    main()
