"""The dashboard from a real ledger (SQLite, and PostgreSQL when CAPGUARD_TEST_PG_DSN is set), opened in Debian's
chromium (headless): every chart drawn, the ledger's numbers in it, no script error, a hostile name kept as text.

Without chromium the browser test skips, unless CAPGUARD_REQUIRE_BROWSER=1 (CI: apt-get install -y chromium).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from datetime import datetime, timezone
from html.parser import HTMLParser
from pathlib import Path

import pytest

from capguard.budget.allowance import month_standings
from capguard.core.team import TeamConfig
from capguard.ledger import RunEnd, RunStart, UsageRecord, open_ledger
from capguard.reports.html import collect, write_dashboard
from capguard.reports.query import Period
from tests.integration.test_ledger import backends, make_target, target  # noqa: F401 (fixtures)

HOSTILE = "</script><img src=x onerror=alert(1)>"
NOW = datetime(2026, 11, 20, 12, 0, tzinfo=timezone.utc)
TEAM = TeamConfig(monthly_usd=10_000_000, lines={"web": 3_000_000})
CHARTS = ("month", "spend-by-user", "spend-by-line", "cost-per-run", "caps-fired", "tokens-by-model", "top-runs")


def reply(key: str, when: str, model: str, usd: float, tokens: tuple[int, int, int, int]) -> UsageRecord:
    return UsageRecord(key, when, model, *tokens, round(usd * 1e6), "genai-prices")


def known_ledger(target: str) -> None:
    """Three runs, $4.50 in all: ana $1.25 (stopped: usd) + $2.50 (stopped: wall) on line web, bo $0.75; a model
    and a project named to break out of the page."""
    runs = [
        (
            "r1",
            "ana",
            "web",
            "2026-11-02T09:00:00Z",
            "usd",
            [reply("a", "2026-11-02T09:01:00Z", HOSTILE, 1.25, (1000, 200, 3000, 400))],
        ),
        (
            "r2",
            "bo",
            None,
            "2026-11-03T09:00:00Z",
            None,
            [reply("b", "2026-11-03T09:01:00Z", "claude-sonnet", 0.75, (500, 100, 0, 0))],
        ),
        (
            "r3",
            "ana",
            "web",
            "2026-11-03T10:00:00Z",
            "wall",
            [
                reply("c", "2026-11-03T10:01:00Z", "claude-sonnet", 2.0, (2000, 300, 5000, 0)),
                reply("d", "2026-11-03T10:02:00Z", "claude-sonnet", 0.5, (100, 50, 0, 0)),
            ],
        ),
    ]
    with open_ledger(target) as ledger:
        for run_id, user, line, started, stop, replies in runs:
            project = HOSTILE if run_id == "r2" else "shop"  # names from outside: a model and a project
            ledger.start_run(RunStart(run_id, "claude", ["claude"], "/w", user, "host", started, {}, project, line))
            for usage in replies:
                ledger.record_usage(run_id, usage)
            cost = sum(u.cost_micro_usd or 0 for u in replies)
            end = RunEnd(replies[-1].occurred_utc, stop, 0, cost, sum(u.tokens for u in replies), len(replies), 0, {})
            ledger.finish_run(run_id, end)


@backends
def test_the_dashboard_figures_are_the_ledgers(target):
    known_ledger(target)
    with open_ledger(target) as ledger:
        figures = collect(ledger, Period(), standings=month_standings(ledger, TEAM, NOW), now=NOW)
    assert figures["totals"]["cost_usd"] == 4.5 and figures["totals"]["stopped"] == 2
    assert figures["days"] == ["2026-11-02", "2026-11-03"]
    assert {s["name"]: s["usd"] for s in figures["spend_by_user"]} == {"ana": [1.25, 2.5], "bo": [0.0, 0.75]}
    assert (figures["cost_per_run"]["p50"], figures["cost_per_run"]["p90"]) == (1.25, 2.5)
    assert figures["tokens_by_model"] == [
        {"model": "claude-sonnet", "input": 2600, "output": 450, "cache_read": 5000, "cache_write": 0},
        {"model": HOSTILE, "input": 1000, "output": 200, "cache_read": 3000, "cache_write": 400},
    ]
    budgets = {(b["scope"], b["name"]): (b["spent_usd"], b["state"]) for b in figures["month"]["budgets"]}
    assert budgets == {("user", "ana"): (3.75, "ok"), ("user", "bo"): (0.75, "ok"), ("line", "web"): (3.75, "over")}


def chromium() -> str:
    found = os.environ.get("CAPGUARD_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    if not found:
        if os.environ.get("CAPGUARD_REQUIRE_BROWSER") == "1":
            pytest.fail("chromium is not installed but CAPGUARD_REQUIRE_BROWSER=1 (apt-get install -y chromium)")
        pytest.skip("chromium is not installed (apt-get install -y chromium; CI sets CAPGUARD_REQUIRE_BROWSER=1)")
    return found


def open_in_chromium(page: Path, profile: Path) -> tuple[str, list[str]]:
    """The DOM after the page's scripts ran, and the console's messages (script errors, refused loads)."""
    done = subprocess.run(
        [chromium(), "--headless", "--no-sandbox", "--disable-gpu", f"--user-data-dir={profile}",
         "--enable-logging=stderr", "--v=0", "--window-size=1280,2000", "--dump-dom", page.as_uri()],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout, [line for line in done.stderr.splitlines() if ":CONSOLE" in line]


class Elements(HTMLParser):
    """Every element's tag and attributes, and the text of the tables."""

    def __init__(self) -> None:
        super().__init__()
        self.found: list[tuple[str, dict[str, str | None]]] = []
        self.text: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.found.append((tag, dict(attrs)))

    def handle_data(self, data):
        self.text.append(data)


def test_the_page_draws_every_chart_with_the_ledgers_numbers_in_chromium(tmp_path):
    chromium()
    target = str(tmp_path / "ledger.db")
    known_ledger(target)
    with open_ledger(target) as ledger:
        page = write_dashboard(
            ledger, Period(), tmp_path / "dashboard.html", standings=month_standings(ledger, TEAM, NOW), now=NOW
        )
    dom, console = open_in_chromium(page, tmp_path / "profile")
    assert console == []  # no script error, nothing refused by the page's policy

    parsed = Elements()
    parsed.feed(dom)
    canvases = {attrs["id"]: attrs for tag, attrs in parsed.found if tag == "canvas"}
    assert sorted(canvases) == sorted(CHARTS)
    assert all(canvases[name]["data-rendered"] == "true" for name in CHARTS), canvases
    assert re.search(r'<body[^>]*data-charts="7"', dom)

    assert canvases["spend-by-user"]["data-total"] == "4.5"
    assert canvases["spend-by-line"]["data-total"] == "4.5"
    assert canvases["cost-per-run"]["data-total"] == "3"  # runs in the histogram
    assert canvases["cost-per-run"]["data-marks"] == '{"p50":1.25,"p90":2.5,"p99":2.5}'
    assert canvases["caps-fired"]["data-stopped"] == "2"
    assert canvases["tokens-by-model"]["data-total"] == str(2600 + 450 + 5000 + 1000 + 200 + 3000 + 400)
    assert canvases["top-runs"]["data-total"] == "4.5"
    assert canvases["month"]["data-spent"] == "8.25"

    text = " ".join(parsed.text)
    assert "$4.50" in text and "stopped: usd" in text and "line web" in text
    assert not any(tag == "img" for tag, _ in parsed.found)  # the model name stayed text...
    assert HOSTILE in text  # ...and reads as itself (the project in the table of runs)
