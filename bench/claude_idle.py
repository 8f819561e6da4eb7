"""Idle cost with Claude Code: capguard's own CPU and memory while an interactive Claude Code session sits idle.

`python -m capguard --usd 5 claude --dangerously-skip-permissions` on a pty (capguard's controlling terminal),
HOME / CLAUDE_CONFIG_DIR / CAPGUARD_HOME in a scratch folder in /tmp seeded so Claude shows no dialog,
ANTHROPIC_BASE_URL the fake Anthropic server (its own process; an idle session sends it nothing). Once
Claude's status line shows capguard's `$0.00` and Claude's own CPU time has stayed flat for a few seconds,
capguard's process alone (psutil `cpu_times()` of its pid, user + system, children excluded; RSS and USS
from `memory_full_info()`) is sampled once a second. The pty is drained all along (Claude redraws).
At the end capguard gets SIGTERM and stops Claude.

    python bench/claude_idle.py --seconds 60
    python bench/claude_idle.py --seconds 60 --whatif-filter --name claude_idle_whatif
"""

from __future__ import annotations

import argparse
import os
import signal
import time
from pathlib import Path

import _common as C
import claude_harness as H
import psutil

TARGET_CPU_PCT = 1.0
TARGET_RSS_MB = 60.0


def wait_settled(proc: psutil.Process, term: H.Terminal, timeout: float, quiet_s: float = 3.0) -> float:
    start = time.monotonic()
    last, last_t, quiet_since = H.cpu_s(proc), time.monotonic(), None
    while time.monotonic() - start < timeout:
        term.pump(0.5)
        now, now_t = H.cpu_s(proc), time.monotonic()
        flat = (now - last) / (now_t - last_t) < 0.02
        last, last_t = now, now_t
        if flat:
            quiet_since = quiet_since or now_t
            if now_t - quiet_since >= quiet_s:
                break
        else:
            quiet_since = None
    return time.monotonic() - start


def sample(cg: psutil.Process, claude: psutil.Process, term: H.Terminal, run_dir: Path, seconds: float) -> dict:
    """capguard's own CPU / memory once a second for `seconds`, the pty drained meanwhile."""
    status_file = run_dir / "claude.statusline.jsonl"

    def status_lines() -> int:
        return len(status_file.read_bytes().splitlines()) if status_file.exists() else 0

    s0 = status_lines()
    t0, c0, a0, ctx0 = time.monotonic(), H.cpu_s(cg), H.cpu_s(claude), cg.num_ctx_switches()
    prev_t, prev_c = t0, c0
    samples = []
    while time.monotonic() - t0 < seconds:
        term.pump(1.0)
        now_t, now_c = time.monotonic(), H.cpu_s(cg)
        mem = cg.memory_full_info()
        samples.append(
            {
                "t": round(now_t - t0, 3),
                "cpu_pct": 100 * (now_c - prev_c) / (now_t - prev_t),
                "rss_mb": mem.rss / 2**20,
                "uss_mb": mem.uss / 2**20,
                "threads": cg.num_threads(),
            }
        )
        prev_t, prev_c = now_t, now_c
    t1, c1, a1, ctx1 = time.monotonic(), H.cpu_s(cg), H.cpu_s(claude), cg.num_ctx_switches()
    window = t1 - t0
    rss = [x["rss_mb"] for x in samples]
    return {
        "sampled_s": round(window, 1),
        "samples": samples,
        "cpu_pct": 100 * (c1 - c0) / window,
        "cpu_pct_per_second": C.summary([x["cpu_pct"] for x in samples]),
        "rss_mb": C.summary(rss),
        "rss_first_last": [rss[0], rss[-1]],
        "uss_mb": C.summary([x["uss_mb"] for x in samples]),
        "threads": samples[-1]["threads"],
        "claude_cpu_pct": 100 * (a1 - a0) / window,
        "ctx_switches_per_s": {
            "voluntary": (ctx1.voluntary - ctx0.voluntary) / window,
            "involuntary": (ctx1.involuntary - ctx0.involuntary) / window,
        },
        "statusline_lines_per_min": 60 * (status_lines() - s0) / window,
    }


def inotify_watches(pid: int) -> int:
    count = 0
    for fd in os.listdir(f"/proc/{pid}/fdinfo"):
        try:
            count += Path(f"/proc/{pid}/fdinfo/{fd}").read_text().count("inotify wd:")
        except OSError:
            pass
    return count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=60.0, help="sampling time of each phase (>= 30)")
    parser.add_argument("--python", default=C.CG_PYTHON)
    parser.add_argument(
        "--whatif-filter",
        action="store_true",
        help="what-if, not the shipped code: watchdog observer with an event_filter (bench/_instrumented.py)",
    )
    parser.add_argument("--name", default="claude_idle")
    args = parser.parse_args()

    data = H.started_record(args.name)
    base = H.scratch(args.name)
    repo = H.git_repo(base / "repo")
    phases: dict[str, dict] = {}
    with H.FakeServer("fake_anthropic", [], log=base / "fake_anthropic.jsonl") as server:
        env = H.claude_env(base, repo, server.base_url)
        if args.whatif_filter:
            env["BENCH_WHATIF_FILTER"] = "1"
        entry = [str(C.BENCH / "_instrumented.py")] if args.whatif_filter else ["-m", "capguard"]
        argv = [args.python, *entry, "--usd", "5", "claude", "--dangerously-skip-permissions"]
        print(
            f"{args.name}: {args.seconds:g} s of samples per phase; load average {data['machine']['loadavg']}",
            flush=True,
        )
        term = H.Terminal(argv, repo, env)
        try:
            cg = psutil.Process(term.proc.pid)
            claude = H.find_child(cg.pid, ("claude", "claude.exe"), 60)
            if claude is None or not term.expect(READY, 90):
                raise SystemExit(f"Claude did not come up; screen:\n{term.text()[-1500:]}")
            ready_s = time.time() - data["started"]
            settle_s = wait_settled(claude, term, 60)
            print(f"Claude ready after {ready_s:.1f} s, settled {settle_s:.1f} s later; sampling", flush=True)
            run_dir = next((base / "capguard" / "runs").glob("*/"))
            phases["fresh"] = sample(cg, claude, term, run_dir, args.seconds)
            # then one exchange (a plain text reply, no tool) and idle again at the prompt: the transcript
            # now exists and is followed, as in a session someone stepped away from
            term.type(b"Say hello")
            term.pump(0.5)
            term.type(b"\r")
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and server_main(server) < 1:
                term.pump(0.2)
            term.pump(2.0)
            settle2_s = wait_settled(claude, term, 60)
            print(f"one reply done, settled after {settle2_s:.1f} s; sampling again", flush=True)
            phases["after_one_reply"] = sample(cg, claude, term, run_dir, args.seconds)
            watches = inotify_watches(cg.pid)
            from idle_cost import (
                top_mappings,  # the aider idle benchmark's helper: where the RSS is
            )

            mappings = top_mappings(cg)
        finally:
            if term.proc.poll() is None:
                term.proc.send_signal(signal.SIGTERM)
            rc = term.wait(30)
            term.close()
        leftovers = [(p.pid, p.name()) for p in H.survivors(env[H.TAG_VAR], wait=3)]
        H.kill_tagged(env[H.TAG_VAR])
        requests = server_main(server)

    data.update(
        {
            "argv": argv,
            "whatif_filter": args.whatif_filter,
            "ready_s": round(ready_s, 1),
            "settle_s": round(settle_s, 1),
            "settle2_s": round(settle2_s, 1),
            "phases": phases,
            "inotify_watches": watches,
            "top_mappings": mappings,
            "exit_code": rc,
            "leftovers": leftovers,
            "fake_main_requests": requests,
            "target_cpu_pct": TARGET_CPU_PCT,
            "target_rss_mb": TARGET_RSS_MB,
        }
    )
    data = H.finish_record(data)
    path = C.save(args.name, data)
    for name, p in phases.items():
        print(
            f"{name}: capguard CPU {p['cpu_pct']:.2f}% of one core over {p['sampled_s']} s (per-second max "
            f"{p['cpu_pct_per_second']['max']:.1f}%), RSS max {p['rss_mb']['max']:.1f} MB, USS max "
            f"{p['uss_mb']['max']:.1f} MB; Claude's own CPU {p['claude_cpu_pct']:.2f}%"
        )
    print(f"exit {rc}; saved {path}")
    import claude_render

    claude_render.render()


def server_main(server: H.FakeServer) -> int:
    return sum(1 for r in server.records() if r.get("kind") == "main")


READY = b"capguard $0.00"  # capguard's part of Claude's status line

if __name__ == "__main__":
    main()
