"""Reports without a database: grouping, percentiles, stop rates, periods, and output that fits 80 columns."""

from __future__ import annotations

import csv
import io
import json
import re
from datetime import datetime, timezone

import pytest

from capguard.cli import report_cmd
from capguard.core.errors import ConfigError
from capguard.reports import aggregate, render
from capguard.reports.aggregate import (
    Part,
    Run,
    distribution,
    group_runs,
    percentile,
    top_runs,
    totals,
)
from capguard.reports.period import describe, parse_bound

NOW = datetime(2026, 11, 23, 12, 0, tzinfo=timezone.utc)


def run(
    run_id: str,
    *,
    user="ann@example.com",
    agent="claude",
    project="/src/app",
    line=None,
    status="exited",
    stop=None,
    started="2026-11-02T10:00:00.000000Z",
    ended="2026-11-02T10:30:00.000000Z",
    steps=None,
) -> Run:
    return Run(run_id, user, agent, project, line, status, stop, started, ended, steps)


def fleet() -> tuple[dict[str, Run], list[Part]]:
    """Five runs: two stopped by caps, one imported, one spanning two models and two days, one without usage."""
    runs = [
        run("r1", stop="usd"),
        run("r2", agent="aider", user="bob@example.com", stop="wall"),
        run("r3", status="imported", project="/src/api"),
        run("r4", started="2026-11-03T23:50:00.000000Z", ended="2026-11-04T00:20:00.000000Z"),
        run("r5", project="/src/api", line="infra"),
    ]
    parts = [
        Part("r1", None, 5_000_000, 1_000_000, 10_000, 20),
        Part("r2", None, 1_000_000, 200_000, 2_000, 5),
        Part("r3", None, 2_000_000, 400_000, 4_000, 8, unpriced=1),
        Part("r4", None, 3_000_000, 600_000, 6_000, 9),
    ]
    return {r.run_id: r for r in runs}, parts


def test_percentiles_are_nearest_rank_observations():
    values = list(range(1, 11))
    assert (percentile(values, 50), percentile(values, 90), percentile(values, 99)) == (5, 9, 10)
    assert percentile([7], 90) == 7 and percentile([], 50) is None
    assert distribution([3, 1, 2]) == {"p50": 2, "p90": 3, "p99": 3}


def test_groups_by_a_run_key_count_each_run_once_and_stop_rates_use_supervised_runs():
    runs, parts = fleet()
    groups = {g.key: g for g in group_runs(runs, parts, "agent")}
    claude = groups["claude"]
    assert (claude.runs, claude.cost_micro, claude.supervised, claude.stops) == (4, 10_000_000, 3, {"usd": 1})
    assert claude.stop_rate == pytest.approx(1 / 3) and claude.stop_rates() == {"usd": pytest.approx(1 / 3)}
    assert claude.avg_cost_micro == 2_500_000
    assert claude.cost_dist == {"p50": 2_000_000, "p90": 5_000_000, "p99": 5_000_000}  # r5 counts as $0
    assert groups["aider"].stop_rate == 1.0
    assert {g.key for g in group_runs(runs, parts, "line")} == {"(none)", "infra"}


def test_event_keys_split_a_run_and_runs_without_usage_land_on_their_start():
    runs, _ = fleet()
    parts = [
        Part("r4", "2026-11-03", 1_000_000, 10, 1, 1),
        Part("r4", "2026-11-04", 2_000_000, 20, 2, 2),
        Part("r1", "2026-11-02", 5_000_000, 30, 3, 3),
    ]
    days = {g.key: g for g in group_runs(runs, parts, "day")}
    assert [g.key for g in group_runs(runs, parts, "day")] == ["2026-11-02", "2026-11-03", "2026-11-04"]
    assert days["2026-11-04"].cost_micro == 2_000_000 and days["2026-11-04"].runs == 1
    assert days["2026-11-02"].runs == 4  # r1 with usage, r2 r3 r5 without: at their start day
    everything = totals(runs, parts)
    assert (everything.runs, everything.cost_micro, everything.supervised, everything.stopped) == (5, 8_000_000, 4, 2)


def test_unknown_grouping_is_refused():
    with pytest.raises(ValueError, match="cannot group by"):
        group_runs({}, [], "colour")


def test_top_runs_are_the_costliest_in_the_period():
    runs, parts = fleet()
    assert [t.run.run_id for t in top_runs(runs, parts, 3)] == ["r1", "r4", "r3"]
    assert len(top_runs(runs, parts, None)) == 5


@pytest.mark.parametrize(
    "raw, until, expected",
    [
        ("2026-11-01", False, "2026-11-01T00:00:00.000000Z"),
        ("2026-11-01", True, "2026-11-02T00:00:00.000000Z"),
        ("2026-11", False, "2026-11-01T00:00:00.000000Z"),
        ("2026-12", True, "2027-01-01T00:00:00.000000Z"),
        ("2026-11-01T09:30", False, "2026-11-01T09:30:00.000000Z"),
        ("2026-11-01T09:30+02:00", True, "2026-11-01T07:30:00.000000Z"),
        ("7d", False, "2026-11-16T12:00:00.000000Z"),
        ("12h", False, "2026-11-23T00:00:00.000000Z"),
    ],
)
def test_period_bounds(raw, until, expected):
    assert parse_bound(raw, now=NOW, until=until) == expected


def test_bad_period_bounds_name_the_flag():
    with pytest.raises(ConfigError, match="--since: 'yesterday' is not a date"):
        report_cmd.period_of("yesterday", None, NOW)
    with pytest.raises(ConfigError, match="is not before --until"):
        report_cmd.period_of("2026-11-05", "2026-11-01", NOW)


def test_period_titles():
    assert describe(None, None) == "all time"
    assert describe("2026-11-01T00:00:00.000000Z", "2026-11-24T00:00:00.000000Z") == "2026-11-01 .. 2026-11-23 (UTC)"
    assert describe("2026-11-01T09:30:00.000000Z", None) == "2026-11-01 09:30 .. now (UTC)"


def built(by: str) -> render.Report:
    runs, parts = fleet()
    long_project = "/home/someone/work/a-very-long-organisation-name/and-an-even-longer-repository-name"
    runs["r3"] = run("r3", status="imported", project=long_project)
    return report_cmd.build(by, runs, parts, "all time", "/tmp/ledger.db", None if by == "run" else 5)


@pytest.mark.parametrize("by", aggregate.BY)
def test_text_fits_80_columns(by):
    lines = render.text(built(by))
    assert max(len(line) for line in lines) <= 80, "\n".join(line for line in lines if len(line) > 80)
    assert lines[0] == f"capguard report by {by}, all time"


def test_text_shows_spend_distribution_stops_and_top_runs():
    text = "\n".join(render.text(built("agent")))
    assert re.search(r"^claude\s+4\s+\$10\.00\s+\$2\.50\s+2\.00M\s+33\.3%$", text, re.MULTILINE)
    assert "COST p50" in text and "usd 1 (33.3%)" in text and "wall 1 (100.0%)" in text
    assert "Top 5 runs by cost" in text and text.index("r1") < text.index("r4")


def test_json_has_every_figure_a_script_needs():
    doc = render.as_json(built("agent"), {"since_utc": None, "until_utc": None})
    json.dumps(doc)
    claude = doc["groups"][0]
    assert claude["key"] == "claude" and claude["cost_usd"] == 10.0 and claude["avg_cost_usd"] == 2.5
    assert claude["cost_usd_per_run"] == {"p50": 2.0, "p90": 5.0, "p99": 5.0}
    assert claude["stops"] == {"usd": 1} and claude["stop_rate"] == pytest.approx(1 / 3)
    assert doc["total"]["runs"] == 5 and doc["imported_runs"] == 1
    assert [t["run_id"] for t in doc["top_runs"]][:2] == ["r1", "r4"]


def test_csv_is_one_row_per_group_and_a_total():
    rows = list(csv.DictReader(io.StringIO(render.as_csv(built("agent")))))
    assert [r["agent"] for r in rows] == ["claude", "aider", "(all)"]
    assert rows[0]["cost_usd"] == "10.000000" and rows[0]["stops_usd"] == "1" and rows[1]["stops_wall"] == "1"
    assert rows[2]["runs"] == "5" and rows[0]["cost_usd_p90"] == "5.000000"


def test_ellipsis_keeps_the_informative_end_of_paths():
    assert render.ellipsize("/home/me/src/project", 10, keep_end=True) == "…c/project"
    assert render.ellipsize("claude-0809e9f1", 8) == "claude-…"
    assert render.ellipsize("short", 10) == "short"
