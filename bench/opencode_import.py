"""`capguard import opencode` against `ccusage opencode` (npm ccusage@20.0.24, --offline) on the same OpenCode store.

    python bench/opencode_import.py                       # 20k steps, 3 rounds, writes RESULTS.md
    python bench/opencode_import.py --steps 2000 --rounds 1 --no-results   # a smoke run

The store is OpenCode 1.18.33's schema (tests/fixtures/opencode/schema.sql) filled by a seeded generator with
sessions of assistant steps shaped like the recorded rows (tests/fixtures/opencode/shell/rows.jsonl): 10% of the
sessions are subagents' (parent_id), every step has 3 parts of ~1 KB of text (the bulk of a real store, read by
neither tool), 90% of the steps carry OpenCode's own cost (anthropic/claude-sonnet-4-5 at its list price) and 10%
a cost of 0 (openai/gpt-4o, unpriced in OpenCode's config: each tool prices those itself). It is in WAL mode with
its last fifth in the -wal file and the generator's connection open, as a running OpenCode leaves it. Each round runs both tools back to back, alternating which
goes first, after a warm-up of each: `ccusage opencode session --json --offline` (OPENCODE_DATA_DIR = the store's
folder) and `python -m capguard --ledger <new SQLite file> import --json opencode <store>` with an empty data dir
(a first, full import). Wall and CPU time from the harness, peak RSS of the process tree sampled every 20 ms.
"""

from __future__ import annotations

import argparse
import json
import random
import sqlite3
import sys
from pathlib import Path

import _common as C
from import_vs_ccusage import NATIVE, capguard_totals, install_ccusage, measure

SCHEMA = C.ROOT / "tests" / "fixtures" / "opencode" / "schema.sql"
BEGIN = "<!-- opencode-import section: begin (bench/opencode_import.py; render_results.py keeps it) -->"
END = "<!-- opencode-import section: end -->"
PRICE = {"input": 3.0, "output": 15.0, "cache_read": 0.3, "cache_write": 3.75}  # claude-sonnet-4-5, USD per M


def generate(out: Path, steps: int, seed: int) -> tuple[dict, sqlite3.Connection]:
    """A store of about `steps` assistant steps: the ground truth (sums over the assistant rows), and the writer's
    connection, left open while the tools read (closing the last connection would checkpoint and drop the -wal)."""
    out.mkdir(parents=True, exist_ok=True)
    for name in ("opencode.db", "opencode.db-wal", "opencode.db-shm"):
        (out / name).unlink(missing_ok=True)
    rng = random.Random(seed)
    db = sqlite3.connect(out / "opencode.db", isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA wal_autocheckpoint=0")  # what is written last stays in the -wal file, as OpenCode leaves it
    db.executescript(SCHEMA.read_text())
    truth = {"input": 0, "output": 0, "reasoning": 0, "cache_read": 0, "cache_write": 0, "steps": 0, "cost_agent": 0.0}
    t = 1_790_000_000_000
    sessions: list[str] = []
    n = 0
    db.execute("BEGIN")
    while n < steps:
        sid = f"ses_{len(sessions):06d}{rng.getrandbits(40):010x}"
        parent = rng.choice(sessions) if sessions and rng.random() < 0.1 else None
        sessions.append(sid)
        directory = f"/home/dev/src/project{rng.randrange(12)}"
        db.execute(
            "INSERT INTO session (id, project_id, parent_id, slug, directory, title, version, time_created,"
            " time_updated) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (sid, "p", parent, "slug", directory, "A session", "1.18.33", t, t),
        )
        cache = 0
        for _ in range(rng.randrange(5, 90)):
            t += rng.randrange(500, 20_000)
            n += 1
            mid = f"msg_{t:013x}{n:08d}"
            priced = rng.random() < 0.9
            fresh, out_t, reasoning = rng.randrange(50, 4000), rng.randrange(5, 1500), rng.randrange(0, 400)
            write = rng.randrange(0, 3000) if priced else 0
            tokens = {"input": fresh, "output": out_t, "reasoning": reasoning, "cache": {"read": cache, "write": write}}
            tokens["total"] = fresh + out_t + reasoning + cache + write
            cost = 0
            if priced:
                cost = (
                    fresh * PRICE["input"]
                    + (out_t + reasoning) * PRICE["output"]
                    + cache * PRICE["cache_read"]
                    + write * PRICE["cache_write"]
                ) / 1e6
            data = {
                "parentID": "msg_user",
                "role": "assistant",
                "mode": "build",
                "agent": "build",
                "path": {"cwd": directory, "root": directory},
                "cost": cost,
                "tokens": tokens,
                "modelID": "claude-sonnet-4-5" if priced else "gpt-4o",
                "providerID": "anthropic" if priced else "openai",
                "time": {"created": t, "completed": t + 900},
                "finish": "tool-calls",
            }
            db.execute(
                "INSERT INTO message (id, session_id, time_created, time_updated, data) VALUES (?, ?, ?, ?, ?)",
                (mid, sid, t, t + 900, json.dumps(data)),
            )
            for k in range(3):
                text = "".join(rng.choice("abcdefghij klmnop\n") for _ in range(rng.randrange(200, 1800)))
                db.execute(
                    "INSERT INTO part (id, message_id, session_id, time_created, time_updated, data) VALUES (?,?,?,?,?,?)",
                    (f"prt_{mid}_{k}", mid, sid, t, t, json.dumps({"type": "text", "text": text})),
                )
            for key, value in (("input", fresh), ("output", out_t), ("reasoning", reasoning)):
                truth[key] += value
            truth["cache_read"] += cache
            truth["cache_write"] += write
            truth["cost_agent"] += cost
            truth["steps"] += 1
            cache += fresh + out_t
        if n > steps * 0.8 and not truth.get("checkpointed"):
            db.execute("COMMIT")
            db.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # most of it in the main file, the rest in the -wal
            truth["checkpointed"] = True
            db.execute("BEGIN")
    db.execute("COMMIT")
    truth["sessions"] = len(sessions)
    truth["total"] = sum(truth[k] for k in ("input", "output", "reasoning", "cache_read", "cache_write"))
    truth["bytes"] = sum((out / f).stat().st_size for f in ("opencode.db", "opencode.db-wal"))
    return truth, db


def ccusage_totals(path: Path) -> dict:
    totals = json.loads(path.read_text())["totals"]
    return {
        "input": totals["inputTokens"],
        "output": totals["outputTokens"],
        "cache_read": totals["cacheReadTokens"],
        "cache_write": totals["cacheCreationTokens"],
        "total": totals["totalTokens"],
        "cost_usd": totals.get("totalCost"),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seed", type=int, default=14)
    parser.add_argument("--no-results", action="store_true")
    args = parser.parse_args()
    install_ccusage()
    machine = C.machine()
    base, env = C.isolated_env("opencode_import")
    store_dir = base / "store"
    truth, writer = generate(store_dir, args.steps, args.seed)
    store = store_dir / "opencode.db"
    cc_env = {**env, "OPENCODE_DATA_DIR": str(store_dir)}
    rounds = []
    for i in range(args.rounds + 1):  # round 0: warm-up
        pair = {}
        order = ("ccusage", "capguard") if i % 2 else ("capguard", "ccusage")
        for tool in order:
            if tool == "ccusage":
                out = base / f"ccusage_{i}.json"
                pair[tool] = measure(
                    [str(NATIVE), "opencode", "session", "--json", "--offline"], cc_env, stdout_path=out
                )
                pair[tool]["totals"] = ccusage_totals(out)
            else:
                home = base / f"capguard_home_{i}"
                ledger = base / f"ledger_{i}.db"
                run_env = {**env, "CAPGUARD_HOME": str(home)}
                out = base / f"capguard_{i}.json"
                argv = [
                    C.CG_PYTHON,
                    "-m",
                    "capguard",
                    "--ledger",
                    str(ledger),
                    "import",
                    "--json",
                    "opencode",
                    str(store),
                ]
                pair[tool] = measure(argv, run_env, stdout_path=out)
                pair[tool]["totals"] = capguard_totals(ledger)
        pair["first"] = order[0]
        rounds.append(pair)
        print(
            f"round {i}{' (warm-up)' if i == 0 else ''}: ccusage {pair['ccusage']['wall_s']:.2f}s"
            f" {pair['ccusage']['peak_rss_mb']:.0f} MB, capguard {pair['capguard']['wall_s']:.2f}s"
            f" {pair['capguard']['peak_rss_mb']:.0f} MB",
            file=sys.stderr,
        )
    writer.close()
    measured = rounds[1:]
    result = {
        "machine": {k: v for k, v in machine.items() if k != "code_files"},
        "command": C.command_line(),
        "truth": truth,
        "rounds": measured,
        "load_after": C.loadavg(),
    }
    C.save("opencode_import", result)
    section = render(result)
    print(section)
    if not args.no_results:
        write_section(section)
    return 0


def render(r: dict) -> str:
    m, t = r["machine"], r["truth"]
    cg = [x["capguard"] for x in r["rounds"]]
    cc = [x["ccusage"] for x in r["rounds"]]
    a, b = cg[-1]["totals"], cc[-1]["totals"]

    def med(xs: list[dict], key: str) -> float:
        return C.percentile([x[key] for x in xs], 50)

    lines = [
        BEGIN,
        "## 9. OpenCode import: `capguard import opencode` and `ccusage opencode`",
        "",
        f"- date: {m['date']}",
        f"- machine: `{m['uname']}`",
        f"- CPU: {m['cpu']}, {m['cores']} cores; RAM {m['ram_mb']} MB; Python {m['python']}; work tree on {m['work_fs']}",
        f"- capguard: commit {m['capguard_commit']}, code fingerprint {m['code']}",
        f"- load average before: {m['loadavg']}, after: {r['load_after']}",
        f"- command: `{r['command']}`",
        "",
        f"Store: {t['steps']:,} assistant steps in {t['sessions']:,} sessions (10% subagents'), "
        f"{t['bytes'] / 2**20:.0f} MB (main file + -wal; 3 text parts a step), generated by the script (seeded). "
        "Times are medians of the rounds after a warm-up of each tool; ccusage is its native binary. On a shared "
        "machine (see the load average) wall time is mostly waiting for a core: CPU time compares the work.",
        "",
        "| figure | ccusage 20.0.24 (`opencode session --json --offline`) | capguard (`import opencode`, first import) |",
        "| --- | ---: | ---: |",
        f"| wall time, median of {len(cg)} | {med(cc, 'wall_s'):.2f} s | {med(cg, 'wall_s'):.2f} s |",
        f"| CPU time, median | {med(cc, 'cpu_s'):.2f} s | {med(cg, 'cpu_s'):.2f} s |",
        f"| peak RSS (process tree), max | {max(x['peak_rss_mb'] for x in cc):.0f} MB | {max(x['peak_rss_mb'] for x in cg):.0f} MB |",
        f"| input tokens (without cache) | {b['input']:,} | {a['input']:,} |",
        f"| output tokens | {b['output']:,} | {a['output']:,} |",
        f"| cache read / write tokens | {b['cache_read']:,} / {b['cache_write']:,} | {a['cache_read']:,} / {a['cache_write']:,} |",
        f"| total tokens | {b['total']:,} | {a['total']:,} |",
        f"| cost | ${b['cost_usd']:,.4f} | ${a['cost_usd']:,.4f} |",
        "",
        f"Ground truth (the generator's sums): input {t['input']:,}, output {t['output']:,} + reasoning "
        f"{t['reasoning']:,}, cache read {t['cache_read']:,}, write {t['cache_write']:,}, total {t['total']:,}; "
        f"OpenCode's own cost of the priced 90%: ${t['cost_agent']:,.4f}. capguard counts reasoning in output (it is "
        "billed at the output rate); ccusage's `outputTokens` leaves it out but its `totalTokens` includes it. "
        "The steps OpenCode wrote a cost of 0 for are priced by each tool from its own price list (capguard: "
        "genai-prices; ccusage: its embedded LiteLLM prices, --offline).",
        END,
    ]
    return "\n".join(lines)


def write_section(section: str) -> None:
    path = C.BENCH / "RESULTS.md"
    text = path.read_text()
    if BEGIN in text and END in text:
        head, rest = text.split(BEGIN, 1)
        text = head + section + rest.split(END, 1)[1]
    else:
        text = text.rstrip("\n") + "\n\n" + section + "\n"
    path.write_text(text)


if __name__ == "__main__":
    sys.exit(main())
