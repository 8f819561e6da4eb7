"""`capguard import codex` against `ccusage codex daily` (npm ccusage@20.0.24, --offline) on the same Codex corpus.

    python bench/import_codex.py                       # 100 MB corpus, 4 rounds, writes RESULTS.md
    python bench/import_codex.py --target-mb 5 --rounds 1 --no-results     # a smoke run

The corpus is generated (seeded, byte-identical every time) under bench/.work/corpus/ from the real Codex 0.169.1
rollout of tests/fixtures/codex/rollout.tool.jsonl: every line kind of a real turn (session_meta with ~20 KB of
base instructions, task_started, turn_context, response items, reasoning, function calls and outputs, one
token_usage_record per reply followed by its token_count, task_complete), with fresh ids, times and usage. Threads
are spread over date folders and models (gpt-5, gpt-5-codex, gpt-5-mini, gpt-4.1); some are resumed later
(appended to their file, in its old folder, as `codex exec resume` does), some are forks (a new file that does not
copy its parent's records). Each round runs both tools back to back, alternating which goes first, after one
warm-up of each; wall and CPU time and peak RSS of the process tree as in import_vs_ccusage.py. Token totals:
ccusage's `totals`, capguard's ledger sums, the generator's manifest. Results: a marked section of RESULTS.md.
"""

from __future__ import annotations

import argparse
import copy
import json
import random
import shutil
import sqlite3
import sys
import time
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path

import _common as C
import import_vs_ccusage as V

FIXTURE = C.ROOT / "tests" / "fixtures" / "codex" / "rollout.tool.jsonl"
MODELS = ("gpt-5", "gpt-5-codex", "gpt-5-mini", "gpt-4.1")
BEGIN = "<!-- import-codex section: begin (bench/import_codex.py; render_results.py keeps it) -->"
END = "<!-- import-codex section: end -->"


class Template:
    """The fixture's lines, by role, as objects to copy."""

    def __init__(self) -> None:
        lines = [json.loads(line) for line in FIXTURE.read_text().splitlines()]
        by = {}
        for entry in lines:
            kind = entry["type"] + ":" + str(entry["payload"].get("type", ""))
            by.setdefault(kind, []).append(entry)
        self.meta = by["session_meta:"][0]
        self.meta["payload"]["base_instructions"]["text"] = "You are a coding agent. " * 850  # ~20 KB, as real
        self.turn_start = [by["event_msg:task_started"][0], *by["response_item:message"][:2], by["world_state:"][0]]
        self.context = by["turn_context:"][0]
        self.user = by["response_item:message"][2]
        self.reasoning = by["response_item:reasoning"][0]
        self.call = by["response_item:function_call"][0]
        self.record = by["token_usage_record:"][0]
        self.output = by["response_item:function_call_output"][0]
        self.count = by["event_msg:token_count"][0]
        self.done = by["event_msg:item_completed"][0]
        self.complete = by["event_msg:task_complete"][0]


class Thread:
    """One generated thread: its file, running totals, ordinal."""

    def __init__(self, path: Path, thread_id: str, model: str, rng: random.Random):
        self.path, self.id, self.model, self.rng = path, thread_id, model, rng
        self.ordinal = 0
        self.total = {"input_tokens": 0, "cached_input_tokens": 0, "output_tokens": 0, "reasoning_output_tokens": 0}
        self.total["total_tokens"] = 0
        self.total["cache_write_input_tokens"] = 0


def _line(entry: dict, at: datetime, thread: Thread) -> str:
    out = {**entry, "timestamp": at.strftime("%Y-%m-%dT%H:%M:%S.") + f"{at.microsecond // 1000:03d}Z"}
    out["ordinal"] = thread.ordinal
    thread.ordinal += 1
    return json.dumps(out, separators=(",", ":"))


def write_turn(t: Template, thread: Thread, at: datetime, replies: int, manifest: dict, out) -> datetime:
    """One turn of `replies` tool-calling replies appended to `out`; returns the time of its last line."""
    rng = thread.rng
    turn = str(uuid.UUID(int=rng.getrandbits(128)))
    lines = [_line(entry, at, thread) for entry in t.turn_start]
    context = copy.deepcopy(t.context)
    context["payload"].update(turn_id=turn, root_turn_id=turn, model=thread.model)
    lines += [_line(context, at, thread), _line(t.user, at, thread)]
    turn_total = dict.fromkeys(thread.total, 0)
    prompt = rng.randint(6000, 30000)
    for _ in range(replies):
        at += timedelta(milliseconds=rng.randint(800, 20000))
        prompt += rng.randint(50, 3000)
        cached = min(prompt, (prompt - rng.randint(0, 2000)) // 128 * 128) if rng.random() < 0.85 else 0
        reasoning = rng.randint(0, 400)
        output = reasoning + rng.randint(5, 900)
        usage = {
            "input_tokens": prompt,
            "cached_input_tokens": max(0, cached),
            "cache_write_input_tokens": 0,
            "output_tokens": output,
            "reasoning_output_tokens": reasoning,
            "total_tokens": prompt + output,
        }
        for key, value in usage.items():
            turn_total[key] += value
            thread.total[key] += value
        manifest["replies"] += 1
        manifest["total_tokens"] += usage["total_tokens"]
        response = f"resp_{uuid.UUID(int=rng.getrandbits(128)).hex}"
        record = copy.deepcopy(t.record)
        record["payload"].update(
            thread_id=thread.id,
            session_id=thread.id,
            turn_id=turn,
            root_turn_id=turn,
            response_id=response,
            usage=usage,
            turn_token_usage=dict(turn_total),
            thread_token_usage=dict(thread.total),
        )
        count = copy.deepcopy(t.count)
        count["payload"]["info"].update(total_token_usage=dict(thread.total), last_token_usage=usage)
        lines += [_line(t.reasoning, at, thread), _line(t.call, at, thread), _line(record, at, thread)]
        lines += [_line(t.done, at, thread), _line(t.output, at, thread), _line(count, at, thread)]
    lines.append(_line(t.complete, at, thread))
    text = "\n".join(lines) + "\n"
    out.write(text)
    manifest["bytes"] += len(text)
    return at


def generate(out: Path, target_mb: float, seed: int) -> dict:
    rng = random.Random(seed)
    t = Template()
    shutil.rmtree(out, ignore_errors=True)
    sessions = out / "sessions"
    manifest = {"seed": seed, "target_mb": target_mb, "files": 0, "replies": 0, "total_tokens": 0, "resumed": 0}
    manifest.update(forks=0, bytes=0)
    threads: list[Thread] = []
    day0 = datetime(2026, 9, 1, 8, tzinfo=timezone.utc)
    while manifest["bytes"] < target_mb * 2**20:
        at = day0 + timedelta(minutes=rng.randint(0, 90 * 24 * 60))
        if threads and rng.random() < 0.08:  # resume an old thread: appended to its file, in its old folder
            thread = rng.choice(threads)
            manifest["resumed"] += 1
        else:
            thread_id = str(uuid.UUID(int=rng.getrandbits(128)))
            folder = sessions / at.strftime("%Y/%m/%d")
            folder.mkdir(parents=True, exist_ok=True)
            path = folder / f"rollout-{at.strftime('%Y-%m-%dT%H-%M-%S')}-{thread_id}.jsonl"
            thread = Thread(path, thread_id, rng.choice(MODELS), rng)
            meta = copy.deepcopy(t.meta)
            meta["payload"].update(id=thread_id, session_id=thread_id, timestamp=at.isoformat())
            if threads and rng.random() < 0.05:  # a fork: its own file, numbered on from its parent, no copies
                parent = rng.choice(threads)
                meta["payload"].update(forked_from_id=parent.id, forked_from_ordinal_exclusive=parent.ordinal)
                thread.ordinal = parent.ordinal
                manifest["forks"] += 1
            head = _line(meta, at, thread) + "\n"
            path.write_text(head)
            manifest["bytes"] += len(head)
            threads.append(thread)
            manifest["files"] += 1
        with open(thread.path, "a") as handle:
            for _ in range(rng.randint(1, 4)):
                at = write_turn(t, thread, at, rng.choice((1, 2, 3, 5, 8, 13, 21, 40)), manifest, handle)
    manifest["bytes"] = sum(p.stat().st_size for p in sessions.rglob("*.jsonl"))
    (out / "manifest.json").write_text(json.dumps(manifest, indent=1))
    return manifest


def corpus(target_mb: float, seed: int) -> tuple[Path, dict]:
    out = C.WORK / "corpus" / f"codex_{int(target_mb)}m_s{seed}"
    manifest = out / "manifest.json"
    if manifest.exists():
        doc = json.loads(manifest.read_text())
        if (doc["target_mb"], doc["seed"]) == (target_mb, seed):
            return out, doc
    return out, generate(out, target_mb, seed)


def run_ccusage(data: Path, env: dict, tag: str) -> dict:
    out = C.WORK / "import_codex" / f"ccusage_{tag}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    V.warm_page_cache(data)
    result = V.measure(
        [str(V.NATIVE), "codex", "daily", "--json", "--offline"],
        {**env, "CODEX_HOME": str(data), "LOG_LEVEL": "0"},
        stdout_path=out,
    )
    if result["rc"] == 0:
        totals = json.loads(out.read_text())["totals"]
        result["tokens"] = {
            "input": totals["inputTokens"],
            "cache_read": totals["cacheReadTokens"],
            "output": totals["outputTokens"],
            "total": totals["totalTokens"],
            "cost_usd": totals.get("costUSD"),
        }
    return result


def run_capguard(data: Path, env: dict, tag: str) -> dict:
    base = C.WORK / "import_codex" / f"capguard_{tag}"
    shutil.rmtree(base, ignore_errors=True)
    base.mkdir(parents=True)
    ledger = base / "ledger.db"
    argv = [C.CG_PYTHON, "-m", "capguard", "--ledger", str(ledger), "import", "codex", str(data), "--json"]
    V.warm_page_cache(data)
    result = V.measure(
        [*argv, "--user", "bench@example.invalid"],
        {**env, "CAPGUARD_HOME": str(base / "home")},
        stdout_path=base / "summary.json",
    )
    if result["rc"] == 0:
        with sqlite3.connect(ledger) as db:
            row = db.execute(
                "SELECT SUM(input_tokens), SUM(cache_read_tokens), SUM(output_tokens), SUM(cost_micro_usd), COUNT(*)"
                " FROM usage_events"
            ).fetchone()
        result["tokens"] = {
            "input": row[0],
            "cache_read": row[1],
            "output": row[2],
            "total": row[0] + row[1] + row[2],
            "cost_usd": row[3] / 1e6,
            "rows": row[4],
        }
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--target-mb", type=float, default=100)
    parser.add_argument("--seed", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--no-results", action="store_true")
    parser.add_argument("--render", action="store_true", help="rewrite RESULTS.md's section from the last results")
    args = parser.parse_args()
    if args.render:
        write_section(json.loads((C.RESULTS_DIR / "import_codex.json").read_text()))
        return
    V.install_ccusage()
    data, manifest = corpus(args.target_mb, args.seed)
    base, env = C.isolated_env("import_codex")
    cg_env = {k: v for k, v in env.items() if k != "PYTHONDONTWRITEBYTECODE"}
    cg_env["PYTHONPYCACHEPREFIX"] = str(base / "pycache")
    cg_env["PYTHONPATH"] = str(C.ROOT)  # this checkout's capguard, whatever the venv's editable install points at
    machine, started, load_before = C.machine(), time.monotonic(), C.loadavg()
    warm = [run_ccusage(data, env, "warmup"), run_capguard(data, cg_env, "warmup")]
    rounds = []
    for i in range(args.rounds):
        order = ("ccusage", "capguard") if i % 2 == 0 else ("capguard", "ccusage")
        pair: dict = {"order": list(order)}
        for tool in order:
            pair[tool] = run_ccusage(data, env, f"r{i}") if tool == "ccusage" else run_capguard(data, cg_env, f"r{i}")
            print(
                f"round {i + 1} {tool}: {pair[tool]['wall_s']:.2f} s, {pair[tool]['peak_rss_mb']:.0f} MB,"
                f" rc {pair[tool]['rc']}, tokens {pair[tool].get('tokens')}",
                file=sys.stderr,
            )
        pair["loadavg"] = C.loadavg()
        rounds.append(pair)
    result = {
        "machine": machine,
        "command": C.command_line(),
        "duration_s": round(time.monotonic() - started, 1),
        "loadavg_before": load_before,
        "loadavg_after": C.loadavg(),
        "corpus": manifest,
        "ccusage_version": V.CCUSAGE_VERSION,
        "warmup": warm,
        "rounds": rounds,
    }
    print(json.dumps({k: result[k] for k in ("corpus", "duration_s")}, indent=1))
    if not args.no_results:
        C.save("import_codex", result)
        write_section(result)


def section(result: dict) -> list[str]:
    m, corpus_facts, rounds = result["machine"], result["corpus"], result["rounds"]
    cc, cg = rounds[-1]["ccusage"].get("tokens") or {}, rounds[-1]["capguard"].get("tokens") or {}
    med = {tool: V._median([r[tool]["wall_s"] for r in rounds]) for tool in ("ccusage", "capguard")}
    cpu = {tool: V._median([r[tool]["cpu_s"] for r in rounds]) for tool in ("ccusage", "capguard")}
    rss = {tool: max(r[tool]["peak_rss_mb"] for r in rounds) for tool in ("ccusage", "capguard")}
    lines = [
        BEGIN,
        "",
        "## 8. `capguard import codex` against `ccusage codex daily`",
        "",
        f"- date: {m['date']} (run took {result['duration_s']} s); machine: {m['cpu']}, {m['cores']} cores,"
        f" RAM {m['ram_mb']} MB; Python {m['python']}; ccusage {result['ccusage_version']} (native, --offline)",
        f"- capguard: commit {m['capguard_commit']}; load average before {result['loadavg_before']},"
        f" after {result['loadavg_after']} (a shared machine: other sessions ran tests meanwhile)",
        f"- command: `{result['command']}`",
        f"- corpus: generated from the real Codex 0.169.1 rollout (seed {corpus_facts['seed']}):"
        f" {corpus_facts['files']:,} rollout files, {corpus_facts['bytes']:,} bytes, {corpus_facts['replies']:,}"
        f" replies, {corpus_facts['resumed']:,} resumed threads (appended to their old file),"
        f" {corpus_facts['forks']:,} forks",
        "",
        "| round | first | ccusage wall s | ccusage CPU s | capguard wall s | capguard CPU s | ccusage peak MB |"
        " capguard peak MB |",
        "| ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for i, r in enumerate(rounds, 1):
        cc_r, cg_r = r["ccusage"], r["capguard"]
        lines.append(
            f"| {i} | {r['order'][0]} | {cc_r['wall_s']:.2f} | {cc_r['cpu_s']:.2f} | {cg_r['wall_s']:.2f} |"
            f" {cg_r['cpu_s']:.2f} | {cc_r['peak_rss_mb']:.0f} | {cg_r['peak_rss_mb']:.0f} |"
        )
    same = all(cc.get(k) == cg.get(k) for k in ("input", "cache_read", "output", "total")) and bool(cc)
    lines += [
        "",
        f"- median wall: ccusage {med['ccusage']:.2f} s, capguard {med['capguard']:.2f} s; median CPU: ccusage"
        f" {cpu['ccusage']:.2f} s, capguard {cpu['capguard']:.2f} s (wall is several times CPU for both: the load"
        " average says why). capguard starts Python, loads genai-prices and writes every reply to a new SQLite"
        f" ledger; ccusage (native Rust) only sums. Peak RSS: ccusage {rss['ccusage']:.0f} MB, capguard"
        f" {rss['capguard']:.0f} MB",
        f"- tokens (fresh input / cached input / output / total): ccusage {cc.get('input'):,} / {cc.get('cache_read'):,}"
        f" / {cc.get('output'):,} / {cc.get('total'):,}; capguard {cg.get('input'):,} / {cg.get('cache_read'):,} /"
        f" {cg.get('output'):,} / {cg.get('total'):,}; generator {corpus_facts['total_tokens']:,} total:"
        f" **{'identical' if same and cg.get('total') == corpus_facts['total_tokens'] else 'DIFFERENT'}**",
        f"- cost: ccusage ${cc.get('cost_usd') or 0:,.4f} (its own price table), capguard ${cg.get('cost_usd') or 0:,.4f}"
        " (genai-prices, rounded to the micro-dollar per reply)",
        "",
        END,
    ]
    return lines


def write_section(result: dict) -> None:
    path = C.BENCH / "RESULTS.md"
    text = path.read_text() if path.exists() else ""
    block = "\n".join(section(result))
    if BEGIN in text and END in text:
        head, rest = text.split(BEGIN, 1)
        text = head + block + rest.split(END, 1)[1]
    else:
        text = text.rstrip("\n") + "\n\n" + block + "\n"
    path.write_text(text)


if __name__ == "__main__":
    main()
