"""Renders the Claude Code / aider-overshoot sections of bench/RESULTS.md from bench/.work/results/.

Inputs: claude_runaway_{interactive,print_usd,print_tokens}.json (claude_runaway.py), claude_idle.json and
claude_idle_whatif.json (claude_idle.py), aider_overshoot.json (aider_overshoot.py). The sections live between
two marker comments at the end of RESULTS.md; everything outside them (what render_results.py writes) is left
as it is, and a rerun replaces only the marked block. render_results.py rewrites the whole file, so run this
after it:

    python bench/render_results.py && python bench/claude_render.py
"""

from __future__ import annotations

import json
import math

import _common as C

OUT = C.BENCH / "RESULTS.md"
BEGIN = "<!-- claude-aider sections: begin (bench/claude_render.py; render_results.py does not write these) -->"
END = "<!-- claude-aider sections: end -->"
MODES = [
    ("interactive", "claude_runaway_interactive"),
    ("print-usd", "claude_runaway_print_usd"),
    ("print-tokens", "claude_runaway_print_tokens"),
]
LATENCY_TARGET_MS = 50.0  # the target bench/enforcement_latency.py holds capguard to with aider
ACCURACY_TARGET = 0.005
CPU_TARGET, RSS_TARGET = 1.0, 60.0


def load(name: str) -> dict | None:
    try:
        return json.loads((C.RESULTS_DIR / f"{name}.json").read_text())
    except (FileNotFoundError, ValueError):
        return None


def verdict(ok: bool) -> str:
    return "met" if ok else "**MISSED**"


def machine_block(data: dict) -> list[str]:
    m = data["machine"]
    changed = data.get("code_after") not in (None, m.get("code"))
    return [
        f"- date: {m['date']} (run took {data.get('duration_s', '?')} s)",
        f"- machine: `{m['uname']}`",
        f"- CPU: {m['cpu']}, {m['cores']} cores; RAM {m['ram_mb']} MB; Python {m['python']}; "
        f"{data.get('claude_version', '?')}",
        f"- capguard: commit {m['capguard_commit']}, code fingerprint {m.get('code', '?')}"
        + (f" -> **{data['code_after']}: capguard/ changed during this run**" if changed else ""),
        f"- load average (1, 5, 15 min) before: {m['loadavg']}, after: {data.get('loadavg_after', '?')}",
        f"- command: `{data['command']}`",
    ]


def num(v, digits=1) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    return f"{v:.{digits}f}"


STAT_HEAD = ["| figure | n | min | p50 | p90 | p99 | max |", "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"]


def stat_row(label: str, s: dict, digits: int = 1, scale: float = 1.0) -> str:
    if not s or not s.get("n"):
        return f"| {label} | 0 | - | - | - | - | - |"
    return (
        f"| {label} | {s['n']} | "
        + " | ".join(num(s[k] * scale, digits) for k in ("min", "p50", "p90", "p99", "max"))
        + " |"
    )


def col(trials: list[dict], key: str) -> list[float]:
    return [t[key] for t in trials if t.get("ok") and t.get(key) is not None]


def counts(values) -> str:
    out: dict = {}
    for v in values:
        out[v] = out.get(v, 0) + 1
    return ", ".join(f"{k}: {n}" for k, n in sorted(out.items(), key=lambda kv: str(kv[0])))


# ---------------------------------------------------------------------------------------------- sections


def after_replies(t: dict) -> float:
    """Spend after the stop decision, in replies of this run (2 decimals)."""
    reply = (t.get("report") or {}).get("largest_reply_usd") or 0.011444
    return round(((t.get("usd_final") or 0) - (t.get("usd_at_stop") or 0)) / reply, 2)


def latency(runs: dict[str, dict], rows: list) -> list[str]:
    out = ["### 4.1 Enforcement latency: crossing line in the transcript -> capguard's SIGINT to Claude", ""]
    out += [
        "Every trial is a real runaway: `python -m capguard --report-json R --usd|--tokens CAP claude` around Claude Code",
        "2.1.330, the fake Anthropic server (`python -m tests.fakes.fake_anthropic --delay 0.2`, its own process) answering",
        "every request of the `LOOP` prompt with a Bash tool call (`echo loop`), so Claude never stops by itself. Each",
        "reply costs $0.011444 (5,051 tokens, claude-opus-5-5); the cap is drawn per trial (seeded), so the 3rd to 5th reply",
        "crosses it. Modes: *interactive* (capguard on a pty, `LOOP` typed at Claude's prompt: no native cap exists, only",
        "capguard can stop it); *print-usd* (`claude -p LOOP --output-format json` with `--usd`, which capguard also passes",
        "to Claude as `--max-budget-usd`: whoever is first stops it); *print-tokens* (`-p` with `--tokens`: capguard alone).",
        "",
        "**How it is timed.** The harness (`bench/claude_harness.py`, `Observer`) holds a raw inotify descriptor on the",
        "transcript folder and capguard's run folder and a pidfd on Claude, in one thread at real-time priority",
        "(SCHED_FIFO 1) that stamps CLOCK_REALTIME as poll(2) returns. The *crossing line* is the first assistant line of the",
        "reply (one count per request id) that takes the running total to the cap. The same is done for capguard's two",
        "other sources: Claude's statusLine input (`claude.statusline.jsonl`, interactive only) and the OpenTelemetry",
        "api_request events (`claude.otel.jsonl`, exported by Claude every second). The *SIGINT* time is capguard's own",
        "log line `sending SIGINT to claude`, written right after `os.kill` returns, stamped by `logging` to the",
        "millisecond (truncated; the midpoint +0.5 ms is used: +-0.5 ms). Claude's exit is its pidfd turning readable.",
        "*Harness lag* = (the Observer's stamp of that log line) - (its log stamp): how late the Observer sees a write",
        "under the same load (an isolated check, a writer stamping its own lines, gave p50 0.13 / p99 0.45 ms). A late",
        "Observer makes the latency look shorter by as much. No strace, no instrumentation of capguard.",
        "",
    ]
    for mode, data in runs.items():
        if data is None:
            out += [f"**{mode}**: not run yet (`bench/claude_runaway.py --mode {mode}`).", ""]
            continue
        s, trials = data["summary"], data["trials"]
        good = [t for t in trials if t.get("ok")]
        first_t = [t for t in good if t.get("first_source") == "transcript"]
        out += [
            f"**{mode}** ({s['ok']} of {s['trials']} trials usable; cap {data['cap_kind']} drawn from "
            f"{data['cap_range'][0]}-{data['cap_range'][1]}, seed {data['seed']}, fake delay {data['delay_s']} s):",
            "",
        ]
        out += machine_block(data)
        out += [
            "",
            *STAT_HEAD,
            stat_row("crossing line -> SIGINT sent (ms), all trials", s["signal_ms"]),
            stat_row("  the same, trials where the transcript crossed first", C.summary(col(first_t, "signal_ms"))),
            stat_row("first source to cross -> SIGINT sent (ms)", s["signal_from_first_ms"]),
            stat_row(
                "capguard's decision (`stopping claude` line) -> SIGINT (ms, 1 ms steps)", s["decision_to_signal_ms"]
            ),
            stat_row(
                "fake server sent the crossing reply -> its line in the transcript (ms)",
                s.get("transcript_lag_ms", {}),
                0,
            ),
            stat_row("crossing line -> Claude exited (ms)", s["exit_ms"], 0),
            stat_row("SIGINT -> Claude exited (ms)", s["sigint_to_exit_ms"], 0),
            stat_row("harness lag (ms)", s["harness_lag_ms"], 2),
            "",
            f"First source to reach the cap: {counts(t.get('first_source') for t in good)}. "
            f"Who stopped Claude: {counts(t.get('stopped_by') for t in good)}. "
            f"capguard's exit codes: {counts(t.get('rc') for t in trials)}. Processes of Claude's tree left behind: "
            f"{s['survivors']}.",
            "",
        ]
        both = [t for t in good if (t.get("claude_json") or {}).get("subtype") == "error_max_budget_usd"]
        if both:
            flagged = sum(1 for t in both if (t.get("report") or {}).get("self_stopped"))
            out += [
                f"In {len(both)} trial(s) Claude's own result says it stopped at its budget (`error_max_budget_usd`, "
                f"`terminal_reason: budget_exhausted`) on the same reply that crossed capguard's cap; capguard's SIGINT "
                f"went out meanwhile, and its report has `self_stopped: true` in {flagged} of them.",
                "",
            ]
        neg = [t for t in good if (t.get("signal_ms") or 0) < 0]
        if neg:
            out += [
                f"{len(neg)} trial(s) show a negative latency: capguard had already stopped Claude on another source "
                f"(first source: {counts(t.get('first_source') for t in neg)}) before the crossing transcript line "
                "was written"
                + (
                    ", or the Observer was late (same stamp as the SIGINT line)"
                    if any(t.get("first_source") == "transcript" for t in neg)
                    else ""
                )
                + ".",
                "",
            ]
        sig = s["signal_ms"]
        if sig.get("n") and mode != "print-usd":
            rows.append(
                [
                    f"Claude Code ({mode}): crossing transcript line -> SIGINT, p99",
                    f"<= {LATENCY_TARGET_MS:g} ms",
                    f"{num(sig['p99'])} ms (p50 {num(sig['p50'])}, max {num(sig['max'])}, n={sig['n']})",
                    verdict(sig["p99"] <= LATENCY_TARGET_MS),
                ]
            )
        if sig.get("n") and mode == "print-usd":
            rows.append(
                [
                    "Claude Code (-p, USD cap): who stopped the runaway",
                    "(no target)",
                    counts(t.get("stopped_by") for t in good),
                    "-",
                ]
            )
        ex = s["sigint_to_exit_ms"]
        if ex.get("n") and mode == "interactive":
            rows.append(
                [
                    "Claude Code (interactive): SIGINT -> Claude exited, p50 / max",
                    '(README: "exits at once")',
                    f"{num(ex['p50'], 0)} / {num(ex['max'], 0)} ms",
                    "-",
                ]
            )
    return out


def overshoot(runs: dict[str, dict], aider: dict | None, rows: list) -> list[str]:
    out = [
        "### 4.2 Overshoot per stop",
        "",
        'README: "the overshoot is at most that one reply, plus a request the agent had already sent when the stop came".',
        "*at stop* = capguard's figure when it decided (`at_stop` in the report); *final* = its figure at the end (what",
        "the agent recorded, Claude's own end-of-session total included); *spend after the decision* = final - at stop,",
        "in replies (a reply Claude aborted mid-stream counts with the output it got, hence fractions); *written",
        "after* = replies the transcript gained after the decision (`steps - at_stop.steps`; a reply in flight at the stop",
        "is often never written, but Claude's own total at exit has it); *server* = what the fake server saw after",
        "capguard's first SIGINT: requests arriving / replies it finished sending.",
        "",
    ]
    out += [
        "**Claude Code** (the runs of 4.1; one reply = $0.011444 = 5,051 tokens):",
        "",
        "| mode | n | final - cap: min / p50 / max | at stop - cap: max | spend after the decision, replies (counts) | "
        "written after (counts) | server after SIGINT: arriving / finished (counts) |",
        "| --- | ---: | --- | --- | --- | --- | --- |",
    ]
    for mode, data in runs.items():
        if data is None:
            continue
        good = [t for t in data["trials"] if t.get("ok")]
        if not good:
            continue
        written = [t["replies_after_stop"] for t in good if t.get("replies_after_stop") is not None]
        after = [after_replies(t) for t in good]
        if data["cap_kind"] == "usd":
            fmc = C.summary(col(good, "final_minus_cap"))
            amc = C.summary(col(good, "at_stop_minus_cap"))
            first = f"${fmc['min']:.4f} / ${fmc['p50']:.4f} / ${fmc['max']:.4f}"
            second = f"${amc['max']:.4f}"
        else:
            fmc = C.summary(col(good, "final_minus_cap_tokens"))
            first = f"{fmc['min']:.0f} / {fmc['p50']:.0f} / {fmc['max']:.0f} tokens"
            second = "-"
        out.append(
            f"| {mode} | {len(good)} | {first} | {second} | {counts(after)} | {counts(written)} | "
            f"{counts(t['server']['arrived_after_sigint'] for t in good)} / "
            f"{counts(t['server']['completed_after_sigint'] for t in good)} |"
        )
    out.append("")
    inter = runs.get("interactive")
    if inter:
        good = [t for t in inter["trials"] if t.get("ok")]
        late = [t for t in good if after_replies(t) > 0]
        lag = C.summary(col(good, "transcript_lag_ms"))
        ex = C.summary(col(good, "sigint_to_exit_ms"))
        arrived = sum(1 for t in good if t["server"]["arrived_after_sigint"])
        out += [
            f"Interactive: in {len(late)} of {len(good)} trials Claude spent one more reply after capguard's decision.",
            f"Interactive Claude writes its transcript late (the crossing reply's first line appeared p50 {num(lag['p50'], 0)} ms,"
            f" max {num(lag['max'], 0)} ms after the fake finished sending it), by which time it has usually run the tool and",
            f"sent the next request; and after SIGINT it takes p50 {num(ex['p50'], 0)} ms (max {num(ex['max'], 0)}) to exit,",
            f"during which that request is answered, and in {arrived} trial(s) a new request even reached the server after the",
            "SIGINT. capguard's final figure includes that reply (Claude's own `cost-state` total at exit has it).",
            "",
        ]
        vals = [after_replies(t) for t in good]
        rows.append(
            [
                "Claude Code (interactive) overshoot: final - cap, max; spend after the decision, max",
                "<= 1 reply in flight (README)",
                f"${C.summary(col(good, 'final_minus_cap'))['max']:.4f}; {max(vals):g} reply (one reply = $0.0114)",
                verdict(max(vals) <= 1),
            ]
        )
    if aider is None:
        out += ["**aider**: not run yet (`bench/aider_overshoot.py`).", ""]
        return out
    s, runs_a = aider["summary"], aider["runs"]
    good = [r for r in runs_a if r.get("ok")]
    out += [
        f"**{aider.get('aider_version', 'aider')}**, `--no-stream` runaway ({s['ok']} of {s['runs']} runs usable): "
        f"each reply ${aider['reply_usd']}, delay drawn per run from {aider['delay_range'][0]}-{aider['delay_range'][1]} s, "
        f"cap from ${aider['cap_range'][0]}-${aider['cap_range'][1]} (seed {aider['seed']}).",
        "",
    ]
    out += machine_block(aider)
    out += [
        "",
        "| figure | n | min | p50 | p90 | p99 | max |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
        stat_row("final - cap (USD)", s["final_minus_cap"], 3),
        stat_row("at stop - cap (USD)", s["at_stop_minus_cap"], 3),
        stat_row("final - at stop (USD)", s["final_minus_at_stop"], 3),
        stat_row("final over the cap (% of the cap)", s["final_over_cap_pct"], 1),
        stat_row("replies recorded after the stop", s["replies_after_stop"], 0),
        stat_row("server: requests that arrived after the first SIGINT", s["server_arrived_after_sigint"], 0),
        stat_row("server: delivered replies - replies capguard counted (USD)", s["unseen_usd"], 3),
        stat_row("decision -> first SIGINT (ms, 1 ms steps)", s["decision_to_sigint_ms"], 0),
        stat_row("first SIGINT -> aider exited (ms)", s["sigint_to_exit_ms"], 0),
        "",
        f"Polite stop escalated to SIGTERM (aider started a request during it) in {s['escalated']} of {s['ok']} runs; "
        f"exit codes {s['exit_codes']}; processes left behind: {s['survivors']}. A request that arrived after the SIGINT "
        "was cut off before its reply (the server never finished it), so it is not in the final figure: with a real API",
        "such a cancelled request may still be billed for its prompt.",
        "",
        "History: on e1a8ca2 to cd02772 (the ledger's commits moved to their own thread, while the polite stop still",
        "handed replies to the ledger and wrote the status file), 2 of 50 runs got 2-3 replies after the stop: the",
        "escalation came 1.2-1.4 s after the SIGINT; 75 more runs (seeds 1-3, on cafc7b6) showed none. Since",
        "the polite stop writes nothing (1229421), this table's runs again show none. In the same period two runs of",
        "the interactive Claude latency (30 trials each) each had one slow trial: 390 ms (the first trial, Claude cold:",
        "12 s to its prompt) and 75 ms; since cd02772 nothing is written between the decision and the SIGINT.",
        "",
    ]
    ras = [r["replies_after_stop"] for r in good]
    rows.append(
        [
            "aider (--no-stream) overshoot: final - cap, max; replies after the stop, max",
            "<= 1 reply in flight (README)",
            f"${s['final_minus_cap']['max']:.3f} (p50 ${s['final_minus_cap']['p50']:.3f}); {max(ras) if ras else '-'}"
            f" (one reply = ${aider['reply_usd']})",
            verdict(bool(ras) and max(ras) <= 1),
        ]
    )
    return out


def accuracy(runs: dict[str, dict], rows: list) -> list[str]:
    out = [
        "### 4.3 Accuracy: capguard's final cost vs Claude Code's own total (same runs)",
        "",
        "Claude's own total: `total_cost_usd` of its `-p --output-format json` result when it printed one, else the last",
        "`cost-state` line of the transcript (written at exit, SIGINT included). Relative error = |capguard - Claude| / Claude.",
        "",
        "| mode | n | Claude's total from | exact (< 1e-9) | max relative error | target |",
        "| --- | ---: | --- | ---: | ---: | --- |",
    ]
    worst, n_all = 0.0, 0
    for mode, data in runs.items():
        if data is None:
            continue
        good = [t for t in data["trials"] if t.get("ok") and t.get("rel_error") is not None]
        missing = [t for t in data["trials"] if t.get("ok") and t.get("rel_error") is None]
        if not good:
            continue
        errs = [t["rel_error"] for t in good]
        worst, n_all = max(worst, max(errs)), n_all + len(good)
        out.append(
            f"| {mode} | {len(good)} | {counts(t.get('claude_total_from') for t in good)} | "
            f"{sum(1 for e in errs if e < 1e-9)} | {100 * max(errs):.4f}% | <= 0.5% |"
            + (f" ({len(missing)} trial(s) without a Claude total)" if missing else "")
        )
    out.append("")
    below = [
        (mode, t)
        for mode, data in runs.items()
        if data
        for t in data["trials"]
        if t.get("ok") and t.get("claude_total_usd") and t["usd_final"] < t["claude_total_usd"] - 1e-9
    ]
    if below:
        gap = max(t["claude_total_usd"] - t["usd_final"] for _, t in below)
        out += [
            f"capguard is below Claude's own total in {len(below)} trial(s) ({counts(m for m, _ in below)}), by at most "
            f"${gap:.6f}: a reply Claude aborted mid-stream at the stop is in the transcript with the usage of its",
            "`message_start` (1 output token), Claude's end-of-query result estimates a few more, and the transcript's last",
            "`cost-state` line was written before that reply was added, so capguard cannot see the larger figure.",
            "",
        ]
    if n_all:
        rows.append(
            [
                "accuracy: capguard's final cost vs Claude Code's own total, max relative error",
                "<= 0.5%",
                f"{100 * worst:.4f}% (n={n_all})",
                verdict(worst <= ACCURACY_TARGET),
            ]
        )
    return out


def idle(data: dict | None, whatif: dict | None, rows: list) -> list[str]:
    out = ["### 4.4 Idle cost: capguard supervising an idle interactive Claude Code session", ""]
    if data is None:
        return out + ["Not run yet: `bench/claude_idle.py`.", ""]
    out += machine_block(data)
    out += [
        "",
        "`python -m capguard --usd 5 claude --dangerously-skip-permissions` on a pty, scratch HOME in /tmp, the fake",
        "Anthropic server as ANTHROPIC_BASE_URL. Two phases, each sampled once a second: *fresh* (Claude up, nothing",
        "typed yet: no transcript exists) and *after one reply* (`Say hello` answered, then idle at the prompt; the",
        "transcript exists and is followed). Sampling starts once Claude's own CPU has been flat for 3 s. capguard's",
        "process alone: psutil `cpu_times()` of its pid (user + system, children excluded: the statusLine command",
        "Claude runs is Claude's child), RSS and USS from `memory_full_info()`.",
        "",
        "| phase | sampled s | capguard CPU (% of one core) | per second p50 / max | RSS p50 / max MB | USS max MB | "
        "threads | Claude's own CPU | statusLine runs / min |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for name, p in data["phases"].items():
        out.append(
            f"| {name} | {p['sampled_s']} | {p['cpu_pct']:.2f}% | {p['cpu_pct_per_second']['p50']:.1f} / "
            f"{p['cpu_pct_per_second']['max']:.1f} | {p['rss_mb']['p50']:.1f} / {p['rss_mb']['max']:.1f} | "
            f"{p['uss_mb']['max']:.1f} | {p['threads']} | {p['claude_cpu_pct']:.2f}% | {p['statusline_lines_per_min']:.1f} |"
        )
    out += [
        "",
        f"capguard's inotify watches: {data['inotify_watches']}; exit code after SIGTERM {data['exit_code']}; "
        f"left behind: {len(data['leftovers'])}. Largest resident mappings at the end (MB): "
        + ", ".join(f"`{m['path'].rsplit('/', 1)[-1]}` {m['rss_mb']:.1f}" for m in data.get("top_mappings", [])[:6])
        + ".",
        "",
    ]
    if whatif:
        p = whatif["phases"].get("after_one_reply") or next(iter(whatif["phases"].values()))
        out += [
            f"What-if (not the shipped code; `--whatif-filter`, the watcher with an event filter, as in section 2): "
            f"`{whatif['command']}`: after one reply capguard CPU {p['cpu_pct']:.2f}%, RSS max {p['rss_mb']['max']:.1f} MB.",
            "",
        ]
    worst_cpu = max(p["cpu_pct"] for p in data["phases"].values())
    worst_rss = max(p["rss_mb"]["max"] for p in data["phases"].values())
    rows.append(
        [
            "idle interactive Claude Code: capguard CPU / RSS max (worst phase)",
            f"<= {CPU_TARGET:g}% / <= {RSS_TARGET:g} MB",
            f"{worst_cpu:.2f}% / {worst_rss:.1f} MB",
            verdict(worst_cpu <= CPU_TARGET and worst_rss <= RSS_TARGET),
        ]
    )
    return out


def block() -> list[str]:
    runs = {mode: load(name) for mode, name in MODES}
    aider = load("aider_overshoot")
    rows: list[list[str]] = []
    body = (
        latency(runs, rows)
        + overshoot(runs, aider, rows)
        + accuracy(runs, rows)
        + idle(load("claude_idle"), load("claude_idle_whatif"), rows)
    )
    head = [
        "## 4. Claude Code under capguard, and aider's overshoot",
        "",
        "Real binaries (Claude Code 2.1.330, aider 0.86.2), fake model servers on 127.0.0.1, real `python -m capguard`",
        "processes; scratch folders in /tmp. Written by `bench/claude_render.py` from `bench/.work/results/claude_*.json`",
        "and `aider_overshoot.json`. Benchmarks, not tests: nothing asserts. To rerun (about 12 minutes):",
        "",
        "```sh",
        "python bench/claude_runaway.py --mode interactive --trials 30",
        "python bench/claude_runaway.py --mode print-tokens --trials 25",
        "python bench/claude_runaway.py --mode print-usd --trials 25",
        "python bench/claude_idle.py --seconds 60",
        "python bench/aider_overshoot.py --runs 25",
        "python bench/claude_render.py   # after render_results.py, which rewrites the whole file",
        "```",
        "",
        "| figure | target | measured | verdict |",
        "| --- | --- | --- | --- |",
        *[f"| {' | '.join(r)} |" for r in rows],
        "",
    ]
    return [BEGIN, "", *head, *body, END]


def render() -> None:
    text = OUT.read_text() if OUT.exists() else ""
    if BEGIN in text:
        before, _, rest = text.partition(BEGIN)
        _, _, after = rest.partition(END)
        text = before.rstrip("\n") + "\n" + after.lstrip("\n")
    later = text.find("<!-- import-vs-ccusage section: begin")  # section 5 comes after this section 4
    if later >= 0:
        text = text[:later].rstrip("\n") + "\n\n" + "\n".join(block()) + "\n\n" + text[later:]
    else:
        text = text.rstrip("\n") + "\n\n" + "\n".join(block()) + "\n"
    OUT.write_text(text)
    print(f"wrote the Claude Code / aider overshoot sections of {OUT}")


if __name__ == "__main__":
    render()
