"""Claude Code runaway loops under capguard: enforcement latency, overshoot and accuracy, on the same runs.

Each trial is a real `python -m capguard --report-json R CAP claude ...` around the real Claude Code 2.1.330,
pointed at the fake Anthropic server (`python -m tests.fakes.fake_anthropic --delay D`, its own process),
whose `LOOP` directive answers every request with a Bash tool call (`echo loop`): a runaway that never ends
by itself. Modes:

- `interactive`: capguard on a pty (its controlling terminal), `claude --dangerously-skip-permissions`;
  `LOOP` is typed at the prompt once Claude's status line shows capguard's `$0.00`. No native cap exists
  here: only capguard can stop it. Cap: `--usd`.
- `print-usd`: `claude -p LOOP --output-format json`, `--usd` cap: capguard also passes the cap to Claude as
  `--max-budget-usd`, so Claude may stop itself first; each trial records which one did.
- `print-tokens`: the same with a `--tokens` cap (Claude has no native token cap: capguard alone stops it).

Caps are drawn uniformly per trial (seeded), so the crossing reply and the overshoot vary. Timestamps:

- the crossing line: `claude_harness.Observer` (raw inotify on the transcript folder and capguard's run
  folder, CLOCK_REALTIME taken as poll(2) returns) sees each complete transcript line; the first assistant
  line whose reply takes the running total (one count per request id) to the cap is the crossing line.
  The same is done for the two other sources capguard reads: Claude's statusLine input
  (`claude.statusline.jsonl`, Claude's own running total) and the OpenTelemetry api_request events
  (`claude.otel.jsonl`), so the first source to cross is known too.
- the stop signal: capguard's own log, `<run dir>/capguard.log`, line `sending SIGINT to claude`, written right
  after `os.kill` returns, stamped by logging with millisecond resolution (truncated: the midpoint, +0.5 ms,
  is used). Signal delivery to a runnable process is immediate; Claude's exit is also timed exactly, with a
  pidfd on its process.
- the harness's own lag (a write -> the Observer's timestamp) makes every latency look shorter by that
  much; it is measured on the same runs as (Observer's sight of the `sending SIGINT` line) - (its log stamp).

    python bench/claude_runaway.py --mode interactive --trials 30
    python bench/claude_runaway.py --mode print-usd --trials 25
    python bench/claude_runaway.py --mode print-tokens --trials 25
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import subprocess
import sys
import time

import _common as C
import claude_harness as H

sys.path.insert(0, str(C.ROOT))
from capguard.agents.claude.logs import transcript_dir

MODES = {
    "interactive": {"cap": "usd", "range": (0.025, 0.055)},
    "print-usd": {"cap": "usd", "range": (0.025, 0.055)},
    "print-tokens": {"cap": "tokens", "range": (12_000, 25_000)},
}
READY = b"capguard $0.00"  # capguard's part of Claude's status line: the session is up and idle


def tokens_of(usage: dict) -> int:
    return sum(
        int(usage.get(k) or 0)
        for k in ("input_tokens", "output_tokens", "cache_read_input_tokens", "cache_creation_input_tokens")
    )


def transcript_crossing(lines: list[tuple[int, bytes]], kind: str, cap: float) -> dict:
    """Per reply (request id) in order of appearance; the first line that takes the total to the cap."""
    seen: dict[str, dict] = {}
    total = 0.0
    crossing = None
    cost_states = []
    for t, raw in lines:
        try:
            entry = json.loads(raw)
        except ValueError:
            continue
        if entry.get("type") == "cost-state":
            cost_states.append((t, entry.get("totalCostUSD")))
            continue
        if entry.get("type") != "assistant" or entry.get("isApiErrorMessage"):
            continue
        message = entry.get("message") or {}
        if message.get("model") == "<synthetic>":
            continue
        key = entry.get("requestId") or message.get("id")
        if key in seen:
            continue
        usage = message.get("usage") or {}
        value = H.reply_usd(usage) if kind == "usd" else tokens_of(usage)
        total += value
        seen[key] = {"t": t, "value": value, "index": len(seen) + 1}
        if crossing is None and total >= cap - 1e-12:
            crossing = {"t": t, "reply": len(seen), "request_id": key, "total": total}
    return {
        "replies": len(seen),
        "total": total,
        "crossing": crossing,
        "seen": [(v["t"], k) for k, v in seen.items()],
        "request_ids": list(seen),
        "reply_times": [v["t"] for v in seen.values()],
        "last_cost_state": cost_states[-1][1] if cost_states else None,
        "cost_states": len(cost_states),
    }


def statusline_crossing(lines, kind: str, cap: float) -> dict | None:
    if kind != "usd":
        return None  # capguard takes only Claude's cost from the status line
    for t, raw in lines:
        try:
            cost = (json.loads(raw).get("cost") or {}).get("total_cost_usd")
        except (ValueError, AttributeError):
            continue
        if isinstance(cost, (int, float)) and cost >= cap - 1e-12:
            return {"t": t, "total": cost}
    return None


def otel_crossing(lines, kind: str, cap: float) -> dict | None:
    seen, total = set(), 0.0
    for t, raw in lines:
        try:
            attrs = json.loads(raw)
        except ValueError:
            continue
        key = attrs.get("request_id")
        if key in seen:
            continue
        seen.add(key)
        if kind == "usd":
            total += float(attrs.get("cost_usd") or 0)
        else:
            total += sum(
                int(attrs.get(k) or 0)
                for k in ("input_tokens", "output_tokens", "cache_read_tokens", "cache_creation_tokens")
            )
        if total >= cap - 1e-12:
            return {"t": t, "total": total, "events": len(seen)}
    return None


def log_events(lines) -> dict:
    out: dict = {}
    for t_obs, raw in lines:
        parsed = H.log_time_ns(raw)
        if parsed is None:
            continue
        t_log, text = parsed
        if text.startswith("stopping claude:") and "decision" not in out:
            out["decision"] = t_log
        elif text.startswith("sending SIGINT to claude") and "sigint" not in out:
            out["sigint"], out["sigint_obs"] = t_log, t_obs
        elif text.startswith("sending SIGTERM to claude") and "sigterm" not in out:
            out["sigterm"] = t_log
        elif "stopped itself" in text:
            out["self_stopped_line"] = text
    return out


def trial(i: int, mode: str, cap: float, server: H.FakeServer, args) -> dict:
    kind = MODES[mode]["cap"]
    base = H.scratch(f"claude_runaway/{mode}/{i:03d}")
    repo = H.git_repo(base / "repo")
    env = H.claude_env(base, repo, server.base_url)
    tdir = transcript_dir(env["CLAUDE_CONFIG_DIR"], repo)
    tdir.mkdir(parents=True, exist_ok=True)  # capguard does the same before spawning Claude
    runs = base / "capguard" / "runs"
    runs.mkdir(parents=True, exist_ok=True)
    report_path = base / "report.json"
    cap_text = f"{cap:.4f}" if kind == "usd" else str(int(cap))
    argv = [
        args.python,
        "-m",
        "capguard",
        "--report-json",
        str(report_path),
        f"--{kind}",
        cap_text,
        "claude",
        "--dangerously-skip-permissions",
    ]
    observer = H.Observer([tdir, runs])
    observer.start()
    rec: dict = {"trial": i, "mode": mode, "cap": round(cap, 6) if kind == "usd" else int(cap), "cap_kind": kind}
    t_launch = time.time_ns()
    stdout = stderr = ""
    term = None
    try:
        if mode == "interactive":
            term = H.Terminal(argv, repo, env)
            proc = term.proc
        else:
            argv += ["-p", "LOOP", "--output-format", "json"]
            proc = subprocess.Popen(
                argv,
                cwd=repo,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
        claude = H.find_child(proc.pid, ("claude", "claude.exe"), 60)
        if claude is not None:
            observer.watch_pid(claude.pid)
            rec["claude_pid"] = claude.pid
        if term is not None:
            rec["ready"] = term.expect(READY, args.ready_timeout)
            rec["ready_s"] = round((time.time_ns() - t_launch) / 1e9, 2)
            if rec["ready"]:
                term.type(b"LOOP")
                term.pump(0.5)
                term.type(b"\r")
                rec["rc"] = term.wait(args.timeout)
            else:
                rec["screen"] = term.text()[-1500:]
                rec["rc"] = None
            if rec["rc"] is None:
                term.close()
        else:
            try:
                stdout, stderr = proc.communicate(timeout=args.timeout)
                rec["rc"] = proc.returncode
            except subprocess.TimeoutExpired:
                proc.kill()
                stdout, stderr = proc.communicate()
                rec["rc"] = None
        time.sleep(0.3)  # the Observer's last reads
    finally:
        observer.stop()
        if term is not None:
            if rec.get("rc") is not None:
                rec["screen_tail"] = term.text()[-400:]
            term.close()
    rec["observer_realtime"] = observer.realtime
    rec["survivors"] = [(p.pid, p.name()) for p in H.survivors(env[H.TAG_VAR], wait=3)]
    H.kill_tagged(env[H.TAG_VAR])
    rec["stderr_tail"] = stderr[-600:] if stderr else None

    report = json.loads(report_path.read_text()) if report_path.exists() else None
    main_lines = [
        x for path, lines in observer.lines.items() if path.parent == tdir and path.suffix == ".jsonl" for x in lines
    ]
    transcript = transcript_crossing(main_lines, kind, cap)
    run_files = {p.name: p for p in observer.lines if p.parent.parent == runs}
    status = statusline_crossing(observer.lines.get(run_files.get("claude.statusline.jsonl"), []), kind, cap)
    otel = otel_crossing(observer.lines.get(run_files.get("claude.otel.jsonl"), []), kind, cap)
    log = log_events(observer.lines.get(run_files.get("capguard.log"), []))
    own = None
    if stdout.strip():
        try:
            own = json.loads(stdout.strip().splitlines()[-1])
        except ValueError:
            own = None
    session = None
    if report:
        argv_seen = report.get("argv") or []
        if "--session-id" in argv_seen:
            session = argv_seen[argv_seen.index("--session-id") + 1]
    time.sleep(0.5)  # the fake server logs finished requests every 0.2 s
    served = [r for r in server.records() if session and r.get("session_id") == session and r.get("kind") == "main"]

    cross = transcript["crossing"]
    rec.update(
        {
            "report": None
            if report is None
            else {
                k: report.get(k)
                for k in (
                    "cost_usd",
                    "tokens",
                    "steps",
                    "stop_reason",
                    "self_stopped",
                    "at_stop",
                    "overshoot",
                    "largest_reply_usd",
                    "stop_steps",
                    "exit_code",
                    "agent_returncode",
                    "unseen_usd",
                    "malformed_lines",
                    "warnings",
                    "run_id",
                )
            },
            "transcript": {
                k: transcript[k] for k in ("replies", "total", "crossing", "last_cost_state", "cost_states", "seen")
            },
            "observed_files": {
                str(p.relative_to(base)): [t for t, _ in lines][-12:] for p, lines in observer.lines.items()
            },
            "statusline_crossing": status,
            "otel_crossing": otel,
            "log": log,
            "claude_exit": observer.exits.get(rec.get("claude_pid")),
            "claude_json": None
            if own is None
            else {k: own.get(k) for k in ("total_cost_usd", "subtype", "terminal_reason", "num_turns", "is_error")},
            "server": {
                "main_requests": len(served),
                "aborted": sum(1 for r in served if r.get("aborted")),
                "arrived_after_sigint": sum(1 for r in served if log.get("sigint") and r["time"] * 1e9 > log["sigint"]),
                "completed_after_sigint": sum(
                    1
                    for r in served
                    if log.get("sigint") and not r.get("aborted") and (r.get("t_end") or 0) * 1e9 > log["sigint"]
                ),
            },
        }
    )
    # figures (ms)
    by_id = {r.get("request_id"): r for r in served}
    if cross and by_id.get(cross["request_id"], {}).get("t_end"):
        # the fake finished sending the crossing reply -> its first line was in the transcript
        rec["transcript_lag_ms"] = (cross["t"] - by_id[cross["request_id"]]["t_end"] * 1e9) / 1e6
    steps = (report or {}).get("stop_steps") or []
    rec["claude_pid_matches"] = bool(steps) and f"(pid {rec.get('claude_pid')})" in steps[0]
    sig = log.get("sigint")
    firsts = [(name, c["t"]) for name, c in (("transcript", cross), ("statusline", status), ("otel", otel)) if c]
    first = min(firsts, key=lambda x: x[1]) if firsts else None
    rec["first_source"] = first[0] if first else None
    if sig and cross:
        rec["signal_ms"] = (sig + 500_000 - cross["t"]) / 1e6
    if sig and first:
        rec["signal_from_first_ms"] = (sig + 500_000 - first[1]) / 1e6
    if sig and log.get("decision"):
        rec["decision_to_signal_ms"] = (sig - log["decision"]) / 1e6
    if sig and log.get("sigint_obs"):
        rec["harness_lag_ms"] = (log["sigint_obs"] - sig - 500_000) / 1e6
    if rec["claude_exit"] and cross:
        rec["exit_ms"] = (rec["claude_exit"] - cross["t"]) / 1e6
    if sig and rec["claude_exit"]:
        rec["sigint_to_exit_ms"] = (rec["claude_exit"] - sig - 500_000) / 1e6
    if report:
        ours = report["cost_usd"]
        claude_total = (
            own.get("total_cost_usd")
            if own and own.get("total_cost_usd") is not None
            else transcript["last_cost_state"]
        )
        rec["claude_total_usd"] = claude_total
        rec["claude_total_from"] = (
            "json"
            if own and own.get("total_cost_usd") is not None
            else ("cost-state" if transcript["last_cost_state"] is not None else None)
        )
        if claude_total:
            rec["rel_error"] = abs(ours - claude_total) / claude_total
        at_stop = report.get("at_stop") or {}
        if kind == "usd":
            rec["final_minus_cap"] = ours - cap
            rec["at_stop_minus_cap"] = (at_stop.get("cost_usd") or 0) - cap
        else:
            rec["final_minus_cap_tokens"] = report["tokens"] - cap
        rec["replies_after_stop"] = report["steps"] - (at_stop.get("steps") or 0) if at_stop else None
        rec["usd_final"], rec["usd_at_stop"] = ours, at_stop.get("cost_usd")
        # who ended it: Claude's own budget (print mode) or capguard's signal
        if report.get("self_stopped"):
            rec["stopped_by"] = "claude (own --max-budget-usd), before capguard decided"
        elif own and own.get("subtype") == "error_max_budget_usd":
            rec["stopped_by"] = "both: Claude hit its own budget, capguard's SIGINT also sent"
        elif sig:
            rec["stopped_by"] = "capguard (SIGINT)"
        else:
            rec["stopped_by"] = "?"
    ok = bool(report and report.get("stop_reason") == kind and cross)
    rec["ok"] = ok
    if ok and not args.keep:
        shutil.rmtree(base, ignore_errors=True)
    return rec


def summarize(trials: list[dict], kind: str) -> dict:
    good = [t for t in trials if t["ok"]]

    def col(name):
        return [t[name] for t in good if t.get(name) is not None]

    out = {
        "trials": len(trials),
        "ok": len(good),
        "signal_ms": C.summary(col("signal_ms")),
        "signal_from_first_ms": C.summary(col("signal_from_first_ms")),
        "exit_ms": C.summary(col("exit_ms")),
        "transcript_lag_ms": C.summary(col("transcript_lag_ms")),
        "sigint_to_exit_ms": C.summary(col("sigint_to_exit_ms")),
        "decision_to_signal_ms": C.summary(col("decision_to_signal_ms")),
        "harness_lag_ms": C.summary(col("harness_lag_ms")),
        "first_source": {
            s: sum(1 for t in good if t.get("first_source") == s) for s in ("transcript", "statusline", "otel")
        },
        "stopped_by": {},
        "rel_error": C.summary(col("rel_error")),
        "claude_total_from": {},
        "replies_after_stop": C.summary(col("replies_after_stop")),
        "crossing_reply": C.summary([t["transcript"]["crossing"]["reply"] for t in good]),
        "server_arrived_after_sigint": C.summary([t["server"]["arrived_after_sigint"] for t in good]),
        "server_aborted": C.summary([t["server"]["aborted"] for t in good]),
        "survivors": sum(len(t["survivors"]) for t in trials),
        "exit_codes": {},
    }
    for t in good:
        out["stopped_by"][t.get("stopped_by", "?")] = out["stopped_by"].get(t.get("stopped_by", "?"), 0) + 1
        src = t.get("claude_total_from") or "none"
        out["claude_total_from"][src] = out["claude_total_from"].get(src, 0) + 1
    for t in trials:
        key = str(t.get("rc"))
        out["exit_codes"][key] = out["exit_codes"].get(key, 0) + 1
    if kind == "usd":
        out["final_minus_cap"] = C.summary(col("final_minus_cap"))
        out["at_stop_minus_cap"] = C.summary(col("at_stop_minus_cap"))
        out["final_over_cap_pct"] = C.summary(
            [100 * t["final_minus_cap"] / t["cap"] for t in good if "final_minus_cap" in t]
        )
    else:
        out["final_minus_cap_tokens"] = C.summary(col("final_minus_cap_tokens"))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mode", choices=sorted(MODES), required=True)
    parser.add_argument("--trials", type=int, default=25)
    parser.add_argument("--delay", type=float, default=0.2, help="seconds the fake takes per reply")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--timeout", type=float, default=180)
    parser.add_argument("--ready-timeout", type=float, default=90)
    parser.add_argument("--python", default=C.CG_PYTHON)
    parser.add_argument("--keep", action="store_true", help="keep every trial's scratch folder")
    parser.add_argument("--name", default=None)
    args = parser.parse_args()
    sys.setswitchinterval(0.0005)  # the Observer thread must not wait long for the GIL

    name = args.name or f"claude_runaway_{args.mode.replace('-', '_')}"
    data = H.started_record(name)
    kind, (lo, hi) = MODES[args.mode]["cap"], MODES[args.mode]["range"]
    rng = random.Random(args.seed)
    base = H.scratch(f"claude_runaway/{args.mode}")
    print(
        f"{name}: {args.trials} trials, fake delay {args.delay} s, cap {kind} in [{lo}, {hi}]; "
        f"load average {data['machine']['loadavg']}",
        flush=True,
    )
    trials = []
    with H.FakeServer("fake_anthropic", ["--delay", str(args.delay)], log=base / "fake_anthropic.jsonl") as server:
        data["server_argv"] = server.argv
        for i in range(args.trials):
            cap = rng.uniform(lo, hi)
            if kind == "tokens":
                cap = round(cap)
            t = trial(i, args.mode, cap, server, args)
            trials.append(t)
            H.progress(
                f"{i + 1}/{args.trials}: cap {t['cap']}, rc {t.get('rc')}, ok {t['ok']}, "
                f"signal {t.get('signal_ms', float('nan')):.1f} ms (first source {t.get('first_source')}), "
                f"exit {t.get('exit_ms', float('nan')):.0f} ms, stopped by {t.get('stopped_by')}, "
                f"final {t.get('usd_final')} vs claude {t.get('claude_total_usd')}"
            )
    data.update(
        {
            "mode": args.mode,
            "cap_kind": kind,
            "cap_range": [lo, hi],
            "delay_s": args.delay,
            "seed": args.seed,
            "claude": H.CLAUDE,
            "trials": trials,
            "summary": summarize(trials, kind),
        }
    )
    data = H.finish_record(data)
    path = C.save(name, data)
    print(f"saved {path}")
    s = data["summary"]
    print(
        json.dumps(
            {k: s[k] for k in ("ok", "signal_ms", "exit_ms", "first_source", "stopped_by", "rel_error")}, indent=1
        )
    )
    import claude_render

    claude_render.render()


if __name__ == "__main__":
    main()
