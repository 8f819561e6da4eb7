"""The dashboard's figures and page without a browser: the numbers each chart gets, and names that stay text."""

from __future__ import annotations

import base64
import hashlib
import json
import re
from datetime import datetime, timezone

from capguard.core.monthly import Standing, month_of
from capguard.reports import dashboard, html
from capguard.reports.aggregate import Part, Run

HOSTILE = "</script><img src=x onerror=alert(1)>"


def run(
    run_id: str,
    user: str = "ana",
    *,
    line: str | None = "web",
    status: str = "exited",
    stop: str | None = None,
    day: str = "2026-11-02",
) -> Run:
    return Run(run_id, user, "claude", "shop", line, status, stop, f"{day}T09:00:00.000000Z", f"{day}T10:00:00.000000Z")


def sample() -> dict:
    runs = {
        "r1": run("r1", "ana", day="2026-11-02"),
        "r2": run("r2", "bo", line=None, status="stopped", stop="usd", day="2026-11-02"),
        "r3": run("r3", "ana", status="stopped", stop="wall", day="2026-11-04"),
        "r4": run("r4", HOSTILE, status="imported", day="2026-11-04"),
    }
    parts = [
        Part("r1", "2026-11-02", cost_micro=1_000_000, tokens=100, replies=1),
        Part("r2", "2026-11-02", cost_micro=5_000_000, tokens=500, replies=3),
        Part("r3", "2026-11-04", cost_micro=2_500_000, tokens=250, replies=2),
        Part("r4", "2026-11-04", cost_micro=500_000, tokens=50, replies=1),
    ]
    tokens = {
        "claude-sonnet": {"input": 10, "output": 20, "cache_read": 30, "cache_write": 40},
        HOSTILE: dict.fromkeys(("input", "output", "cache_read", "cache_write"), 1),
    }
    month = month_of(datetime(2026, 11, 20, tzinfo=timezone.utc), timezone.utc)
    standings = [
        Standing("user", "ana", 10_000_000, 3_500_000, month),
        Standing("line", HOSTILE, 4_000_000, 3_500_000, month),
    ]
    return dashboard.figures(
        runs, parts, tokens, standings, period="all time", ledger="/l.db", generated_utc="2026-11-20T00:00:00.000000Z"
    )


def test_spend_per_day_has_every_day_and_a_series_per_developer_costliest_first():
    figures = sample()
    assert figures["days"] == ["2026-11-02", "2026-11-03", "2026-11-04"]
    assert [(s["name"], s["usd"]) for s in figures["spend_by_user"]] == [
        ("bo", [5.0, 0.0, 0.0]),
        ("ana", [1.0, 0.0, 2.5]),
        (HOSTILE, [0.0, 0.0, 0.5]),
    ]
    assert {s["name"]: sum(s["usd"]) for s in figures["spend_by_line"]} == {"web": 4.0, "(none)": 5.0}


def test_cost_per_run_is_a_histogram_with_the_reports_nearest_rank_percentiles():
    d = sample()["cost_per_run"]
    assert (d["runs"], d["p50"], d["p90"], d["p99"]) == (4, 1.0, 5.0, 5.0)
    assert sum(b["runs"] for b in d["bins"]) == 4 and d["bins"][0]["from"] == 0
    assert all(b["to"] - b["from"] == d["width"] for b in d["bins"][:1])


def test_bins_are_round_widths():
    assert [dashboard.nice_width(span) for span in (0, 1, 3.3, 47, 0.004)] == [1.0, 0.05, 0.2, 5, 0.0002]


def test_caps_fired_counts_stops_per_start_day_among_supervised_runs_only():
    e = sample()["exhaustion"]
    assert e["supervised"] == [2, 0, 1]  # the imported run is not supervised
    assert e["reasons"] == [{"name": "usd", "stopped": [1, 0, 0]}, {"name": "wall", "stopped": [0, 0, 1]}]


def test_tokens_by_model_keep_each_kind():
    rows = sample()["tokens_by_model"]
    assert rows[0] == {"model": "claude-sonnet", "input": 10, "output": 20, "cache_read": 30, "cache_write": 40}


def test_top_runs_are_the_costliest_with_how_they_ended():
    top = sample()["top_runs"]
    assert [(r["run_id"], r["cost_usd"], r["stop_reason"]) for r in top] == [
        ("r2", 5.0, "usd"),
        ("r3", 2.5, "wall"),
        ("r1", 1.0, None),
        ("r4", 0.5, None),
    ]


def test_the_month_has_each_budget_and_its_state():
    month = sample()["month"]
    assert month["month"] == "2026-11"
    assert [(b["name"], b["state"], b["spent_usd"]) for b in month["budgets"]] == [
        ("ana", "ok", 3.5),
        (HOSTILE, "warn", 3.5),
    ]


def test_an_empty_ledger_still_makes_a_page():
    figures = dashboard.figures(
        {}, [], {}, [], period="all time", ledger="/l.db", generated_utc="2026-11-20T00:00:00.000000Z"
    )
    assert figures["days"] == [] and figures["cost_per_run"]["p50"] is None and figures["month"] is None
    assert "No monthly cap applies" in html.page(figures)


def test_names_from_the_ledger_cannot_end_a_script_or_add_an_element():
    page = html.page(sample())
    assert HOSTILE not in page and "<img" not in page
    assert page.count("</script>") == page.count("<script")  # none closed early by a name
    figures = re.search(r'<script type="application/json" id="capguard-figures">(.*?)</script>', page, re.S)[1]
    assert json.loads(figures)["spend_by_user"][2]["name"] == HOSTILE  # escaped in the page, itself in the data
    assert "&lt;/script&gt;&lt;img src=x onerror=alert(1)&gt;" in page  # the tables show it as text


def test_script_json_escapes_what_could_close_a_script():
    assert html.script_json({"a": "</script><!--\u2028&"}) == '{"a":"\\u003c/script\\u003e\\u003c!--\\u2028\\u0026"}'


def test_only_the_pages_own_scripts_may_run_and_nothing_is_fetched():
    page = html.page(sample())
    policy = re.search(r'http-equiv="Content-Security-Policy" content="([^"]+)"', page)[1]
    assert "default-src 'none'" in policy and "unsafe-inline" not in policy
    for source in re.findall(r"<script>(.*?)</script>", page, re.S):
        digest = base64.b64encode(hashlib.sha256(source.encode()).digest()).decode()
        assert f"'sha256-{digest}'" in policy
    assert not re.search(r'\s(src|href)=["\']?(https?:)?//', page)  # no CDN, no link out


def test_the_vendored_libraries_are_the_published_files():
    expected = {
        "chart.umd.min.js": "87364cc2b2a76a6684929e7d6b80b18a897794db38400caff1fcf1791c6925d2",
        "chartjs-plugin-annotation.min.js": "ff03786a60f6c93ccacfe0fbb6c2e3c671d7930856a3689f2f393113d8d655ec",
    }
    for name, digest in expected.items():
        assert hashlib.sha256((html.ASSETS / name).read_bytes()).hexdigest() == digest
        assert "Released under the MIT License" in html.asset(name)[:400]


def test_the_dashboard_opens_in_the_desktops_browser_only_when_there_is_a_desktop(tmp_path):
    opened: list[str] = []
    page = tmp_path / "dashboard.html"
    assert html.show(page, env={"DISPLAY": ":0"}, platform="linux", opener=lambda uri: opened.append(uri) or True)
    assert opened == [page.as_uri()]
    assert not html.show(page, env={}, platform="linux", opener=lambda uri: opened.append(uri) or True)
    assert len(opened) == 1  # over ssh: no text browser taking the terminal, the CLI prints the path instead


def test_the_dashboard_lives_in_the_private_data_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("CAPGUARD_HOME", str(tmp_path / "home"))
    path = html.dashboard_path()
    assert path == tmp_path / "home" / "dashboard.html" and (path.parent.stat().st_mode & 0o777) == 0o700
