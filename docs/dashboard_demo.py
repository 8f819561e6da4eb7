"""A realistic demo ledger (a team of five, six weeks of runs) and the dashboard of it: docs/dashboard.png.

`python docs/dashboard_demo.py OUT_DIR [--screenshot]`: seeded, so the same ledger every time; the screenshot needs
Debian's chromium.
"""

from __future__ import annotations

import argparse
import random
import shutil
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

from capguard.budget.allowance import month_standings
from capguard.core.team import TeamConfig
from capguard.ledger import RunEnd, RunStart, UsageRecord, open_ledger
from capguard.reports.html import write_dashboard
from capguard.reports.query import Period

TEAM = {
    "ana@example.com": ("platform", "claude", 1.3),
    "bo@example.com": ("platform", "aider", 0.8),
    "chen@example.com": ("checkout", "claude", 1.1),
    "dara@example.com": ("checkout", "codex", 0.6),
    "eli@example.com": ("research", "claude", 1.5),
}
MODELS = {  # $ per million input, output, cache read, cache write tokens
    "claude": [("claude-sonnet-4-5", (3, 15, 0.3, 3.75)), ("claude-haiku-4-5", (1, 5, 0.1, 1.25))],
    "aider": [("gpt-5", (1.25, 10, 0.125, 0))],
    "codex": [("gpt-5-codex", (1.25, 10, 0.125, 0))],
}
CAPS = {"usd": 5.0, "wall": 3600, "tokens": 4_000_000}


def write_ledger(path: Path, now: datetime, *, days: int = 42, seed: int = 7) -> None:
    rng = random.Random(seed)
    start = (now - timedelta(days=days)).replace(hour=0, minute=0, second=0, microsecond=0)
    with open_ledger(path, fresh=True) as ledger:  # a new demo ledger where the last one was
        for day in range(days):
            moment0 = start + timedelta(days=day)
            if moment0.weekday() >= 5 and rng.random() < 0.7:
                continue
            for user, (line, agent, appetite) in TEAM.items():
                for _ in range(rng.randint(0, 4)):
                    began = moment0 + timedelta(hours=rng.uniform(8, 18))
                    run_id = "".join(rng.choice("0123456789abcdefghjkmnpqrstvwxyz") for _ in range(26))
                    ledger.start_run(
                        RunStart(
                            run_id,
                            agent,
                            [agent],
                            "/src",
                            user,
                            "laptop",
                            began.isoformat(),
                            CAPS,
                            project=f"{line}-svc",
                            line=line,
                        )
                    )
                    replies = max(1, int(rng.lognormvariate(2.3, 0.7) * appetite))
                    cost = tokens = 0
                    moment = began
                    for i in range(replies):
                        model, price = rng.choice(MODELS[agent]) if rng.random() < 0.3 else MODELS[agent][0]
                        counts = [
                            rng.randint(2_000, 30_000),
                            rng.randint(100, 3_000),
                            rng.randint(0, 120_000),
                            rng.randint(0, 8_000),
                        ]
                        if agent != "claude":
                            counts[3] = 0
                        micro = round(sum(c * p for c, p in zip(counts, price)))
                        moment += timedelta(seconds=rng.uniform(5, 60))
                        ledger.record_usage(
                            run_id,
                            UsageRecord(f"{run_id}:{i}", moment.isoformat(), model, *counts, micro, "genai-prices"),
                        )
                        cost, tokens = cost + micro, tokens + sum(counts)
                        if cost >= CAPS["usd"] * 1e6:
                            break
                    reason = (
                        "usd"
                        if cost >= CAPS["usd"] * 1e6
                        else ("wall" if rng.random() < 0.03 else ("stuck" if rng.random() < 0.02 else None))
                    )
                    ledger.finish_run(
                        run_id, RunEnd(moment.isoformat(), reason, 122 if reason else 0, cost, tokens, i + 1, 0, {})
                    )


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("out", type=Path)
    p.add_argument("--screenshot", action="store_true")
    ns = p.parse_args()
    ns.out.mkdir(parents=True, exist_ok=True)
    now = datetime(2026, 11, 24, 16, 30, tzinfo=timezone.utc)  # fixed: the same page, the same screenshot
    ledger_path = ns.out / "demo-ledger.db"
    ledger_path.unlink(missing_ok=True)
    write_ledger(ledger_path, now)
    team = TeamConfig(
        monthly_usd=60_000_000,
        users={"eli@example.com": 110_000_000},
        lines={"platform": 150_000_000, "checkout": 100_000_000, "research": 60_000_000},
    )
    with open_ledger(ledger_path) as ledger:
        since = (now - timedelta(days=30)).strftime("%Y-%m-%dT00:00:00.000000Z")
        page = write_dashboard(
            ledger,
            Period(since, None),
            ns.out / "dashboard.html",
            standings=month_standings(ledger, team, now),
            now=now,
        )
    print(page)
    if ns.screenshot:
        png = ns.out / "dashboard.png"
        subprocess.run(
            [
                shutil.which("chromium") or "chromium",
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--hide-scrollbars",
                "--window-size=1400,2000",
                f"--screenshot={png}",
                page.resolve().as_uri(),
            ],
            check=True,
            capture_output=True,
        )
        print(png)
    return 0


if __name__ == "__main__":
    sys.exit(main())
