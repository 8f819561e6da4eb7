"""Start-up overhead: `capguard aider --version` against `aider --version`, wall time, runs alternating.

Both resolve the same aider (0.86.2) from PATH, in a fresh git repo with HOME, CAPGUARD_HOME and
XDG_CONFIG_HOME in bench/.work/startup_overhead. Two bytecode modes:

  cached  PYTHONPYCACHEPREFIX in bench/.work and PYTHONDONTWRITEBYTECODE unset, one warm-up run first:
          every module loads from a .pyc, as after `pip install` (the headline figure);
  as-is   the environment as it is; here PYTHONDONTWRITEBYTECODE=1 and the editable capguard has no
          __pycache__, so capguard's own modules are compiled from source on every start.

A third command in the same alternation, `aider --version --analytics-log F`, shows how much of the
difference is aider's own work for the flag capguard adds. Also timed: `capguard --version` (argparse only) and `capguard aider` with an agent that exits at once
(`[agents.aider] command = "/bin/true"`): capguard's fixed cost without aider's. Then a profile of
where that cost goes: `python -X importtime` and bench/_instrumented.py's phase timer.

    python bench/startup_overhead.py --runs 20
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import tempfile
import time
from pathlib import Path

import _common as C

TARGET_OVERHEAD_MS = 150.0


def timed(argv: list[str], env: dict, cwd: Path) -> tuple[float, float, str]:
    """Wall ms, CPU ms (user + system of the process and every descendant it waited for) and last output line."""
    with tempfile.TemporaryFile() as out:
        start = time.perf_counter_ns()
        proc = subprocess.Popen(argv, env=env, cwd=cwd, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = (time.perf_counter_ns() - start) / 1e6
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        text = out.read().decode(errors="replace").strip()
    cpu = (usage.ru_utime + usage.ru_stime) * 1e3
    return wall, cpu, text.splitlines()[-1] if text else f"rc={proc.returncode}"


def importtime(argv: list[str], env: dict, cwd: Path, runs: int = 3) -> dict:
    """Median over `runs` of cumulative import time (ms) per top-level-ish module, from -X importtime."""
    per_module: dict[str, list[float]] = {}
    totals = []
    for _ in range(runs):
        done = subprocess.run(
            [argv[0], "-X", "importtime", *argv[1:]], env=env, cwd=cwd, capture_output=True, text=True
        )
        total = 0.0
        for text in done.stderr.splitlines():
            if not text.startswith("import time:") or "cumulative" in text:
                continue
            _head, cum_us, raw_name = text.split("|", 2)
            raw_name = raw_name[1:]  # one space after the bar, then two per nesting level
            name = raw_name.strip()
            if len(raw_name) - len(raw_name.lstrip()) == 0:
                total += int(cum_us) / 1e3
            per_module.setdefault(name, []).append(int(cum_us) / 1e3)
        totals.append(total)
    median = {name: C.percentile(values, 50) for name, values in per_module.items() if len(values) == runs}
    top = sorted(median.items(), key=lambda kv: kv[1], reverse=True)
    return {"total_ms": C.percentile(totals, 50), "top_cumulative_ms": [[n, round(v, 1)] for n, v in top[:25]]}


def phases(python: str, env: dict, cwd: Path, base: Path, runs: int = 5) -> dict:
    """Median time of each step of a `capguard aider` run whose agent exits at once."""
    collected: dict[str, list[float]] = {}
    for i in range(runs):
        out = base / f"phases{i}.json"
        subprocess.run(
            [python, str(C.BENCH / "_instrumented.py"), "aider", "--version"],
            env=dict(env, BENCH_PHASES=str(out)),
            cwd=cwd,
            capture_output=True,
        )
        for name, value in json.loads(out.read_text()).items():
            collected.setdefault(name, []).append(value)
    return {name: round(C.percentile(values, 50), 1) for name, values in collected.items()}


def measure(mode: str, args, base: Path, env: dict, repo: Path) -> dict:
    env = dict(env)
    if mode == "cached":
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        env["PYTHONPYCACHEPREFIX"] = str(base / f"pycache-{mode}")
    capguard = str(Path(args.python).parent / "capguard")
    true_config = base / "true-agent.toml"
    true_config.write_text('[agents.aider]\ncommand = "/bin/true"\n')
    commands = {
        "aider --version": ["aider", "--version"],
        "capguard aider --version": [capguard, "aider", "--version"],
        # what capguard makes aider do: the analytics log it reads (aider's own cost, inside the overhead)
        "aider --version --analytics-log F": ["aider", "--version", "--analytics-log", str(base / "analytics.jsonl")],
    }
    extras = {
        "capguard --version": ([capguard, "--version"], env),
        "capguard aider (agent = /bin/true)": ([capguard, "aider"], dict(env, CAPGUARD_CONFIG=str(true_config))),
        "python -c pass (capguard's venv)": ([args.python, "-c", "pass"], env),
    }
    for argv in commands.values():  # warm-up: page cache, and the .pyc files in cached mode
        for _ in range(2):
            timed(argv, env, repo)
    times: dict[str, list[float]] = {name: [] for name in commands}
    cpu: dict[str, list[float]] = {name: [] for name in commands}
    outputs = {}
    for i in range(args.runs):
        order = list(commands.items()) if i % 2 == 0 else list(commands.items())[::-1]  # alternate the order
        for name, argv in order:
            elapsed, cpu_ms, last = timed(argv, env, repo)
            times[name].append(elapsed)
            cpu[name].append(cpu_ms)
            outputs[name] = last
    base_t, cg_t = times["aider --version"], times["capguard aider --version"]
    paired = [c - a for a, c in zip(base_t, cg_t)]
    extra_times, extra_cpu = {}, {}
    for name, (argv, extra_env) in extras.items():
        timed(argv, extra_env, repo)
        runs = [timed(argv, extra_env, repo) for _ in range(max(10, args.runs // 2))]
        extra_times[name] = C.summary([r[0] for r in runs])
        extra_cpu[name] = C.summary([r[1] for r in runs])
    result = {
        "mode": mode,
        "pythondontwritebytecode": env.get("PYTHONDONTWRITEBYTECODE"),
        "pycache_prefix": env.get("PYTHONPYCACHEPREFIX"),
        "aider": C.summary(base_t),
        "capguard_aider": C.summary(cg_t),
        "overhead_p50_ms": C.percentile(cg_t, 50) - C.percentile(base_t, 50),
        "overhead_p90_ms": C.percentile(cg_t, 90) - C.percentile(base_t, 90),
        "paired_diff": C.summary(paired),
        "aider_analytics_log": C.summary(times["aider --version --analytics-log F"]),
        "analytics_log_paired_diff": C.summary(
            [b - a for a, b in zip(base_t, times["aider --version --analytics-log F"])]
        ),
        "cpu_aider": C.summary(cpu["aider --version"]),
        "cpu_capguard_aider": C.summary(cpu["capguard aider --version"]),
        "cpu_overhead_p50_ms": C.percentile(cpu["capguard aider --version"], 50)
        - C.percentile(cpu["aider --version"], 50),
        "extras": extra_times,
        "extras_cpu": extra_cpu,
        "outputs": outputs,
        "raw": times,
        "raw_cpu": cpu,
    }
    if mode == "cached" or args.profile_all:
        true_env = dict(env, CAPGUARD_CONFIG=str(true_config))
        result["importtime"] = importtime([args.python, "-m", "capguard", "aider", "--version"], true_env, repo)
        result["phases_ms"] = phases(args.python, true_env, repo, base)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=40, help="runs of each command, alternating (>= 20)")
    parser.add_argument("--modes", default="cached,as-is")
    parser.add_argument("--aider", default=C.AIDER)
    parser.add_argument("--python", default=C.CG_PYTHON)
    parser.add_argument("--profile-all", action="store_true", help="profile every mode, not only `cached`")
    parser.add_argument("--name", default="startup_overhead")
    args = parser.parse_args()

    machine = C.machine()
    base, env = C.isolated_env(args.name)
    repo = C.make_git_repo(base / "repo", env)
    (base / "bin").mkdir()
    (base / "bin" / "aider").symlink_to(args.aider)
    env["PATH"] = f"{base / 'bin'}:{env.get('PATH', '')}"
    print(f"start-up overhead, {args.runs} runs each; load average {machine['loadavg']}", flush=True)
    started = time.monotonic()
    modes = {}
    for mode in args.modes.split(","):
        modes[mode] = measure(mode, args, base, env, repo)
        m = modes[mode]
        print(f"[{mode}] aider --version          p50 {m['aider']['p50']:.0f} ms  p90 {m['aider']['p90']:.0f} ms")
        print(
            f"[{mode}] capguard aider --version p50 {m['capguard_aider']['p50']:.0f} ms  p90 {m['capguard_aider']['p90']:.0f} ms"
        )
        print(
            f"[{mode}] overhead: p50 {m['overhead_p50_ms']:+.0f} ms, p90 {m['overhead_p90_ms']:+.0f} ms, paired median "
            f"{m['paired_diff']['p50']:+.0f} ms (target <= {TARGET_OVERHEAD_MS:g}); CPU time p50 aider "
            f"{m['cpu_aider']['p50']:.0f} ms, capguard aider {m['cpu_capguard_aider']['p50']:.0f} ms: {m['cpu_overhead_p50_ms']:+.0f} ms"
        )
        print(
            f"[{mode}] aider --version --analytics-log F p50 {m['aider_analytics_log']['p50']:.0f} ms: paired "
            f"{m['analytics_log_paired_diff']['p50']:+.0f} ms against plain aider (aider's part of the overhead)"
        )
        for name, stat in m["extras"].items():
            print(
                f"[{mode}] {name:38s} p50 {stat['p50']:.0f} ms  p90 {stat['p90']:.0f} ms  (CPU p50 {m['extras_cpu'][name]['p50']:.0f} ms)"
            )
        if "importtime" in m:
            print(
                f"[{mode}] -X importtime total {m['importtime']['total_ms']:.0f} ms; top: "
                + ", ".join(f"{n} {v:.0f}" for n, v in m["importtime"]["top_cumulative_ms"][:8])
            )
            print(f"[{mode}] phases (ms): " + ", ".join(f"{k} {v:.0f}" for k, v in m["phases_ms"].items()))
    data = {
        "benchmark": "startup_overhead",
        "command": C.command_line(),
        "machine": machine,
        "loadavg_after": C.loadavg(),
        "code_after": C.code_fingerprint(),
        "code_changed": C.code_changes(machine.get("code_files")),
        "duration_s": round(time.monotonic() - started, 1),
        "target_overhead_ms": TARGET_OVERHEAD_MS,
        "runs": args.runs,
        "modes": modes,
    }
    path = C.save(args.name, data)
    print(f"results: {path}")
    import render_results

    render_results.main()


if __name__ == "__main__":
    main()
