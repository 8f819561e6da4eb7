"""`capguard report --html FILE` and `capguard dashboard`: the report as one self-contained page of charts.

`page()` is pure (figures in, HTML out); `build_page()` and `write_dashboard()` read the ledger. The page embeds
Chart.js (assets/README.md says which, and its license): it opens offline and loads nothing from anywhere.
"""

from __future__ import annotations

import base64
import hashlib
import html
import json
import os
import sys
import webbrowser
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timezone
from functools import cache
from pathlib import Path

from capguard.core.monthly import Standing
from capguard.core.sanitize import printable
from capguard.core.units import format_tokens, format_usd
from capguard.ledger import Ledger
from capguard.ledger.records import normalize_utc
from capguard.paths import data_home
from capguard.private_files import private_dir, write_private
from capguard.reports import dashboard
from capguard.reports.period import describe
from capguard.reports.query import Period, fetch, tokens_by_model

ASSETS = Path(__file__).with_name("assets")
LIBRARIES = ("chart.umd.min.js", "chartjs-plugin-annotation.min.js")


@cache
def asset(name: str) -> str:
    return (ASSETS / name).read_text(encoding="utf-8")


def text(value: object) -> str:
    """A name from the ledger as HTML text: control characters shown as escapes, then every `<&>"'` escaped."""
    return html.escape(printable(value), quote=True)


def script_json(value: object) -> str:
    """JSON that cannot end its <script> element or open a comment in it: `<`, `>` and `&` as \\u escapes (JSON
    strings read them back as the same characters), and U+2028/2029, which old parsers take as line breaks."""
    raw = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    for char in "<>&\u2028\u2029":
        raw = raw.replace(char, f"\\u{ord(char):04x}")
    return raw


def _hash(source: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(source.encode("utf-8")).digest()).decode("ascii") + "'"


def content_policy(scripts: list[str], styles: list[str]) -> str:
    """Only these inline scripts and styles run (by hash), nothing is fetched: a name that slipped past the
    escaping still could not run a script or load an image (and no link can leak the page's figures)."""
    return (
        "default-src 'none'; "
        f"script-src {' '.join(_hash(s) for s in scripts)}; "
        f"style-src {' '.join(_hash(s) for s in styles)}; "
        "img-src data:; base-uri 'none'; form-action 'none'"
    )


def _tile(value: str, label: str) -> str:
    return f'<div class="tile"><b>{value}</b><span>{label}</span></div>'


def tiles(figures: dict) -> str:
    t = figures["totals"]
    rate = f" ({t['stopped'] / t['supervised']:.0%})" if t["supervised"] else ""
    dist = figures["cost_per_run"]
    shown = [
        (format_usd(round(t["cost_usd"] * 1e6)), "spent"),
        (f"{t['runs']:,}", f"runs ({t['imported']:,} imported)"),
        (f"{t['stopped']:,}{rate}", f"stopped by a cap, of {t['supervised']:,} supervised"),
        (format_usd(round((dist["p90"] or 0) * 1e6)), "p90 cost of a run"),
        (format_tokens(t["tokens"]), f"tokens in {t['replies']:,} replies"),
    ]
    return '<div class="tiles">' + "".join(_tile(value, label) for value, label in shown) + "</div>"


def _table(header: list[tuple[str, bool]], rows: list[list[tuple[str, str]]]) -> str:
    """Cells are (html, class); `header` is (title, numeric)."""
    head = "".join(f"<th{' class=num' if num else ''}>{title}</th>" for title, num in header)
    body = "".join("<tr>" + "".join(f'<td class="{cls}">{cell}</td>' for cell, cls in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def top_table(runs: list[dict]) -> str:
    header = [("run", False), ("developer", False), ("agent", False), ("project", False), ("line", False)]
    header += [("started (UTC)", False), ("cost", True), ("tokens", True), ("replies", True), ("ended", False)]
    rows = [
        [
            (text(r["run_id"]), ""),
            (text(r["user"]), ""),
            (text(r["agent"]), ""),
            (text(r["project"] or ""), ""),
            (text(r["line"] or ""), ""),
            (text(r["started_utc"][:16].replace("T", " ")), ""),
            (format_usd(round(r["cost_usd"] * 1e6)), "num"),
            (format_tokens(r["tokens"]), "num"),
            (f"{r['replies']:,}", "num"),
            (text(f"stopped: {r['stop_reason']}" if r["stop_reason"] else r["status"]), ""),
        ]
        for r in runs
    ]
    return _table(header, rows)


def month_table(month: dict) -> str:
    header = [("budget", False), ("spent", True), ("limit", True), ("share", True), ("left", True)]
    rows = [
        [
            (text(b["name"] if b["scope"] == "user" else f"line {b['name']}"), ""),
            (format_usd(round(b["spent_usd"] * 1e6)), "num"),
            (format_usd(round(b["limit_usd"] * 1e6)), "num"),
            (f"{b['spent_usd'] / b['limit_usd']:.0%}", f"num {b['state']}"),
            (format_usd(round(max(0, b["remaining_usd"]) * 1e6)), "num"),
        ]
        for b in month["budgets"]
    ]
    return _table(header, rows)


def _chart(chart_id: str, label: str, tall: bool = False) -> str:
    return f'<figure class="chart{" tall" if tall else ""}"><canvas id="{chart_id}" role="img" aria-label="{label}"></canvas></figure>'


def _section(title: str, note: str, body: str, *, wide: bool = False) -> str:
    return f'<section{" class=wide" if wide else ""}><h2>{title}</h2><p class="note">{note}</p>{body}</section>'


def month_section(month: dict | None) -> str:
    if month is None:
        note = "No monthly cap applies: set <code>monthly_usd</code> in the <code>[team]</code> table of the config."
        return _section("The month against its caps", note, "")
    note = text(f"{month['month']} ({month['timezone']}), resets {month['resets']}; spend of each monthly budget.")
    return _section("The month against its caps", note, _chart("month", "monthly budgets") + month_table(month))


def sections(figures: dict) -> str:
    dist = figures["cost_per_run"]
    marks = " · ".join(f"{k} {format_usd(round(dist[k] * 1e6))}" for k in ("p50", "p90", "p99") if dist[k] is not None)
    parts = [
        month_section(figures["month"]),
        _section(
            "Spend per day by developer",
            "UTC days; spend of the usage in the period.",
            _chart("spend-by-user", "spend per day by developer"),
        ),
        _section(
            "Spend per day by budget line",
            "Runs on no budget line are under (none).",
            _chart("spend-by-line", "spend per day by budget line"),
        ),
        _section(
            "Cost per run",
            text(f"{dist['runs']:,} runs; nearest-rank {marks or 'no runs'}."),
            _chart("cost-per-run", "cost per run"),
        ),
        _section(
            "How often each cap fired",
            "Per start day: the share of the supervised runs each cap stopped.",
            _chart("caps-fired", "share of runs stopped by each cap"),
        ),
        _section(
            "Tokens by model and kind",
            "Input, output, cache read and cache write tokens per model.",
            _chart("tokens-by-model", "tokens by model", tall=True),
        ),
        _section(
            "The costliest runs",
            "Spend in the period; how each run ended.",
            _chart("top-runs", "the costliest runs", tall=True) + top_table(figures["top_runs"]),
            wide=True,
        ),
    ]
    return "".join(parts)


def page(figures: dict) -> str:
    """The whole page: styles, the embedded libraries, the figures as JSON, the script that draws them."""
    scripts = [asset(name) for name in LIBRARIES] + [asset("dashboard.js")]
    style = asset("dashboard.css")
    header = (
        f"<header><h1>capguard: spend of AI coding agents</h1><p>{text(figures['period'])} · ledger "
        f"{text(figures['ledger'])} · made {text(figures['generated_utc'][:16].replace('T', ' '))} UTC</p></header>"
    )
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f'<meta http-equiv="Content-Security-Policy" content="{content_policy(scripts, [style])}">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>capguard dashboard: {text(figures['period'])}</title><style>{style}</style></head>\n<body>"
        f"{header}{tiles(figures)}<main>{sections(figures)}</main>"
        "<footer>Made by capguard. Charts: Chart.js 4.6.1 and chartjs-plugin-annotation 3.1.0 (MIT), embedded."
        "</footer>\n"
        f'<script type="application/json" id="capguard-figures">{script_json(figures)}</script>\n'
        + "".join(f"<script>{source}</script>\n" for source in scripts)
        + "</body></html>\n"
    )


def collect(ledger: Ledger, period: Period, *, standings: Sequence[Standing] = (), now: datetime | None = None) -> dict:
    """The dashboard's figures from the ledger: the period's runs and usage; `standings` are this month's monthly
    budgets (capguard.budget.allowance.month_standings; none: no month chart), read by the caller."""
    now = now or datetime.now(timezone.utc)
    runs, day_parts = fetch(ledger, period, "day")
    return dashboard.figures(
        runs,
        day_parts,
        tokens_by_model(ledger, period),
        list(standings),
        period=describe(period.since_utc, period.until_utc),
        ledger=ledger.path_or_url,
        generated_utc=normalize_utc(now.isoformat()),
    )


def build_page(
    ledger: Ledger, period: Period, *, standings: Sequence[Standing] = (), now: datetime | None = None
) -> str:
    """`capguard report --html`: the page for the period."""
    return page(collect(ledger, period, standings=standings, now=now))


def write_dashboard(
    ledger: Ledger, period: Period, path: Path, *, standings: Sequence[Standing] = (), now: datetime | None = None
) -> Path:
    """Write the page to `path` (atomically, owner-only: it names developers and their spend); returns `path`."""
    write_private(Path(path), build_page(ledger, period, standings=standings, now=now).encode("utf-8"))
    return Path(path)


def dashboard_path() -> Path:
    """Where `capguard dashboard` keeps its page: the data dir (created owner-only), next to the default ledger."""
    return private_dir(data_home()) / "dashboard.html"


def show(
    path: Path,
    *,
    env: Mapping[str, str] = os.environ,
    platform: str = sys.platform,
    opener: Callable[[str], bool] = webbrowser.open,
) -> bool:
    """Open the page in the desktop's browser; False when there is no desktop (then print the path). Without a
    display, webbrowser would fall back to a text browser in the terminal, or to nothing, so it is not asked."""
    if platform == "darwin" or platform.startswith("win") or env.get("DISPLAY") or env.get("WAYLAND_DISPLAY"):
        return bool(opener(Path(path).resolve().as_uri()))
    return False
