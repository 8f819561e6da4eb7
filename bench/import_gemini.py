"""`capguard import gemini`: time, CPU and peak memory of a first, full import of a Gemini CLI corpus.

    python bench/import_gemini.py                         # ~200 MB corpus, 3 rounds, writes RESULTS.md
    python bench/import_gemini.py --target-mb 5 --rounds 1 --no-results   # a smoke run

ccusage 20 does not read Gemini CLI's files, so there is nothing to put side by side: capguard alone, checked
against the corpus's own totals. The corpus (seeded, byte-identical every time, under bench/.work/corpus/) is made
of the line shapes Gemini CLI 0.61.0 wrote in tests/fixtures/gemini/session.shell.jsonl: a header, the `$set` of
the session context, user lines, `gemini` replies with `tokens` (a tool-calling reply written twice with one id, as
Gemini writes it), tool results; a few sessions have a subagent's file. Each round imports it with an empty data dir
into a new SQLite ledger (`python -m capguard --ledger <file> import gemini <corpus> --json`). Wall and CPU time
from the harness; peak RSS is the largest sum over the process tree, sampled every 20 ms.
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import sqlite3
import statistics
import sys
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path

import _common as C
from import_vs_ccusage import measure

BEGIN = "<!-- import-gemini section: begin (bench/import_gemini.py) -->"
END = "<!-- import-gemini section: end -->"
MODELS = ("gemini-2.5-flash", "gemini-2.5-pro", "gemini-3-pro-preview", "gemini-2.5-flash-lite")
CONTEXT = "This is the Gemini CLI. We are setting up the context for our chat. " * 40


def _stamp(at: datetime) -> str:
    return at.strftime("%Y-%m-%dT%H:%M:%S.") + f"{at.microsecond // 1000:03d}Z"


def _session(rng: random.Random, folder: Path, start: datetime, totals: dict) -> int:
    """One session file (and maybe a subagent's); returns the bytes written."""
    sid = str(uuid.UUID(int=rng.getrandbits(128)))
    lines = [
        {
            "sessionId": sid,
            "projectHash": "%064x" % rng.getrandbits(256),
            "startTime": _stamp(start),
            "lastUpdated": _stamp(start),
            "kind": "main",
        },
        {
            "$set": {
                "messages": [
                    {
                        "id": "%032x" % rng.getrandbits(128),
                        "timestamp": _stamp(start),
                        "type": "user",
                        "content": [{"text": CONTEXT}],
                    }
                ],
                "lastUpdated": _stamp(start),
            }
        },
    ]
    at, model, prompt = start, rng.choice(MODELS), 11_000 + rng.randrange(2_000)
    for turn in range(rng.randrange(5, 60)):
        at += timedelta(seconds=rng.uniform(0.5, 20))
        lines.append(
            {
                "id": str(uuid.UUID(int=rng.getrandbits(128))),
                "timestamp": _stamp(at),
                "type": "user",
                "content": [{"text": f"step {turn}: please fix the failing test in module {rng.randrange(99)}"}],
            }
        )
        lines.append({"$set": {"lastUpdated": _stamp(at)}})
        for _ in range(rng.randrange(1, 4)):
            prompt += rng.randrange(50, 3_000)
            cached = prompt - rng.randrange(50, 800) if rng.random() < 0.8 else 0
            tokens = {
                "input": prompt,
                "output": rng.randrange(5, 2_000),
                "cached": cached,
                "thoughts": rng.randrange(0, 1_500),
                "tool": 0,
            }
            tokens["total"] = tokens["input"] + tokens["output"] + tokens["thoughts"]
            reply = {
                "id": str(uuid.UUID(int=rng.getrandbits(128))),
                "timestamp": _stamp(at),
                "type": "gemini",
                "content": "",
                "thoughts": [],
                "tokens": tokens,
                "model": model,
            }
            lines.append(reply)
            lines.append({"$set": {"lastUpdated": _stamp(at)}})
            call = {
                "id": f"run_shell_command_{rng.getrandbits(40)}",
                "name": "run_shell_command",
                "args": {"command": f"pytest -q tests/test_{rng.randrange(99)}.py"},
                "status": "success",
                "timestamp": _stamp(at),
                "resultDisplay": "1 failed, 41 passed" * rng.randrange(1, 20),
            }
            lines.append({**reply, "toolCalls": [call]})  # the same reply again, once its tool has run
            lines.append(
                {
                    "id": str(uuid.UUID(int=rng.getrandbits(128))),
                    "timestamp": _stamp(at),
                    "type": "user",
                    "content": [
                        {
                            "functionResponse": {
                                "id": call["id"],
                                "name": "run_shell_command",
                                "response": {"output": call["resultDisplay"]},
                            }
                        }
                    ],
                }
            )
            for key, name in (("input", "input"), ("output", "output"), ("cached", "cached"), ("thoughts", "thoughts")):
                totals[name] += tokens[key]
            totals["replies"] += 1
    path = folder / f"session-{start.strftime('%Y-%m-%dT%H-%M')}-{sid[:8]}.jsonl"
    data = "".join(json.dumps(line, separators=(",", ":")) + "\n" for line in lines).encode()
    path.write_bytes(data)
    written = len(data)
    if rng.random() < 0.1:  # a subagent's file, counted in its parent's run
        sub = folder / sid / f"{uuid.UUID(int=rng.getrandbits(128))}.jsonl"
        sub.parent.mkdir()
        tokens = {"input": 4_000, "output": 300, "cached": 0, "thoughts": 100, "tool": 0, "total": 4_400}
        sub_lines = [
            {"sessionId": sub.stem, "kind": "subagent"},
            {
                "id": str(uuid.UUID(int=rng.getrandbits(128))),
                "timestamp": _stamp(at),
                "type": "gemini",
                "content": "found it",
                "tokens": tokens,
                "model": "gemini-2.5-flash",
            },
        ]
        sub_data = "".join(json.dumps(line) + "\n" for line in sub_lines).encode()
        sub.write_bytes(sub_data)
        for name in ("input", "output", "cached", "thoughts"):
            totals[name] += tokens[name]
        totals["replies"] += 1
        written += len(sub_data)
    return written


def corpus(target_mb: float, seed: int) -> Path:
    out = C.WORK / "corpus" / f"gemini_{target_mb:g}m_s{seed}"
    manifest = out / "manifest.json"
    if manifest.exists():
        return out
    shutil.rmtree(out, ignore_errors=True)
    rng = random.Random(seed)
    totals = dict.fromkeys(("input", "output", "cached", "thoughts", "replies"), 0)
    written, files, start = 0, 0, datetime(2026, 9, 1, tzinfo=timezone.utc)
    projects = [out / "tmp" / f"project-{i}" / "chats" for i in range(60)]
    for folder in projects:
        folder.mkdir(parents=True)
    while written < target_mb * 2**20:
        start += timedelta(minutes=rng.randrange(1, 240))
        written += _session(rng, rng.choice(projects), start, totals)
        files += 1
    manifest.write_text(
        json.dumps({"target_mb": target_mb, "seed": seed, "bytes": written, "sessions": files, "totals": totals})
    )
    return out


def ledger_totals(path: Path) -> dict:
    with sqlite3.connect(path) as db:
        row = db.execute(
            "SELECT count(*), sum(input_tokens), sum(output_tokens), sum(cache_read_tokens), sum(cost_micro_usd)"
            " FROM usage_events"
        ).fetchone()
    return {"replies": row[0], "input": row[1], "output": row[2], "cache_read": row[3], "cost_usd": row[4] / 1e6}


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--target-mb", type=float, default=200)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--no-results", action="store_true")
    args = parser.parse_args()
    machine = C.machine()
    root = corpus(args.target_mb, args.seed)
    manifest = json.loads((root / "manifest.json").read_text())
    rounds = []
    for n in range(args.rounds):
        home, env = C.isolated_env(f"import_gemini_{n}")
        ledger = home / "ledger.db"
        out = C.WORK / f"import_gemini_{n}.json"
        argv = [C.CG_PYTHON, "-m", "capguard", "--ledger", str(ledger), "import", "gemini", str(root / "tmp"), "--json"]
        result = measure(argv, env, stdout_path=out)
        if result["rc"] != 0:
            print(result["stderr"], file=sys.stderr)
            return 1
        result["summary"] = json.loads(out.read_text())
        result["ledger"] = ledger_totals(ledger)
        result["loadavg"] = C.loadavg()
        rounds.append(result)
        print(json.dumps({k: result[k] for k in ("wall_s", "cpu_s", "peak_rss_mb", "ledger")}))
    expected = manifest["totals"]
    got = rounds[-1]["ledger"]
    check = {
        "replies": (expected["replies"], got["replies"]),
        "input incl. cached": (expected["input"], got["input"] + got["cache_read"]),
        "cached": (expected["cached"], got["cache_read"]),
        "output incl. thoughts": (expected["output"] + expected["thoughts"], got["output"]),
    }
    data = {"machine": machine, "command": C.command_line(), "manifest": manifest, "rounds": rounds, "check": check}
    C.save("import_gemini", data)
    if not args.no_results:
        write_results(data)
    return 0 if all(a == b for a, b in check.values()) else 1


def write_results(data: dict) -> None:
    m, rounds, manifest = data["machine"], data["rounds"], data["manifest"]
    walls = [r["wall_s"] for r in rounds]
    cpus = [r["cpu_s"] for r in rounds]
    lines = [
        BEGIN,
        "## 10. `capguard import gemini` (ccusage 20 does not read Gemini CLI)",
        "",
        f"- date: {m['date']}; machine: {m['cpu']}, {m['cores']} cores, RAM {m['ram_mb']} MB; Python {m['python']}",
        f"- capguard: commit {m['capguard_commit']}, code {m['code']}",
        f"- load average before: {m['loadavg']} (a shared machine: other sessions' tests ran meanwhile)",
        f"- command: `{data['command']}`",
        f"- corpus: `bench/import_gemini.py` seed {manifest['seed']}: {manifest['sessions']:,} sessions in 60 projects,"
        f" {manifest['bytes']:,} bytes, {manifest['totals']['replies']:,} replies (each tool-calling reply written"
        " twice, as Gemini CLI 0.61.0 writes it)",
        "",
        "| round | wall s | CPU s | peak RSS MB | replies added | load after |",
        "| ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for i, r in enumerate(rounds, 1):
        lines.append(
            f"| {i} | {r['wall_s']:.2f} | {r['cpu_s']:.2f} | {r['peak_rss_mb']:.0f} | {r['summary']['replies_added']:,}"
            f" | {r['loadavg']} |"
        )
    lines += ["", "| figure | the corpus's own total | capguard's ledger |", "| --- | ---: | ---: |"]
    for name, (want, got) in data["check"].items():
        lines.append(f"| {name} | {want:,} | {got:,} |")
    lines += [
        "",
        f"Median wall time {statistics.median(walls):.2f} s and CPU time {statistics.median(cpus):.2f} s for"
        f" {manifest['bytes'] / 2**20:.0f} MB ({manifest['bytes'] / 2**20 / statistics.median(cpus):.1f} MB per CPU"
        f" second), peak RSS {max(r['peak_rss_mb'] for r in rounds):.0f} MB; cost"
        f" ${rounds[-1]['ledger']['cost_usd']:,.2f} by genai-prices. The wall time is the CPU time stretched by the"
        " machine's load (see the load averages: a wall/CPU ratio near load / cores means the import waited for a CPU,"
        " not for the disk); compare CPU times across runs. Every reply once (the second write of a tool-calling reply is the same id), cached input"
        " as cache reads, thoughts in output: the figures match the corpus's to the token. The import reads every"
        " line with json and the live meter's parser, in one process, and writes each batch of 20,000 rows in one"
        " transaction.",
        "",
        END,
    ]
    path = C.BENCH / "RESULTS.md"
    text = path.read_text()
    block = "\n".join(lines) + "\n"
    if BEGIN in text:
        text = text[: text.index(BEGIN)] + block + text[text.index(END) + len(END) + 1 :]
    else:
        text = text.rstrip("\n") + "\n\n" + block
    path.write_text(text)


if __name__ == "__main__":
    sys.exit(main())
